"""Demand on every limit: the per-route moments of a scenario (`route_moments`), its peak factors, and the
demand model of each limit at the busiest minute (day for TPD/RPD).

- requests arrive as Poisson at the peak rate (hourly profile x weekday x bursts);
- what a request puts on each limit has exact moments (`kimiplan.capacity.moments`): reserved tokens (input
  + max_completion_tokens over all its calls), API calls, and the mean latency; only truncated completions
  are sampled, and their standard error is carried into `refusal_se`;
- each limit is a loss system (`kimiplan.capacity.loss`): concurrency M/G/c/c (Erlang B); RPM/TPM over the
  scenario's window kind: a sliding 60 s window is a loss system with 60 s holding times (Erlang B for
  single-call requests, the Kaufman-Roberts knapsack for tokens and multi-call requests, both exact for
  Poisson input), a fixed minute refuses the overflow of the minute's arrivals; TPD/RPD the overflow of the
  day between resets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kimiplan.capacity.loss import (
    MAX_CLASSES,
    CompoundPoisson,
    JointSizes,
    Sizes,
    erlang_b,
    fixed_window_count_refusal,
    sliding_window_refusal,
)
from kimiplan.capacity.moments import SAMPLES as MOMENT_SAMPLES
from kimiplan.capacity.moments import latency_mean, reserved_and_calls, rounds_pmf
from kimiplan.catalog.admission import LIMITS
from kimiplan.catalog.resolve import price_card
from kimiplan.model.laws import poisson_ppf

_SEED = 20260421


# ---------------------------------------------------------------- demand from a scenario


def route_moments(scenario, catalog=None, samples: int = MOMENT_SAMPLES) -> pd.DataFrame:
    """Per route: share, exact raw moments of reserved tokens and API calls, mean latency (with its standard
    error and how it was obtained), and the law of request sizes the sliding-window formulas need.

    Fixed-seed draws of the route give the size classes (`token_sizes`), the truncated completion (through
    `latency_mean`), the 99th percentile of the input, and stand in for any part without a closed form."""
    from kimiplan.workload.draws import draw_route, route_context

    card = price_card(scenario, catalog)
    rows = []
    for i, route in enumerate(scenario.routes):
        ctx = route_context(scenario, route, card)
        if route.agent is not None:  # a run is a session of calls: the plan sees the calls (capacity.agent_calls)
            from kimiplan.capacity.agent_calls import agent_step_row

            rows.append(agent_step_row(route, ctx, samples, [_SEED, i], scenario.provider))
            continue
        d = draw_route(route, samples, np.random.default_rng([_SEED, i]), ctx)
        budget = int(d["max_completion_tokens"][0]) if samples else ctx.max_completion_tokens
        res, calls = reserved_and_calls(route, budget, d)
        lat, lat_se, lat_method = latency_mean(route, budget, np.random.default_rng([_SEED, i, 1]), samples)
        pmf = rounds_pmf(route)
        rows.append(
            {
                "route": route.name,
                "share": route.share,
                "batch": route.batch,
                "reserved_mean": res.m1,
                "reserved_m2": res.m2,
                "reserved_m3": res.m3,
                "reserved_method": res.method,
                "latency_mean_s": lat,
                "latency_se_s": lat_se,
                "latency_method": lat_method,
                "input_mean": res.m1 - calls.m1 * budget,
                "input_p99": float(np.quantile(d["input_tokens"], 0.99)),
                "completion_mean": float(d["completion_tokens"].mean()),
                # API calls per request: 1 + tool rounds ($web_search and function tools; each counts against RPM)
                "calls_mean": calls.m1,
                "calls_m2": calls.m2,
                "calls_m3": calls.m3,
                "max_completion_tokens": budget,
                "token_sizes": Sizes.from_sample(d["reserved_tokens"]),
                "call_sizes": Sizes.from_weighted(pmf[0] + 1, pmf[1]) if pmf else Sizes.from_sample(d["api_calls"]),
                # What one request takes from RPM and TPM together (the two-limit knapsack needs the joint law)
                "joint_sizes": JointSizes.from_sample(d["api_calls"], d["reserved_tokens"]),
            }
        )
    return pd.DataFrame(rows)


def route_reservation(row, budget=None):
    """Mean tokens one request of a route (a `route_moments` row) reserves against TPM/TPD at
    max_completion_tokens `budget` (default: the route's own): the prompt of every API call it makes plus the
    budget once per call, so each tool round ($web_search or function) counts its own budget. At the route's own
    budget this is its `reserved_mean`, the demand table's token load; the max_completion_tokens tables use it at other
    budgets, so the two agree."""
    b = row["max_completion_tokens"] if budget is None else np.asarray(budget, dtype=float)
    return row["input_mean"] + row["calls_mean"] * b


def peak_factors(scenario) -> dict:
    """Peak-minute and peak-day rate relative to the mean rate, over one week from `as_of`. Days run between
    the TPD resets of the scenario's window settings (midnight UTC+8 unless set)."""
    from kimiplan.capacity.arrivals import rate_per_minute

    rate = rate_per_minute(scenario.traffic, 7 * 86400.0, scenario.as_of)
    mean = scenario.traffic.mean_rps
    # The week repeats, so rolling it puts each reset at the start of a row.
    shift = int(round(scenario.simulation.window.day_offset_s / 60.0))
    per_day = np.roll(rate, shift).reshape(7, 1440).sum(axis=1) * 60.0
    return {
        "peak_minute": float(rate.max() / mean),
        "peak_day": float(per_day.max() / (mean * 86400.0)),
        "mean_week": float(rate.mean() / mean),
    }


def _limits_for(scenario, catalog, tier) -> dict:
    from kimiplan.catalog.admission import scenario_limits

    return scenario_limits(scenario, catalog, tier)


# ---------------------------------------------------------------- demand on one limit


class _Erlang:
    """Requests in flight: Poisson(load) without a limit (M/G/inf), Erlang B refusals on c slots."""

    def __init__(self, load: float):
        self.load = load

    def quantile(self, q: float) -> float:
        return float(poisson_ppf(q, self.load))

    def refusal(self, limit: float) -> float:
        return erlang_b(int(limit), self.load)


class _Counts:
    """API calls in a window (RPM: 60 s, sliding or fixed; RPD: the day): `n` requests on average, each
    making `sizes` calls."""

    def __init__(self, n: float, calls: tuple, sizes: Sizes, window: str):
        self.n, self.calls, self.sizes, self.window = n, calls, sizes, window

    def quantile(self, q: float) -> float:
        if self.sizes.is_unit:
            return float(poisson_ppf(q, self.n))
        return CompoundPoisson(self.n, *self.calls).quantile(q)

    def refusal(self, limit: float) -> float:
        if self.window == "sliding":
            return sliding_window_refusal(self.n / 60.0, self.sizes, limit)
        return fixed_window_count_refusal(self.n, self.sizes, limit)


class _Tokens:
    """Reserved tokens in a window: compound Poisson offered demand; refusals by the knapsack (sliding) or
    the overflow share of the compound sum (fixed minute, day)."""

    def __init__(self, cp: CompoundPoisson, sizes: Sizes, window: str):
        self.cp, self.sizes, self.window = cp, sizes, window

    def quantile(self, q: float) -> float:
        return self.cp.quantile(q)

    def refusal(self, limit: float) -> float:
        if self.cp.n <= 0:
            return 0.0
        if self.window == "sliding":
            return sliding_window_refusal(self.cp.n / 60.0, self.sizes, limit)
        # The overflow share of the tokens, at least the requests that can never fit, at most all of them (the
        # translated gamma of a tiny, very skewed sum can put it above 1).
        never = float(sum(p for v, p in zip(self.sizes.values, self.sizes.probs) if v > limit))
        return min(max(self.cp.overflow_fraction(limit), never), 1.0)


class _Nothing:
    def quantile(self, q: float) -> float:
        return 0.0

    def refusal(self, limit: float) -> float:
        return 0.0


@dataclass(frozen=True)
class _Group:
    """One row group of the demand table (a route, or "total" over the online routes): its share of the
    traffic and the share-weighted moments and sizes of its requests. Independent of the rate, so it is
    computed once per call and reused for every rate, peak factor and tier."""

    name: str
    share: float
    m1: float
    m2: float
    m3: float
    lat: float
    lat_se: float = 0.0
    calls: tuple = (1.0, 1.0, 1.0)  # raw moments of API calls per request
    token_sizes: Sizes = Sizes.unit()
    call_sizes: Sizes = Sizes.unit()
    classes: JointSizes | None = None  # joint (calls, tokens) classes of the group's requests
    class_routes: tuple = ()  # the route of each class (per-route refusals)


def _groups(moments: pd.DataFrame) -> list[_Group]:
    live = moments[~moments["batch"]]  # Batch API requests do not load the online limits
    groups = [(r["route"], live[live["route"] == r["route"]]) for _, r in live.iterrows()] + [("total", live)]
    out = []
    for name, g in groups:
        if g.empty:  # every route goes through the Batch API: the total carries nothing
            out.append(_Group(name, 0.0, 0.0, 0.0, 0.0, 0.0))
            continue
        w = g["share"] / g["share"].sum()
        m1, m2, m3 = (float((w * g[c]).sum()) for c in ("reserved_mean", "reserved_m2", "reserved_m3"))
        lat = float((w * g["latency_mean_s"]).sum())
        lat_se = float(np.sqrt((w**2 * g["latency_se_s"] ** 2).sum())) if "latency_se_s" in g else 0.0
        calls = tuple(float((w * g[c]).sum()) if c in g else 1.0 for c in ("calls_mean", "calls_m2", "calls_m3"))
        if "token_sizes" in g:
            tok = Sizes.mix(list(zip(g["token_sizes"], w)))
            call = Sizes.mix(list(zip(g["call_sizes"], w)))
        else:  # moments from an older caller without size laws: one class at the mean
            tok, call = Sizes((m1,), (1.0,)), Sizes((calls[0],), (1.0,))
        classes, routes = _joint_classes(g, w, tok, call)
        out.append(_Group(name, g["share"].sum(), m1, m2, m3, lat, lat_se, calls, tok, call, classes, routes))
    return out


def _joint_classes(g: pd.DataFrame, w: pd.Series, tok: Sizes, call: Sizes) -> tuple[JointSizes, tuple]:
    """The joint classes of a group, each route's kept apart (so per-route refusals fall out), re-binned so
    the group has at most about MAX_CLASSES of them."""
    per_route = max(4, MAX_CLASSES // max(len(g), 1))
    if "joint_sizes" not in g:  # an older moments table: calls and tokens taken as independent
        js = JointSizes.from_marginals(call, tok)
        return js, (g["route"].iloc[0] if len(g) == 1 else "total",) * js.size
    cs, ts, ps, rs = [], [], [], []
    for (_, row), wi in zip(g.iterrows(), w):
        j = row["joint_sizes"]
        if len(g) > 1 and j.size > per_route:
            j = JointSizes.from_weighted(j.calls, j.tokens, j.probs, per_route)
        cs += list(j.calls)
        ts += list(j.tokens)
        ps += [wi * p for p in j.probs]
        rs += [row["route"]] * j.size
    return JointSizes(tuple(cs), tuple(ts), tuple(ps)), tuple(rs)


def _loads(g: _Group, rps: float, peaks: dict):
    """(lam, lam_pk, day_n, conc_load) of a group at `rps`, or None when it carries no traffic."""
    lam = rps * g.share
    if lam <= 0:
        return None
    lam_pk = lam * peaks["peak_minute"]
    day_n = lam * 86400.0 * peaks["peak_day"]
    return lam, lam_pk, day_n, lam_pk * g.lat


def _limit_models(g: _Group, loads: tuple, window: str = "sliding", daily: bool = True) -> dict:
    """The demand of a group on each limit at the busiest minute (day for TPD/RPD): Erlang load on
    concurrency, calls in the 60 s window on RPM, reserved tokens on TPM, and the same over the day."""
    _, lam_pk, day_n, conc_load = loads
    n = 60.0 * lam_pk
    models = {
        "concurrency": _Erlang(conc_load),
        "rpm": _Counts(n, g.calls, g.call_sizes, window),
        "tpm": _Tokens(CompoundPoisson(n, g.m1, g.m2, g.m3), g.token_sizes, window),
    }
    if daily:
        models.update(
            tpd=_Tokens(CompoundPoisson(day_n, g.m1, g.m2, g.m3), g.token_sizes, "fixed"),
            rpd=_Counts(day_n, g.calls, g.call_sizes, "fixed"),
        )
    return models


def _demand(groups: list[_Group], rps: float, peaks: dict, q: float, window: str = "sliding") -> list[dict]:
    """Demand on each limit for each route and in total (rows of route, limit, mean, peak, percentile)."""
    rows = []
    for g in groups:
        loads = _loads(g, rps, peaks)
        if loads is None:
            if g.name == "total":  # no online traffic: zero demand on every limit, so tables keep their shape
                rows += [
                    {"route": "total", "limit": k, "mean": 0.0, "peak_mean": 0.0, "peak": 0.0, "_model": _Nothing()}
                    for k in LIMITS
                ]
            continue
        lam, lam_pk, day_n, conc_load = loads
        models = _limit_models(g, loads, window)
        c1 = g.calls[0]
        means = {
            "concurrency": (lam * g.lat, conc_load),
            "rpm": (60 * lam * c1, 60 * lam_pk * c1),
            "tpm": (60 * lam * g.m1, models["tpm"].cp.mean),
            "tpd": (86400 * lam * g.m1, models["tpd"].cp.mean),
            "rpd": (86400 * lam * c1, day_n * c1),
        }
        rows += [
            {
                "route": g.name,
                "limit": k,
                "mean": means[k][0],
                "peak_mean": means[k][1],
                "peak": m.quantile(q),
                "_model": m,
            }
            for k, m in models.items()
        ]
    return rows
