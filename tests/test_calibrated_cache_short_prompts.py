"""The measured cache share reaches the forecast on short prompts too.

Kimi's prefix cache serves a prompt only when it exceeds 256 tokens ("a new request can hit the prefix cache only
when the previous request's prompt tokens exceed 256", the caching guide; `cache.min_prompt_tokens`). A route whose
prompts straddle that line hits on part of its calls only, so the hit rate that reproduces a measured cached share
is above the plain share. Held to the workload's own per-request draws (which apply the threshold call by call):
over a grid from always-short to always-long prompts, the calibrated route's drawn cached share of input equals
the measured one."""

from __future__ import annotations

import numpy as np
import pytest

from kimiplan.calibration.fitters import fit_calibration
from kimiplan.catalog.calibrated import apply_calibration
from kimiplan.catalog.cards import load_catalog
from kimiplan.model.inputs import eligible_prefix_share
from kimiplan.model.scenario import parse_scenario
from kimiplan.workload.draws import draw_route, route_context


def _scenario(system, user_median):
    return parse_scenario(
        {
            "name": "short",
            "provider": "moonshot",
            "region": "intl",
            "model": "kimi-k2.6",
            "as_of": "2026-11-26",
            "traffic": {"requests_per_day": 1000},
            "routes": [
                {
                    "name": "r",
                    "share": 1.0,
                    "system": system,
                    "user": {"kind": "lognormal", "median": user_median, "p95": user_median * 4} if user_median else 20,
                    "output": 200,
                    "max_completion_tokens": 1024,
                }
            ],
        }
    )


def _measured(prompt_mean, share, n=400):
    """A calibration whose calls measured `prompt_mean` tokens per call with `share` of them cached."""
    from test_fit_laws import LAWS, _frame

    df = _frame(np.random.default_rng(3), n, LAWS[0])
    df["prompt_tokens"] = df["local_prompt_tokens"] = float(round(prompt_mean))
    df["cached_tokens"] = float(round(prompt_mean)) * share
    return fit_calibration(df, card=load_catalog().price("kimi-k2.6"))


def _drawn_share(sc, n=200_000):
    route = sc.routes[0]
    d = draw_route(route, n, np.random.default_rng(9), route_context(sc, route))
    return float(d["cached_tokens"].sum() / d["input_tokens"].sum())


@pytest.mark.parametrize(
    "system, user_median",
    [(40, 60), (120, 90), (160, 160), (300, 80), (1500, 200)],
    ids=["mostly short", "straddling", "straddling, longer", "just over", "always long"],
)
def test_calibrated_cache_reproduces_the_measured_share_on_short_prompts(system, user_median):
    base = _scenario(system, user_median)
    r = base.routes[0]
    from kimiplan.catalog.calibrated import input_mean

    m = input_mean(r)
    eligible = eligible_prefix_share(r)
    # a share the route can reach: 60 % of the prefix share that sits on prompts long enough to hit
    share = 0.6 * eligible * system / m
    cal = _measured(m, share)
    sc = apply_calibration(base, cal)
    got = _drawn_share(sc)
    assert got == pytest.approx(share, rel=0.03, abs=2e-4), (eligible, share, got, sc.routes[0].cache)
    if eligible < 0.9:
        # the plain share over the prefix (every prompt assumed long enough) would give eligible x the measured
        assert sc.routes[0].cache.hit_rate == pytest.approx(0.6, rel=0.02)
        assert sc.routes[0].cache.hit_rate > share * m / system * 1.1


def test_prompts_that_never_reach_the_threshold_are_warned_about():
    base = _scenario(30, None)  # 30 + 20 tokens and the markers per call: never over 256
    r = base.routes[0]
    assert eligible_prefix_share(r) == 0.0
    from kimiplan.catalog.calibrated import input_mean

    sc = apply_calibration(base, _measured(input_mean(r), 0.2))
    c = sc.routes[0].calibrated
    assert "cache" not in c.applied
    assert any("min_prompt_tokens (256)" in w and "not applied" in w for w in c.warnings), c.warnings


def test_long_prompts_map_exactly_as_before():
    # every prompt over 256: the share of the hittable prefix is exactly 1 and the rate is the plain ratio
    base = _scenario(2000, 100)
    r = base.routes[0]
    assert eligible_prefix_share(r) == 1.0
    from kimiplan.catalog.calibrated import _markers_mean, input_mean

    m = input_mean(r)
    sc = apply_calibration(base, _measured(m, 0.5))
    prefix = sc.routes[0].system.mean()
    want = 0.5 * round(m)
    assert sc.routes[0].cache.hit_rate == pytest.approx(want / prefix, rel=1e-6)
    assert _markers_mean(sc.routes[0]) > 0
