"""Nonsense refused or questioned (issue 20): a share or rate a person reads as a different quantity is never
accepted silently. `monthly_growth: 5` is not +500 % a month without saying so; "5%" is 5 %; `thinking` with
`$web_search` is refused on every route; a malformed file names the line where the trouble starts."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import ScenarioError

BASE = {
    "name": "t",
    "provider": "moonshot",
    "region": "intl",
    "model": "kimi-k2.6",
    "tier": "Tier3",
    "as_of": "2026-11-26",
    "traffic": {"requests_per_day": 1000, "monthly_growth": 0.05},
    "tax_rate": 0.0,
    "routes": [
        {
            "name": "a",
            "share": 0.5,
            "output": 100,
            "cache": {"hit_rate": 0.9},
            "documents": {"probability": 0.1, "pages": 1, "tokens_per_page": 500},
        },
        {"name": "b", "share": 0.5, "output": 100},
    ],
}

# (where in the scenario, the reading it has as a fraction): every field a person gives as a share or a rate.
FIELDS = {
    "growth": (("traffic", "monthly_growth"), 1.0),
    "share": (("routes", 0, "share"), 1.0),
    "hit_rate": (("routes", 0, "cache", "hit_rate"), 1.0),
    "probability": (("routes", 0, "documents", "probability"), 1.0),
    "tax_rate": (("tax_rate",), 1.0),
    "pace_headroom": (("simulation", "client", "pace_headroom"), 1.0),
}


def _with(path, value):
    d = copy.deepcopy(BASE)
    o = d
    for k in path[:-1]:
        o = o.setdefault(k, {}) if isinstance(o, dict) else o[k]
    o[path[-1]] = value
    if path == ("routes", 0, "share") and isinstance(value, float) and 0 < value <= 1:
        d["routes"][1]["share"] = 1 - value if value < 1 else None
        if value == 1:
            d["routes"] = d["routes"][:1]
    return d


def _load(tmp_path, d):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d), encoding="utf-8")
    return load_scenario(p)


def _get(sc, name):
    return {
        "growth": lambda: sc.traffic.monthly_growth,
        "share": lambda: sc.routes[0].share,
        "hit_rate": lambda: sc.routes[0].cache.hit_rate,
        "probability": lambda: sc.routes[0].documents.probability,
        "tax_rate": lambda: sc.tax_rate,
        "pace_headroom": lambda: sc.simulation.client.pace_headroom,
    }[name]()


def test_growth_of_5_is_refused_with_the_reading_it_meant(tmp_path):
    with pytest.raises(ScenarioError) as err:
        _load(tmp_path, _with(("traffic", "monthly_growth"), 5))
    msg = str(err.value)
    assert "traffic.monthly_growth" in msg and "did you mean 5 %?" in msg and '"5%"' in msg and "500 %" in msg
    assert _load(tmp_path, _with(("traffic", "monthly_growth"), "5%")).traffic.monthly_growth == pytest.approx(0.05)
    assert _load(tmp_path, _with(("traffic", "monthly_growth"), "5 %")).traffic.monthly_growth == pytest.approx(0.05)
    # Fast growth is possible, with its unit.
    assert _load(tmp_path, _with(("traffic", "monthly_growth"), "150%")).traffic.monthly_growth == pytest.approx(1.5)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(sorted(FIELDS)),
    value=st.one_of(
        st.integers(min_value=2, max_value=100),
        st.floats(min_value=1.0001, max_value=100, allow_nan=False),
        st.floats(min_value=-100, max_value=-1.0001, allow_nan=False),
    ),
)
def test_no_bare_number_above_one_reads_as_a_percentage(tmp_path, name, value):
    """A bare 15 as a share, rate or growth is 1,500 %: never accepted, and the error offers 15 %."""
    path, _ = FIELDS[name]
    with pytest.raises(ScenarioError) as err:
        _load(tmp_path, _with(path, value))
    if value > 0 or name == "growth":
        assert f"did you mean {value:g} %?" in str(err.value)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=st.sampled_from(sorted(FIELDS)), pct=st.floats(min_value=0.5, max_value=99.5, allow_nan=False))
def test_a_percentage_with_its_unit_is_that_percentage_and_a_fraction_is_that_fraction(tmp_path, name, pct):
    path, _ = FIELDS[name]
    pct = round(pct, 2)
    if name == "share":
        # The other route takes the rest, so the shares still sum to 1.
        d = _with(path, f"{pct:g}%")
        d["routes"][1]["share"] = f"{100 - pct:g}%"
    else:
        d = _with(path, f"{pct:g}%")
    assert _get(_load(tmp_path, d), name) == pytest.approx(pct / 100)
    if name != "share":
        assert _get(_load(tmp_path, _with(path, pct / 100)), name) == pytest.approx(pct / 100)


@pytest.mark.parametrize("value", ["five", "5 percent", "%", "5%%"])
def test_a_percentage_that_is_not_a_number_names_the_field(tmp_path, value):
    with pytest.raises(ScenarioError, match=r"traffic\.monthly_growth"):
        _load(tmp_path, _with(("traffic", "monthly_growth"), value))


def test_thinking_with_web_search_is_refused_on_an_ordinary_route(tmp_path):
    d = copy.deepcopy(BASE)
    d["routes"][1].update({"thinking": True, "tools": {"web_search_calls": 1}})
    with pytest.raises(ScenarioError, match=r"route 'b'.*thinking off") as err:
        _load(tmp_path, d)
    assert "$web_search" in str(err.value)
    d["routes"][1]["thinking"] = False
    assert _load(tmp_path, d).routes[1].tools.web_search_calls.mean() == 1


def test_an_alias_bomb_names_the_line_where_the_expansion_starts(tmp_path):
    lines = ["name: x", "a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    lines += [f"boom: [{', '.join(['*a6'] * 10)}]"]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert str(p) in msg and "starts on line 9" in msg and "anchor on line 8" in msg, msg


@pytest.mark.parametrize(
    "text, line",
    [
        ('{\n  "name": "x",\n  "deep": ' + "[" * 70 + "]" * 70 + "\n}", 3),
        ('{\n  "name": "x",\n\n  "deep": ' + "[" * 3000 + "]" * 3000 + "\n}", 4),
    ],
)
def test_deep_json_names_the_line_where_it_passes_the_limit(tmp_path, text, line):
    p = tmp_path / "deep.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=rf"nested more than 64 levels deep \(line {line}, column \d+\)"):
        load_scenario(p)
