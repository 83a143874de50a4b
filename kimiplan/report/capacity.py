"""Capacity sections for `kimiplan report`: the plan, the tier ladder, budgets and a short simulation."""

from __future__ import annotations

import html

import pandas as pd

from kimiplan.capacity.budgets import budget_curve, recommend_budgets
from kimiplan.capacity.plan import peak_factors, plan, sdk_client_effect, tier_headroom
from kimiplan.capacity.result import client_effect_sentence
from kimiplan.catalog.resolve import rate_tier
from kimiplan.viz.capacity import (
    budget_tradeoff_figure,
    headroom_figure,
    tier_ladder_figure,
    tier_tables_figure,
    utilization_figure,
)

REPORT_SIM_HOURS = 24.0


def capacity_report_sections(scenario, catalog=None) -> list:
    """(title, DataFrame | Figure | HTML) pairs; a scenario without a tier gets demand and budgets only."""
    from kimiplan.capacity.sim.simulate import SimSettings, route_table, simulate, worst_route
    from kimiplan.catalog.cards import load_catalog

    catalog = catalog or load_catalog()
    p = plan(scenario, catalog)
    # The plan's route moments and the peak factors serve every section below (computed once per report).
    moments, peaks = p.moments, peak_factors(scenario)
    out = []
    if p.tier is not None:
        lines = p.describe().splitlines()
        if (p.client_effect or {}).get("client") != "openai-sdk":
            # What production code with default settings sees: the OpenAI SDK's own retries.
            sdk = sdk_client_effect(scenario, catalog, peaks=peaks)
            if sdk is not None:
                lines.append(client_effect_sentence(sdk))
        paras = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
        out.append(("Capacity summary", paras))
    if p.by_tier_table:
        cols = [
            "version",
            "official",
            "headline",
            "in_force_on_as_of",
            "smallest_tier",
            "tier",
            "refusal_total",
            "binding_limit",
            "binding_limit_value",
            "busiest_minute_use",
            "max_scale",
            "max_requests_per_second",
            "exhausted_on",
            "source",
        ]
        out.append(("The verdict under each tier table (last 12 months)", p.tier_tables[cols].round(6)))
        if len(p.by_tier_table) > 1:
            out.append(("Each tier table side by side", tier_tables_figure(p, scenario.traffic.mean_rps)))
    if p.tier is not None:
        # Headroom has one definition (the growth multiple, in the summary above): the tables show each limit's
        # use at the busiest minute, not a second "headroom" of 1 - use.
        total = p.demand[p.demand["route"] == "total"].drop(columns=["headroom"])
        out.append(("Demand and use of each limit at the busiest minute (total)", total.round(4)))
    out.append(("Demand per route", p.demand[p.demand["route"] != "total"].drop(columns=["headroom"]).round(4)))
    if len(p.ladder):
        out.append(("Tier ladder", p.ladder.round(6)))
        out.append(("Largest sustainable rate per tier", tier_ladder_figure(p.ladder, scenario.traffic.mean_rps)))
        out.append(
            (
                "Busiest minute's use of each limit, per tier",
                headroom_figure(tier_headroom(scenario, catalog, moments=moments, peaks=peaks)),
            )
        )
    rec = recommend_budgets(scenario, catalog, moments=moments, peaks=peaks)
    out.append(("max_completion_tokens per route (1 % truncation target)", rec.round(4)))
    worst = rec.sort_values("tpm_freed_vs_current", ascending=False).iloc[0]
    curve = budget_curve(scenario, worst["route"], catalog, moments=moments, peaks=peaks)
    out.append(
        (
            f"Budget trade-off: {worst['route']}",
            budget_tradeoff_figure(curve, int(worst["current_budget"]), int(worst["recommended_budget"])),
        )
    )
    if p.tier is not None:
        tier = rate_tier(scenario, catalog)
        online = any(not r.batch for r in scenario.routes)
        if online and any(v is not None for v in tier.limits().values()):
            # The scenario's own client and windows (its `simulation:` section), over a fixed report horizon.
            settings = SimSettings.for_scenario(scenario, hours=REPORT_SIM_HOURS)
            sim = simulate(scenario, catalog, settings)
            client = {
                "none": "no retries",
                "retry": "client retries",
                "pace": "client paces",
                "openai-sdk": "OpenAI SDK default retries",
            }[settings.client.kind]
            out.append((f"Simulated {REPORT_SIM_HOURS:g} h against {tier.name} ({client})", utilization_figure(sim)))
            s = sim.summary
            out.append(
                (
                    "Simulated peak usage and refusals per limit",
                    pd.DataFrame(
                        [
                            {
                                "limit": k,
                                "busiest": u["peak"],
                                "limit_value": u["limit"],
                                "share_of_limit": u["share_of_limit"],
                                "refused_share_of_attempts": s["rejected_fraction"][k],
                            }
                            for k, u in s["peak_usage"].items()
                        ]
                    ).round(4),
                )
            )
            if len(s["by_route"]) > 1:
                worst = worst_route(s["rejected_fraction_by_route"])
                title = "Simulated refusals per route" + (f" (refused most: {worst})" if worst else "")
                out.append((title, route_table(s).round(4)))
    return out
