"""The only network code in kimiplan: a small Kimi client on the openai SDK with a retry policy of its own.

- The SDK's hidden retries are off (`max_retries=0`), so every attempt is counted here.
- 429s are typed by the body (kimi-platform-facts.md §2c): concurrency / RPM / TPM refusals back off
  exponentially with jitter; TPD waits for the reset or stops; `exceeded_current_quota_error` stops at once;
  `engine_overloaded_error` honours `Retry-After`.
- The API key is a `SecretStr`: never printed, logged, stored or returned.
- Model IDs are never guessed: `KimiConfig.model` has no default.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from kimiplan.errors import ConfigError, KimiplanError
from kimiplan.tokens.tokenizer import count_messages, count_text

OFFICIAL_BASE_URLS = ("https://api.moonshot.ai/v1", "https://api.moonshot.cn/v1")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ENV_KEY = "MOONSHOT_API_KEY"


class KimiAPIError(KimiplanError):
    """A call that did not succeed; `kind` says why and `attempts` how many were made."""

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


class DailyLimitError(KimiAPIError):
    """The organisation's TPD is used up; it resets the next day."""


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=6, ge=1)
    base_delay_s: float = Field(default=1.0, ge=0)
    max_delay_s: float = Field(default=60.0, ge=0)
    jitter: bool = True
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

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    base_url: str = OFFICIAL_BASE_URLS[0]
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=900.0, gt=0)  # Kimi answers 504 after 900 s without a response (facts §2c)
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


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random, floor_s: float = 0.0) -> float:
    """Exponential backoff with full jitter, never below the server's hint; in real seconds."""
    d = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    if policy.jitter:
        d = rng.uniform(d / 2, d)
    return max(d, floor_s) * policy.time_scale


def _seconds_to_daily_reset(offset_hours: float, now: dt.datetime | None = None) -> float:
    """Seconds from `now` to the next midnight at UTC+`offset_hours`."""
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    local = (now or dt.datetime.now(dt.UTC)).astimezone(tz)
    nxt = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (nxt - local).total_seconds()


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Attempt:
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int
    content: str
    reasoning: str
    finish_reason: str | None
    ttft_s: float | None
    total_s: float
    emulated: bool
    time_scale: float


class BrokenStream(Exception):
    """A stream that ended without a finish_reason (cut mid-way)."""


def _usage_of(obj: Any) -> Mapping[str, Any] | None:
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump()
    return obj if isinstance(obj, Mapping) and obj.get("prompt_tokens") is not None else None


