"""Analytic capacity plan: demand on every limit, refusal probabilities, the binding limit, the smallest tier
that holds, the largest sustainable rate per tier and the month growth exhausts it. Closed forms only.

Model (per account, at the busiest minute of a typical week):
- requests arrive as Poisson at the peak rate (hourly profile x weekday x bursts), so requests per minute are
  Poisson and reserved tokens per minute are compound Poisson (sum of a Poisson number of per-request
  reservations, input + max_completion_tokens); their tails use the exact Poisson law and a translated-gamma
  fit of the first three moments of the compound sum;
- requests in flight: Little's law L = lambda * E[latency] with latency = TTFT + completion tokens / decode
  speed; with no limit it is Poisson(L) (M/G/inf); with c slots, refusals follow Erlang B (M/G/c/c loss,
  insensitive to the latency distribution beyond its mean). Kimi refuses, it does not queue, so Erlang C does
  not apply.
- refusal fractions: concurrency exact (Erlang B); RPM exact for a fixed-minute window, E[(N-K)+]/E[N];
  TPM/TPD the share of reserved tokens over the limit, E[(S-K)+]/E[S]. Limits are treated as independent:
  total = 1 - prod(1 - p). The simulator checks the approximations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from kimiplan.catalog.admission import LIMITS
from kimiplan.catalog.resolve import price_card, rate_tier
from kimiplan.errors import ConfigError

DEFAULT_TARGET = 0.001  # refusals under 0.1 %
DEFAULT_PERCENTILE = 0.999
MOMENT_SAMPLES = 50_000
_SEED = 20260421


# ---------------------------------------------------------------- queueing formulas


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of M/G/c/c with c=`servers` and offered load `load` (Erlangs).

    Recursion B(0)=1, B(k) = a B(k-1) / (k + a B(k-1)): every step is a ratio in [0, 1], so it never overflows
    (unlike the a^c/c! form) and is exact to rounding for any c."""
    if servers < 0 or load < 0 or not math.isfinite(load):
        raise ConfigError(f"erlang_b: servers and load must be >= 0, got {servers}, {load}")
    b = 1.0
    for k in range(1, int(servers) + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(servers: int, load: float) -> float:
    """Probability that a request waits in M/M/c with c=`servers` and offered load `load` < c (Erlang C),
    from Erlang B: C = B / (1 - (a/c)(1 - B)). 1.0 when the load reaches the servers (the queue grows)."""
    if servers <= 0 or load >= servers:
        return 1.0
    b = erlang_b(servers, load)
    return b / (1.0 - (load / servers) * (1.0 - b))


def pacing_wait(servers: int, load: float, latency_s: float) -> dict:
    """A client that waits for a free slot instead of taking a 429 turns the concurrency limit into an M/M/c
    queue: P(wait) = Erlang C and mean wait C * latency / (c - a) (exact for exponential latency, an
    approximation otherwise). When the load reaches the limit the queue grows without bound: `stable` is False
    and the mean wait None."""
    c = erlang_c(servers, load)
    stable = load < servers
    return {"stable": stable, "p_wait": c, "mean_wait_s": c * latency_s / (servers - load) if stable else None}


def erlang_b_servers(load: float, target: float) -> int:
    """Smallest c with Erlang B(c, load) <= target."""
    if not 0 < target < 1:
        raise ConfigError(f"target must be in (0, 1), got {target}")
    b, c = 1.0, 0
    while b > target:
        c += 1
        b = load * b / (c + load * b)
    return c


def poisson_overflow_fraction(mean: float, limit: float) -> float:
    """E[(N - K)+] / E[N] for N ~ Poisson(mean): the share of requests a fixed window refuses."""
    if mean <= 0:
        return 0.0
    k = math.floor(limit)
    # E[(N-K)+] = mean * P(N >= K) - K * P(N >= K+1)
    excess = mean * stats.poisson.sf(k - 1, mean) - k * stats.poisson.sf(k, mean)
    return float(max(excess, 0.0) / mean)


@dataclass(frozen=True)
class CompoundPoisson:
    """S = sum of N iid X with N ~ Poisson(n); given the raw moments m1, m2, m3 of X."""

    n: float
    m1: float
    m2: float
    m3: float

    @property
    def mean(self) -> float:
        return self.n * self.m1

    @property
    def var(self) -> float:
        return self.n * self.m2

    @property
    def skew(self) -> float:
        return self.n * self.m3 / self.var**1.5 if self.var > 0 else 0.0

    def _gamma(self):
        # Translated gamma with the same mean, variance and skewness: S ~ x0 + Gamma(alpha, theta).
        g = max(self.skew, 1e-9)
        sd = math.sqrt(self.var)
        alpha = 4.0 / g**2
        theta = sd * g / 2.0
        return self.mean - alpha * theta, alpha, theta

    def quantile(self, q: float) -> float:
        if self.var <= 0:
            return self.mean
        x0, a, th = self._gamma()
        # The translated gamma can start below zero (x0 < 0) when the sum is small: demand never is.
        return max(float(x0 + stats.gamma.ppf(q, a, scale=th)), 0.0)

    def overflow_fraction(self, limit: float) -> float:
        """E[(S - K)+] / E[S]."""
        if self.mean <= 0:
            return 0.0
        if self.var <= 0:
            return max(self.mean - limit, 0.0) / self.mean
        x0, a, th = self._gamma()
        d = max(limit - x0, 0.0)
        excess = a * th * stats.gamma.sf(d, a + 1, scale=th) - d * stats.gamma.sf(d, a, scale=th)
        return float(max(excess, 0.0) / self.mean)


# ---------------------------------------------------------------- demand from a scenario


def route_moments(scenario, catalog=None, samples: int = MOMENT_SAMPLES) -> pd.DataFrame:
    """Per route: share, raw moments of reserved tokens and mean latency, from fixed-seed draws (the route
    specs are arbitrary mixtures, so these few numbers are the only sampled inputs of the plan)."""
    from kimiplan.workload.draws import draw_route, route_context

    card = price_card(scenario, catalog)
    rows = []
    for i, route in enumerate(scenario.routes):
        d = draw_route(route, samples, np.random.default_rng([_SEED, i]), route_context(scenario, route, card))
        r = d["reserved_tokens"].astype(np.float64)
        lat = d["latency_s"]
        rows.append(
            {
                "route": route.name,
                "share": route.share,
                "batch": route.batch,
                "reserved_mean": r.mean(),
                "reserved_m2": np.mean(r**2),
                "reserved_m3": np.mean(r**3),
                "latency_mean_s": lat.mean(),
                "latency_se_s": lat.std(ddof=1) / math.sqrt(samples),
                "input_mean": d["input_tokens"].mean(),
                "input_p99": float(np.quantile(d["input_tokens"], 0.99)),
                "completion_mean": d["completion_tokens"].mean(),
                # API calls per request: 1, or 1 + searches for `$web_search` round trips (each counts against RPM)
                "calls_mean": d["api_calls"].mean(),
                "calls_m2": np.mean(d["api_calls"].astype(np.float64) ** 2),
                "calls_m3": np.mean(d["api_calls"].astype(np.float64) ** 3),
                "max_completion_tokens": int(d["max_completion_tokens"][0]),
            }
        )
    return pd.DataFrame(rows)


def peak_factors(scenario) -> dict:
    """Peak-minute and peak-day rate relative to the mean rate, over one week from `as_of`."""
    from kimiplan.capacity.arrivals import rate_per_minute

    rate = rate_per_minute(scenario.traffic, 7 * 86400.0, scenario.as_of)
    mean = scenario.traffic.mean_rps
    per_day = rate.reshape(7, 1440).sum(axis=1) * 60.0
    return {
        "peak_minute": float(rate.max() / mean),
        "peak_day": float(per_day.max() / (mean * 86400.0)),
        "mean_week": float(rate.mean() / mean),
    }


def _limits_for(scenario, catalog, tier) -> dict:
    from kimiplan.catalog.admission import scenario_limits

    return scenario_limits(scenario, catalog, tier)


@dataclass(frozen=True)
class _Group:
    """One row group of the demand table (a route, or "total" over the online routes): its share of the
    traffic and the share-weighted moments of its requests. Independent of the rate, so it is computed once
    per call and reused for every rate, peak factor and tier."""

    name: str
    share: float
    m1: float
    m2: float
    m3: float
    lat: float
    calls: tuple = (1.0, 1.0, 1.0)  # raw moments of API calls per request

    def count_model(self, mean_requests: float) -> tuple:
        """Requests counted against RPM/RPD: Poisson, or compound Poisson when requests make several calls."""
        if self.calls[1] == 1.0:
            return ("poisson", mean_requests)
        return ("compound", CompoundPoisson(mean_requests, *self.calls))


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
        calls = tuple(float((w * g[c]).sum()) if c in g else 1.0 for c in ("calls_mean", "calls_m2", "calls_m3"))
        out.append(_Group(name, g["share"].sum(), m1, m2, m3, lat, calls))
    return out


def _loads(g: _Group, rps: float, peaks: dict):
    """(lam, lam_pk, day_n, conc_load) of a group at `rps`, or None when it carries no traffic."""
    lam = rps * g.share
    if lam <= 0:
        return None
    lam_pk = lam * peaks["peak_minute"]
    day_n = lam * 86400.0 * peaks["peak_day"]
    return lam, lam_pk, day_n, lam_pk * g.lat


def _limit_models(g: _Group, loads: tuple, daily: bool = True) -> dict:
    """The distribution of a group's demand on each limit at the busiest minute (day for TPD/RPD): Erlang
    load on concurrency, (compound) Poisson counts on RPM/RPD, compound Poisson tokens on TPM/TPD."""
    _, lam_pk, day_n, conc_load = loads
    models = {
        "concurrency": ("erlang", conc_load),
        "rpm": g.count_model(60 * lam_pk),
        "tpm": ("compound", CompoundPoisson(60.0 * lam_pk, g.m1, g.m2, g.m3)),
    }
    if daily:
        models.update(tpd=("compound", CompoundPoisson(day_n, g.m1, g.m2, g.m3)), rpd=g.count_model(day_n))
    return models


def _demand(groups: list[_Group], rps: float, peaks: dict, q: float) -> list[dict]:
    """Demand on each limit for each route and in total (rows of route, limit, mean, peak, percentile)."""
    rows = []
    for g in groups:
        loads = _loads(g, rps, peaks)
        if loads is None:
            if g.name == "total":  # no online traffic: zero demand on every limit, so tables keep their shape
                rows += [
                    {"route": "total", "limit": k, "mean": 0.0, "peak_mean": 0.0, "peak": 0.0, "_model": ("none", 0.0)}
                    for k in LIMITS
                ]
            continue
        lam, lam_pk, day_n, conc_load = loads
        models = _limit_models(g, loads)
        c1 = g.calls[0]
        means = {
            "concurrency": (lam * g.lat, conc_load),
            "rpm": (60 * lam * c1, 60 * lam_pk * c1),
            "tpm": (60 * lam * g.m1, models["tpm"][1].mean),
            "tpd": (86400 * lam * g.m1, models["tpd"][1].mean),
            "rpd": (86400 * lam * c1, day_n * c1),
        }
        rows += [
            {
                "route": g.name,
                "limit": k,
                "mean": means[k][0],
                "peak_mean": means[k][1],
                "peak": _model_quantile(m, q),
                "_model": m,
            }
            for k, m in models.items()
        ]
    return rows


def _model_quantile(model: tuple, q: float) -> float:
    kind, x = model
    return float(stats.poisson.ppf(q, x)) if kind in ("poisson", "erlang") else x.quantile(q)


def _refusal(model, limit: float | None) -> float:
    if limit is None:
        return 0.0
    kind, x = model
    if kind == "none":
        return 0.0
    if kind == "erlang":
        return erlang_b(int(limit), x)
    if kind == "poisson":
        return poisson_overflow_fraction(x, limit)
    return x.overflow_fraction(limit)


def _total_refusal_by_limit(groups: list[_Group], rps: float, peaks: dict, limits: dict, daily: bool = True) -> dict:
    """`refusal_summary(demand_table(...))["refusal_by_limit"]` without the table: only the "total" group's
    refusals, none of the percentiles (the same arithmetic, so the same numbers). `daily=False` leaves out
    TPD and RPD (for callers that evaluate those on the peak day only)."""
    g = groups[-1]  # _groups puts the total last
    loads = _loads(g, rps, peaks)
    if loads is None:  # no online traffic at all (every route batch): nothing is refused
        return dict.fromkeys(LIMITS if daily else ("concurrency", "rpm", "tpm"), 0.0)
    return {k: float(_refusal(m, limits.get(k))) for k, m in _limit_models(g, loads, daily).items()}


def _total_refusal(per: dict) -> float:
    return 1.0 - float(np.prod([1.0 - v for v in per.values()]))


def _table_limits(scenario, catalog, tier) -> dict:
    return (
        _limits_for(scenario, catalog, tier)
        if (tier is not None or scenario.tier is not None)
        else {k: None for k in LIMITS}
    )


def _demand_frame(groups: list[_Group], rps: float, peaks: dict, percentile: float, limits: dict) -> pd.DataFrame:
    rows = _demand(groups, rps, peaks, percentile)
    for r in rows:
        lim = limits.get(r["limit"])
        r["limit_value"] = lim
        r["utilization"] = r["mean"] / lim if lim else np.nan
        r["peak_utilization"] = r["peak"] / lim if lim else np.nan
        r["headroom"] = 1 - r["peak"] / lim if lim else np.nan
        r["refusal"] = _refusal(r["_model"], lim) if r["route"] == "total" else np.nan
        del r["_model"]
    df = pd.DataFrame(rows)
    df.insert(2, "percentile", percentile)
    return df


def _check_percentile(percentile: float) -> None:
    if not 0 < percentile < 1:
        raise ConfigError(f"percentile must be in (0, 1), got {percentile}")


def _check_scale(scale: float) -> None:
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")


def demand_table(
    scenario,
    catalog=None,
    tier=None,
    percentile: float = DEFAULT_PERCENTILE,
    scale: float = 1.0,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> pd.DataFrame:
    """Tidy: one row per (route incl. 'total', limit) with mean and peak demand, utilization, headroom and
    (for the total) the refusal fraction. `scale` multiplies the traffic (growth, what-ifs)."""
    _check_percentile(percentile)
    _check_scale(scale)
    limits = _table_limits(scenario, catalog, tier)
    moments = route_moments(scenario, catalog) if moments is None else moments
    peaks = peak_factors(scenario) if peaks is None else peaks
    return _demand_frame(_groups(moments), scenario.traffic.mean_rps * scale, peaks, percentile, limits)


def refusal_summary(demand: pd.DataFrame) -> dict:
    """Total refusal (limits independent), refusal per limit and the binding limit from a demand table."""
    tot = demand[demand["route"] == "total"].set_index("limit")
    per = {k: float(tot.loc[k, "refusal"]) for k in tot.index}
    total = _total_refusal(per)
    enforced = tot[tot["limit_value"].notna()]
    binding = None
    if len(enforced) and (enforced["peak"] > 0).any():  # zero demand (all Batch API): nothing binds
        # The binding limit refuses most; when none refuses measurably, it is the one with least headroom.
        binding = enforced["refusal"].idxmax() if enforced["refusal"].max() > 1e-12 else enforced["headroom"].idxmin()
    return {"refusal_by_limit": per, "refusal_total": total, "binding_limit": binding}


class _PlanContext:
    """What one plan call reuses: the scenario's demand groups and peak factors (computed once) and the
    results that depend only on a tier's limits (several tiers, or the scenario's own tier and its ladder
    entry, can share them). Lives for one call; nothing is kept between calls."""

    def __init__(self, scenario, catalog, moments: pd.DataFrame | None = None, peaks: dict | None = None):
        self.scenario, self.catalog = scenario, catalog
        self.moments = route_moments(scenario, catalog) if moments is None else moments
        self.peaks = peak_factors(scenario) if peaks is None else peaks
        self.groups = _groups(self.moments)
        self._tables: dict = {}
        self._scales: dict = {}

    def limits(self, tier) -> dict:
        return _table_limits(self.scenario, self.catalog, tier)

    def table(self, limits: dict, percentile: float) -> pd.DataFrame:
        """The demand table at today's traffic; shared, so callers must not modify it."""
        key = (tuple(limits.items()), percentile)
        if key not in self._tables:
            _check_percentile(percentile)
            self._tables[key] = _demand_frame(
                self.groups, self.scenario.traffic.mean_rps, self.peaks, percentile, limits
            )
        return self._tables[key]

    def refusal_total(self, limits: dict, scale: float) -> float:
        _check_scale(scale)
        per = _total_refusal_by_limit(self.groups, self.scenario.traffic.mean_rps * scale, self.peaks, limits)
        return _total_refusal(per)

    def max_scale(self, limits: dict, target: float) -> float:
        key = (tuple(limits.items()), target)
        if key not in self._scales:
            self._scales[key] = _max_scale(lambda s: self.refusal_total(limits, s) <= target)
        return self._scales[key]


def _max_scale(ok) -> float:
    lo, hi = 1e-6, 1.0
    if not ok(lo):
        return 0.0
    while ok(hi):
        lo, hi = hi, hi * 4
        if hi > 1e9:
            return math.inf  # nothing binds (no limits that traffic can reach)
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        if hi / lo < 1.001:
            break
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
    ctx = _PlanContext(scenario, catalog, moments, peaks)
    return ctx.max_scale(ctx.limits(tier), target)


def _week_average(ctx: _PlanContext, limits: dict) -> dict:
    from kimiplan.capacity.arrivals import rate_per_minute

    scenario = ctx.scenario
    rate = rate_per_minute(scenario.traffic, 7 * 86400.0, scenario.as_of) / scenario.traffic.mean_rps
    factors, counts = np.unique(np.round(rate, 9), return_counts=True)
    base = ctx.peaks
    per = {k: 0.0 for k in LIMITS}
    weight = 0.0
    for f, n in zip(factors, counts):
        if f <= 0:
            continue
        # Daily limits are evaluated on the peak day below, not per minute: leave them out here.
        by_limit = _total_refusal_by_limit(
            ctx.groups, scenario.traffic.mean_rps, {**base, "peak_minute": float(f)}, limits, daily=False
        )
        w = f * n  # requests in those minutes
        weight += w
        for k, v in by_limit.items():
            per[k] += w * v
    per = {k: (v / weight if k not in ("tpd", "rpd") else 0.0) for k, v in per.items()}
    tot = _total_refusal_by_limit(ctx.groups, scenario.traffic.mean_rps, base, limits)
    per["tpd"], per["rpd"] = tot["tpd"], tot["rpd"]
    return {"refusal_by_limit": per, "refusal_total": _total_refusal(per)}


def week_average_refusal(
    scenario, catalog=None, tier=None, moments: pd.DataFrame | None = None, peaks: dict | None = None
) -> dict:
    """Refusal averaged over a week's requests (each minute at its own rate), next to the peak-minute value
    the plan sizes for: a tier can refuse 40 % in a 15-minute burst and 1 % over the day."""
    ctx = _PlanContext(scenario, catalog, moments, peaks)
    return _week_average(ctx, ctx.limits(tier))


def _ladder(ctx: _PlanContext, tiers, target: float, percentile: float) -> pd.DataFrame:
    scenario = ctx.scenario
    rows = []
    for t in tiers:
        limits = ctx.limits(t)
        s = refusal_summary(ctx.table(limits, percentile))
        scale = ctx.max_scale(limits, target)
        row = {"tier": t.name, "provider": t.provider, **{k: getattr(t, k) for k in LIMITS}}
        row.update({f"refusal_{k}": v for k, v in s["refusal_by_limit"].items()})
        row.update(
            {
                "refusal_total": s["refusal_total"],
                "binding_limit": s["binding_limit"],
                "holds": s["refusal_total"] <= target,
                "max_scale": scale,
                "max_requests_per_second": scale * scenario.traffic.mean_rps,
                "max_requests_per_day": scale * scenario.traffic.per_day,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _catalog_tiers(scenario, catalog, tiers):
    tiers = tiers if tiers is not None else catalog.tiers(scenario.provider, scenario.resolved_region, scenario.as_of)
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

    catalog = catalog or load_catalog()
    tiers = _catalog_tiers(scenario, catalog, tiers)
    return _ladder(_PlanContext(scenario, catalog, moments, peaks), tiers, target, percentile)


def smallest_tier(ladder: pd.DataFrame) -> str | None:
    """The first tier (ascending) that holds the target, or None if none does."""
    ok = ladder[ladder["holds"]]
    return None if ok.empty else str(ok.iloc[0]["tier"])


def growth_exhaustion(scenario, max_scale: float, months: int = 36) -> dict:
    """The first month in which compound monthly growth takes traffic past `max_scale` x today."""
    g = scenario.traffic.monthly_growth
    if max_scale <= 1.0:
        return {"months": 0, "date": scenario.as_of, "growth": g, "max_scale": max_scale}
    if g <= 0 or math.isinf(max_scale):
        return {"months": None, "date": None, "growth": g, "max_scale": max_scale}
    m = math.floor(math.log(max_scale) / math.log1p(g)) + 1
    if m > months:  # past the horizon (slow growth can put it past any calendar year): no date
        return {"months": m, "date": None, "growth": g, "max_scale": max_scale}
    y, mo = divmod(scenario.as_of.month - 1 + m, 12)
    date = scenario.as_of.replace(year=scenario.as_of.year + y, month=mo + 1, day=1)
    return {"months": m, "date": date, "growth": g, "max_scale": max_scale}


def plan(
    scenario,
    catalog=None,
    target: float = DEFAULT_TARGET,
    percentile: float = DEFAULT_PERCENTILE,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> dict:
    """Everything `kimiplan plan` prints: demand vs the chosen tier, the ladder, the smallest tier, growth.

    The route moments and peak factors are computed once per call (or passed in: `moments` as returned in
    an earlier plan's "moments", `peaks` from `peak_factors`, for the same scenario and catalog), and each
    tier's sustainable scale once (the scenario's tier and its ladder entry share it)."""
    from kimiplan.catalog.cards import load_catalog

    catalog = catalog or load_catalog()
    ctx = _PlanContext(scenario, catalog, moments, peaks)
    moments = ctx.moments
    tier = rate_tier(scenario, catalog)
    out = {"scenario": scenario.name, "target": target, "percentile": percentile, "moments": moments}
    if tier is not None:
        limits = ctx.limits(tier)
        demand = ctx.table(limits, percentile).copy()
        out["tier"] = tier.name
        out["demand"] = demand
        out.update(refusal_summary(demand))
        out["week_average"] = _week_average(ctx, limits)
        total = ctx.groups[-1]
        conc = limits.get("concurrency")
        if conc is not None and total.share > 0:
            # At the busiest minute, for a client that paces itself on concurrency instead of taking 429s.
            load = scenario.traffic.mean_rps * total.share * ctx.peaks["peak_minute"] * total.lat
            out["pacing_wait"] = {
                "concurrency": int(conc),
                "peak_load": float(load),
                **pacing_wait(int(conc), float(load), total.lat),
            }
        scale = ctx.max_scale(limits, target)
        out["max_scale"] = scale
        out["max_requests_per_second"] = scale * scenario.traffic.mean_rps
        out["exhaustion"] = growth_exhaustion(scenario, scale)
    else:
        out["demand"] = ctx.table(ctx.limits(None), percentile).copy()
    try:
        ladder = _ladder(ctx, _catalog_tiers(scenario, catalog, None), target, percentile)
    except ConfigError:
        ladder = pd.DataFrame()
    out["ladder"] = ladder
    out["smallest_tier"] = smallest_tier(ladder) if len(ladder) else None
    return out


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
