"""Refusals per route: two routes reserving 2,000 and 10,000 tokens under one sliding TPM limit.

Each admitted request holds its reservation in the 60 s window for exactly 60 s, so the window is a multi-rate
loss system (a stochastic knapsack) and its per-class blocking has the Kaufman-Roberts product form, exact for
Poisson arrivals whatever the holding law: class k is refused when more than C - b_k units are held. The
simulator's per-route counts are held to it at several grid points within the issue's tolerance (5 % relative
or 0.001 absolute).
"""

from __future__ import annotations

import numpy as np
import pytest

from kimiplan.capacity.sim.simulate import simulate, worst_route
from kimiplan.model.scenario import parse_scenario

SHARES = {"chat": 0.7, "report": 0.3}
UNITS = {"chat": 2, "report": 10}  # thousands of tokens reserved: 1,000 prompt + 1,000 or 2,000 + 8,000 budget


def kaufman_roberts(capacity: int, loads: dict, sizes: dict) -> dict:
    """Per-class blocking of a multi-rate loss system of `capacity` units (Kaufman 1981, Roberts 1981)."""
    q = np.zeros(capacity + 1)
    q[0] = 1.0
    for n in range(1, capacity + 1):
        q[n] = sum(loads[k] * b * q[n - b] for k, b in sizes.items() if n >= b) / n
    q /= q.sum()
    return {k: float(q[capacity - b + 1 :].sum()) for k, b in sizes.items()}


def two_route_scenario(rate: float, tpm: int, hours: float, seed: int = 5):
    return parse_scenario(
        {
            "name": "two-routes",
            "model": "kimi-k2.6",
            "as_of": "2026-11-26",
            "seed": seed,
            "tier": {"name": "tpm-only", "tpm": tpm},
            "traffic": {"requests_per_second": rate},
            "routes": [
                {
                    "name": "chat",
                    "share": SHARES["chat"],
                    "system": 1000,
                    "output": 100,
                    "max_completion_tokens": 1000,
                    "overhead_tokens": 0,
                    "latency": {"total_s": 2.0},
                },
                {
                    "name": "report",
                    "share": SHARES["report"],
                    "system": 2000,
                    "output": 500,
                    "max_completion_tokens": 8000,
                    "overhead_tokens": 0,
                    "latency": {"total_s": 20.0},
                },
            ],
            "simulation": {"hours": hours, "client": {"kind": "none"}},
        }
    )


def close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.05 * abs(b), 0.001)


# (requests/s, TPM): the point (about 8 % against 1.5 %), a lighter and a heavier one
GRID = [(1.0, 300_000), (1.6, 500_000), (0.6, 200_000), (2.0, 520_000)]


@pytest.mark.parametrize(("rate", "tpm"), GRID)
def test_simulated_refusals_per_route_are_the_product_form(rate, tpm):
    exact = kaufman_roberts(tpm // 1000, {k: rate * s * 60.0 for k, s in SHARES.items()}, UNITS)
    s = simulate(two_route_scenario(rate, tpm, hours=400)).summary
    got = s.rejected_fraction_by_route
    assert all(close(got[k], exact[k]) for k in SHARES), f"simulated {got}, Kaufman-Roberts {exact}"
    assert got["report"] > 4 * got["chat"] and worst_route(got) == "report"
    assert s.by_route["report"]["refused"]["tpm"] == pytest.approx(s.by_route["report"]["attempts"] * got["report"])


def test_cli_shows_refusals_per_route_and_names_the_worst(tmp_path, capsys):
    import json

    from kimiplan.cli import main

    sc = two_route_scenario(1.0, 300_000, hours=4)
    path = tmp_path / "two.json"
    path.write_text(json.dumps(sc.model_dump(mode="json", exclude_none=True)))
    assert main(["simulate", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["rejected_fraction_by_route"]) == {"chat", "report"}
    assert doc["by_route"]["report"]["refused"]["tpm"] > 0
    assert main(["simulate", str(path), "--client", "openai-sdk"]) == 0
    out = capsys.readouterr().out
    assert "route refused most: report" in out and "RateLimitError" in out
