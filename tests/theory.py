"""Shared builder for scenarios checkable against queueing theory (imported by the capacity tests)."""

from __future__ import annotations

from kimiplan.model.scenario import parse_scenario


def theory_scenario(**over):
    """Constant-rate Poisson arrivals, fixed tokens, exponential latency, a tier with only concurrency."""
    data = {
        "name": "theory",
        "provider": "moonshot",
        "model": "kimi-k2.6",
        "as_of": "2026-11-26",
        "seed": 11,
        "tier": {"name": "only-concurrency", "concurrency": 20},
        "traffic": {"requests_per_second": 4.0},
        "routes": [
            {
                "name": "r",
                "share": 1.0,
                "system": 1000,
                "output": 200,
                "max_completion_tokens": 1024,
                "overhead_tokens": 0,
                "latency": {"total_s": {"kind": "exponential", "mean": 4.0}},
            }
        ],
    }
    data.update(over)
    return parse_scenario(data)
