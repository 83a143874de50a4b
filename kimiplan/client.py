"""The only network code in kimiplan: a small Kimi client on the openai SDK with a retry policy of its own.

- The SDK's hidden retries are off (`max_retries=0`), so every attempt is counted here.
- 429s are typed by the body (kimi-platform-facts.md §2c): concurrency / RPM / TPM refusals back off
  exponentially with full jitter (`retry_delay`, the same model the simulator's retrying client uses:
  `kimiplan.model.settings.backoff_s`); TPD waits for the reset or stops; `exceeded_current_quota_error` and
  authentication failures stop at once; `Retry-After` (seconds or an HTTP date) is a floor, capped.
- Responses are read by module-level parsers (`parse_completion`, `parse_sse`, `StreamReader`); anything they
  cannot read is a typed `MalformedResponseError`, never a bare exception.
- The API key is a `SecretStr`: never printed, logged, stored or returned; server messages are scrubbed
  (`scrub`) before they go into an error, in case they echo the Authorization header.
- Model IDs are never guessed: `KimiConfig.model` has no default.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlparse

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from kimiplan.catalog.behaviour import kimi_behaviour
from kimiplan.catalog.usage import UsageError, read_usage, usage_block
from kimiplan.errors import ConfigError, KimiplanError
from kimiplan.model.settings import backoff_s
from kimiplan.tokens.tokenizer import count_messages, count_text

# The HTTP library under the openai SDK (httpx, or its successor httpx2 in newer SDKs): a connection that
# breaks while a streamed body is read raises its TransportError, not an openai error.
_http = getattr(openai._base_client, "httpx2", None) or getattr(openai._base_client, "httpx", None)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (_http.TransportError,) if _http is not None else ()

OFFICIAL_BASE_URLS = ("https://api.moonshot.ai/v1", "https://api.moonshot.cn/v1")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ENV_KEY = "MOONSHOT_API_KEY"


class KimiAPIError(KimiplanError):
    """A call that did not succeed; `kind` says why and `attempts` how many were made. `fatal` errors mean
    no later call can succeed either (a sampler stops on them)."""

    fatal = False

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        attempts: int = 1,
        retries: Mapping[str, int] | None = None,
    ):
        super().__init__(message)
        self.kind, self.status, self.attempts = kind, status, attempts
        self.retries = dict(retries or {})


class QuotaExceededError(KimiAPIError):
    """Balance exhausted or account suspended: retrying cannot help, so everything stops."""

    fatal = True


class DailyLimitError(KimiAPIError):
    """The organisation's TPD is used up; it resets the next day."""

    fatal = True


class AuthenticationError(KimiAPIError):
    """HTTP 401/403: the key is wrong or lacks permission; every further call would fail the same way."""

    fatal = True


class MalformedResponseError(KimiAPIError):
    """A response the client cannot read: a body that is empty, HTML or not JSON, JSON without `choices`, an
    SSE line that is not JSON, an unreadable usage block. Not retried: the call may have been billed."""

    def __init__(self, message: str, **kw: Any):
        kw.setdefault("kind", "malformed")
        super().__init__(message, **kw)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_attempts: int = Field(default=6, ge=1, le=100)
    base_delay_s: float = Field(default=1.0, ge=0, le=86_400)
    max_delay_s: float = Field(default=60.0, ge=0, le=86_400)
    #: full jitter: each backoff is min(max_delay_s, base_delay_s * 2**retry) * U(0, 1)
    jitter: bool = True
    #: a server's Retry-After (header or "try again after N seconds") is obeyed up to this many seconds
    max_retry_after_s: float = Field(default=300.0, ge=0, le=86_400)
    #: "stop" raises DailyLimitError; "wait" sleeps until the daily reset (Kimi: "resets the next day")
    on_tpd: Literal["stop", "wait"] = "stop"
    #: the reset is midnight at this UTC offset; 8 (Beijing) is the simulator's default (`WindowSettings`)
    tpd_reset_utc_offset_hours: float = Field(default=8.0, ge=-12, le=14)
    retry_server_errors: bool = True
    retry_broken_streams: bool = True
    #: multiplies every wait; set it to the emulator's time_scale so tests run faster than real time
    time_scale: float = Field(default=1.0, ge=0)


