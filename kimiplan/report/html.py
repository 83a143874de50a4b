"""One self-contained HTML report for a scenario: the answer first (tier, limit, run-out, monthly cost, risks),
then capacity, cost over time, what the cost is made of, and the sources.

Presentation only. Each analysis module offers `*_report_sections(scenario, catalog)` returning (title, object)
pairs, where object is a DataFrame, a `Table`, a plotly Figure, an object with `to_html()` or an HTML string."""

from __future__ import annotations

import datetime as dt
import html
import importlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from kimiplan import __version__
from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.resolve import price_card, rate_tier
from kimiplan.finance.cost import cost_summary, expected_cost
from kimiplan.io.atomic import atomic_write
from kimiplan.io.formats import money, percent
from kimiplan.model.calibration import assumed_routes
from kimiplan.model.scenario import COMPONENTS, Scenario
from kimiplan.report.forecast import report_forecast
from kimiplan.report.summary import AVERAGE_MONTH_DAYS, LIMIT_NAMES, decision_summary
from kimiplan.report.tables import Table, table_html
from kimiplan.viz.breakdown import cost_breakdown_figure, token_breakdown_figure
from kimiplan.viz.theme import styled
from kimiplan.workload.draws import context_check, expected_tokens

Section = tuple[str, Any]

# Optional section providers from the analysis modules: (module, function).
_PROVIDERS = [
    ("kimiplan.report.capacity", "capacity_report_sections"),
    ("kimiplan.report.forecast", "forecast_report_sections"),
]


def foundation_sections(scenario: Scenario, catalog: Catalog) -> list[Section]:
    """Tokens and cost per route, the context check: what the totals above are made of."""
    card = price_card(scenario, catalog)
    exp = expected_tokens(scenario, card)
    cost = expected_cost(scenario, catalog, card, expected=exp)
    ctx = context_check(scenario, card)
    cols = [
        "route",
        "share",
        *COMPONENTS,
        "input_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "output_tokens",
        "max_completion_tokens",
        "truncation_rate",
    ]
    return [
        (
            "Expected cost by route",
            Table(
                cost_summary(cost),
                note=f"An average month ({AVERAGE_MONTH_DAYS:.2f} days) at today's traffic and prices; the forecast "
                "above adds calendar months, growth and uncertainty.",
            ),
        ),
        ("Monthly cost by price class", cost_breakdown_figure(cost, "price_class")),
        ("Monthly cost by component", cost_breakdown_figure(cost, "component")),
        ("Tokens per request", token_breakdown_figure(exp)),
        ("Mean tokens per request (table)", Table(exp[cols])),
        ("Context window check (p99 input + max_completion_tokens)", Table(ctx)),
    ]


def scenario_sections(scenario: Scenario, catalog: Catalog) -> list[Section]:
    """What the numbers rest on: the model, prices and tier with their sources and dates."""
    card = price_card(scenario, catalog)
    tier = rate_tier(scenario, catalog)
    sym = card.currency
    overview = pd.DataFrame(
        [
            {"item": "model", "value": f"{card.model} ({card.provider}/{card.region})"},
            {
                "item": "prices per 1M tokens",
                "value": f"cache hit {money(card.cache_hit_price, sym)}, "
                f"cache miss {money(card.input_cache_miss, sym)}, output {money(card.output, sym)}; "
                f"$web_search {money(card.web_search_per_call, sym)} per call",
            },
            {
                "item": "price source",
                "value": f"{card.source} (verified {card.verified_on}, "
                f"{'official' if card.official else 'third-party'})",
            },
            {
                "item": "rate tier",
                "value": "none"
                if tier is None
                else f"{tier.name}: "
                + ", ".join(f"{LIMIT_NAMES.get(k, k)} {v:,}" for k, v in tier.limits().items() if v),
            },
            {
                "item": "tier source",
                "value": ""
                if tier is None
                else f"{tier.source} (verified {tier.verified_on}, {'official' if tier.official else 'unofficial'})",
            },
            {
                "item": "traffic",
                "value": f"{scenario.traffic.per_day:,.0f} requests/day, "
                f"growth {percent(scenario.traffic.monthly_growth, trim=True)} a month",
            },
            {"item": "as of", "value": scenario.as_of.isoformat()},
        ]
    )
    cal, note = calibration_table(scenario)
    return [("Scenario, prices and sources", Table(overview)), ("Calibration", Table(cal, note=note))]


