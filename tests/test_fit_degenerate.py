"""Degenerate samples give a clear result, never a crash: a constant (decode speed, output length) is a Fixed law,
all-censored, single-call and all-zero samples fit what they can, and anything that cannot be fitted is a
ConfigError naming the route. Property tests draw such samples (hypothesis); the fixed cases pin the results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimiplan.calibration.fitters import (
    DegenerateSampleError,
    LogNormalFitter,
    fit_calibration,
    fit_component,
)
from kimiplan.catalog.calibrated import apply_calibration
from kimiplan.errors import ConfigError
from kimiplan.model.calibration import FixedFit
from kimiplan.model.dists import Fixed
from kimiplan.model.scenario import parse_scenario


def _frame(output, *, budget=1024, prompt=500, ttft=None, total=None, cached=0):
    out = np.asarray(output, dtype=float)
    n = len(out)
    comp = np.minimum(out, budget)
    return pd.DataFrame(
        {
            "route": "r",
            "prompt_tokens": prompt,
            "local_prompt_tokens": prompt,
            "cached_tokens": cached,
            "completion_tokens": comp,
            "output_tokens": comp,
            "reasoning_tokens": 0.0,
            "max_completion_tokens": budget,
            "finish_reason": np.where(out >= budget, "length", "stop"),
            "first_finish_reason": np.where(out >= budget, "length", "stop"),
            "continuations": 0,
            "ttft_s": np.full(n, np.nan) if ttft is None else ttft,
            "total_s": np.full(n, np.nan) if total is None else total,
            "thinking": False,
            "model": "kimi-k2.6",
            "provenance": "emulator",
            "time": None,
        }
    )


SCEN = {
    "name": "d",
    "provider": "moonshot",
    "region": "intl",
    "model": "kimi-k2.6",
    "as_of": "2026-11-26",
    "traffic": {"requests_per_day": 1000},
    "routes": [{"name": "r", "share": 1.0, "system": 400, "user": 50, "output": 200, "max_completion_tokens": 1024}],
}


def test_constant_decode_speed_is_a_fixed_law_not_a_crash():
    # every call decodes at exactly 50 tokens/s (a server with one speed): the lognormal's sigma would go to 0
    out = np.linspace(100, 400, 40).round()
    ttft = np.linspace(0.4, 1.2, 40)
    total = ttft + out / 50.0
    cal = fit_calibration(_frame(out, ttft=ttft, total=total))
    rc = cal.routes["r"]
    assert isinstance(rc.decode_tps, FixedFit) and rc.decode_tps.value == pytest.approx(50.0)
    assert rc.decode_tps.n == 40
    assert not isinstance(rc.ttft_s, FixedFit) and rc.ttft_s.median == pytest.approx(0.8, rel=0.1)
    # the file round-trips and the law reaches the scenario as a Fixed speed
    again = type(cal).model_validate_json(cal.model_dump_json())
    assert isinstance(again.routes["r"].decode_tps, FixedFit)
    route = apply_calibration(parse_scenario(SCEN), again).routes[0]
    assert isinstance(route.latency.decode_tps, Fixed) and route.latency.decode_tps.value == pytest.approx(50.0)


def test_lognormal_fitter_names_the_constant():
    with pytest.raises(DegenerateSampleError, match="all 12 values equal 7") as e:
        LogNormalFitter().fit(np.full(12, 7.0))
    assert e.value.value == 7.0 and isinstance(e.value, ConfigError)
    # a constant with calls cut above it is not degenerate: the cut calls say the law reaches further
    f = LogNormalFitter().fit(np.r_[np.full(20, 100.0), np.full(5, 300.0)], np.r_[np.zeros(20), np.ones(5)])
    assert f.median_ > 0 and f.sigma_ > 0 and math.isfinite(f.p95_ci_[1])


def test_tiny_spread_does_not_cross_zero_in_the_curvature():
    # values within 0.01 % of each other: sigma ~ 1e-4; the finite-difference step once went below zero
    x = 1000.0 * (1 + 1e-4 * np.random.default_rng(0).standard_normal(50))
    f = LogNormalFitter().fit(x)
    assert f.sigma_ == pytest.approx(1e-4, rel=0.3)
    assert f.median_ci_[0] < f.median_ < f.median_ci_[1]


@pytest.mark.parametrize(
    "output, budget, mean",
    [
        (np.full(30, 250.0), 1024, 250.0),  # constant: the law is the constant
        (np.full(30, 5000.0), 1024, 1024.0),  # every call cut at the budget: the capped mean is the budget
        (np.zeros(30), 1024, 0.0),  # empty answers
        (np.array([321.0]), 1024, 321.0),  # a single call
    ],
    ids=["constant", "all-censored", "zeros", "n=1"],
)
def test_degenerate_outputs_fit_to_what_they_are(output, budget, mean):
    cal = fit_calibration(_frame(output, budget=budget))
    comp = cal.routes["r"].output
    assert comp.capped_mean.value == pytest.approx(mean)
    d = comp.to_dist()
    assert d.mean() == pytest.approx(min(mean, budget))
    # the calibration applies to a scenario without error
    route = apply_calibration(parse_scenario(SCEN), cal).routes[0]
    assert route.output.mean() == pytest.approx(mean)


values = st.one_of(
    st.lists(st.sampled_from([0.0, 1.0, 7.0, 1024.0, 5000.0]), min_size=1, max_size=60),
    st.builds(lambda v, n: [v] * n, st.floats(0, 1e5, allow_nan=False), st.integers(1, 80)),
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=40),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.sampled_from([16, 1024]))
def test_fit_component_never_crashes(xs, budget):
    x = np.minimum(np.asarray(xs, float), budget)
    c = np.asarray(xs, float) >= budget
    try:
        comp = fit_component(x, c, budget=budget)
    except ConfigError:
        return  # a clear error is allowed; anything else is a crash
    lo, hi = comp.capped_mean.ci
    assert 0 <= comp.capped_mean.value <= budget + 1e-9
    assert lo <= comp.capped_mean.sample_value + 1e-9 and hi >= comp.capped_mean.sample_value - 1e-9
    assert math.isfinite(comp.to_dist().mean())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 40),
    st.sampled_from(["constant", "zeros", "spread"]),
    st.sampled_from(["constant", "zeros", "spread", "none"]),
    st.sampled_from([0.0, 0.5]),
)
def test_fit_calibration_never_crashes_on_degenerate_routes(n, out_kind, lat_kind, cached):
    rng = np.random.default_rng(n)
    out = {"constant": np.full(n, 200.0), "zeros": np.zeros(n), "spread": rng.integers(20, 2000, n).astype(float)}
    ttft = total = None
    if lat_kind != "none":
        ttft = {"constant": np.full(n, 0.5), "zeros": np.zeros(n), "spread": rng.uniform(0.2, 2, n)}[lat_kind]
        total = ttft + {"constant": np.full(n, 4.0), "zeros": np.zeros(n), "spread": rng.uniform(1, 9, n)}[lat_kind]
    df = _frame(out[out_kind], ttft=ttft, total=total, cached=int(cached * 500))
    try:
        cal = fit_calibration(df)
    except ConfigError as exc:
        assert "route 'r'" in str(exc), exc
        return
    rc = cal.routes["r"]
    for fit in (rc.ttft_s, rc.decode_tps):
        assert fit is None or isinstance(fit, FixedFit) or (fit.median > 0 and math.isfinite(fit.p95))
    apply_calibration(parse_scenario(SCEN), cal)
