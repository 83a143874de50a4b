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
import functools
import itertools
import math
import re
from pathlib import Path

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

REF_HOURS = 25.0  # simulated hours of each run behind a grid point's reference
REF_SEED = 1
LATENCY_S = 8.0
ROOT = Path(__file__).resolve().parents[1]

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
    a = np.array([rate * 60.0 * p for _, _, p in classes])
    r = np.array([c[0] for c in classes], dtype=np.float64)
    t = np.array([c[1] for c in classes], dtype=np.float64)
    top = [int(rpm // x) for x in r]
    n = np.indices([k + 1 for k in top]).reshape(len(classes), -1).T  # every state, one row each
    calls, tokens = n @ r, n @ t
    inside = (calls <= rpm) & (tokens <= tpm)
    n, calls, tokens = n[inside], calls[inside], tokens[inside]
    lgamma = np.array([math.lgamma(k + 1) for k in range(max(top) + 1)])
    logw = n @ np.log(a) - lgamma[n].sum(axis=1)
    w = np.exp(logw - logw.max())
    admitted = np.array([w[(calls + r[i] <= rpm) & (tokens + t[i] <= tpm)].sum() for i in range(len(classes))])
    return 1.0 - admitted / w.sum()


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


def exact_alone(rate: float, name: str, limit: str, value: float) -> float:
    """The exact refused share of one limit on its own (the share of requests, classes weighted): Erlang B for
    concurrency (M/G/c/c, insensitive), the enumerated product form for RPM or TPM alone (the other limit set
    where it cannot bind)."""
    classes = ROUTES[name][1]
    if limit == "concurrency":
        return erlang_b(int(value), rate * LATENCY_S)
    if limit == "rpm":
        rpm, tpm = value, value * max(t / r for r, t, _ in classes) + 1
    else:
        rpm, tpm = int(value * max(r / t for r, t, _ in classes)) + 1, value
    return _product_form_total(rate, tuple(classes), rpm, tpm)


@functools.cache
def _product_form_total(rate: float, classes: tuple, rpm: float, tpm: float) -> float:
    return float(np.dot([c[2] for c in classes], brute_product_form(rate, classes, rpm, tpm)))


def _blocks(result, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Attempts and refusals (any limit) in `blocks` runs of consecutive minutes."""
    pm = result.per_minute
    att = pm["attempts"].to_numpy()
    ref = pm[[c for c in pm if c.startswith("refused_")]].to_numpy().sum(axis=1)
    n = att.size // blocks * blocks
    return att[:n].reshape(blocks, -1).sum(axis=1), ref[:n].reshape(blocks, -1).sum(axis=1)


def control_variate(joint, alone: list, exact: list[float], blocks: int = 30) -> tuple[float, float]:
    """The refused share of `joint`, with its standard error, corrected by runs of each limit on its own over the
    same arrivals and draws (common random numbers: the same seed), whose exact shares are known: Y - beta.(X - mu),
    beta by least squares over blocks of consecutive minutes (a control-variate estimator; unbiased up to
    O(1/blocks) for the estimated beta). The refusals of the two limits together follow those of each alone
    closely, so the variance falls 10 and 22 times at two ties: 25 simulated hours then do what 250 to 550 do
    without (measured at concurrency + RPM and concurrency + TPM at 1 % refusal, 30 seeds)."""
    a, r = _blocks(joint, blocks)
    y = r / a
    xs, xbar = [], []
    for res in alone:
        ak, rk = _blocks(res, blocks)
        xs.append(rk / ak)
        xbar.append(rk.sum() / ak.sum())
    x = np.column_stack(xs)
    xc, yc = x - x.mean(axis=0), y - y.mean()
    beta = np.linalg.lstsq(xc, yc, rcond=None)[0]
    est = r.sum() / a.sum() - float(beta @ (np.array(xbar) - np.array(exact)))
    resid = yc - xc @ beta
    dof = max(blocks - 1 - np.linalg.matrix_rank(xc), 1)
    return est, math.sqrt(float(resid @ resid) / dof / blocks)


@functools.cache
def measure(pair: str, name: str, level: float, seed: int = REF_SEED, hours: float = REF_HOURS) -> dict:
    """plan() at a grid point and the simulator's reference for it: the tie run for `hours`, and each limit of
    the pair alone on the same arrivals, joined by `control_variate`."""
    rate, tier = _tie(pair, name, level)
    p = plan(_scenario(rate, tier, "sliding", _route(name), hours=hours))
    alone = [{k: v} for k, v in tier.items()]
    runs = [simulate(_scenario(rate, t, "sliding", _route(name), hours=hours, seed=seed)) for t in (tier, *alone)]
    ref, se = control_variate(runs[0], runs[1:], [exact_alone(rate, name, k, v) for k, v in tier.items()])
    s = runs[0].summary
    out = {
        "tier": tier,
        "plan": p.refusal_total,
        "plan_by": p.refusal_attributed,
        "plan_binding": p.binding_limit,
        "sim": ref,
        "se": se,
        "sim_plain": s["rejected_fraction"]["total"],
        "se_plain": _batch_se(runs[0], "total"),
        "sim_by": {k: s["rejected_fraction"][k] for k in tier},
    }
    if pair == "rpm+tpm":
        out["product_form"] = _product_form_total(rate, tuple(ROUTES[name][1]), tier["rpm"], tier["tpm"])
    return out


def _tol(b: float) -> float:
    return max(0.05 * abs(b), 0.001)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _tol(b)


@pytest.mark.parametrize(("pair", "name", "level"), GRID)
def test_two_limits_together_agree(pair, name, level):
    m = measure(pair, name, level)
    # The reference is precise enough for the 5 % check to mean something (its error a quarter of the tolerance).
    assert m["se"] <= _tol(m["sim"]) / 4, m
    assert _close(m["plan"], m["sim"]), m
    if "product_form" in m:
        assert _close(m["plan"], m["product_form"]), m
    # The binding limit, where the simulator's charged shares differ by more than the tolerance.
    by = m["sim_by"]
    first, second = sorted(by, key=by.get, reverse=True)[:2]
    if not _close(by[first], by[second]):
        assert m["plan_binding"] == first, m


@pytest.mark.parametrize(("pair", "name", "level"), [g for g in GRID if g[0] == "rpm+tpm"])
def test_the_simulator_is_the_product_form(pair, name, level):
    # The simulator on its own (no control variate) against the enumerated product form where it is exact: within
    # four batch-means standard errors (a check of the reference, not of the plan).
    m = measure(pair, name, level)
    assert abs(m["sim_plain"] - m["product_form"]) <= 4 * m["se_plain"], m


README_ROWS = {"RPM + TPM together, sliding": ("rpm+tpm",), "concurrency with RPM/TPM": ("conc+rpm", "conc+tpm")}


def worst_errors(pairs: tuple) -> tuple[float, float]:
    """The worst relative error of plan against the reference (in %) where the reference is at least 1 %, and
    the worst absolute error below it, over the grid points of `pairs`."""
    rel, absolute = 0.0, 0.0
    for g in GRID:
        if g[0] in pairs:
            m = measure(*g)
            if m["sim"] >= 0.01:
                rel = max(rel, abs(m["plan"] / m["sim"] - 1.0) * 100.0)
            else:
                absolute = max(absolute, abs(m["plan"] - m["sim"]))
    return rel, absolute


@pytest.mark.parametrize("row", list(README_ROWS))
def test_readme_states_the_measured_worst_errors(row):
    # The README's capacity table gives, for each row of several limits, the worst errors this grid measures:
    # never less than measured (to its rounding), never more than a point (or 0.0003) above.
    line = next(x for x in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if x.startswith(f"| {row}"))
    found = re.search(r"worst ([0-9.]+) % relative at 1[^|]*?, ([0-9.]+) absolute below 1 %", line)
    assert found, f"README.md: the row {row!r} does not state 'worst X % relative at 1 ... , Y absolute below 1 %'"
    rel, absolute = worst_errors(README_ROWS[row])
    stated_rel, stated_abs = float(found[1]), float(found[2])
    assert round(rel, 1) <= stated_rel <= rel + 1.0, f"README.md row {row!r}: states {stated_rel} %, measured {rel:.2f}"
    assert round(absolute, 4) <= stated_abs <= absolute + 0.0003, (
        f"README.md row {row!r}: states {stated_abs} absolute, measured {absolute:.5f}"
    )


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