def calibration_table(scenario: Scenario) -> tuple[pd.DataFrame, str]:
    """Per route: calibrated from what (or assumed), and what the measurement changed, side by side."""
    rows = []
    for r in scenario.routes:
        c = r.calibrated
        lines = [d.describe() for d in c.differences] if c else []
        lines += list(c.warnings) if c else []
        rows.append(
            {
                "route": r.name,
                "token sizes": c.describe() if c else "assumed",
                "measured": ", ".join(c.applied) if c else "",
                "pinned": ", ".join(c.pinned) if c else "",
                "measured against assumed, warnings": "; ".join(lines),
            }
        )
    n = len(assumed_routes(scenario))
    note = (
        "Every route's laws come from a calibration (kimiplan calibrate apply, or the scenario's calibration: field)."
        if n == 0
        else f"{n} of {len(scenario.routes)} routes still use the scenario's assumed token sizes."
    )
    return pd.DataFrame(rows), note


def collect_sections(
    scenario: Scenario,
    catalog: Catalog | None = None,
    providers: Iterable[tuple[str, str]] = _PROVIDERS,
    *,
    budget: float | None = None,
    balance: float | None = None,
) -> list[Section]:
    """The report in the order a reader asks: the answer, capacity, cost over time, what it is made of, sources.
    A title with a None object is a group heading."""
    from kimiplan.capacity.plan import plan

    catalog = catalog or load_catalog()
    fc = report_forecast(scenario, catalog, budget)
    summary = decision_summary(scenario, catalog, plan(scenario, catalog), fc, balance)
    sections: list[Section] = [
        ("The answer", summary),
        (
            "How the monthly figures relate",
            Table(
                summary.reconciliation,
                note="One bill, seen four ways: the summary quotes the next full month and the 12-month average.",
            ),
        ),
    ]
    for mod_name, fn_name in providers:
        # Providers are named, not imported here, so this module does not import every section's dependencies.
        fn: Callable = getattr(importlib.import_module(mod_name), fn_name)
        if fn_name == "forecast_report_sections":
            sections += [("Cost over time", None), *fn(scenario, catalog, fc=fc)]
        else:
            sections += [("Capacity", None), *fn(scenario, catalog)]
    sections += [("What the cost is made of", None), *foundation_sections(scenario, catalog)]
    from kimiplan.report.agents import agent_report_sections

    agents = agent_report_sections(scenario, catalog)
    if agents:  # scenarios with agent routes only
        sections += [("Agent runs", None), *agents]
    sections += [("Sources", None), *scenario_sections(scenario, catalog)]
    return sections


