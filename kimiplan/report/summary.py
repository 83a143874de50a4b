"""The answer at a glance: the decision a reader came for, in one block at the top of the report.

Which tier to buy and why (binding limit, headroom), the month growth exhausts it and the tier to move to, the
monthly cost with its P10-P90 band, P(over budget), the prepaid balance's run-out date, and the three biggest
assumptions behind the numbers. Every figure comes from the capacity plan and the spend forecast; this module
only chooses and words them."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from kimiplan.capacity.plan import growth_exhaustion
from kimiplan.capacity.result import growth_multiple
from kimiplan.catalog.cards import Catalog
from kimiplan.catalog.resolve import price_card, rate_tier
from kimiplan.finance.balance import exhaustion
from kimiplan.finance.cost import cost_summary, expected_cost
from kimiplan.finance.forecast import Forecast
from kimiplan.io.formats import money
from kimiplan.io.formats import percent as _percent
from kimiplan.model.calibration import assumed_routes
from kimiplan.model.scenario import Scenario

LIMIT_NAMES = {"concurrency": "concurrency", "rpm": "RPM", "tpm": "TPM", "tpd": "TPD", "rpd": "RPD"}
AVERAGE_MONTH_DAYS = 365.25 / 12


def percent(v: float) -> str:
    return _percent(v, trim=True)


def _get(p: Any, key: str, default: Any = None) -> Any:
    """A plan field, whether the plan is a mapping or an object with attributes."""
    if isinstance(p, dict):
        return p.get(key, default)
    return getattr(p, key, default)


def _month(d: dt.date | None) -> str:
    return "not within 3 years" if d is None else f"{d:%b %Y}"


def _day(d) -> str:
    """One way to write a day on the first screen: 2 Apr 2027."""
    d = pd.Timestamp(d)
    return f"{d.day} {d:%b %Y}"


@dataclass
class Card:
    """One card of the first screen: what it speaks of (`label`, naming its tier or month), the figure, the
    sentence under it."""

    label: str
    big: str
    small: str
    tone: str = ""  # "", "bad" or "good": the card's border


@dataclass
class Summary:
    """The decision block. Every card and sentence names the tier (or month) it speaks of: the tier the
    scenario has (`current_tier`), the tier to buy (`tier_to_buy`, whose headroom and capacity run-out the
    cards give). Capacity run-out and the prepaid balance's run-out are separate cards; the cost card is the
    next full month and the 12-month average; `verdict` is the one line the CLI prints."""

    scenario: str
    currency: str
    tier_to_buy: str | None
    current_tier: str | None
    current_holds: bool | None
    current_line: str
    tier_why: str
    binding_limit: str | None
    headroom: str  # the one definition (capacity.result.headroom_sentence), on the tier to buy
    headroom_scale: float | None
    runs_out: str  # capacity on the tier to buy, in words
    runs_out_month: str | None
    next_tier: str | None
    next_tier_lasts: str
    cost_month: str  # the next full month
    cost_month_label: str
    cost_band: str
    cost_average: str
    cost_year: str
    cost_line: str
    budget_line: str
    p_over_budget: float | None
    balance_line: str
    balance_runs_out: str | None
    verdict: str
    warnings: list[str] = field(default_factory=list)  # what validate warns about that changes the verdict
    risks: list[str] = field(default_factory=list)
    reconciliation: pd.DataFrame | None = None
    tier_tables: list[dict] = field(default_factory=list)  # the verdict under each tier table in force lately
    table_lines: list[str] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("reconciliation")
        return d

    def to_text(self) -> str:
        lines = [f"Verdict:     {self.verdict}"]
        lines += [f"Warning:     {w}" for w in self.warnings]
        lines += [f"{c.label}: {c.big}. {c.small}" for c in self.cards]
        lines += [
            f"Cost over the year: {self.cost_year}",
            *(f"Tier table:  {line}" for line in self.table_lines),
            "Assumptions to check:",
            *(f"  {i}. {r}" for i, r in enumerate(self.risks, 1)),
        ]
        return "\n".join(lines)

    def tier_table_lines(self) -> list[str]:
        return list(self.table_lines)

    def to_html(self) -> str:
        e = html.escape
        tone = {"bad": " bad", "good": " good"}
        tiles_html = "".join(
            f'<div class="tile{tone.get(c.tone, "")}"><div class="label">{e(c.label)}</div>'
            f'<div class="big">{e(c.big)}</div><div class="small">{e(c.small)}</div></div>'
            for c in self.cards
        )
        warn = ""
        if self.warnings:
            items = "".join(f"<li>{e(w)}</li>" for w in self.warnings)
            warn = f'<div class="blockers"><b>These change the verdict below</b><ul>{items}</ul></div>'
        risks = "".join(f"<li>{e(r)}</li>" for r in self.risks)
        tables = ""
        if len(self.table_lines) > 1:
            items = "".join(f"<li>{e(line)}</li>" for line in self.table_lines)
            tables = f'<div class="facts"><b>The verdict under each published tier table</b><ul>{items}</ul></div>'
        return (
            f'<p class="verdict"><b>Verdict:</b> {e(self.verdict)}</p>{warn}'
            f'<div class="summary">{tiles_html}</div>{tables}'
            f'<ul class="facts"><li><b>Cost over the year:</b> {e(self.cost_year)}</li></ul>'
            f'<div class="risks"><b>Check before you rely on this</b><ol>{risks}</ol></div>'
        )

    def _repr_html_(self) -> str:
        return self.to_html()


def _ladder_row(ladder: pd.DataFrame, tier: str | None) -> pd.Series | None:
    if tier is None or ladder is None or not len(ladder):
        return None
    rows = ladder[ladder["tier"] == tier]
    return rows.iloc[0] if len(rows) else None


def _capacity_lines(scenario: Scenario, p: Any) -> dict:
    ladder = _get(p, "ladder")
    current = _get(p, "tier")
    buy = _get(p, "smallest_tier")
    target = _get(p, "target", 0.001)
    g = scenario.traffic.monthly_growth
    out: dict = {"tier_to_buy": buy, "current_tier": current, "current_holds": None, "headroom_scale": None}
    if current is None:
        out["current_line"] = "No tier is set in the scenario (tier:); the cards below size one."
    else:
        refused = _get(p, "refusal_total") or 0.0
        holds = refused <= target
        out["current_holds"] = holds
        out["current_line"] = (
            f"At the busiest minute {current} refuses {percent(refused)} of requests "
            f"({'under' if holds else 'above'} the {percent(target)} target)."
        )
    if ladder is None or not len(ladder):
        out.update(
            tier_why="No tier ladder for this provider: the plan shows demand only.",
            binding_limit=None,
            headroom="",
            runs_out="",
            runs_out_month=None,
            next_tier=None,
            next_tier_lasts="",
        )
        return out
    row = _ladder_row(ladder, buy)
    if row is None:
        best = ladder.sort_values("max_scale").iloc[-1]
        out.update(
            tier_why=f"No tier keeps refusals under {percent(target)} at the busiest minute; the largest, "
            f"{best['tier']}, refuses {percent(best['refusal_total'])} "
            f"({LIMIT_NAMES.get(best['binding_limit'])} binds). "
            f"Cut the peak (smaller max_completion_tokens, a pacing client) or ask {scenario.provider} for a "
            "custom limit.",
            binding_limit=str(best["binding_limit"]),
            headroom=f"No tier has headroom: even {best['tier']} refuses more than {percent(target)}.",
            runs_out=f"Every tier is already over capacity, {best['tier']} included.",
            runs_out_month="now",
            next_tier=None,
            next_tier_lasts="",
        )
        return out
    limit = str(row["binding_limit"])
    vs = (
        "the tier you have"
        if buy == current
        else f"you have {current}, which does not hold"
        if current and out["current_holds"] is False
        else f"you have {current}, a larger tier than needed"
        if current
        else "no tier was set in the scenario"
    )
    out["tier_why"] = (
        f"The smallest tier that keeps refusals under {percent(target)} at the busiest minute of a typical week ({vs})."
    )
    out["binding_limit"] = limit
    h = p.headroom(buy) if hasattr(p, "headroom") else None
    scale = float(row["max_scale"]) if h is None else float(h.scale)
    out["headroom_scale"] = scale
    out["headroom"] = h.sentence if h is not None else f"{buy} can carry {scale:.2f}× today's traffic."
    ex = growth_exhaustion(scenario, scale)
    up = _get(p, "upgrade")
    if up is not None and up.get("from") == buy and up.get("to") is not None:
        # The plan's own upgrade path: the cheapest tier that raises the binding limit.
        later = ladder[ladder["tier"] == up["to"]]
    else:
        # A tier that raises only other limits changes nothing: the next one that sustains more traffic.
        later = ladder[(ladder["max_scale"] > scale * 1.001)].sort_values("max_scale")
    nxt = later.iloc[0] if len(later) else None
    out["next_tier"] = None if nxt is None else str(nxt["tier"])
    if ex["months"] == 0:
        out["runs_out_month"] = "now"
        out["runs_out"] = f"{buy} is already at its limit today."
    elif ex["date"] is None:
        out["runs_out_month"] = None
        out["runs_out"] = (
            f"Growth of {percent(g)} a month does not fill {buy} within 3 years."
            if g > 0
            else f"Traffic is not growing in the scenario; {buy} does not run out of capacity."
        )
    else:
        out["runs_out_month"] = _month(ex["date"])
        out["runs_out"] = f"At {percent(g)} growth a month, traffic passes {buy}'s {scale:.2f}× in {_month(ex['date'])}"
        out["runs_out"] += f"; then move to {nxt['tier']}." if nxt is not None else "; no larger tier in the catalog."
    if nxt is not None:
        ex2 = growth_exhaustion(scenario, float(nxt["max_scale"]))
        out["next_tier_lasts"] = (
            f"{nxt['tier']} carries {float(nxt['max_scale']):.2f}× today's traffic, until {_month(ex2['date'])}."
        )
        if ex["date"] is not None:
            out["runs_out"] += f" {nxt['tier']} lasts until {_month(ex2['date'])}."
    else:
        out["next_tier_lasts"] = ""
    return out


def _table_lines(scenario: Scenario, p: Any) -> list[str]:
    """One sentence per published tier table: its verdict (headroom in the one definition), and which one the
    headline uses and why."""
    out = []
    for t in _get(p, "by_tier_table") or []:
        status = "official" if t["official"] else "third-party quotes, not official"
        when = (
            f"in force on the scenario's date (since {t['effective_from']})"
            if t["in_force_on_as_of"] and t["effective_from"]
            else "in force on the scenario's date"
            if t["in_force_on_as_of"]
            else f"until {t['effective_to']}"
            if t["effective_to"]
            else f"from {t['effective_from']}"
        )
        if t["smallest_tier"] is None:
            verdict = "no tier holds"
        else:
            h = p.headroom(t["smallest_tier"], version=t["version"]) if hasattr(p, "headroom") else None
            # The binding limit of the tier this sentence is about (the table's verdict row is the scenario's tier).
            limit = h.limit if h is not None else t["binding_limit"]
            verdict = f"buy {t['smallest_tier']}; {LIMIT_NAMES.get(limit, limit)} binds"
            if h is not None and h.scale is not None:
                verdict += f", headroom on {t['smallest_tier']} {h.short}"
                ex = growth_exhaustion(scenario, h.scale)
                if ex.get("date"):
                    verdict += f", its capacity runs out {_month(ex['date'])}"
        head = " [the headline: the table in force on the scenario's date]" if t["headline"] else ""
        out.append(f"table {t['version']} ({status}, {when}): {verdict}{head}")
    return out


def reconciliation(scenario: Scenario, catalog: Catalog, fc: Forecast) -> pd.DataFrame:
    """The three monthly figures a reader meets, side by side, and how they relate."""
    card = price_card(scenario, catalog)
    per_month = float(cost_summary(expected_cost(scenario, catalog, card))["cost_per_month"].iloc[-1])
    m = fc.monthly
    first, last = m.iloc[0], m.iloc[-1]
    g = scenario.traffic.monthly_growth
    rows = [
        {
            "figure": "average month at today's traffic",
            "amount": per_month,
            "how": f"{scenario.traffic.per_day:,.0f} requests/day × {AVERAGE_MONTH_DAYS:.2f} days at today's prices "
            "(the cost-by-route table)",
        },
        {
            "figure": f"first forecast month, {first['month']}",
            "amount": float(first["expected"]),
            "how": f"{int(first['days'])} calendar days with their weekday mix"
            + (f" and {percent(g)} monthly growth from {scenario.as_of}" if g else ""),
        },
        {
            "figure": f"average of the {len(m)} forecast months",
            "amount": float(m["expected"].mean()),
            "how": f"{m['month'].iloc[0]} to {last['month']}; the variants table's “per month”",
        },
        {
            "figure": f"last forecast month, {last['month']}",
            "amount": float(last["expected"]),
            "how": "where growth takes the bill by the end of the horizon",
        },
    ]
    return pd.DataFrame(rows).assign(currency=fc.currency)


def _risks(scenario: Scenario, catalog: Catalog, fc: Forecast | None) -> list[str]:
    out = []
    tier = rate_tier(scenario, catalog)
    if tier is not None and not tier.official:
        out.append(
            f"The {tier.provider} tier table is not from an official copy ({tier.source}; verified "
            f"{tier.verified_on}). Check your console's limits page."
        )
    uncal = assumed_routes(scenario)
    if uncal:
        out.append(
            f"Token sizes are assumptions, not measurements, on {len(uncal)} of {len(scenario.routes)} routes "
            f"({', '.join(uncal)}). Calibrate them from live calls (notebook 04, `kimiplan calibrate`)."
        )
    card = price_card(scenario, catalog)
    if not card.official:
        out.append(f"Prices are third-party quotes of {card.provider}'s table (verified {card.verified_on}).")
    if fc is not None and fc.warnings:
        out.extend(fc.warnings)
    return out[:3]


def _label(month: str) -> str:
    return f"{dt.date.fromisoformat(month + '-01'):%b %Y}"


def decision_summary(
    scenario: Scenario,
    catalog: Catalog,
    plan: Any,
    fc: Forecast,
    balance: float | None = None,
) -> Summary:
    from kimiplan.workload.checks import verdict_warnings

    cap = _capacity_lines(scenario, plan)
    m = fc.monthly
    cur = fc.currency
    i = fc.next_full_month()
    nxt = m.iloc[i]
    label = _label(nxt["month"])
    cost_month = money(nxt["expected"], cur, 0)
    avg = float(m["expected"].mean())
    span = f"{_label(m['month'].iloc[0])} to {_label(m['month'].iloc[-1])}"
    band = f"P10–P90 {money(nxt['P10'], cur, 0)}–{money(nxt['P90'], cur, 0)}"
    cost_average = (
        f"12-month average {money(avg, cur, 0)} ({span})"
        if len(m) == 12
        else (f"{len(m)}-month average {money(avg, cur, 0)} ({span})")
    )
    year_total = float(m["expected"].sum())
    last = m.iloc[-1]
    cost_year = (
        f"{money(year_total, cur, 0)} over {len(m)} months ({span}), {money(avg, cur, 0)} a month on average; "
        f"{money(last['expected'], cur, 0)} in {_label(last['month'])} "
        f"(P10–P90 {money(last['P10'], cur, 0)}–{money(last['P90'], cur, 0)})."
    )
    cost_line = f"{cost_month} in {label}, the next full month ({band}); {cost_average}."
    reasons = []
    budget_reason = None
    buy, current = cap["tier_to_buy"], cap["current_tier"]
    if current is not None and cap["current_holds"] is False:
        reasons.append(f"{current} does not hold today" + (f" (buy {buy})" if buy else " and no tier does"))
    elif current is not None and current == buy and cap["headroom_scale"] is not None:
        reasons.append(f"{current} holds today (headroom {growth_multiple(cap['headroom_scale'])})")
    elif buy is None and cap["runs_out_month"] == "now":
        reasons.append("no tier holds today's traffic")
    cap_month = cap["runs_out_month"]
    if fc.budget is None:
        budget_line = "no monthly budget given (kimiplan report --budget AMOUNT)."
        p_over = None
        budget_card = Card("Monthly budget", "none given", "Pass --budget AMOUNT for the chance a month goes over it.")
    else:
        p_over = float(m["p_over_budget"].max())
        worst = m.loc[m["p_over_budget"].idxmax()]
        over = m[m["p_over_budget"] > 0.5]
        budget_line = (
            f"The chance that a month's bill passes {money(fc.budget, cur, 0)} is {percent(p_over)} in "
            f"{_label(worst['month'])}, the riskiest of the {len(m)} months"
            + (f"; more likely than not from {_label(over['month'].iloc[0])}." if len(over) else ".")
        )
        if len(over):
            budget_reason = f"a month over {money(fc.budget, cur, 0)} is likely from {_label(over['month'].iloc[0])}"
        budget_card = Card(
            f"Chance a month passes {money(fc.budget, cur, 0)}",
            percent(p_over),
            budget_line.split(" is ", 1)[1][:1].upper() + budget_line.split(" is ", 1)[1][1:]
            if " is " in budget_line
            else budget_line,
            "bad" if len(over) else "",
        )
        budget_card.small = f"In {_label(worst['month'])}, the riskiest of the {len(m)} months" + (
            f"; more likely than not from {_label(over['month'].iloc[0])}." if len(over) else "."
        )
    balance_runs_out = None
    if balance is None:
        balance_line = "no prepaid balance given (kimiplan report --balance AMOUNT)."
        balance_card = Card("Prepaid balance", "none given", "Pass --balance AMOUNT for the date the money runs out.")
    else:
        ex = exhaustion(fc, balance)
        q = dict(zip(ex["quantile"], ex["runs_out_on"], strict=True))
        mid = q.get("P50")
        early = q.get("P10")
        if pd.isna(mid):
            balance_line = (
                f"{money(balance, cur, 0)} lasts past {ex['horizon_end'].iloc[0]} "
                f"(P(runs out earlier) {percent(ex['p_within_horizon'].iloc[0])})."
            )
            balance_card = Card("Prepaid balance runs out", f"after {_month(ex['horizon_end'].iloc[0])}", balance_line)
        else:
            balance_runs_out = _day(mid)
            balance_line = (
                f"{money(balance, cur, 0)} runs out around {_day(mid)} at the forecast's spend"
                + (f" (one chance in ten by {_day(early)})" if not pd.isna(early) else "")
                + "; then every call fails with HTTP 429 exceeded_current_quota_error. Top up before."
            )
            balance_card = Card("Prepaid balance runs out", _day(mid), balance_line, "bad")
            before = ""
            if cap_month not in (None, "now") and buy is not None:
                cap_date = dt.datetime.strptime(cap_month, "%b %Y").date()
                if pd.Timestamp(mid).date() < cap_date:
                    before = f", before {buy}'s capacity ({cap_month})"
            reasons.append(f"the {money(balance, cur, 0)} balance runs out around {_day(mid)}{before}")
    if buy is not None and cap_month not in (None, "now") and not any("capacity (" in r for r in reasons):
        reasons.append(
            f"{buy}'s capacity runs out in {cap_month}" + (f" (then {cap['next_tier']})" if cap["next_tier"] else "")
        )
    if budget_reason:
        reasons.append(budget_reason)
    found = verdict_warnings(scenario, price_card(scenario, catalog))
    warnings = [str(w) for w in found]
    refused = [w.route for w in found if w.kind == "context_window"]
    if refused:
        reasons.insert(
            0,
            f"route{'s' if len(refused) > 1 else ''} {', '.join(refused)} would be refused with HTTP 400 "
            "(max_completion_tokens beyond the context window): fix that before trusting the rest",
        )
    verdict = "; ".join(reasons) if reasons else f"{buy or current} holds and the money lasts the horizon."
    verdict = verdict[:1].upper() + verdict[1:] + ("" if verdict.endswith(".") else ".")
    cards = []
    if current is not None:
        cards.append(
            Card(
                f"The tier you have: {current}",
                "holds" if cap["current_holds"] else "does not hold",
                cap["current_line"],
                "good" if cap["current_holds"] else "bad",
            )
        )
    cards.append(Card("Tier to buy", buy or "none holds", cap["tier_why"], "" if buy else "bad"))
    head_scale = cap["headroom_scale"]
    cards.append(
        Card(
            f"Headroom on {buy}" if buy else "Headroom",
            growth_multiple(head_scale, missing="none"),
            cap["headroom"],
        )
    )
    cards.append(
        Card(
            f"Capacity on {buy} runs out" if buy else "Capacity runs out",
            cap_month or "not within 3 years",
            cap["runs_out"],
            "bad" if cap_month == "now" else "",
        )
    )
    cards.append(balance_card)
    cards.append(Card(f"Cost, next full month ({label})", cost_month, f"{band}; {cost_average}."))
    cards.append(budget_card)
    return Summary(
        scenario=scenario.name,
        currency=cur,
        cost_month=cost_month,
        cost_month_label=label,
        cost_band=band,
        cost_average=cost_average,
        cost_year=cost_year,
        cost_line=cost_line,
        budget_line=budget_line,
        p_over_budget=p_over,
        balance_line=balance_line,
        balance_runs_out=balance_runs_out,
        verdict=verdict,
        warnings=warnings,
        risks=_risks(scenario, catalog, fc),
        reconciliation=reconciliation(scenario, catalog, fc),
        tier_tables=list(_get(plan, "by_tier_table") or []),
        table_lines=_table_lines(scenario, plan),
        cards=cards,
        **cap,
    )
