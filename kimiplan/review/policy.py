"""Guardrails on a plan or a diff: policies a team writes in YAML, checked by `check()` (and `kimiplan check`),
each verdict naming the policy, the route and the figures.

The simplest file::

    policies:
      - name: monthly-cap
        max_monthly_cost: 5000   # in the scenario's currency
        level: fail              # or warn

Thresholds carry their unit: money is a number in the scenario's currency or a string with it ("5000 USD",
"$5,000"); a percentage is a number of percent or "10 %"; a share (refusal) is a fraction in [0, 1] or "0.1 %";
a growth multiple (`min_growth_headroom`, the report's one definition of headroom) is a number of at least 1 or
"1.2x". A threshold in another unit than its key's (a currency for a percentage, a share above 1, "5000 CNY" on
a scenario billed in USD) is an error naming the file, the key and the value.

Monthly figures are the next full month's (the month the report's cost card quotes, as in `diff`); with
`horizon_months: N` the monthly cost caps hold for each of the N months from it. "The balance must last N
months" forecasts N months and passes when at most 10 % of the Monte Carlo paths run out within them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from kimiplan.capacity.result import LIMIT_LABELS, growth_multiple
from kimiplan.errors import ConfigError, KimiplanError, validate
from kimiplan.io.formats import CURRENCY_SYMBOLS, money, percent

RUN_OUT_ALLOWED = 0.1  # "the balance lasts N months": at most this share of paths runs out within them


class PolicyViolation(KimiplanError):
    """A fail-level policy failed; `.result` holds every verdict."""

    def __init__(self, result: CheckResult):
        self.result = result
        super().__init__("; ".join(v.line for v in result.verdicts if v.status == "fail"))


# ---------------------------------------------------------------- units


class Amount(NamedTuple):
    value: float
    currency: str | None  # None: the scenario's currency


_NUM = r"[0-9][0-9,_]*(?:\.[0-9]+)?|\.[0-9]+"
_SYMBOL_CODES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "CNY"}


def _finite(x: float, what: str) -> float:
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{what} must be a finite number >= 0")
    return float(x)


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("_", ""))


def _as_money(v: Any) -> Amount:
    if isinstance(v, bool) or v is None:
        raise ValueError("an amount of money: a number in the scenario's currency, or e.g. '5000 USD'")
    if isinstance(v, (int, float)):
        return Amount(_finite(float(v), "an amount of money"), None)
    if isinstance(v, str):
        s = v.strip()
        if s.endswith("%"):
            raise ValueError("an amount of money, not a percentage (for a relative threshold use a *_percent key)")
        m = re.fullmatch(rf"([$€£¥])?\s*({_NUM})\s*([A-Za-z]{{3}})?", s)
        if m and not (m.group(1) and m.group(3)):
            code = m.group(3).upper() if m.group(3) else _SYMBOL_CODES.get(m.group(1) or "")
            if m.group(3) and code not in CURRENCY_SYMBOLS and not code.isalpha():
                raise ValueError("an amount of money with an ISO currency code, e.g. '5000 USD'")
            return Amount(_finite(_number(m.group(2)), "an amount of money"), code)
    raise ValueError("an amount of money: a number in the scenario's currency, or e.g. '5000 USD'")


def _as_percent(v: Any) -> float:
    """A percentage -> a fraction (10 or '10 %' -> 0.10)."""
    if isinstance(v, bool) or v is None:
        raise ValueError("a percentage: a number of percent (10) or '10 %'")
    if isinstance(v, (int, float)):
        return _finite(float(v), "a percentage") / 100.0
    if isinstance(v, str):
        m = re.fullmatch(rf"\s*({_NUM})\s*%\s*", v)
        if m:
            return _finite(_number(m.group(1)), "a percentage") / 100.0
        if re.search(r"[$€£¥]|[A-Za-z]{3}", v):
            raise ValueError("a percentage, not an amount of money (for money use max_increase)")
    raise ValueError("a percentage: a number of percent (10) or '10 %'")


def _as_share(v: Any) -> float:
    """A share in [0, 1] (0.001) or a percentage string ('0.1 %')."""
    if isinstance(v, bool) or v is None:
        raise ValueError("a share in [0, 1] (0.001 = 0.1 %) or a percentage such as '0.1 %'")
    if isinstance(v, (int, float)):
        x = _finite(float(v), "a share")
        if x > 1:
            raise ValueError(f"a share in [0, 1] (0.001 = 0.1 %); for {v:g} percent write '{v:g} %'")
        return x
    if isinstance(v, str):
        m = re.fullmatch(rf"\s*({_NUM})\s*%\s*", v)
        if m:
            x = _number(m.group(1)) / 100.0
            if x > 1:
                raise ValueError("a share cannot exceed 100 %")
            return x
    raise ValueError("a share in [0, 1] (0.001 = 0.1 %) or a percentage such as '0.1 %'")


def _as_count(unit: str):
    def parse(v: Any) -> float:
        if isinstance(v, bool) or v is None:
            raise ValueError(f"a number of {unit}")
        if isinstance(v, (int, float)):
            return _finite(float(v), f"a number of {unit}")
        if isinstance(v, str):
            m = re.fullmatch(rf"\s*({_NUM})\s*({unit[0]}|{unit[:-1]}|{unit})?\s*", v, flags=re.I)
            if m:
                return _finite(_number(m.group(1)), f"a number of {unit}")
        raise ValueError(f"a number of {unit}, e.g. 30 or '30 {unit}'")

    return parse


Money = Annotated[Amount, BeforeValidator(_as_money)]
Percent = Annotated[float, BeforeValidator(_as_percent)]
Share = Annotated[float, BeforeValidator(_as_share)]
Days = Annotated[float, BeforeValidator(_as_count("days"))]


def _whole_months(v: Any) -> float:
    x = _as_count("months")(v)
    if not float(x).is_integer() or not 1 <= x <= 120:
        raise ValueError("a whole number of months from 1 to 120")
    return x


Months = Annotated[float, BeforeValidator(_whole_months)]


def _as_multiple(v: Any) -> float:
    """A growth multiple (1.2, "1.2x", "1.2×"): traffic can grow to that many times today's before refusals
    pass the target. A percentage or a number under 1 reads as a share of room: the message says what to write."""
    hint = "a growth multiple of at least 1, e.g. 1.2 (traffic can grow 1.2× before refusals pass the target)"
    if isinstance(v, bool) or v is None:
        raise ValueError(hint)
    if isinstance(v, str):
        t = v.strip()
        m = re.fullmatch(rf"({_NUM})\s*%", t)
        if m:
            x = _number(m.group(1)) / 100.0
            raise ValueError(f"{hint}, not a percentage: for {percent(x, trim=True)} more traffic write {1 + x:g}")
        m = re.fullmatch(rf"({_NUM})\s*[x×]?", t, flags=re.I)
        if not m:
            raise ValueError(hint)
        v = _number(m.group(1))
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(hint)
    if v < 1:
        raise ValueError(f"{hint}; {v:g} reads as a share: for {percent(v, trim=True)} more traffic write {1 + v:g}")
    return float(v)


Multiple = Annotated[float, BeforeValidator(_as_multiple)]

THRESHOLDS = (
    "max_monthly_cost",
    "max_monthly_cost_p90",
    "max_increase",
    "max_increase_percent",
    "max_refusal",
    "min_growth_headroom",
    "tier_must_hold",
    "min_balance_months",
    "max_calibration_age_days",
)


class Policy(BaseModel):
    """One guardrail: a name, a level and one or more thresholds (all must pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    level: Literal["fail", "warn"] = "fail"
    routes: tuple[str, ...] | None = Field(default=None, description="per-route thresholds on these routes only")
    max_monthly_cost: Money | None = Field(default=None, description="expected spend of the next full month")
    max_monthly_cost_p90: Money | None = Field(default=None, description="P90 of the next full month's spend")
    max_increase: Money | None = Field(default=None, description="monthly cost increase against the base")
    max_increase_percent: Percent | None = Field(default=None, description="the same, relative to the base")
    max_refusal: Share | None = Field(default=None, description="per route, refused at the busiest minute")
    min_growth_headroom: Multiple | None = Field(
        default=None, description="headroom on the scenario's tier: traffic can grow this many times today's"
    )
    tier_must_hold: bool | None = None
    balance: Money | None = Field(default=None, description="prepaid balance today (with min_balance_months)")
    min_balance_months: Months | None = None
    max_calibration_age_days: Days | None = None
    horizon_months: Months | None = Field(
        default=None, description="the monthly cost caps hold for each of N months from the next full month"
    )

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        if (self.min_balance_months is None) != (self.balance is None):
            raise ValueError(f"policy {self.name!r}: min_balance_months and balance go together")
        if self.horizon_months is not None and self.max_monthly_cost is None and self.max_monthly_cost_p90 is None:
            raise ValueError(
                f"policy {self.name!r}: horizon_months applies to max_monthly_cost or max_monthly_cost_p90; add one"
            )
        if not any(getattr(self, k) is not None for k in THRESHOLDS):
            raise ValueError(f"policy {self.name!r} sets no threshold; give one of {', '.join(THRESHOLDS)}")
        return self


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[Policy, ...] = Field(min_length=1)


def _yaml_value(v: Any) -> str:
    """A value as it would be written back in the YAML file."""
    if isinstance(v, str):
        return repr(v) if any(c in v for c in ":#{}[],") else v
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _flow(fields: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in fields.items()) + "}"


def _share_or_none(v: Any) -> float | None:
    try:
        return _as_share(v)
    except ValueError:
        return None


def _growth_for_share(v: Any) -> float:
    """The growth multiple to write for a retired `min_headroom` share h: 1 / (1 - h), the traffic at which the
    busiest minute would fill the limit (1.2 when h does not read as a share)."""
    share = _share_or_none(v)
    return round(1 / (1 - share), 2) if share is not None and share < 1 else 1.2


def _check_shape(data: Any, origin: str) -> None:
    """A file that is not `policies:` -> a list of mappings (thresholds at the top level, a mapping instead of a
    list, a retired key) -> one line naming the file, the field and what to write instead."""
    policy_keys = set(Policy.model_fields) | {"min_headroom"}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: a policy file is a mapping with a `policies:` list, got {type(data).__name__}; write e.g. "
            "policies: [{name: monthly-cap, max_monthly_cost: 5000}]"
        )
    if "policies" not in data:
        flat = {k: v for k, v in data.items() if k in policy_keys}
        if flat:
            example = {"name": data.get("name", "my-policy"), **{k: v for k, v in flat.items() if k != "name"}}
            if "min_headroom" in example:  # the retired key: the example gives its replacement
                example["min_growth_headroom"] = _growth_for_share(example.pop("min_headroom"))
            k = next(k for k in flat if k != "name") if len(flat) > 1 or "name" not in flat else "name"
            raise ConfigError(
                f"{origin}: field {k} ({_yaml_value(flat[k])}) is at the top level; policies go in a `policies:` "
                f"list, one mapping per policy with a name: write policies: [{_flow(example)}]"
            )
        return
    pol = data["policies"]
    if isinstance(pol, dict):
        example = {"name": "my-policy", **pol} if "name" not in pol else pol
        raise ConfigError(
            f"{origin}: field policies is a mapping; it is a list, one item (`- name: ...`) per policy: write "
            f"policies: [{_flow(example)}]"
        )
    if not isinstance(pol, list):
        return
    for i, p in enumerate(pol):
        if not isinstance(p, dict) or "min_headroom" not in p:
            continue
        v, name = p["min_headroom"], p.get("name", f"#{i + 1}")
        instead = f"min_growth_headroom: {_growth_for_share(v):g}"
        share = _share_or_none(v)
        if share is not None and share < 1:
            instead += f" (the traffic that fills the limit at the busiest minute: 1 / (1 − {share:g}))"
        raise ConfigError(
            f"{origin}: policy {name!r} field min_headroom: {_yaml_value(v)} is no longer read: headroom is the "
            f"growth multiple the report states (traffic can grow 1.37× before refusals pass the target), not a "
            f"share of the binding limit; write {instead}"
        )


