"""The tier ladder and the upgrade path: every tier's refusal, binding limit and largest sustainable rate, the
smallest tier that holds, the month growth exhausts a tier, the tier tables of the last 12 months and the
verdict under each, and the tier to move to.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from kimiplan.capacity.verdict import (
    DEFAULT_PERCENTILE,
    DEFAULT_TARGET,
    _PlanContext,
    check_target,
    refusal_summary,
)
from kimiplan.catalog.admission import LIMITS
from kimiplan.errors import ConfigError


def context_ladder(ctx: _PlanContext, tiers, target: float, percentile: float) -> pd.DataFrame:
    """The ladder of `tiers` (shared within one plan call between the headline and the tier-table verdicts)."""
    key = (tuple(t.key for t in tiers), target, percentile)
    if key not in ctx._ladders:
        ctx._ladders[key] = _ladder(ctx, tiers, target, percentile)
    return ctx._ladders[key]


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
    ladder = context_ladder(ctx, tiers, target, percentile)
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


def _in_force_version(tables: list[dict]) -> str | None:
    live = [t["version"] for t in tables if t["in_force_on_as_of"]]
    return live[-1] if live else None


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
