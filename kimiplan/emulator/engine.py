"""The emulator's brain, independent of HTTP: token counts, draws, prefix cache, admission and faults.

Thread-safe: one `Engine` serves every request thread. All shared state sits behind one lock and is touched
only for a few microseconds per request (no sleeping while holding it).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kimiplan.emulator.tools as T
from kimiplan.catalog.admission import OVERLOADED_MESSAGE, QUOTA_MESSAGE, rate_limit_message
from kimiplan.catalog.providers import truncate_completion
from kimiplan.tokens.tokenizer import SPECIAL_IDS, count_messages, get_tokenizer, reasoning_read

from .config import EmulatorConfig
from .refusal import EmulatorRefusal, bad_request

# Filler words that are one token each, so "n tokens of text" is exact and concatenation stays exact.
CONTENT_WORD = " hello"
REASONING_WORD = " think"
_HIDDEN_TOKEN = 276  # " the": the hidden server-side prefix is opaque filler of known length
_SEARCH_TOKEN = 276  # a $web_search result is opaque filler of its drawn length, inserted where it is read
_bad = bad_request
__all__ = ["EmulatorRefusal", "Engine", "Reply", "render_prompt_ids"]


def _optional(body: Mapping[str, Any], name: str, kind: type | tuple, what: str) -> Any:
    v = body.get(name)
    if v is not None and not isinstance(v, kind):
        raise _bad(f"{name} must be {what}, got {type(v).__name__}")
    return v


def validate_request(body: Mapping[str, Any]) -> None:
    """The shape of a chat request, field by field, as the real API checks it: every problem is a 400
    `invalid_request_error` naming the field, never an exception inside the server."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("request contains a lone surrogate (invalid Unicode) in a string") from None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise _bad(f"messages[{i}]: invalid message {m!r:.80}")
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                    raise _bad(f"messages[{i}].content[{j}] must be an object with a type")
                if part.get("type") == "text" and not isinstance(part.get("text"), str):
                    raise _bad(f"messages[{i}].content[{j}].text must be a string")
        elif content is not None and not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string or a list of parts, got {type(content).__name__}")
        if m.get("reasoning_content") is not None and not isinstance(m["reasoning_content"], str):
            raise _bad(f"messages[{i}].reasoning_content must be a string")
        calls = m.get("tool_calls")
        if calls is not None and (
            not isinstance(calls, list)
            or not all(isinstance(c, Mapping) and isinstance(c.get("function", {}), Mapping) for c in calls)
        ):
            raise _bad(f"messages[{i}].tool_calls must be a list of objects with a function object")
    tools = _optional(body, "tools", list, "a list of tool objects")
    if tools is not None and not all(isinstance(t, Mapping) for t in tools):
        raise _bad("tools must be a list of tool objects")
    if not isinstance(body.get("model"), str):
        raise _bad(f"model must be a string, got {type(body.get('model')).__name__}")
    thinking = _optional(body, "thinking", Mapping, 'an object such as {"type": "enabled"}')
    if thinking is not None and thinking.get("type", "enabled") not in ("enabled", "disabled"):
        raise _bad(f"thinking.type must be enabled or disabled, got {thinking.get('type')!r}")
    if thinking is not None and thinking.get("keep") not in (None, "all"):
        raise _bad(f'thinking.keep must be null or "all", got {thinking.get("keep")!r:.40}')
    metadata = _optional(body, "metadata", Mapping, "an object")
    if metadata is not None and metadata.get("route") is not None and not isinstance(metadata["route"], str):
        raise _bad(f"metadata.route must be a string, got {type(metadata['route']).__name__}")
    _optional(body, "user", str, "a string")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad(f"stream must be true or false, got {body['stream']!r:.40}")
    opts = _optional(body, "stream_options", Mapping, "an object")
    if opts is not None and opts.get("include_usage") is not None and not isinstance(opts["include_usage"], bool):
        raise _bad("stream_options.include_usage must be true or false")
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise _bad(f"{name} must be a positive integer, got {v!r:.40}")


