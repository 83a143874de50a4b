"""The emulator's refusals: an HTTP status with Kimi's error body (`{"error": {"type", "message"}}`)."""

from __future__ import annotations

from collections.abc import Mapping


class EmulatorRefusal(Exception):
    """An HTTP error the emulator answers with Kimi's body shape."""

    def __init__(self, status: int, etype: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.etype, self.message = status, etype, message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"type": self.etype, "message": self.message}}


def bad_request(message: str) -> EmulatorRefusal:
    """Kimi's 400: its documented form is "Invalid request: {details}" (platform errors page; facts §9a)."""
    text = message if message.startswith("Invalid request: ") else f"Invalid request: {message}"
    return EmulatorRefusal(400, "invalid_request_error", text)
