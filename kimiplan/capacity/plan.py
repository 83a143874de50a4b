"""Analytic capacity plan: demand on every limit, refusal probabilities, the binding limit, the smallest tier
that holds under each tier table, the largest sustainable rate per tier, the month growth exhausts it and the
tier to move to. Closed forms, with the simulator (`kimiplan.capacity.sim`) as the check.

Model (per account, at the busiest minute of a typical week):
- requests arrive as Poisson at the peak rate (hourly profile x weekday x bursts);
- what a request puts on each limit has exact moments (`kimiplan.capacity.moments`): reserved tokens (input
  + max_completion_tokens over all its calls), API calls, and the mean latency; only truncated completions
  are sampled, and their standard error is carried into `refusal_se`;
- each limit is a loss system (`kimiplan.capacity.loss`): concurrency M/G/c/c (Erlang B); RPM/TPM over the
  scenario's window kind: a sliding 60 s window is a loss system with 60 s holding times (Erlang B for
  single-call requests, the Kaufman-Roberts knapsack for tokens and multi-call requests, both exact for
  Poisson input), a fixed minute refuses the overflow of the minute's arrivals; TPD/RPD the overflow of the
  day between resets. Limits are treated as independent: total = 1 - prod(1 - p).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from kimiplan.capacity.loss import (  # noqa: F401 (re-exported: the formulas' old home)
    CompoundPoisson,
    Sizes,
    erlang_b,
    erlang_b_servers,
    erlang_c,
    fixed_window_count_refusal,
    poisson_overflow_fraction,
    sliding_window_refusal,
)
from kimiplan.capacity.moments import SAMPLES as MOMENT_SAMPLES
from kimiplan.capacity.moments import count_pmf, latency_mean, reserved_and_calls
from kimiplan.capacity.result import NEAR_LIMIT, CapacityPlan
from kimiplan.catalog.admission import LIMITS
from kimiplan.catalog.resolve import price_card, rate_tier
from kimiplan.errors import ConfigError

DEFAULT_TARGET = 0.001  # refusals under 0.1 %
DEFAULT_PERCENTILE = 0.999
_SEED = 20260421


# ---------------------------------------------------------------- queueing formulas (kimiplan.capacity.loss)


def pacing_wait(servers: int, load: float, latency_s: float) -> dict:
    """A client that waits for a free slot instead of taking a 429 turns the concurrency limit into an M/M/c
    queue: P(wait) = Erlang C and mean wait C * latency / (c - a) (exact for exponential latency, an
    approximation otherwise). When the load reaches the limit the queue grows without bound: `stable` is False
    and the mean wait None."""
    c = erlang_c(servers, load)
    stable = load < servers
    return {"stable": stable, "p_wait": c, "mean_wait_s": c * latency_s / (servers - load) if stable else None}


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
        if route.agent is not None:  # a run is a session of calls: the plan sees the calls (capacity.agent_steps)
            from kimiplan.capacity.agent_steps import agent_step_row

            rows.append(agent_step_row(route, ctx, samples, [_SEED, i], scenario.provider))
            continue
        d = draw_route(route, samples, np.random.default_rng([_SEED, i]), ctx)
        budget = int(d["max_completion_tokens"][0]) if samples else ctx.max_completion_tokens
        res, calls = reserved_and_calls(route, budget, d)
        lat, lat_se, lat_method = latency_mean(route, budget, np.random.default_rng([_SEED, i, 1]), samples)
        pmf = count_pmf(route.tools.web_search_calls)
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
                # API calls per request: 1, or 1 + searches for `$web_search` round trips (each counts against RPM)
                "calls_mean": calls.m1,
                "calls_m2": calls.m2,
                "calls_m3": calls.m3,
                "max_completion_tokens": budget,
                "token_sizes": Sizes.from_sample(d["reserved_tokens"]),
                "call_sizes": Sizes.from_weighted(pmf[0] + 1, pmf[1]) if pmf else Sizes.from_sample(d["api_calls"]),
            }
        )
    return pd.DataFrame(rows)


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
        return float(stats.poisson.ppf(q, self.load))

    def refusal(self, limit: float) -> float:
        return erlang_b(int(limit), self.load)


class _Counts:
    """API calls in a window (RPM: 60 s, sliding or fixed; RPD: the day): `n` requests on average, each
    making `sizes` calls."""

    def __init__(self, n: float, calls: tuple, sizes: Sizes, window: str):
        self.n, self.calls, self.sizes, self.window = n, calls, sizes, window

    def quantile(self, q: float) -> float:
        if self.sizes.is_unit:
            return float(stats.poisson.ppf(q, self.n))
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
        return self.cp.overflow_fraction(limit)


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
        out.append(_Group(name, g["share"].sum(), m1, m2, m3, lat, lat_se, calls, tok, call))
    return out


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


def _refusal(model, limit: float | None) -> float:
    return 0.0 if limit is None else float(model.refusal(limit))


MINUTE_LIMITS = ("concurrency", "rpm", "tpm")


def _reduced_load(models_at, limits: dict, names: tuple) -> dict:
    """Refusal per limit when each limit sees only the requests the others admit: the Erlang fixed point
    (reduced-load approximation of loss networks, Kelly 1986), B_k = f_k(load x prod_(j != k) (1 - B_j)),
    iterated from the independent values. `models_at(thin)` gives the demand models at `thin` x the load.
    Exact when one limit refuses and the others never do; it corrects the overlap when several refuse."""
    base = models_at(1.0)
    b = {k: _refusal(base[k], limits.get(k)) for k in names}
    active = [k for k in names if limits.get(k) is not None and b[k] > 1e-12]
    if len(active) < 2:
        return b
    for _ in range(60):
        prev = dict(b)
        for k in active:
            thin = float(np.prod([1.0 - b[j] for j in active if j != k]))
            b[k] = _refusal(models_at(thin)[k], limits.get(k))
        if max(abs(b[k] - prev[k]) for k in active) < 1e-9:
            break
    return b


def _total_refusal_by_limit(
    groups: list[_Group], rps: float, peaks: dict, limits: dict, daily: bool = True, window: str = "sliding"
) -> dict:
    """`refusal_summary(demand_table(...))["refusal_by_limit"]` without the table: only the "total" group's
    refusals, none of the percentiles (the same arithmetic, so the same numbers). The per-minute limits
    (concurrency, RPM, TPM) thin each other's load (`_reduced_load`); the daily limits are evaluated on the
    peak day on their own. `daily=False` leaves out TPD and RPD (for callers that evaluate those on the peak
    day only)."""
    g = groups[-1]  # _groups puts the total last
    loads = _loads(g, rps, peaks)
    if loads is None:  # no online traffic at all (every route batch): nothing is refused
        return dict.fromkeys(LIMITS if daily else MINUTE_LIMITS, 0.0)
    out = _reduced_load(
        lambda thin: _limit_models(g, tuple(x * thin for x in loads), window, daily=False), limits, MINUTE_LIMITS
    )
    if daily:
        models = _limit_models(g, loads, window)
        out.update({k: _refusal(models[k], limits.get(k)) for k in ("tpd", "rpd")})
    return out


def attributed_refusal(by_limit: dict) -> dict:
    """The share of requests refused by each limit when a request is charged to the first limit it breaks,
    in the order the admission rule checks them (concurrency, RPM, TPM, TPD, RPD), as the simulator counts."""
    out, passed = {}, 1.0
    for k in LIMITS:
        v = by_limit.get(k, 0.0)
        out[k] = passed * v
        passed *= 1.0 - v
    return out


def _total_refusal(per: dict) -> float:
    return 1.0 - float(np.prod([1.0 - v for v in per.values()]))


def _table_limits(scenario, catalog, tier) -> dict:
    return (
        _limits_for(scenario, catalog, tier)
        if (tier is not None or scenario.tier is not None)
        else {k: None for k in LIMITS}
    )


def _demand_frame(
    groups: list[_Group],
    rps: float,
    peaks: dict,
    percentile: float,
    limits: dict,
    window: str = "sliding",
    rows: list[dict] | None = None,
) -> pd.DataFrame:
    """The demand table under `limits`; `rows` (from `_demand`, which does not depend on the limits) may be
    passed in to share its percentiles between tiers."""
    rows = [dict(r) for r in (_demand(groups, rps, peaks, percentile, window) if rows is None else rows)]
    total = _total_refusal_by_limit(groups, rps, peaks, limits, True, window)
    for r in rows:
        lim = limits.get(r["limit"])
        r["limit_value"] = lim
        r["utilization"] = r["mean"] / lim if lim else np.nan
        r["peak_utilization"] = r["peak"] / lim if lim else np.nan
        r["headroom"] = 1 - r["peak"] / lim if lim else np.nan
        r["refusal"] = total[r["limit"]] if r["route"] == "total" else np.nan
        del r["_model"]
    df = pd.DataFrame(rows)
    df.insert(2, "percentile", percentile)
    return df


def check_target(target: float, name: str = "target") -> None:
    if not (isinstance(target, (int, float)) and 0 < target < 1):
        raise ConfigError(f"{name} must be a refusal share in (0, 1), e.g. 0.001 for 0.1 %, got {target!r}")


def _check_percentile(percentile: float, name: str = "percentile") -> None:
    if not (isinstance(percentile, (int, float)) and 0 < percentile < 1):
        raise ConfigError(f"{name} must be in (0, 1), e.g. 0.999, got {percentile!r}")


def _check_scale(scale: float) -> None:
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")


def _window(scenario, window: str | None) -> str:
    w = window or scenario.simulation.window.rate_window
    if w not in ("sliding", "fixed"):
        raise ConfigError(f"window must be 'sliding' or 'fixed', got {w!r}")
    return w


def demand_table(
    scenario,
    catalog=None,
    tier=None,
    percentile: float = DEFAULT_PERCENTILE,
    scale: float = 1.0,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
    window: str | None = None,
) -> pd.DataFrame:
    """Tidy: one row per (route incl. 'total', limit) with mean and peak demand, utilization, headroom and
    (for the total) the refusal fraction. `scale` multiplies the traffic (growth, what-ifs); `window`
    overrides the scenario's RPM/TPM window kind."""
    _check_percentile(percentile)
    _check_scale(scale)
    limits = _table_limits(scenario, catalog, tier)
    moments = route_moments(scenario, catalog) if moments is None else moments
    peaks = peak_factors(scenario) if peaks is None else peaks
    return _demand_frame(
        _groups(moments), scenario.traffic.mean_rps * scale, peaks, percentile, limits, _window(scenario, window)
    )


