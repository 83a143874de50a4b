"""Plotly figures for token and cost breakdowns. Presentation only: the numbers come from the library."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from kimiplan.model.scenario import COMPONENTS
from kimiplan.viz.theme import styled

COMPONENT_COLORS = {
    "system": "#4C78A8",
    "history": "#72B7B2",
    "rag": "#54A24B",
    "documents": "#EECA3B",
    "user": "#B279A2",
    "overhead": "#BAB0AC",
    "tool_rounds": "#FF9DA6",
    "reasoning": "#F58518",
    "output": "#E45756",
    "tools": "#9D755D",
}
CLASS_COLORS = {
    "input_cache_hit": "#9ECAE9",
    "input_cache_miss": "#4C78A8",
    "output": "#E45756",
    "tool_calls": "#9D755D",
}


def token_breakdown_figure(expected: pd.DataFrame, title: str = "Mean tokens per request, by route") -> go.Figure:
    """Stacked bars: input components (cached part hatched) then reasoning and output, per route."""
    fig = go.Figure()
    for comp in COMPONENTS:
        cached = expected.get(f"{comp}_cached", 0.0)
        fig.add_bar(
            name=f"{comp} (cache hit)",
            x=expected["route"],
            y=cached,
            marker_color=COMPONENT_COLORS[comp],
            marker_pattern_shape="/",
            legendgroup=comp,
            showlegend=bool((pd.Series(cached) > 0).any()),
        )
        fig.add_bar(
            name=comp,
            x=expected["route"],
            y=expected[comp] - cached,
            marker_color=COMPONENT_COLORS[comp],
            legendgroup=comp,
        )
    fig.add_bar(
        name="reasoning",
        x=expected["route"],
        y=expected["reasoning_tokens"],
        marker_color=COMPONENT_COLORS["reasoning"],
    )
    fig.add_bar(
        name="output", x=expected["route"], y=expected["output_tokens"], marker_color=COMPONENT_COLORS["output"]
    )
    fig.update_layout(
        barmode="stack",
        title=title,
        yaxis_title="tokens per request",
        legend_traceorder="normal",
    )
    return styled(fig)


def cost_breakdown_figure(cost: pd.DataFrame, by: str = "price_class", value: str = "cost_per_month") -> go.Figure:
    """Stacked bars of expected monthly cost per route, split by price class or by component."""
    if by not in ("price_class", "component"):
        raise ValueError(f"by must be 'price_class' or 'component', got {by!r}")
    agg = cost.groupby(["route", by], sort=False, observed=True)[value].sum().reset_index()
    colors = CLASS_COLORS if by == "price_class" else COMPONENT_COLORS
    fig = go.Figure()
    for key, part in agg.groupby(by, sort=False):
        if part[value].abs().sum() == 0:
            continue
        fig.add_bar(name=str(key), x=part["route"], y=part[value], marker_color=colors.get(key))
    cur = cost["currency"].iloc[0]
    fig.update_layout(
        barmode="stack",
        title=f"Expected {value.replace('_', ' ')} by route and {by.replace('_', ' ')} ({cur})",
        yaxis_title=cur,
    )
    return styled(fig)
