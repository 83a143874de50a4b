"""Forecast sections for `kimiplan report`: bands, spend by route, variants and the drivers of a change."""

from __future__ import annotations

import html
from typing import Any

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.finance.forecast import Forecast, forecast
from kimiplan.finance.variants import compare, compare_monthly, run_variants, standard_variants, waterfall
from kimiplan.model.scenario import Scenario
from kimiplan.report.tables import Table
from kimiplan.viz.forecast import fan_chart, route_area_chart, variants_chart, waterfall_chart

REPORT_PATHS = 2000


def report_forecast(scenario: Scenario, catalog: Catalog, budget: float | None = None, months: int = 12) -> Forecast:
    return forecast(scenario, months, catalog=catalog, paths=REPORT_PATHS, budget=budget)


def fitting_variants(scenario: Scenario, table) -> list[str]:
    """Variants a reader could actually adopt for this scenario's routes, cheapest first: priced like for like
    (status ok), and no Batch API for routes that answer people while they wait."""
    interactive = any(not r.batch for r in scenario.routes)
    rows = table[(table["variant"] != "base") & (table["status"] == "ok")]
    if interactive:
        rows = rows[~rows["variant"].str.contains("Batch", case=False)]
    return list(rows.sort_values("expected_total")["variant"])


def _variants_view(table):
    """The comparison a reader scans: what, how much, the change, then details; empty detail columns dropped."""
    cols = ["variant", "model", "status", "expected_total", "P10_total", "P90_total", "per_month", "vs_first"]
    cols += ["vs_first_pct"]
    cols += [c for c in ("free_allowance", "neurons_per_day") if table[c].abs().sum() > 0]
    return table[[*cols, "currency", "notes"]]


def forecast_report_sections(
    scenario: Scenario, catalog: Catalog | None = None, fc: Forecast | None = None, budget: float | None = None
) -> list[tuple[str, Any]]:
    """Sections for the HTML report: bands, spend by route, variants side by side and the drivers of a change."""
    catalog = catalog or load_catalog()
    fc = fc or report_forecast(scenario, catalog, budget)
    cols = ["month", "days", "requests", "expected", *fc.quantile_columns()]
    if fc.budget is not None:
        cols.append("p_over_budget")
    cols.append("status")
    if "capacity_status" in fc.monthly and fc.monthly["capacity_status"].notna().any():
        # Months the tier cannot carry, with the tier to move to and the cumulative recharge it needs.
        cols += ["capacity_status", "upgrade_to", "upgrade_recharge"]
    sections: list[tuple[str, Any]] = [
        ("Monthly spend forecast", fan_chart(fc)),
        (
            "Monthly spend forecast (table)",
            Table(
                fc.monthly[cols],
                currency=fc.currency,
                note="Expected: the analytic mean; P10/P50/P90: quantiles of the Monte Carlo paths (daily traffic "
                "noise and growth uncertainty)."
                + (f" The {fc.parameter_note}." if fc.parameter_note else "")
                + " Tax included at the scenario's rate.",
            ),
        ),
        ("Expected spend by route", route_area_chart(fc)),
    ]
    if fc.warnings:
        sections.append(
            ("Forecast warnings", "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in fc.warnings) + "</ul>")
        )
    fcs = run_variants(standard_variants(scenario, catalog), 12, catalog=catalog, paths=500)
    table = compare(fcs)
    sections += [
        (
            "Variants side by side (12 months)",
            Table(
                _variants_view(table),
                currency=fc.currency,
                note="Each variant runs the same routes and traffic; “Vs first” is the change of the 12-month "
                "expected total against the base. A status other than ok means the row is not like for like.",
            ),
        ),
        ("Variants: expected monthly spend", variants_chart(compare_monthly(fcs))),
    ]
    fitting = fitting_variants(scenario, table)
    if fitting:
        other = fitting[0]
        sections.append(
            (
                f"From base to “{other}”: drivers of the difference",
                waterfall_chart(waterfall(fcs["base"], fcs[other]), "base", other),
            )
        )
    return sections
