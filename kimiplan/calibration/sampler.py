"""A bounded, resumable sampler of live (or emulated) calls for calibration.

- Every planned call has a deterministic id (run id, route, index, prompt hash); the store is append-only JSONL
  with an fsync per record, so a run killed at any moment resumes without losing or duplicating a sample:
  ids already recorded as "ok" are skipped, and a torn last line is cut off on open.
- Concurrency, RPM and TPM are paced locally (TPM with Kimi's rule: input + max_completion_tokens), so the
  sampler stays under the tier instead of leaning on 429s.
- A hard spend cap, held even across kills: before a call is sent, a write-ahead "sent" record (fsynced) reserves
  its worst case (input with a margin for what the server adds, at the cache-miss price, plus its
  max_completion_tokens at the output price, times the Partial Mode continuations it may make). A retry after a
  cut stream or a dropped connection (which may have been billed) reserves again first. The call's "ok" or
  "error" record settles the reservation: the actual cost, plus the worst case of every attempt that may have
  been billed without a usable answer (cut streams, malformed responses). On resume, a reservation with no
  settling record (the process died with the call in flight) is settled at its worst case ("lost" record).
- One run per store: the store file is locked (flock) for the run; a second run refuses to start.
- Every response the client cannot read is a typed error, stored as an "error" record; the run goes on, and
  stops cleanly (saying why) only on errors no later call can escape (quota, authentication, TPD).
- Records keep token counts, latencies, route, model, time, provenance and a prompt hash; never the key (error
  texts are scrubbed), and never the prompt text unless `store_prompts=True`.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kimiplan.client import KimiAPIError, KimiClient, scrub
from kimiplan.errors import ConfigError, validate
from kimiplan.finance.cost import Usage, cost_of_usage
from kimiplan.io.formats import money, percent
from kimiplan.io.paths import data_path
from kimiplan.tokens.tokenizer import count_messages

RECORD_VERSION = 2  # 2: "sent" reservations and "settled" amounts (version-1 stores are read as before)
#: error kinds whose attempt may have been billed without a usable answer: settled at the worst case
BILLED_FAILURES = frozenset({"malformed", "connection", "broken_stream", "stream_error"})


# --- user input --------------------------------------------------------------------------------------------
class RouteSampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    #: JSONL of {"messages": [...]} per line; default data/prompts/<name>.jsonl
    prompts: Path | None = None
    n: int = Field(gt=0)
    max_completion_tokens: int = Field(default=4096, gt=0)
    thinking: bool = True
    continue_on_length: bool = False
    #: tools offered on every call of the route (Kimi tool objects: function tools, or the builtin $web_search);
    #: a reply with tool calls is answered and sent again, up to max_tool_rounds more calls, and every call of
    #: the request is recorded in the record's `rounds` (calibration of tool routes)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tool_rounds: int = Field(default=4, ge=0, le=64)
    #: the tool message a function tool's call is answered with; $web_search is answered, as Kimi documents,
    #: with the call's own arguments
    tool_result: str = "ok"
    #: what the application's tools return, to answer function calls with instead of `tool_result`: JSONL of
    #: {"content": "...", "name": "<tool>"} ("name" optional: a call takes a row of its own tool's when there
    #: are any). A call's row is chosen by its ids, so a resumed run answers alike. Only the rows' token counts
    #: reach the store.
    tool_results: Path | None = None


class SamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    routes: list[RouteSampling] = Field(min_length=1)
    max_concurrency: int = Field(default=8, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    #: hard cap on spend in the price card's currency (this run's store included)
    spend_cap: Decimal = Field(default=Decimal("1"), ge=0)
    store_prompts: bool = False
    #: fraction of the tier's RPM/TPM the pacer may use (headroom for other traffic on the account)
    headroom: float = Field(default=0.9, gt=0, le=1)
    #: prompt tokens the server may add beyond the local count (a hidden system prompt), for the worst case:
    #: the local count times (1 + prompt_margin) plus prompt_margin_tokens
    prompt_margin: float = Field(default=0.1, ge=0, le=10)
    prompt_margin_tokens: int = Field(default=256, ge=0, le=1_000_000)

    def with_tier(self, tier) -> SamplerConfig:
        """Clamp concurrency/RPM/TPM to a `catalog.RateTier` (times `headroom` for RPM and TPM)."""
        upd: dict[str, Any] = {}
        if tier.concurrency:
            upd["max_concurrency"] = min(self.max_concurrency, tier.concurrency)
        if tier.rpm:
            upd["rpm"] = min(self.rpm or 10**12, max(1, int(tier.rpm * self.headroom)))
        if tier.tpm:
            upd["tpm"] = min(self.tpm or 10**15, max(1, int(tier.tpm * self.headroom)))
        return self.model_copy(update=upd)


def load_sampler_config(path: str | Path) -> SamplerConfig:
    from kimiplan.model.loader import load_file

    p = Path(path)
    data = load_file(p, "sampler config") or {}
    return validate(SamplerConfig, data, f"sampler config {str(p)!r}")


def _jsonl_objects(p: Path, what: str):
    """(line number, parsed object) for each non-blank line; a bad line is an error naming file and line."""
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what} {str(p)!r} line {i}: not JSON ({exc.msg})") from exc


def load_prompts(path: str | Path) -> list[list[dict]]:
    """A prompt set: JSONL, one {"messages": [...]} (or a bare list of messages) per line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"prompts file {str(p)!r} does not exist")
    out = []
    for i, obj in _jsonl_objects(p, "prompts file"):
        msgs = obj.get("messages") if isinstance(obj, dict) else obj
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise ConfigError(f"prompts file {str(p)!r} line {i}: field messages must be a non-empty list of messages")
        out.append(msgs)
    if not out:
        raise ConfigError(f"prompts file {str(p)!r} has no prompts")
    return out


