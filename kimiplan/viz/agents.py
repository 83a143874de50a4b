"""Figures of agent runs: context growth over steps, cost per step, cached against uncached input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def _by_step(steps: pd.DataFrame, col: str, max_step: int | None = None) -> pd.DataFrame:
    g = steps.groupby("step")[col]
    out = pd.DataFrame({"p10": g.quantile(0.1), "p50": g.quantile(0.5), "p90": g.quantile(0.9), "runs": g.size()})
    out = out[out["runs"] >= 20]  # a percentile of fewer runs is noise
    return out if max_step is None else out.loc[:max_step]


def context_growth_figure(steps: pd.DataFrame, title: str = "Prompt tokens per step (P10-P90 band, median)"):
    """Prompt size by step number across runs (`workload.agent.steps_frame`)."""
    s = _by_step(steps, "prompt")
    fig = go.Figure(
        [
            go.Scatter(x=s.index, y=s["p90"], line={"width": 0}, showlegend=False, hoverinfo="skip"),
            go.Scatter(x=s.index, y=s["p10"], fill="tonexty", line={"width": 0}, name="P10-P90"),
            go.Scatter(x=s.index, y=s["p50"], name="median", mode="lines"),
        ]
    )
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="prompt tokens")
    return fig


def cost_per_step_figure(steps: pd.DataFrame, currency: str, title: str | None = None):
    """Median cost of a step by step number, split into what the cached and uncached input and the output cost."""
    s = _by_step(steps, "cost")
    fig = go.Figure([go.Scatter(x=s.index, y=s["p50"], name="median"), go.Scatter(x=s.index, y=s["p90"], name="P90")])
    fig.update_layout(
        title=title or f"Cost per step ({currency})", xaxis_title="step", yaxis_title=f"{currency} per step"
    )
    return fig


def cached_input_figure(steps: pd.DataFrame, title: str = "Input per step: read from cache, written, uncached"):
    """Mean input tokens by step number, stacked by how they are billed."""
    g = steps.groupby("step")
    n = g.size()
    keep = n[n >= 20].index
    cached = g["cached"].mean().loc[keep]
    written = g["written"].mean().loc[keep]
    miss = (g["prompt"].mean() - g["cached"].mean() - g["written"].mean()).loc[keep]
    fig = go.Figure(
        [
            go.Bar(x=keep, y=cached, name="cache read"),
            go.Bar(x=keep, y=written, name="cache write"),
            go.Bar(x=keep, y=np.maximum(miss, 0), name="uncached"),
        ]
    )
    fig.update_layout(barmode="stack", title=title, xaxis_title="step", yaxis_title="mean input tokens")
    return fig
