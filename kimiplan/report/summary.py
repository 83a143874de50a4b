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


@dataclass
class Summary:
    """The decision block. Text fields are complete sentences; numbers keep their units."""

    scenario: str
    currency: str
    tier_to_buy: str | None
    current_tier: str | None
    tier_why: str
    binding_limit: str | None
    headroom: str
    runs_out: str
    runs_out_month: str | None
    next_tier: str | None
    next_tier_lasts: str
    cost_month: str
    cost_band: str
    cost_year: str
    cost_line: str
    budget_line: str
    p_over_budget: float | None
    balance_line: str
    risks: list[str] = field(default_factory=list)
    reconciliation: pd.DataFrame | None = None
    tier_tables: list[dict] = field(default_factory=list)  # the verdict under each tier table in force lately

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("reconciliation")
        return d

    def to_text(self) -> str:
        lines = [
            f"Tier to buy: {self.tier_to_buy or 'none holds'}. {self.tier_why}",
            f"Headroom:    {self.headroom}",
            f"Runs out:    {self.runs_out}",
            f"Cost:        {self.cost_line}",
            f"Budget:      {self.budget_line}",
            f"Prepaid:     {self.balance_line}",
            *(f"Tier table:  {line}" for line in self.tier_table_lines()),
            "Assumptions to check:",
            *(f"  {i}. {r}" for i, r in enumerate(self.risks, 1)),
        ]
        return "\n".join(lines)

    def tier_table_lines(self) -> list[str]:
        """One sentence per published tier table: its verdict, and which one the headline uses and why."""
        out = []
        for t in self.tier_tables:
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
            verdict = (
                "no tier holds"
                if t["smallest_tier"] is None
                else f"buy {t['smallest_tier']}; {LIMIT_NAMES.get(t['binding_limit'], t['binding_limit'])} binds"
                + (f", headroom {percent(t['headroom'])}" if t.get("headroom") is not None else "")
                + (f", runs out {_month(t['exhausted_on'])}" if t.get("exhausted_on") else "")
            )
            head = " [the headline: the table in force on the scenario's date]" if t["headline"] else ""
            out.append(f"table {t['version']} ({status}, {when}): {verdict}{head}")
        return out

    def to_html(self) -> str:
        e = html.escape
        tiles = [
            ("Tier to buy", self.tier_to_buy or "none holds", self.tier_why),
            (
                "Binding limit",
                LIMIT_NAMES.get(self.binding_limit or "", self.binding_limit or "none"),
                self.headroom,
            ),
            ("Runs out", self.runs_out_month or "not within 3 years", self.runs_out),
            ("Monthly cost", self.cost_month, self.cost_band),
        ]
        tiles_html = "".join(
            f'<div class="tile"><div class="label">{e(label)}</div><div class="big">{e(big)}</div>'
            f'<div class="small">{e(small)}</div></div>'
            for label, big, small in tiles
        )
        risks = "".join(f"<li>{e(r)}</li>" for r in self.risks)
        tables = ""
        if len(self.tier_tables) > 1:
            items = "".join(f"<li>{e(line)}</li>" for line in self.tier_table_lines())
            tables = f'<div class="facts"><b>The verdict under each published tier table</b><ul>{items}</ul></div>'
        return (
            f'<div class="summary">{tiles_html}</div>{tables}'
            f'<ul class="facts"><li><b>Cost over the year:</b> {e(self.cost_year)}</li>'
            f"<li><b>Budget:</b> {e(self.budget_line)}</li>"
            f"<li><b>Prepaid balance:</b> {e(self.balance_line)}</li></ul>"
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
    out: dict = {"tier_to_buy": buy, "current_tier": current}
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
            headroom="",
            runs_out="already over every tier",
            runs_out_month="now",
            next_tier=None,
            next_tier_lasts="",
        )
        return out
    limit = str(row["binding_limit"])
    scale = float(row["max_scale"])
    vs = (
        "the tier you have"
        if buy == current
        else f"you have {current}, which refuses {percent(_get(p, 'refusal_total', 0.0))} at the busiest minute"
        if current
        else "no tier was set in the scenario"
    )
    out["tier_why"] = (
        f"The smallest tier that keeps refusals under {percent(target)} at the busiest minute of a typical week ({vs})."
    )
    out["binding_limit"] = limit
    util = None
    demand = _get(p, "demand")
    if buy == current and demand is not None and len(demand):
        tot = demand[(demand["route"] == "total") & (demand["limit"] == limit)]
        if len(tot):
            util = float(tot["peak_utilization"].iloc[0])
    used = f"busiest minute uses {percent(util)} of the {LIMIT_NAMES.get(limit, limit)} limit; " if util else ""
    out["headroom"] = f"{used}room for {percent(max(scale - 1.0, 0.0))} more traffic ({scale:.2f}× today)."
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
        out["runs_out"] = "Already at its limit today."
    elif ex["date"] is None:
        out["runs_out_month"] = None
        out["runs_out"] = (
            f"Not within 3 years at {percent(g)} growth a month."
            if g > 0
            else "Traffic is not growing in the scenario; it does not run out."
        )
    else:
        out["runs_out_month"] = _month(ex["date"])
        out["runs_out"] = f"At {percent(g)} growth a month, traffic passes {scale:.2f}× in {_month(ex['date'])}"
        out["runs_out"] += f"; then move to {nxt['tier']}." if nxt is not None else "; no larger tier in the catalog."
    if nxt is not None:
        ex2 = growth_exhaustion(scenario, float(nxt["max_scale"]))
        out["next_tier_lasts"] = (
            f"{nxt['tier']} sustains {float(nxt['max_scale']):.2f}× today, until {_month(ex2['date'])}."
        )
        if ex["date"] is not None:
            out["runs_out"] += f" It lasts until {_month(ex2['date'])}."
    else:
        out["next_tier_lasts"] = ""
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
    search = [
        r.name for r in scenario.routes if r.tools.web_search_calls.mean() > 0 and r.tools.result_tokens.mean() == 0
    ]
    if search:
        out.append(
            f"The size of $web_search results is unknown on {', '.join(search)} (0 tokens assumed); every search "
            "resends the prompt plus its results, so input cost and TPM grow with it. Measure it from a tool "
            "call's usage."
        )
    card = price_card(scenario, catalog)
    if not card.official:
        out.append(f"Prices are third-party quotes of {card.provider}'s table (verified {card.verified_on}).")
    if fc is not None and fc.warnings:
        out.extend(fc.warnings)
    return out[:3]