def _render(obj: Any, first_figure: list[bool]) -> str:
    if isinstance(obj, go.Figure):
        include = "inline" if first_figure[0] else False
        first_figure[0] = False
        fig = styled(go.Figure(obj))
        fig.update_layout(autosize=True, width=None)
        return fig.to_html(full_html=False, include_plotlyjs=include, config={"displaylogo": False, "responsive": True})
    if isinstance(obj, pd.DataFrame):
        return table_html(obj)
    if hasattr(obj, "to_html"):
        return obj.to_html()
    if isinstance(obj, str):
        return obj
    return f"<pre>{html.escape(str(obj))}</pre>"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(scenario: Scenario, sections: list[Section]) -> str:
    first = [True]
    parts, nav = [], []
    for title, obj in sections:
        if obj is None:
            parts.append(f'<h2 id="{_slug(title)}">{html.escape(title)}</h2>')
            nav.append(f'<a href="#{_slug(title)}">{html.escape(title)}</a>')
        else:
            parts.append(f"<section><h3>{html.escape(title)}</h3>\n{_render(obj, first)}</section>")
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>kimiplan report: {html.escape(scenario.name)}</title>
<style>{CSS}</style></head><body>
<header><h1>Kimi plan: {html.escape(scenario.name)}</h1>
<p class="lede">{html.escape(scenario.description)} · {html.escape(scenario.model)} on {html.escape(scenario.provider)}
({html.escape(scenario.resolved_region)}) · as of {scenario.as_of}</p>
<nav>{" · ".join(nav)}</nav></header>
{body}
<p class="note">Generated by kimiplan {__version__} on {dt.date.today().isoformat()}. Prices and tiers come from the
dated catalog (sources and verification dates under Sources); token sizes are the scenario's assumptions unless
calibrated.</p>
</body></html>
"""


CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
  margin: 0 auto; padding: 1.5rem; max-width: 1200px; line-height: 1.45; }
h1 { margin: 0 0 0.2rem; font-size: 1.7rem; }
h2 { border-bottom: 2px solid #4C78A8; padding-bottom: 0.2rem; margin-top: 2.5rem; font-size: 1.35rem; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 0.4rem; }
.lede { color: #555; margin: 0 0 0.4rem; }
nav { font-size: 0.9rem; color: #888; }
nav a { color: #4C78A8; text-decoration: none; }
.summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 0.8rem; margin: 0.6rem 0; }
.tile { border: 1px solid #d8e0ea; border-left: 4px solid #4C78A8; border-radius: 6px; padding: 0.7rem 0.9rem;
  background: #f7f9fc; }
.tile .label { font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.04em; color: #667; }
.tile .big { font-size: 1.55rem; font-weight: 650; margin: 0.1rem 0 0.25rem; font-variant-numeric: tabular-nums; }
.tile .small { font-size: 0.85rem; color: #444; }
.tile.bad { border-left-color: #c0392b; }
.tile.good { border-left-color: #2e8b57; }
.verdict { font-size: 1.05rem; margin: 0.6rem 0; }
.blockers { background: #fdecea; border: 1px solid #e6a19a; border-radius: 6px; padding: 0.6rem 0.9rem;
  margin: 0.6rem 0; }
.blockers ul { margin: 0.3rem 0 0; padding-left: 1.3rem; }
.facts { padding-left: 1.2rem; margin: 0.6rem 0; }
.risks { background: #fff8e6; border: 1px solid #f0d48a; border-radius: 6px; padding: 0.6rem 0.9rem; }
.risks ol { margin: 0.3rem 0 0; padding-left: 1.3rem; }
.table-wrap { max-width: 100%; overflow-x: auto; }
table.table { border-collapse: collapse; font-size: 0.82rem; margin: 0.4rem 0 0.6rem;
  font-variant-numeric: tabular-nums; }
table.table th { font-weight: 600; vertical-align: bottom; white-space: normal; max-width: 9rem; text-align: left;
  border-bottom: 2px solid #bbb; }
table.table th, table.table td { padding: 0.25rem 0.55rem; border-bottom: 1px solid #e3e3e3; }
table.table td { vertical-align: top; }
table.table.wide, table.table.wider { font-size: 0.74rem; }
table.table.wider { font-size: 0.68rem; }
table.table.wide th, table.table.wide td, table.table.wider th, table.table.wider td { padding: 0.2rem 0.3rem; }
table.table.wide th, table.table.wider th { max-width: 6.5rem; }
.caption { color: #555; font-size: 0.88rem; margin: -0.2rem 0 0.2rem; }
.note { color: #666; font-size: 0.85rem; margin-top: 0.2rem; }
.plotly-graph-div { max-width: 100%; }
"""


def write_report(
    scenario: Scenario,
    path: str | Path,
    catalog: Catalog | None = None,
    *,
    budget: float | None = None,
    balance: float | None = None,
) -> Path:
    """Write the report atomically: a failure leaves an existing file untouched. `budget` (per month) and
    `balance` (prepaid, today) are in the scenario's currency and feed the summary's P(over budget) and run-out."""
    return write_report_summary(scenario, path, catalog, budget=budget, balance=balance)[0]


def write_report_summary(
    scenario: Scenario,
    path: str | Path,
    catalog: Catalog | None = None,
    *,
    budget: float | None = None,
    balance: float | None = None,
):
    """`write_report`, also returning the first screen's `Summary` (its `verdict` is what the CLI prints)."""
    path = Path(path)
    sections = collect_sections(scenario, catalog, budget=budget, balance=balance)
    text = render_html(scenario, sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, what="report")
    return path, sections[0][1]