def _cached_of(usage: Mapping[str, Any]) -> int:
    # Kimi puts cached_tokens at the top of usage; OpenAI-style prompt_tokens_details is a fallback.
    if usage.get("cached_tokens") is not None:
        return int(usage["cached_tokens"])
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


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

    # -- token estimation ------------------------------------------------------------------------------
    def estimate_tokens(self, messages: Sequence[Mapping[str, Any]], tools=None) -> int:
        body: dict[str, Any] = {"model": self.config.model, "messages": list(messages)}
        if tools:
            body["tools"] = list(tools)
        try:
            resp = self._sdk.post("/tokenizers/estimate-token-count", body=body, cast_to=object)
        except openai.APIStatusError as exc:
            raise KimiAPIError(
                f"estimate-token-count failed: HTTP {exc.status_code}: {exc.message}",
                kind=classify_error(exc.status_code, exc.body),
                status=exc.status_code,
            ) from None
        if not isinstance(resp, Mapping) or "error" in resp:
            raise KimiAPIError(f"estimate-token-count returned an error: {resp!r:.200}", kind="other")
        return int(resp["data"]["total_tokens"])

    def list_models(self) -> list[str]:
        return [m.id for m in self._sdk.models.list()]

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
    ) -> CallResult:
        """One logical call (with retries and optional Partial Mode continuations)."""
        cfg = self.config
        thinking = cfg.thinking if thinking is None else thinking
        cont = cfg.continue_on_length if continue_on_length is None else continue_on_length
        call_id = call_id or uuid.uuid4().hex
        retries: dict[str, int] = {}
        first, attempts = self._with_retries(messages, max_completion_tokens, thinking, call_id, route, extra, retries)
        content, reasoning = first.content, first.reasoning
        finish, completion = first.finish_reason, first.completion_tokens
        usage_missing = first.prompt_tokens is None
        cont_prompt, n_cont, total_s = 0, 0, first.total_s
        while cont and finish == "length" and n_cont < cfg.max_continuations:
            # Partial Mode: resend with the truncated text as the assistant prefix (+ reasoning in thinking mode).
            partial = {"role": "assistant", "content": content, "partial": True}
            if thinking and reasoning:
                partial["reasoning_content"] = reasoning
            nxt, a = self._with_retries(
                [*messages, partial], max_completion_tokens, thinking, call_id, route, extra, retries
            )
            attempts += a
            n_cont += 1
            content += nxt.content
            reasoning += nxt.reasoning
            finish, total_s = nxt.finish_reason, total_s + nxt.total_s
            if nxt.prompt_tokens is None:
                usage_missing = True
                cont_prompt += count_messages([*messages, partial])
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
            first_finish_reason=first.finish_reason,
            ttft_s=first.ttft_s,
            total_s=total_s,
            attempts=attempts,
            retries=retries,
            continuations=n_cont,
            continuation_prompt_tokens=cont_prompt,
            usage_missing=usage_missing,
            time_scale=first.time_scale,
            content=content if cfg.keep_text else None,
            reasoning_content=reasoning if cfg.keep_text else None,
        )

    def _with_retries(
        self, messages, max_completion_tokens, thinking, call_id, route, extra, retries
    ) -> tuple[_Attempt, int]:
        pol = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(messages, max_completion_tokens, thinking, call_id, route, extra), attempt
            except openai.APIStatusError as exc:
                kind = classify_error(exc.status_code, exc.body)
                message = (exc.body or {}).get("message", exc.message) if isinstance(exc.body, Mapping) else exc.message
                headers = exc.response.headers
                if kind == "quota":
                    raise QuotaExceededError(
                        f"Kimi refused the call: account quota exceeded ({message}). Stopping: "
                        "top up the balance or check the plan.",
                        kind=kind,
                        status=exc.status_code,
                        attempts=attempt,
                        retries=retries,
                    ) from None
                if kind == "tpd" and pol.on_tpd == "stop":
                    raise DailyLimitError(
                        f"daily token limit (TPD) reached: {message}; it resets the next day",
                        kind=kind,
                        status=exc.status_code,
                        attempts=attempt,
                        retries=retries,
                    ) from None
                retryable = kind in ("concurrency", "rpm", "tpm", "rate_limit", "overloaded", "tpd") or (
                    kind == "server" and pol.retry_server_errors
                )
                if not retryable or attempt >= pol.max_attempts:
                    raise KimiAPIError(
                        f"call failed after {attempt} attempt(s): HTTP {exc.status_code} {kind}: {message}",
                        kind=kind,
                        status=exc.status_code,
                        attempts=attempt,
                        retries=retries,
                    ) from None
                retries[kind] = retries.get(kind, 0) + 1
                if kind == "overloaded":
                    delay = float(headers.get("retry-after") or pol.base_delay_s) * pol.time_scale
                elif kind == "tpd":
                    delay = _seconds_to_daily_reset(pol.tpd_reset_utc_offset_hours) * pol.time_scale
                else:
                    hint = _AFTER.search(str(message))
                    delay = backoff_delay(pol, attempt, self._rng, float(hint.group(1)) if hint else 0.0)
                self._sleep(delay)
            except (openai.APIConnectionError, BrokenStream) as exc:
                kind = "broken_stream" if isinstance(exc, BrokenStream) else "connection"
                if not pol.retry_broken_streams or attempt >= pol.max_attempts:
                    raise KimiAPIError(
                        f"call failed after {attempt} attempt(s): {kind}: {exc}",
                        kind=kind,
                        attempts=attempt,
                        retries=retries,
                    ) from None
                retries[kind] = retries.get(kind, 0) + 1
                self._sleep(backoff_delay(pol, attempt, self._rng))

    def _request_kwargs(self, messages, max_completion_tokens, thinking, call_id, route, extra) -> dict:
        kw: dict[str, Any] = {"model": self.config.model, "messages": list(messages)}
        if max_completion_tokens is not None:
            kw["max_completion_tokens"] = int(max_completion_tokens)
        body = {"thinking": {"type": "enabled" if thinking else "disabled"}}
        body.update(extra or {})
        kw["extra_body"] = body
        headers = {"X-Kimiplan-Call-Id": call_id}
        if route:
            headers["X-Kimiplan-Route"] = route
        kw["extra_headers"] = headers
        return kw

    def _once(self, messages, max_completion_tokens, thinking, call_id, route, extra) -> _Attempt:
        kw = self._request_kwargs(messages, max_completion_tokens, thinking, call_id, route, extra)
        t0 = time.perf_counter()
        if not self.config.stream:
            raw = self._sdk.chat.completions.with_raw_response.create(**kw)
            resp = raw.parse()
            total = time.perf_counter() - t0
            emulated, scale = _emulation(raw.headers)
            usage = _usage_of(getattr(resp, "usage", None))
            msg = resp.choices[0].message
            reasoning = (msg.model_extra or {}).get("reasoning_content") or ""
            return _Attempt(
                usage["prompt_tokens"] if usage else None,
                usage["completion_tokens"] if usage else None,
                _cached_of(usage) if usage else 0,
                msg.content or "",
                reasoning,
                resp.choices[0].finish_reason,
                None,
                total / scale,
                emulated,
                scale,
            )
        stream = self._sdk.chat.completions.create(stream=True, **kw)
        emulated, scale = _emulation(stream.response.headers)
        content: list[str] = []
        reasoning: list[str] = []
        ttft = None
        finish = None
        usage = None
        try:
            for chunk in stream:
                # usage may sit at the top level of the final chunk or inside choices[0] (facts §3): check both.
                usage = _usage_of(getattr(chunk, "usage", None)) or usage
                for ch in chunk.choices or []:
                    usage = _usage_of((ch.model_extra or {}).get("usage")) or usage
                    delta = ch.delta
                    r = (delta.model_extra or {}).get("reasoning_content") if delta is not None else None
                    c = delta.content if delta is not None else None
                    if (r or c) and ttft is None:
                        ttft = time.perf_counter() - t0
                    if r:
                        reasoning.append(r)
                    if c:
                        content.append(c)
                    if ch.finish_reason:
                        finish = ch.finish_reason
        finally:
            stream.close()
        total = time.perf_counter() - t0
        if finish is None:
            raise BrokenStream("stream ended without a finish_reason")
        return _Attempt(
            usage["prompt_tokens"] if usage else None,
            usage["completion_tokens"] if usage else None,
            _cached_of(usage) if usage else 0,
            "".join(content),
            "".join(reasoning),
            finish,
            None if ttft is None else ttft / scale,
            total / scale,
            emulated,
            scale,
        )


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