def load_tool_results(path: str | Path) -> list[tuple[str | None, str]]:
    """A tool-results file: (tool name or None, content) per line; a bad line names file and line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"tool results file {str(p)!r} does not exist")
    out: list[tuple[str | None, str]] = []
    for i, obj in _jsonl_objects(p, "tool results file"):
        content = obj.get("content") if isinstance(obj, dict) else obj
        name = obj.get("name") if isinstance(obj, dict) else None
        if not isinstance(content, str):
            raise ConfigError(f"tool results file {str(p)!r} line {i}: field content must be a string")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"tool results file {str(p)!r} line {i}: field name must be a string")
        out.append((name, content))
    if not out:
        raise ConfigError(f"tool results file {str(p)!r} has no results")
    return out


def _result_picker(rs: RouteSampling | None, rows: list[tuple[str | None, str]] | None):
    """The answer to one function call: a row of the tool's own results (any row when it has none), picked
    by a hash of the request's and the call's ids; without a results file, the route's `tool_result`."""
    if not rows:
        fixed = rs.tool_result if rs is not None else "ok"
        return lambda request_id, call: fixed
    by_name: dict[str | None, list[str]] = {}
    for name, content in rows:
        by_name.setdefault(name, []).append(content)
    every = [c for _, c in rows]

    def pick(request_id: str, call: Mapping[str, Any]) -> str:
        pool = by_name.get((call.get("function") or {}).get("name")) or every
        h = hashlib.sha256(f"{request_id}|{call.get('id')}".encode()).digest()
        return pool[int.from_bytes(h[:8], "big") % len(pool)]

    return pick


def prompt_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- the plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedCall:
    id: str
    route: str
    index: int
    messages: list
    prompt_sha256: str
    local_prompt_tokens: int
    max_completion_tokens: int
    thinking: bool
    continue_on_length: bool
    sampling: RouteSampling | None = None  # the route's settings (tools and their rounds)


def plan_calls(config: SamplerConfig, prompts: Mapping[str, list] | None = None) -> list[PlannedCall]:
    """Deterministic plan: call i of a route uses prompt i mod len(prompts); ids hash (run, route, i, prompt)."""
    plan = []
    for r in config.routes:
        msgs_set = (prompts or {}).get(r.name) or load_prompts(r.prompts or data_path("prompts", f"{r.name}.jsonl"))
        for i in range(r.n):
            msgs = msgs_set[i % len(msgs_set)]
            h = prompt_hash(msgs)
            cid = hashlib.sha256(f"{config.run_id}|{r.name}|{i}|{h}".encode()).hexdigest()[:24]
            plan.append(
                PlannedCall(
                    cid,
                    r.name,
                    i,
                    msgs,
                    h,
                    count_messages(msgs),
                    r.max_completion_tokens,
                    r.thinking,
                    r.continue_on_length,
                    r,
                )
            )
    # Interleave routes so a capped or interrupted run still covers every route.
    plan.sort(key=lambda c: (c.index, c.route))
    return plan