class KimiConfig(BaseModel):
    """Where and how to call Kimi. `repr()` masks the key."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(min_length=1)
    base_url: str = OFFICIAL_BASE_URLS[0]
    api_key: SecretStr | None = None
    timeout_s: float = Field(
        default=900.0, gt=0, le=86_400
    )  # Kimi answers 504 after 900 s without a response (facts §2c)
    thinking: bool = True
    stream: bool = True
    continue_on_length: bool = False
    max_continuations: int = Field(default=2, ge=0)
    keep_text: bool = False  # keep generated text in CallResult (never in stores unless asked)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    #: further base URLs the caller vouches for (a company gateway in front of Kimi); the key is sent there
    allowed_base_urls: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _known_host(self) -> KimiConfig:
        v = self.base_url.rstrip("/")
        host = urlparse(v).hostname or ""
        allowed = {u.rstrip("/") for u in self.allowed_base_urls}
        if v not in OFFICIAL_BASE_URLS and host not in _LOOPBACK and v not in allowed:
            raise ValueError(
                f"base_url {v!r} is neither {' nor '.join(OFFICIAL_BASE_URLS)} nor a local emulator (127.0.0.1); "
                "list a gateway in allowed_base_urls to use it"
            )
        if urlparse(v).scheme not in ("http", "https"):
            raise ValueError(f"base_url {v!r} must start with http:// or https://")
        self.base_url = v
        return self

    @classmethod
    def from_env(cls, model: str, **kwargs: Any) -> KimiConfig:
        """Key from MOONSHOT_API_KEY unless given."""
        if kwargs.get("api_key") is None:
            key = os.environ.get(ENV_KEY)
            if not key:
                raise ConfigError(f"api_key is not set: pass it or set the environment variable {ENV_KEY}")
            kwargs["api_key"] = key
        return cls(model=model, **kwargs)

    @property
    def is_local(self) -> bool:
        return (urlparse(self.base_url).hostname or "") in _LOOPBACK


# --- error typing ------------------------------------------------------------------------------------------
_RATE_KINDS = (
    ("max concurrency", "concurrency"),
    ("max RPM", "rpm"),
    ("TPM rate limit", "tpm"),
    ("TPD rate limit", "tpd"),
)
_AFTER = re.compile(r"try again after (\d+(?:\.\d+)?) seconds")
#: kinds worth another attempt (server errors and broken streams too, when the policy says so)
RETRYABLE = frozenset({"concurrency", "rpm", "tpm", "rate_limit", "overloaded", "tpd"})
#: API keys as providers print them: Moonshot's sk-<48 alnum>, and dashed forms (sk-proj-..., sk-or-v1-...)
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+")


def scrub(text: Any, secret: str | None = None, limit: int = 300) -> str:
    """A server message fit for an error record: no key (given, key-shaped or after `Bearer`), one line,
    at most `limit` characters."""
    s = str(text)
    if secret:
        s = s.replace(secret, "[redacted]")
    s = KEY_PATTERN.sub("sk-[redacted]", s)
    s = _BEARER.sub(r"\1[redacted]", s)
    s = _AUTH_HEADER.sub(r"\1[redacted]", s)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def classify_error(status: int | None, body: Any) -> str:
    """Map an HTTP status and Kimi error body to a retry kind."""
    err = body.get("error", body) if isinstance(body, Mapping) else {}
    etype = (err or {}).get("type") if isinstance(err, Mapping) else None
    message = str((err or {}).get("message", "")) if isinstance(err, Mapping) else str(body or "")
    if etype == "exceeded_current_quota_error":
        return "quota"
    if etype == "engine_overloaded_error":
        return "overloaded"
    if status == 429 or etype == "rate_limit_reached_error":
        for needle, kind in _RATE_KINDS:
            if needle in message:
                return kind
        return "rate_limit"
    if status is not None and status >= 500:
        return "server"
    return {400: "bad_request", 401: "auth", 403: "forbidden", 404: "not_found"}.get(status or 0, "other")


def parse_retry_after(value: Any, now: dt.datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for: a number of seconds or an HTTP date (RFC 9110 §10.2.3).
    Negative or past values are 0; anything unreadable is None (no hint)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        secs = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        secs = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if not math.isfinite(secs):
        return None
    return max(secs, 0.0)


def message_hint(message: Any) -> float | None:
    """Kimi's 429 text "please try again after N seconds", as seconds."""
    m = _AFTER.search(str(message))
    return float(m.group(1)) if m else None


