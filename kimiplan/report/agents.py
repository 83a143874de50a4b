"""Report sections for agent routes: per-run distributions, why runs stop, the session view of capacity, and
context growth over steps. Empty when the scenario has no agent route."""

from __future__ import annotations

from kimiplan.capacity.agent_steps import agent_capacity
from kimiplan.catalog.cards import Catalog
from kimiplan.finance.agents import agent_routes_stats
from kimiplan.model.scenario import Scenario
from kimiplan.report.tables import Table
from kimiplan.viz.agents import cached_input_figure, context_growth_figure
from kimiplan.workload.agent import steps_frame


def agent_report_sections(scenario: Scenario, catalog: Catalog) -> list:
    if not any(r.agent is not None for r in scenario.routes):
        return []
    out = []
    for st in agent_routes_stats(scenario, catalog, runs=2000):
        out += [
            (
                f"Agent route {st.route}: per run, step and price class",
                Table(
                    st.table,
                    note=f"{st.runs:,} sampled runs; money in {st.currency}, tax as in the scenario. One request of "
                    "this route is one run: its row in the tables above is per run.",
                ),
            ),
            (
                f"Agent route {st.route}: why runs stop",
                Table(
                    st.stops,
                    currency=st.currency,
                    formats={"share": "percent", "share_of_spend": "percent"},
                    note="Runs that stop before 'done' are unresolved: their cost is part of the bill.",
                ),
            ),
            (f"Agent route {st.route}: context growth", context_growth_figure(steps_frame(st.draw))),
            (f"Agent route {st.route}: cached and uncached input", cached_input_figure(steps_frame(st.draw))),
        ]
    cap = agent_capacity(scenario, catalog)
    if not cap.empty:
        out.append(
            (
                "Agent runs as sessions at the busiest minute",
                Table(
                    cap,
                    note="Every call reserves its prompt plus max_completion_tokens against TPM and counts against "
                    "RPM; runs in flight by Little's law (runs per second x mean run duration).",
                ),
            )
        )
    return out
