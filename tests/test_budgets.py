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


@pytest.mark.parametrize("name", ["support_chat", "coding_assistant", "document_report", "coding_agent"])
def test_budget_tables_count_every_call_as_the_demand_table_does(name, catalog):
    """The max_completion_tokens tables and the demand table give one TPM figure per route at its current
    budget (a `$web_search` route reserves its budget once per round), and the curve's reservation at another
    budget is what the request drawer reserves there (every call's prompt plus the budget, drawn call by call)."""
    from kimiplan.capacity.demand import route_moments, route_reservation
    from kimiplan.capacity.verdict import demand_table
    from kimiplan.catalog.resolve import load_scenario, price_card
    from kimiplan.workload.draws import draw_route, route_context

    sc = load_scenario(name, catalog)
    moments = route_moments(sc, catalog)
    rec = recommend_budgets(sc, catalog, moments=moments).set_index("route")
    d = demand_table(sc, catalog)
    tpm = d[d["limit"] == "tpm"].set_index("route")["peak_mean"]
    for route in sc.routes:
        if route.batch:
            continue
        m = moments.set_index("route").loc[route.name]
        r = rec.loc[route.name]
        assert r["tpm_peak_current"] == pytest.approx(tpm[route.name], rel=1e-9)
        assert route_reservation(m) == pytest.approx(m["reserved_mean"], rel=1e-12)
        curve = budget_curve(sc, route.name, catalog, budgets=[r["recommended_budget"]], moments=moments)
        assert curve["tpm_peak_minute"].iloc[0] == pytest.approx(r["tpm_peak_recommended"], rel=1e-12)
        freed = r["tpm_peak_current"] - r["tpm_peak_recommended"]
        assert r["tpm_freed_vs_current"] == pytest.approx(freed, rel=1e-9, abs=1e-6)
        if route.agent is None:
            at = route.model_copy(update={"max_completion_tokens": int(r["recommended_budget"])})
            card = price_card(sc, catalog)
            drawn = draw_route(at, 20_000, np.random.default_rng(4), route_context(sc, at, card))["reserved_tokens"]
            se = drawn.std() / np.sqrt(drawn.size)
            assert abs(drawn.mean() - curve["reserved_per_request"].iloc[0]) <= 5 * se + 1e-6
    if name == "support_chat":  # the issue's figure: web_lookup's three calls' budgets are all counted
        assert rec.loc["web_lookup", "tpm_peak_current"] == pytest.approx(37_190, abs=1)
