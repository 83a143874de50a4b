"""Property-based tests: any scenario file either loads and gives finite, non-negative figures, or is refused
with a ScenarioError that names the file and the field (and the route, for a route's field).

Hypothesis builds scenarios from a pool of plausible values mixed with hostile ones (NaN, infinities, 1e300,
1e-300, huge integers, numbers as strings, wrong types, impossible dates, wild distribution parameters). It is
seeded (`derandomize`), keeps no example database, and both tests together run in well under a minute.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kimiplan.capacity.plan import plan, route_moments
from kimiplan.capacity.sim.simulate import simulate
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario, price_card
from kimiplan.errors import ConfigError, ScenarioError
from kimiplan.finance.cost import expected_cost
from kimiplan.model.settings import SimSettings
from kimiplan.workload.draws import expected_tokens

CATALOG = load_catalog()
HOSTILE = [
    -1,
    -1e-9,
    0,
    1e-300,
    1e300,
    -1e300,
    math.inf,
    -math.inf,
    math.nan,
    2**63,
    10**30,
    "100",
    "abc",
    "",
    True,
    None,
    [],
    {},
    [1, 2],
]
HUGE = [1e6, 1e7, 9.9e6, 1e8, 1e9, 5e9]

hostile = st.sampled_from(HOSTILE)
small = st.floats(min_value=0, max_value=5_000, allow_nan=False)
count = st.integers(min_value=0, max_value=20)
number = st.one_of(small, small, count, st.sampled_from(HUGE), hostile)
positive = st.one_of(st.floats(min_value=1e-3, max_value=1e4), st.sampled_from(HUGE), hostile)


def dist(value, pos, strict=False):
    """A distribution spec of any kind, or a bare value; parameters mostly plausible, sometimes hostile.
    `strict`: only well-formed specs (the values may still break the bounds)."""
    forms = [("median", "p95"), ("median", "mean"), ("mean", "sigma"), ("p95", "mean")]
    two_of = st.sampled_from(forms if strict else [*forms, ("median",)])
    sigma = st.one_of(st.floats(0.01, 8), hostile)

    @st.composite
    def lognormal(draw):
        spec = {"kind": "lognormal"}
        for k in draw(two_of):
            spec[k] = draw(sigma if k == "sigma" else pos)
        return spec

    return st.one_of(
        value,
        value,
        *([] if strict else [st.fixed_dictionaries({"kind": st.sampled_from(["gamma", 5, None])})]),
        st.fixed_dictionaries({"kind": st.just("fixed"), "value": value}),
        st.fixed_dictionaries({"kind": st.just("normal"), "mean": value, "sd": value}),
        lognormal(),
        st.fixed_dictionaries({"kind": st.just("exponential"), "mean": pos}),
        st.fixed_dictionaries({"kind": st.just("poisson"), "mean": value}),
        st.fixed_dictionaries({"kind": st.just("uniform"), "low": value, "high": value}),
        st.fixed_dictionaries(
            {"kind": st.just("empirical"), "samples": st.lists(value, min_size=1 if strict else 0, max_size=4)}
        ),
    )


SECTIONS = (
    ("history", ("turns", "tokens_per_turn")),
    ("rag", ("top_k", "chunk_tokens")),
    ("documents", ("pages", "tokens_per_page")),
    ("tools", ("web_search_calls", "result_tokens", "tool_call_tokens")),
)
unit = st.one_of(st.floats(0, 1), hostile)


def scenarios(value, pos, top=None):
    """Scenario mappings whose every number comes from `value` (or `pos` where it must be > 0); the top-level
    fields (date, tier, rate, profile, growth, ...) draw their hostile values from `top` (default: HOSTILE)."""
    hostile = st.sampled_from(HOSTILE) if top is None else top
    unit = st.one_of(st.floats(0, 1), hostile)
    d, dpos = dist(value, pos, strict=top is not None), dist(pos, pos, strict=top is not None)
    opt_d = st.one_of(st.none(), d)

    @st.composite
    def route(draw, name, share):
        r = {"name": name, "share": share}
        for k in ("system", "user", "output", "reasoning"):
            v = draw(opt_d)
            if v is not None:
                r[k] = v
        for section, keys in SECTIONS:
            if draw(st.booleans()):
                r[section] = {k: draw(d) for k in keys}
                if section == "documents":
                    r[section]["probability"] = draw(unit)
        if draw(st.booleans()):
            r["latency"] = {"ttft_s": draw(d), "decode_tps": draw(dpos)}
        if draw(st.booleans()):
            r["thinking"] = draw(st.one_of(st.booleans(), hostile))
        if draw(st.booleans()):
            r["max_completion_tokens"] = draw(st.one_of(st.integers(1, 300_000), hostile))
        if draw(st.booleans()):
            r["cache"] = {"hit_rate": draw(unit)}
        return r

    as_of = (
        st.one_of(st.just("2026-04-20"), st.dates().map(str), st.sampled_from(["2026-13-45", "9999-12-31", 20260420]))
        if top is None
        else st.dates(dt.date(2026, 5, 1), dt.date(2028, 12, 31)).map(str)
    )
    tier = st.one_of(
        st.sampled_from(["tier1", "tier3", "tier5"] + (["no-such-tier"] if top is None else [])),
        st.fixed_dictionaries(
            {"rpm": st.one_of(st.integers(1, 10**6), hostile), "tpm": st.one_of(st.integers(1, 10**9), hostile)}
        ),
    )
    rate = st.one_of(st.floats(0.01, 1e5), st.sampled_from([1e6, 1e10, 1e12] if top is None else [1e6]), hostile)
    n_hours = (23, 25) if top is None else (24, 24)
    profile = st.lists(st.one_of(st.floats(0, 10), hostile), min_size=n_hours[0], max_size=n_hours[1])

    @st.composite
    def scenario(draw):
        n = draw(st.integers(1, 2))
        shares = [1.0] if n == 1 else [0.25, 0.75]
        if draw(st.integers(0, 9)) == 0:
            shares = [draw(unit) for _ in range(n)]
        data = {
            "name": "hyp",
            "model": draw(st.sampled_from(["kimi-k2.6"] * 5 + (["kimi-k2.6x", ""] if top is None else []))),
            "as_of": draw(as_of),
            "tier": draw(tier),
            "traffic": {draw(st.sampled_from(["requests_per_day", "requests_per_second"])): draw(rate)},
            "routes": [draw(route(f"r{i}", s)) for i, s in enumerate(shares)],
        }
        traffic = data["traffic"]
        if draw(st.booleans()):
            traffic["hourly_profile"] = draw(profile)
        if draw(st.booleans()):
            traffic["monthly_growth"] = draw(st.one_of(st.floats(-0.5, 2), st.just(1e-6), hostile))
        if draw(st.booleans()):
            zones = ["UTC", "Asia/Shanghai", "Mars/Base", "", 5] if top is None else ["UTC", "Asia/Shanghai"]
            traffic["timezone"] = draw(st.sampled_from(zones))
        if draw(st.booleans()):
            data["exchange_rate"] = {"CNY": draw(st.one_of(st.floats(0.01, 100), hostile))}
        if draw(st.booleans()):
            data["tax_rate"] = draw(unit)
        return data

    return scenario()


ANY_SCENARIO = scenarios(number, positive)


def _write(folder: Path, data) -> Path:
    p = folder / "s.yaml"
    p.write_text(yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False), "utf-8")
    return p


def _load_or_refusal(path: Path, data: dict):
    """The scenario, or None after checking that the refusal names the file and a field."""
    try:
        return load_scenario(path, CATALOG)
    except ScenarioError as exc:
        msg = str(exc)
        assert msg.startswith(str(path)) or f"{str(path)!r}" in msg, msg
        assert "field" in msg or "YAML" in msg, msg
        # A route's field: the route is named as well.
        if "routes[" in msg:
            assert "route '" in msg, msg
        return None


def _numbers(obj, where=""):
    """Every number in a nested result (dicts, lists, DataFrames) as (path, float)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{where}[{i}]")
    elif isinstance(obj, pd.DataFrame):
        for c in obj.columns:
            if pd.api.types.is_numeric_dtype(obj[c]) and not pd.api.types.is_bool_dtype(obj[c]):
                for i, v in enumerate(obj[c].to_numpy(dtype=float)):
                    yield f"{where}.{c}[{i}]", v
    elif isinstance(obj, (int, float, Decimal, np.number)) and not isinstance(obj, (bool, np.bool_)):
        yield where, float(obj)


