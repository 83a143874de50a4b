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

import numpy as np
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
    _route_refusal,
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
        fields["refusal_by_route"] = _route_refusal(
            ctx.groups, scenario.traffic.mean_rps, ctx.peaks, limits, ctx.window
        )
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
        joint = joint_simulation(scenario, catalog, tier, fields, target, ctx.peaks, ctx.window, ctx.moments)
        if joint is not None:
            use_joint_simulation(fields, joint)
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
    if "_joint_method" in fields:
        fields["assumptions"]["limits_together"] = fields.pop("_joint_method")
    return CapacityPlan(**fields)


JOINT_REQUESTS = 100_000  # requests of each of the targeted simulation's three runs (the tie, each limit alone)
JOINT_RATIO = 0.2  # the lesser of the two refuses at least this share of the greater
JOINT_BLOCKS = 30  # blocks of consecutive minutes the control-variate regression runs over


def joint_simulation(
    scenario,
    catalog,
    tier,
    summary: dict,
    target: float,
    peaks: dict | None = None,
    window: str | None = None,
    moments: pd.DataFrame | None = None,
) -> dict | None:
    """Concurrency and a window limit refusing together at the busiest minute: a request holds a slot for its
    latency and a window place for 60 s, so there is no product form, and the Erlang fixed point that joins
    them over-states such ties by up to about 30 % against the simulator (tests/test_several_limits.py). There
    the headline figures come from a simulation of `JOINT_REQUESTS` requests at the busiest minute's rate held
    constant (the scenario's seed), corrected by control variates: the same arrivals and draws run against
    concurrency alone and against the window limits alone, whose shares are exact (Erlang B, the window
    knapsack), and the tie's share per limit is Y - beta.(X - exact), beta by least squares over blocks of
    consecutive minutes. The refusals of the tie follow those of each limit alone closely, so the variance is
    10 to 22 times smaller than the tie's own count at the same length (tests/test_several_limits.py measures
    the same estimator). None when the point does not need it (one limit dominates, or the total refusal is below
    a tenth of the target, where the fixed point's error is far below the target). `summary` is a
    `refusal_summary` (the sweeps use it too, so a sweep point equals its plan); `moments` the scenario's route
    moments (computed when not given)."""
    att = summary.get("refusal_attributed") or attributed_refusal(summary["refusal_by_limit"])
    window_kind = _window(scenario, window)
    window = max(att.get("rpm", 0.0), att.get("tpm", 0.0))
    conc = att.get("concurrency", 0.0)
    if window_kind != "sliding" or min(conc, window) <= 0 or min(conc, window) < JOINT_RATIO * max(conc, window):
        return None
    if summary["refusal_total"] < target / 10 or scenario.simulation.client.kind != "none":
        return None
    from kimiplan.capacity.sim.simulate import SimSettings, simulate

    peaks = peaks if peaks is not None else peak_factors(scenario)
    sc, rate = _flat_at_peak(scenario, peaks)
    hours = JOINT_REQUESTS / (rate * 3600.0)
    settings = SimSettings.for_scenario(sc, hours=hours)
    # The daily limits stay analytic (a day at the busiest minute's rate would over-state them).
    minute_tier = tier.model_copy(update={"tpd": None, "rpd": None})
    res = simulate(sc, catalog, settings, tier=minute_tier)
    s = res.summary
    minute = {k: float(s["rejected_fraction"].get(k, 0.0)) for k in MINUTE_LIMITS}
    how = "the tie's own count (too short a run for the control variates)"
    if len(res.per_minute) >= 4 * JOINT_BLOCKS:
        limits = _table_limits(scenario, catalog, tier)
        groups = _groups(moments if moments is not None else route_moments(scenario, catalog))
        alone = (("concurrency",), ("rpm", "tpm"))
        exact, runs = [], []
        for keep in alone:
            only = {k: (v if k in keep else None) for k, v in limits.items()}
            exact.append(
                _total_refusal(
                    _total_refusal_by_limit(groups, scenario.traffic.mean_rps, peaks, only, False, "sliding")
                )
            )
            drop = {k: None for k in LIMITS if k not in keep}
            runs.append(simulate(sc, catalog, settings, tier=tier.model_copy(update=drop)))
        minute = _control_variate(res, runs, exact, JOINT_BLOCKS)
        how = (
            "corrected by control variates (the same arrivals against concurrency alone and the window limits "
            "alone, whose shares are exact)"
        )
    return {
        "minute": minute,
        "method": f"concurrency and a window limit refuse together at the busiest minute (no product form: a "
        f"request holds a slot for its latency and a window place for 60 s), so the headline refusals come from "
        f"a simulation of {s['requests']:,} requests at the busiest minute's rate ({rate:.3g} requests/s, seed "
        f"{s['seed']}), {how}; the ladder and the sustainable traffic use the Erlang fixed point, which "
        f"over-states such ties (the safe side)",
    }


