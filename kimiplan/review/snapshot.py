"""The figures of one scenario that a review compares: per route and for the account, read from the public
result objects (`capacity.plan` -> `CapacityPlan`, `finance.forecast` -> `Forecast`), never from their internals.

A `Snapshot` of an absent scenario (a file that does not exist at the base revision) has no routes, no cost and
no capacity verdict: every route of the other side is "added".
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.resolve import price_card
from kimiplan.errors import CatalogError, ConfigError, KimiplanError
from kimiplan.model.scenario import COMPONENTS, Scenario

# Tokens per request, in the order a reader meets them: the prompt's parts, then what the model writes.
TOKEN_PARTS = (*COMPONENTS, "reasoning", "output")
DEFAULT_PATHS = 4000
# The figures are those of the next full month (`Forecast.next_full_month`, the month the report's cost card
# quotes): the month of `as_of` is partly history unless `as_of` is its first day, so two months are forecast.
DEFAULT_MONTHS = 2


@dataclass(frozen=True)
class RouteFigures:
    """One route in the next full month. Token counts are means per request; `tpm_reservation` is what a
    request puts on TPM (input + `max_completion_tokens`, over all its API calls)."""

    name: str
    share: float
    batch: bool
    requests_per_day: float
    tokens: dict[str, float]  # TOKEN_PARTS -> mean tokens per request
    cached_tokens: float
    max_completion_tokens: int
    tpm_reservation: float
    api_calls: float
    cost_per_month: float
    cost_per_request: float
    binding_limit: str | None  # the limit this route loads most at the busiest minute
    peak_use: float | None  # this route's share of that limit at the busiest minute (its own requests only)
    refusal: float | None  # refused at the busiest minute: the route's own when the plan splits by route
    refusal_scope: str  # "route" or "account" (the plan gives no per-route figure)


@dataclass(frozen=True)
class AccountFigures:
    label: str
    exists: bool
    name: str | None
    provider: str | None
    region: str | None
    model: str | None
    currency: str | None
    tier: str | None
    as_of: dt.date | None
    seed: int | None
    month: str | None
    requests_per_day: float
    cost_per_month: float
    holds: bool | None  # None: no tier set (or no scenario)
    binding_limit: str | None
    # Headroom in the one definition (`CapacityPlan.headroom()` on the scenario's tier, as the report states it):
    # traffic can grow to `growth_headroom` x today's before refusals pass the target (inf: no limit is ever
    # reached), the busiest minute using `busiest_minute_use` of the binding limit; `headroom_sentence` in words.
    growth_headroom: float | None
    busiest_minute_use: float | None
    headroom_sentence: str | None
    refusal: float | None  # total refused at the busiest minute
    smallest_tier: str | None
    exhausted_on: dt.date | None
    target: float | None


@dataclass(frozen=True)
class Snapshot:
    """A scenario evaluated for review: `plan` and `forecast` are the library's own result objects (None for
    an absent scenario); `paths` the Monte Carlo spend of the next full month (`account.month`), one value per
    path."""

    account: AccountFigures
    routes: dict[str, RouteFigures]
    scenario: Scenario | None = field(default=None, repr=False)
    plan: object | None = field(default=None, repr=False)
    forecast: object | None = field(default=None, repr=False)
    paths: np.ndarray | None = field(default=None, repr=False)
    origin: str | None = None
    settings: dict = field(default_factory=dict)  # seed, paths, months, currency asked for (None: its own)


def _fin(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _headroom(cap) -> dict:
    """The account's headroom on the scenario's tier, in the one definition (`CapacityPlan.headroom()`); none
    without a tier."""
    h = cap.headroom() if cap.tier is not None else None
    if h is None:
        return {"growth_headroom": None, "busiest_minute_use": None, "headroom_sentence": None}
    scale = None if h.scale is None else float(h.scale)  # inf stays: no limit is ever reached
    return {"growth_headroom": scale, "busiest_minute_use": _fin(h.utilization), "headroom_sentence": h.sentence}


def _route_refusals(plan) -> dict[str, float]:
    """The plan's per-route refusal at the busiest minute when it gives one (`refusal_by_route`: a mapping of
    route -> share, or of route -> figures with a total), else empty: the account's figure stands in."""
    raw = getattr(plan, "refusal_by_route", None)
    out: dict[str, float] = {}
    if not isinstance(raw, Mapping):
        return out
    for name, v in raw.items():
        if isinstance(v, Mapping):
            v = next((v[k] for k in ("total", "refusal_total", "refusal") if k in v), None)
        try:
            x = _fin(v)
        except (TypeError, ValueError):
            x = None
        if x is not None:
            out[str(name)] = x
    return out


