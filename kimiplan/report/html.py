"""One self-contained HTML report for a scenario: tokens, cost, capacity and forecast sections.

Presentation only. Each analysis module offers `*_report_sections(scenario, catalog)` returning
(title, object) pairs, where object is a DataFrame, a plotly Figure or an HTML string."""

from __future__ import annotations

import datetime as dt
import html
import importlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from kimiplan import __version__
from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.resolve import price_card, rate_tier
from kimiplan.finance.cost import cost_summary, expected_cost
from kimiplan.model.scenario import COMPONENTS, Scenario
from kimiplan.viz.breakdown import cost_breakdown_figure, token_breakdown_figure
from kimiplan.workload.draws import context_check, expected_tokens

Section = tuple[str, Any]

# Optional section providers from the analysis modules: (module, function).
_PROVIDERS = [
    ("kimiplan.report.capacity", "capacity_report_sections"),
    ("kimiplan.report.forecast", "forecast_report_sections"),
]


def foundation_sections(scenario: Scenario, catalog: Catalog) -> list[Section]:
    card = price_card(scenario, catalog)
    tier = rate_tier(scenario, catalog)
    exp = expected_tokens(scenario, card)
    cost = expected_cost(scenario, catalog, card, expected=exp)
    ctx = context_check(scenario, card)
    overview = pd.DataFrame(
        [
            {"item": "model", "value": f"{card.model} ({card.provider}/{card.region})"},
            {
                "item": "prices per 1M tokens",
                "value": f"cache hit {card.cache_hit_price} / cache miss {card.input_cache_miss} / output {card.output} {card.currency}",
            },
            {
                "item": "price source",
                "value": f"{card.source} (verified {card.verified_on}, {'official' if card.official else 'third-party'})",
            },
            {
                "item": "tier",
                "value": "none"
                if tier is None
                else f"{tier.name}: " + ", ".join(f"{k} {v:,}" for k, v in tier.limits().items() if v),
            },
            {"item": "tier source", "value": "" if tier is None else f"{tier.source} (verified {tier.verified_on})"},
            {
                "item": "traffic",
                "value": f"{scenario.traffic.per_day:,.0f} requests/day, growth {scenario.traffic.monthly_growth:.0%}/month",
            },
            {"item": "as of", "value": scenario.as_of.isoformat()},
        ]
    )
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
    sections: list[Section] = [
        ("Scenario", overview),
        ("Tokens per request", token_breakdown_figure(exp)),
        ("Mean tokens per request (table)", exp[cols].round(3)),
        ("Expected cost by route", cost_summary(cost).round(6)),
        ("Monthly cost by price class", cost_breakdown_figure(cost, "price_class")),
        ("Monthly cost by component", cost_breakdown_figure(cost, "component")),
        ("Context window check (p99 input + max_completion_tokens)", ctx.round(4)),
    ]
    return sections


def collect_sections(
    scenario: Scenario, catalog: Catalog | None = None, providers: Iterable[tuple[str, str]] = _PROVIDERS
) -> list[Section]:
    catalog = catalog or load_catalog()
    sections = foundation_sections(scenario, catalog)
    for mod_name, fn_name in providers:
        # Providers are named, not imported here, so this module does not import every section's dependencies.
        fn: Callable = getattr(importlib.import_module(mod_name), fn_name)
        sections += fn(scenario, catalog)
    return sections


def _render(obj: Any, first_figure: list[bool]) -> str:
    if isinstance(obj, go.Figure):
        include = "inline" if first_figure[0] else False
        first_figure[0] = False
        return obj.to_html(full_html=False, include_plotlyjs=include, config={"displaylogo": False})
    if isinstance(obj, pd.DataFrame):
        return obj.to_html(index=False, border=0, classes="table", na_rep="", float_format=lambda v: f"{v:,.6g}")
    if isinstance(obj, str):
        return obj
    return f"<pre>{html.escape(str(obj))}</pre>"


def render_html(scenario: Scenario, sections: list[Section]) -> str:
    first = [True]
    body = "\n".join(f"<section><h2>{html.escape(t)}</h2>\n{_render(o, first)}</section>" for t, o in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kimiplan report: {html.escape(scenario.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
table.table {{ border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }}
table.table th, table.table td {{ padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; }}
table.table th:first-child, table.table td:first-child {{ text-align: left; }}
h2 {{ border-bottom: 2px solid #4C78A8; padding-bottom: 0.2rem; margin-top: 2.2rem; }}
.note {{ color: #666; font-size: 0.85rem; }}
</style></head><body>
<h1>kimiplan report: {html.escape(scenario.name)}</h1>
<p>{html.escape(scenario.description)}</p>
<p class="note">Generated by kimiplan {__version__} on {dt.date.today().isoformat()}. Prices and tiers come from the
dated catalog (sources and verification dates shown); token sizes are the scenario's assumptions unless calibrated.</p>
{body}
</body></html>
"""


def write_report(scenario: Scenario, path: str | Path, catalog: Catalog | None = None) -> Path:
    """Write the report atomically: a failure leaves an existing file untouched."""
    path = Path(path)
    text = render_html(scenario, collect_sections(scenario, catalog))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp creates 0600; give the report the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
