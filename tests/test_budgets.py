"""max_completion_tokens per route: truncation against reserved TPM."""

from __future__ import annotations

import numpy as np
import pytest
from theory import theory_scenario

from kimiplan.capacity.budgets import (
    budget_curve,
    budgets_for_tier,
    completion_demand,
    recommend_budgets,
    truncation_probability,
)
from kimiplan.errors import ConfigError

scenario = theory_scenario


def sc_lognormal():
    return scenario(
        routes=[
            {
                "name": "think",
                "share": 1.0,
                "thinking": True,
                "system": 2000,
                "reasoning": {"kind": "lognormal", "median": 1500, "p95": 6000},
                "output": {"kind": "lognormal", "median": 400, "p95": 1500},
                "latency": {"total_s": {"kind": "exponential", "mean": 30.0}},
            }
        ]
    )


def test_truncation_probability_is_exact_on_fixed_demand():
    d = np.full(1000, 700.0)
    assert truncation_probability(d, [699, 700, 701]).tolist() == [1.0, 0.0, 0.0]


def test_recommended_budget_is_the_smallest_multiple_of_256_meeting_the_target():
    sc = sc_lognormal()
    rec = recommend_budgets(sc, target_truncation=0.01).iloc[0]
    demand = completion_demand(sc.routes[0])
    b = int(rec["recommended_budget"])
    assert b % 256 == 0
    assert truncation_probability(demand, [b])[0] <= 0.01 < truncation_probability(demand, [b - 256])[0]
    assert rec["current_budget"] == 32768  # omitted: the K2.6 default
    # Freed TPM at the busiest minute: rate x 60 x (32,768 - b).
    assert rec["tpm_freed_vs_default"] == pytest.approx(4.0 * 60 * (32768 - b))


def test_curve_trades_truncation_for_tpm():
    c = budget_curve(sc_lognormal(), "think", budgets=[256, 1024, 4096, 16384, 32768])
    assert np.all(np.diff(c["truncation_probability"]) <= 0)
    assert np.all(np.diff(c["tpm_mean"]) > 0)
    assert c["tpm_freed_vs_default"].iloc[-1] == 0
    with pytest.raises(ConfigError, match="budgets"):
        budget_curve(sc_lognormal(), "think", budgets=[0, 10])


def test_budgets_for_a_tight_tier_accept_more_truncation():
    sc = sc_lognormal()
    loose = budgets_for_tier(sc, tier=_tier(tpm=10_000_000)).iloc[0]
    tight = budgets_for_tier(sc, tier=_tier(tpm=2_000_000)).iloc[0]
    assert loose["holds"] and tight["holds"]
    assert tight["target_truncation"] > loose["target_truncation"]
    assert tight["recommended_budget"] < loose["recommended_budget"]


def _tier(**lim):
    from kimiplan.catalog.cards import custom_tier

    return custom_tier("t", **lim)


def test_budgets_for_tier_returns_the_plain_recommendation_it_chose():
    # budgets_for_tier draws the demand samples once for its whole grid: the table it returns is exactly
    # recommend_budgets at the truncation target it settled on, plus its refusal columns.
    import pandas as pd

    sc = sc_lognormal()
    rec = budgets_for_tier(sc, tier=_tier(tpm=2_000_000))
    plain = recommend_budgets(sc, target_truncation=float(rec["target_truncation"].iloc[0]))
    pd.testing.assert_frame_equal(rec.drop(columns=["token_refusal", "tier", "holds"]), plain, check_exact=True)
