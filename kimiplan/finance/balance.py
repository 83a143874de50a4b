"""Prepaid balance: when it runs out, the top-up that carries it to a date, and the recharge a tier needs.

Moonshot is prepaid. When the balance reaches zero every call fails with HTTP 429
`exceeded_current_quota_error` ("You exceeded your current token quota ... please check your account balance"),
so the run-out date is an outage date, not an invoice date. Amounts are in the forecast's currency and include
the scenario's tax (set `tax_rate` to 0 if the balance is drawn before tax). Top-ups arrive at the start of their
day; spend on a day is taken during that day, so the run-out date is the first day the balance cannot cover.
Rate tiers follow *cumulative* recharge (vouchers do not count), so every top-up also climbs the tier ladder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.errors import ConfigError
from kimiplan.finance.forecast import Forecast, _check_range, month_status
from kimiplan.model.scenario import Scenario

QUOTA_ERROR = "HTTP 429 exceeded_current_quota_error"


def _prepare(fc: Forecast, balance: float, topups: Mapping[dt.date, float] | None, balance_on: dt.date | None):
    _check_range("balance", balance, 0, 1e15)
    dates = fc.dates
    on = balance_on or fc.scenario.as_of
    if not (dates[0] <= on <= dates[-1]):
        raise ConfigError(f"balance_on must be inside the forecast ({dates[0]} to {dates[-1]}), got {on}")
    first = dates.index(on)
    days = dates[first:]
    top = np.zeros(len(days))
    for d, amount in (topups or {}).items():
        if not isinstance(d, dt.date):
            raise ConfigError(f"top-up dates must be dates, got {d!r}")
        _check_range(f"topups[{d}]", amount, 0, 1e15, lo_open=True)
        if d < on or d > days[-1]:
            raise ConfigError(f"top-up date {d} must be between balance_on {on} and the horizon end {days[-1]}")
        top[days.index(d)] += amount
    spend = fc.daily_paths[:, first:]
    return days, spend, top


def _first_exhausted(balance: float, spend: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Index of the first day each path's balance cannot cover the day's spend (len(days) = never)."""
    cum = np.cumsum(spend, axis=1)
    avail = balance + np.cumsum(top)[None, :]
    # An unpriced (NaN) day stops the run: we cannot say the balance survives it.
    out = (cum >= avail) | np.isnan(cum)
    idx = np.where(out.any(axis=1), out.argmax(axis=1), spend.shape[1])
    return idx


def runway(
    fc: Forecast, balance: float, topups: Mapping[dt.date, float] | None = None, balance_on: dt.date | None = None
) -> pd.DataFrame:
    """Per day from `balance_on`: expected spend, balance quantiles and P(balance already ran out)."""
    days, spend, top = _prepare(fc, balance, topups, balance_on)
    bal = balance + np.cumsum(top)[None, :] - np.cumsum(spend, axis=1)
    idx = _first_exhausted(balance, spend, top)
    p_out = (idx[:, None] <= np.arange(len(days))[None, :]).mean(axis=0)
    out = pd.DataFrame({"date": days, "top_up": top, "expected_spend": np.nanmean(spend, axis=0)})
    for q in fc.quantiles:
        # Balance quantile q: low spend gives a high balance, so quantile q of the balance itself.
        out[f"balance_P{q * 100:g}"] = np.quantile(bal, q, axis=0)
    out["p_ran_out"] = p_out
    out["currency"] = fc.currency
    return out


def exhaustion(
    fc: Forecast, balance: float, topups: Mapping[dt.date, float] | None = None, balance_on: dt.date | None = None
) -> pd.DataFrame:
    """One row per quantile: the date the balance runs out (NaT = not within the horizon), plus P(within horizon)."""
    days, spend, top = _prepare(fc, balance, topups, balance_on)
    idx = _first_exhausted(balance, spend, top)
    rows = []
    for q in fc.quantiles:
        # The run-out day of the q-th earliest path: P(run out by that date) ~ q.
        k = int(np.quantile(idx, q, method="inverted_cdf"))
        rows.append({"quantile": f"P{q * 100:g}", "runs_out_on": days[k] if k < len(days) else pd.NaT})
    frame = pd.DataFrame(rows)
    frame["p_within_horizon"] = float((idx < len(days)).mean())
    frame["horizon_end"] = days[-1]
    frame["after_that"] = QUOTA_ERROR
    return frame


