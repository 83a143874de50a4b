"""Expands a scenario into per-request token counts (numpy arrays / pandas frames).

Per request: system, history, rag, documents and user tokens make the prompt; the model then wants to write
`reasoning` (thinking on) plus `output` tokens, but stops at `max_completion_tokens` with
`finish_reason=length`. Reasoning comes first and shares the budget. Billing counts what was generated;
Kimi's rate limiter counts prompt + `max_completion_tokens` (the `reserved_tokens` column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import PriceCard
from kimiplan.catalog.providers import truncate_completion
from kimiplan.catalog.resolve import max_completion, price_card
from kimiplan.errors import ConfigError
from kimiplan.model.inputs import column, draw_input, whole_tokens
from kimiplan.model.scenario import COMPONENTS, Route, Scenario
from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE

COLUMNS = (
    "system",
    "history",
    "rag",
    "documents",
    "user",
    "overhead",
    "tool_rounds",
    "tool_rounds_cached",
    "input_tokens",
    "cached_tokens",
    "cache_hit",
    "reasoning_tokens",
    "output_tokens",
    "completion_tokens",
    "truncated",
    "max_completion_tokens",
    "reserved_tokens",
    "web_search_calls",
    "function_calls",
    "api_calls",
    "ttft_s",
    "latency_s",
)


@dataclass(frozen=True)
class RouteContext:
    """What a route's draws need from outside the route: the budget used when the route sets none."""

    max_completion_tokens: int
    context_window: int
    card: PriceCard | None = None  # agent routes read the cache rule and prices (run budgets) from it


# The input's draw has its home in the model layer (calibration reads it too); the names stay for this module.
_tokens, _column = whole_tokens, column


