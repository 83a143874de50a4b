"""The verdict over the limits: refusal per limit and in total, the binding limit, the demand table, and the
largest sustainable traffic, at the busiest minute or averaged over a week or a simulated horizon.

The per-minute limits (concurrency, RPM, TPM) thin each other's load (the Erlang fixed point); TPD/RPD are
evaluated on the peak day; total = 1 - prod(1 - p). `_PlanContext` holds what one plan call reuses.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kimiplan.capacity.demand import (
    _demand,
    _Group,
    _groups,
    _limit_models,
    _limits_for,
    _loads,
    _Nothing,  # noqa: F401 (used by the demand rows)
    peak_factors,
    route_moments,
)
from kimiplan.catalog.admission import LIMITS
from kimiplan.errors import ConfigError

DEFAULT_TARGET = 0.001  # refusals under 0.1 %
DEFAULT_PERCENTILE = 0.999


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
        self._ladders: dict = {}  # filled by capacity.ladder.context_ladder

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
