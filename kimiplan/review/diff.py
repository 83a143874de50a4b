"""`diff(base, head)`: the cost and capacity change between two scenarios, as a `PlanDiff` that renders itself
(a terminal table, a pull-request comment in Markdown, HTML in a notebook, JSON with a schema).

Both sides are planned (`capacity.plan`) and forecast (`finance.forecast`) with the same seed and common random
numbers: each random draw comes from a stream keyed by the day, the route and the month, so what the two
scenarios share draws the same numbers and the band of the difference is the spread of the change alone. Its
quantiles are taken on the per-path differences (not the difference of two bands) and mirrored, so that
`diff(b, a)` is exactly `-diff(a, b)` in every figure, and `diff(a, a)` exactly zero.

The monthly figures are those of each side's next full month (the first month that starts on or after its
`as_of`, `Forecast.next_full_month`): the month the report's cost card quotes. Headroom is the report's one
definition, the growth multiple on the scenario's tier (`CapacityPlan.headroom()`), written by the same function
(`capacity.result.growth_multiple`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import ConfigError
from kimiplan.model.scenario import Scenario
from kimiplan.review.causes import Cause, causes
from kimiplan.review.snapshot import DEFAULT_MONTHS, DEFAULT_PATHS, RouteFigures, Snapshot, evaluate

SCHEMA_VERSION = 2  # 2: headroom is the growth multiple (`growth_headroom`), the month the next full one
BAND = (0.1, 0.5, 0.9)


def mirrored_quantile(x: np.ndarray, q: float) -> float:
    """Quantile q of x (linear interpolation) computed so that quantile(-x, q) == -quantile(x, 1 - q) exactly:
    the upper half is the negated lower quantile of -x, and the median averages its two neighbours."""
    q = round(float(q), 12)  # so that 1 - 0.9 is 0.1 and the mirror meets the lower quantile exactly
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    if n == 0:
        return 0.0
    if q > 0.5:
        return -mirrored_quantile(-x, 1.0 - q)
    h = (n - 1) * q
    j = int(math.floor(h))
    f = h - j
    if j + 1 >= n or f == 0.0:
        return float(x[j])
    if q == 0.5:
        return float((x[j] + x[j + 1]) * 0.5)
    return float(x[j] + f * (x[j + 1] - x[j]))


def _same(a: RouteFigures, b: RouteFigures) -> bool:
    """The route's own figures are equal. A refusal moved by another route does not count: the limits are
    shared, so an account-wide refusal, and a route's own one (`refusal_by_route`), move with every route's
    traffic; a change to the route itself shows in its other figures."""
    x, y = asdict(replace(a, refusal=None, refusal_scope=None)), asdict(replace(b, refusal=None, refusal_scope=None))
    return all(_close(x[k], y[k]) for k in x)


def _close(u, v) -> bool:
    """Equal, floats to 12 significant digits: an unchanged route's month can differ in the last bit when other
    routes changed (support_chat's web_lookup in Dec 2026: 506.19273537448305 against ...831), not in any
    figure a person reads."""
    if isinstance(u, dict) and isinstance(v, dict):
        return u.keys() == v.keys() and all(_close(u[k], v[k]) for k in u)
    if isinstance(u, float) and isinstance(v, float):
        return u == v or math.isclose(u, v, rel_tol=1e-12, abs_tol=0.0) or (math.isnan(u) and math.isnan(v))
    return u == v


@dataclass(frozen=True)
class RouteDiff:
    name: str
    status: str  # added, removed, changed, unchanged
    before: RouteFigures | None
    after: RouteFigures | None


@dataclass(frozen=True)
class PlanDiff:
    """The change from `base` to `head`. `routes`: one row per route (head's order, then removed ones);
    `causes`: the changed fields and what they moved; `notes`: what differs in kind (provider, currency,
    model, dates) and still compares; `delta_paths`: head minus base spend of the next full month, per path."""

    base: Snapshot = field(repr=False)
    head: Snapshot = field(repr=False)
    currency: str
    cost_before: float
    cost_after: float
    band: dict[str, float]  # P10/P50/P90 of the per-path difference
    routes: tuple[RouteDiff, ...]
    causes: tuple[Cause, ...]
    notes: tuple[str, ...]
    settings: dict
    delta_paths: np.ndarray = field(repr=False)

    # -- figures
    @property
    def cost_delta(self) -> float:
        return self.cost_after - self.cost_before

    @property
    def cost_percent(self) -> float | None:
        """Relative to the base (None when the base costs nothing: a new scenario)."""
        return self.cost_delta / self.cost_before if self.cost_before > 0 else None

    @property
    def increases(self) -> bool:
        return self.cost_delta > 0

    @property
    def is_zero(self) -> bool:
        return self.cost_delta == 0 and all(v == 0 for v in self.band.values()) and not self.causes

    # -- renderings (kimiplan.review.render)
    def __repr__(self) -> str:
        name = self.head.account.name or self.base.account.name
        return f"<PlanDiff {name} ({self.base.account.label} → {self.head.account.label}): {self.lead()}>"

    def lead(self) -> str:
        from kimiplan.review.render import lead

        return lead(self)

    def summary(self) -> str:
        from kimiplan.review.render import to_text

        return to_text(self)

    def to_text(self) -> str:
        return self.summary()

    def to_markdown(self, *, title: str | None = None, marker: bool = True) -> str:
        from kimiplan.review.render import to_markdown

        return to_markdown(self, title=title, marker=marker)

    def _repr_html_(self) -> str:
        from kimiplan.review.render import to_html

        return to_html(self)

    def to_dict(self) -> dict:
        return to_document(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------- building


def _load(x: Scenario | str | Path | None, catalog: Catalog) -> tuple[Scenario | None, str | None]:
    if x is None or isinstance(x, Scenario):
        return x, None if x is None else x.name
    return load_scenario(x, catalog), str(x)


def comparability_notes(a: Snapshot, b: Snapshot) -> list[str]:
    """What differs in kind between the two sides; each still compares (one currency, one seed), and says so."""
    x, y = a.account, b.account
    if not x.exists:
        return [f"{x.label} has no scenario: every route of {y.label} is new"]
    if not y.exists:
        return [f"{y.label} has no scenario: every route of {x.label} is removed"]
    notes = []
    for what, u, v in (
        ("provider", x.provider, y.provider),
        ("region", x.region, y.region),
        ("model", x.model, y.model),
    ):
        if what == "region" and x.provider != y.provider:
            continue  # another provider has its own regions: the provider line says it
        if u != v:
            notes.append(f"different {what}: {u} → {v}; each side priced and limited by its own catalog entries")
    for side in (a, b):
        fc, sc = side.forecast, side.scenario
        card_cur = fc.cards[0].currency if fc is not None and fc.cards else side.account.currency
        if sc is None or card_cur == side.account.currency:
            continue
        cur, rates = side.account.currency, sc.exchange_rate
        rate = (
            f"{rates[cur]:,g} {cur} per {card_cur}"
            if cur in rates
            else f"{rates[card_cur]:,g} {card_cur} per {cur}"
            if card_cur in rates
            else "its exchange_rate"
        )
        notes.append(f"different currencies: {side.account.label} bills in {card_cur}, converted to {cur} at {rate}")
    if x.as_of != y.as_of:
        notes.append(f"different as_of dates: {x.as_of} → {y.as_of} (months {x.month} → {y.month})")
    if a.scenario is not None and b.scenario is not None and a.scenario.seed != b.scenario.seed:
        notes.append(f"different seeds: {a.scenario.seed} → {b.scenario.seed}; both drawn with seed {x.seed}")
    return notes


def diff(
    base: Scenario | Snapshot | str | Path | None,
    head: Scenario | Snapshot | str | Path | None,
    *,
    catalog: Catalog | None = None,
    paths: int = DEFAULT_PATHS,
    months: int = DEFAULT_MONTHS,
    seed: int | None = None,
    currency: str | None = None,
    base_label: str = "base",
    head_label: str = "head",
    base_origin: str | None = None,
    head_origin: str | None = None,
) -> PlanDiff:
    """The cost and capacity change from `base` to `head`: scenarios, files or bundled example names, None for
    a side that does not exist, or `Snapshot`s from `kimiplan.review.evaluate` (to reuse one side).

    Seeded: `seed` (default the smaller of the two scenarios' seeds, so the order of the arguments does not
    change the draws) drives both sides with common random numbers. Money is in `currency` (default the
    base's; the head is converted at its `exchange_rate`): `diff(b, a, currency=c)` is `-diff(a, b,
    currency=c)` in every figure."""
    catalog = catalog or load_catalog()
    given = [x for x in (base, head) if isinstance(x, Snapshot) and x.account.exists]
    sa, oa = (None, None) if isinstance(base, Snapshot) else _load(base, catalog)
    sb, ob = (None, None) if isinstance(head, Snapshot) else _load(head, catalog)
    scen = [s for s in (sa, sb) if s is not None] + [g.scenario for g in given]
    if not scen:
        raise ConfigError("diff needs a scenario on at least one side; both base and head are absent")
    if seed is None:
        seed = given[0].settings["seed"] if given else min(s.seed for s in scen)
    kw = {"catalog": catalog, "seed": seed, "paths": paths, "months": months}

    def side(x, s, label, origin, cur):
        if isinstance(x, Snapshot):
            want = {"seed": seed, "paths": paths, "months": months}
            got = {k: x.settings.get(k) for k in want}
            if x.account.exists and got != want:
                raise ConfigError(f"the {label} snapshot was evaluated with {got}, this diff needs {want}")
            if x.account.exists and cur is not None and x.account.currency != cur:
                raise ConfigError(f"the {label} snapshot is in {x.account.currency}, this diff needs {cur}")
            return x
        return evaluate(s, label, origin=origin, currency=cur, **kw)

    a = side(base, sa, base_label, base_origin or oa, currency)
    currency = currency or a.account.currency
    b = side(head, sb, head_label, head_origin or ob, currency)
    currency = currency or b.account.currency
    if a.account.currency is None:  # a new scenario: the base spends nothing, in head's currency
        a = Snapshot(replace(a.account, currency=currency), a.routes, origin=a.origin)
    pa = a.paths if a.paths is not None else np.zeros_like(b.paths)
    pb = b.paths if b.paths is not None else np.zeros_like(a.paths)
    delta = pb - pa
    band = {f"P{q * 100:g}": mirrored_quantile(delta, q) for q in BAND}
    names = [*b.routes, *(n for n in a.routes if n not in b.routes)]
    rows = []
    for n in names:
        rb, rh = a.routes.get(n), b.routes.get(n)
        status = "added" if rb is None else "removed" if rh is None else "unchanged" if _same(rb, rh) else "changed"
        rows.append(RouteDiff(n, status, rb, rh))
    return PlanDiff(
        base=a,
        head=b,
        currency=currency,
        cost_before=a.account.cost_per_month,
        cost_after=b.account.cost_per_month,
        band=band,
        routes=tuple(rows),
        causes=tuple(causes(a, b)),
        notes=tuple(dict.fromkeys(comparability_notes(a, b))),
        settings={"seed": seed, "paths": paths, "months": months, "common_random_numbers": True},
        delta_paths=delta,
    )


# ---------------------------------------------------------------- JSON document (docs/diff.schema.json)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


def _change(before, after, additive: bool) -> dict:
    """before/after/delta of one figure; a missing side counts as 0 only for additive figures (cost, volume)."""
    b0 = 0.0 if (before is None and additive) else before
    a0 = 0.0 if (after is None and additive) else after
    delta = None
    if isinstance(b0, (int, float)) and isinstance(a0, (int, float)) and not isinstance(b0, bool):
        delta = float(a0) - float(b0)
    return {"before": before, "after": after, "delta": delta}


def _route_doc(r: RouteDiff) -> dict:
    b, a = r.before, r.after
    get = lambda f, attr: None if f is None else getattr(f, attr)  # noqa: E731
    out = {"name": r.name, "status": r.status}
    for attr, additive in (
        ("cost_per_month", True),
        ("requests_per_day", True),
        ("cost_per_request", False),
        ("share", False),
        ("tpm_reservation", False),
        ("max_completion_tokens", False),
        ("api_calls", False),
        ("cached_tokens", False),
        ("peak_use", False),
        ("refusal", False),
    ):
        out[attr] = _change(get(b, attr), get(a, attr), additive)
    parts = (b or a).tokens.keys()
    out["tokens"] = {
        p: _change(None if b is None else b.tokens[p], None if a is None else a.tokens[p], False) for p in parts
    }
    out["binding_limit"] = {"before": get(b, "binding_limit"), "after": get(a, "binding_limit")}
    out["refusal_scope"] = (a or b).refusal_scope
    return out


def _side(s: Snapshot) -> dict:
    d = asdict(s.account)
    d["origin"] = s.origin
    return d


def _headroom_text(a) -> str | None:
    from kimiplan.capacity.result import growth_multiple

    return growth_multiple(a.growth_headroom) if a.exists and a.tier is not None else None


def to_document(d: PlanDiff) -> dict:
    """The `diff --format json` document (schema: docs/diff.schema.json, `schema_version` 2)."""
    a, b = d.base.account, d.head.account
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "kimiplan.diff",
        "currency": d.currency,
        "lead": d.lead(),
        "notes": list(d.notes),
        "base": _side(d.base),
        "head": _side(d.head),
        "cost": {
            **_change(d.cost_before, d.cost_after, True),
            "percent": d.cost_percent,
            "band": dict(d.band),
        },
        "capacity": {
            "tier": {"before": a.tier, "after": b.tier},
            "holds": {"before": a.holds, "after": b.holds},
            "binding_limit": {"before": a.binding_limit, "after": b.binding_limit},
            # The growth multiple (1.37: traffic can grow 1.37x before refusals pass the target; null without
            # a tier, and when unbounded: `headroom_text` says which), written as the report writes it.
            "growth_headroom": _change(a.growth_headroom, b.growth_headroom, False),
            "headroom_text": {"before": _headroom_text(a), "after": _headroom_text(b)},
            "headroom_sentence": {"before": a.headroom_sentence, "after": b.headroom_sentence},
            "busiest_minute_use": _change(a.busiest_minute_use, b.busiest_minute_use, False),
            "refusal": _change(a.refusal, b.refusal, False),
            "smallest_tier": {"before": a.smallest_tier, "after": b.smallest_tier},
        },
        "routes": [_route_doc(r) for r in d.routes],
        "causes": [
            {
                "group": c.group,
                "changes": [{"field": f.path, "before": f.before, "after": f.after} for f in c.changes],
                "effects": [
                    {"figure": e.figure, "route": e.route, "before": e.before, "after": e.after, "delta": e.delta}
                    for e in c.effects
                ],
            }
            for c in d.causes
        ],
        "settings": dict(d.settings),
    }
    return _jsonable(doc)