def topup_needed(
    fc: Forecast,
    balance: float,
    until: dt.date,
    confidence: float = 0.9,
    topups: Mapping[dt.date, float] | None = None,
    balance_on: dt.date | None = None,
) -> float:
    """The one-off top-up on `balance_on` that keeps the balance above zero through `until` with
    probability `confidence` (0 when the balance already suffices)."""
    _check_range("confidence", confidence, 0, 1, lo_open=True)
    days, spend, top = _prepare(fc, balance, topups, balance_on)
    if not (days[0] <= until <= days[-1]):
        raise ConfigError(f"until must be between {days[0]} and the horizon end {days[-1]}, got {until}")
    n = days.index(until) + 1
    cum = np.cumsum(spend[:, :n], axis=1)
    if np.isnan(cum).any():
        raise ConfigError(f"the forecast has unpriced (retired-model) days before {until}; no top-up can be sized")
    # Path p needs x with balance + x + topups(<=d) - spend(<=d) > 0 for every day d <= until.
    short = (cum - np.cumsum(top[:n])[None, :]).max(axis=1) - balance
    return float(max(0.0, np.quantile(short, confidence)))


def tier_recharge(
    scenario: Scenario,
    catalog: Catalog | None = None,
    recharged_so_far: float = 0.0,
    tier: str | None = None,
    topups: Mapping[dt.date, float] | None = None,
) -> pd.DataFrame:
    """The tier ladder with the cumulative recharge each tier needs, what is still missing for `tier` (default:
    the scenario's tier, or the one a capacity plan chose) and the date a top-up schedule reaches each tier."""
    _check_range("recharged_so_far", recharged_so_far, 0, 1e15)
    catalog = catalog or load_catalog()
    ladder = catalog.tiers(scenario.provider, scenario.resolved_region, scenario.as_of)
    if not ladder:
        raise ConfigError(f"the catalog has no rate tiers for {scenario.provider}/{scenario.resolved_region}")
    target = tier or (scenario.tier if isinstance(scenario.tier, str) else None)
    if target is not None:
        catalog.tier(target, scenario.provider, scenario.resolved_region, scenario.as_of)  # unknown tier -> error
    steps = sorted((topups or {}).items())
    rows = []
    for t in ladder:
        need = None if t.recharge is None else float(t.recharge)
        reached = None
        if need is not None:
            if recharged_so_far >= need:
                reached = scenario.as_of
            else:
                total = recharged_so_far
                for d, amount in steps:
                    total += amount
                    if total >= need:
                        reached = d
                        break
        rows.append(
            {
                "tier": t.name,
                "version": t.version,
                "cumulative_recharge": need,
                "currency": t.recharge_currency,
                "still_to_recharge": None if need is None else max(0.0, need - recharged_so_far),
                "reached_on": reached,
                "concurrency": t.concurrency,
                "rpm": t.rpm,
                "tpm": t.tpm,
                "tpd": t.tpd,
                "target": target is not None and t.name.lower() == target.lower(),
                "source": t.source,
                "verified_on": t.verified_on,
            }
        )
    return pd.DataFrame(rows)


def with_balance(fc: Forecast, balance: float, topups: Mapping[dt.date, float] | None = None) -> Forecast:
    """`fc` with each month's `status` also naming the prepaid balance: the month it runs out (the median
    path's date) and "balance spent" after it, so one `status` column reflects capacity, budget and balance."""
    ex = exhaustion(fc, balance, topups)
    mid = dict(zip(ex["quantile"], ex["runs_out_on"], strict=True)).get("P50")
    runs_out = None if mid is None or pd.isna(mid) else pd.Timestamp(mid).date()
    return dataclasses.replace(fc, monthly=month_status(fc.monthly, fc.scenario.tier, runs_out))
