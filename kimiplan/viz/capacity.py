"""Plotly figures for capacity: headroom per tier, the tier ladder, utilization over time, budget trade-off.
Presentation only: every number comes from `plan`, `simulate` or `budgets`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LIMIT_COLORS = {"concurrency": "#4C78A8", "rpm": "#F58518", "tpm": "#54A24B", "tpd": "#B279A2", "rpd": "#9D755D"}


def _compact(v: float) -> str:
    """20k, 1.5M, 300: an axis label with its magnitude written out."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:,.3g}{suffix}"
    return f"{v:,.3g}"


def log_axis(values, kind: str = "count") -> dict:
    """A log axis that reads at a glance: labelled ticks at 1, 2 and 5 times each power of ten in the data's
    range, each with its magnitude ("20k", "50k", "100k"; "0.1 %", never a bare "2" or "5")."""
    from kimiplan.io.formats import percent

    v = np.asarray([x for x in np.ravel(np.asarray(values, dtype=float)) if np.isfinite(x) and x > 0])
    axis: dict = {"type": "log", "minor": {"showgrid": True, "ticks": ""}}
    if v.size == 0:
        return axis
    lo, hi = float(v.min()) / 1.5, float(v.max()) * 1.5
    steps = (1, 2, 5) if math.log10(hi / lo) <= 4 else (1,)
    ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in steps]
    ticks = [t for t in ticks if lo <= t <= hi] or [10.0 ** round(math.log10(float(v.mean())))]
    text = [percent(t, trim=True) for t in ticks] if kind == "percent" else [_compact(t) for t in ticks]
    axis.update(tickmode="array", tickvals=ticks, ticktext=text)
    return axis


def _today(fig: go.Figure, x, y: float, label: str, log: bool = True) -> None:
    """Today's level as a dashed line with its own legend entry and a label on the line."""
    fig.add_scatter(
        x=list(x),
        y=[y] * len(x),
        mode="lines",
        name=label,
        line={"dash": "dash", "color": "#333", "width": 1.5},
        hovertemplate=label + "<extra></extra>",
    )
    # On a log axis an annotation's y is the exponent.
    fig.add_annotation(
        x=list(x)[0],
        y=math.log10(y) if log and y > 0 else y,
        text=label,
        showarrow=False,
        xanchor="left",
        yanchor="bottom",
        font={"size": 12, "color": "#333"},
    )


def headroom_figure(headroom: pd.DataFrame, title: str = "Peak demand / limit, per tier") -> go.Figure:
    """Grouped bars of peak utilization per limit for each tier; above the dashed 100 % line it refuses."""
    fig = go.Figure()
    for lim, part in headroom.groupby("limit", sort=False):
        fig.add_bar(
            name=lim,
            x=part["tier"],
            y=part["peak_utilization"],
            marker_color=LIMIT_COLORS.get(lim),
            customdata=np.stack([part["peak"], part["limit_value"]], axis=1),
            hovertemplate="%{x} " + lim + ": peak %{customdata[0]:,.0f} of %{customdata[1]:,.0f}"
            " (%{y:.0%})<extra></extra>",
        )
    tiers = list(dict.fromkeys(headroom["tier"])) if len(headroom) else []
    if tiers:
        _today(fig, tiers, 1.0, "the limit (100 %): above it, refusals")
    fig.update_layout(
        barmode="group",
        title=title,
        xaxis_title="tier",
        yaxis_title="busiest minute's demand / limit (log scale)",
        yaxis=log_axis([*headroom["peak_utilization"], 1.0] if len(headroom) else [], "percent"),
        legend_title_text="limit",
        template="plotly_white",
    )
    return fig


def tier_ladder_figure(
    ladder: pd.DataFrame, current_rps: float, title: str = "Largest sustainable rate per tier"
) -> go.Figure:
    """Bars of the largest request rate each tier sustains (refusals under target), current rate as a line."""
    colors = np.where(ladder["holds"], "#54A24B", "#E45756")
    fig = go.Figure(
        go.Bar(
            x=ladder["tier"],
            y=ladder["max_requests_per_day"],
            marker_color=colors,
            text=ladder["binding_limit"],
            textposition="outside",
            name="largest rate that keeps refusals under the target (green: holds today)",
            hovertemplate="%{x}: up to %{y:,.0f} requests/day; binds on %{text}<extra></extra>",
        )
    )
    today = current_rps * 86400
    _today(fig, ladder["tier"], today, f"today: {today:,.0f} requests/day")
    fig.update_layout(
        title=title,
        xaxis_title="tier",
        yaxis_title="requests per day (log scale; same mix and profile)",
        yaxis=log_axis([*ladder["max_requests_per_day"], today]),
        template="plotly_white",
        showlegend=True,
    )
    return fig


def tier_tables_figure(
    plan, current_rps: float, title: str = "Largest sustainable rate per tier, under each tier table"
) -> go.Figure:
    """The same ladder under every tier table of the last 12 months, side by side: bars of the largest request
    rate each tier sustains (refusals under the target), one colour per table, the current traffic as a line.
    Hatched bars: a table no official source confirms."""
    fig = go.Figure()
    colors = ("#4C78A8", "#F58518", "#54A24B", "#B279A2")
    for i, t in enumerate(plan.by_tier_table):
        ladder = plan.table_ladders.get(t["version"])
        if ladder is None or ladder.empty:
            continue
        label = f"table {t['version']} ({'official' if t['official'] else 'third-party'})" + (
            ", headline" if t.get("headline") else ""
        )
        fig.add_bar(
            name=label,
            x=ladder["tier"],
            y=ladder["max_requests_per_day"],
            marker_color=colors[i % len(colors)],
            marker_pattern_shape=None if t["official"] else "/",
            text=ladder["binding_limit"],
            hovertemplate="%{x}: up to %{y:,.0f} requests/day; binds on %{text}<extra>" + label + "</extra>",
        )
    today = current_rps * 86400
    tiers = list(dict.fromkeys(t for lad in plan.table_ladders.values() for t in lad["tier"]))
    if tiers:
        _today(fig, tiers, today, f"today: {today:,.0f} requests/day")
    fig.update_layout(
        barmode="group",
        title=title,
        xaxis_title="tier",
        yaxis_title="requests per day (log scale; same mix and profile)",
        yaxis=log_axis([*(x for lad in plan.table_ladders.values() for x in lad["max_requests_per_day"]), today]),
        template="plotly_white",
    )
    return fig