def _route_capacity(plan, name: str) -> tuple[str | None, float | None]:
    """The limit route `name` loads most at the busiest minute (peak demand over the limit), from the plan's
    demand table, and that share."""
    d = plan.demand
    rows = d[(d["route"] == name) & d["limit_value"].notna() & (d["limit_value"] > 0)]
    if rows.empty:
        return None, None
    use = (rows["peak"] / rows["limit_value"]).to_numpy(dtype=float)
    if not np.isfinite(use).any() or np.nanmax(use) <= 0:
        return None, 0.0
    i = int(np.nanargmax(use))
    return str(rows["limit"].iloc[i]), float(use[i])


def _forecast(scenario: Scenario, months: int, catalog: Catalog, paths: int, seed: int, currency, capacity):
    from kimiplan.finance.forecast import forecast

    return forecast(
        scenario,
        months,
        catalog=catalog,
        paths=paths,
        seed=seed,
        currency=currency,
        # Converting to the other side's currency: a rate for that currency in exchange_rate is quoted
        # against this scenario's card currency (the default); without one, this side's rates are taken
        # as quoted against the other side's currency (a file copied from it, its region changed).
        fx_base=currency if currency is not None and currency not in scenario.exchange_rate else None,
        capacity=capacity,
        common_random_numbers=True,
    )


def reforecast(snap: Snapshot, months: int, catalog: Catalog | None = None):
    """The snapshot's forecast over `months` months (its seed, paths and currency, common random numbers: the
    months it shares with the snapshot's forecast draw the same numbers), for policies over a longer horizon."""
    st = snap.settings
    return _forecast(
        snap.scenario,
        months,
        catalog or load_catalog(),
        st.get("paths", DEFAULT_PATHS),
        st.get("seed"),
        st.get("currency"),
        False,
    )


def evaluate(
    scenario: Scenario | None,
    label: str,
    *,
    catalog: Catalog | None = None,
    seed: int | None = None,
    paths: int = DEFAULT_PATHS,
    months: int = DEFAULT_MONTHS,
    currency: str | None = None,
    origin: str | None = None,
) -> Snapshot:
    """Plan and forecast `scenario` (common random numbers, `seed`) and read the figures a review compares.
    `currency` converts the forecast (the other side's currency, through the scenario's `exchange_rate`)."""
    if scenario is None:
        return empty_snapshot(label, origin)
    if not (isinstance(paths, int) and 2 <= paths <= 1_000_000):
        raise ConfigError(f"paths must be an integer in [2, 1,000,000], got {paths!r}")
    from kimiplan.capacity.plan import plan as capacity_plan

    catalog = catalog or load_catalog()
    seed = scenario.seed if seed is None else seed
    try:
        price_card(scenario, catalog)  # an unknown or retired model: one line naming the file, before any work
    except CatalogError as exc:
        raise ConfigError(f"{origin or label}: {exc}") from None
    cap = capacity_plan(scenario, catalog)
    try:
        fc = _forecast(scenario, months, catalog, paths, seed, currency, cap)
    except KimiplanError as exc:
        raise type(exc)(f"{origin or label}: {exc}") from None
    i = fc.next_full_month()
    month = fc.months[i]
    exp = fc.expected[fc.expected["month"] == month]
    cost_by_route = exp.groupby("route")["cost"].sum(min_count=1)
    month_requests = float(fc.monthly["requests"].iloc[i])
    days = int(fc.monthly["days"].iloc[i])
    units = fc.units.expected.set_index("route")
    moments = cap.moments.set_index("route") if cap.moments is not None else None
    by_route = _route_refusals(cap)
    routes: dict[str, RouteFigures] = {}
    for r in scenario.routes:
        u = units.loc[r.name]
        tokens = {c: float(u[c]) for c in COMPONENTS}
        tokens["reasoning"] = float(u["reasoning_tokens"])
        tokens["output"] = float(u["output_tokens"])
        cached = float(sum(u[f"{c}_cached"] for c in COMPONENTS))
        m = moments.loc[r.name] if moments is not None and r.name in moments.index else None
        budget = int(m["max_completion_tokens"]) if m is not None else int(r.max_completion_tokens or 0)
        reserved = float(m["reserved_mean"]) if m is not None else float(sum(tokens[c] for c in COMPONENTS) + budget)
        calls = float(m["calls_mean"]) if m is not None else float(u["api_calls"])
        cost = float(cost_by_route.get(r.name, np.nan))
        req = month_requests * r.share
        binding, use = _route_capacity(cap, r.name) if not r.batch else (None, None)
        refusal = by_route.get(r.name, cap.refusal_total) if by_route else cap.refusal_total
        routes[r.name] = RouteFigures(
            name=r.name,
            share=float(r.share),
            batch=bool(r.batch),
            requests_per_day=req / days if days else 0.0,
            tokens=tokens,
            cached_tokens=cached,
            max_completion_tokens=budget,
            tpm_reservation=reserved,
            api_calls=calls,
            cost_per_month=cost,
            cost_per_request=cost / req if req > 0 else 0.0,
            binding_limit=binding,
            peak_use=use,
            refusal=None if r.batch else _fin(refusal),
            refusal_scope="route" if r.name in by_route else "account",
        )
    head = cap.headline_table() or {}
    holds = None
    if cap.tier is not None:
        holds = bool(head["holds"]) if "holds" in head else bool((cap.refusal_total or 0.0) <= cap.target)
    acct = AccountFigures(
        label=label,
        exists=True,
        name=scenario.name,
        provider=scenario.provider,
        region=scenario.resolved_region,
        model=scenario.model,
        currency=fc.currency,
        tier=cap.tier,
        as_of=scenario.as_of,
        seed=seed,
        month=month,
        requests_per_day=month_requests / days if days else 0.0,
        cost_per_month=float(fc.monthly["expected"].iloc[i]),
        holds=holds,
        binding_limit=cap.binding_limit,
        **_headroom(cap),
        refusal=_fin(cap.refusal_total),
        smallest_tier=cap.smallest_tier,
        exhausted_on=head.get("exhausted_on") if head else (cap.exhaustion or {}).get("date"),
        target=cap.target,
    )
    settings = {"seed": seed, "paths": paths, "months": months, "currency": currency}
    return Snapshot(acct, routes, scenario, cap, fc, np.asarray(fc.paths[:, i], dtype=float), origin, settings)