def _seconds_to_daily_reset(offset_hours: float, now: dt.datetime | None = None) -> float:
    """Seconds from `now` to the next midnight at UTC+`offset_hours`."""
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    local = (now or dt.datetime.now(dt.UTC)).astimezone(tz)
    nxt = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (nxt - local).total_seconds()


def retry_delay(
    kind: str,
    attempt: int,
    hint: float | None = None,
    *,
    policy: RetryPolicy | None = None,
    u: float = 1.0,
    now: dt.datetime | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 = the first call) of a call that failed with
    `kind`, in service time (the client multiplies by `time_scale`). Pure: `u` is the jitter draw in [0, 1).

    - `tpd`: until the daily reset (midnight at `tpd_reset_utc_offset_hours`).
    - anything else: exponential backoff with full jitter, `backoff_s(attempt - 1, base, cap, u)` (the model
      the simulator's retrying client uses), never below the server's hint (Retry-After or "try again after N
      seconds"), which is obeyed up to `max_retry_after_s`."""
    pol = policy or RetryPolicy()
    if kind == "tpd":
        return _seconds_to_daily_reset(pol.tpd_reset_utc_offset_hours, now)
    d = backoff_s(max(attempt - 1, 0), pol.base_delay_s, pol.max_delay_s, u if pol.jitter else 1.0)
    if hint is not None and hint > 0:
        d = max(d, min(hint, pol.max_retry_after_s))
    return d


# --- results -----------------------------------------------------------------------------------------------
@dataclass
class CallResult:
    model: str
    provenance: str  # "live" or "emulator" (from the X-Kimiplan-Emulated response header)
    prompt_tokens: int | None  # None when the response carried no usage
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int  # counted locally from reasoning_content with the exact tokenizer (no usage field)
    output_tokens: int
    finish_reason: str | None
    first_finish_reason: str | None
    ttft_s: float | None  # service seconds (measured / emulator time scale)
    total_s: float
    attempts: int
    retries: dict[str, int] = field(default_factory=dict)
    continuations: int = 0
    continuation_prompt_tokens: int = 0
    usage_missing: bool = False
    time_scale: float = 1.0
    content: str | None = None
    reasoning_content: str | None = None
    #: the first attempt's request id (the header named in data/catalog/behaviour.toml), for Moonshot support
    request_id: str | None = None
    #: the tool calls the reply made (finish_reason "tool_calls"); arguments are kept only with keep_text
    tool_calls: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChatRequest:
    """One chat call as sent: the messages and the knobs kimiplan sets. `sdk_kwargs` is the request body."""

    messages: tuple
    max_completion_tokens: int | None = None
    thinking: bool = True
    call_id: str = ""
    route: str | None = None
    extra: Mapping[str, Any] | None = None

    def sdk_kwargs(self, model: str) -> dict:
        kw: dict[str, Any] = {"model": model, "messages": list(self.messages)}
        if self.max_completion_tokens is not None:
            kw["max_completion_tokens"] = int(self.max_completion_tokens)
        body = {"thinking": {"type": "enabled" if self.thinking else "disabled"}}
        body.update(self.extra or {})
        kw["extra_body"] = body
        headers = {"X-Kimiplan-Call-Id": self.call_id}
        if self.route:
            headers["X-Kimiplan-Route"] = self.route
        kw["extra_headers"] = headers
        return kw

    def continued(self, partial: Mapping[str, Any]) -> ChatRequest:
        """The same call resumed in Partial Mode from an assistant prefix."""
        return replace(self, messages=(*self.messages, dict(partial)))


@dataclass
class Reply:
    """What one HTTP attempt returned, parsed (times in real seconds; the client scales them)."""

    content: str
    reasoning: str
    finish_reason: str | None
    usage: dict[str, int] | None  # read_usage() of the usage block, None when there was none
    ttft_s: float | None = None
    #: tool calls of a finish_reason "tool_calls" reply: {"id", "type", "function": {"name", "arguments"}}
    tool_calls: list[dict] = field(default_factory=list)


class BrokenStream(Exception):
    """A stream that ended without a finish_reason (cut mid-way)."""


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedResponseError(f"response field {where} is not text (got {type(value).__name__})")
    return value


def _usage(obj: Any) -> dict[str, int] | None:
    block = usage_block(obj)
    if block is None:
        return None
    try:
        return read_usage(block)
    except UsageError as exc:
        raise MalformedResponseError(f"response usage cannot be read: {exc}") from None


def parse_json_body(raw: bytes | str, what: str = "response body") -> Any:
    """JSON of a response body; empty, HTML or otherwise unreadable bodies are a MalformedResponseError."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        raise MalformedResponseError(f"{what} is empty")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        start = " ".join(text[:60].split())
        raise MalformedResponseError(f"{what} is not JSON (starts {start!r})") from None


def parse_completion(data: Any) -> Reply:
    """A whole (non-streamed) chat completion: content, reasoning, finish_reason and usage."""
    if not isinstance(data, Mapping):
        raise MalformedResponseError(f"response is not a JSON object (got {type(data).__name__})")
    if isinstance(data.get("error"), Mapping):
        raise MalformedResponseError(f"response carries an error: {scrub(data['error'].get('message', ''))}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise MalformedResponseError("response has no choices")
    msg = choices[0].get("message")
    if not isinstance(msg, Mapping):
        raise MalformedResponseError("response choices[0] has no message")
    finish = choices[0].get("finish_reason")
    return Reply(
        _text(msg.get("content"), "message.content"),
        _text(msg.get("reasoning_content"), "message.reasoning_content"),
        finish if isinstance(finish, str) else None,
        _usage(data),
        tool_calls=_tool_calls(msg.get("tool_calls")),
    )


def _tool_calls(raw: Any) -> list[dict]:
    """The tool calls of a message, checked: ids, types, names and JSON-string arguments."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedResponseError("message.tool_calls is not a list")
    out = []
    for c in raw:
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(c.get("id"), str) or not isinstance(fn.get("name"), str):
            raise MalformedResponseError("a tool call has no id or function name")
        args = _text(fn.get("arguments"), "tool_calls[].function.arguments")
        out.append(
            {
                "id": c["id"],
                "type": str(c.get("type") or "function"),
                "function": {"name": fn["name"], "arguments": args},
            }
        )
    return out


def parse_sse(lines: Iterable[str | bytes]) -> Iterator[Mapping[str, Any]]:
    """The JSON events of a server-sent-events body, up to `data: [DONE]`; a data line that is not a JSON
    object is a MalformedResponseError; comments and other fields are skipped."""
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            raise MalformedResponseError(f"stream event is not JSON (starts {payload[:60]!r})") from None
        if not isinstance(event, Mapping):
            raise MalformedResponseError(f"stream event is not a JSON object (got {type(event).__name__})")
        yield event


class StreamReader:
    """Accumulates stream events into a Reply. `usage` may sit at the top level of the final chunk or inside
    choices[0] (facts §3): both are read, through the one usage parser."""

    def __init__(self, clock: Callable[[], float] | None = None):
        self._clock = clock
        self._t0 = clock() if clock else None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, int] | None = None
        self.ttft_s: float | None = None
        self._calls: dict[int, dict] = {}  # tool-call deltas by index, accumulated as OpenAI streams them

    def feed(self, event: Mapping[str, Any]) -> None:
        if isinstance(event.get("error"), Mapping):
            err = event["error"]
            raise KimiAPIError(
                f"stream carried an error: {scrub(err.get('message', ''))}",
                kind=classify_error(None, {"error": err}) if err.get("type") else "stream_error",
            )
        self.usage = _usage(event) or self.usage
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise MalformedResponseError("stream event choices is not a list")
        for ch in choices:
            if not isinstance(ch, Mapping):
                raise MalformedResponseError("stream event choice is not an object")
            delta = ch.get("delta") or {}
            if not isinstance(delta, Mapping):
                raise MalformedResponseError("stream event delta is not an object")
            r = _text(delta.get("reasoning_content"), "delta.reasoning_content")
            c = _text(delta.get("content"), "delta.content")
            if (r or c) and self.ttft_s is None and self._clock is not None:
                self.ttft_s = self._clock() - self._t0
            if r:
                self.reasoning.append(r)
            if c:
                self.content.append(c)
            for d in delta.get("tool_calls") or []:
                if not isinstance(d, Mapping) or not isinstance(d.get("index", 0), int):
                    raise MalformedResponseError("stream tool_calls delta is not an object with an index")
                call = self._calls.setdefault(d.get("index", 0), {"id": "", "type": "function", "name": "", "args": []})
                fn = d.get("function") or {}
                call["id"] = d.get("id") or call["id"]
                call["type"] = d.get("type") or call["type"]
                call["name"] += _text(fn.get("name"), "delta.tool_calls[].function.name")
                call["args"].append(_text(fn.get("arguments"), "delta.tool_calls[].function.arguments"))
            if ch.get("finish_reason"):
                self.finish = str(ch["finish_reason"])

    def result(self) -> Reply:
        if self.finish is None:
            raise BrokenStream("stream ended without a finish_reason")
        calls = [
            {"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": "".join(c["args"])}}
            for _, c in sorted(self._calls.items())
        ]
        return Reply("".join(self.content), "".join(self.reasoning), self.finish, self.usage, self.ttft_s, calls)