def load_policy(source: str | Path | dict | PolicyFile | Policy) -> tuple[PolicyFile, str]:
    """A policy file (YAML/JSON path), a mapping or a model -> (PolicyFile, origin for messages)."""
    if isinstance(source, PolicyFile):
        return source, "<policy>"
    if isinstance(source, Policy):
        return PolicyFile(policies=(source,)), "<policy>"
    if isinstance(source, dict):
        _check_shape(source, "<policy>")
        return validate(PolicyFile, source, "<policy>"), "<policy>"
    from kimiplan.model.loader import load_file

    origin = str(source)
    data = load_file(source, "policy file")
    _check_shape(data, origin)
    pf = validate(PolicyFile, data, origin)
    names = [p.name for p in pf.policies]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{origin}: policy names must be unique, {dup} repeat")
    return pf, origin


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    policy: str
    level: str  # fail / warn
    status: str  # pass, fail, warn (violated at warn level), error (could not evaluate)
    check: str  # the threshold key
    message: str
    route: str | None = None
    value: float | str | None = None
    threshold: float | str | None = None
    scenario: str | None = None

    @property
    def line(self) -> str:
        where = f" [{self.scenario}]" if self.scenario else ""
        return f"{self.policy}: {self.message}{where}"


@dataclass(frozen=True)
class CheckResult:
    verdicts: tuple[Verdict, ...]
    origin: str = "<policy>"
    silent: bool = False  # --only-increases and the cost did not rise, nothing failed
    diffs: tuple = field(default=(), repr=False)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "fail"]

    @property
    def warned(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "warn"]

    @property
    def errors(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "error"]

    @property
    def passed(self) -> bool:
        return not self.failed and not self.errors

    def exit_code(self, warn_exit: int = 0) -> int:
        """1 any failure; else 3 anything not evaluated; else `warn_exit` on warnings; else 0."""
        if self.failed:
            return 1
        if self.errors:
            return 3
        if self.warned:
            return warn_exit
        return 0

    def __repr__(self) -> str:
        head = self.summary().splitlines()[0]
        return f"<CheckResult {'passed' if self.passed else 'failed'}: {head}; summary() for the verdicts>"

    def summary(self) -> str:
        if not self.verdicts:
            return "no policy applied"
        n = {s: sum(v.status == s for v in self.verdicts) for s in ("pass", "warn", "fail", "error")}
        head = (
            f"{n['fail']} failed, {n['warn']} warned, {n['error']} could not be evaluated, {n['pass']} passed "
            f"({self.origin})"
        )
        order = {"fail": 0, "error": 1, "warn": 2, "pass": 3}
        lines = [head]
        for v in sorted(self.verdicts, key=lambda v: order[v.status]):
            lines.append(f"{v.status.upper():5s} {v.line}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        icon = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "error": "❓ not evaluated"}
        from kimiplan.review.render import md_table

        rows = [
            [icon[v.status], v.policy, v.scenario or "", v.route or "account", v.message]
            for v in sorted(self.verdicts, key=lambda v: ("fail", "error", "warn", "pass").index(v.status))
        ]
        return md_table(["verdict", "policy", "scenario", "route", "figures"], rows) + "\n"

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "kind": "kimiplan.check",
            "origin": self.origin,
            "passed": self.passed,
            "exit_code": self.exit_code(),
            "verdicts": [dict(v.__dict__) for v in self.verdicts],
        }

    def _repr_html_(self) -> str:
        from kimiplan.review.render import markdown_to_html

        return markdown_to_html(f"**{self.summary().splitlines()[0]}**\n\n" + self.to_markdown())


