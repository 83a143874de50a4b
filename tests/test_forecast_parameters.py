"""A calibrated route's mean cost per request is known to its sampling error: the forecast draws it per path,
so the bands widen by exactly that law (lognormal, mean 1) when nothing else varies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kimiplan.errors import ConfigError
from kimiplan.finance.forecast import forecast
from kimiplan.model.scenario import parse_scenario

SCEN = {
    "name": "p",
    "provider": "moonshot",
    "region": "intl",
    "model": "kimi-k2.6",
    "as_of": "2026-11-26",
    "traffic": {"requests_per_day": 50_000},
    "routes": [
        {"name": "a", "share": 0.7, "system": 3000, "output": 300, "max_completion_tokens": 2048},
        {"name": "b", "share": 0.3, "system": 500, "output": 900, "max_completion_tokens": 2048},
    ],
}


@pytest.mark.parametrize("rel", [{"a": 0.08}, {"a": 0.03, "b": 0.12}, {"b": 0.2}])
def test_parameter_uncertainty_sets_the_band_to_the_sampling_law(rel):
    sc = parse_scenario(SCEN)
    kw = dict(months=1, paths=20_000, daily_cv=0.0, growth_sd=0.0, capacity=False, quantiles=(0.025, 0.975))
    base = forecast(sc, **kw)
    fc = forecast(sc, parameter_uncertainty=rel, **kw)
    row, b = fc.monthly.iloc[0], base.monthly.iloc[0]
    # the expectation is not moved; the route totals are fixed tokens, so without parameter noise the band is thin
    assert row["mean"] == pytest.approx(b["expected"], rel=0.01)
    assert (b["P97.5"] - b["P2.5"]) / b["expected"] < 0.01
    # monthly = sum over routes of cost_r * theta_r, theta_r lognormal with mean 1 and log-sd rel_r: its sd
    cost_r = {r: float(fc.by_route[fc.by_route.route == r]["mean"].iloc[0]) for r in ("a", "b")}
    sd = math.sqrt(sum((cost_r[r] ** 2) * (math.exp(s * s) - 1) for r, s in rel.items()))
    assert row["sd"] == pytest.approx(sd, rel=0.05)
    assert fc.settings["parameter_uncertainty"] == rel


def test_parameter_uncertainty_bad_input():
    sc = parse_scenario(SCEN)
    with pytest.raises(ConfigError, match="unknown routes"):
        forecast(sc, months=1, paths=100, capacity=False, parameter_uncertainty={"zzz": 0.1})
    with pytest.raises(ConfigError, match="parameter_uncertainty"):
        forecast(sc, months=1, paths=100, capacity=False, parameter_uncertainty={"a": float("nan")})
    with pytest.raises(ConfigError, match="parameter_uncertainty"):
        forecast(sc, months=1, paths=100, capacity=False, parameter_uncertainty={"a": -0.1})
    assert np.isfinite(forecast(sc, months=1, paths=100, capacity=False, parameter_uncertainty={"a": 0.0}).paths).all()
