"""A calibrated route carries the sampling error of its measured mean cost, and every forecast of it widens its
bands by that error by default (and says so), unless turned off.

Held to truths kimiplan does not compute: the band of a product of two independent mean-1 lognormal factors
(growth level and the route's mean cost) in closed form, and a Monte Carlo over repeated calibrations where each
route's measured mean is itself drawn from its sampling distribution: the forecast's P10-P90 band must hold the
true month's cost (closed form from the hidden law, by numerical integration) about 80 % of the time."""

from __future__ import annotations

import calendar
import math

import numpy as np
import pytest
from scipy import integrate, stats

from kimiplan.calibration.fitters import cost_uncertainty, fit_calibration
from kimiplan.catalog.calibrated import apply_calibration
from kimiplan.catalog.cards import load_catalog
from kimiplan.finance.focus import focus_frame
from kimiplan.finance.forecast import forecast, parameter_spread
from kimiplan.model.calibration import CalibratedFrom
from kimiplan.model.scenario import parse_scenario

PER_DAY = 50_000
SCEN = {
    "name": "bands",
    "provider": "moonshot",
    "region": "intl",
    "model": "kimi-k2.6",
    "as_of": "2026-11-26",
    "seed": 5,
    "traffic": {"requests_per_day": PER_DAY},
    "routes": [
        {"name": "a", "share": 0.7, "system": 3000, "user": 40, "output": 300, "max_completion_tokens": 4096},
        {"name": "b", "share": 0.3, "system": 500, "output": 900, "max_completion_tokens": 4096},
    ],
}
Z90 = stats.norm.ppf(0.9)


def _with_error(sc, **rel_se):
    routes = []
    for r in sc.routes:
        if r.name in rel_se:
            c = CalibratedFrom(
                calls=400, model=sc.model, provenance="emulator", confidence=0.95, cost_rel_se=rel_se[r.name]
            )
            r = r.model_copy(update={"calibrated": c})
        routes.append(r)
    return sc.model_copy(update={"routes": tuple(routes)})


def test_band_is_the_product_of_two_lognormals_in_closed_form():
    # Route a only (b has no calibration): growth level LN(sd g*k) times the route's mean LN(sd s); fixed token
    # sizes, no daily noise. Month k=2: log-sd of the month is sqrt((2g)^2 + s^2) (+ the request-level CLT term).
    g, s = 0.03, 0.05
    sc = parse_scenario({**SCEN, "routes": [{**SCEN["routes"][0], "share": 1.0}]})
    cal = _with_error(sc, a=s)
    kw = dict(months=3, paths=40_000, daily_cv=0.0, growth_sd=g, capacity=False, quantiles=(0.1, 0.9))
    on, off = forecast(cal, **kw), forecast(cal, parameter_uncertainty=False, **kw)
    row_on, row_off = on.monthly.iloc[2], off.monthly.iloc[2]
    e = row_on["expected"]
    clt = 1.0 / row_on["requests"]  # relative variance of a sum of V equal costs is 1/V (Poisson count)
    for row, sig2 in ((row_on, (2 * g) ** 2 + s**2 + clt), (row_off, (2 * g) ** 2 + clt)):
        sig = math.sqrt(sig2)
        assert row["P10"] == pytest.approx(e * math.exp(-sig2 / 2 - Z90 * sig), rel=0.003)
        assert row["P90"] == pytest.approx(e * math.exp(-sig2 / 2 + Z90 * sig), rel=0.003)
    assert row_on["expected"] == row_off["expected"]
    assert "±9.8 % on route a" in on.parameter_note and off.parameter_note == ""
    assert on.settings["parameter_uncertainty"] == {"a": s}


def test_default_draws_what_the_calibration_measured_same_as_the_explicit_mapping():
    sc = _with_error(parse_scenario(SCEN), a=0.04, b=0.09)
    kw = dict(months=1, paths=5000, daily_cv=0.1, growth_sd=0.0, capacity=False)
    d, x = forecast(sc, **kw), forecast(sc, parameter_uncertainty={"a": 0.04, "b": 0.09}, **kw)
    assert np.array_equal(d.paths, x.paths)
    # a mapping overrides one route and keeps the other's calibration; 0 turns a route off
    one = forecast(sc, parameter_uncertainty={"b": 0.0}, **kw)
    assert one.settings["parameter_uncertainty"] == {"a": 0.04, "b": 0.0}
    assert "route a" in one.parameter_note and "route b" not in one.parameter_note
    for off in (False, None):
        assert forecast(sc, parameter_uncertainty=off, **kw).settings["parameter_uncertainty"] is None
    # an uncalibrated scenario draws no parameter noise and says nothing
    assert parameter_spread(parse_scenario(SCEN)) == ({}, "")


def test_apply_carries_precision_and_pins_drop_it(tmp_path):
    from test_fit_laws import LAWS, _frame

    card = load_catalog().price("kimi-k2.6")
    df = _frame(np.random.default_rng(1), 200, LAWS[0])
    cal = fit_calibration(df, card=card)
    p = cal.routes["r"].precision
    base = {**SCEN, "routes": [{"name": "r", "share": 1.0, "system": 1900, "user": 40, "output": 300}]}
    c = apply_calibration(parse_scenario(base), cal).routes[0].calibrated
    assert c.cost_rel_se == pytest.approx(p.cost_se / p.cost_per_request.value)
    assert c.cost_rel_error == p.cost_rel_error and c.confidence == p.confidence
    assert c.reservation_rel_se == pytest.approx(p.reservation_se / p.reservation_tokens.value)
    assert cost_uncertainty(cal) == {"r": pytest.approx(c.cost_rel_se)}
    pinned = {
        **base,
        "routes": [{**base["routes"][0], "pin": ["input", "cache", "output", "reasoning", "server_overhead", "tools"]}],
    }
    c2 = apply_calibration(parse_scenario(pinned), cal).routes[0].calibrated
    assert c2.cost_rel_se is None  # nothing the cost rests on was measured: no sampling error either