# ---------------------------------------------------------------- evaluation


def _amount(a: Amount, currency: str, origin: str, policy: Policy, key: str) -> float:
    if a.currency is not None and a.currency != currency:
        raise ConfigError(
            f"{origin}: policy {policy.name!r} key {key}: {a.value:,g} {a.currency} is not in the scenario's "
            f"currency {currency} (write {key}: {a.value:g} or '{a.value:g} {currency}')"
        )
    return a.value


class _Subject:
    """What a policy reads: the head's figures, and the diff when there is a base."""

    def __init__(self, snap, diff=None):
        self.snap = snap
        self.diff = diff
        self.name = snap.origin or snap.account.name or snap.account.label


def _subjects(x, catalog=None) -> list[_Subject]:
    from kimiplan.model.scenario import Scenario
    from kimiplan.review.diff import PlanDiff
    from kimiplan.review.snapshot import Snapshot, evaluate

    if isinstance(x, (list, tuple)):
        return [s for item in x for s in _subjects(item, catalog)]
    if isinstance(x, PlanDiff):
        return [_Subject(x.head, x)]
    if isinstance(x, Snapshot):
        return [_Subject(x)]
    if isinstance(x, (Scenario, str, Path)):
        from kimiplan.catalog.resolve import load_scenario

        sc = x if isinstance(x, Scenario) else load_scenario(x, catalog)
        return [_Subject(evaluate(sc, "scenario", catalog=catalog, origin=None if isinstance(x, Scenario) else str(x)))]
    from kimiplan.capacity.result import CapacityPlan
    from kimiplan.finance.forecast import Forecast

    if isinstance(x, CapacityPlan):
        from kimiplan.review.snapshot import from_plan

        return [_Subject(from_plan(x))]
    if isinstance(x, Forecast):
        return [_Subject(evaluate(x.scenario, "scenario", catalog=catalog))]
    raise ConfigError(
        f"check takes a scenario, a file, a PlanDiff, a CapacityPlan or a Forecast, got {type(x).__name__}"
    )


