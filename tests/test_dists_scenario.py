import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import ScenarioError
from kimiplan.model.dists import Dist, LogNormal
from kimiplan.model.scenario import example_path, list_examples, scenario_json_schema

TA = TypeAdapter(Dist)


@pytest.mark.parametrize(
    "spec",
    [
        250,
        {"kind": "normal", "mean": 100, "sd": 80},
        {"kind": "lognormal", "median": 300, "p95": 1200},
        {"kind": "exponential", "mean": 5},
        {"kind": "poisson", "mean": 2.5},
        {"kind": "uniform", "low": 10, "high": 30},
        {"kind": "empirical", "samples": [1, 5, 9, 200]},
    ],
)
def test_moments_match_samples(spec):
    d = TA.validate_python(spec)
    x = d.sample(np.random.default_rng(1), 400_000)
    se = max(d.sd(), 1e-12) / np.sqrt(len(x))
    assert abs(x.mean() - d.mean()) <= 5 * se + 1e-9
    if d.var() > 0:
        assert x.std() == pytest.approx(d.sd(), rel=0.02)
    if d.kind not in ("empirical", "poisson"):  # discrete medians are not unique
        assert np.quantile(x, 0.5) == pytest.approx(float(d.quantile(0.5)), rel=0.03, abs=1)


def test_lognormal_by_median_p95():
    d = LogNormal(median=200, p95=800)
    assert float(d.quantile(0.95)) == pytest.approx(800)
    assert LogNormal.from_mu_sigma(d.mu, d.sigma).p95 == pytest.approx(800)


def test_texts_counted_with_tokenizer(tmp_path):
    (tmp_path / "a.txt").write_text("Hello, world!")
    d = TA.validate_python({"kind": "texts", "texts": ["Hello world"], "files": ["a.txt"], "base_dir": str(tmp_path)})
    assert sorted(d.sample(np.random.default_rng(0), 100).astype(int).tolist())[0] == 2
    assert d.mean() == 3.0  # (2 + 4) / 2


def test_examples_load_and_schema():
    assert set(list_examples()) >= {"support_chat", "document_report", "coding_assistant"}
    for name in list_examples():
        s = load_scenario(example_path(name))
        assert abs(sum(r.share for r in s.routes) - 1) < 1e-9
    schema = scenario_json_schema()
    assert "routes" in schema["properties"] and "$defs" in schema


def _write(tmp_path, data):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def _base():
    return yaml.safe_load(example_path("support_chat").read_text())


@pytest.mark.parametrize(
    "mutate,expect",
    [
        (lambda d: d["routes"][0].update(system=-5), ["route 'answer'", "field system", "-5"]),
        (lambda d: d["routes"][1].update(share=0.5), ["shares must sum to 1", "summarize_ticket=0.5"]),
        (
            lambda d: d["routes"][0].update(output={"kind": "lognormal", "median": 500, "p95": 100}),
            ["route 'answer'", "field output", "p95 (100) is below the median (500)"],
        ),
        (lambda d: d.update(model="kimi-k9"), ["field model", "unknown model 'kimi-k9'", "kimi-k2.6"]),
        (lambda d: d.update(tier="Tier7"), ["field tier", "Tier7", "Tier3"]),
        (lambda d: d["traffic"].update(requests_per_day=-1), ["field traffic.requests_per_day", "-1"]),
        (lambda d: d["routes"][2].update(max_completion_tokens=0), ["route 'web_lookup'", "max_completion_tokens"]),
    ],
)
def test_bad_scenarios_name_file_route_field_value(tmp_path, mutate, expect):
    data = _base()
    mutate(data)
    f = _write(tmp_path, data)
    before = f.read_bytes()
    with pytest.raises(ScenarioError) as e:
        load_scenario(f)
    msg = str(e.value)
    assert str(f) in msg
    for piece in expect:
        assert piece in msg, msg
    assert f.read_bytes() == before  # nothing on disk changes


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    f = tmp_path / "x.yaml"
    f.write_text("routes: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(f)


def test_with_changes_validates():
    s = load_scenario(example_path("coding_assistant"))
    off = s.with_route_changes(thinking=False)
    assert not any(r.thinking for r in off.routes)
    with pytest.raises(ValidationError):
        s.with_changes(tax_rate=2)


@pytest.mark.parametrize(
    "given",
    [
        {"mean": 5.0, "sigma": 1.0},
        {"median": 3.0, "sigma": 0.5},
        {"mean": 5.0, "p95": 12.0},
        {"median": 4.0, "mean": 5.0},
        {"p95": 10.0, "sigma": 0.8},
        {"median": 2.0, "p95": 9.0},
    ],
)
def test_lognormal_from_any_two_of_median_p95_mean_sigma(given):
    d = LogNormal(**given)
    got = {"mean": d.mean(), "median": d.median, "p95": float(d.quantile(0.95)), "sigma": d.sigma}
    for k, v in given.items():
        assert got[k] == pytest.approx(v, rel=1e-12)
    # The stored form is median and p95, so a dump reloads to the same distribution.
    assert LogNormal(**d.model_dump()) == d
