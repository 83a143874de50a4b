"""Sweeps of scenario overrides (tier, max_completion_tokens, growth, provider, model ...), planned point by point
with shared work cached, on the local engine or an existing Dask cluster."""

from kimiplan.sweeps.grid import apply_overrides, load_grid
from kimiplan.sweeps.run import SweepResult, sweep

__all__ = ["SweepResult", "apply_overrides", "load_grid", "sweep"]