def parse_stream(events: Iterable[Mapping[str, Any]], clock: Callable[[], float] | None = None) -> Reply:
    """A whole streamed reply from its events (see `parse_sse`)."""
    reader = StreamReader(clock)
    for event in events:
        reader.feed(event)
    return reader.result()


@dataclass
class _Attempt:
    reply: Reply
    total_s: float
    emulated: bool
    time_scale: float
    request_id: str | None = None

    @property
    def prompt_tokens(self) -> int | None:
        return None if self.reply.usage is None else self.reply.usage["prompt_tokens"]

    @property
    def completion_tokens(self) -> int | None:
        return None if self.reply.usage is None else self.reply.usage["completion_tokens"]

    @property
    def cached_tokens(self) -> int:
        return 0 if self.reply.usage is None else self.reply.usage["cached_tokens"]


class KimiClient:
    def __init__(self, config: KimiConfig, *, sleep: Callable[[float], None] = time.sleep, seed: int | None = None):
        self.config = config
        if config.api_key is None:
            raise ConfigError(f"api_key is not set: pass it or set the environment variable {ENV_KEY}")
        self._sdk = openai.OpenAI(
            api_key=config.api_key.get_secret_value(), base_url=config.base_url, max_retries=0, timeout=config.timeout_s
        )
        self._sleep = sleep
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"KimiClient(model={self.config.model!r}, base_url={self.config.base_url!r}, api_key=**********)"

    def close(self) -> None:
        self._sdk.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _scrub(self, text: Any) -> str:
        key = self.config.api_key.get_secret_value() if self.config.api_key else None
        return scrub(text, key)

    # -- token estimation ------------------------------------------------------------------------------
    def estimate_tokens(self, messages: Sequence[Mapping[str, Any]], tools=None) -> int:
        body: dict[str, Any] = {"model": self.config.model, "messages": list(messages)}
        if tools:
            body["tools"] = list(tools)
        try:
            # cast_to the HTTP response itself: the body is read by parse_json_body, not by the SDK
            raw = self._sdk.post("/tokenizers/estimate-token-count", body=body, cast_to=_http.Response)
        except openai.APIStatusError as exc:
            raise KimiAPIError(
                f"estimate-token-count failed: HTTP {exc.status_code}: {self._scrub(exc.message)}",
                kind=classify_error(exc.status_code, exc.body),
                status=exc.status_code,
            ) from None
        except openai.APIConnectionError as exc:
            raise KimiAPIError(f"estimate-token-count failed: {self._scrub(exc)}", kind="connection") from None
        resp = parse_json_body(raw.content, "estimate-token-count response")
        total = (resp.get("data") or {}).get("total_tokens") if isinstance(resp, Mapping) else None
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise MalformedResponseError(f"estimate-token-count returned no data.total_tokens: {self._scrub(resp)}")
        return total

    def list_models(self) -> list[str]:
        try:
            raw = self._sdk.models.with_raw_response.list()
        except openai.APIStatusError as exc:
            raise KimiAPIError(
                f"models failed: HTTP {exc.status_code}: {self._scrub(exc.message)}",
                kind=classify_error(exc.status_code, exc.body),
                status=exc.status_code,
            ) from None
        data = parse_json_body(raw.content, "models response")
        items = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(items, list) or not all(isinstance(m, Mapping) and "id" in m for m in items):
            raise MalformedResponseError("models response has no data[].id")
        return [str(m["id"]) for m in items]

    # -- chat ------------------------------------------------------------------------------------------
    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_completion_tokens: int | None = None,
        thinking: bool | None = None,
        call_id: str | None = None,
        route: str | None = None,
        continue_on_length: bool | None = None,
        extra: Mapping[str, Any] | None = None,
        before_retry: Callable[[str], bool] | None = None,
        keep_text: bool | None = None,
    ) -> CallResult:
        """One logical call (with retries and optional Partial Mode continuations).

        `before_retry(kind)` is asked before resending after an attempt that may have been billed (a cut
        stream or a dropped connection); False stops there with a KimiAPIError of that kind. The sampler uses
        it to reserve the next attempt's cost under its spend cap."""
        cfg = self.config
        keep = cfg.keep_text if keep_text is None else keep_text
        req = ChatRequest(
            tuple(messages),
            max_completion_tokens,
            cfg.thinking if thinking is None else thinking,
            call_id or uuid.uuid4().hex,
            route,
            extra,
        )
        cont = cfg.continue_on_length if continue_on_length is None else continue_on_length
        retries: dict[str, int] = {}
        first, attempts = self._with_retries(req, retries, before_retry)
        content, reasoning = first.reply.content, first.reply.reasoning
        finish, completion = first.reply.finish_reason, first.completion_tokens
        usage_missing = first.prompt_tokens is None
        cont_prompt, n_cont, total_s = 0, 0, first.total_s
        while cont and finish == "length" and n_cont < cfg.max_continuations:
            # Partial Mode: resend with the truncated text as the assistant prefix (+ reasoning in thinking mode).
            partial = {"role": "assistant", "content": content, "partial": True}
            if req.thinking and reasoning:
                partial["reasoning_content"] = reasoning
            nreq = req.continued(partial)
            nxt, a = self._with_retries(nreq, retries, before_retry)
            attempts += a
            n_cont += 1
            content += nxt.reply.content
            reasoning += nxt.reply.reasoning
            finish, total_s = nxt.reply.finish_reason, total_s + nxt.total_s
            if nxt.prompt_tokens is None:
                usage_missing = True
                cont_prompt += count_messages(list(nreq.messages))
            else:
                cont_prompt += nxt.prompt_tokens
            completion = (
                None if (completion is None or nxt.completion_tokens is None) else completion + nxt.completion_tokens
            )
        r_tok = count_text(reasoning) if reasoning else 0
        c_tok = count_text(content) if content else 0
        if completion is None:  # no usage chunk: the generated text is all we have, counted exactly
            completion = r_tok + c_tok
        return CallResult(
            model=cfg.model,
            provenance="emulator" if first.emulated else "live",
            prompt_tokens=first.prompt_tokens,
            completion_tokens=completion,
            cached_tokens=first.cached_tokens,
            reasoning_tokens=r_tok,
            output_tokens=max(completion - r_tok, 0),
            finish_reason=finish,
            first_finish_reason=first.reply.finish_reason,
            ttft_s=first.reply.ttft_s,
            total_s=total_s,
            attempts=attempts,
            retries=retries,
            continuations=n_cont,
            continuation_prompt_tokens=cont_prompt,
            usage_missing=usage_missing,
            time_scale=first.time_scale,
            request_id=first.request_id,
            tool_calls=_calls_kept(first.reply.tool_calls, keep),
            content=content if keep else None,
            reasoning_content=reasoning if keep else None,
        )

    def _fail(self, cls, message: str, kind: str, status, attempt: int, retries) -> KimiAPIError:
        return cls(message, kind=kind, status=status, attempts=attempt, retries=retries)

    def _with_retries(
        self, req: ChatRequest, retries: dict[str, int], before_retry: Callable[[str], bool] | None = None
    ) -> tuple[_Attempt, int]:
        pol = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(req), attempt
            except openai.APIStatusError as exc:
                kind = classify_error(exc.status_code, exc.body)
                raw_msg = (exc.body or {}).get("message", exc.message) if isinstance(exc.body, Mapping) else exc.message
                message = self._scrub(raw_msg)
                status = exc.status_code
                if kind == "quota":
                    raise self._fail(
                        QuotaExceededError,
                        f"Kimi refused the call: account quota exceeded ({message}). Stopping: "
                        "top up the balance or check the plan.",
                        kind,
                        status,
                        attempt,
                        retries,
                    ) from None
                if kind in ("auth", "forbidden"):
                    raise self._fail(
                        AuthenticationError,
                        f"HTTP {status} {kind}: {message}. Stopping: check the API key and its permissions.",
                        kind,
                        status,
                        attempt,
                        retries,
                    ) from None
                if kind == "tpd" and pol.on_tpd == "stop":
                    raise self._fail(
                        DailyLimitError,
                        f"daily token limit (TPD) reached: {message}; it resets the next day",
                        kind,
                        status,
                        attempt,
                        retries,
                    ) from None
                retryable = kind in RETRYABLE or (kind == "server" and pol.retry_server_errors)
                if not retryable or attempt >= pol.max_attempts:
                    raise self._fail(
                        KimiAPIError,
                        f"call failed after {attempt} attempt(s): HTTP {status} {kind}: {message}"
                        + _request_id_note(exc.response.headers),
                        kind,
                        status,
                        attempt,
                        retries,
                    ) from None
                retries[kind] = retries.get(kind, 0) + 1
                hint = parse_retry_after(exc.response.headers.get("retry-after"))
                if hint is None:
                    hint = message_hint(raw_msg)
                delay = retry_delay(kind, attempt, hint, policy=pol, u=self._rng.random())
                self._sleep(delay * pol.time_scale)
            except (openai.APIConnectionError, BrokenStream, *_TRANSPORT_ERRORS) as exc:
                kind = "broken_stream" if isinstance(exc, BrokenStream) else "connection"
                declined = (
                    pol.retry_broken_streams
                    and attempt < pol.max_attempts
                    and before_retry is not None
                    and not before_retry(kind)
                )
                if not pol.retry_broken_streams or attempt >= pol.max_attempts or declined:
                    why = "; not retried: no room for another attempt" if declined else ""
                    raise self._fail(
                        KimiAPIError,
                        f"call failed after {attempt} attempt(s): {kind}: {self._scrub(exc)}{why}",
                        kind,
                        None,
                        attempt,
                        retries,
                    ) from None
                retries[kind] = retries.get(kind, 0) + 1
                self._sleep(retry_delay(kind, attempt, policy=pol, u=self._rng.random()) * pol.time_scale)
            except KimiAPIError as exc:  # malformed responses and errors inside a stream: typed, not retried
                exc.attempts, exc.retries = attempt, dict(retries)
                exc.args = (f"call failed on attempt {attempt}: {exc.kind}: {self._scrub(exc)}",)
                raise

    def _once(self, req: ChatRequest) -> _Attempt:
        kw = req.sdk_kwargs(self.config.model)
        t0 = time.perf_counter()
        if not self.config.stream:
            raw = self._sdk.chat.completions.with_raw_response.create(**kw)
            emulated, scale = _emulation(raw.headers)
            reply = parse_completion(parse_json_body(raw.content))
            return _Attempt(reply, (time.perf_counter() - t0) / scale, emulated, scale, _request_id(raw.headers))
        with self._sdk.chat.completions.with_streaming_response.create(stream=True, **kw) as resp:
            emulated, scale = _emulation(resp.headers)
            rid = _request_id(resp.headers)
            reader = StreamReader(time.perf_counter)
            for event in parse_sse(resp.iter_lines()):
                reader.feed(event)
        reply = reader.result()
        if reply.ttft_s is not None:
            reply.ttft_s /= scale
        return _Attempt(reply, (time.perf_counter() - t0) / scale, emulated, scale, rid)


def _calls_kept(calls: list[dict], keep: bool) -> list[dict]:
    """Tool calls for a CallResult: the arguments (which may echo prompt text) only when text is kept."""
    if keep:
        return [dict(c) for c in calls]
    return [{"id": c["id"], "type": c["type"], "function": {"name": c["function"]["name"]}} for c in calls]


def _request_id(headers) -> str | None:
    """The response's request id, from the header Kimi uses (data/catalog/behaviour.toml: request_id_header)."""
    v = headers.get(kimi_behaviour()["request_id_header"])
    return scrub(v, limit=100) if v else None


def _request_id_note(headers) -> str:
    rid = _request_id(headers)
    return f" (request id {rid})" if rid else ""


def _emulation(headers) -> tuple[bool, float]:
    emulated = headers.get("x-kimiplan-emulated") == "1"
    scale = 1.0
    if emulated:
        try:
            s = float(headers.get("x-kimiplan-time-scale") or 1.0)
            scale = s if s > 0 else 1.0
        except ValueError:
            pass
    return emulated, scale
