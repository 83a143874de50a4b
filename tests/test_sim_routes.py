"""Refusals per route in the simulator, held to the readable reference admission (`AccountState`) request by
request, with and without a retrying client (the route rides with each retry)."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from kimiplan.capacity.sim.simulate import ClientPolicy, SimSettings, route_table, simulate_arrays, worst_route
from kimiplan.catalog.admission import AccountState, WindowSettings
from kimiplan.errors import ConfigError
from kimiplan.model.settings import backoff_s

ROUTES = ["chat", "report"]


def _requests(seed: int, n: int):
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < 0.3, 0.01, rng.exponential(2.0, n))
    t = np.cumsum(gaps)
    route = (rng.random(n) < 0.3).astype(np.int64)  # 30 % long reports
    res = np.where(route == 1, 10_000.0, 2_000.0)  # the two reservation sizes
    lat = rng.lognormal(0.3, 0.8, n)
    calls = np.where((route == 1) & (rng.random(n) < 0.4), 3, 1)  # some reports make $web_search rounds
    return t, res, lat, calls, route


def _reference(t, res, lat, calls, route, lim, ws, retries=0, base=1.0, cap=60.0, horizon=np.inf):
    """AccountState driven in time order; a refused attempt comes back after the deterministic backoff."""
    ref = AccountState(lim, ws)
    names = list(lim)
    refused = np.zeros((2, len(names)), dtype=int)
    admitted = np.zeros(2, dtype=int)
    gave_up = np.zeros(2, dtype=int)
    events = []  # (time, kind: 0 retry before 1 fresh at the same time, order, index, attempt)
    for i in range(t.size):
        heapq.heappush(events, (t[i], 1, i, i, 0))
    order = t.size
    while events:
        when, _, _, i, attempt = heapq.heappop(events)
        if when >= horizon:
            continue
        k = ref.offer(when, res[i], lat[i], int(calls[i]))
        if k is None:
            admitted[route[i]] += 1
            continue
        refused[route[i], names.index(k)] += 1
        if attempt < retries:
            heapq.heappush(events, (when + backoff_s(attempt, base, cap), 0, order, i, attempt + 1))
            order += 1
        else:
            gave_up[route[i]] += 1
    return refused, admitted, gave_up


@pytest.mark.parametrize("window", ["sliding", "fixed"])
def test_per_route_refusals_match_the_reference_request_by_request(window):
    t, res, lat, calls, route = _requests(3, 5000)
    lim = {"concurrency": 6.0, "rpm": 60.0, "tpm": 200_000.0, "tpd": None, "rpd": None}
    ws = WindowSettings(rate_window=window)
    refused, admitted, gave_up = _reference(t, res, lat, calls, route, lim, ws)
    got = simulate_arrays(
        t, res, lat, lim, float(t[-1]) + 1, settings=SimSettings(window=ws), calls=calls, route=route, routes=ROUTES
    ).summary
    for j, name in enumerate(ROUTES):
        r = got.by_route[name]
        assert [r["refused"][k] for k in lim] == refused[j].tolist()
        assert r["attempts"] == admitted[j] + refused[j].sum() == r["requests"] == int((route == j).sum())
        assert r["failed_fraction"] == pytest.approx(gave_up[j] / (route == j).sum())
        assert got.rejected_fraction_by_route[name] == pytest.approx(refused[j].sum() / r["attempts"])
    # every limit refuses someone, and the large requests are refused far more often than the small ones
    assert (refused.sum(axis=0)[:3] > 0).all()
    assert got.rejected_fraction_by_route["report"] > 1.3 * got.rejected_fraction_by_route["chat"]
    assert worst_route(got.rejected_fraction_by_route) == "report"
    assert route_table(got)["route"].tolist() == ["report", "chat"]
    # the routes add up to the account
    assert sum(got.by_route[n]["refused"]["tpm"] for n in ROUTES) == got.refused["tpm"]


def test_per_route_counts_follow_each_retry():
    t, res, lat, calls, route = _requests(9, 3000)
    lim = {"concurrency": 5.0, "rpm": 50.0, "tpm": 90_000.0, "tpd": None, "rpd": None}
    ws = WindowSettings()
    horizon = float(t[-1]) + 1
    refused, admitted, gave_up = _reference(t, res, lat, calls, route, lim, ws, retries=3, base=2.0, horizon=horizon)
    st = SimSettings(client=ClientPolicy(kind="retry", max_retries=3, backoff_base_s=2.0, jitter=False))
    got = simulate_arrays(t, res, lat, lim, horizon, settings=st, calls=calls, route=route, routes=ROUTES).summary
    assert got.retries > 0
    pending = got.retries_pending_at_end
    for j, name in enumerate(ROUTES):
        r = got.by_route[name]
        assert [r["refused"][k] for k in lim] == refused[j].tolist()
        assert r["attempts"] == admitted[j] + refused[j].sum()
        assert r["requests"] == int((route == j).sum())
        assert r["failed_fraction"] * r["requests"] == pytest.approx(gave_up[j])
    assert pending == 0 or got.attempts < sum(admitted) + refused.sum() + pending


def test_one_route_and_bad_labels():
    t, res, lat, calls, _ = _requests(1, 500)
    lim = {"concurrency": 3.0, "rpm": None, "tpm": None, "tpd": None, "rpd": None}
    s = simulate_arrays(t, res, lat, lim, float(t[-1]) + 1).summary
    assert list(s.by_route) == ["all"] and s.by_route["all"]["refused"] == s.refused
    assert s.rejected_fraction_by_route["all"] == s.rejected_fraction["total"]
    assert worst_route(s.rejected_fraction_by_route) is None
    with pytest.raises(ConfigError, match="route"):
        simulate_arrays(t, res, lat, lim, 1000.0, route=np.full(t.size, 2), routes=ROUTES)