def _calibration_created(path: str, where: str | None) -> dt.date:
    import json

    p = Path(path)
    if not p.is_absolute() and where and not p.exists():
        p = Path(where).parent / p
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        created = data["created"]
        return dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")).date()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"calibration file {str(p)!r}: no readable `created` date ({exc})") from None


def _evaluate_policy(p: Policy, s: _Subject, origin: str, today: dt.date, catalog) -> list[Verdict]:
    snap, d = s.snap, s.diff
    acct = snap.account
    out: list[Verdict] = []
    bad = "fail" if p.level == "fail" else "warn"

    def verdict(key, ok, message, route=None, value=None, threshold=None):
        out.append(Verdict(p.name, p.level, "pass" if ok else bad, key, message, route, value, threshold, s.name))

    def error(key, message, route=None):
        out.append(Verdict(p.name, p.level, "error", key, message, route, None, None, s.name))

    cur = acct.currency or (d.currency if d is not None else None)
    if acct.exists and snap.forecast is None:  # a CapacityPlan alone: capacity figures only
        for k in ("max_monthly_cost", "max_monthly_cost_p90", "min_balance_months", "max_calibration_age_days"):
            if getattr(p, k) is not None:
                error(k, f"{k} needs the scenario (a CapacityPlan has no cost): kp.check(scenario or diff, policy)")
        p = p.model_copy(
            update={"max_monthly_cost": None, "max_monthly_cost_p90": None, "min_balance_months": None,
                    "balance": None, "max_calibration_age_days": None}
        )  # fmt: skip
    fmt = lambda v: money(v, cur, decimals=0 if abs(v) >= 100 else 2)  # noqa: E731
    if not acct.exists:
        keys = [
            k for k in THRESHOLDS if getattr(p, k) is not None and k not in ("max_increase", "max_increase_percent")
        ]
        for k in keys:
            verdict(k, True, f"{k}: the scenario was removed, nothing to hold")
    if acct.exists and (p.max_monthly_cost is not None or p.max_monthly_cost_p90 is not None):
        out += _monthly_cost_verdicts(p, s, origin, cur, catalog, verdict, fmt)
    for key in ("max_increase", "max_increase_percent"):
        lim_raw = getattr(p, key)
        if lim_raw is None:
            continue
        if d is None:
            error(key, f"{key} needs a base to compare with (kimiplan check --base REV, or kp.check(diff))")
            continue
        inc = d.cost_delta
        band = f", P10–P90 {fmt(d.band['P10'])} … {fmt(d.band['P90'])}"
        if key == "max_increase":
            lim = _amount(lim_raw, cur, origin, p, key)
            verdict(
                key,
                inc <= lim,
                f"monthly cost change {fmt(inc)}{band}, "
                f"{'within' if inc <= lim else 'over'} the allowed increase {fmt(lim)}",
                value=inc,
                threshold=lim,
            )
        else:
            pct = d.cost_percent
            if pct is None:
                verdict(key, True, "a new scenario has no relative increase (max_increase applies)")
                continue
            verdict(
                key,
                pct <= lim_raw,
                f"monthly cost change {percent(pct, trim=True)} ({fmt(inc)}), "
                f"{'within' if pct <= lim_raw else 'over'} the allowed {percent(lim_raw, trim=True)}",
                value=pct,
                threshold=lim_raw,
            )
    if acct.exists and p.max_refusal is not None:
        names = list(p.routes) if p.routes else list(snap.routes)
        unknown = [n for n in names if n not in snap.routes]
        for n in unknown:
            error("max_refusal", f"route {n!r} is not in the scenario (routes: {sorted(snap.routes)})", n)
        for n in names:
            r = snap.routes.get(n)
            if r is None:
                continue
            if r.batch:
                verdict("max_refusal", True, f"route {n} goes through the Batch API (no rate limit)", n)
                continue
            if r.refusal is None:
                error("max_refusal", f"route {n}: the plan gives no refusal (no tier set)", n)
                continue
            scope = "" if r.refusal_scope == "route" else " (the account's; the plan gives no per-route figure)"
            ok = r.refusal <= p.max_refusal
            verdict(
                "max_refusal",
                ok,
                f"route {n} refused {percent(r.refusal)} at the busiest minute{scope}, "
                f"{'within' if ok else 'over'} {percent(p.max_refusal)}",
                n,
                r.refusal,
                p.max_refusal,
            )
    if acct.exists and p.min_growth_headroom is not None:
        if acct.tier is None or acct.growth_headroom is None:
            error("min_growth_headroom", "no headroom without a tier (set `tier:` in the scenario)")
        else:
            ok = acct.growth_headroom >= p.min_growth_headroom
            verdict(
                "min_growth_headroom",
                ok,
                f"headroom on {acct.tier} {growth_multiple(acct.growth_headroom)} "
                f"({LIMIT_LABELS.get(acct.binding_limit or '', 'no limit')} binds), "
                f"{'at least' if ok else 'under'} {p.min_growth_headroom:.2f}×: {acct.headroom_sentence}",
                value=acct.growth_headroom,
                threshold=p.min_growth_headroom,
            )
    if acct.exists and p.tier_must_hold:
        if acct.holds is None:
            error("tier_must_hold", "the scenario sets no tier")
        else:
            verdict(
                "tier_must_hold",
                acct.holds,
                f"{acct.tier} {'holds' if acct.holds else 'does not hold'} (refused at the busiest minute "
                f"{percent(acct.refusal or 0.0)}, target {percent(acct.target)}; binding "
                f"{(acct.binding_limit or 'none').upper()})",
                value=acct.refusal,
                threshold=acct.target,
            )
    if acct.exists and p.min_balance_months is not None:
        out += _balance_verdict(p, s, origin, cur, catalog, verdict)
    if acct.exists and p.max_calibration_age_days is not None:
        sc = snap.scenario
        names = list(p.routes) if p.routes else [r.name for r in sc.routes]
        for r in sc.routes:
            if r.name not in names:
                continue
            if not r.calibration:
                verdict("max_calibration_age_days", False, f"route {r.name} has no calibration", r.name)
                continue
            try:
                created = _calibration_created(r.calibration, snap.origin)
            except ConfigError as exc:
                error("max_calibration_age_days", f"route {r.name}: {exc}", r.name)
                continue
            age = (today - created).days
            ok = age <= p.max_calibration_age_days
            verdict(
                "max_calibration_age_days",
                ok,
                f"route {r.name} calibrated on {created} ({age:,} days ago), "
                f"{'within' if ok else 'older than'} {p.max_calibration_age_days:g} days",
                r.name,
                age,
                p.max_calibration_age_days,
            )
    return out


