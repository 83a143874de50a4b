"""Forecast sections for `kimiplan report`: bands, spend by route, variants and the drivers of a change."""

from __future__ import annotations

import html
from typing import Any

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.finance.forecast import forecast
from kimiplan.finance.variants import compare, compare_monthly, run_variants, standard_variants, waterfall
from kimiplan.model.scenario import Scenario
from kimiplan.viz.forecast import fan_chart, route_area_chart, variants_chart, waterfall_chart


def forecast_report_sections(scenario: Scenario, catalog: Catalog | None = None) -> list[tuple[str, Any]]:
    """Sections for the HTML report: bands, spend by route, variants side by side and the drivers of a change."""
    catalog = catalog or load_catalog()
    fc = forecast(scenario, 12, catalog=catalog, paths=2000)
    cols = ["month", "requests", "expected", *fc.quantile_columns(), "status"]
    sections: list[tuple[str, Any]] = [
        ("Monthly spend forecast (Monte Carlo bands)", fan_chart(fc)),
        ("Monthly spend forecast (table)", fc.monthly[cols].round(2)),
        ("Expected spend by route", route_area_chart(fc)),
    ]
    if fc.warnings:
        sections.append(
            ("Forecast warnings", "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in fc.warnings) + "</ul>")
        )
    fcs = run_variants(standard_variants(scenario, catalog), 12, catalog=catalog, paths=500)
    sections += [
        ("Variants side by side (12 months)", compare(fcs).round(2)),
        ("Variants: expected monthly spend", variants_chart(compare_monthly(fcs))),
    ]
    other = next((n for n in ("thinking off", "Batch API (all routes)", "kimi-k2.5") if n in fcs), None)
    if other:
        sections.append(
            (f"From base to {other!r}: drivers", waterfall_chart(waterfall(fcs["base"], fcs[other]), "base", other))
        )
    return sections
