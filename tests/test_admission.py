"""Admission rules: what each provider counts, and the compiled kernel against the readable reference."""

from __future__ import annotations

import numpy as np
import pytest

from kimiplan.capacity.sim.simulate import SimSettings, simulate_arrays
from kimiplan.catalog.admission import (
    K26_DEFAULT_MAX_COMPLETION,
    AccountState,
    WindowSettings,
    error_body,
    limit_values,
    rule_for,
)
from kimiplan.catalog.cards import custom_tier, load_catalog
from kimiplan.errors import ConfigError

NONE = {"concurrency": None, "rpm": None, "tpm": None, "tpd": None, "rpd": None}


def test_moonshot_counts_input_plus_budget_default_when_omitted():
    rule = rule_for("moonshot")
    got = rule.reserved_tokens([1000, 2000, 10], [512, 0, np.nan])
    assert got.tolist() == [1512, 2000 + K26_DEFAULT_MAX_COMPLETION, 10 + K26_DEFAULT_MAX_COMPLETION]
    assert K26_DEFAULT_MAX_COMPLETION == 32768


def test_cloudflare_and_openrouter_do_not_enforce_token_limits():
    cat = load_catalog()
    cf = [t for t in cat.rate_tiers if t.provider == "cloudflare"][0]
    assert limit_values(cf) == {**NONE, "rpm": 300.0}
    # A token limit on a provider that does not count tokens is dropped, not silently enforced.
    t = custom_tier("x", provider="openrouter", rpm=20, tpm=1000)
    assert limit_values(t, rule_for("openrouter")) == {**NONE, "rpm": 20.0}
    with pytest.raises(ConfigError, match="provider"):
        rule_for("nowhere")


def test_tpm_counts_the_budget_not_what_is_generated():
    # Two requests of 1,000 input tokens with the default budget reserve 2 x 33,768 > 50,000 TPM:
    # the second is refused although each would generate only a handful of tokens.
    lim = {**NONE, "tpm": 50_000.0}
    res = rule_for("moonshot").reserved_tokens([1000, 1000])
    r = simulate_arrays([0.0, 1.0], res, [0.5, 0.5], lim, 120.0, billed=[1010, 1010])
    assert r.summary["refused"]["tpm"] == 1 and r.summary["admitted"] == 1
    assert r.summary["billed_tokens"] == 1010


def test_rpm_sliding_window_frees_a_slot_exactly_60s_later():
    lim = {**NONE, "rpm": 3.0}
    t = [0.0, 1.0, 2.0, 3.0, 59.999, 60.0]
    r = simulate_arrays(t, 1.0, 0.1, lim, 120.0)
    # 3.0 and 59.999 are refused (3 in the last 60 s); at 60.0 the request from 0.0 has left the window.
    assert r.summary["refused"]["rpm"] == 2 and r.summary["admitted"] == 4
    fixed = simulate_arrays(t, 1.0, 0.1, lim, 120.0, settings=SimSettings(window=WindowSettings(rate_window="fixed")))
    assert fixed.summary["refused"]["rpm"] == 2 and fixed.per_minute["admitted"].tolist()[:2] == [3, 1]


def test_tpd_resets_at_local_midnight():
    lim = {**NONE, "tpd": 100.0}
    w = WindowSettings(tpd_reset_utc_offset_hours=8)  # resets at 16:00 UTC
    t = [0.0, 3600.0, 16 * 3600 - 1, 16 * 3600 + 1]
    r = simulate_arrays(t, 60.0, 1.0, lim, 20 * 3600.0, settings=SimSettings(window=w))
    assert r.summary["refused"]["tpd"] == 2 and r.summary["admitted"] == 2
    assert r.per_day["reserved_tokens"].tolist() == [60.0, 60.0]