def _monthly_cost_verdicts(p: Policy, s: _Subject, origin: str, cur: str, catalog, verdict, fmt) -> list[Verdict]:
    """`max_monthly_cost` (expected spend) and `max_monthly_cost_p90` on the next full month, the month the
    report's cost card quotes; with `horizon_months: N` on each of the N months from it (the worst one named)."""
    snap = s.snap
    fc = snap.forecast
    i = fc.next_full_month()
    n = int(p.horizon_months or 1)
    if i + n > len(fc.months):
        from kimiplan.review.snapshot import reforecast

        fc = reforecast(snap, i + n, catalog)
    rows = range(i, i + n)
    label = lambda j: _month_label(fc.months[j])  # noqa: E731
    span = "the next full month" if n == 1 else f"the worst of {n} months from {label(i)}"
    for key, what, values in (
        ("max_monthly_cost", "monthly cost", [float(fc.monthly["expected"].iloc[j]) for j in rows]),
        ("max_monthly_cost_p90", "P90 of the monthly cost", [float(np.quantile(fc.paths[:, j], 0.9)) for j in rows]),
    ):
        raw = getattr(p, key)
        if raw is None:
            continue
        lim = _amount(raw, cur, origin, p, key)
        k = int(np.argmax(values))
        v = values[k]
        over = [label(j) for j, x in zip(rows, values, strict=True) if x > lim]
        tail = f"; over in {len(over)} of {n} months from {over[0]}" if over and n > 1 else ""
        verdict(
            key,
            v <= lim,
            f"{what} {fmt(v)} in {label(i + k)} ({span}) {'within' if v <= lim else 'over'} the cap {fmt(lim)}{tail}",
            value=v,
            threshold=lim,
        )
    return []