def test_focus_rows_say_which_bands_carry_it():
    sc = _with_error(parse_scenario(SCEN), a=0.06)
    rows = focus_frame(forecast(sc, months=1, paths=500, capacity=False))
    a = rows[rows.x_Route == "a"]["x_BandParameterRelSE"]
    b = rows[rows.x_Route == "b"]["x_BandParameterRelSE"]
    assert (a == 0.06).all() and b.isna().all()


# --- coverage against a hidden truth ------------------------------------------------------------------------
MEDIAN, P95, BUDGET, PROMPT, N_CALLS = 300, 1500, 4096, 2000, 150


def _truth_cost(card) -> float:
    s = (math.log(P95) - math.log(MEDIAN)) / stats.norm.ppf(0.95)
    law = stats.lognorm(s=s, scale=MEDIAN)
    capped = integrate.quad(law.sf, 0, BUDGET, limit=400, points=[10, 100, 1000])[0]
    return (PROMPT * float(card.input_cache_miss) + capped * float(card.output)) / 1e6


def _calls(rng, n):
    import pandas as pd

    s = (math.log(P95) - math.log(MEDIAN)) / stats.norm.ppf(0.95)
    out = np.maximum(np.round(MEDIAN * np.exp(s * rng.standard_normal(n))), 1.0)
    comp = np.minimum(out, BUDGET)
    fin = np.where(out >= BUDGET, "length", "stop")
    return pd.DataFrame(
        {
            "route": "r",
            "prompt_tokens": PROMPT,
            "local_prompt_tokens": PROMPT,
            "cached_tokens": 0,
            "completion_tokens": comp,
            "output_tokens": comp,
            "reasoning_tokens": 0.0,
            "max_completion_tokens": BUDGET,
            "finish_reason": fin,
            "first_finish_reason": fin,
            "continuations": 0,
            "ttft_s": np.nan,
            "total_s": np.nan,
            "thinking": False,
            "model": "kimi-k2.6",
            "provenance": "emulator",
            "time": None,
        }
    )


def test_band_holds_the_truth_at_its_stated_rate_over_repeated_calibrations():
    """Each repetition samples 150 calls from the hidden law, calibrates, applies and forecasts one month: the
    route's mean cost is then a draw from its sampling distribution. With the calibration's error in the bands
    the truth falls inside P10-P90 at about 80 %; with traffic noise only (which averages out over a month of
    requests) it almost never does."""
    card = load_catalog().price("kimi-k2.6")
    base = parse_scenario(
        {
            **SCEN,
            "routes": [
                {"name": "r", "share": 1.0, "system": 1900, "user": 40, "output": 300, "max_completion_tokens": BUDGET}
            ],
        }
    )
    days = calendar.monthrange(base.as_of.year, base.as_of.month)[1]
    truth = _truth_cost(card) * PER_DAY * days
    kw = dict(months=1, paths=2000, daily_cv=0.0, growth_sd=0.0, capacity=False, quantiles=(0.1, 0.9))
    reps, on, off, widths = 100, 0, 0, []
    for i in range(reps):
        cal = fit_calibration(_calls(np.random.default_rng([i, 17]), N_CALLS), card=card)
        sc = apply_calibration(base, cal)
        fc = forecast(sc, seed=i, **kw)
        row = fc.monthly.iloc[0]
        on += row["P10"] <= truth <= row["P90"]
        widths.append((row["P90"] - row["P10"]) / row["expected"])
        if i < 30:
            r0 = forecast(sc, seed=i, parameter_uncertainty=False, **kw).monthly.iloc[0]
            off += r0["P10"] <= truth <= r0["P90"]
    assert 0.68 <= on / reps <= 0.92, (on / reps, np.mean(widths))
    assert off / 30 <= 0.2, off


def test_cli_forecast_of_a_calibrated_file_says_so_and_can_turn_it_off(tmp_path, capsys):
    from test_fit_laws import LAWS, _frame

    from kimiplan.catalog.calibrated_file import write_calibrated_scenario
    from kimiplan.cli import main
    from kimiplan.model.scenario import read_scenario

    card = load_catalog().price("kimi-k2.6")
    df = _frame(np.random.default_rng(2), 120, LAWS[1]).assign(route="answer")
    cal = fit_calibration(df, card=card)
    out = tmp_path / "calibrated.yaml"
    write_calibrated_scenario("support_chat", cal, out)
    # the written scenario keeps the sampling error in its calibrated: record
    c = read_scenario(out).route("answer").calibrated
    assert c.cost_rel_se == pytest.approx(
        cal.routes["answer"].precision.cost_se / cal.routes["answer"].precision.cost_per_request.value
    )
    half = f"±{cal.routes['answer'].precision.cost_rel_error * 100:.1f} % on route answer (120 calls, 95 %)"
    assert main(["forecast", str(out), "--months", "1", "--paths", "500"]) == 0
    text = capsys.readouterr().out
    assert "bands include the calibration's sampling uncertainty" in text and half in text, text
    assert main(["forecast", str(out), "--months", "1", "--paths", "500", "--no-parameter-uncertainty"]) == 0
    assert "sampling uncertainty" not in capsys.readouterr().out
