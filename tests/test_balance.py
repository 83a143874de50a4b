"""Prepaid balance: run-out date by hand, top-ups, the top-up that lasts to a date, and the tier ladder."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import ConfigError
from kimiplan.finance.balance import QUOTA_ERROR, exhaustion, runway, tier_recharge, topup_needed
from kimiplan.finance.forecast import forecast
from kimiplan.model.scenario import Route, Scenario, Traffic, example_path

DAY = 1000 * (1100 * 0.95 + 200 * 4.0) / 1e6  # USD per day of the flat scenario below


@pytest.fixture(scope="module")
def flat_fc(catalog):
    sc = Scenario(
        model="kimi-k2.6",
        as_of=dt.date(2026, 11, 1),
        tier="Tier3",
        traffic=Traffic(requests_per_day=1000),
        routes=(
            Route(
                name="a",
                share=1.0,
                system=1000,
                user=100,
                output=200,
                max_completion_tokens=1000,
                cache={"mode": "none"},
                overhead_tokens=0,
            ),
        ),
    )
    # No traffic noise: only the Poisson count noise (sd ~3 % of a day's spend) remains.
    return forecast(sc, 2, catalog=catalog, paths=400, daily_cv=0.0, growth_sd=0.0)


def test_runs_out_on_the_day_by_hand(flat_fc):
    # 10 USD at 1.845 USD/day: 5 days cost 9.23, the 6th day cannot be covered -> 2026-11-06 for the median path.
    ex = exhaustion(flat_fc, 10.0).set_index("quantile")
    assert ex.loc["P50", "runs_out_on"] == dt.date(2026, 11, 6)
    assert ex["after_that"].iloc[0] == QUOTA_ERROR
    # A 5 USD top-up on the 6th carries it to 15 / 1.845 = 8.1 days -> the 9th.
    ex2 = exhaustion(flat_fc, 10.0, topups={dt.date(2026, 11, 6): 5.0}).set_index("quantile")
    assert ex2.loc["P50", "runs_out_on"] == dt.date(2026, 11, 9)
    rw = runway(flat_fc, 10.0)
    assert rw["p_ran_out"].is_monotonic_increasing
    assert rw.set_index("date").loc[dt.date(2026, 11, 4), "p_ran_out"] == 0.0
    assert rw.set_index("date").loc[dt.date(2026, 11, 7), "p_ran_out"] == 1.0


def test_never_runs_out_within_horizon(flat_fc):
    ex = exhaustion(flat_fc, 1e6)
    assert ex["runs_out_on"].isna().all() and ex["p_within_horizon"].iloc[0] == 0.0


def test_topup_needed(flat_fc):
    need = topup_needed(flat_fc, 10.0, dt.date(2026, 11, 30), confidence=0.5)
    assert need == pytest.approx(30 * DAY - 10.0, rel=0.01)
    hi = topup_needed(flat_fc, 10.0, dt.date(2026, 11, 30), confidence=0.95)
    assert hi > need
    # Topped up by the 95 % amount, at most ~5 % of paths run out by the 30th (3 binomial SE of slack).
    rw = runway(flat_fc, 10.0 + hi).set_index("date")
    assert rw.loc[dt.date(2026, 11, 30), "p_ran_out"] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400)
    assert topup_needed(flat_fc, 1e6, dt.date(2026, 11, 30)) == 0.0


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda fc: exhaustion(fc, -1.0), "balance"),
        (lambda fc: exhaustion(fc, 10.0, balance_on=dt.date(2030, 1, 1)), "balance_on"),
        (lambda fc: exhaustion(fc, 10.0, topups={dt.date(2026, 11, 5): -5.0}), "topups"),
        (lambda fc: exhaustion(fc, 10.0, topups={dt.date(2029, 1, 5): 5.0}), "top-up date"),
        (lambda fc: topup_needed(fc, 10.0, dt.date(2026, 11, 30), confidence=1.5), "confidence"),
        (lambda fc: topup_needed(fc, 10.0, dt.date(2031, 1, 1)), "until"),
    ],
)
def test_bad_input(flat_fc, call, field):
    with pytest.raises(ConfigError, match=field):
        call(flat_fc)


def test_tier_ladder(catalog):
    sc = load_scenario(example_path("support_chat"), catalog)  # Tier3 on the intl platform: 100 USD cumulative
    t = tier_recharge(
        sc, catalog, recharged_so_far=20.0, topups={dt.date(2026, 12, 1): 50.0, dt.date(2027, 1, 1): 50.0}
    )
    row = t[t["target"]].iloc[0]
    assert row["tier"] == "Tier3" and row["cumulative_recharge"] == 100.0 and row["currency"] == "USD"
    assert row["still_to_recharge"] == 80.0 and row["reached_on"] == dt.date(2027, 1, 1)
    by = t.set_index("tier")["reached_on"]
    assert by["Tier2"] == sc.as_of  # 20 USD already recharged
    assert by["Tier5"] is None or by["Tier5"] != by["Tier5"]  # 120 USD never reaches 3,000
    with pytest.raises(Exception, match="Tier9"):
        tier_recharge(sc, catalog, tier="Tier9")