def draw_route(route: Route, n: int, rng: np.random.Generator, ctx: RouteContext) -> dict[str, np.ndarray]:
    """`n` requests of `route`: a dict of equal-length arrays (see COLUMNS). For an agent route a request is a
    run: the columns are per-run totals, plus the agent's own (see `kimiplan.workload.agent`)."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if route.agent is not None:
        from kimiplan.workload.agent import draw_agent

        return draw_agent(route, n, rng, ctx).columns
    inp = draw_input(route, rng, n)
    system, history, rag, documents, user = (inp[k] for k in ("system", "history", "rag", "documents", "user"))
    overhead, input_tokens = inp["overhead"], inp["input_tokens"]

    cached = np.zeros(n, dtype=np.int64)
    hit = np.zeros(n, dtype=bool)
    if route.cache.mode == "prefix_rule":
        hit = (rng.random(n) < route.cache.hit_rate) & (input_tokens > route.cache.min_prompt_tokens)
        cached = np.where(hit, inp["prefix"], 0)

    budget = route.max_completion_tokens or ctx.max_completion_tokens
    want_reasoning = _column(_tokens(route.reasoning, rng, n) if route.thinking else 0, n)
    want_output = _column(_tokens(route.output, rng, n), n)
    reasoning, output, truncated = truncate_completion(want_reasoning, want_output, budget)
    completion = reasoning + output

    tools = _column(_tokens(route.tools.web_search_calls, rng, n), n)
    functions = _column(_tokens(route.tools.function_calls, rng, n), n)  # a fixed 0 draws nothing
    if route.latency.total_s is not None:
        ttft = np.zeros(n)
        latency = _column(route.latency.total_s.sample(rng, n), n, np.float64)
        tps = None
    else:
        ttft = route.latency.ttft_s.sample(rng, n)
        tps = np.maximum(route.latency.decode_tps.sample(rng, n), 1e-3)
        latency = ttft + completion / tps
    reserved = input_tokens + budget
    rounds = {"input": np.zeros(n, dtype=np.int64), "cached": np.zeros(n, dtype=np.int64)}
    if tools.any() or functions.any():  # most routes make no tool rounds: skip the passes over n requests
        rounds = _tool_rounds(route, tools, functions, input_tokens, budget, rng, ttft, tps)
        input_tokens = input_tokens + rounds["input"]
        cached = cached + rounds["cached"]
        output = output + rounds["output"]
        reasoning = reasoning + rounds["reasoning"]
        completion = completion + rounds["output"] + rounds["reasoning"]
        reserved = reserved + rounds["reserved"]
        latency = latency + rounds["latency"]
    return {
        "system": _column(system, n),
        "history": _column(history, n),
        "rag": _column(rag, n),
        "documents": _column(documents, n),
        "user": _column(user, n),
        "overhead": _column(overhead, n),
        "tool_rounds": rounds["input"],
        "tool_rounds_cached": rounds["cached"],
        "input_tokens": input_tokens,
        "cached_tokens": cached,
        "cache_hit": hit,
        "reasoning_tokens": reasoning,
        "output_tokens": output,
        "completion_tokens": completion,
        "truncated": truncated,
        "max_completion_tokens": np.full(n, budget, dtype=np.int64),
        "reserved_tokens": reserved,
        "web_search_calls": tools,
        "function_calls": functions,
        "api_calls": tools + functions + 1,
        "ttft_s": ttft,
        "latency_s": latency,
    }


def _tool_rounds(
    route: Route,
    searches: np.ndarray,
    functions: np.ndarray,
    first_prompt: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    ttft: np.ndarray,
    tps: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """The further calls of requests with tool rounds (searches first, then function rounds): call j resends
    call j-1's prompt plus its tool-call message, the tool results and (template on) the markers of the
    assistant and tool messages; a function round with thinking on also reasons first, and that reasoning is
    sent back and read by the later calls (the current turn's, Kimi's `thinking.keep` default). Each call
    reserves its prompt plus the budget against TPM, hits the cache on the previous prompt as the first call
    does on its prefix, and takes another time to first token plus its decode time. The final answer (the
    route's reasoning and output) is the last call's."""
    n = searches.size
    out = {k: np.zeros(n, dtype=np.int64) for k in ("input", "cached", "output", "reasoning", "reserved")}
    out["latency"] = np.zeros(n)
    markers = 0
    if route.overhead_tokens is None:  # the same template that counts the first call's markers
        markers = DEFAULT_TEMPLATE.message_overhead("assistant") + DEFAULT_TEMPLATE.message_overhead("tool")
    t = route.tools
    total = searches + functions
    last_search = int(searches.max(initial=0))
    prompt = first_prompt.astype(np.int64)
    for j in range(1, int(total.max(initial=0)) + 1):
        active = total >= j
        search = searches >= j
        call = np.zeros(n, dtype=np.int64)
        result = np.zeros(n, dtype=np.int64)
        think = np.zeros(n, dtype=np.int64)
        # Draw only the laws some request uses at round j: a route without function rounds keeps its stream.
        if j <= last_search:
            call = np.where(search, _column(_tokens(t.tool_call_tokens, rng, n), n), 0)
            result = np.where(search, _tokens(t.result_tokens, rng, n), 0)
        fn = active & ~search
        if fn.any():
            f_call = _column(_tokens(t.function_call_tokens, rng, n), n)
            f_think = _column(_tokens(route.reasoning, rng, n) if route.thinking else 0, n)
            f_think, f_call, _ = truncate_completion(f_think, f_call, budget)  # reasoning first, as on the answer
            call = np.where(fn, f_call, call)
            think = np.where(fn, f_think, 0)
            result = np.where(fn, _tokens(t.function_result_tokens, rng, n), result)
        nxt = prompt + think + call + result + markers
        out["input"] += np.where(active, nxt, 0)
        out["reserved"] += np.where(active, nxt + budget, 0)
        out["output"] += np.where(active, call, 0)
        out["reasoning"] += think
        if route.cache.mode == "prefix_rule":
            hit = (rng.random(n) < route.cache.hit_rate) & (prompt > route.cache.min_prompt_tokens)
            out["cached"] += np.where(active & hit, prompt, 0)
        out["latency"] += np.where(active, ttft + ((think + call) / tps if tps is not None else 0.0), 0.0)
        prompt = np.where(active, nxt, prompt)
    return out


def cached_means(route: Route, d: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean cached tokens per request of each input component (`<component>_cached` columns)."""
    out = {}
    for k in COMPONENTS:
        if f"{k}_cached" in d:  # agent runs attribute their reads per component
            out[k] = float(d[f"{k}_cached"].mean())
        elif k == "tool_rounds":
            out[k] = float(d["tool_rounds_cached"].mean())
        else:
            out[k] = float((d[k] * d["cache_hit"]).mean()) if k in route.cache.prefix else 0.0
    return out


def route_context(scenario: Scenario, route: Route, card=None) -> RouteContext:
    card = card or price_card(scenario)
    return RouteContext(
        max_completion_tokens=max_completion(scenario, route, card), context_window=card.context_window, card=card
    )


def sample_requests(
    scenario: Scenario, n: int, rng: np.random.Generator | int | None = None, card=None
) -> pd.DataFrame:
    """`n` requests of the scenario's route mix (routes drawn by share), one row each, in random order."""
    if n <= 0:
        raise ConfigError(f"n must be > 0, got {n}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(scenario.seed if rng is None else rng)
    card = card or price_card(scenario)
    shares = np.array([r.share for r in scenario.routes])
    which = rng.choice(len(scenario.routes), size=n, p=shares / shares.sum())
    frames = []
    for i, route in enumerate(scenario.routes):
        k = int((which == i).sum())
        if k == 0:
            continue
        d = draw_route(route, k, rng, route_context(scenario, route, card))
        f = pd.DataFrame(d)
        f.insert(0, "route", route.name)
        f["_pos"] = np.flatnonzero(which == i)
        frames.append(f)
    out = pd.concat(frames, ignore_index=True).sort_values("_pos").drop(columns="_pos").reset_index(drop=True)
    out["route"] = pd.Categorical(out["route"], categories=[r.name for r in scenario.routes])
    return out


# Nonlinear pieces (budget truncation, the cache threshold) have no closed form for arbitrary
# distributions; they are estimated from a large fixed-seed sample and reported with their standard error.
EXPECTATION_SAMPLES = 200_000
AGENT_EXPECTATION_SAMPLES = 20_000  # an agent run is up to hundreds of steps: fewer runs, same seeded estimate
_EXPECT_SEED = 20260420


def expected_tokens(scenario: Scenario, card=None, samples: int = EXPECTATION_SAMPLES) -> pd.DataFrame:
    """Mean tokens per request of each route, by component, with standard errors and truncation rate.

    Linear components (system, history, RAG, documents, user) use exact means of the specs; cached,
    reasoning, output and completion tokens are estimated from `samples` fixed-seed draws per route."""
    card = card or price_card(scenario)
    rows = []
    for i, route in enumerate(scenario.routes):
        rng = np.random.default_rng([_EXPECT_SEED, i])
        n = samples if route.agent is None else min(samples, AGENT_EXPECTATION_SAMPLES)
        d = draw_route(route, n, rng, route_context(scenario, route, card))
        exact = {
            "system": route.system.mean(),
            "history": route.history.turns.mean() * route.history.tokens_per_turn.mean(),
            "rag": route.rag.top_k.mean() * route.rag.chunk_tokens.mean(),
            "documents": route.documents.probability
            * route.documents.pages.mean()
            * route.documents.tokens_per_page.mean(),
            "user": route.user.mean(),
            # Template markers depend on whether the drawn system prompt is empty: the sample mean stands in.
            "overhead": float(route.overhead_tokens + route.server_overhead_tokens)
            if route.overhead_tokens is not None
            else float(d["overhead"].mean()),
            "tool_rounds": float(d["tool_rounds"].mean()),  # no closed form: the sample mean stands in
        }
        if route.agent is not None:  # per-run sums over a random number of steps: the sample means stand in
            exact = {k: float(d[k].mean()) for k in COMPONENTS}
        row = {"route": route.name, "share": route.share}
        for k, v in cached_means(route, d).items():
            row[f"{k}_cached"] = v
        for k in COMPONENTS:
            # Specs are continuous but tokens are whole numbers: the sample mean includes rounding, the
            # spec mean does not; the difference is < 0.5 token per component.
            row[k] = float(d[k].mean())
            row[f"{k}_spec_mean"] = exact[k]
        for k in (
            "input_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "output_tokens",
            "completion_tokens",
            "reserved_tokens",
            "web_search_calls",
            "function_calls",
            "api_calls",
            "latency_s",
        ):
            row[k] = float(d[k].mean())
            row[f"{k}_se"] = float(d[k].std(ddof=1) / np.sqrt(n))
        row["truncation_rate"] = float(d["truncated"].mean())
        row["max_completion_tokens"] = int(d["max_completion_tokens"][0])
        row["input_p99"] = float(np.quantile(d["input_tokens"], 0.99))
        if route.agent is not None:
            row["cache_write_tokens"] = float(d["cache_write_tokens"].mean())
            row["cache_write_tokens_se"] = float(d["cache_write_tokens"].std(ddof=1) / np.sqrt(n))
            for k in COMPONENTS:
                row[f"{k}_written"] = float(d[f"{k}_written"].mean())
            row["steps"] = float(d["steps"].mean())
            row["resolved_rate"] = float(d["resolved"].mean())
            row["compactions"] = float(d["compactions"].mean())
        rows.append(row)
    out = pd.DataFrame(rows)
    if any(r.agent is not None for r in scenario.routes):  # other routes write nothing to a paid cache
        written = ["cache_write_tokens", *(f"{k}_written" for k in COMPONENTS)]
        out[written] = out[written].fillna(0.0)
    return out


def context_check(scenario: Scenario, card=None, quantile: float = 0.99, samples: int = 50_000) -> pd.DataFrame:
    """Routes whose high-percentile prompt plus `max_completion_tokens` exceeds the context window.

    Kimi answers such requests with 400 `invalid_request_error` ("exceeded model token limit"), so they
    fail outright rather than truncate."""
    card = card or price_card(scenario)
    rows = []
    for i, route in enumerate(scenario.routes):
        ctx = route_context(scenario, route, card)
        n = samples if route.agent is None else min(samples, AGENT_EXPECTATION_SAMPLES)
        d = draw_route(route, n, np.random.default_rng([_EXPECT_SEED, 99, i]), ctx)
        # An agent run's input is a sum over calls; what must fit is its largest single prompt.
        prompt = d["input_tokens"] if route.agent is None else d["prompt_peak"]
        need = prompt + d["max_completion_tokens"]
        q_input = float(np.quantile(prompt, quantile))
        rows.append(
            {
                "route": route.name,
                "quantile": quantile,
                "input_tokens_at_quantile": q_input,
                "max_completion_tokens": ctx.max_completion_tokens,
                "needed_at_quantile": q_input + ctx.max_completion_tokens,
                "context_window": ctx.context_window,
                "exceeds": q_input + ctx.max_completion_tokens > ctx.context_window,
                "share_rejected_400": float((need > ctx.context_window).mean()),
            }
        )
    return pd.DataFrame(rows)
