"""The shipped synthetic usage log is what the documented command draws from the current support_chat scenario:
an edit to the scenario (or to the sampler) that is not followed by a regeneration fails here."""

from __future__ import annotations

import pandas as pd
import pandas.testing as pdt

from kimiplan.catalog.resolve import load_scenario
from kimiplan.finance.backtest import _add_months, synthetic_usage_log
from kimiplan.io.paths import data_path
from kimiplan.model.scenario import example_path


def test_shipped_usage_log_matches_the_current_scenario():
    shipped = pd.read_csv(data_path("usage", "past_months_synthetic.csv"), parse_dates=["date"])
    sc = load_scenario(example_path("support_chat"))
    start = _add_months(sc.as_of.replace(day=1), -6)
    fresh = synthetic_usage_log(sc, start, 6, seed=2026)
    fresh["date"] = pd.to_datetime(fresh["date"])
    pdt.assert_frame_equal(shipped, fresh, check_dtype=False)
    # And the level is the scenario's: requests a day within a few percent of its calendar.
    daily = shipped.groupby("date")["requests"].sum()
    g = sc.traffic.monthly_growth
    assert 0.8 * sc.traffic.per_day / (1 + g) ** 7 < daily.mean() < sc.traffic.per_day