COMMON = dict(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@settings(max_examples=2000, **COMMON)
@given(ANY_SCENARIO)
def test_any_scenario_loads_or_is_refused_by_name(data):
    with tempfile.TemporaryDirectory() as d:
        path = _write(Path(d), data)
        s = _load_or_refusal(path, data)
    if s is not None:
        # What loaded is within the documented bounds: the draws stay finite and small enough for int64.
        card = price_card(s, CATALOG)
        tokens = expected_tokens(s, card, samples=64)
        for k, v in _numbers(tokens.drop(columns=["route"])):
            assert math.isfinite(v) and v >= 0, (k, v)


# Values that pass validation but sit at the edges of the bounds, so the figures are pushed as far as allowed.
edge = st.one_of(small, count, st.sampled_from([0, 1e-300, 9.9e6, 1e7, 99, 100, 1e5]))
edge_pos = st.one_of(st.floats(min_value=1e-3, max_value=1e4), st.sampled_from([1e-300, 1e-9, 9.9e6, 1e7]))


@settings(max_examples=400, **COMMON)
@given(scenarios(edge, edge_pos, top=st.just(1)))
def test_every_figure_is_finite_and_non_negative(data):
    with tempfile.TemporaryDirectory() as d:
        s = _load_or_refusal(_write(Path(d), data), data)
    if s is None:
        return
    event("accepted")  # hypothesis statistics: how many examples reach the figures
    card = price_card(s, CATALOG)
    cost = expected_cost(s, CATALOG, card=card, expected=expected_tokens(s, card, samples=256))
    money = [c for c in cost.columns if c.startswith("cost_") or c.endswith("_per_request")]
    for k, v in _numbers(cost[money]):
        assert math.isfinite(v) and v >= 0, ("expected_cost", k, v)

    p = plan(s, CATALOG, moments=route_moments(s, CATALOG, samples=256))
    for k, v in _numbers(p):
        assert not math.isinf(v), ("plan", k, v)  # NaN stands for "no such limit"
        if not k.endswith("headroom") and not math.isnan(v):  # headroom is negative when over the limit
            assert v >= 0, ("plan", k, v)
    for k, v in _numbers(p["demand"][["mean", "peak_mean", "peak"]]):
        assert math.isfinite(v) and v >= 0, ("plan demand", k, v)

    # A short simulation: a few thousand requests at most, whatever the rate.
    hours = min(0.05, 5_000 / (s.traffic.mean_rps * 3600))
    try:
        r = simulate(s, CATALOG, settings=SimSettings(hours=hours))
    except ConfigError as exc:
        assert "tier" in str(exc) or "hours" in str(exc), str(exc)
        return
    for k, v in _numbers(r.summary):
        # Percentiles of an empty run are undefined (NaN); every other figure is a finite count or time.
        if r.summary["requests"] == 0 and math.isnan(v):
            continue
        assert math.isfinite(v) and v >= 0, ("simulate", k, v)


def _route(**fields):
    return {"routes": [{"name": "a", "share": 1, **fields}]}


@pytest.mark.parametrize(
    "patch, field",
    [
        (_route(system=math.inf), "system"),
        (_route(system=1e300), "system"),
        (_route(user={"kind": "lognormal", "median": 1e-300, "p95": 1e300}), "user"),
        (_route(user={"kind": "lognormal", "mean": 100, "sigma": 1e5}), "user"),
        (_route(user={"kind": "lognormal", "mean": "x", "sigma": 1}), "user"),
        (_route(user={"kind": "empirical", "samples": [1, math.inf]}), "user"),
        (_route(tools={"web_search_calls": 10**6}), "tools.web_search_calls"),
        ({"traffic": {"requests_per_day": math.inf}}, "traffic.requests_per_day"),
        ({"traffic": {"requests_per_day": 1000, "timezone": "Mars/Base"}}, "traffic.timezone"),
        ({"traffic": {"requests_per_day": 1000, "hourly_profile": [math.nan] + [1] * 23}}, "traffic.hourly_profile"),
        ({"as_of": "9999-12-31"}, "as_of"),
        ({"tier": {"rpm": 10**30}}, "tier.rpm"),
        ({"exchange_rate": {"CNY": math.nan}}, "exchange_rate"),
    ],
)
def test_issue_cases_are_named_errors(tmp_path, patch, field):
    base = {
        "model": "kimi-k2.6",
        "tier": "tier1",
        "as_of": "2026-04-20",
        "traffic": {"requests_per_day": 1000},
        "routes": [{"name": "a", "share": 1, "user": 10}],
    }
    path = _write(tmp_path, {**base, **patch})
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert str(path) in msg and f"field {field}" in msg, msg
    if "routes" in patch:
        assert "route 'a'" in msg, msg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model: kimi-k2.6\nmodel: other\n", "duplicate key 'model'"),
        ("as_of: 2026-13-45\n", "is not a valid date"),
        ("x: " + "[" * 400 + "]" * 400 + "\n", "nested more than"),
        ("x: " + "{a: " * 300 + "1" + "}" * 300 + "\n", "nested more than"),
        (
            "a: &a [x,x,x,x,x,x,x,x,x]\n"
            + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}' if i > 1 else '*a'] * 9)}]\n" for i in range(1, 12)),
            "aliases are expanded",
        ),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_loader_refuses_malformed_yaml(tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=needle) as err:
        load_scenario(p)
    assert str(p) in str(err.value)


