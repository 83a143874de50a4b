"""Agent runs as streams of calls: a run is a session of sequential requests with think time between them.

Every call of a run (its steps, and any summary call) is a separate request that reserves its own prompt plus
its `max_completion_tokens` against TPM, counts once against RPM and holds a concurrency slot while it runs.
So for capacity an agent route is not one request per run but a stream of calls:

- the planner (`capacity.demand.route_moments`) replaces an agent route by its calls: the route's share is
  scaled by the mean calls per run, and the moments and size law are those of one call. Calls of many runs in
  flight interleave, so their arrivals are close to Poisson at rate (runs per second) x (calls per run);
- the simulator expands each run into its calls at their start times (the run's arrival plus the latencies and
  think times before each call) before the kernel sees them, so the kernel admits calls, not runs. The client
  is open loop: a refused call does not delay the run's later calls (a real agent would wait and retry).

The session view (runs in flight, steps per minute) is `capacity.agent_steps.agent_capacity`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from kimiplan.capacity.loss import Sizes
from kimiplan.catalog.admission import rule_for
from kimiplan.model.scenario import Route
from kimiplan.workload.agent import draw_agent

AGENT_SAMPLES = 4000  # runs drawn for the per-call moments (each gives tens to hundreds of calls)


def agent_call_sample(route: Route, ctx, samples: int, seed) -> tuple[pd.DataFrame, dict]:
    """Calls of `samples` seeded runs (one row per call) and the runs' columns."""
    d = draw_agent(route, samples, np.random.default_rng(seed), ctx, record_calls=True)
    return d.calls, d.columns


def agent_step_row(route: Route, ctx, samples: int, seed, provider: str = "moonshot") -> dict:
    """The `capacity.demand.route_moments` row of an agent route, as a stream of calls (see the module notes)."""
    n = min(samples, AGENT_SAMPLES)
    calls, runs = agent_call_sample(route, ctx, n, seed)
    budget = int(runs["max_completion_tokens"][0])
    reserved = rule_for(provider).reserved_tokens(calls["prompt_tokens"].to_numpy(), budget)
    per_run = float(runs["api_calls"].mean())
    return {
        "route": route.name,
        "share": route.share * per_run,  # calls per request of the mix: the plan's rate is runs per second
        "batch": route.batch,
        "reserved_mean": float(reserved.mean()),
        "reserved_m2": float(np.mean(reserved**2)),
        "reserved_m3": float(np.mean(reserved**3)),
        "reserved_method": "sampled (agent calls)",
        "latency_mean_s": float(calls["latency_s"].mean()),
        "latency_se_s": float(calls["latency_s"].std(ddof=1) / np.sqrt(len(calls))) if len(calls) > 1 else 0.0,
        "latency_method": "sampled (agent calls)",
        "input_mean": float(calls["prompt_tokens"].mean()),
        "input_p99": float(np.quantile(calls["prompt_tokens"], 0.99)),
        "completion_mean": float(calls["completion_tokens"].mean()),
        "calls_mean": 1.0,
        "calls_m2": 1.0,
        "calls_m3": 1.0,
        "max_completion_tokens": budget,
        "token_sizes": Sizes.from_sample(reserved),
        "call_sizes": Sizes.unit(),
        "agent_calls_per_run": per_run,
        "agent_run_duration_s": float(runs["latency_s"].mean()),
    }


def expand_runs(
    t: np.ndarray, route: Route, ctx, rng: np.random.Generator, provider: str = "moonshot"
) -> tuple[np.ndarray, ...]:
    """Calls of runs that start at times `t`: (start, reserved, billed, latency), sorted by start."""
    d = draw_agent(route, t.size, rng, ctx, record_calls=True)
    c = d.calls
    start = t[c["run"].to_numpy()] + c["start_s"].to_numpy()
    prompt = c["prompt_tokens"].to_numpy(dtype=np.float64)
    reserved = rule_for(provider).reserved_tokens(prompt, c["max_completion_tokens"].to_numpy())
    billed = prompt + c["completion_tokens"].to_numpy(dtype=np.float64)
    order = np.argsort(start, kind="stable")
    return start[order], reserved[order], billed[order], c["latency_s"].to_numpy()[order]


def session_chunks(
    arrivals: Iterator[np.ndarray],
    routes: list[Route],
    ctxs: list,
    draw_plain,
    rng: np.random.Generator,
    horizon_s: float,
    chunk: int,
    provider: str = "moonshot",
) -> Iterator[tuple[np.ndarray, ...]]:
    """Kernel chunks (t, reserved, billed, latency, calls, route index) of a route mix with agent routes: every
    arrival picks
    a route by share; plain routes draw one request (`draw_plain(route_index, n, rng)` -> reserved, billed,
    latency, calls); agent runs become their calls. All arrivals are gathered first, since a run's calls
    spread over its whole duration, then merged in time order and cut to the horizon."""
    t = np.concatenate(list(arrivals)) if arrivals is not None else np.zeros(0)
    shares = np.array([r.share for r in routes])
    which = rng.choice(len(routes), size=t.size, p=shares / shares.sum())
    parts = []
    for i, route in enumerate(routes):
        ti = t[which == i]
        if ti.size == 0:
            continue
        if route.agent is not None:
            s, res, bill, lat = expand_runs(ti, route, ctxs[i], rng, provider)
            parts.append((s, res, bill, lat, np.ones(s.size), np.full(s.size, i, dtype=np.int32)))
        else:
            parts.append((ti, *draw_plain(i, ti.size, rng), np.full(ti.size, i, dtype=np.int32)))
    if not parts:
        return
    cols = [np.concatenate([p[k] for p in parts]) for k in range(6)]
    order = np.argsort(cols[0], kind="stable")
    cols = [c[order] for c in cols]
    keep = cols[0] < horizon_s
    cols = [c[keep] for c in cols]
    for a in range(0, cols[0].size, chunk):
        yield tuple(c[a : a + chunk] for c in cols)
