"""Plotly figures for calibration: what the fitted laws predict against what the calls showed. Presentation
only: the numbers come from `kimiplan.calibration.fitters.predicted_vs_observed`."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from kimiplan.viz.capacity import log_axis
from kimiplan.viz.theme import styled


def predicted_vs_observed_figure(
    table: pd.DataFrame, title: str = "Calibration: predicted vs observed token statistics"
) -> go.Figure:
    """One point per route and statistic (mean, p50, p95 of output and reasoning tokens), on log axes whose ticks
    carry their magnitude, with the line where prediction equals observation in the legend."""
    t = table[table["metric"] != "truncation rate"]  # a share, not tokens: it has its own row in the table
    fig = go.Figure()
    for route, g in t.groupby("route", sort=False):
        fig.add_scatter(
            x=g["predicted"],
            y=g["observed"],
            mode="markers",
            name=str(route),
            text=g["metric"],
            hovertemplate="%{text}<br>predicted %{x:,.0f}<br>observed %{y:,.0f} tokens<extra>%{fullData.name}</extra>",
        )
    values = pd.concat([t["predicted"], t["observed"]])
    lo, hi = float(values.min()), float(values.max())
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="observed = predicted", line={"dash": "dot"})
    fig.update_layout(
        title=title,
        xaxis={**log_axis(values), "title": "predicted by the fitted law (tokens, log scale)"},
        yaxis={**log_axis(values), "title": "observed in the calls (tokens, log scale)"},
        legend_title_text="route",
    )
    return styled(fig)