def _month_label(month: str) -> str:
    return f"{dt.date.fromisoformat(month + '-01'):%b %Y}"


def _balance_verdict(p: Policy, s: _Subject, origin: str, cur: str, catalog, verdict) -> list[Verdict]:
    from kimiplan.finance.balance import runway
    from kimiplan.review.snapshot import reforecast

    snap = s.snap
    bal = _amount(p.balance, cur, origin, p, "balance")
    months = int(p.min_balance_months)
    # From the month of as_of: N whole months after as_of end inside the horizon.
    fc = reforecast(snap, months + 1, catalog)
    rw = runway(fc, bal)
    start = rw["date"].iloc[0]  # the scenario's as_of: the balance is today's
    k = start.month - 1 + months
    until = dt.date(start.year + k // 12, k % 12 + 1, min(start.day, 28))
    upto = rw[rw["date"] < until]
    p_out = float(upto["p_ran_out"].iloc[-1]) if len(upto) else 0.0
    ok = p_out <= RUN_OUT_ALLOWED
    verdict(
        "min_balance_months",
        ok,
        f"a balance of {money(bal, cur, decimals=0)} runs out within {p.min_balance_months:g} months "
        f"(by {until}) on {percent(p_out)} of paths; allowed {percent(RUN_OUT_ALLOWED, trim=True)}",
        value=p_out,
        threshold=RUN_OUT_ALLOWED,
    )
    return []


def check(
    subject,
    policy,
    *,
    catalog=None,
    today: dt.date | None = None,
    only_increases: bool = False,
    raise_on_fail: bool = True,
    origin: str | None = None,
) -> CheckResult:
    """Apply `policy` (a file, a mapping, a `PolicyFile` or one `Policy`) to `subject`: a scenario or file, a
    `PlanDiff` (so that increase thresholds apply), a `Forecast`, or a list of them. Returns a `CheckResult`;
    raises `PolicyViolation` when a fail-level policy fails (unless `raise_on_fail=False`), so a notebook cell
    that calls it fails under nbval. `only_increases`: silent (no verdicts reported) when no diff's cost rises
    and nothing fails. `origin`: the policy's name in messages when `policy` is already loaded (the CLI's file)."""
    from kimiplan.catalog.cards import load_catalog

    pf, loaded_from = load_policy(policy)
    origin = origin or loaded_from
    catalog = catalog or load_catalog()
    today = today or dt.datetime.now(dt.UTC).date()
    verdicts: list[Verdict] = []
    subjects = _subjects(subject, catalog)
    for s in subjects:
        for p in pf.policies:
            verdicts += _evaluate_policy(p, s, origin, today, catalog)
    diffs = tuple(s.diff for s in subjects if s.diff is not None)
    res = CheckResult(tuple(verdicts), origin, diffs=diffs)
    if only_increases and diffs and not any(d.increases for d in diffs) and not res.failed:
        res = CheckResult(tuple(verdicts), origin, silent=True, diffs=diffs)
    if raise_on_fail and res.failed:
        raise PolicyViolation(res)
    return res
