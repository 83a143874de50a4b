"""Analytic planner: queueing formulas against textbook values, demand arithmetic, tier choice, growth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from theory import theory_scenario

from kimiplan.capacity.plan import (
    CompoundPoisson,
    demand_table,
    erlang_b,
    erlang_b_servers,
    growth_exhaustion,
    plan,
    poisson_overflow_fraction,
    refusal_summary,
    smallest_tier,
    tier_ladder,
)
from kimiplan.catalog.cards import custom_tier

scenario = theory_scenario


def _erlang_b_direct(c, a):
    terms = [a**k / math.factorial(k) for k in range(c + 1)]
    return terms[-1] / sum(terms)


@pytest.mark.parametrize("c,a", [(1, 1.0), (2, 1.0), (10, 7.5), (50, 50.0), (80, 20.0)])
def test_erlang_b_matches_the_direct_formula(c, a):
    assert erlang_b(c, a) == pytest.approx(_erlang_b_direct(c, a), rel=1e-10)


def test_erlang_b_is_stable_for_large_systems():
    # a^c / c! overflows a float at c = 171; the recursion does not.
    b = erlang_b(2000, 2000.0)
    assert 0.01 < b < 0.03 and math.isfinite(b)
    c = erlang_b_servers(50.0, 0.001)
    assert erlang_b(c, 50.0) <= 0.001 < erlang_b(c - 1, 50.0)


def test_poisson_overflow_fraction_matches_a_direct_sum():
    k = np.arange(0, 400)
    pmf = stats.poisson.pmf(k, 100.0)
    direct = float(np.sum(np.maximum(k - 105, 0) * pmf) / 100.0)
    assert poisson_overflow_fraction(100.0, 105) == pytest.approx(direct, rel=1e-9)


def test_compound_poisson_tail_against_monte_carlo():
    rng = np.random.default_rng(0)
    n, mu, sigma = 200.0, 8.0, 0.8
    m = [math.exp(k * mu + (k * sigma) ** 2 / 2) for k in (1, 2, 3)]  # lognormal raw moments
    cp = CompoundPoisson(n, *m)
    counts = rng.poisson(n, 40_000)
    x = rng.lognormal(mu, sigma, int(counts.sum()))
    s = np.add.reduceat(x, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    assert cp.mean == pytest.approx(s.mean(), rel=0.01)
    # The translated gamma is an approximation: its 99.9th percentile is within 3 % of the sample's.
    assert cp.quantile(0.999) == pytest.approx(np.quantile(s, 0.999), rel=0.03)
    lim = np.quantile(s, 0.99)
    mc = np.maximum(s - lim, 0).mean() / s.mean()
    assert cp.overflow_fraction(lim) == pytest.approx(mc, rel=0.25)


def test_demand_arithmetic_for_fixed_tokens_and_constant_rate():
    sc = scenario()  # 4 req/s, 1,000 input + 1,024 budget, exponential latency mean 4 s
    d = demand_table(sc).set_index(["route", "limit"])
    assert d.loc[("total", "rpm"), "mean"] == pytest.approx(240.0)
    assert d.loc[("total", "tpm"), "mean"] == pytest.approx(240.0 * 2024)
    assert d.loc[("total", "concurrency"), "mean"] == pytest.approx(16.0, rel=0.02)  # Little: 4 x 4 s
    assert d.loc[("total", "concurrency"), "refusal"] == pytest.approx(
        erlang_b(20, d.loc[("total", "concurrency"), "peak_mean"])
    )
    assert d.loc[("total", "tpm"), "peak"] > d.loc[("total", "tpm"), "peak_mean"]


def test_binding_limit_smallest_tier_and_max_rate():
    sc = scenario()
    tiers = [
        custom_tier("small", concurrency=20, rpm=1000),
        custom_tier("rpm-tight", concurrency=100, rpm=250),
        custom_tier("big", concurrency=100, rpm=1000),
    ]
    ladder = tier_ladder(sc, tiers=tiers)
    assert ladder["binding_limit"].tolist() == ["concurrency", "rpm", "concurrency"]
    assert ladder["holds"].tolist() == [False, False, True]
    assert smallest_tier(ladder) == "big"
    # At the largest sustainable rate the total refusal sits at the target.
    big = ladder.iloc[2]
    at_max = refusal_summary(demand_table(sc, tier=tiers[2], scale=big["max_scale"]))["refusal_total"]
    assert 0.0009 < at_max <= 0.001


def test_growth_exhausts_the_tier_in_the_right_month():
    sc = scenario(traffic={"requests_per_second": 4.0, "monthly_growth": 0.1})
    ex = growth_exhaustion(sc, 2.0)
    assert ex["months"] == 8  # 1.1^7 = 1.95 < 2 < 1.1^8 = 2.14
    assert str(ex["date"]) == "2027-07-01"
    assert growth_exhaustion(sc, 0.5)["months"] == 0


def test_plan_agrees_with_the_simulator_on_concurrency():
    from kimiplan.capacity.sim.simulate import SimSettings, simulate

    sc = scenario()
    p = plan(sc)
    assert p["binding_limit"] == "concurrency"
    sim = simulate(sc, settings=SimSettings(hours=6)).summary
    n = sim["attempts"]
    # Erlang B against the simulated share, with a standard error inflated 3x for correlation between requests.
    assert abs(sim["rejected_fraction"]["concurrency"] - p["refusal_by_limit"]["concurrency"]) < 4 * 3 * math.sqrt(
        p["refusal_by_limit"]["concurrency"] / n
    )


def _mixed_scenario():
    # Two online routes with different sizes and latencies, and a Batch API route that loads no limit.
    return scenario(
        routes=[
            {
                "name": "short",
                "share": 0.6,
                "system": 800,
                "output": 150,
                "max_completion_tokens": 512,
                "latency": {"total_s": {"kind": "exponential", "mean": 2.0}},
            },
            {
                "name": "long",
                "share": 0.3,
                "system": 6000,
                "output": {"kind": "lognormal", "median": 600, "p95": 2500},
                "max_completion_tokens": 4096,
                "latency": {"total_s": {"kind": "lognormal", "median": 9.0, "p95": 30.0}},
            },
            {
                "name": "offline",
                "share": 0.1,
                "batch": True,
                "system": 3000,
                "output": 800,
                "max_completion_tokens": 2048,
                "latency": {"total_s": 60.0},
            },
        ]
    )


def test_refusal_shortcut_is_exactly_the_demand_table():
    # The bisection and the week average evaluate only the total's refusals, without the table and its
    # percentiles; they must give bit for bit what refusal_summary(demand_table(...)) gives.
    from kimiplan.capacity.plan import _PlanContext, _total_refusal_by_limit

    sc = _mixed_scenario()
    ctx = _PlanContext(sc, None)
    tiers = [
        custom_tier("all", concurrency=40, rpm=600, tpm=1_500_000, tpd=400_000_000, rpd=150_000),
        custom_tier("tokens", tpm=900_000, tpd=90_000_000),
        None,
    ]
    for t in tiers:
        limits = ctx.limits(t)
        for s in (0.05, 1.0, 3.7, 40.0):
            for peaks in (ctx.peaks, {**ctx.peaks, "peak_minute": 0.37}):
                want = refusal_summary(demand_table(sc, tier=t, scale=s, moments=ctx.moments, peaks=peaks))
                got = _total_refusal_by_limit(ctx.groups, sc.traffic.mean_rps * s, peaks, limits)
                assert got == want["refusal_by_limit"]
                if peaks is ctx.peaks:
                    assert ctx.refusal_total(limits, s) == want["refusal_total"]


def test_plan_reuses_given_moments_without_changing_anything():
    from kimiplan.capacity.plan import peak_factors

    sc = _mixed_scenario()
    p = plan(sc)
    q = plan(sc, moments=p.moments, peaks=peak_factors(sc))
    for k in ("demand", "ladder", "moments"):
        pd.testing.assert_frame_equal(p[k], q[k], check_exact=True)
    assert {k: v for k, v in p.to_dict().items() if k not in ("demand", "ladder")} == {
        k: v for k, v in q.to_dict().items() if k not in ("demand", "ladder")
    }


@pytest.mark.parametrize("c, a", [(1, 0.5), (5, 3.0), (20, 15.0), (60, 59.0)])
def test_erlang_c_matches_the_direct_formula(c, a):
    from kimiplan.capacity.plan import erlang_c

    top = a**c / math.factorial(c) * c / (c - a)
    assert erlang_c(c, a) == pytest.approx(top / (sum(a**k / math.factorial(k) for k in range(c)) + top), rel=1e-9)
    assert erlang_c(c, float(c)) == 1.0


def test_plan_reports_the_pacing_wait_at_the_peak():
    p = plan(scenario())  # concurrency 20, 16 Erlangs on average, more at the peak minute
    w = p["pacing_wait"]
    assert w["concurrency"] == 20 and w["peak_load"] > 15
    assert w["stable"] and 0 < w["p_wait"] < 1 and w["mean_wait_s"] > 0
    over = plan(scenario(traffic={"requests_per_second": 6.0}))["pacing_wait"]  # 24 Erlangs on 20 slots
    assert not over["stable"] and over["p_wait"] == 1.0 and over["mean_wait_s"] is None