# K2.6's fixed sampling values, thinking on / off: "Any other value will result in an error" (K2.6 quickstart).
FIXED_SAMPLING = {
    "temperature": (1.0, 0.6),
    "top_p": (0.95, 0.95),
    "n": (1, 1),
    "presence_penalty": (0.0, 0.0),
    "frequency_penalty": (0.0, 0.0),
}


def check_parameters(body: Mapping[str, Any], thinking: bool, refuse_sampling: bool) -> None:
    """The parameters beyond messages and budgets, as Kimi treats them: fixed sampling values, `stop`,
    `response_format`, `reasoning_effort`; what the emulator cannot produce (logprobs) is refused, not ignored."""
    for name, (on, off) in FIXED_SAMPLING.items():
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(f"{name} must be a number, got {v!r:.40}")
        want = on if thinking else off
        if refuse_sampling and v != want:
            raise _bad(f"invalid {name}: only {want:g} is allowed for this model")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops):
            raise _bad("stop must be a string or a list of non-empty strings")
        if len(stops) > 5 or any(len(x.encode()) > 32 for x in stops):
            raise _bad("stop: at most 5 sequences of at most 32 bytes each")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, Mapping) or rf.get("type") not in ("text", "json_object", "json_schema")):
        got = rf.get("type") if isinstance(rf, Mapping) else rf
        raise _bad(f"response_format.type must be one of 'text', 'json_object', 'json_schema', got {got!r:.40}")
    if rf is not None and rf.get("type") == "json_schema":
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, Mapping) else None
        if not isinstance(schema, Mapping):
            raise _bad("response_format.json_schema.schema must be a JSON Schema object")
        T.check_schema(schema, "response_format.json_schema.schema")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if body.get("thinking") is not None:
            raise _bad("cannot specify both 'thinking' and 'reasoning_effort'")
        # K3 takes reasoning_effort (low, high, max; facts §8b, §9a); K2.6 does not (facts §3)
        if not str(body.get("model", "")).startswith("kimi-k3"):
            raise _bad(f"reasoning_effort is not supported by {body.get('model')}: set thinking instead")
        if effort not in ("low", "high", "max"):
            raise _bad(f'reasoning_effort must be "low", "high" or "max", got {effort!r:.40}')
    if body.get("logprobs"):
        raise _bad("logprobs: the emulator does not produce log probabilities (Kimi does); send logprobs false")
    for name, kind in (("parallel_tool_calls", bool), ("prompt_cache_key", str)):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise _bad(f"{name} must be {'true or false' if kind is bool else 'a string'}, got {body[name]!r:.40}")


def json_answer(tokens: int) -> str:
    """A JSON object of at most `tokens` tokens (as close as the tokenizer allows); "" when none fits."""
    tok = get_tokenizer()

    def build(k: int) -> str:
        return '{"answer": "' + ("hello" + CONTENT_WORD * (k - 1) if k > 0 else "") + '"}'

    k = max(0, tokens - (tok.count(build(1)) - 1))
    while k > 0 and tok.count(build(k)) > tokens:
        k -= 1
    text = build(k)
    if tok.count(text) <= tokens:
        return text
    return "{}" if tok.count("{}") <= tokens else ""


