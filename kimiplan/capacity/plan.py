"""Analytic capacity plan, the entry point: demand on every limit, refusal probabilities, the binding limit, the
smallest tier that holds under each tier table, the largest sustainable rate per tier, the month growth exhausts
it and the tier to move to. Closed forms, with the simulator (`kimiplan.capacity.sim`) as the check.

The capacity room, one concept per module, imports running one way (down this list):
- `plan` (here): the `plan()` verdict, its assumptions, the retrying client's short simulation;
- `ladder`: the tier ladder, tier tables, growth exhaustion and the upgrade path;
- `verdict`: refusal per limit and in total over the limits, the binding limit, the demand table, the largest
  sustainable scale, week and horizon averages;
- `demand`: route moments, peak factors and the demand model of each limit;
- `agent_calls` (agent runs as streams of calls), `loss` (the loss formulas), `moments`, `arrivals`.
Every name that used to live here is still importable from here.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from kimiplan.capacity.demand import (  # noqa: F401 (re-exported: the plan's old home)
    _SEED,
    _Counts,
    _demand,
    _Erlang,
    _Group,
    _groups,
    _limit_models,
    _limits_for,
    _loads,
    _Nothing,
    _Tokens,
    peak_factors,
    route_moments,
)
from kimiplan.capacity.ladder import (  # noqa: F401 (re-exported)
    _catalog_tiers,
    _headroom,
    _in_force_version,
    _ladder,
    _table_verdict,
    _upgrade,
    context_ladder,
    growth_exhaustion,
    smallest_tier,
    tier_headroom,
    tier_ladder,
    tier_tables,
)
from kimiplan.capacity.loss import (  # noqa: F401 (re-exported: the formulas' old home)
    CompoundPoisson,
    Sizes,
    erlang_b,
    erlang_b_servers,
    erlang_c,
    fixed_window_count_refusal,
    pacing_wait,
    poisson_overflow_fraction,
    sliding_window_refusal,
)
from kimiplan.capacity.moments import SAMPLES as MOMENT_SAMPLES
from kimiplan.capacity.result import NEAR_LIMIT, CapacityPlan
from kimiplan.capacity.verdict import (  # noqa: F401 (re-exported)
    DEFAULT_PERCENTILE,
    DEFAULT_TARGET,
    GRID,
    MINUTE_LIMITS,
    _check_percentile,
    _check_scale,
    _demand_frame,
    _max_scale,
    _minute_average,
    _PlanContext,
    _reduced_load,
    _refusal,
    _table_limits,
    _total_refusal,
    _total_refusal_by_limit,
    _week_average,
    _window,
    attributed_refusal,
    check_target,
    demand_table,
    horizon_refusal,
    max_sustainable_scale,
    refusal_summary,
    week_average_refusal,
)
from kimiplan.catalog.admission import LIMITS
from kimiplan.catalog.resolve import rate_tier
from kimiplan.errors import ConfigError

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
        ladder = context_ladder(ctx, tiers, target, percentile).copy()
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


def sdk_client_effect(scenario, catalog=None, tier=None, peaks: dict | None = None) -> dict | None:
    """`client_effect` as if the application called Kimi through the OpenAI SDK with its default retries
    (whatever client the scenario names): the share of requests that raise RateLimitError at the busiest
    minute. None without a tier or online routes."""
    from kimiplan.model.settings import ClientPolicy

    sim = scenario.simulation.model_copy(update={"client": ClientPolicy(kind="openai-sdk")})
    sc = scenario.model_copy(update={"simulation": sim})
    tier = tier if tier is not None else rate_tier(sc, catalog)
    if tier is None or all(v is None for v in tier.limits().values()):
        return None
    return _client_simulation(sc, catalog, tier, peaks if peaks is not None else peak_factors(sc))


def _client_simulation(scenario, catalog, tier, peaks: dict) -> dict | None:
    """For a client that retries its 429s: the share of attempts refused and of requests that fail for good,
    from a short simulation at the busiest minute's rate held constant. No closed form holds here: a retry
    after a second or two finds the same full window or the same busy slots, so the refusals of a request's
    attempts are strongly correlated (the independent-retrial fixed point under-states the failures by up
    to 3x against the simulator), hence the simulation, which the plan names as its method."""
    client = scenario.simulation.client
    if client.kind not in ("retry", "openai-sdk") or not any(not r.batch for r in scenario.routes):
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
        "client": client.kind,
        "max_retries": client.max_retries,
        "method": f"simulation: {CLIENT_SIM_HOURS:g} h at the busiest minute's rate ({rate:.3g} requests/s), "
        f"seed {s['seed']}, {s['requests']:,} requests",
        "attempt_refusal": s["rejected_fraction"]["total"],
        "failed": s["failed_fraction"],
        "attempts_per_request": s["attempts"] / max(s["requests"], 1),
        "failed_by_route": {k: v["failed_fraction"] for k, v in s["by_route"].items()},
    }


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
            "openai-sdk": "refusal figures are first attempts; with the OpenAI SDK's retries (2 by default, after "
            "about 0.5 s and 1 s) the share of requests that raise RateLimitError in the application comes from a "
            "short simulation at the busiest minute (client_effect.failed)",
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
