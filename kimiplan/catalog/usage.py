"""Where Kimi puts token usage in a response, read in one place.

- `usage` sits at the top level of a completion; in a stream, at the top level of the final chunk (current
  API) or inside `choices[0]` (the Jan-2026 form): both are read (kimi-platform-facts.md §3).
- `cached_tokens` is at the top level of `usage` (Kimi); OpenAI's `prompt_tokens_details.cached_tokens` is
  the fallback, never added to it.
- The K3 family's cache-write count: `cache_write_tokens`, or the Anthropic-style `cache_creation_input_tokens`.

Used by the client, the usage-log readers and `finance.cost.Usage.from_response`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class UsageError(ValueError):
    """A usage block that is present but cannot be read (a count that is not a whole number >= 0)."""


def _mapping(obj: Any) -> Mapping | None:
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):  # an SDK object
        obj = obj.model_dump()
    return obj if isinstance(obj, Mapping) else None


def usage_block(obj: Any) -> Mapping | None:
    """The `usage` mapping of a completion, a stream chunk or a choice: top level first, then choices[0].
    None when there is none (or it has no prompt_tokens)."""
    obj = _mapping(obj)
    if obj is None:
        return None
    usage = _mapping(obj.get("usage"))
    if usage is None or usage.get("prompt_tokens") is None:
        choices = obj.get("choices")
        first = _mapping(choices[0]) if isinstance(choices, list) and choices else None
        usage = _mapping(first.get("usage")) if first is not None else None
    return usage if usage is not None and usage.get("prompt_tokens") is not None else None


def _count(usage: Mapping, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise UsageError(f"usage.{name} must be a whole number >= 0, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise UsageError(f"usage.{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def read_usage(usage: Mapping) -> dict[str, int]:
    """prompt_tokens, completion_tokens, cached_tokens and cache_write_tokens of a usage block, as ints.

    A missing completion count is 0 only when the block says nothing of it; a count that is not a whole
    number >= 0 is a UsageError naming the field."""
    if not isinstance(usage, Mapping):
        raise UsageError(f"usage must be a mapping, got {type(usage).__name__}")
    if usage.get("prompt_tokens") is None:
        raise UsageError("usage.prompt_tokens is missing")
    out = {
        "prompt_tokens": _count(usage, "prompt_tokens", usage["prompt_tokens"]),
        "completion_tokens": _count(usage, "completion_tokens", usage.get("completion_tokens") or 0),
    }
    cached = usage.get("cached_tokens")
    where = "cached_tokens"
    if cached is None:
        details = usage.get("prompt_tokens_details")
        cached = (details.get("cached_tokens") if isinstance(details, Mapping) else None) or 0
        where = "prompt_tokens_details.cached_tokens"
    out["cached_tokens"] = _count(usage, where, cached)
    written = usage.get("cache_write_tokens")
    if written is None:
        written = usage.get("cache_creation_input_tokens") or 0
    out["cache_write_tokens"] = _count(usage, "cache_write_tokens", written)
    return out