def test_loader_keeps_merge_keys_and_refuses_bad_bytes_and_json(tmp_path):
    from kimiplan.model.loader import load_file

    p = tmp_path / "m.yaml"
    p.write_text("base: &b {x: 1, y: 2}\nchild: {<<: *b, y: 3}\n", encoding="utf-8")
    assert load_file(p)["child"] == {"x": 1, "y": 3}  # overriding a merged key is not a duplicate
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError, match=r"not UTF-8 text \(byte 0xe9 at offset 9, line 1\)"):
        load_scenario(bad)
    j = tmp_path / "s.json"
    j.write_text('{"model": "a", "model": "b"}', encoding="utf-8")
    with pytest.raises(ScenarioError, match="duplicate key 'model'"):
        load_scenario(j)
    j.write_text("[" * 5000 + "]" * 5000, encoding="utf-8")
    with pytest.raises(ScenarioError, match="nested more than"):
        load_scenario(j)


def test_simulate_refuses_a_run_it_could_not_finish(tmp_path):
    """10^6 requests/s for a year would run for days: refused at once, naming the horizon."""
    data = {
        "model": "kimi-k2.6",
        "tier": "tier1",
        "as_of": "2026-04-20",
        "traffic": {"requests_per_second": 1e6},
        "routes": [{"name": "a", "share": 1, "user": 10}],
    }
    s = load_scenario(_write(tmp_path, data), CATALOG)
    with pytest.raises(ConfigError, match=r"hours: 8000 h at 1,000,000 requests/s .* simulate fewer hours"):
        simulate(s, CATALOG, settings=SimSettings(hours=8000))