# --- the store ---------------------------------------------------------------------------------------------
class SampleStore:
    """Append-only JSONL; one fsync per record; a torn last line (crash mid-write) is cut on open. Opening it
    takes an exclusive lock on the file for as long as it is open (released by the kernel if the process
    dies): a second run on the same store refuses to start instead of duplicating every sample."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "ab")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise ConfigError(
                f"sample store {str(self.path)!r} is in use by another run (it holds the store's lock); "
                "wait for it to finish, or give this run another --store"
            ) from None
        self._repair()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())

    def records(self) -> list[dict]:
        out = []
        for line in self.path.read_bytes().splitlines() if self.path.exists() else []:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # only a torn tail can be bad, and _repair cut it; be lenient anyway
        return out

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.records() if r.get("status") == "ok"}

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- pacing and the spend cap -----------------------------------------------------------------------------
class Pacer:
    """Local sliding-minute limits for RPM and TPM (input + max_completion_tokens, Kimi's admission rule)."""

    def __init__(self, rpm: int | None, tpm: int | None, time_scale: float = 1.0):
        self.rpm, self.tpm = rpm, tpm
        # Longer than the server's minute (5 % + 0.25 s): our clock starts before the server admits the call, and
        # a busy client can take a few hundred ms to get a paced call onto the wire.
        base = 60.0 * (time_scale if time_scale > 0 else 1.0)
        self.window = base * 1.05 + 0.25
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0
        self._cond = threading.Condition()

    def acquire(self, tokens: int, stop: threading.Event) -> bool:
        if self.tpm is not None and tokens > self.tpm:
            raise ConfigError(f"a call reserving {tokens} tokens can never fit tpm={self.tpm}")
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                while self._events and self._events[0][0] <= now - self.window:
                    self._tokens -= self._events.popleft()[1]
                ok_r = self.rpm is None or len(self._events) < self.rpm
                ok_t = self.tpm is None or self._tokens + tokens <= self.tpm
                if ok_r and ok_t:
                    self._events.append((now, tokens))
                    self._tokens += tokens
                    return True
                wait_s = (self._events[0][0] + self.window - now) if self._events else 0.01
                self._cond.wait(timeout=max(0.001, min(wait_s, 0.5)))
        return False


class SpendGuard:
    def __init__(self, cap: Decimal, card, spent: Decimal = Decimal(0), margin: float = 0.0, margin_tokens: int = 0):
        self.cap, self.card = Decimal(cap), card
        self.spent = Decimal(spent)
        self.reserved = Decimal(0)
        self.margin, self.margin_tokens = margin, margin_tokens
        self._lock = threading.Lock()

    def worst_case(self, input_tokens: int, max_completion_tokens: int) -> Decimal:
        # Nothing cached, the server's additions at their margin, the whole budget generated: the most one
        # attempt can cost.
        prompt = int(input_tokens * (1 + self.margin)) + self.margin_tokens
        return cost_of_usage(Usage(prompt, int(max_completion_tokens)), self.card).subtotal

    def call_worst_case(self, call: PlannedCall, continuations: int) -> Decimal:
        """One attempt of the call and every Partial Mode continuation it may make (each resends the prefix)."""
        n = 1 + (continuations if call.continue_on_length else 0)
        return (
            self.worst_case(call.local_prompt_tokens + (n - 1) * call.max_completion_tokens, call.max_completion_tokens)
            * n
        )

    def actual(self, rec: Mapping[str, Any]) -> Decimal:
        prompt = rec.get("prompt_tokens")
        if prompt is None:
            prompt = rec.get("local_prompt_tokens") or 0
        # A Partial Mode continuation resends the prefix: extra input at the cache-miss price. Tool rounds are
        # further calls of the request, each with its usage; every $web_search call has its per-call fee.
        usage = Usage(
            int(prompt)
            + int(rec.get("continuation_prompt_tokens") or 0)
            + int(rec.get("tool_round_prompt_tokens") or 0),
            int(rec.get("completion_tokens") or 0) + int(rec.get("tool_round_completion_tokens") or 0),
            int(rec.get("cached_tokens") or 0) + int(rec.get("tool_round_cached_tokens") or 0),
            int(rec.get("web_search_calls") or 0),
        )
        return cost_of_usage(usage, self.card).subtotal

    def reserve(self, amount: Decimal) -> bool:
        with self._lock:
            if self.spent + self.reserved + amount > self.cap:
                return False
            self.reserved += amount
            return True

    def settlement(self, worst: Decimal, res=None, exc: KimiAPIError | None = None, rec=None) -> Decimal:
        """What a finished call is taken to have cost: its actual cost (when it answered) plus the worst case
        of each attempt that may have been billed without an answer (cut streams, dropped connections,
        malformed responses), the failing one included."""
        retries = (res.retries if res is not None else exc.retries) or {}
        billed_failures = sum(v for k, v in retries.items() if k in BILLED_FAILURES)
        if exc is not None and exc.kind in BILLED_FAILURES:
            billed_failures += 1
        actual = self.actual(rec) if rec is not None else Decimal(0)
        return actual + worst * billed_failures

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        with self._lock:
            self.reserved -= reserved
            self.spent += actual


# --- the run -----------------------------------------------------------------------------------------------
@dataclass
class SampleRunSummary:
    planned: int
    skipped: int = 0
    completed: int = 0
    failed: int = 0
    not_sent: int = 0
    attempts: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    stopped_reason: str | None = None
    spent: Decimal = Decimal(0)
    #: reservations of an earlier run that died with calls in flight, settled at their worst case on resume
    lost_in_flight: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    mean_in_flight: float = 0.0
    #: the price card's currency (what `spent` is counted in)
    currency: str | None = None

    def __str__(self) -> str:
        from kimiplan.io.formats import money

        spent = money(self.spent, self.currency, 4 if abs(self.spent) < 1 else 2)
        s = (
            f"planned {self.planned}, already recorded {self.skipped}, completed {self.completed}, "
            f"failed {self.failed}, not sent {self.not_sent}, retries {self.retries or 0}, spent {spent}"
        )
        if self.errors:
            s += f", errors {self.errors}"
        if self.lost_in_flight:
            s += f", {self.lost_in_flight} call(s) in flight when an earlier run died (counted at their worst case)"
        return s + (f"; stopped: {self.stopped_reason}" if self.stopped_reason else "")


def _record(call: PlannedCall, res, run_id: str, store_prompts: bool) -> dict:
    rec = {
        "v": RECORD_VERSION,
        "id": call.id,
        "run_id": run_id,
        "status": "ok",
        "route": call.route,
        "index": call.index,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "prompt_sha256": call.prompt_sha256,
        "local_prompt_tokens": call.local_prompt_tokens,
        "max_completion_tokens": call.max_completion_tokens,
        "thinking": call.thinking,
    }
    d = res.as_dict()
    for k in ("content", "reasoning_content"):
        d.pop(k, None)
    d["tool_calls"] = len(d.get("tool_calls") or [])  # names and arguments stay out of the store
    rec.update(d)
    if store_prompts:
        rec["messages"] = call.messages
    return rec


WEB_SEARCH = "$web_search"


def _search_tokens(call: Mapping[str, Any]) -> int:
    """`arguments.usage.total_tokens` of a $web_search call: the result tokens billed on the next call."""
    try:
        args = json.loads(call["function"].get("arguments") or "{}")
        n = (args.get("usage") or {}).get("total_tokens") if isinstance(args, dict) else None
    except (ValueError, AttributeError, TypeError):
        return 0
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _round_summary(res) -> dict:
    """One call of a tool request, as counts: its usage, its reasoning and visible output (a tool-call reply's
    output is its call message), and its tool calls by kind."""
    calls = res.tool_calls or []
    searches = [c for c in calls if c["function"]["name"] == WEB_SEARCH]
    called = res.finish_reason == "tool_calls"
    return {
        "prompt_tokens": res.prompt_tokens,
        "cached_tokens": res.cached_tokens,
        "completion_tokens": res.completion_tokens,
        "reasoning_tokens": res.reasoning_tokens,
        "output_tokens": res.output_tokens,
        "finish_reason": res.finish_reason,
        "tool_calls": len(calls),
        "web_search_calls": len(searches) if called else 0,
        "web_search_result_tokens": sum(_search_tokens(c) for c in searches),
        "function_calls": len(calls) - len(searches) if called else 0,
        # set when the round is answered: tokens of the function results sent back (counted locally)
        "function_result_tokens": 0,
    }


def _answer_tools(res, thinking: bool, result_for) -> tuple[list[dict], int]:
    """The assistant message of a tool-call reply (its reasoning too: Kimi requires it back with thinking on)
    and one tool message per call ($web_search: its arguments, unchanged, as Kimi documents; a function:
    `result_for(call)`), with the tokens of the function results."""
    from kimiplan.tokens.tokenizer import count_text

    msg: dict[str, Any] = {"role": "assistant", "tool_calls": res.tool_calls}
    if res.content:  # an empty content is left out: some Kimi endpoints refuse it ("text content is empty")
        msg["content"] = res.content
    if thinking:
        msg["reasoning_content"] = res.reasoning_content or ""
    out = [msg]
    result_tokens = 0
    for c in res.tool_calls:
        name = c["function"]["name"]
        if name == WEB_SEARCH:
            content = c["function"].get("arguments") or "{}"
        else:
            content = result_for(c)
            result_tokens += count_text(content)
        out.append({"role": "tool", "tool_call_id": c["id"], "name": name, "content": content})
    return out, result_tokens


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _money(x: Decimal) -> str:
    return format(x, "f")


def _ledger(records: list[dict], run_id: str, guard: SpendGuard) -> tuple[Decimal, dict[str, Decimal]]:
    """This run's settled spend, and the reservations no record settles (calls in flight when a run died).

    Version-1 records carry no settlement: an "ok" record counts its actual cost, an error nothing."""
    spent = Decimal(0)
    open_: dict[str, Decimal] = {}
    for r in records:
        if r.get("run_id") != run_id:
            continue
        st, cid = r.get("status"), r.get("id")
        if st == "sent":
            open_[cid] = open_.get(cid, Decimal(0)) + Decimal(str(r.get("reserved", "0")))
        elif st in ("ok", "error", "lost"):
            open_.pop(cid, None)
            if r.get("settled") is not None:
                spent += Decimal(str(r["settled"]))
            elif st == "ok":
                spent += guard.actual(r)
    return spent, {k: v for k, v in open_.items() if v > 0}


def run_sampler(
    client: KimiClient,
    config: SamplerConfig,
    store: SampleStore | str | Path,
    *,
    card=None,
    prompts: Mapping[str, list] | None = None,
    progress: bool = True,
    prompt_source: str | None = None,
) -> SampleRunSummary:
    """Send the planned calls not yet recorded; returns a summary (quota/TPD/auth/spend-cap stops are reported
    there). A store path is opened (and locked) here; a second run on a locked store is a ConfigError.
    `prompt_source` is recorded with every call (e.g. "synthetic: built from scenario X"), and the fit says so."""
    from tqdm.auto import tqdm

    own_store = not isinstance(store, SampleStore)
    store = SampleStore(store) if own_store else store
    if card is None:
        from kimiplan.catalog.cards import load_catalog

        card = load_catalog().price(client.config.model)
    try:
        plan = plan_calls(config, prompts)
        pickers = {
            r.name: _result_picker(r, load_tool_results(r.tool_results) if r.tool_results else None)
            for r in config.routes
        }
        existing = store.records()
        done = {r["id"] for r in existing if r.get("status") == "ok"}
        guard = SpendGuard(
            config.spend_cap, card, margin=config.prompt_margin, margin_tokens=config.prompt_margin_tokens
        )
        guard.spent, unsettled = _ledger(existing, config.run_id, guard)
        for cid, amount in unsettled.items():  # died in flight: may have been billed, so at the worst case
            store.append(
                {
                    "v": RECORD_VERSION,
                    "id": cid,
                    "run_id": config.run_id,
                    "status": "lost",
                    "settled": _money(amount),
                    "time": _now(),
                }
            )
            guard.spent += amount
        todo = [c for c in plan if c.id not in done]
        summary = SampleRunSummary(
            planned=len(plan), skipped=len(plan) - len(todo), lost_in_flight=len(unsettled), currency=card.currency
        )
        scale = client.config.retry.time_scale
        continuations = client.config.max_continuations
        pacer = Pacer(config.rpm, config.tpm, scale)
        stop = threading.Event()
        lock = threading.Lock()
        in_flight = {"n": 0, "area": 0.0, "t": time.monotonic()}

        def flight(delta):
            with lock:
                now = time.monotonic()
                in_flight["area"] += in_flight["n"] * (now - in_flight["t"])
                in_flight["t"], in_flight["n"] = now, in_flight["n"] + delta

        def reserve_record(call: PlannedCall, amount: Decimal) -> None:
            # Write-ahead: on disk before the request leaves, so a kill cannot hide a paid call.
            store.append(
                {
                    "v": RECORD_VERSION,
                    "id": call.id,
                    "run_id": config.run_id,
                    "status": "sent",
                    "reserved": _money(amount),
                    "attempt": uuid.uuid4().hex[:12],
                    "time": _now(),
                }
            )

        def one(call: PlannedCall, worst: Decimal):
            reserved = [worst]

            def before_retry(kind: str) -> bool:
                # The failed attempt may have been billed: another attempt needs room of its own under the cap.
                if stop.is_set() or not guard.reserve(worst):
                    return False
                reserve_record(call, worst)
                reserved.append(worst)
                return True

            rs = call.sampling
            tools = rs.tools if rs is not None else None
            extra = None
            if tools:
                extra = {"tools": tools, **({"tool_choice": rs.tool_choice} if rs.tool_choice is not None else {})}
            flight(+1)
            try:
                res = client.chat(
                    call.messages,
                    max_completion_tokens=call.max_completion_tokens,
                    thinking=call.thinking,
                    call_id=call.id,
                    route=call.route,
                    continue_on_length=call.continue_on_length,
                    before_retry=before_retry,
                    extra=extra,
                    keep_text=True if tools else None,
                )
            except KimiAPIError as exc:
                flight(-1)
                settled = min(guard.settlement(worst, exc=exc), sum(reserved))
                store.append(_error_record(call, config.run_id, exc, client, settled))
                guard.settle(sum(reserved), settled)
                return call, None, exc
            rounds, more, round_exc = [_round_summary(res)], [], None
            try:
                messages, cur = list(call.messages), res
                while tools and cur.finish_reason == "tool_calls" and cur.tool_calls and len(more) < rs.max_tool_rounds:
                    answer, result_tokens = _answer_tools(
                        cur, call.thinking, lambda c, k=len(more): pickers[call.route](f"{call.id}.{k}", c)
                    )
                    messages += answer
                    # The next call resends everything, plus the search results: reserve its worst case first.
                    grow = sum(_search_tokens(c) for c in cur.tool_calls if c["function"]["name"] == WEB_SEARCH)
                    est = guard.worst_case(count_messages(messages) + grow, call.max_completion_tokens)
                    if stop.is_set() or not guard.reserve(est):
                        break
                    reserve_record(call, est)
                    reserved.append(est)
                    try:
                        cur = client.chat(
                            messages,
                            max_completion_tokens=call.max_completion_tokens,
                            thinking=call.thinking,
                            call_id=f"{call.id}.{len(more) + 1}",
                            route=call.route,
                            extra=extra,
                            keep_text=True,
                        )
                    except KimiAPIError as exc:  # the rounds so far stay recorded; this one is settled below
                        round_exc = exc
                        break
                    rounds[-1]["function_result_tokens"] = result_tokens  # sent: this round was answered
                    more.append(cur)
                    rounds.append(_round_summary(cur))
            finally:
                flight(-1)
            rec = _record(call, res, config.run_id, config.store_prompts)
            if prompt_source:
                rec["prompt_source"] = prompt_source
            rec["base_url"] = client.config.base_url  # the calibration says where it was measured
            if tools:
                rec["tool_rounds"] = len(more)
                rec["rounds"] = rounds
                rec["web_search_calls"] = sum(r["web_search_calls"] for r in rounds)
                rec["tool_round_prompt_tokens"] = sum(int(r.prompt_tokens or 0) for r in more)
                rec["tool_round_cached_tokens"] = sum(r.cached_tokens for r in more)
                rec["tool_round_completion_tokens"] = sum(r.completion_tokens for r in more)
                # Function rounds: replies with function calls that were answered (a further call followed).
                rec["function_rounds"] = sum(1 for r in rounds[:-1] if r["function_calls"] > 0)
                rec["function_result_tokens"] = sum(r["function_result_tokens"] for r in rounds)
                rec["final_finish_reason"] = rounds[-1]["finish_reason"]
                if round_exc is not None:
                    rec["tool_round_error"] = f"{round_exc.kind}: {scrub(round_exc)}"
            settled = guard.settlement(worst, res=res, rec=rec)
            if round_exc is not None:
                settled += guard.settlement(worst, exc=round_exc)
            rec["settled"] = _money(settled)
            store.append(rec)
            guard.settle(sum(reserved), settled)
            return call, res, None

        t0 = time.monotonic()
        bar = tqdm(total=len(plan), initial=summary.skipped, disable=not progress, desc="calibration calls")
        queue = deque(todo)
        with ThreadPoolExecutor(max_workers=config.max_concurrency) as pool:
            running = set()
            while queue or running:
                while queue and len(running) < config.max_concurrency and not stop.is_set():
                    call = queue[0]
                    worst = guard.call_worst_case(call, continuations)
                    if not guard.reserve(worst):
                        if not running:  # nothing will free budget: the cap is reached
                            stop.set()
                            summary.stopped_reason = f"spend cap {config.spend_cap} {card.currency} reached"
                        break
                    if not pacer.acquire(call.local_prompt_tokens + call.max_completion_tokens, stop):
                        guard.settle(worst, Decimal(0))
                        break
                    reserve_record(call, worst)
                    queue.popleft()
                    running.add(pool.submit(one, call, worst))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                running = set(running)
                for fut in finished:
                    call, res, exc = fut.result()
                    if exc is None:
                        summary.completed += 1
                        summary.attempts += res.attempts
                        for k, v in res.retries.items():
                            summary.retries[k] = summary.retries.get(k, 0) + v
                        bar.update(1)
                        continue
                    summary.failed += 1
                    summary.attempts += exc.attempts
                    summary.errors[exc.kind] = summary.errors.get(exc.kind, 0) + 1
                    for k, v in exc.retries.items():
                        summary.retries[k] = summary.retries.get(k, 0) + v
                    if exc.fatal and not stop.is_set():
                        stop.set()
                        summary.stopped_reason = scrub(str(exc), limit=500)
        bar.close()
        summary.not_sent = len(queue)
        summary.spent = guard.spent
        summary.elapsed_s = time.monotonic() - t0
        flight(0)
        summary.mean_in_flight = in_flight["area"] / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
        return summary
    finally:
        if own_store:
            store.close()


def _error_record(call: PlannedCall, run_id: str, exc: KimiAPIError, client: KimiClient, settled: Decimal) -> dict:
    key = client.config.api_key.get_secret_value() if client.config.api_key else None
    return {
        "v": RECORD_VERSION,
        "id": call.id,
        "run_id": run_id,
        "status": "error",
        "route": call.route,
        "index": call.index,
        "error_kind": exc.kind,
        "error_type": type(exc).__name__,
        "http_status": exc.status,
        # Server messages can echo request headers: scrubbed of anything key-shaped, one line, bounded.
        "error": scrub(str(exc), key),
        "attempts": exc.attempts,
        "retries": exc.retries,
        "settled": _money(settled),
        "time": _now(),
    }


# --- other calibration input -------------------------------------------------------------------------------
def read_call_log(path: str | Path, *, provenance: str = "usage-log", route: str | None = None) -> list[dict]:
    """Usage logs as sample records: JSONL of chat.completion responses (optionally wrapped as
    {"response": ..., "route": ..., "ttft_s": ..., "messages": ...}) or a CSV export with prompt_tokens,
    completion_tokens, cached_tokens, finish_reason [, route, ttft_s, total_s, local_prompt_tokens]."""
    from kimiplan.tokens.tokenizer import count_text

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"usage log {str(p)!r} does not exist")
    rows: list[dict] = []
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh), 1):
                try:
                    rec = {
                        k: (int(row[k]) if row.get(k) not in (None, "") else None)
                        for k in (
                            "prompt_tokens",
                            "completion_tokens",
                            "cached_tokens",
                            "local_prompt_tokens",
                            "reasoning_tokens",
                        )
                    }
                except ValueError as exc:
                    raise ConfigError(f"usage log {str(p)!r} row {i}: {exc}") from exc
                for k in ("ttft_s", "total_s"):
                    rec[k] = float(row[k]) if row.get(k) else None
                rec["finish_reason"] = row.get("finish_reason") or None
                rec["route"] = row.get("route") or route or "default"
                rec["model"] = row.get("model")
                rows.append(rec)
    else:
        for i, obj in _jsonl_objects(p, "usage log"):
            resp = obj.get("response", obj)
            # Kimi semantics: usage at the top level or in choices[0]; cached_tokens at the top of usage.
            usage = resp.get("usage") or ((resp.get("choices") or [{}])[0] or {}).get("usage") or {}
            if usage.get("prompt_tokens") is None:
                raise ConfigError(f"usage log {str(p)!r} line {i}: field usage.prompt_tokens is missing")
            try:
                u = Usage.from_response(resp, web_search_calls=0)
            except (ConfigError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"usage log {str(p)!r} line {i}: field usage is malformed ({exc})") from None
            choice = (resp.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
            rc = msg.get("reasoning_content")
            rec = {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "cached_tokens": u.cached_tokens,
                "finish_reason": choice.get("finish_reason"),
                "model": resp.get("model"),
                "route": obj.get("route") or route or "default",
                "ttft_s": obj.get("ttft_s"),
                "total_s": obj.get("total_s"),
                "reasoning_tokens": count_text(rc) if rc else (0 if msg else None),
                "local_prompt_tokens": count_messages(obj["messages"])
                if obj.get("messages")
                else obj.get("local_prompt_tokens"),
            }
            rows.append(rec)
    for i, rec in enumerate(rows):
        rec.setdefault("cached_tokens", 0)
        rec["cached_tokens"] = rec["cached_tokens"] or 0
        if rec.get("reasoning_tokens") is not None and rec.get("completion_tokens") is not None:
            rec["output_tokens"] = rec["completion_tokens"] - rec["reasoning_tokens"]
        rec.update(
            status="ok",
            provenance=provenance,
            first_finish_reason=rec.get("finish_reason"),
            id=f"{p.name}:{i}",
            continuations=0,
            usage_missing=False,
        )
    return rows


# --- sampling to a target precision ------------------------------------------------------------------------
@dataclass
class RoutePrecision:
    route: str
    n: int
    mean_cost: float
    cv: float
    rel_error: float
    calls_needed: int | None
    reached: bool


@dataclass
class PrecisionRunSummary:
    target: float
    confidence: float
    rounds: list[SampleRunSummary] = field(default_factory=list)
    routes: list[RoutePrecision] = field(default_factory=list)
    stopped_reason: str = ""
    spent: Decimal = Decimal(0)
    currency: str = ""

    @property
    def reached(self) -> bool:
        return bool(self.routes) and all(r.reached for r in self.routes)

    @property
    def calls(self) -> int:
        return sum(r.n for r in self.routes)

    def __str__(self) -> str:
        lines = [
            f"{len(self.rounds)} round(s), {self.calls:,} calls, spent {money(self.spent, self.currency or None)}; "
            f"target ±{percent(self.target, trim=True)} at {percent(self.confidence, trim=True)}: {self.stopped_reason}"
        ]
        for r in self.routes:
            need = f"{r.calls_needed:,}" if r.calls_needed is not None else "?"
            lines.append(
                f"  {r.route}: {r.n:,} calls, mean cost {money(r.mean_cost, self.currency or None)} per request "
                f"±{percent(r.rel_error, 1)} (CV {r.cv:.2f}; {need} calls for the target)"
                + ("" if r.reached else " NOT reached")
            )
        return "\n".join(lines)


def route_cost_status(records, run_id: str, card, target: float, confidence: float) -> dict[str, RoutePrecision]:
    """Per route, from this run's successful records: calls, mean cost per request, its relative error at
    `confidence` and the calls the target needs."""
    import math

    import pandas as pd

    from kimiplan.calibration.precision import MIN_CALLS, call_costs, calls_for_target, mean_precision

    ok = [r for r in records if r.get("run_id") == run_id and r.get("status") == "ok"]
    if not ok:
        return {}
    df = pd.DataFrame(ok).drop_duplicates("id", keep="last")
    for col in ("cached_tokens", "continuation_prompt_tokens"):
        if col not in df:
            df[col] = 0
    cost = call_costs(df, card)
    out = {}
    for name, c in cost.groupby(df["route"]):
        x = c.to_numpy(dtype=float)
        m = float(x.mean())
        cv = float(x.std(ddof=1)) / m if len(x) > 1 and m > 0 else (0.0 if len(x) > 1 else math.inf)
        # The calibration file's own figure and calls (route_precision calls the same functions on the same calls).
        p = mean_precision(x, confidence)
        rel, need = p.rel_error, calls_for_target(p, len(x), target)
        out[str(name)] = RoutePrecision(
            str(name), len(x), m, cv, rel, need, bool(len(x) >= MIN_CALLS and rel <= target)
        )
    return out


def run_until_precision(
    client: KimiClient,
    config: SamplerConfig,
    store: str | Path,
    *,
    target: float = 0.05,
    confidence: float = 0.95,
    max_calls: int = 5000,
    card=None,
    prompts: Mapping[str, list] | None = None,
    progress: bool = True,
    prompt_source: str | None = None,
) -> PrecisionRunSummary:
    """Sample sequentially until every route's mean cost per request is within +-target at `confidence`.

    Each route's `n` in `config` is its first batch (at least MIN_CALLS). After each batch, a route that has not
    reached the target gets the calls its measured coefficient of variation says it needs (n = (z CV /
    target)^2, 5 % more for the estimate's own error, at most 4x its calls so far so a heavy tail seen late is
    re-measured); a route that has reached it gets none. So the calls go where the variance is. It stops at the
    target, at `max_calls` calls in all, at the spend cap (held across batches: the store is one run), or on an
    error no later call can escape."""
    import math

    from kimiplan.calibration.precision import MIN_CALLS

    if not 0 < target < 1:
        raise ConfigError(f"--until-precision must be in (0, 1), got {target}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if not (isinstance(max_calls, int) and max_calls >= len(config.routes) * 2):
        raise ConfigError(f"max_calls must be a whole number >= 2 per route, got {max_calls!r}")
    if card is None:
        from kimiplan.catalog.cards import load_catalog

        card = load_catalog().price(client.config.model)
    n = {r.name: max(r.n, MIN_CALLS) for r in config.routes}
    total = sum(n.values())
    if total > max_calls:  # the first batch alone would pass the bound: shrink it evenly
        n = {k: max(2, v * max_calls // total) for k, v in n.items()}
    out = PrecisionRunSummary(target=target, confidence=confidence, currency=card.currency)
    while True:
        cfg = config.model_copy(update={"routes": [r.model_copy(update={"n": n[r.name]}) for r in config.routes]})
        summary = run_sampler(
            client, cfg, store, card=card, prompts=prompts, progress=progress, prompt_source=prompt_source
        )
        out.rounds.append(summary)
        out.spent = summary.spent
        with SampleStore(store) as st:
            status = route_cost_status(st.records(), config.run_id, card, target, confidence)
        out.routes = [status[r.name] for r in config.routes if r.name in status]
        if out.reached and len(out.routes) == len(config.routes):
            out.stopped_reason = "target reached on every route"
            break
        if summary.stopped_reason:
            out.stopped_reason = f"stopped before the target: {summary.stopped_reason}"
            break
        want = {}
        for r in config.routes:
            s = status.get(r.name)
            if s is not None and s.reached:
                want[r.name] = n[r.name]
                continue
            have = s.n if s is not None else 0
            need = s.calls_needed if (s is not None and s.calls_needed is not None) else 2 * max(have, MIN_CALLS)
            grow = int(math.ceil(need * 1.05)) - have
            want[r.name] = n[r.name] + max(10, min(grow, 3 * max(have, MIN_CALLS)))
        room = max_calls - sum(n.values())
        extra = {k: want[k] - n[k] for k in n}
        if room <= 0 or not any(extra.values()):
            out.stopped_reason = f"stopped before the target: max calls ({max_calls:,}) reached"
            break
        asked = sum(extra.values())
        if asked > room:  # share what is left in proportion to what each route asked for
            extra = {k: v * room // asked for k, v in extra.items()}
            if not any(extra.values()):
                out.stopped_reason = f"stopped before the target: max calls ({max_calls:,}) reached"
                break
        n = {k: n[k] + extra[k] for k in n}
    return out