def from_plan(cap, label: str = "plan") -> Snapshot:
    """The capacity figures of a `CapacityPlan` alone (no forecast: no cost, `forecast` None), for policies on
    capacity (`kp.check(plan, policy)`)."""
    head = cap.headline_table() or {}
    holds = None
    if cap.tier is not None:
        holds = bool(head["holds"]) if "holds" in head else bool((cap.refusal_total or 0.0) <= cap.target)
    by_route = _route_refusals(cap)
    names = list(cap.moments["route"]) if cap.moments is not None else []
    routes = {}
    for n in names:
        m = cap.moments[cap.moments["route"] == n].iloc[0]
        binding, use = _route_capacity(cap, n)
        routes[n] = RouteFigures(
            name=n,
            share=float(m["share"]),
            batch=bool(m["batch"]),
            requests_per_day=float("nan"),
            tokens={p: float("nan") for p in TOKEN_PARTS},
            cached_tokens=float("nan"),
            max_completion_tokens=int(m["max_completion_tokens"]),
            tpm_reservation=float(m["reserved_mean"]),
            api_calls=float(m["calls_mean"]),
            cost_per_month=float("nan"),
            cost_per_request=float("nan"),
            binding_limit=binding,
            peak_use=use,
            refusal=None if bool(m["batch"]) else _fin(by_route.get(n, cap.refusal_total)),
            refusal_scope="route" if n in by_route else "account",
        )
    acct = replace(
        empty_snapshot(label).account,
        exists=True,
        name=cap.scenario,
        tier=cap.tier,
        cost_per_month=float("nan"),
        holds=holds,
        binding_limit=cap.binding_limit,
        **_headroom(cap),
        refusal=_fin(cap.refusal_total),
        smallest_tier=cap.smallest_tier,
        target=cap.target,
    )
    return Snapshot(acct, routes, None, cap, None, None, cap.scenario)


def empty_snapshot(label: str, origin: str | None = None) -> Snapshot:
    """The side of a diff where the scenario does not exist: no routes, nothing spent, no verdict."""
    acct = AccountFigures(
        label=label,
        exists=False,
        name=None,
        provider=None,
        region=None,
        model=None,
        currency=None,
        tier=None,
        as_of=None,
        seed=None,
        month=None,
        requests_per_day=0.0,
        cost_per_month=0.0,
        holds=None,
        binding_limit=None,
        growth_headroom=None,
        busiest_minute_use=None,
        headroom_sentence=None,
        refusal=None,
        smallest_tier=None,
        exhausted_on=None,
        target=None,
    )
    return Snapshot(acct, {}, origin=origin)