@pytest.mark.parametrize("daily", ["tpd", "rpd"])
@pytest.mark.parametrize("window", ["sliding", "fixed"])
def test_kernel_matches_reference_request_by_request(window, daily):
    rng = np.random.default_rng(5)
    n = 6000
    # Bursty arrivals (a third of the gaps are 10 ms) over 16 hours, across a TPD reset at 10:00 UTC.
    gaps = np.where(rng.random(n) < 0.35, 0.01, rng.exponential(15.0, n))
    t = np.cumsum(gaps)
    res = rng.integers(100, 3000, n).astype(float)
    lat = rng.lognormal(0.5, 1.0, n)
    lim = {"concurrency": 4.0, "rpm": 8.0, "tpm": 10_000.0, "tpd": 1_700_000.0, "rpd": 1300.0}
    lim["rpd" if daily == "tpd" else "tpd"] = None  # one daily limit at a time, so each of them binds
    ws = WindowSettings(rate_window=window, tpd_reset_utc_offset_hours=14)
    ref = AccountState(lim, ws)
    expected = {k: 0 for k in lim}
    for i in range(n):
        k = ref.offer(t[i], res[i], lat[i])
        if k:
            expected[k] += 1
    got = simulate_arrays(t, res, lat, lim, float(t[-1]) + 1, settings=SimSettings(window=ws))
    assert got.summary["refused"] == expected
    assert all(expected[k] > 0 for k in lim if lim[k] is not None)  # every limit set is exercised
    assert got.summary["admitted"] == n - sum(expected.values())


def test_kernel_concurrency_heap_matches_reference_when_deep():
    # Around 60 requests in flight: the kernel's 4-ary heap is three levels deep and pops full families.
    rng = np.random.default_rng(11)
    n = 20_000
    t = np.cumsum(rng.exponential(0.1, n))
    lat = rng.lognormal(1.5, 0.9, n)
    lim = {"concurrency": 57.0, "rpm": None, "tpm": None, "tpd": None, "rpd": None}
    ref = AccountState(lim, WindowSettings())
    refused = sum(1 for i in range(n) if ref.offer(t[i], 1.0, lat[i]))
    got = simulate_arrays(t, 1.0, lat, lim, float(t[-1]) + 1)
    assert got.summary["refused"]["concurrency"] == refused
    assert 0.01 < refused / n < 0.5  # the limit binds often, but not always


@pytest.mark.parametrize("window", ["sliding", "fixed"])
def test_requests_that_make_several_calls_count_them_all(window):
    # `$web_search` round trips: a request of k calls takes k from RPM and RPD at its start.
    rng = np.random.default_rng(8)
    n = 6000
    t = np.cumsum(rng.exponential(2.0, n))
    calls = rng.integers(1, 4, n)
    lat = rng.lognormal(0.5, 1.0, n)
    lim = {"concurrency": None, "rpm": 40.0, "tpm": None, "tpd": None, "rpd": 40_000.0}
    ws = WindowSettings(rate_window=window)
    ref = AccountState(lim, ws)
    expected = {k: 0 for k in lim}
    admitted_calls = 0
    for i in range(n):
        k = ref.offer(t[i], 1.0, lat[i], int(calls[i]))
        if k:
            expected[k] += 1
        else:
            admitted_calls += int(calls[i])
    got = simulate_arrays(t, 1.0, lat, lim, float(t[-1]) + 1, settings=SimSettings(window=ws), calls=calls)
    assert got.summary["refused"] == expected and expected["rpm"] > 0
    assert got.per_minute["admitted_calls"].sum() == admitted_calls
    once = simulate_arrays(t, 1.0, lat, lim, float(t[-1]) + 1, settings=SimSettings(window=ws))
    assert once.summary["refused"]["rpm"] < expected["rpm"]  # counting one call each would miss refusals


def test_custom_tier_with_only_some_limits():
    lim = limit_values(custom_tier("c", concurrency=2))
    assert lim == {**NONE, "concurrency": 2.0}
    r = simulate_arrays([0, 0.1, 0.2, 5.0], 1.0, 1.0, lim, 10.0)
    assert r.summary["refused"] == {"concurrency": 1, "rpm": 0, "tpm": 0, "tpd": 0, "rpd": 0}


def test_429_bodies_follow_the_documented_templates():
    lim = {**NONE, "rpm": 200.0, "tpm": 3e6}
    b = error_body("rpm", lim)
    assert b["error"]["type"] == "rate_limit_reached_error"
    assert "max RPM: 200" in b["error"]["message"]
    assert "current:3100000, limit:3000000" in error_body("tpm", lim, 3.1e6)["error"]["message"]  # as Kimi prints
    with pytest.raises(ConfigError):
        error_body("rpd", lim)
