"""Plotly figures for the forecast. Presentation only: the numbers come from forecast/variants frames."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from kimiplan.errors import ConfigError
from kimiplan.viz.theme import styled


def fan_chart(fc, title: str | None = None) -> go.Figure:
    """Monthly spend: outer and inner quantile bands, the median and the expected value (and the budget)."""
    m = fc.monthly
    qs = sorted(fc.quantiles)
    fig = go.Figure()
    # Nested bands: pair the outermost quantiles first so inner bands draw on top.
    pairs = [(qs[i], qs[-1 - i]) for i in range(len(qs) // 2)]
    for k, (lo, hi) in enumerate(pairs):
        lo_c, hi_c = f"P{lo * 100:g}", f"P{hi * 100:g}"
        fig.add_trace(
            go.Scatter(x=m["month"], y=m[hi_c], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip")
        )
        fig.add_trace(
            go.Scatter(
                x=m["month"],
                y=m[lo_c],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=f"rgba(31,119,180,{0.15 + 0.15 * k})",
                name=f"{lo_c}–{hi_c}",
            )
        )
    if 0.5 in qs:
        fig.add_trace(go.Scatter(x=m["month"], y=m["P50"], mode="lines+markers", name="P50", line={"color": "#1f77b4"}))
    fig.add_trace(
        go.Scatter(x=m["month"], y=m["expected"], mode="lines", name="expected", line={"color": "black", "dash": "dot"})
    )
    if fc.budget is not None:
        fig.add_hline(
            y=fc.budget,
            line={"color": "firebrick", "dash": "dash"},
            annotation_text=f"budget {fc.budget:,.0f} {fc.currency}",
            annotation_position="top left",
        )
    flagged = m[m["status"] != "ok"]
    if len(flagged):
        fig.add_trace(
            go.Scatter(
                x=flagged["month"],
                y=flagged["expected"].fillna(0),
                mode="markers",
                name="flagged",
                marker={"symbol": "x", "size": 12, "color": "firebrick"},
                text=flagged["status"],
            )
        )
    fig.update_layout(
        title=title or f"Monthly spend, {fc.scenario.name} ({fc.currency})",
        xaxis_title="month",
        yaxis_title=f"spend ({fc.currency})",
        hovermode="x unified",
    )
    return styled(fig)


def route_area_chart(fc, by: str = "route") -> go.Figure:
    """Stacked area of expected monthly spend by route (or component / price_class)."""
    from kimiplan.finance.forecast import monthly_by

    wide = monthly_by(fc, by)
    fig = go.Figure()
    for col in wide.columns[1:]:
        fig.add_trace(go.Scatter(x=wide["month"], y=wide[col], mode="lines", stackgroup="one", name=str(col)))
    fig.update_layout(
        title=f"Expected monthly spend by {by} ({fc.currency})",
        xaxis_title="month",
        yaxis_title=f"spend ({fc.currency})",
    )
    return styled(fig)


def variants_chart(monthly: pd.DataFrame) -> go.Figure:
    """Expected monthly spend of each variant (a `variants.compare_monthly` frame)."""
    need = {"variant", "month", "expected"}
    if not need <= set(monthly.columns):
        raise ConfigError(f"variants_chart needs columns {sorted(need)}, got {list(monthly.columns)}")
    fig = go.Figure()
    for name, g in monthly.groupby("variant", sort=False):
        fig.add_trace(go.Scatter(x=g["month"], y=g["expected"], mode="lines+markers", name=str(name)))
    cur = monthly["currency"].iloc[0] if "currency" in monthly else ""
    fig.update_layout(
        title=f"Expected monthly spend by variant ({cur})", xaxis_title="month", yaxis_title=f"spend ({cur})"
    )
    return styled(fig)


def waterfall_chart(wf: pd.DataFrame, base_label: str = "base", other_label: str = "other") -> go.Figure:
    """Waterfall from one variant's horizon total to another's through the drivers (a `variants.waterfall` frame)."""
    labels = [base_label if s == "base" else other_label if s == "other" else s for s in wf["step"]]
    fig = go.Figure(
        go.Waterfall(x=labels, y=wf["amount"], measure=list(wf["measure"]), connector={"line": {"color": "#999"}})
    )
    fig.update_layout(
        title=f"From {base_label} to {other_label}: drivers of the difference ({wf['currency'].iloc[0]})",
        yaxis_title=wf["currency"].iloc[0],
        showlegend=False,
    )
    return styled(fig)