def decision_summary(
    scenario: Scenario,
    catalog: Catalog,
    plan: Any,
    fc: Forecast,
    balance: float | None = None,
) -> Summary:
    cap = _capacity_lines(scenario, plan)
    m = fc.monthly
    cur = fc.currency
    first = m.iloc[0]
    cost_month = money(first["expected"], cur, 0)
    band = f"{first['month']}: P10–P90 {money(first['P10'], cur, 0)}–{money(first['P90'], cur, 0)}"
    year_total = float(m["expected"].sum())
    last = m.iloc[-1]
    cost_year = (
        f"{money(year_total, cur, 0)} over {len(m)} months ({m['month'].iloc[0]} to {last['month']}), "
        f"{money(year_total / len(m), cur, 0)} a month on average; "
        f"{money(last['expected'], cur, 0)} in {last['month']} "
        f"(P10–P90 {money(last['P10'], cur, 0)}–{money(last['P90'], cur, 0)})."
    )
    cost_line = f"{cost_month} in {first['month']} ({band.split(': ', 1)[1]}); {cost_year}"
    if fc.budget is None:
        budget_line = "no monthly budget given (kimiplan report --budget AMOUNT)."
        p_over = None
    else:
        p_over = float(m["p_over_budget"].max())
        worst = m.loc[m["p_over_budget"].idxmax()]
        over = m[m["p_over_budget"] > 0.5]
        budget_line = (
            f"P(a month over {money(fc.budget, cur, 0)}) is at most {percent(p_over)} (in {worst['month']})"
            + (f"; from {over['month'].iloc[0]} more likely than not." if len(over) else ".")
        )
    if balance is None:
        balance_line = "no prepaid balance given (kimiplan report --balance AMOUNT)."
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
        else:
            balance_line = (
                f"{money(balance, cur, 0)} runs out around {mid:%Y-%m-%d}"
                + (f" (one chance in ten by {early:%Y-%m-%d})" if not pd.isna(early) else "")
                + "; then every call fails with HTTP 429 exceeded_current_quota_error. Top up before."
            )
    return Summary(
        scenario=scenario.name,
        currency=cur,
        cost_month=cost_month,
        cost_band=band,
        cost_year=cost_year,
        cost_line=cost_line,
        budget_line=budget_line,
        p_over_budget=p_over,
        balance_line=balance_line,
        risks=_risks(scenario, catalog, fc),
        reconciliation=reconciliation(scenario, catalog, fc),
        tier_tables=list(_get(plan, "by_tier_table") or []),
        **cap,
    )