def _control_variate(joint, alone: list, exact: list[float], blocks: int) -> dict:
    """The share refused by each minute limit in `joint` (charged to the first limit broken), corrected by runs
    on the same arrivals (`alone`) whose total refused shares `exact` are known: Y_k - beta_k.(X - exact), each
    beta_k by least squares over `blocks` runs of consecutive minutes. Shares stay in [0, 1]."""

    def per_block(res, cols):
        pm = res.per_minute
        n = len(pm) // blocks * blocks
        att = pm["attempts"].to_numpy()[:n].reshape(blocks, -1).sum(axis=1)
        ref = pm[cols].to_numpy()[:n].sum(axis=1).reshape(blocks, -1).sum(axis=1)
        return att, ref

    xs, xbar = [], []
    for res in alone:
        a, r = per_block(res, [f"refused_{k}" for k in LIMITS])
        xs.append(r / np.maximum(a, 1))
        xbar.append(r.sum() / max(a.sum(), 1))
    x = np.column_stack(xs)
    xc = x - x.mean(axis=0)
    shift = np.asarray(xbar) - np.asarray(exact)
    out = {}
    for k in MINUTE_LIMITS:
        a, r = per_block(joint, [f"refused_{k}"])
        y = r / np.maximum(a, 1)
        beta = np.linalg.lstsq(xc, y - y.mean(), rcond=None)[0]
        out[k] = float(np.clip(r.sum() / max(a.sum(), 1) - beta @ shift, 0.0, 1.0))
    return out


def use_joint_simulation(fields: dict, joint: dict) -> None:
    """The headline refusals from the targeted simulation: per limit (back from the shares charged to each,
    in the admission order), total and the demand table's total rows; per-route refusals keep
    the knapsack's ratios between routes, scaled to the simulated total."""
    minute = joint["minute"]
    by, passed = dict(fields["refusal_by_limit"]), 1.0
    for k in MINUTE_LIMITS:
        by[k] = minute[k] / passed if passed > 0 else 0.0
        passed = max(passed - minute[k], 0.0)
    old_total = fields["refusal_total"]
    att = attributed_refusal(by)
    fields["refusal_by_limit"] = by
    fields["refusal_attributed"] = att
    fields["refusal_total"] = _total_refusal(by)
    # The binding limit stays the fixed point's, the one the ladder and the headroom name for this tier (one
    # definition whichever plan computes it); the simulated shares per limit are in refusal_by_limit.
    if fields.get("refusal_by_route") and old_total > 0:
        f = fields["refusal_total"] / old_total
        fields["refusal_by_route"] = {r: min(v * f, 1.0) for r, v in fields["refusal_by_route"].items()}
    d = fields.get("demand")
    if d is not None:
        for k, v in by.items():
            d.loc[(d["route"] == "total") & (d["limit"] == k), "refusal"] = v
    fields["_joint_method"] = joint["method"]


def _flat_at_peak(scenario, peaks: dict):
    """The scenario at the busiest minute's rate held constant (no profile, bursts, events or growth)."""
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
    return scenario.model_copy(update={"traffic": flat}), rate


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

    sc, rate = _flat_at_peak(scenario, peaks)
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
            "sliding 60 s window: RPM and TPM together as one stochastic knapsack (product form, exact for "
            "Poisson arrivals: a two-dimensional Kaufman-Roberts recursion when both limits can refuse, the "
            "one-dimensional knapsack or Erlang B when one cannot); request classes of (API calls, reserved "
            "tokens) from the fixed-seed draws, at most about 64, keeping each class's mean size; tokens in units "
            "of at most 1/3,000 of TPM (coarser when RPM is large); per-route refusals from the classes"
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
        "arrivals": "Poisson at the busiest minute's rate (hourly profile x weekday x bursts)",
        "limits_together": "RPM and TPM exactly together (sliding window); concurrency joined to them, and TPD/RPD "
        "to the minute limits, by the Erlang fixed point (each sees the load the others admit; holding times "
        "differ, so there is no product form)",
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
