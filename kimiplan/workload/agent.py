"""Agent runs: a route whose request is a run of steps (`Route.agent`), expanded step by step.

Step k's prompt is the head (system, RAG, documents, user task and the template's markers) plus the history:
every earlier step's assistant message (its output, plus its reasoning when thinking is preserved), the tool
result and their markers. Caching follows the model's rule:

- K2.x automatic caching: step k's prompt starts with step k-1's, so that prompt is a cache hit (with the
  route's `cache.hit_rate`) when it exceeded `cache.min_prompt_tokens` (256: "a new request can hit the prefix
  cache only when the previous request's prompt tokens exceed 256"). No write fee, no TTL.
- Paid cache writes (K3 family): each step writes the part of its prompt it did not read, at the write price of
  the agent's `cache_retention`; the next step reads the previous prompt if the retention has not lapsed
  (the time since the write is the step's latency plus the think time).
- The first step reads the route's `cache.prefix` head components (system etc.) as other requests wrote them.
- A compaction (truncating the oldest steps, or a summary) breaks the prefix: the next step reads the head only.

Each step is one API call that reserves its prompt plus the per-step `max_completion_tokens` against TPM; a
summary is one more call. Per-run totals come back in the columns of `draws.draw_route`, so breakdowns, costs
and forecasts treat a run as one request; `steps_frame` gives the per-step view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kimiplan.catalog.providers import truncate_completion
from kimiplan.errors import ConfigError
from kimiplan.model.agent import STOP_REASONS
from kimiplan.model.scenario import Route
from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE, template_tokens

HEAD = ("system", "rag", "documents", "user", "overhead")
RETENTION_S = {"5m": 300.0, "1h": 3600.0}
STEP_FIELDS = ("prompt", "cached", "written", "reasoning", "output", "completion", "web_search", "cost", "latency")


@dataclass
class AgentDraw:
    """Per-run totals (`columns`, the keys of `draws.COLUMNS` plus agent columns) and, when recorded, per-step
    arrays of shape (runs, max_steps) with zeros after a run has ended (`steps`)."""

    columns: dict[str, np.ndarray]
    steps: dict[str, np.ndarray] | None = None
    calls: pd.DataFrame | None = None  # with record_calls: one row per API call (run, start_s, prompt, ...)


def _tok(dist, rng, n) -> np.ndarray:
    x = np.asarray(dist.sample(rng, n), dtype=np.float64)
    return np.rint(np.maximum(x, 0.0)).astype(np.int64)


def draw_agent(
    route: Route, n: int, rng: np.random.Generator, ctx, *, record_steps: bool = False, record_calls: bool = False
) -> AgentDraw:
    """`n` runs of the agent route `route` under `ctx` (a `draws.RouteContext` that carries the price card).

    `record_steps`: per-step arrays (`steps_frame`). `record_calls`: one row per API call, summaries included,
    with its start in seconds from the run's start (what the simulator schedules)."""
    a = route.agent
    if a is None:
        raise ConfigError(f"route {route.name!r} has no agent section")
    card = ctx.card
    if card is None:
        raise ConfigError(f"route {route.name!r}: an agent route needs the price card (cache rule, run budgets)")
    budget = route.max_completion_tokens or ctx.max_completion_tokens
    window = ctx.context_window
    limit = min(window, a.context_limit_tokens or window)
    if a.web_search_per_step.mean() > 0 and card.reasoning == "always":
        raise ConfigError(
            f"route {route.name!r}: agent.web_search_per_step needs thinking off, but {card.model} always reasons"
        )
    thinking = route.thinking or card.reasoning == "always"
    paid = card.paid_cache_writes and route.cache.mode != "none"
    retention_s = RETENTION_S[a.cache_retention]
    hit_rate = route.cache.hit_rate if route.cache.mode != "none" else 0.0
    min_prompt = route.cache.min_prompt_tokens
    # Float prices for the per-run cost budget and the cost distributions (exact sums: finance.cost).
    p_hit, p_miss, p_out = float(card.cache_hit_price), float(card.input_cache_miss), float(card.output)
    p_write = float(card.cache_write_price(a.cache_retention)) if paid else p_miss
    fee = float(card.web_search_per_call)

    # ---- the head, drawn once per run
    head = {
        "system": _tok(route.system, rng, n),
        "rag": _tok(route.rag.top_k, rng, n) * _tok(route.rag.chunk_tokens, rng, n),
        "documents": np.where(
            rng.random(n) < route.documents.probability,
            _tok(route.documents.pages, rng, n) * _tok(route.documents.tokens_per_page, rng, n),
            0,
        ),
        "user": _tok(route.user, rng, n),
    }
    if route.overhead_tokens is None:
        head["overhead"] = template_tokens((head["system"] > 0).astype(np.int64), 0) + route.server_overhead_tokens
        markers = DEFAULT_TEMPLATE.message_overhead("assistant") + DEFAULT_TEMPLATE.message_overhead("tool")
    else:
        head["overhead"] = np.full(n, route.overhead_tokens + route.server_overhead_tokens, dtype=np.int64)
        markers = 0
    head_total = sum(head.values())
    first_prefix = sum((head[c] for c in route.cache.prefix if c in head), np.zeros(n, dtype=np.int64))

    need_steps = np.maximum(_tok(a.steps, rng, n), 1)
    steps_cap = int(min(a.max_steps, need_steps.max(initial=1)))

    # ---- running state
    active = np.ones(n, dtype=bool)
    stop = np.full(n, -1, dtype=np.int64)
    hist = np.zeros(n, dtype=np.int64)  # history tokens in the context now
    prev_prompt = np.zeros(n, dtype=np.int64)  # last call's prompt (0: none in this run)
    compacted = np.zeros(n, dtype=bool)  # the prefix broke since the last call
    gap = np.zeros(n)  # seconds since the last call's write
    tot = {k: np.zeros(n, dtype=np.int64) for k in ("input", "cached", "written", "reasoning", "output", "reserved")}
    comp_in = {k: np.zeros(n, dtype=np.int64) for k in (*HEAD, "history")}
    comp_cached = {k: np.zeros(n, dtype=np.int64) for k in (*HEAD, "history")}
    comp_written = {k: np.zeros(n, dtype=np.int64) for k in (*HEAD, "history")}
    calls = np.zeros(n, dtype=np.int64)
    made = np.zeros(n, dtype=np.int64)  # agent steps made (summaries not counted)
    searches = np.zeros(n, dtype=np.int64)
    compactions = np.zeros(n, dtype=np.int64)
    truncated = np.zeros(n, dtype=bool)
    any_hit = np.zeros(n, dtype=bool)
    cost = np.zeros(n)
    duration = np.zeros(n)
    model_time = np.zeros(n)  # seconds in calls (a concurrency slot held), the rest of duration is think time
    ttft_first = np.zeros(n)
    peak = np.zeros(n, dtype=np.int64)
    prompt_peak = np.zeros(n, dtype=np.int64)
    cum = None
    first_kept = None
    if a.context_policy == "truncate_oldest":
        cum = np.zeros((n, steps_cap + 1), dtype=np.int64)  # cum[:, j]: sum of the first j history entries
        first_kept = np.zeros(n, dtype=np.int64)
    rec = {f: np.zeros((n, steps_cap)) for f in STEP_FIELDS} if record_steps else None
    call_log: list[tuple] = []

    def latency_of(m: np.ndarray, completion: np.ndarray):
        if route.latency.total_s is not None:
            return np.zeros(m.sum()), np.maximum(route.latency.total_s.sample(rng, int(m.sum())), 0.0)
        t = route.latency.ttft_s.sample(rng, int(m.sum()))
        tps = np.maximum(route.latency.decode_tps.sample(rng, int(m.sum())), 1e-3)
        return t, t + completion[m] / tps

    def call(m: np.ndarray, completion_out: np.ndarray, reasoning_out: np.ndarray, ws: np.ndarray):
        """Bill one call for the runs in `m`: prompt = head + history, cache read and write, completion."""
        prompt = head_total + hist
        # Read: the previous prompt (its whole text is this prompt's prefix) unless the prefix broke; the first
        # call reads the head's cacheable prefix; paid caches also need the write to be within its retention.
        can = rng.random(n) < hit_rate
        first = prev_prompt == 0
        later = can & ~first & (prev_prompt > min_prompt)
        lapsed = np.zeros(n, dtype=bool)
        if paid:
            lapsed = later & (gap > retention_s)
            later &= ~lapsed
        head_only = later & compacted
        full = later & ~compacted
        # One rule for the shared head (the route's cache.prefix components): other runs keep it warm, so a call
        # that cannot read its own run's prefix reads it: the first step, and a later step after its own paid
        # cache has lapsed (the run's history is gone, the head other runs wrote is not).
        first_hit = can & (first | lapsed) & (prompt > min_prompt) & (first_prefix > 0)
        read = np.where(full, prev_prompt, np.where(head_only, head_total, np.where(first_hit, first_prefix, 0)))
        read = np.where(m, read, 0)
        written = np.where(m, prompt - read, 0) if paid else np.zeros(n, dtype=np.int64)
        miss = np.where(m, prompt - read - written, 0)
        completion = completion_out + reasoning_out
        step_cost = np.where(
            m, (read * p_hit + written * p_write + miss * p_miss + completion * p_out) / 1e6 + ws * fee, 0.0
        )
        # Per-component attribution: reads cover the head first (prompt order), then the history.
        for c in HEAD:
            comp_in[c] += np.where(m, head[c], 0)
            if c in route.cache.prefix:
                got_first = np.where(first_hit & m, head[c], 0)
            else:
                got_first = 0
            got = np.where(m & (full | head_only), head[c], 0) + got_first
            comp_cached[c] += got
            if paid:
                comp_written[c] += np.where(m, head[c], 0) - got
        comp_in["history"] += np.where(m, hist, 0)
        h_read = np.where(m & full, prev_prompt - head_total, 0)
        comp_cached["history"] += h_read
        if paid:
            comp_written["history"] += np.where(m, hist, 0) - h_read
        tot["input"] += np.where(m, prompt, 0)
        tot["cached"] += read
        tot["written"] += written
        tot["reasoning"] += np.where(m, reasoning_out, 0)
        tot["output"] += np.where(m, completion_out, 0)
        tot["reserved"] += np.where(m, prompt + budget, 0)
        np.maximum(peak, np.where(m, prompt + completion, 0), out=peak)
        np.maximum(prompt_peak, np.where(m, prompt, 0), out=prompt_peak)
        any_hit[m & (read > 0)] = True
        calls[m] += 1
        searches[m] += ws[m]
        cost[:] += step_cost
        ttft, lat = latency_of(m, completion)
        if record_calls:
            call_log.append((np.flatnonzero(m), duration[m].copy(), prompt[m], completion[m], lat))
        duration[m] += lat
        model_time[m] += lat
        ttft_first[m & (calls == 1)] = ttft[(calls[m] == 1)]
        prev_prompt[m] = prompt[m]
        compacted[m] = False
        gap[m] = lat
        return prompt, read, written, completion, step_cost, lat

    zeros = np.zeros(n, dtype=np.int64)
    for k in range(steps_cap):
        if not active.any():
            break
        summary_cost = np.zeros(n)
        # ---- context management before the call
        if k > 0:
            over = active & (head_total + hist + budget > limit)
            if over.any():
                if a.context_policy == "stop":
                    stop[over] = STOP_REASONS.index("context")
                    active &= ~over
                elif a.context_policy == "truncate_oldest":
                    room = limit - head_total - budget
                    rows = np.flatnonzero(over & (room >= 0))
                    if rows.size:
                        keep = np.floor(room[rows] * a.truncate_to).astype(np.int64)
                        thr = cum[rows, k] - keep
                        f = np.argmax(cum[rows, : k + 1] >= thr[:, None], axis=1)
                        first_kept[rows] = np.maximum(f, first_kept[rows])
                        hist[rows] = cum[rows, k] - cum[rows, first_kept[rows]]
                        compacted[rows] = True
                        compactions[rows] += 1
                    dead = over & (room < 0)
                    stop[dead] = STOP_REASONS.index("context")
                    active &= ~dead
                else:  # summarise: one extra call reads the history and writes a summary; the prefix breaks
                    # The summary call sends the step budget too, so it must fit the model's window (Kimi
                    # refuses input + max_completion_tokens past it with a 400); its output is cut at the budget.
                    summary = np.minimum(_tok(a.summary_tokens, rng, n), budget)
                    fits = over & (head_total + hist + budget <= window)
                    if fits.any():
                        summary_cost = call(fits, np.where(fits, summary, 0), zeros, zeros)[4]
                        hist[fits] = summary[fits] + markers
                        compacted[fits] = True
                        compactions[fits] += 1
                    dead = (over & ~fits) | (fits & (head_total + hist + budget > limit))
                    stop[dead] = STOP_REASONS.index("context")
                    active &= ~dead
            if not active.any():
                break
        m = active.copy()
        want_r = _tok(route.reasoning, rng, n) if thinking else zeros
        want_o = _tok(route.output, rng, n)
        r, o, trunc = truncate_completion(want_r, want_o, budget)
        r, o = np.where(m, r, 0), np.where(m, o, 0)
        truncated |= m & trunc
        ws = np.where(m, _tok(a.web_search_per_step, rng, n), 0) if a.web_search_per_step.mean() > 0 else zeros
        prompt, read, written, completion, step_cost, lat = call(m, o, r, ws)
        made[m] += 1
        if rec is not None:
            for f, v in (
                ("prompt", prompt),
                ("cached", read),
                ("written", written),
                ("reasoning", r),
                ("output", o),
                ("completion", completion),
                ("web_search", ws),
                ("cost", step_cost + summary_cost),
            ):
                rec[f][:, k] = np.where(m, v, 0)
            rec["latency"][m, k] = lat
        # ---- does the run go on?
        done = m & (made >= need_steps)
        stop[done] = STOP_REASONS.index("done")
        capped = m & ~done & (made >= a.max_steps)
        stop[capped] = STOP_REASONS.index("max_steps")
        if a.run_budget_tokens is not None:
            over_t = m & (stop < 0) & (tot["input"] + tot["reasoning"] + tot["output"] >= a.run_budget_tokens)
            stop[over_t] = STOP_REASONS.index("budget_tokens")
        if a.run_budget_cost is not None:
            over_c = m & (stop < 0) & (cost >= a.run_budget_cost)
            stop[over_c] = STOP_REASONS.index("budget_cost")
        active = m & (stop < 0)
        # The step's assistant message (its reasoning too: Kimi reads reasoning sent back within a turn of tool
        # calls, and refuses a tool-call history without it when thinking is on) and tool result join the context.
        entry = o + (r if a.preserve_thinking else 0) + _tok(a.tool_result_tokens, rng, n) + markers
        entry = np.where(active, entry, 0)
        hist += entry
        if cum is not None:
            cum[:, k + 1] = cum[:, k] + entry
        think = np.where(active, np.maximum(a.think_time_s.sample(rng, n), 0.0), 0.0)
        duration += think
        gap += think
    stop[stop < 0] = STOP_REASONS.index("max_steps")  # cannot happen: every run ends by a reason above

    completion = tot["reasoning"] + tot["output"]
    cols = {
        "system": comp_in["system"],
        "history": comp_in["history"],
        "rag": comp_in["rag"],
        "documents": comp_in["documents"],
        "user": comp_in["user"],
        "overhead": comp_in["overhead"],
        "tool_rounds": np.zeros(n, dtype=np.int64),
        "tool_rounds_cached": np.zeros(n, dtype=np.int64),
        "input_tokens": tot["input"],
        "cached_tokens": tot["cached"],
        "cache_hit": any_hit,
        "reasoning_tokens": tot["reasoning"],
        "output_tokens": tot["output"],
        "completion_tokens": completion,
        "truncated": truncated,
        "max_completion_tokens": np.full(n, budget, dtype=np.int64),
        "reserved_tokens": tot["reserved"],
        "web_search_calls": searches,
        "function_calls": np.zeros(n, dtype=np.int64),  # an agent's tool rounds are its steps (api_calls)
        "api_calls": calls,
        "ttft_s": ttft_first,
        "latency_s": duration,
        # agent columns
        "cache_write_tokens": tot["written"],
        "steps": made,
        "stop_reason": stop,
        "resolved": stop == STOP_REASONS.index("done"),
        "compactions": compactions,
        "context_peak": peak,
        "prompt_peak": prompt_peak,
        "run_cost": cost,
        "model_time_s": model_time,
    }
    for c in (*HEAD, "history"):
        cols[f"{c}_cached"] = comp_cached[c]
        cols[f"{c}_written"] = comp_written[c]
    cols["tool_rounds_written"] = np.zeros(n, dtype=np.int64)
    calls_df = None
    if record_calls:
        parts = list(zip(*call_log)) if call_log else [[np.zeros(0, dtype=np.int64)]] + [[np.zeros(0)]] * 4
        calls_df = pd.DataFrame(
            {
                k: np.concatenate(v)
                for k, v in zip(("run", "start_s", "prompt_tokens", "completion_tokens", "latency_s"), parts)
            }
        )
        calls_df["max_completion_tokens"] = budget
        calls_df = calls_df.sort_values(["run", "start_s"], kind="stable").reset_index(drop=True)
    return AgentDraw(cols, rec, calls_df)


def runs_frame(draw: AgentDraw) -> pd.DataFrame:
    """Per-run totals as a frame with a readable `stop_reason`."""
    f = pd.DataFrame(draw.columns)
    f["stop_reason"] = pd.Categorical.from_codes(f["stop_reason"], categories=list(STOP_REASONS))
    return f


def steps_frame(draw: AgentDraw) -> pd.DataFrame:
    """Per-step figures of recorded runs, long format: run, step (1-based) and STEP_FIELDS; steps a run did not
    make are left out. A summary call's cost is folded into the step it preceded (its tokens are in the run
    totals only)."""
    if draw.steps is None:
        raise ConfigError("the runs were drawn without record_steps=True")
    made = draw.columns["steps"]
    n, cap = draw.steps["prompt"].shape
    run, step = np.nonzero(np.arange(cap)[None, :] < made[:, None])
    out = {"run": run, "step": step + 1}
    for f in STEP_FIELDS:
        out[f] = draw.steps[f][run, step]
    return pd.DataFrame(out)
