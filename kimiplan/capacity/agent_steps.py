"""Agent sessions against the rate limits: the view the plan's table does not give (runs in flight, steps per
minute and reserved tokens per minute at the busiest minute). How a run becomes calls, for the plan and the
simulator, is `capacity.agent_calls` (re-exported here).
"""

from __future__ import annotations

import pandas as pd

from kimiplan.capacity.agent_calls import (  # noqa: F401 (re-exported: their old home)
    AGENT_SAMPLES,
    agent_call_sample,
    agent_step_row,
    expand_runs,
    session_chunks,
)
from kimiplan.capacity.demand import peak_factors, route_moments


def agent_capacity(scenario, catalog=None, moments: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per agent route at the busiest minute: runs started per minute, runs in flight (Little's law: runs per
    second x mean run duration), calls per minute, calls in flight and reserved tokens per minute (means)."""
    moments = route_moments(scenario, catalog) if moments is None else moments
    peaks = peak_factors(scenario)
    rows = []
    for r, route in zip(moments.to_dict("records"), scenario.routes):
        if route.agent is None or route.batch:
            continue
        runs_ps = scenario.traffic.mean_rps * route.share * peaks["peak_minute"]
        calls_ps = runs_ps * r["agent_calls_per_run"]
        rows.append(
            {
                "route": route.name,
                "runs_per_minute": 60 * runs_ps,
                "runs_in_flight": runs_ps * r["agent_run_duration_s"],
                "calls_per_run": r["agent_calls_per_run"],
                "steps_per_minute": 60 * calls_ps,
                "calls_in_flight": calls_ps * r["latency_mean_s"],
                "reserved_tokens_per_minute": 60 * calls_ps * r["reserved_mean"],
                "run_duration_s": r["agent_run_duration_s"],
            }
        )
    return pd.DataFrame(rows)
