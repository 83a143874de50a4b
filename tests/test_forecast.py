"""Forecast: calendar arithmetic, Monte Carlo vs closed form, price changes and retirements, bad input,
backtest and the CLI."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from kimiplan.catalog.cards import PriceCard
from kimiplan.catalog.resolve import load_scenario, price_card
from kimiplan.errors import ConfigError
from kimiplan.finance.backtest import backtest, synthetic_usage_log
from kimiplan.finance.cost import cost_of_records, expected_cost
from kimiplan.finance.forecast import forecast, monthly_by, price_vector, traffic_calendar
from kimiplan.io.paths import data_path
from kimiplan.model.scenario import Route, Scenario, Traffic, example_path


def _flat(**traffic) -> Scenario:
    """One route with fixed sizes: per-request cost has zero variance, so results can be computed by hand."""
    t = {"requests_per_day": 1000.0, **traffic}
    return Scenario(
        model="kimi-k2.6",
        as_of=dt.date(2026, 11, 10),
        traffic=Traffic(**t),
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


FLAT_COST = (1100 * 0.95 + 200 * 4.0) / 1e6  # USD per request of _flat on the K2.6 intl card


# ---------------------------------------------------------------- calendar


def test_calendar_factors_by_hand():
    sc = _flat(
        weekday_factors=[2, 1, 1, 1, 1, 1, 0],
        monthly_growth=0.1,
        holidays={dt.date(2026, 12, 25): 0.5},
        events=[{"name": "launch", "start": "2026-12-24", "end": "2026-12-26", "factor": 3.0}],
    )
    cal = traffic_calendar(sc, 2).set_index("date")
    mult = np.array([2, 1, 1, 1, 1, 1, 0]) / (7 / 7)  # weights already average 1
    # 2026-12-25 is a Friday (weekday 4), growth one month after as_of's month, holiday and event.
    assert cal.loc[dt.date(2026, 12, 25), "requests"] == pytest.approx(1000 * 1.1 * mult[4] * 0.5 * 3.0)
    # Event end is inclusive; the day after is back to normal. 2026-12-27 is a Sunday (factor 0).
    assert cal.loc[dt.date(2026, 12, 26), "event_factor"] == 3.0
    assert cal.loc[dt.date(2026, 12, 27), "requests"] == 0.0
    assert cal.loc[dt.date(2026, 12, 28), "requests"] == pytest.approx(1000 * 1.1 * 2)  # Monday
    assert cal.loc[dt.date(2026, 11, 2), "requests"] == pytest.approx(1000 * 2)  # as_of month: no growth
    assert len(cal) == 30 + 31


def test_calendar_explicit_month_total():
    sc = _flat(weekday_factors=[1, 1, 1, 1, 1, 0.5, 0.5], monthly_requests={"2026-12": 50_000})
    cal = traffic_calendar(sc, 2)
    dec = cal[cal["month"] == "2026-12"]
    assert dec["requests"].sum() == pytest.approx(50_000)
    sat, mon = dec[dec["date"] == dt.date(2026, 12, 5)], dec[dec["date"] == dt.date(2026, 12, 7)]
    assert float(sat["requests"].iloc[0]) == pytest.approx(float(mon["requests"].iloc[0]) / 2)


# ---------------------------------------------------------------- Monte Carlo against the closed form


@pytest.mark.parametrize("name", ["support_chat", "document_report"])
def test_mc_mean_matches_closed_form(catalog, name):
    sc = load_scenario(example_path(name), catalog)
    fc = forecast(sc, 3, catalog=catalog, paths=4000, daily_cv=0.2, growth_sd=0.05, calibration_samples=300)
    # Closed form from the foundation: cost.expected_cost per request (independent 200k-sample estimate, tax
    # included) times each route's calendar volume.
    # Each day is priced with the card in force that day (the $web_search fee changes on 2026-11-29).
    days = traffic_calendar(sc, 3)
    day_cards = [catalog.price(sc.model, sc.provider, sc.resolved_region, d) for d in days["date"]]
    days["fee"] = [c.web_search_per_call for c in day_cards]
    by_fee = {c.web_search_per_call: c for c in day_cards}
    closed_pr = {
        f: expected_cost(sc, catalog, card=c).groupby("route", sort=False)["cost_per_request"].sum().to_numpy()
        for f, c in by_fee.items()
    }
    sd_pr = {}
    for f, card in by_fee.items():
        sd_pr[f] = []
        for r, route in enumerate(sc.routes):
            p = price_vector(card, route.batch) * (1 + sc.tax_rate)
            sd_pr[f].append(np.sqrt(p @ fc.units.cov[r] @ p))
    shares = np.array([r.share for r in sc.routes])
    for _, row in fc.monthly.iterrows():
        month = days[days["month"] == row["month"]].groupby("fee")["requests"].sum()
        closed = sum(float((v * shares) @ closed_pr[f]) for f, v in month.items())
        closed_se = float(
            np.sqrt(sum(((v * shares * np.array(sd_pr[f])) ** 2).sum() for f, v in month.items())) / np.sqrt(200_000)
        )
        # Three independent errors: the Monte Carlo mean, our unit-cost estimate, the foundation's estimate.
        se = np.sqrt(row["mc_se"] ** 2 + row["expected_se"] ** 2 + closed_se**2)
        assert abs(row["mean"] - closed) < 4 * se, (row["month"], row["mean"], closed, se)
        assert abs(row["expected"] - closed) < 4 * np.sqrt(row["expected_se"] ** 2 + closed_se**2)


def test_expected_breakdown_adds_up(support, catalog):
    fc = forecast(support, 2, catalog=catalog, paths=200)
    per_month = fc.expected.groupby("month")["cost"].sum()
    assert np.allclose(per_month[fc.monthly["month"]].to_numpy(), fc.monthly["expected"].to_numpy(), rtol=1e-9)
    assert set(fc.expected["component"]) >= {"system", "history", "rag", "user", "output", "reasoning", "tools"}
    assert set(fc.expected["price_class"]) == {"input_cache_hit", "input_cache_miss", "output", "tool_calls"}
    wide = monthly_by(fc, "route")
    assert np.allclose(wide.drop(columns="month").sum(axis=1), fc.monthly["expected"])


def test_flat_scenario_by_hand(catalog):
    n = 2000
    fc = forecast(_flat(), 1, catalog=catalog, paths=n, daily_cv=0.0, growth_sd=0.0)
    assert fc.monthly["expected"].iloc[0] == pytest.approx(30 * 1000 * FLAT_COST)
    # Every request costs the same, so the only noise left is the Poisson count of requests:
    # sd = sqrt(30,000) * cost; the sample sd of n paths has a relative standard error of ~1/sqrt(2(n-1)).
    sd = fc.monthly["sd"].iloc[0]
    assert abs(sd / (np.sqrt(30_000) * FLAT_COST) - 1) < 5 / np.sqrt(2 * (n - 1))


def test_budget_probability_and_seed(support, catalog):
    # A budget at the first month's median: some paths exceed it, some do not.
    budget = float(forecast(support, 1, catalog=catalog, paths=3000, seed=9).monthly["P50"].iloc[0])
    fc = forecast(support, 2, catalog=catalog, paths=3000, seed=1, budget=budget)
    col = fc.paths[:, 0]
    assert fc.monthly["p_over_budget"].iloc[0] == pytest.approx((col > budget).mean())
    assert 0 < fc.monthly["p_over_budget"].iloc[0] < 1
    again = forecast(support, 2, catalog=catalog, paths=3000, seed=1, budget=budget)
    assert np.array_equal(fc.paths, again.paths)
    other = forecast(support, 2, catalog=catalog, paths=3000, seed=2, budget=budget)
    assert not np.array_equal(fc.paths, other.paths)
    q = fc.monthly[["P10", "P50", "P90"]].to_numpy()
    assert (np.diff(q, axis=1) > 0).all()


def test_calibration_uncertainty_widens_bands(support, catalog):
    exact = forecast(support, 2, catalog=catalog, paths=3000, daily_cv=0.0, growth_sd=0.0)
    rough = forecast(support, 2, catalog=catalog, paths=3000, daily_cv=0.0, growth_sd=0.0, calibration_samples=30)
    assert (rough.monthly["sd"] > 3 * exact.monthly["sd"]).all()


def test_currency_and_tax(support, catalog):
    usd = forecast(support, 1, catalog=catalog, paths=100)
    cny = forecast(support, 1, catalog=catalog, paths=100, currency="CNY")
    assert cny.monthly["expected"].iloc[0] == pytest.approx(usd.monthly["expected"].iloc[0] * 7.1)
    taxed = forecast(support.with_changes(tax_rate=0.1), 1, catalog=catalog, paths=100)
    assert taxed.monthly["expected"].iloc[0] == pytest.approx(usd.monthly["expected"].iloc[0] * 1.1)
    with pytest.raises(ConfigError, match=r"exchange_rate\['EUR'\]"):
        forecast(support, 1, catalog=catalog, paths=10, currency="EUR")


# ---------------------------------------------------------------- price changes and retirements


def _card(**kw) -> PriceCard:
    base = dict(
        provider="moonshot",
        region="intl",
        model="kimi-k2.6",
        currency="USD",
        input_cache_hit=0.16,
        input_cache_miss=0.95,
        output=4.0,
        context_window=262144,
        default_max_completion_tokens=32768,
        source="test",
        official=False,
        verified_on=dt.date(2026, 11, 1),
    )
    return PriceCard(**{**base, **kw})


def test_price_change_splits_month(catalog):
    # The shipped card ends on 2026-12-15 and a cheaper one starts: December is split on that date.
    old = catalog.price("kimi-k2.6", "moonshot", "intl", dt.date(2026, 11, 10))
    cat = catalog.with_rows(
        cards=[
            old.model_copy(update={"effective_to": dt.date(2026, 12, 15)}),
            _card(input_cache_miss=0.5, output=2.0, effective_from=dt.date(2026, 12, 15)),
        ]
    )
    fc = forecast(_flat(), 2, catalog=cat, paths=20, daily_cv=0.0, growth_sd=0.0)
    new_cost = (1100 * 0.5 + 200 * 2.0) / 1e6
    dec = fc.monthly.set_index("month").loc["2026-12"]
    assert dec["expected"] == pytest.approx(1000 * (14 * FLAT_COST + 17 * new_cost))
    assert bool(dec["price_change"]) and not bool(fc.monthly.set_index("month").loc["2026-11", "price_change"])
    day = fc.daily.set_index("date")["expected_cost"]
    assert day[dt.date(2026, 12, 14)] == pytest.approx(1000 * FLAT_COST)
    assert day[dt.date(2026, 12, 15)] == pytest.approx(1000 * new_cost)


def test_retired_model_is_flagged_not_priced(catalog):
    old = catalog.price("kimi-k2.6", "moonshot", "intl", dt.date(2026, 11, 10))
    cat = catalog.with_rows(
        cards=[old.model_copy(update={"effective_to": dt.date(2027, 1, 10), "retired_on": dt.date(2027, 1, 10)})]
    )
    fc = forecast(_flat(), 4, catalog=cat, paths=50)
    m = fc.monthly.set_index("month")
    assert m.loc["2026-12", "status"] == "ok" and np.isfinite(m.loc["2026-12", "expected"])
    for month in ("2027-01", "2027-02"):
        assert m.loc[month, "status"] == "retired (not priced)"
        assert np.isnan(m.loc[month, "expected"]) and np.isnan(m.loc[month, "P50"])
    assert m.loc["2027-01", "retired_days"] == 22
    assert any("retired" in w for w in fc.warnings)
    assert (fc.daily.set_index("date").loc[dt.date(2027, 1, 10) :, "status"] == "retired").all()


def test_reported_retirement_is_flagged_but_priced(catalog):
    sc = _flat().with_changes(model="kimi-k2.5", as_of=dt.date(2026, 8, 1))
    fc = forecast(sc, 2, catalog=catalog, paths=20)
    m = fc.monthly.set_index("month")
    assert m.loc["2026-08", "status"] == "reported retired, unconfirmed"  # from 2026-08-31
    assert np.isfinite(m.loc["2026-09", "expected"])
    assert any("not confirmed" in w for w in fc.warnings)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"months": 0}, "months"),
        ({"months": 121}, "months"),
        ({"months": 2.5}, "months"),
        ({"paths": 0}, "paths"),
        ({"budget": -1.0}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"daily_cv": -0.1}, "daily_cv"),
        ({"growth_sd": 2.0}, "growth_sd"),
        ({"quantiles": (0.5, 1.5)}, "quantiles"),
        ({"calibration_samples": 1}, "calibration_samples"),
        ({"calibration_samples": {"nope": 10}}, "calibration_samples"),
        ({"start": "2026/13"}, "start"),
        ({"seed": -1}, "seed"),
        ({"paths": 1_000_000, "months": 60}, "paths x days"),
    ],
)
def test_bad_input_names_field(support, catalog, kw, field):
    args = {"months": 1, "paths": 10, **kw}
    months = args.pop("months")
    with pytest.raises(ConfigError, match=field.replace("(", r"\(")):
        forecast(support, months, catalog=catalog, **args)


# ---------------------------------------------------------------- backtest


def test_backtest_on_shipped_log(support, catalog):
    path = data_path("usage", "past_months_synthetic.csv")
    log = pd.read_csv(path)
    assert log["source"].str.startswith("synthetic").all()
    bt = backtest(path, support, catalog=catalog).table
    assert list(bt["month"]) == ["2026-08", "2026-09", "2026-10"]
    # The actual column is the exact cost of the log's usage.
    oct_ = log[log["date"].str.startswith("2026-10")]
    card = price_card(support, catalog)
    exact = sum(float(cost_of_records(g, card).total) for _, g in oct_.groupby("route"))
    assert bt.set_index("month").loc["2026-10", "actual"] == pytest.approx(exact)


def test_backtest_recovers_a_noise_free_trend(support, catalog):
    # Without month-level shocks and with little daily noise the trend fit should land within ~2 %:
    # day noise 0.02/sqrt(31) ~ 0.4 % per month, and the token means are estimated from millions of requests.
    log = synthetic_usage_log(support, "2026-05", 6, seed=5, daily_cv=0.02, month_cv=0.0, catalog=catalog)
    bt = backtest(log, support, catalog=catalog).table
    assert (bt["pct_error"].abs() < 2.0).all(), bt
    with pytest.raises(ConfigError, match="min_history"):
        backtest(log, support, catalog=catalog, min_history=6)
    with pytest.raises(ConfigError, match="not in scenario"):
        backtest(log.assign(route="other"), support, catalog=catalog)


def test_backtest_bands_cover_at_their_level(support, catalog):
    # Six synthetic 30-month logs with month-level shocks, 24 judged months each: the share of actual months
    # inside the band tracks the band's level (144 months: a standard error of about 0.035).
    logs = [synthetic_usage_log(support, "2026-05", 30, seed=s, catalog=catalog) for s in range(6)]
    for level in (0.8, 0.5):
        runs = [backtest(log, support, catalog=catalog, min_history=6, level=level) for log in logs]
        assert all(b.months_judged == 24 for b in runs)
        coverage = np.mean([b.coverage for b in runs])
        assert abs(coverage - level) < 0.12, (level, coverage)
    b = runs[0].table
    assert ((b["band_low"] < b["forecast"]) & (b["forecast"] < b["band_high"])).all()
    assert (b["inside"] == ((b["band_low"] <= b["actual"]) & (b["actual"] <= b["band_high"]))).all()
    with pytest.raises(ConfigError, match="level"):
        backtest(logs[0], support, catalog=catalog, level=1.5)


# ---------------------------------------------------------------- CLI and report


def test_forecast_cli_planned_topups(capsys):
    from kimiplan.cli import main

    base = [
        "forecast",
        "support_chat",
        "--months",
        "6",
        "--paths",
        "300",
        "--balance",
        "5000",
        "--until",
        "2027-03-01",
        "--json",
    ]
    assert main(base) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(base + ["--topup", "2026-12-10=4000", "--topup", "2027-01-10=4000"]) == 0
    planned = json.loads(capsys.readouterr().out)
    # Same paths (same seed): the planned 8,000 comes straight off the top-up needed now.
    assert planned["topup_needed"] == pytest.approx(alone["topup_needed"] - 8000)
    assert planned["balance"][1]["runs_out_on"] > alone["balance"][1]["runs_out_on"]
    assert main(["forecast", "support_chat", "--balance", "1", "--topup", "2026-12=5"]) == 2
    assert "--topup must be a date" in capsys.readouterr().err
    assert main(["forecast", "support_chat", "--topup", "2026-12-01=5"]) == 2
    assert "--topup needs --balance" in capsys.readouterr().err


def test_backtest_cli(capsys):
    from kimiplan.cli import main

    log = str(data_path("usage", "past_months_synthetic.csv"))
    assert main(["backtest", "support_chat", log, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (
        d["level"] == 0.8
        and d["months_judged"] == 3
        and [m["month"] for m in d["months"]] == ["2026-08", "2026-09", "2026-10"]
    )
    assert main(["backtest", "support_chat", log, "--level", "2"]) == 2
    assert "level must be a number" in capsys.readouterr().err


def test_cli_json_and_bad_budget(capsys, tmp_path):
    from kimiplan.cli import main

    out_csv = tmp_path / "m.csv"
    assert (
        main(
            [
                "forecast",
                "support_chat",
                "--months",
                "2",
                "--paths",
                "200",
                "--budget",
                "12000",
                "--json",
                "--csv",
                str(out_csv),
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [m["month"] for m in data["monthly"]] == ["2026-11", "2026-12"]
    assert 0 <= data["monthly"][0]["p_over_budget"] <= 1
    assert pd.read_csv(out_csv)["month"].tolist() == ["2026-11", "2026-12"]
    assert main(["forecast", "support_chat", "--budget", "-3"]) == 2
    assert "budget" in capsys.readouterr().err


def test_report_sections(catalog):
    from kimiplan.report.forecast import forecast_report_sections

    sc = load_scenario(example_path("coding_assistant"), catalog)
    sections = forecast_report_sections(sc, catalog)
    titles = [t for t, _ in sections]
    assert titles[0].startswith("Monthly spend forecast") and any("drivers" in t for t in titles)
    assert all(isinstance(t, str) for t in titles)


def test_over_capacity_warning_reads_as_money_and_a_spaced_percent(catalog):
    """The warning a reader meets under the forecast table: the recharge as money ($3,000, not '3,000 USD') and the
    target as the report writes percentages ('0.1 %', not '0.10%')."""
    import re

    from kimiplan.capacity.plan import plan
    from kimiplan.io.formats import money

    sc = load_scenario("support_chat")
    fc = forecast(sc, 12, catalog=catalog, paths=50)  # Tier3 runs out within the horizon
    up = plan(sc, catalog).upgrade
    (w,) = [w for w in fc.warnings if "over capacity" in w]
    assert f"cumulative recharge {money(up['recharge'], up['recharge_currency'], 0)})" in w
    assert "refusals above 0.1 % at" in w and not re.search(r"\d%", w)
