"""Figures (plotly) for every view kimiplan computes: presentation only, no arithmetic lives here."""

from kimiplan.viz.agents import cached_input_figure, context_growth_figure, cost_per_step_figure
from kimiplan.viz.breakdown import cost_breakdown_figure, token_breakdown_figure
from kimiplan.viz.calibration import predicted_vs_observed_figure
from kimiplan.viz.capacity import (
    budget_tradeoff_figure,
    headroom_figure,
    tier_ladder_figure,
    tier_tables_figure,
    utilization_figure,
)
from kimiplan.viz.forecast import fan_chart, route_area_chart, variants_chart, waterfall_chart
from kimiplan.viz.theme import setup_notebook

__all__ = [
    "budget_tradeoff_figure",
    "cached_input_figure",
    "context_growth_figure",
    "cost_breakdown_figure",
    "cost_per_step_figure",
    "fan_chart",
    "headroom_figure",
    "predicted_vs_observed_figure",
    "route_area_chart",
    "setup_notebook",
    "tier_ladder_figure",
    "tier_tables_figure",
    "token_breakdown_figure",
    "utilization_figure",
    "variants_chart",
    "waterfall_chart",
]