def refusal_summary(demand: pd.DataFrame) -> dict:
    """Total refusal (limits independent), refusal per limit and the binding limit from a demand table."""
    tot = demand[demand["route"] == "total"]
    names = tot["limit"].tolist()
    refusal = tot["refusal"].to_numpy(dtype=float)
    per = dict(zip(names, refusal.tolist()))
    total = _total_refusal(per)
    enforced = tot["limit_value"].notna().to_numpy()
    binding = None
    if enforced.any() and (tot["peak"].to_numpy()[enforced] > 0).any():  # zero demand (all Batch API): nothing binds
        # The binding limit refuses most; when none refuses measurably, it is the one with least headroom.
        idx = np.flatnonzero(enforced)
        r = refusal[idx]
        pick = idx[np.argmax(r)] if r.max() > 1e-12 else idx[np.argmin(tot["headroom"].to_numpy()[idx])]
        binding = names[pick]
    return {"refusal_by_limit": per, "refusal_total": total, "binding_limit": binding}


class _PlanContext:
    """What one plan call reuses: the scenario's demand groups and peak factors (computed once) and the
    results that depend only on a tier's limits (several tiers, or the scenario's own tier and its ladder
    entry, can share them). Lives for one call; nothing is kept between calls."""

    def __init__(self, scenario, catalog, moments=None, peaks=None, window: str | None = None):
        self.scenario, self.catalog = scenario, catalog
        self.window = _window(scenario, window)
        self.moments = route_moments(scenario, catalog) if moments is None else moments
        self.peaks = peak_factors(scenario) if peaks is None else peaks
        self.groups = _groups(self.moments)
        self._tables: dict = {}
        self._scales: dict = {}
        self._rows: dict = {}
        self._ladders: dict = {}

    def limits(self, tier) -> dict:
        return _table_limits(self.scenario, self.catalog, tier)

    def table(self, limits: dict, percentile: float) -> pd.DataFrame:
        """The demand table at today's traffic; shared, so callers must not modify it."""
        key = (tuple(limits.items()), percentile)
        if key not in self._tables:
            _check_percentile(percentile)
            rps = self.scenario.traffic.mean_rps
            if percentile not in self._rows:
                self._rows[percentile] = _demand(self.groups, rps, self.peaks, percentile, self.window)
            self._tables[key] = _demand_frame(
                self.groups, rps, self.peaks, percentile, limits, self.window, self._rows[percentile]
            )
        return self._tables[key]

    def ladder(self, tiers, target: float, percentile: float) -> pd.DataFrame:
        """The ladder of `tiers` (shared between the headline and the tier-table verdicts)."""
        key = (tuple(t.key for t in tiers), target, percentile)
        if key not in self._ladders:
            self._ladders[key] = _ladder(self, tiers, target, percentile)
        return self._ladders[key]

    def refusal_by_limit(self, limits: dict, scale: float, peaks: dict | None = None, daily: bool = True) -> dict:
        rps = self.scenario.traffic.mean_rps * scale
        return _total_refusal_by_limit(self.groups, rps, peaks or self.peaks, limits, daily, self.window)

    def refusal_total(self, limits: dict, scale: float) -> float:
        _check_scale(scale)
        return _total_refusal(self.refusal_by_limit(limits, scale))

    def max_scale(self, limits: dict, target: float) -> float:
        key = (tuple(limits.items()), target)
        if key not in self._scales:
            self._scales[key] = _max_scale(
                lambda s: self.refusal_total(limits, s) <= target, lambda s: self.refusal_total(limits, s), target
            )
        return self._scales[key]

    def floor_refusal(self, limits: dict) -> dict:
        """Refusal per limit as traffic vanishes: requests that can never fit (more tokens than TPM/TPD, more
        calls than RPM/RPD), which no tier change of the other limits and no pacing can admit."""
        g = self.groups[-1]
        out = {}
        for k, sizes in (("rpm", g.call_sizes), ("rpd", g.call_sizes), ("tpm", g.token_sizes), ("tpd", g.token_sizes)):
            lim = limits.get(k)
            if lim is not None and g.share > 0:
                out[k] = float(sum(p for v, p in zip(sizes.values, sizes.probs) if v > lim))
        return {k: v for k, v in out.items() if v > 0}


