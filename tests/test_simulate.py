"""The simulator against queueing theory, reproducibility, client behaviours, chunking and bad input.

Tolerances come from the sample: each check runs R independent replications and accepts the theory value
within 4 standard errors of their mean (a false alarm about once in 16,000 runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from theory import theory_scenario

from kimiplan.capacity.plan import erlang_b, poisson_overflow_fraction
from kimiplan.capacity.sim import kernel as K
from kimiplan.capacity.sim.simulate import (
    ClientPolicy,
    SimSettings,
    load_trace,
    poisson_arrivals,
    rate_per_minute,
    replay_trace,
    run_stream,
    simulate,
    simulate_arrays,
    simulate_poisson,
)
from kimiplan.errors import ConfigError, ScenarioError
from kimiplan.model.dists import Exponential, Fixed, LogNormal
from kimiplan.model.settings import WindowSettings

NONE = {"concurrency": None, "rpm": None, "tpm": None, "tpd": None, "rpd": None}
R = 6


def _within(values, theory, k=4.0):
    v = np.asarray(values, dtype=float)
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert abs(v.mean() - theory) <= k * se + 1e-12, f"mean {v.mean():.5f} vs theory {theory:.5f} (se {se:.5f})"
    return se


scenario = theory_scenario


@pytest.mark.parametrize(
    "latency",
    [Exponential(mean=5.0), LogNormal.from_mu_sigma(math.log(5.0) - 0.5, 1.0)],
    ids=["M/M/50/50", "M/G/50/50 lognormal"],
)
def test_loss_system_matches_erlang_b(latency):
    # Insensitivity: the lognormal has the same mean (5 s) as the exponential, so blocking is the same.
    assert latency.mean() == pytest.approx(5.0)
    lim = {**NONE, "concurrency": 50.0}
    fr = [
        simulate_poisson(10.0, 20_000.0, lim, latency, seed=s).summary["rejected_fraction"]["concurrency"]
        for s in range(R)
    ]
    se = _within(fr, erlang_b(50, 50.0))
    assert se < 0.004  # the check has power: the spread is small against B = 0.105


def test_littles_law_in_flight_equals_throughput_times_latency():
    lim = {**NONE, "concurrency": 30.0}
    gaps = []
    for s in range(R):
        r = simulate_poisson(8.0, 20_000.0, lim, LogNormal(median=2.0, p95=9.0), seed=100 + s).summary
        gaps.append(r["mean_in_flight"] - r["throughput_rps"] * r["mean_latency_s"])
    _within(gaps, 0.0)


def test_fixed_window_rpm_refuses_the_poisson_overflow():
    # 100 requests per minute on average against RPM 105 in calendar minutes: refused share E[(N-K)+]/E[N].
    lim = {**NONE, "rpm": 105.0}
    st = SimSettings(window=WindowSettings(rate_window="fixed"), hours=50.0)
    fr = [
        simulate_poisson(
            100 / 60, 50 * 3600.0, lim, Fixed(value=1.0), seed=s, settings=st.model_copy(update={"seed": s})
        ).summary["rejected_fraction"]["rpm"]
        for s in range(R)
    ]
    _within(fr, poisson_overflow_fraction(100.0, 105.0))


def test_sliding_window_refuses_more_than_fixed():
    lim = {**NONE, "rpm": 105.0}
    kw = dict(rate_rps=100 / 60, horizon_s=20 * 3600.0, limits=lim, latency_dist=Fixed(value=1.0), seed=3)
    fixed = simulate_poisson(**kw, settings=SimSettings(seed=3, window=WindowSettings(rate_window="fixed")))
    sliding = simulate_poisson(**kw)
    assert sliding.summary["rejected_fraction"]["rpm"] > fixed.summary["rejected_fraction"]["rpm"]
    # No sliding 60 s window ever holds more than the limit.
    t_adm = sliding.per_minute["admitted"].to_numpy()
    assert t_adm.max() <= 105


def test_scenario_run_is_seeded_and_reproducible():
    sc = scenario()
    a = simulate(sc, settings=SimSettings(hours=2)).summary
    b = simulate(sc, settings=SimSettings(hours=2)).summary
    c = simulate(sc, settings=SimSettings(hours=2, seed=12)).summary
    assert a == b and a["seed"] == 11
    assert c["requests"] != a["requests"]
    # 4 req/s for 2 h: the count is Poisson(28,800).
    assert abs(a["requests"] - 28_800) < 4 * math.sqrt(28_800)
    assert abs(a["rejected_fraction"]["concurrency"] - erlang_b(20, 16.0)) < 0.02


def test_hourly_profile_and_bursts_shape_the_arrivals():
    prof = [1.0] * 12 + [3.0] * 12
    sc = scenario(
        traffic={
            "requests_per_second": 2.0,
            "hourly_profile": prof,
            "bursts": [{"start": "06:00", "minutes": 30, "factor": 4.0}],
        }
    )
    rate = rate_per_minute(sc.traffic, 86400.0, sc.as_of)
    assert rate[0] == pytest.approx(1.0) and rate[13 * 60] == pytest.approx(3.0)
    assert rate[6 * 60 + 10] == pytest.approx(4.0) and rate[6 * 60 + 31] == pytest.approx(1.0)
    t = np.concatenate(list(poisson_arrivals(rate, 86400.0, np.random.default_rng(0), chunk=4096)))
    assert np.all(np.diff(t) >= 0) and t[-1] < 86400.0
    per_min = np.bincount((t // 60).astype(int), minlength=1440)
    for lo, hi in ((0, 360), (360, 390), (720, 1440)):
        exp = rate[lo:hi].sum() * 60
        assert abs(per_min[lo:hi].sum() - exp) < 4 * math.sqrt(exp)


def test_chunk_boundaries_do_not_change_the_result():
    rng = np.random.default_rng(9)
    n = 30_000
    t = np.cumsum(rng.exponential(0.05, n))
    res = rng.integers(500, 5000, n).astype(float)
    lat = rng.exponential(3.0, n)
    lim = {"concurrency": 40.0, "rpm": 900.0, "tpm": 2_000_000.0, "tpd": None, "rpd": None}
    st = SimSettings(client=ClientPolicy(kind="retry", max_retries=3), seed=4)
    h = float(t[-1]) + 1
    whole = simulate_arrays(t, res, lat, lim, h, settings=st)
    cuts = [0, 7, 5000, 5001, 17_777, n]
    parts = iter([(t[a:b], res[a:b], res[a:b], lat[a:b]) for a, b in zip(cuts, cuts[1:])])
    split = run_stream(parts, lim, h, st)
    assert whole.summary == split.summary
    assert whole.summary["retries"] > 0


def test_retries_count_against_rpm_again():
    lim = {**NONE, "rpm": 60.0}
    st = SimSettings(client=ClientPolicy(kind="retry", max_retries=4, backoff_base_s=2.0), seed=1, hours=2)
    r = simulate_poisson(1.5, 7200.0, lim, Fixed(value=1.0), seed=1, settings=st).summary
    assert r["attempts"] == r["requests"] + r["retries"] - r["retries_pending_at_end"]
    assert r["admitted"] + sum(r["refused"].values()) == r["attempts"]
    none = simulate_poisson(1.5, 7200.0, lim, Fixed(value=1.0), seed=1).summary
    assert r["failed_fraction"] < none["failed_fraction"]  # retries rescue some requests ...
    assert r["wait_s"]["p99"] > 0  # ... at the price of waiting


def test_pacing_client_never_gets_a_429_and_waits_instead():
    lim = {**NONE, "concurrency": 10.0, "rpm": 100.0}
    st = SimSettings(client=ClientPolicy(kind="pace"), seed=2, hours=1)
    r = simulate_poisson(1.6, 3600.0, lim, Exponential(mean=5.0), seed=2, settings=st)
    s = r.summary
    assert s["rejected_fraction"]["total"] == 0.0
    assert s["wait_s"]["p95"] > 0 and s["mean_wait_s"] > 0
    assert r.per_minute["admitted"].max() <= 100
    assert r.per_second["in_flight"].max() <= 10
    assert s["peak_usage"]["rpm"]["peak"] == r.per_minute["admitted"].max() <= 100
    assert s["peak_usage"]["concurrency"]["peak"] <= 10


def test_trace_replay(tmp_path):
    p = tmp_path / "usage.csv"
    p.write_text(
        "timestamp,input_tokens,max_completion_tokens,completion_tokens,latency_s\n"
        "2026-11-26T00:00:00Z,1000,2000,300,2.0\n"
        "2026-11-26T00:00:01Z,1000,0,300,2.0\n"
        "2026-11-26T00:00:02Z,1000,2000,300,2.0\n"
        "2026-11-26T00:01:30Z,1000,2000,300,2.0\n"
    )
    tr = load_trace(p)
    assert tr["t_s"].tolist() == [0.0, 1.0, 2.0, 90.0]
    sc = scenario(tier={"name": "t", "tpm": 39_000})
    r = replay_trace(tr, sc, settings=SimSettings(hours=0.05))
    # 3,000 + 33,768 (default budget) fill the minute; the third (3,000) is refused; at 90 s the first is gone.
    assert r.summary["refused"]["tpm"] == 1 and r.summary["admitted"] == 3
    assert r.summary["billed_tokens"] == 3 * 1300


def test_bad_input_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="hours"):
        simulate(scenario(), settings=SimSettings(hours=0))
    with pytest.raises(ConfigError, match="tier"):
        simulate(scenario(tier={"name": "empty"}))
    with pytest.raises(ConfigError, match="tier"):
        simulate(scenario(tier=None))
    with pytest.raises(ScenarioError, match="requests_per_second"):
        scenario(traffic={"requests_per_second": -1.0})
    with pytest.raises(ConfigError, match="rate_rps"):
        simulate_poisson(0.0, 10.0, {**NONE, "rpm": 1.0}, Fixed(value=1.0))
    bad = tmp_path / "t.csv"
    bad.write_text("time,input_tokens\n1,2\n")
    with pytest.raises(ConfigError, match="timestamp"):
        load_trace(bad)


def test_wait_histogram_bins_and_quantiles():
    edges = K.hist_edges()
    rng = np.random.default_rng(3)
    x = np.concatenate([np.zeros(50), rng.uniform(0, 1e-3, 50), rng.lognormal(0.0, 2.0, 20_000), [3e6]])
    hist = np.zeros(K.HIST_BINS, dtype=np.int64)
    for v in x:
        b = K._hist_bin(v)
        hist[b] += 1
        if b >= 2:  # bin b holds [edges[b-1], edges[b])
            assert edges[b - 1] <= v < edges[b]
    assert hist[0] == 50 and hist[1] >= 50 and hist[-1] == 1
    assert np.all(np.diff(edges[1:-1]) > 0) and np.all(edges[2:-1] / edges[1:-2] <= 1.016)
    for q in (0.5, 0.9, 0.99):
        assert K.hist_quantile(hist, q) == pytest.approx(np.quantile(x, q), rel=0.016)
    assert math.isnan(K.hist_quantile(np.zeros(K.HIST_BINS, dtype=np.int64), 0.5))


def test_pacing_client_waits_as_erlang_c_predicts():
    # A client that waits for a free slot turns the concurrency limit into an M/M/c FIFO queue.
    from kimiplan.capacity.plan import pacing_wait

    c, lam, mean = 20, 3.75, 4.0
    lim = {**NONE, "concurrency": float(c)}
    waits = []
    for s in range(R):
        st = SimSettings(hours=20_000 / 3600, seed=s, client=ClientPolicy(kind="pace"))
        r = simulate_poisson(lam, 20_000.0, lim, Exponential(mean=mean), seed=300 + s, settings=st).summary
        assert r["rejected_fraction"]["total"] == 0
        waits.append(r["mean_wait_s"])
    se = _within(waits, pacing_wait(c, lam * mean, mean)["mean_wait_s"])
    assert se < 0.02  # against a predicted mean wait of 0.128 s
