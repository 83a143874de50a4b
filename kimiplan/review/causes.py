"""Why a plan changed: the scenario fields that differ between base and head, grouped by what they act on (one
route, the traffic, the prices, the tier), each group with the figures it moved.

Fields are compared on the validated scenarios (`model_dump`), so a change of spelling that means the same
(`2048` and `2048.0`, a default written out) is no change. A distribution is one field ("output lognormal
median 220, p95 650 -> median 400, p95 1,200"). When several fields of one group change together, the figures
they moved are the group's: a diff does not pretend to split them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kimiplan.capacity.result import growth_multiple
from kimiplan.review.snapshot import TOKEN_PARTS, Snapshot

# Top-level fields, by what they act on. Anything else (the name, the description, the seed) moves no figure.
PRICE_FIELDS = ("provider", "region", "model", "as_of", "tax_rate", "exchange_rate")
CAPACITY_FIELDS = ("tier", "tier_table", "simulation")
IGNORED = ("name", "description", "seed")
TOKEN_EPS = 0.5  # tokens per request: below this a mean moved by sampling noise, not by the change


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. "answer.max_completion_tokens", "traffic.requests_per_day", "routes" (a route added)
    before: Any  # JSON value (None: absent)
    after: Any


@dataclass(frozen=True)
class Effect:
    figure: str  # tpm_reservation, cost_per_month, tokens.output, requests_per_day, binding_limit, holds,
    # growth_headroom (the multiple; inf: unbounded) ...
    before: Any
    after: Any
    route: str | None = None

    @property
    def delta(self) -> float | None:
        if isinstance(self.before, (int, float)) and isinstance(self.after, (int, float)):
            if isinstance(self.before, bool) or isinstance(self.after, bool):
                return None
            return float(self.after) - float(self.before)
        return None


@dataclass(frozen=True)
class Cause:
    group: str  # "route answer", "traffic", "prices", "capacity settings", "routes", "other"
    changes: tuple[FieldChange, ...]
    effects: tuple[Effect, ...]


def _is_dist(v: Any) -> bool:
    return isinstance(v, dict) and "kind" in v


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> {dotted path: leaf}; a distribution and a list are leaves."""
    if isinstance(obj, dict) and not _is_dist(obj):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _dump(snap: Snapshot) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    if snap.scenario is None:
        return {}, {}
    data = snap.scenario.model_dump(mode="json", by_alias=True)
    routes = {
        r["name"]: _flatten({k: v for k, v in r.items() if k not in ("name", "description")})
        for r in data.pop("routes")
    }
    return _flatten(data), routes


