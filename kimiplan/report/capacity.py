"""Capacity sections for `kimiplan report`: the plan, the tier ladder, budgets and a short simulation."""

from __future__ import annotations

import html

import pandas as pd

from kimiplan.capacity.budgets import budget_curve, recommend_budgets
from kimiplan.capacity.plan import peak_factors, plan, tier_headroom
from kimiplan.catalog.resolve import rate_tier
from kimiplan.viz.capacity import budget_tradeoff_figure, headroom_figure, tier_ladder_figure, utilization_figure

REPORT_SIM_HOURS = 24.0


def capacity_report_sections(scenario, catalog=None) -> list:
    """(title, DataFrame | Figure | HTML) pairs; a scenario without a tier gets demand and budgets only."""
    from kimiplan.capacity.sim.simulate import SimSettings, simulate
    from kimiplan.catalog.cards import load_catalog

    catalog = catalog or load_catalog()
    p = plan(scenario, catalog)
    # The plan's route moments and the peak factors serve every section below (computed once per report).
    moments, peaks = p["moments"], peak_factors(scenario)
    out = []
    if p.get("tier") is not None:
        ex = p["exhaustion"]
        when = (
            "already over the target"
            if ex["months"] == 0
            else "not within 3 years"
            if ex["date"] is None
            else f"{ex['date']:%Y-%m} (month {ex['months']})"
        )
        wk = p["week_average"]["refusal_total"]
        w = p.get("pacing_wait")
        pacing = (
            ""
            if w is None
            else (
                " A client that waits for a free slot instead of taking a 429 would queue without bound at the "
                "busiest minute."
                if not w["stable"]
                else f" If the client waited for a free slot instead of taking a 429, {w['p_wait']:.2%} of requests would "
                f"wait at the busiest minute, {w['mean_wait_s']:.3g} s on average (Erlang C)."
            )
        )
        out.append(
            (
                "Capacity summary",
                (
                    f"<p>Tier <b>{html.escape(p['tier'])}</b>: refusals at the busiest minute {p['refusal_total']:.3%} "
                    f"(averaged over a week {wk:.3%}); binding limit <b>{p['binding_limit']}</b>. "
                    f"It sustains {p['max_scale']:.2f}x today's traffic; with growth of "
                    f"{scenario.traffic.monthly_growth:.0%}/month it is exhausted: {when}. "
                    f"Smallest tier under {p['target']:.1%} refusals: <b>{p['smallest_tier'] or 'none'}</b>.{pacing}</p>"
                ),
            )
        )
        total = p["demand"][p["demand"]["route"] == "total"]
        out.append(("Demand and headroom per limit (total)", total.round(4)))
    out.append(("Demand per route", p["demand"][p["demand"]["route"] != "total"].round(4)))
    if len(p["ladder"]):
        out.append(("Tier ladder", p["ladder"].round(6)))
        out.append(("Largest sustainable rate per tier", tier_ladder_figure(p["ladder"], scenario.traffic.mean_rps)))
        out.append(
            (
                "Headroom per limit per tier",
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
    if p.get("tier") is not None:
        tier = rate_tier(scenario, catalog)
        online = any(not r.batch for r in scenario.routes)
        if online and any(v is not None for v in tier.limits().values()):
            # The scenario's own client and windows (its `simulation:` section), over a fixed report horizon.
            settings = SimSettings.for_scenario(scenario, hours=REPORT_SIM_HOURS)
            sim = simulate(scenario, catalog, settings)
            client = {"none": "no retries", "retry": "client retries", "pace": "client paces"}[settings.client.kind]
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
    return out