def _max_scale(ok, value=None, target: float | None = None) -> float:
    """The largest scale with ok(scale), on a log scale to 0.1 %: a geometric bracket, then regula falsi on
    log refusal against log scale (Illinois variant) when `value` and `target` are given (refusal is smooth
    and increasing in the traffic, so a few steps do), bisection otherwise."""
    lo, hi = 1e-6, 1.0
    if not ok(lo):
        return 0.0
    while ok(hi):
        lo, hi = hi, hi * 4
        if hi > 1e9:
            return math.inf  # nothing binds (no limits that traffic can reach)
    if value is None:
        for _ in range(40):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
            if hi / lo < 1.001:
                break
        return lo
    lt = math.log(target)
    f_lo, f_hi = value(lo), value(hi)
    g_lo = math.log(f_lo) - lt if f_lo > 0 else None
    g_hi = math.log(f_hi) - lt
    side = 0
    for _ in range(60):
        if hi / lo < 1.001:
            break
        x_lo, x_hi = math.log(lo), math.log(hi)
        if g_lo is None or not g_hi > g_lo:
            x = (x_lo + x_hi) / 2
        else:
            x = x_lo - g_lo * (x_hi - x_lo) / (g_hi - g_lo)
            x = min(max(x, x_lo + 1e-4 * (x_hi - x_lo)), x_hi - 1e-4 * (x_hi - x_lo))
        mid = math.exp(x)
        v = value(mid)
        if v <= target:
            lo, g_lo = mid, (math.log(v) - lt if v > 0 else None)
            if side == -1 and g_hi is not None:
                g_hi /= 2  # Illinois: halve the stale end so the bracket keeps shrinking from both sides
            side = -1
        else:
            hi, g_hi = mid, math.log(v) - lt
            if side == 1 and g_lo is not None:
                g_lo /= 2
            side = 1
    # The 0.1 % tolerance: step up from lo while it still holds.
    while hi / lo >= 1.001:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def max_sustainable_scale(
    scenario,
    catalog=None,
    tier=None,
    target: float = DEFAULT_TARGET,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> float:
    """Largest multiple of today's traffic whose total refusal stays <= target (bisection on a log scale)."""
    check_target(target)
    ctx = _PlanContext(scenario, catalog, moments, peaks)
    return ctx.max_scale(ctx.limits(tier), target)


GRID = 40  # rates evaluated for a week or horizon average (log-log interpolation between them)


def _minute_average(ctx: _PlanContext, limits: dict, rate: np.ndarray) -> dict:
    """Refusal per limit averaged over the requests of the minutes in `rate` (requests/s per minute), each
    minute at its own rate; TPD and RPD are evaluated on the peak day. Distinct rates are evaluated once
    (at most GRID of them: beyond that, on a geometric grid of rates with log-log interpolation, refusal
    being smooth and increasing in the rate)."""
    scenario = ctx.scenario
    factors, counts = np.unique(np.round(rate / scenario.traffic.mean_rps, 9), return_counts=True)
    counts, factors = counts[factors > 0], factors[factors > 0]
    per = {k: 0.0 for k in LIMITS}
    if factors.size == 0:
        return {"refusal_by_limit": per, "refusal_total": 0.0, "attributed": dict(per)}

    def at(f: float) -> dict:
        return ctx.refusal_by_limit(limits, 1.0, {**ctx.peaks, "peak_minute": float(f)}, daily=False)

    if factors.size <= GRID:
        values = [at(f) for f in factors]
    else:
        grid = np.geomspace(factors[0], factors[-1], GRID)
        on_grid = [at(f) for f in grid]
        values = [{} for _ in factors]
        for k in on_grid[0]:
            y = np.log(np.maximum([v[k] for v in on_grid], 1e-300))
            interp = np.exp(np.interp(np.log(factors), np.log(grid), y))
            for v, x in zip(values, interp):
                v[k] = 0.0 if x <= 1e-299 else float(x)
    weight = factors * counts  # requests in those minutes
    tot = ctx.refusal_by_limit(limits, 1.0)
    daily = {"tpd": tot["tpd"], "rpd": tot["rpd"]}
    for k in MINUTE_LIMITS:
        per[k] = float(np.dot(weight, [v[k] for v in values]) / weight.sum())
    per.update(daily)
    # Totals and first-broken shares are averaged minute by minute (they are not linear in the per-limit ones).
    attributed = [attributed_refusal({**v, **daily}) for v in values]
    att = {k: float(np.dot(weight, [a[k] for a in attributed]) / weight.sum()) for k in LIMITS}
    total = float(np.dot(weight, [_total_refusal({**v, **daily}) for v in values]) / weight.sum())
    return {"refusal_by_limit": per, "refusal_total": total, "attributed": att}


def _week_average(ctx: _PlanContext, limits: dict) -> dict:
    from kimiplan.capacity.arrivals import rate_per_minute

    scenario = ctx.scenario
    return _minute_average(ctx, limits, rate_per_minute(scenario.traffic, 7 * 86400.0, scenario.as_of))


def week_average_refusal(
    scenario, catalog=None, tier=None, moments: pd.DataFrame | None = None, peaks: dict | None = None
) -> dict:
    """Refusal averaged over a week's requests (each minute at its own rate), next to the peak-minute value
    the plan sizes for: a tier can refuse 40 % in a 15-minute burst and 1 % over the day."""
    ctx = _PlanContext(scenario, catalog, moments, peaks)
    return _week_average(ctx, ctx.limits(tier))


def horizon_refusal(
    scenario, catalog=None, hours: float = 24.0, start=None, tier=None, moments=None, window: str | None = None
) -> dict:
    """The refusal share per limit the plan expects over a simulation of `hours` from `start` (default the
    scenario's simulation section): the same per-minute rates `simulate` draws arrivals from (growth
    included), each minute at its own rate, so `simulate(...).summary["rejected_fraction"]` is directly
    comparable (for a client that does not retry)."""
    from kimiplan.capacity.arrivals import growth_factors, rate_per_minute

    ctx = _PlanContext(scenario, catalog, moments, window=window)
    start = start or scenario.simulation.start or scenario.as_of
    online = sum(r.share for r in scenario.routes if not r.batch)
    horizon = hours * 3600.0
    rate = rate_per_minute(scenario.traffic, horizon, start) * growth_factors(
        scenario.traffic.monthly_growth, scenario.as_of, horizon, start
    )
    # The groups carry the online shares already: pass the whole-account rate.
    return _minute_average(ctx, ctx.limits(tier), rate if online > 0 else rate * 0)


def _ladder(ctx: _PlanContext, tiers, target: float, percentile: float) -> pd.DataFrame:
    scenario = ctx.scenario
    rows = []
    for t in tiers:
        limits = ctx.limits(t)
        s = refusal_summary(ctx.table(limits, percentile))
        scale = ctx.max_scale(limits, target)
        bounded = math.isfinite(scale)
        row = {"tier": t.name, "provider": t.provider, **{k: getattr(t, k) for k in LIMITS}}
        row.update({f"refusal_{k}": v for k, v in s["refusal_by_limit"].items()})
        row.update(
            {
                "refusal_total": s["refusal_total"],
                "binding_limit": s["binding_limit"],
                "holds": s["refusal_total"] <= target,
                # NaN (an empty cell, null in JSON) when no limit can ever be reached: see `unbounded`.
                "max_scale": scale if bounded else np.nan,
                "max_requests_per_second": scale * scenario.traffic.mean_rps if bounded else np.nan,
                "max_requests_per_day": scale * scenario.traffic.per_day if bounded else np.nan,
                "unbounded": not bounded,
                "recharge": None if t.recharge is None else float(t.recharge),
                "recharge_currency": t.recharge_currency,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _catalog_tiers(scenario, catalog, tiers, version: str | None = None):
    if tiers is None:
        tiers = catalog.tiers(scenario.provider, scenario.resolved_region, scenario.as_of, version=version)
    if not tiers:
        raise ConfigError(f"provider {scenario.provider!r}: no tiers in the catalog on {scenario.as_of}")
    return tiers


def tier_ladder(
    scenario,
    catalog=None,
    target: float = DEFAULT_TARGET,
    percentile: float = DEFAULT_PERCENTILE,
    tiers=None,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> pd.DataFrame:
    """Every tier of the scenario's provider on `as_of`, ascending: refusal per limit, total, binding limit,
    whether it holds the target, and the largest sustainable request rate."""
    from kimiplan.catalog.cards import load_catalog

    check_target(target)
    catalog = catalog or load_catalog()
    tiers = _catalog_tiers(scenario, catalog, tiers, getattr(scenario, "tier_table", None))
    return _ladder(_PlanContext(scenario, catalog, moments, peaks), tiers, target, percentile)


def smallest_tier(ladder: pd.DataFrame) -> str | None:
    """The first tier (ascending) that holds the target, or None if none does."""
    ok = ladder[ladder["holds"]]
    return None if ok.empty else str(ok.iloc[0]["tier"])


def growth_exhaustion(scenario, max_scale: float, months: int = 36) -> dict:
    """The first month in which compound monthly growth takes traffic past `max_scale` x today."""
    g = scenario.traffic.monthly_growth
    if max_scale is None or (isinstance(max_scale, float) and math.isnan(max_scale)):
        max_scale = math.inf
    if max_scale <= 1.0:
        return {"months": 0, "date": scenario.as_of, "growth": g, "max_scale": max_scale}
    if g <= 0 or math.isinf(max_scale):
        return {"months": None, "date": None, "growth": g, "max_scale": None if math.isinf(max_scale) else max_scale}
    m = math.floor(math.log(max_scale) / math.log1p(g)) + 1
    if m > months:  # past the horizon (slow growth can put it past any calendar year): no date
        return {"months": m, "date": None, "growth": g, "max_scale": max_scale}
    y, mo = divmod(scenario.as_of.month - 1 + m, 12)
    date = scenario.as_of.replace(year=scenario.as_of.year + y, month=mo + 1, day=1)
    return {"months": m, "date": date, "growth": g, "max_scale": max_scale}


# ---------------------------------------------------------------- tier tables and the upgrade path


def tier_tables(scenario, catalog, months: int = 12) -> list[dict]:
    """Every version of the provider's tier table (scenario region) in force at some point in the `months`
    before `as_of` (and on it), oldest first, with its provenance and its tiers in ladder order."""
    lo = scenario.as_of - dt.timedelta(days=round(months * 365.25 / 12))
    by_version: dict = {}
    for t in catalog.rate_tiers:
        if t.provider != scenario.provider or t.region != scenario.resolved_region or not t.version:
            continue
        if (t.effective_from is not None and t.effective_from > scenario.as_of) or (
            t.effective_to is not None and t.effective_to <= lo
        ):
            continue
        by_version.setdefault(t.version, []).append(t)
    out = []
    for v, tiers in by_version.items():
        t0 = tiers[0]
        out.append(
            {
                "version": v,
                "official": all(t.official for t in tiers),
                "source": t0.source,
                "verified_on": t0.verified_on,
                "effective_from": t0.effective_from,
                "effective_to": t0.effective_to,
                "in_force_on_as_of": t0.in_force(scenario.as_of),
                "tiers": sorted(tiers, key=lambda t: (t.recharge or 0, t.concurrency or 0, t.rpm or 0, t.name)),
            }
        )
    return sorted(out, key=lambda d: (d["effective_from"] or dt.date.min, d["version"]))


def _headroom(ctx: _PlanContext, limits: dict, percentile: float, limit: str | None) -> float | None:
    if limit is None:
        return None
    tot = ctx.table(limits, percentile)
    row = tot[(tot["route"] == "total") & (tot["limit"] == limit)]
    return None if row.empty else float(row["headroom"].iloc[0])


def _upgrade(ctx: _PlanContext, ladder: pd.DataFrame, tiers, current: str | None, target: float) -> dict | None:
    """The cheapest tier above `current` whose binding limit is higher (a tier that raises only other limits
    changes nothing), when growth exhausts it, and the cumulative recharge that unlocks it."""
    if current is None or ladder.empty or current not in set(ladder["tier"]):
        return None
    rows = ladder.reset_index(drop=True)
    i = int(rows.index[rows["tier"] == current][0])
    cur = rows.iloc[i]
    binding = cur["binding_limit"]
    if not isinstance(binding, str):  # None, or NaN once the ladder frame holds no binding limit at all
        return None
    cur_tier = tiers[i]
    cur_value = getattr(cur_tier, binding)
    now = growth_exhaustion(ctx.scenario, cur["max_scale"])
    out = {
        "from": current,
        "binding_limit": binding,
        "limit_from": cur_value,
        "move_by": now["date"],
        "move_in_months": now["months"],
        "to": None,
    }
    for j in range(i + 1, len(tiers)):
        t = tiers[j]
        v = getattr(t, binding)
        if v is None or (cur_value is not None and v > cur_value):
            row = rows.iloc[j]
            ex = growth_exhaustion(ctx.scenario, row["max_scale"])
            out.update(
                {
                    "to": t.name,
                    "limit_to": v,
                    "skipped": [tiers[k].name for k in range(i + 1, j)],
                    "holds_now": bool(row["holds"]),
                    "max_requests_per_second": None if row["unbounded"] else float(row["max_requests_per_second"]),
                    "exhausted_months": ex["months"],
                    "exhausted_on": ex["date"],
                    "recharge": None if t.recharge is None else float(t.recharge),
                    "recharge_from": None if cur_tier.recharge is None else float(cur_tier.recharge),
                    "recharge_currency": t.recharge_currency,
                }
            )
            break
    return out


def _table_verdict(ctx, table: dict, scenario_tier: str | None, target: float, percentile: float) -> dict:
    tiers = table["tiers"]
    ladder = ctx.ladder(tiers, target, percentile)
    names = [t.name for t in tiers]
    small = smallest_tier(ladder)
    name = scenario_tier if scenario_tier in names else small
    row = ladder[ladder["tier"] == name].iloc[0] if name is not None else None
    tier = tiers[names.index(name)] if name is not None else None
    limits = ctx.limits(tier) if tier is not None else {}
    # No binding limit (traffic too small to press on any) is NaN in the ladder frame.
    binding = row["binding_limit"] if row is not None and isinstance(row["binding_limit"], str) else None
    ex = growth_exhaustion(ctx.scenario, row["max_scale"]) if row is not None else None
    return {
        "version": table["version"],
        "official": table["official"],
        "in_force_on_as_of": table["in_force_on_as_of"],
        "effective_from": table["effective_from"],
        "effective_to": table["effective_to"],
        "source": table["source"],
        "smallest_tier": small,
        "tier": name,
        "refusal_total": None if row is None else float(row["refusal_total"]),
        "holds": None if row is None else bool(row["holds"]),
        "binding_limit": binding,
        "binding_limit_value": None if tier is None or binding is None else getattr(tier, binding),
        "headroom": _headroom(ctx, limits, percentile, binding) if tier is not None else None,
        "max_requests_per_second": None if row is None or row["unbounded"] else float(row["max_requests_per_second"]),
        "exhausted_on": None if ex is None else ex["date"],
        "_ladder": ladder,
        "_tiers": tiers,
    }


# ---------------------------------------------------------------- the plan


def plan(
    scenario,
    catalog=None,
    target: float = DEFAULT_TARGET,
    percentile: float = DEFAULT_PERCENTILE,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
    tier_table: str | None = None,
    window: str | None = None,
) -> CapacityPlan:
    """The capacity verdict `kimiplan plan` prints: demand vs the scenario's tier, the ladder, the smallest
    tier, growth, the upgrade path and the verdict under every tier table of the last 12 months.

    `tier_table` picks the table version (default: the scenario's `tier_table`, else the one in force on
    `as_of`); `window` overrides the scenario's RPM/TPM window kind. The route moments and peak factors are
    computed once per call (or passed in: `moments` from an earlier plan's `.moments`, `peaks` from
    `peak_factors`, for the same scenario and catalog)."""
    from kimiplan.catalog.cards import load_catalog

    check_target(target)
    _check_percentile(percentile)
    catalog = catalog or load_catalog()
    if tier_table is not None:
        scenario = scenario.model_copy(update={"tier_table": tier_table})
    version = getattr(scenario, "tier_table", None)
    ctx = _PlanContext(scenario, catalog, moments, peaks, window)
    tier = rate_tier(scenario, catalog)
    fields: dict = {"scenario": scenario.name, "target": target, "percentile": percentile, "moments": ctx.moments}
    fields["tier"] = None if tier is None else tier.name
    limits = ctx.limits(tier)
    fields["demand"] = ctx.table(limits, percentile).copy()
    if tier is not None:
        fields.update(refusal_summary(fields["demand"]))
        fields["refusal_attributed"] = attributed_refusal(fields["refusal_by_limit"])
        fields["refusal_se"] = _refusal_se(ctx, limits)
        fields["week_average"] = _week_average(ctx, limits)
        total = ctx.groups[-1]
        conc = limits.get("concurrency")
        if conc is not None and total.share > 0:
            # At the busiest minute, for a client that paces itself on concurrency instead of taking 429s.
            load = scenario.traffic.mean_rps * total.share * ctx.peaks["peak_minute"] * total.lat
            fields["pacing_wait"] = {
                "concurrency": int(conc),
                "peak_load": float(load),
                **pacing_wait(int(conc), float(load), total.lat),
            }
        scale = ctx.max_scale(limits, target)
        fields["never_fits"] = ctx.floor_refusal(limits)
        fields["max_scale"] = scale
        fields["max_requests_per_second"] = scale * scenario.traffic.mean_rps
        fields["exhaustion"] = growth_exhaustion(scenario, scale)
        fields["near_scale"] = _near_scale(fields["demand"])
        fields["client_effect"] = _client_simulation(scenario, catalog, tier, ctx.peaks)
    try:
        tiers = _catalog_tiers(scenario, catalog, None, version)
        ladder = ctx.ladder(tiers, target, percentile).copy()
    except ConfigError:
        tiers, ladder = [], pd.DataFrame()
    fields["ladder"] = ladder
    fields["smallest_tier"] = smallest_tier(ladder) if len(ladder) else None
    tables = tier_tables(scenario, catalog)
    scenario_tier = tier.name if tier is not None and tier.provider == scenario.provider else None
    verdicts = [_table_verdict(ctx, t, scenario_tier, target, percentile) for t in tables]
    headline = tier.version if tier is not None and tier.version else (version or _in_force_version(tables))
    own = tier is None or tier.provider == scenario.provider  # an inline tier belongs to no catalog table
    for v in verdicts:
        v["headline"] = own and v["version"] == headline
    fields["by_tier_table"] = [{k: x for k, x in v.items() if not k.startswith("_")} for v in verdicts]
    fields["table_ladders"] = {v["version"]: v["_ladder"] for v in verdicts}
    fields["upgrade"] = _upgrade(ctx, ladder, tiers, fields["tier"], target) if len(ladder) else None
    fields["assumptions"] = _assumptions(scenario, ctx, tier, tables, headline if own else None, version)
    return CapacityPlan(**fields)


CLIENT_SIM_HOURS = 1.0


def _client_simulation(scenario, catalog, tier, peaks: dict) -> dict | None:
    """For a client that retries its 429s: the share of attempts refused and of requests that fail for good,
    from a short simulation at the busiest minute's rate held constant. No closed form holds here: a retry
    after a second or two finds the same full window or the same busy slots, so the refusals of a request's
    attempts are strongly correlated (the independent-retrial fixed point under-states the failures by up
    to 3x against the simulator), hence the simulation, which the plan names as its method."""
    client = scenario.simulation.client
    if client.kind != "retry" or not any(not r.batch for r in scenario.routes):
        return None
    from kimiplan.capacity.sim.simulate import SimSettings, simulate

    rate = scenario.traffic.mean_rps * peaks["peak_minute"]
    flat = scenario.traffic.model_copy(
        update={
            "requests_per_second": rate,
            "requests_per_day": None,
            "hourly_profile": None,
            "weekday_factors": None,
            "bursts": (),
            "events": (),
            "holidays": {},
            "monthly_growth": 0.0,
            "monthly_requests": None,
        }
    )
    sc = scenario.model_copy(update={"traffic": flat})
    s = simulate(sc, catalog, SimSettings.for_scenario(sc, hours=CLIENT_SIM_HOURS), tier=tier).summary
    return {
        "client": "retry",
        "max_retries": client.max_retries,
        "method": f"simulation: {CLIENT_SIM_HOURS:g} h at the busiest minute's rate ({rate:.3g} requests/s), "
        f"seed {s['seed']}, {s['requests']:,} requests",
        "attempt_refusal": s["rejected_fraction"]["total"],
        "failed": s["failed_fraction"],
        "attempts_per_request": s["attempts"] / max(s["requests"], 1),
    }


def _in_force_version(tables: list[dict]) -> str | None:
    live = [t["version"] for t in tables if t["in_force_on_as_of"]]
    return live[-1] if live else None


def _near_scale(demand: pd.DataFrame) -> float | None:
    """The traffic multiple at which the busiest minute's mean demand first passes 80 % of an enforced limit
    (`near_limit` in the forecast)."""
    tot = demand[(demand["route"] == "total") & demand["limit_value"].notna()]
    if tot.empty:
        return None
    util = (tot["peak_mean"] / tot["limit_value"]).max()
    return None if not util > 0 else float(NEAR_LIMIT / util)


def _refusal_se(ctx: _PlanContext, limits: dict) -> dict:
    """Standard error of the refusal per limit that the sampled parts of the moments carry: the mean latency
    (truncated completions) sets the concurrency load; everything else is exact."""
    g = ctx.groups[-1]
    out = dict.fromkeys(LIMITS, 0.0)
    if limits.get("concurrency") is None or g.share <= 0 or g.lat <= 0 or g.lat_se <= 0:
        return out
    base = ctx.refusal_by_limit(limits, 1.0)["concurrency"]
    up = _total_refusal_by_limit(
        [replace(g, lat=g.lat + g.lat_se)], ctx.scenario.traffic.mean_rps, ctx.peaks, limits, True, ctx.window
    )["concurrency"]
    out["concurrency"] = abs(up - base)
    return out


def _assumptions(scenario, ctx: _PlanContext, tier, tables: list[dict], headline: str | None, version) -> dict:
    w = scenario.simulation.window
    client = scenario.simulation.client
    m = ctx.moments
    sampled = (
        sorted(
            set(m.loc[m["latency_method"] != "exact", "route"]) | set(m.loc[m["reserved_method"] != "exact", "route"])
        )
        if "latency_method" in m
        else []
    )
    table = next((t for t in tables if t["version"] == headline), None)
    why = (
        "picked with --tier-table / the scenario's tier_table"
        if version is not None
        else "the table in force on the scenario's as_of"
        if table is not None
        else "the scenario's own tier"
    )
    return {
        "window": ctx.window,
        "window_method": (
            "sliding 60 s window: Erlang B (M/D/c/c) for single-call requests, Kaufman-Roberts stochastic "
            "knapsack for tokens and multi-call requests (request-size classes from the fixed-seed draws, at most "
            "64, keeping the mean size exact; tokens in units of at most 1/3,000 of the limit)"
            if ctx.window == "sliding"
            else "fixed calendar minute: exact Poisson overflow for requests, compound-Poisson token overflow "
            "(translated gamma on exact moments) for tokens"
        ),
        "tpd_reset_utc_offset_hours": w.tpd_reset_utc_offset_hours,
        "client": client.kind,
        "client_note": {
            "none": "refusals are final (429 not retried); the plan's refusal is the share of requests refused",
            "retry": "refusal figures are first attempts; the retrying client's attempts and failures come from a "
            "short simulation at the busiest minute (client_effect)",
            "pace": "a pacing client turns concurrency refusals into waits (pacing_wait, Erlang C)",
        }[client.kind],
        "arrivals": "Poisson at the busiest minute's rate (hourly profile x weekday x bursts); limits independent",
        "concurrency": "Erlang B on the exact mean latency (M/G/c/c is insensitive to the latency's law)",
        "moments": "exact from the distributions; sampled: truncated completions (latency) "
        + (f"and routes {', '.join(sampled)}" if sampled else "only")
        + f" ({MOMENT_SAMPLES:,} fixed-seed draws per route, standard error in refusal_se)",
        "tier_table": None
        if table is None
        else {
            "version": table["version"],
            "official": table["official"],
            "source": table["source"],
            "effective_from": table["effective_from"],
            "effective_to": table["effective_to"],
            "why": why,
        },
        "tier_official": None if tier is None else tier.official,
    }


def tier_headroom(
    scenario,
    catalog=None,
    percentile: float = DEFAULT_PERCENTILE,
    tiers=None,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> pd.DataFrame:
    """Tidy: for each tier and each limit it sets, the total peak demand, utilization and headroom."""
    from kimiplan.catalog.cards import load_catalog

    catalog = catalog or load_catalog()
    tiers = tiers if tiers is not None else catalog.tiers(scenario.provider, scenario.resolved_region, scenario.as_of)
    ctx = _PlanContext(scenario, catalog, moments, peaks)
    frames = []
    for t in tiers:
        d = ctx.table(ctx.limits(t), percentile)
        d = d[(d["route"] == "total") & d["limit_value"].notna()].copy()
        d.insert(0, "tier", t.name)
        frames.append(d.drop(columns=["route"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