def _field_changes(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[FieldChange]:
    out = []
    for k in dict.fromkeys([*a, *b]):
        va, vb = a.get(k), b.get(k)
        if va != vb:
            out.append(FieldChange(f"{prefix}{k}", va, vb))
    return out


def _num_effect(figure: str, before, after, route: str | None = None, eps: float = 0.0) -> list[Effect]:
    if before is None and after is None:
        return []
    if before is not None and after is not None and abs(float(after) - float(before)) <= eps:
        return []
    return [Effect(figure, before, after, route)]


def _route_effects(name: str, base: Snapshot, head: Snapshot) -> list[Effect]:
    rb, rh = base.routes.get(name), head.routes.get(name)
    out: list[Effect] = []
    if rb is not None and rh is not None:
        out += _num_effect("tpm_reservation", rb.tpm_reservation, rh.tpm_reservation, name, TOKEN_EPS)
        for part in TOKEN_PARTS:
            out += _num_effect(f"tokens.{part}", rb.tokens[part], rh.tokens[part], name, TOKEN_EPS)
        out += _num_effect("cost_per_month", rb.cost_per_month, rh.cost_per_month, name, 0.0)
        if rb.binding_limit != rh.binding_limit:
            out.append(Effect("route_binding_limit", rb.binding_limit, rh.binding_limit, name))
    elif rh is not None:  # added: what it brings
        out += [
            Effect("cost_per_month", 0.0, rh.cost_per_month, name),
            Effect("tpm_reservation", None, rh.tpm_reservation, name),
        ]
    elif rb is not None:  # removed: what it takes away
        out += [
            Effect("cost_per_month", rb.cost_per_month, 0.0, name),
            Effect("tpm_reservation", rb.tpm_reservation, None, name),
        ]
    return out


def _account_effects(base: Snapshot, head: Snapshot, *, cost: bool, volume: bool, capacity: bool) -> list[Effect]:
    a, b = base.account, head.account
    out: list[Effect] = []
    if volume:
        out += _num_effect("requests_per_day", a.requests_per_day, b.requests_per_day, eps=1e-9)
    if cost:
        out += _num_effect("cost_per_month", a.cost_per_month, b.cost_per_month)
    if capacity:
        out += _capacity_effects(base, head)
    return out


def _capacity_effects(base: Snapshot, head: Snapshot) -> list[Effect]:
    a, b = base.account, head.account
    out: list[Effect] = []
    if a.binding_limit != b.binding_limit:
        out.append(Effect("binding_limit", a.binding_limit, b.binding_limit))
    if a.holds != b.holds:
        out.append(Effect("holds", a.holds, b.holds))
    # A headroom move shows when it moves the figure a reader sees (two decimals of the multiple, the report's).
    if growth_multiple(a.growth_headroom) != growth_multiple(b.growth_headroom):
        out.append(Effect("growth_headroom", a.growth_headroom, b.growth_headroom))
    return out


def causes(base: Snapshot, head: Snapshot) -> list[Cause]:
    """The changed fields, grouped, each group with what it moved (see the module docstring)."""
    top_a, routes_a = _dump(base)
    top_b, routes_b = _dump(head)
    out: list[Cause] = []
    # Routes present on both sides: their own fields.
    for name in dict.fromkeys([*routes_b, *routes_a]):
        if name in routes_a and name in routes_b:
            ch = _field_changes(routes_a[name], routes_b[name], f"{name}.")
            if ch:
                out.append(Cause(f"route {name}", tuple(ch), tuple(_route_effects(name, base, head))))
    added = [n for n in routes_b if n not in routes_a]
    removed = [n for n in routes_a if n not in routes_b]
    if added or removed:
        ch = [FieldChange("routes", None, n) for n in added] + [FieldChange("routes", n, None) for n in removed]
        eff = [e for n in [*added, *removed] for e in _route_effects(n, base, head)]
        out.append(Cause("routes", tuple(ch), tuple(eff)))
    if base.scenario is None or head.scenario is None:
        return out
    top = _field_changes(top_a, top_b)
    groups: dict[str, list[FieldChange]] = {}
    for c in top:
        root = c.path.split(".")[0]
        if root in IGNORED:
            continue
        g = (
            "traffic"
            if root == "traffic"
            else "prices"
            if root in PRICE_FIELDS
            else "capacity settings"
            if root in CAPACITY_FIELDS
            else "other"
        )
        groups.setdefault(g, []).append(c)
    for g, ch in groups.items():
        eff = _account_effects(base, head, cost=g in ("traffic", "prices"), volume=g == "traffic", capacity=False)
        out.append(Cause(g, tuple(ch), tuple(eff)))
    return _with_capacity(out, base, head)


def _with_capacity(out: list[Cause], base: Snapshot, head: Snapshot) -> list[Cause]:
    """The account's capacity change (binding limit, verdict, headroom) belongs to the changes together: with
    one cause it is that cause's; with several it is a line of its own ("together")."""
    cap = _capacity_effects(base, head)
    if not cap:
        return out
    if len(out) == 1:
        return [Cause(out[0].group, out[0].changes, (*out[0].effects, *cap))]
    return [*out, Cause("together", (), tuple(cap))]
