"""Two limits binding together, plan() against simulate() and, where the window limits are a product-form loss
system, against an independent brute-force product form (every state of the knapsack enumerated).

The grid: ties of concurrency + RPM, RPM + TPM and concurrency + TPM, with one reservation size and several
(two token sizes; `$web_search` requests counting three RPM places and three reservations), at refusal levels
from about 0.1 % to 10 %. Each limit is set so that on its own it refuses about the level's share, so both
bind. The goal (issue 19): plan within 5 % relative or 0.001 absolute of the simulator, and the binding limit
named as the simulator counts it wherever the two limits' charged shares differ by more than that.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_plan_vs_simulate import _batch_se, _scenario

from kimiplan.capacity.loss import JointSizes, erlang_b, window_knapsack
from kimiplan.capacity.plan import plan
from kimiplan.capacity.sim.simulate import simulate
from kimiplan.catalog.resolve import load_scenario
from kimiplan.model.scenario import MAX_LIMIT, MAX_RPS, MIN_REQUESTS_PER_DAY

HOURS = 25.0
LATENCY_S = 8.0

# Routes with laws the brute force can write down exactly: (calls, reserved tokens, probability).
ROUTES = {
    "one size": (
        {"system": 1000, "output": 200, "max_completion_tokens": 4000},
        [(1, 5000, 1.0)],
    ),
    "two sizes": (
        {"system": {"kind": "empirical", "samples": [1000, 9000]}, "output": 200, "max_completion_tokens": 1000},
        [(1, 2000, 0.5), (1, 10000, 0.5)],
    ),
    "web search": (
        {
            "system": 1000,
            "output": 200,
            "max_completion_tokens": 1000,
            "tools": {"web_search_calls": {"kind": "empirical", "samples": [0, 2]}},
        },
        [(1, 2000, 0.5), (3, 6000, 0.5)],
    ),
}


def _route(name: str) -> dict:
    spec = dict(ROUTES[name][0])
    return {**spec, "overhead_tokens": 0, "latency": {"total_s": {"kind": "fixed", "value": LATENCY_S}}}


def brute_product_form(rate: float, classes, rpm: int, tpm: float) -> np.ndarray:
    """Per-class refusal of RPM + TPM over a sliding 60 s window, by enumerating every state n (requests of
    each class in the window) of the product form pi(n) ~ prod a_i^n_i / n_i! on {calls <= RPM, tokens <=
    TPM}: a request is refused when adding it leaves that set."""
    a = [rate * 60.0 * p for _, _, p in classes]
    top = [int(rpm // r) for r, _, _ in classes]
    g = 0.0
    admitted = np.zeros(len(classes))
    for n in itertools.product(*(range(k + 1) for k in top)):
        calls = sum(k * c[0] for k, c in zip(n, classes))
        tokens = sum(k * c[1] for k, c in zip(n, classes))
        if calls > rpm or tokens > tpm:
            continue
        w = math.exp(sum(k * math.log(ai) - math.lgamma(k + 1) for k, ai in zip(n, a)))
        g += w
        for i, (r, t, _) in enumerate(classes):
            if calls + r <= rpm and tokens + t <= tpm:
                admitted[i] += w
    return 1.0 - admitted / g


def test_brute_force_reference_is_erlang_b_for_one_class():
    # The reference itself, held to a closed form it does not use: one class of one call is Erlang B.
    assert brute_product_form(0.5, [(1, 5000, 1.0)], 30, 10**9)[0] == pytest.approx(erlang_b(30, 30.0), rel=1e-12)


@pytest.mark.parametrize("name", list(ROUTES))
def test_window_knapsack_is_the_product_form(name):
    # Over ties (TPM at 0.8, 1 and 1.25 x what RPM's requests reserve) and loads from light to heavy, the
    # knapsack the plan uses matches the enumeration class by class.
    classes = ROUTES[name][1]
    js = JointSizes(*(tuple(float(x[k]) for x in classes) for k in range(3)))
    mean_per_call = sum(t * p for _, t, p in classes) / sum(r * p for r, _, p in classes)
    bad = []
    for rpm, tie, load in itertools.product((12, 30), (0.8, 1.0, 1.25), (0.6, 0.9, 1.3)):
        tpm = rpm * mean_per_call * tie
        rate = load * rpm / 60.0 / sum(r * p for r, _, p in classes)
        want = brute_product_form(rate, classes, rpm, tpm)
        got = window_knapsack(rate, js, rpm, tpm)["blocked"]
        if not np.allclose(got, want, rtol=0.01, atol=1e-5):
            bad.append((rpm, tie, load, got.round(5).tolist(), want.round(5).tolist()))
    assert not bad, bad


def test_a_limit_that_cannot_bind_contributes_nothing():
    js = JointSizes((1.0,), (5000.0,), (1.0,))
    for tpm in (500_000, 520_000, 10**9):  # TPM >= RPM x the reservation: TPM never refuses
        out = window_knapsack(100 / 60, js, 100, tpm)
        assert out["tpm"][0] == 0.0 and out["blocked"][0] == pytest.approx(erlang_b(100, 100.0), rel=1e-12)


def _tie(pair: str, name: str, level: float) -> tuple[float, dict]:
    """A rate and a tier where each of the two limits alone refuses about `level`."""
    classes = ROUTES[name][1]
    calls = sum(r * p for r, _, p in classes)
    tokens = sum(t * p for _, t, p in classes)
    rate = 1.5  # requests/s
    tier = {}
    if "conc" in pair:
        load = rate * LATENCY_S
        tier["concurrency"] = next(c for c in range(1, 1000) if erlang_b(c, load) <= level)
    if "rpm" in pair:
        load = rate * 60 * calls
        tier["rpm"] = next(c for c in range(1, 10000) if erlang_b(c, load) <= level)
    if "tpm" in pair:
        # Erlang B on requests of the mean size: close enough to put TPM at the level.
        n = next(c for c in range(1, 10000) if erlang_b(c, rate * 60) <= level)
        tier["tpm"] = int(n * tokens)
    return rate, tier


GRID = [
    (pair, name, level)
    for pair in ("conc+rpm", "rpm+tpm", "conc+tpm")
    for name in ROUTES
    for level in (0.001, 0.01, 0.1)
    if not (pair == "conc+rpm" and name == "two sizes")  # token sizes do not matter without TPM
]


def measure(pair: str, name: str, level: float, seeds=(1,), hours: float = HOURS) -> dict:
    rate, tier = _tie(pair, name, level)
    sc = _scenario(rate, tier, "sliding", _route(name), hours=hours)
    p = plan(sc)
    sims = [simulate(_scenario(rate, tier, "sliding", _route(name), hours=hours, seed=s)) for s in seeds]
    out = {
        "tier": tier,
        "plan": p.refusal_total,
        "plan_by": p.refusal_attributed,
        "plan_binding": p.binding_limit,
        "sim": float(np.mean([r.summary["rejected_fraction"]["total"] for r in sims])),
        "sim_by": {k: float(np.mean([r.summary["rejected_fraction"][k] for r in sims])) for k in tier},
        "se": float(np.mean([_batch_se(r, "total") for r in sims]) / math.sqrt(len(sims))),
    }
    if pair == "rpm+tpm":
        classes = ROUTES[name][1]
        out["product_form"] = float(np.dot([c[2] for c in classes], brute_product_form(rate, classes, **tier)))
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.05 * abs(b), 0.001)


@pytest.mark.parametrize(("pair", "name", "level"), GRID)
def test_two_limits_together_agree(pair, name, level):
    m = measure(pair, name, level)
    assert _close(m["plan"], m["sim"]) or abs(m["plan"] - m["sim"]) <= 3 * m["se"], m
    if "product_form" in m:
        assert _close(m["plan"], m["product_form"]), m
    # The binding limit, where the simulator's charged shares differ by more than the tolerance.
    by = m["sim_by"]
    first, second = sorted(by, key=by.get, reverse=True)[:2]
    if not _close(by[first], by[second]):
        assert m["plan_binding"] == first, m


LIMIT = st.one_of(st.none(), st.integers(1, MAX_LIMIT), st.sampled_from([1, 10**9, MAX_LIMIT]))


@settings(max_examples=12, deadline=dt.timedelta(seconds=30), suppress_health_check=[HealthCheck.too_slow])
@given(
    conc=LIMIT,
    rpm=LIMIT,
    tpm=LIMIT,
    tpd=LIMIT,
    per_day=st.one_of(
        st.sampled_from([MIN_REQUESTS_PER_DAY, MAX_RPS * 86400]),
        st.floats(MIN_REQUESTS_PER_DAY, MAX_RPS * 86400),
    ),
)
def test_any_limits_give_finite_figures_in_bounded_time(conc, rpm, tpm, tpd, per_day):
    # Every loss model's cost is bounded whatever the limit (the deadline is the test's own), and every figure is
    # finite and in range, for limits from 1 to the schema's bound and volumes from its least to its most.
    tier = {k: v for k, v in (("concurrency", conc), ("rpm", rpm), ("tpm", tpm), ("tpd", tpd)) if v is not None}
    sc = load_scenario("support_chat").with_changes(
        tier=tier or {"rpm": 100}, traffic={"requests_per_day": per_day, "bursts": ()}
    )
    p = plan(sc)
    figures = [p.refusal_total, *p.refusal_by_limit.values(), *p.refusal_by_route.values()]
    assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in figures), figures
    assert p.max_scale is not None and p.max_scale >= 0 and not math.isnan(p.max_scale)
    assert p.ladder["refusal_total"].between(0, 1).all()


def test_a_huge_inline_limit_returns():
    # Issue 19: this ran for over 9 minutes (an Erlang B recursion as long as the limit, again and again).
    p = plan(load_scenario("support_chat").with_changes(tier={"rpm": 10**9}))
    assert p.refusal_total == 0.0 and math.isfinite(p.max_scale) and p.max_scale > 1e6


@pytest.mark.parametrize("tpm", [360_000, 400_000, 600_000])
def test_refusal_by_route_is_each_routes_product_form(tpm):
    # Two routes reserving 2,000 and 10,000 tokens under one TPM (issue 19: the large requests are refused about
    # five times as often): plan's refusal_by_route against the enumerated product form, class by class, and the
    # verdict names the route refused most.
    base = {"output": 200, "overhead_tokens": 0, "latency": {"total_s": {"kind": "fixed", "value": 5.0}}}
    sc = _scenario(1.0, {"tpm": tpm}, "sliding", {"system": 1000, "max_completion_tokens": 1000, **base})
    report = {"name": "report", "share": 0.5, "system": 6000, "max_completion_tokens": 4000, **base}
    sc = sc.with_changes(routes=[{**sc.routes[0].model_dump(mode="json"), "share": 0.5}, report])
    p = plan(sc)
    want = brute_product_form(1.0, [(1, 2000, 0.5), (1, 10000, 0.5)], tpm // 2000 + 1, tpm)
    got = [p.refusal_by_route["r"], p.refusal_by_route["report"]]
    assert got == pytest.approx(want.tolist(), rel=0.01, abs=1e-5)
    assert want[1] > 4 * want[0] > 0 and "route refused most: report" in p.describe()