def cut_at_stop(text: str, stop: Any) -> str | None:
    """The text up to the first stop sequence, or None when none occurs (the sequence itself is not sent)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    hits = [i for i in (text.find(x) for x in stops) if i >= 0]
    return text[: min(hits)] if hits else None


@dataclass
class Reply:
    """What to send back for one admitted chat request."""

    model: str
    route: str
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    content_tokens: int
    finish_reason: str
    ttft_s: float  # emulated seconds
    decode_tokens_per_s: float
    fault: str
    #: the tool calls of a finish_reason "tool_calls" reply, as sent ({"id", "type", "function": {...}})
    tool_calls: list[dict] = field(default_factory=list)
    #: completion tokens of those calls (name + arguments, as the next prompt counts them back)
    tool_tokens: int = 0
    #: the answer's text when it is not filler (JSON mode, a stop sequence); content_tokens counts it
    content_text: str | None = None

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + self.content_tokens + self.tool_tokens

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


@dataclass
class Stats:
    requests: int = 0
    admitted: int = 0
    completed: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    in_flight_seconds: float = 0.0  # integral of in-flight over real time
    # What the "server" bills: every admitted call in full, cut streams included (the tokens were generated).
    billed_prompt_tokens: int = 0
    billed_cached_tokens: int = 0
    billed_completion_tokens: int = 0
    #: $web_search calls billed their per-call fee (a response with finish_reason tool_calls naming it)
    billed_web_search_calls: int = 0
    internal_errors: int = 0  # exceptions inside the server answered with a 500 (a bug if ever > 0)


def _seed_of(*parts: Any) -> int:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def render_prompt_ids(
    messages: Sequence[Mapping[str, Any]],
    tools=None,
    keep: str | None = None,
    inserted: Mapping[int, int] | None = None,
) -> list[int]:
    """Token ids of a prompt under the default chat template; len() equals tokens.count_messages() (with the
    same `keep`) plus the `inserted` tokens: message index -> server-side content read there ($web_search
    results)."""
    tok = get_tokenizer()
    ids: list[int] = []
    read = reasoning_read(messages, keep)
    starts = {
        "system": "<|im_system|>",
        "user": "<|im_user|>",
        "assistant": "<|im_assistant|>",
        "tool": "<|im_system|>",
    }
    for i, msg in enumerate(messages):
        role = msg["role"]
        ids.append(SPECIAL_IDS[starts[role]])
        ids += tok.encode(role)
        ids.append(SPECIAL_IDS["<|im_middle|>"])
        content = msg.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
        ids += tok.encode(content or "")
        ids += [_SEARCH_TOKEN] * int((inserted or {}).get(i, 0))
        if read[i]:
            ids += tok.encode(str(msg["reasoning_content"]))
        for call in msg.get("tool_calls") or []:
            fn = call.get("function", {})
            ids += tok.encode(str(fn.get("name", ""))) + tok.encode(str(fn.get("arguments", "")))
        ids.append(SPECIAL_IDS["<|im_end|>"])
    for t in tools or []:
        ids += tok.encode(json.dumps(t, ensure_ascii=False, separators=(",", ":")))
    ids += [SPECIAL_IDS["<|im_assistant|>"], *tok.encode("assistant"), SPECIAL_IDS["<|im_middle|>"]]
    return ids


class _PrefixCache:
    """Kimi's automatic prefix cache: cached = the longest common prefix with an earlier eligible prompt, in
    whole blocks of `block` tokens (a third party measured 256-token blocks on Kimi)."""

    def __init__(self, min_tokens: int, block: int = 1, capacity: int = 4096):
        self.min_tokens = min_tokens
        self.block = block
        self.capacity = capacity
        self._prompts: dict[bytes, np.ndarray] = {}

    def lookup_and_add(self, ids: np.ndarray) -> int:
        best = 0
        n = len(ids)
        for seen in self._prompts.values():
            m = min(n, len(seen))
            if m <= best:
                continue
            neq = np.flatnonzero(seen[:m] != ids[:m])
            best = max(best, int(neq[0]) if len(neq) else m)
        # Only a prompt longer than the threshold can be hit later (caching guide, facts §3).
        if n > self.min_tokens:
            key = hashlib.sha1(ids.tobytes()).digest()
            if key not in self._prompts:
                if len(self._prompts) >= self.capacity:
                    self._prompts.pop(next(iter(self._prompts)))
                self._prompts[key] = ids
        return best // self.block * self.block


class Engine:
    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] | None = None):
        """`clock` returns emulated seconds and replaces the scaled real clock (tests drive the windows with it)."""
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._cache = _PrefixCache(config.cache_min_prompt_tokens, config.cache_block_tokens)
        self._script = deque(config.faults.script)
        self._fault_rng = np.random.default_rng(_seed_of(config.seed, "faults"))
        self._counter = 0
        self._searches: dict[str, int] = {}  # search_id -> result tokens, for the call that reads them back
        self._in_flight = 0
        self._last_change = time.monotonic()
        self._t0 = time.monotonic()
        self._minute: deque[tuple[float, int]] = deque()  # (emulated time, tokens) in the current minute window
        self._minute_tokens = 0
        self._day: int | None = None  # index of the calendar day (config.window's reset offset) being counted
        self._day_tokens = 0
        self.stats = Stats()

    # -- time -----------------------------------------------------------------------------------------
    def now(self) -> float:
        """Emulated seconds since start (real seconds when time_scale is 0, so windows still expire).

        The windows read it as epoch seconds, so start is 00:00 UTC, the simulator's time 0.
        """
        if self._clock is not None:
            return self._clock()
        scale = self.config.time_scale or 1.0
        return (time.monotonic() - self._t0) / scale

    def sleep(self, emulated_s: float) -> None:
        if self.config.time_scale > 0 and emulated_s > 0:
            time.sleep(emulated_s * self.config.time_scale)

    # -- helpers ----------------------------------------------------------------------------------------
    def _touch_in_flight(self, delta: int) -> None:
        now = time.monotonic()
        self.stats.in_flight_seconds += self._in_flight * (now - self._last_change)
        self._last_change = now
        self._in_flight += delta
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)

    def release(self) -> None:
        with self._lock:
            self._touch_in_flight(-1)
            self.stats.completed += 1

    def _refuse(self, kind: str, exc: EmulatorRefusal) -> EmulatorRefusal:
        self.stats.refusals[kind] = self.stats.refusals.get(kind, 0) + 1
        return exc

    def route_of(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> str:
        """Header X-Kimiplan-Route, then body metadata.route, then user "route:<name>", then system-prompt match."""
        routes = self.config.routes
        candidates = [headers.get("x-kimiplan-route"), (body.get("metadata") or {}).get("route")]
        user = body.get("user")
        if isinstance(user, str) and user.startswith("route:"):
            candidates.append(user[6:])
        for c in candidates:
            if c:
                if c not in routes:
                    raise EmulatorRefusal(400, "invalid_request_error", f"unknown route {c!r}; known: {sorted(routes)}")
                return c
        system = next((m.get("content") for m in body.get("messages", []) if m.get("role") == "system"), None)
        if isinstance(system, str):
            for name, truth in routes.items():
                if truth.match and truth.match in system:
                    return name
        return self.config.default_route

    def _pick_fault(self) -> str:
        f = self.config.faults
        if self._script:
            return self._script.popleft()
        u = self._fault_rng.random()
        for kind, p in (
            ("server_error", f.p_server_error),
            ("overloaded", f.p_overloaded),
            ("stream_cut", f.p_stream_cut),
            ("no_usage", f.p_no_usage),
        ):
            if u < p:
                return kind
            u -= p
        return "ok"

    # -- the endpoints -----------------------------------------------------------------------------------
    def estimate(self, body: Mapping[str, Any]) -> dict:
        if body.get("model") is None:
            raise _bad("model must be a string, got NoneType")
        validate_request(body)
        messages = body["messages"]
        self._check_model(body)
        keep = (body.get("thinking") or {}).get("keep")
        n = count_messages(messages, tools=body.get("tools"), keep=keep) + self.config.hidden_overhead
        return {"data": {"total_tokens": n + sum(self._search_tokens(messages).values())}}

    def _search_tokens(self, messages) -> dict[int, int]:
        """Message index -> $web_search result tokens read there (the echoed arguments name the search)."""
        out = {}
        with self._lock:
            for i, (sid, total) in T.echoed_search_ids(messages).items():
                n = self._searches.get(sid) if sid is not None else None
                n = total if n is None else n
                if n:
                    out[i] = int(n)
        return out

    def models(self) -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": m,
                    "object": "model",
                    "created": 0,
                    "owned_by": "kimiplan-emulator",
                    "context_length": self.config.context_window,
                }
                for m in self.config.models
            ],
        }

    def _check_model(self, body) -> str:
        model = body.get("model")
        if model not in self.config.models:
            raise EmulatorRefusal(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")
        return model

    def chat(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> Reply:
        """Validate, admit and draw one chat completion. The caller must call release() when done sending."""
        cfg = self.config
        validate_request(body)
        messages = body["messages"]
        model = self._check_model(body)
        budget = body.get("max_completion_tokens", body.get("max_tokens"))
        if budget is None:
            budget = cfg.default_max_completion_tokens
        if not isinstance(budget, int) or budget < 1:
            raise EmulatorRefusal(
                400, "invalid_request_error", f"max_completion_tokens must be a positive integer, got {budget!r}"
            )
        thinking = (body.get("thinking") or {}).get("type", "enabled")
        if thinking not in ("enabled", "disabled"):
            raise EmulatorRefusal(
                400, "invalid_request_error", f"thinking.type must be enabled or disabled, got {thinking!r}"
            )
        route = self.route_of(body, headers)
        check_parameters(body, thinking == "enabled", cfg.protocol.sampling_parameters == "refuse")
        tools = T.parse_tools(body)
        if (
            thinking == "enabled"
            and not cfg.protocol.web_search_with_thinking
            and any(t.name == T.WEB_SEARCH for t in tools)
        ):
            raise _bad('$web_search needs thinking disabled: send thinking {"type": "disabled"}')
        choice = T.resolve_tool_choice(body, tools, thinking == "enabled")
        T.check_tool_messages(messages, thinking == "enabled")
        if cfg.protocol.empty_assistant_content == "refuse":
            T.check_empty_assistant(messages)
        keep = (body.get("thinking") or {}).get("keep")
        searched = self._search_tokens(messages)
        truth = cfg.routes[route]
        hidden = cfg.hidden_overhead + truth.preamble_tokens
        ids = np.asarray(
            [_HIDDEN_TOKEN] * hidden + render_prompt_ids(messages, body.get("tools"), keep, searched),
            dtype=np.int64,
        )
        prompt_tokens = len(ids)
        if prompt_tokens + budget > cfg.context_window:
            text = cfg.protocol.over_context_message.format(limit=cfg.context_window, requested=prompt_tokens + budget)
            raise EmulatorRefusal(400, "invalid_request_error", text)

        with self._lock:
            self.stats.requests += 1
            fault = self._pick_fault()
            if fault != "ok":
                self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1
            if cfg.faults.quota_exceeded or fault == "quota":
                raise self._refuse(
                    "quota",
                    EmulatorRefusal(
                        cfg.protocol.empty_balance_status,
                        "exceeded_current_quota_error",
                        QUOTA_MESSAGE.format(org=cfg.organization_id, credit=cfg.token_credit),
                    ),
                )
            if fault in ("server_error", "unavailable"):
                status, etype = (500, "server_error") if fault == "server_error" else (503, "server_unavailable")
                raise self._refuse(fault, EmulatorRefusal(status, etype, "emulated server fault"))
            if fault == "overloaded":
                raise self._refuse(
                    "overloaded",
                    EmulatorRefusal(
                        429,
                        "engine_overloaded_error",
                        OVERLOADED_MESSAGE,
                        # emulated seconds, like every wait the emulator states (X-Kimiplan-Time-Scale converts)
                        {"Retry-After": str(cfg.faults.retry_after_s)}
                        if cfg.protocol.overloaded_retry_after_header
                        else {},
                    ),
                )
            self._admit(prompt_tokens + budget)
            cached = self._cache.lookup_and_add(ids)
            if truth.cache_hit_probability is not None:
                cached = self._hidden_hit(truth, route, messages, body, headers, hidden, ids)
            self._touch_in_flight(+1)
            self.stats.admitted += 1
            self._counter += 1
            counter = self._counter

        reasoning, content, finish = self._draw_lengths(body, messages, route, thinking, budget, headers, counter)
        calls, tool_tokens = self._tool_calls(tools, choice, route, messages, headers, counter)
        if calls:
            # A tool-call reply: reasoning, then the calls; the budget cuts the calls first (no partial call is sent).
            reasoning, tool_tokens, cut = (int(x) for x in truncate_completion(reasoning, tool_tokens, budget))
            if cut:
                calls, content, tool_tokens, finish = [], tool_tokens, 0, "length"
            else:
                content, finish = 0, "tool_calls"
        text = None
        if not calls:
            text, end = self._answer_text(body, content, finish == "length", budget - reasoning)
            if text is not None:
                content = get_tokenizer().count(text)
            finish = end or finish
        rng = np.random.default_rng(
            _seed_of(cfg.seed, "latency", headers.get("x-kimiplan-call-id") or counter, len(messages))
        )
        ttft = cfg.latency.ttft.draw(rng) + (prompt_tokens - cached) / cfg.latency.prefill_tokens_per_s
        with self._lock:
            self.stats.billed_prompt_tokens += prompt_tokens
            self.stats.billed_cached_tokens += cached
            self.stats.billed_completion_tokens += reasoning + content + tool_tokens
            self.stats.billed_web_search_calls += sum(c["function"]["name"] == T.WEB_SEARCH for c in calls)
        return Reply(
            model,
            route,
            prompt_tokens,
            cached,
            reasoning,
            content,
            finish,
            ttft,
            cfg.latency.decode_tokens_per_s,
            fault,
            calls,
            tool_tokens,
            text,
        )

    def _hidden_hit(self, truth, route, messages, body, headers, hidden: int, ids: np.ndarray) -> int:
        """A route's hidden cache law: a hit (probability cache_hit_probability, drawn by call id) serves the
        tokens before the last message from cache; a miss serves none."""
        key = headers.get("x-kimiplan-call-id") or f"#{self._counter}"
        if (
            np.random.default_rng(_seed_of(self.config.seed, "cache", route, key)).random()
            >= truth.cache_hit_probability
        ):
            return 0
        before = (
            np.asarray(render_prompt_ids(messages[:-1], body.get("tools")), dtype=np.int64)
            if len(messages) > 1
            else np.zeros(0, np.int64)
        )
        body_ids = ids[hidden:]
        m = min(len(before), len(body_ids))
        neq = np.flatnonzero(before[:m] != body_ids[:m])
        return hidden + (int(neq[0]) if len(neq) else m)

    def _answer_text(self, body, content: int, cut: bool, room: int) -> tuple[str | None, str | None]:
        """The answer's text when it is not plain filler, and its finish_reason when that changes. JSON Mode
        returns a JSON object of the drawn length, cut off (not valid JSON, finish_reason length) only when the
        budget ended it; a json_schema response an instance of the schema, its strings sized to the drawn
        length, cut only when the instance does not fit the `room` left by the reasoning. A stop sequence ends
        the text where it first occurs (finish_reason stop)."""
        tok = get_tokenizer()
        rf = body.get("response_format") or {}
        text, end = None, None
        if rf.get("type") == "json_object":
            if cut:  # the budget ran out mid-object: the first `content` tokens of a longer one
                text = tok.decode(tok.encode(json_answer(content + 8))[:content])
            else:
                text = json_answer(content)
        elif rf.get("type") == "json_schema":
            schema, seed = rf["json_schema"]["schema"], _seed_of(self.config.seed, "schema", content)

            def instance(words: int) -> str:
                value = T.schema_instance(schema, np.random.default_rng(seed), words)
                return json.dumps(value, ensure_ascii=False)

            one, two = tok.count(instance(1)), tok.count(instance(2))
            text = instance(1 + max(0, content - one) // max(two - one, 1))
            ids = tok.encode(text)
            if len(ids) > room:
                text, end = tok.decode(ids[:room]), "length"
            else:
                end = "stop"
        if body.get("stop") is not None:
            hit = cut_at_stop(text if text is not None else CONTENT_WORD * content, body["stop"])
            if hit is not None:
                return hit, "stop"
        return text, end

    def _tool_calls(self, tools, choice, route, messages, headers, counter) -> tuple[list[dict], int]:
        """The calls this reply makes (ToolTruth decides), with ids, JSON arguments and their token count."""
        cfg, tok = self.config, get_tokenizer()
        truth = cfg.routes[route].tools
        key = headers.get("x-kimiplan-call-id") or f"#{counter}"
        rng = np.random.default_rng(_seed_of(cfg.seed, "tools", route, key, len(messages)))
        planned = T.plan_tool_calls(tools, choice, truth, messages, rng)
        earlier = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
        calls, n_tokens = [], 0
        for j, tool in enumerate(planned):
            if tool.name == T.WEB_SEARCH:
                sid = f"{_seed_of(cfg.seed, 'search', key, len(messages), j):016x}"
                n = max(1, round(truth.web_search_result_tokens.draw(rng)))
                with self._lock:
                    if len(self._searches) >= 100_000:
                        self._searches.pop(next(iter(self._searches)))
                    self._searches[sid] = n
                args = {"search_result": {"search_id": sid}, "usage": {"total_tokens": n}}
            else:
                words = max(1, round(truth.string_argument_tokens.draw(rng)))
                args = T.schema_instance(tool.parameters, rng, words)
            text = json.dumps(args, ensure_ascii=False)
            # Kimi's ids: "t-web_search-<digits>" for the builtin (seen in a live reply, facts: KIMI_BEHAVIOUR.md),
            # "functions.<name>:<n>" for functions (K2's tool-call id format).
            cid = f"t-web_search-{_seed_of(key, j) % 10**12}" if tool.name == T.WEB_SEARCH else None
            calls.append(
                {
                    "id": cid or f"functions.{tool.name}:{earlier + j}",
                    "type": tool.kind,
                    "function": {"name": tool.name, "arguments": text},
                }
            )
            n_tokens += tok.count(tool.name) + tok.count(text)
        return calls, n_tokens

    def _in_minute_window(self, t: float, now: float) -> bool:
        """Whether an admission at t still counts against RPM/TPM at now (same rule as admission.AccountState)."""
        if self.config.window.rate_window == "fixed":
            return math.floor(t / 60.0) == math.floor(now / 60.0)
        return t + 60.0 > now

    def _expire_minute(self, now: float) -> None:
        # Admissions are logged in time order (now() is read under the lock), so expiry pops from the front.
        while self._minute and not self._in_minute_window(self._minute[0][0], now):
            self._minute_tokens -= self._minute.popleft()[1]

    def _roll_day(self, now: float) -> None:
        """Start a fresh TPD count at local midnight of the configured UTC offset, not 24 h after a request."""
        day = math.floor((now + self.config.window.day_offset_s) / 86_400.0)
        if day != self._day:
            self._day, self._day_tokens = day, 0

    def _rpm_wait(self, now: float) -> int:
        """Whole seconds until an RPM slot frees: the oldest admission slides out, or the fixed minute ends."""
        if self.config.window.rate_window == "fixed":
            free_at = (math.floor(now / 60.0) + 1) * 60.0
        else:
            free_at = self._minute[0][0] + 60.0
        return max(1, math.ceil(free_at - now))

    def rate_headers(self) -> dict[str, str]:
        """X-RateLimit-* of the RPM window (only when `protocol.rate_limit_headers`; Kimi documents none)."""
        lim = self.config.limits
        if not self.config.protocol.rate_limit_headers or lim.rpm is None:
            return {}
        with self._lock:
            now = self.now()
            self._expire_minute(now)
            used = len(self._minute)
            reset = self._rpm_wait(now) if used else 0
        return {
            "X-RateLimit-Limit": str(lim.rpm),
            "X-RateLimit-Remaining": str(max(lim.rpm - used, 0)),
            "X-RateLimit-Reset": str(reset),
        }

    def _tpm_wait(self, now: float, tokens: int) -> int | None:
        """Whole seconds until enough of the minute's reservations slide out for `tokens` more (None: never)."""
        lim = self.config.limits.tpm or 0
        if tokens > lim:
            return None
        if self.config.window.rate_window == "fixed":
            return max(1, math.ceil((math.floor(now / 60.0) + 1) * 60.0 - now))
        total = self._minute_tokens
        for t, n in self._minute:
            total -= n
            if total + tokens <= lim:
                return max(1, math.ceil(t + 60.0 - now))
        return 1

    def _rate_refusal(self, kind: str, message: str, wait: int | None) -> EmulatorRefusal:
        headers = {}
        if wait is not None and self.config.protocol.rate_limit_retry_after_header:
            headers["Retry-After"] = str(wait)  # the same emulated seconds as "try again after N seconds"
        return self._refuse(kind, EmulatorRefusal(429, "rate_limit_reached_error", message, headers))

    def _admit(self, tokens: int) -> None:
        """Kimi's admission: concurrency, RPM, then input + max_completion_tokens against TPM and TPD."""
        lim, now = self.config.limits, self.now()
        ids = {"org": self.config.organization_id, "ak": self.config.ak_id}
        self._expire_minute(now)
        self._roll_day(now)
        if lim.concurrency is not None and self._in_flight >= lim.concurrency:
            raise self._rate_refusal("concurrency", rate_limit_message("concurrency", lim.concurrency, **ids), 1)
        if lim.rpm is not None and len(self._minute) >= lim.rpm:
            wait = self._rpm_wait(now)
            raise self._rate_refusal("rpm", rate_limit_message("rpm", lim.rpm, wait_s=wait, **ids), wait)
        if lim.tpm is not None and self._minute_tokens + tokens > lim.tpm:
            message = rate_limit_message("tpm", lim.tpm, current=self._minute_tokens, **ids)
            raise self._rate_refusal("tpm", message, self._tpm_wait(now, tokens))
        if lim.tpd is not None and self._day_tokens + tokens > lim.tpd:
            message = rate_limit_message("tpd", lim.tpd, current=self._day_tokens, **ids)
            raise self._rate_refusal("tpd", message, None)
        self._minute.append((now, tokens))
        self._minute_tokens += tokens
        self._day_tokens += tokens

    def _draw_lengths(self, body, messages, route, thinking, budget, headers, counter) -> tuple[int, int, str]:
        """Ground-truth lengths for this call; with Partial Mode, what is left of the same draw."""
        cfg, tok = self.config, get_tokenizer()
        last = messages[-1]
        partial = last.get("role") == "assistant" and bool(last.get("partial"))
        # The draw is keyed by the call id, so a Partial Mode continuation sees the same target lengths.
        key = headers.get("x-kimiplan-call-id") or f"#{counter}"
        rng = np.random.default_rng(_seed_of(cfg.seed, "lengths", route, key))
        truth = cfg.routes[route]
        want_content = max(1, round(truth.output.draw(rng)))
        want_reasoning = max(1, round(truth.reasoning.draw(rng))) if (truth.reasoning and thinking == "enabled") else 0
        if partial:
            want_content = max(0, want_content - tok.count(last.get("content") or ""))
            want_reasoning = max(0, want_reasoning - tok.count(last.get("reasoning_content") or ""))
        # reasoning_content tokens + content tokens <= max_completion_tokens (facts §3)
        reasoning, content, cut = truncate_completion(want_reasoning, want_content, budget)
        return int(reasoning), int(content), "length" if cut else "stop"
