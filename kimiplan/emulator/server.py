"""HTTP front of the emulator: Kimi's OpenAI-compatible endpoints on the standard library's threading server.

Every response carries `X-Kimiplan-Emulated: 1` (it never pretends to be the real service) and
`X-Kimiplan-Time-Scale` so a client can turn measured latencies back into emulated seconds.

Hostile or broken clients get a Kimi-shaped JSON error (`{"error": {"type", "message"}}`) and the server keeps
serving: a body that is not UTF-8 JSON, a bad Content-Length or Content-Type, a body over `max_body_bytes`
(413), a body that never arrives (408 after `socket_timeout_s`), unknown methods and over-long request lines
(the standard library's HTML error pages are replaced by JSON). Every socket has a timeout, so idle or
half-sent requests cannot hold a thread for ever.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .config import EmulatorConfig
from .engine import CONTENT_WORD, REASONING_WORD, EmulatorRefusal, Engine, Reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a pool of 50 connections is reused
    server: EmulatorServer

    def log_message(self, format, *args):  # quiet: tests and notebooks must not print ports
        pass

    def setup(self):
        self.timeout = self.server.engine.config.socket_timeout_s  # StreamRequestHandler applies it to the socket
        super().setup()
        # Small SSE writes + Nagle + delayed ACK would stall every chunk by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing -------------------------------------------------------------------------------------
    def _headers(self, status: int, content_type: str, extra: dict | None = None, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Kimiplan-Emulated", "1")
        self.send_header("X-Kimiplan-Time-Scale", repr(self.server.engine.config.time_scale))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _json(self, status: int, payload: dict, extra: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self._headers(status, "application/json", extra, len(data))
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def send_error(self, code, message=None, explain=None):
        """The standard library's error pages (unknown method, over-long request line, bad syntax) as Kimi's
        JSON, not HTML."""
        self.close_connection = True
        etype = {404: "resource_not_found_error", 501: "invalid_request_error"}.get(code, "invalid_request_error")
        text = message or self.responses.get(code, ("error",))[0]
        data = json.dumps({"error": {"type": etype, "message": text}}).encode()
        self.send_response(code, text)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Kimiplan-Emulated", "1")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(data)

    def _refuse_body(self, status: int, message: str) -> EmulatorRefusal:
        # The rest of the body is unread (or never came): the connection cannot be reused.
        self.close_connection = True
        return EmulatorRefusal(status, "invalid_request_error", message)

    def _read_body(self) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json":
            raise self._refuse_body(400, f"Content-Type must be application/json, got {ctype!r}")
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit():
            raise self._refuse_body(400, f"Content-Length must be a whole number of bytes, got {length!r:.40}")
        n, limit = int(length), self.server.engine.config.max_body_bytes
        if n > limit:
            raise self._refuse_body(413, f"request body of {n} bytes is over the limit of {limit} bytes")
        try:
            raw = self.rfile.read(n) if n else b""
        except TimeoutError:
            raise self._refuse_body(408, f"request body incomplete after {self.timeout:g} s") from None
        if len(raw) < n:
            raise self._refuse_body(400, f"request body ended after {len(raw)} of {n} bytes")
        try:
            body = json.loads(raw.decode("utf-8") or "{}")
        except UnicodeDecodeError as exc:
            raise EmulatorRefusal(
                400, "invalid_request_error", f"request body is not UTF-8 (byte {exc.start})"
            ) from None
        except json.JSONDecodeError as exc:
            raise EmulatorRefusal(400, "invalid_request_error", f"request body is not JSON: {exc.msg}") from None
        except RecursionError:
            raise EmulatorRefusal(400, "invalid_request_error", "request body is nested too deeply") from None
        if not isinstance(body, dict):
            raise EmulatorRefusal(400, "invalid_request_error", "request body must be a JSON object")
        return body

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip():
            return True
        self._json(401, {"error": {"type": "invalid_authentication_error", "message": "Invalid Authentication"}})
        return False

    # -- routes ---------------------------------------------------------------------------------------
    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            if self._authorised():
                self._json(200, self.server.engine.models())
        else:
            self._json(404, {"error": {"type": "resource_not_found_error", "message": f"no route {self.path}"}})

    def do_POST(self):
        try:
            body = self._read_body()
            if not self._authorised():
                return
            path = self.path.rstrip("/")
            if path == "/v1/tokenizers/estimate-token-count":
                self._json(200, self.server.engine.estimate(body))
            elif path == "/v1/chat/completions":
                self._chat(body)
            else:
                self._json(404, {"error": {"type": "resource_not_found_error", "message": f"no route {self.path}"}})
        except EmulatorRefusal as exc:
            self._json(
                exc.status, exc.body(), {**exc.headers, **({"Connection": "close"} if self.close_connection else {})}
            )
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away, or stopped reading
        except Exception as exc:  # a bug must not kill the connection with a traceback: answer, keep serving
            self.close_connection = True
            self.server.engine.stats.internal_errors += 1
            with contextlib.suppress(OSError):
                self._json(500, {"error": {"type": "server_error", "message": f"emulator error: {type(exc).__name__}"}})

    def _chat(self, body: dict) -> None:
        engine = self.server.engine
        lower = {k.lower(): v for k, v in self.headers.items()}
        reply = engine.chat(body, lower)  # raises EmulatorRefusal before admission
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                engine.release()

        try:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(reply, include_usage, release)
            else:
                self._whole(reply, release)
        finally:
            release()

    def _whole(self, r: Reply, release) -> None:
        engine = self.server.engine
        engine.sleep(r.ttft_s + r.completion_tokens / r.decode_tokens_per_s)
        message = {"role": "assistant", "content": CONTENT_WORD * r.content_tokens}
        if r.reasoning_tokens:
            message["reasoning_content"] = REASONING_WORD * r.reasoning_tokens
        if r.tool_calls:
            message["tool_calls"] = r.tool_calls
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": r.model,
            "choices": [{"index": 0, "message": message, "finish_reason": r.finish_reason}],
        }
        if r.fault != "no_usage":
            payload["usage"] = r.usage()
        data = json.dumps(payload).encode()
        # Free the concurrency slot before the last byte goes out: the client may send its next call at once.
        release()
        if r.fault == "stream_cut":
            self._headers(200, "application/json", None, len(data))
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self._headers(200, "application/json", None, len(data))
        self.wfile.write(data)

    def _stream(self, r: Reply, include_usage: bool, release) -> None:
        engine, cfg = self.server.engine, self.server.engine.config
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def event(choices, usage=None, top_usage=False):
            d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": r.model, "choices": choices}
            if top_usage:
                d["usage"] = usage
            self._chunk(b"data: " + json.dumps(d).encode() + b"\n\n")
            self.wfile.flush()

        self._headers(200, "text/event-stream", {"Cache-Control": "no-cache"})
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        engine.sleep(r.ttft_s)
        k = cfg.stream_chunk_tokens
        pieces = [
            ("reasoning_content", REASONING_WORD, r.reasoning_tokens),
            ("content", CONTENT_WORD, r.content_tokens),
        ]
        total, sent = r.completion_tokens, 0
        for fieldname, word, n in pieces:
            for start in range(0, n, k):
                m = min(k, n - start)
                if r.fault == "stream_cut" and sent >= total // 2:
                    release()
                    self.close_connection = True  # end mid-body: the chunked encoding is left unterminated
                    return
                event([{"index": 0, "delta": {fieldname: word * m}, "finish_reason": None}])
                sent += m
                engine.sleep(m / r.decode_tokens_per_s)
        for j, call in enumerate(r.tool_calls):
            # As OpenAI streams them: the first delta of a call carries id, type and name, later ones arguments.
            head = {"index": j, "id": call["id"], "type": call["type"]}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            event([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}])
            text = call["function"]["arguments"]
            step = max(16, 4 * k)
            for start in range(0, len(text), step):
                piece = {"index": j, "function": {"arguments": text[start : start + step]}}
                event([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
        if r.tool_calls:
            engine.sleep(r.tool_tokens / r.decode_tokens_per_s)
        if r.fault == "stream_cut":  # nothing to cut (empty reply): cut before the final chunk
            release()
            self.close_connection = True
            return
        release()
        usage = None if r.fault == "no_usage" else r.usage()
        final = {"index": 0, "delta": {}, "finish_reason": r.finish_reason}
        where = cfg.stream_usage_location
        if usage is not None and where in ("choice", "both"):
            final["usage"] = usage
        event([final], usage, top_usage=usage is not None and where in ("top", "both") and not include_usage)
        if include_usage:
            event([], usage, top_usage=True)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0):
        self.engine = Engine(config)
        super().__init__((host, port), _Handler)

    def handle_error(self, request, client_address):
        # A client that drops a keep-alive connection is normal; anything else is reported.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class RunningEmulator:
    """Handle returned by `emulator()`: base_url, engine (stats) and config."""

    def __init__(self, server: EmulatorServer, thread: threading.Thread):
        self.server, self.thread = server, thread

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def engine(self) -> Engine:
        return self.server.engine

    @property
    def config(self) -> EmulatorConfig:
        return self.server.engine.config

    def __repr__(self) -> str:
        return f"RunningEmulator(models={self.config.models}, time_scale={self.config.time_scale})"


@contextlib.contextmanager
def emulator(config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningEmulator]:
    """Run the emulator in a background thread on a free port of 127.0.0.1; shuts down on exit."""
    server = EmulatorServer(config or EmulatorConfig(), host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kimiplan-emulator", daemon=True
    )
    thread.start()
    try:
        yield RunningEmulator(server, thread)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_forever(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8765, on_ready: Callable[[str], None] | None = None
) -> None:
    """Blocking server for `kimiplan emulator serve`; `on_ready(base_url)` runs once the socket listens
    (port 0 binds a free port, and base_url names the one bound)."""
    server = EmulatorServer(config, host, port)
    try:
        if on_ready is not None:
            on_ready(server.base_url)
        server.serve_forever()
    finally:
        server.server_close()