def utilization_figure(result, title: str = "Simulated load against each limit") -> go.Figure:
    """One panel per enforced limit: load over time, the limit as a dashed line, refusals as red marks."""
    lim = result.limits
    pm = result.per_minute
    minutes = pm["minute"].to_numpy()
    seconds = minutes * 60.0
    ps = result.per_second
    col = "peak_in_flight" if "peak_in_flight" in ps else "in_flight"
    # Per-minute maxima of the per-second series keep the plot small for long runs.
    n = len(ps) // 60 * 60
    y = ps[col].to_numpy()[:n].reshape(-1, 60).max(axis=1) if n else ps[col].to_numpy()
    panels = [("in flight (max per minute)", np.arange(y.size) * 60.0, y, lim.get("concurrency"), "concurrency")]
    panels.append(("requests per minute", seconds, pm["admitted"].to_numpy(), lim.get("rpm"), "rpm"))
    panels.append(("reserved tokens per minute", seconds, pm["reserved_tokens"].to_numpy(), lim.get("tpm"), "tpm"))
    if lim.get("tpd") is not None and len(result.per_day):
        d = result.per_day
        panels.append(
            (
                "reserved tokens per day",
                (d["day"].to_numpy() * 1440 + 720) * 60.0,
                d["reserved_tokens"].to_numpy(),
                lim.get("tpd"),
                "tpd",
            )
        )
    fig = make_subplots(
        rows=len(panels), cols=1, shared_xaxes=True, subplot_titles=[p[0] for p in panels], vertical_spacing=0.06
    )
    shown_limit = False
    for i, (name, x, y, limit, key) in enumerate(panels, start=1):
        fig.add_scatter(x=x / 3600.0, y=y, mode="lines", name=name, line_color=LIMIT_COLORS[key], row=i, col=1)
        if limit is not None:
            # The limit as a dashed line in the legend (once for all panels).
            fig.add_scatter(
                x=[float(x[0]) / 3600.0, float(x[-1]) / 3600.0] if len(x) else [0, 1],
                y=[limit, limit],
                mode="lines",
                name="the tier's limit",
                line={"dash": "dash", "color": "black", "width": 1},
                legendgroup="limit",
                showlegend=not shown_limit,
                hovertemplate=f"{key} limit {limit:,.0f}<extra></extra>",
                row=i,
                col=1,
            )
            shown_limit = True
        refused = pm[f"refused_{key}"].to_numpy() if f"refused_{key}" in pm else np.zeros(0)
        if refused.any() and key != "tpd":
            hit = refused > 0
            ymark = np.interp(seconds[hit], x, y) if key == "concurrency" else y[hit]
            fig.add_scatter(
                x=seconds[hit] / 3600.0,
                y=ymark,
                mode="markers",
                marker=dict(color="red", size=5),
                name=f"429 {key}",
                customdata=refused[hit],
                hovertemplate="%{customdata} refused<extra></extra>",
                row=i,
                col=1,
            )
    fig.update_xaxes(title_text="hours", row=len(panels), col=1)
    fig.update_layout(title=title, template="plotly_white", height=230 * len(panels) + 80)
    return fig


def budget_tradeoff_figure(
    curve: pd.DataFrame, current: int | None = None, recommended: int | None = None, title: str | None = None
) -> go.Figure:
    """Truncation probability (left) and peak-minute TPM reserved (right) against max_completion_tokens."""
    route = curve["route"].iloc[0] if len(curve) else ""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    p = curve["truncation_probability"].clip(lower=1e-6)
    fig.add_scatter(x=curve["max_completion_tokens"], y=p, name="P(finish_reason=length)", line_color="#E45756")
    fig.add_scatter(
        x=curve["max_completion_tokens"],
        y=curve["tpm_peak_minute"],
        name="TPM reserved (peak minute)",
        line_color="#4C78A8",
        secondary_y=True,
    )
    lo = float(p.min()) if len(p) else 1e-6
    for label, b, dash in (("today's budget", current, "dash"), ("recommended", recommended, "dot")):
        if b is not None:
            # A vertical line with its own legend entry (a log axis leaves vline annotations unplaced).
            fig.add_scatter(
                x=[b, b],
                y=[lo, 1.0],
                mode="lines",
                name=f"{label}: {b:,} tokens",
                line={"dash": dash, "color": "#333", "width": 1.5},
                hovertemplate=f"{label} {b:,}<extra></extra>",
            )
    fig.update_xaxes(**log_axis(curve["max_completion_tokens"]), title_text="max_completion_tokens (log scale)")
    fig.update_yaxes(**log_axis(p, "percent"), title_text="truncation probability (log scale)", secondary_y=False)
    fig.update_yaxes(title_text="reserved tokens per minute", secondary_y=True)
    fig.update_layout(title=title or f"Budget trade-off: {route}", template="plotly_white")
    return fig
