"""`kimiplan simulate` and `kimiplan plan` from a scenario file that states a check against theory by itself:
constant Poisson rate, a custom tier with only concurrency, fixed tokens, lognormal latency with a given mean,
no retries, a horizon and a seed (the `simulation:` section)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from kimiplan.capacity.plan import erlang_b
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main
from kimiplan.errors import ScenarioError

THEORY_YAML = """
name: m-g-50-50
provider: moonshot
model: kimi-k2.6
as_of: 2026-11-26
seed: 3
tier: {name: only-concurrency, concurrency: 50}
traffic: {requests_per_second: 10}
routes:
  - name: r
    share: 1.0
    system: 1000
    output: 200
    max_completion_tokens: 1024
    latency:
      total_s: {kind: lognormal, mean: 5.0, sigma: 1.0}
simulation:
  hours: 12
  client: {kind: none}
"""


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def theory_file(tmp_path):
    p = tmp_path / "theory.yaml"
    p.write_text(THEORY_YAML)
    return p


def test_simulate_json_from_the_scenario_section_agrees_with_erlang_b(capsys, theory_file):
    sc = load_scenario(theory_file)
    assert sc.routes[0].latency.total_s.mean() == pytest.approx(5.0)
    fr = []
    for seed in range(4):
        code, out, _ = _run(capsys, "simulate", str(theory_file), "--json", "--seed", str(seed))
        s = json.loads(out)
        assert code == 0 and s["hours"] == 12 and s["client"] == "none" and s["retries"] == 0
        assert set(s["rejected_fraction"]) >= {"concurrency", "rpm", "tpm", "tpd", "total"}
        assert s["requests"] == pytest.approx(10 * 12 * 3600, rel=0.01)
        assert s["rejected_fraction"]["rpm"] == s["rejected_fraction"]["tpm"] == s["rejected_fraction"]["tpd"] == 0
        fr.append(s["rejected_fraction"]["concurrency"])
        # Requests are refused exactly when all 50 slots are busy, so the busiest second fills the limit.
        assert s["peak_usage"]["concurrency"] == {"peak": 50.0, "limit": 50.0, "share_of_limit": 1.0}
        assert (
            s["peak_usage"]["rpm"]["limit"] is None and s["peak_usage"]["rpm"]["peak"] > 537
        )  # the mean admitted per minute
    # Four runs of 432k requests each: the mean lands within 0.006 of B(50, 50) (about 4 standard errors).
    assert abs(np.mean(fr) - erlang_b(50, 50.0)) < 0.006


def test_flags_override_the_scenario_section(capsys, theory_file):
    code, out, _ = _run(
        capsys,
        "simulate",
        str(theory_file),
        "--json",
        "--hours",
        "1",
        "--client",
        "retry",
        "--max-retries",
        "2",
        "--window",
        "fixed",
    )
    s = json.loads(out)
    assert code == 0 and s["hours"] == 1 and s["client"] == "retry" and s["window"] == "fixed"
    assert s["retries"] > 0 and s["attempts"] > s["requests"]


def test_plan_json_names_the_binding_limit(capsys, theory_file):
    code, out, _ = _run(capsys, "plan", str(theory_file), "--json")
    p = json.loads(out)
    assert code == 0 and p["binding_limit"] == "concurrency"
    assert p["refusal_total"] > 0.001  # 50 in flight on average against 50 slots: far over the 0.1 % target


@pytest.mark.parametrize(
    "latency, message",
    [
        ("{kind: lognormal, mean: 5.0}", "exactly two of median, p95, mean, sigma"),
        ("{kind: lognormal, mean: 5.0, p95: 400}", "no lognormal has mean 5 and p95 400"),
    ],
)
def test_bad_lognormal_names_the_route_and_field(tmp_path, latency, message):
    p = tmp_path / "bad.yaml"
    p.write_text(THEORY_YAML.replace("{kind: lognormal, mean: 5.0, sigma: 1.0}", latency))
    before = p.read_text()
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert message in str(e.value) and "total_s" in str(e.value) and "bad.yaml" in str(e.value)
    assert "\n" not in str(e.value)  # one error, not a follow-on complaint about the routes tuple
    assert p.read_text() == before


def test_bad_simulation_section_names_the_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(THEORY_YAML.replace("hours: 12", "hours: 0"))
    with pytest.raises(ScenarioError, match="simulation.hours"):
        load_scenario(p)


def test_start_day_sets_the_weekday_of_the_simulated_traffic(capsys):
    from kimiplan.capacity.arrivals import growth_factors, rate_per_minute

    sc = load_scenario("support_chat")
    counts = {}
    for day in ("2026-11-30", "2026-12-06"):  # a Monday and a Sunday (weekday factors 1.1 and 0.75)
        code, out, _ = _run(capsys, "simulate", "support_chat", "--json", "--hours", "24", "--start", day)
        s = json.loads(out)
        assert code == 0 and s["start"] == day
        start = dt.date.fromisoformat(day)
        # December runs one month of growth (6 %) above the as_of month (November): the simulator grows too.
        grown = growth_factors(sc.traffic.monthly_growth, sc.as_of, 86400.0, start)
        expected = float((rate_per_minute(sc.traffic, 86400.0, start) * grown).sum() * 60)
        assert abs(s["requests"] - expected) < 4 * np.sqrt(expected)
        counts[day] = s["requests"]
    assert counts["2026-11-30"] > 1.15 * counts["2026-12-06"]
    code, _, err = _run(capsys, "simulate", "support_chat", "--start", "monday")
    assert code == 2 and "--start must be a date" in err


def test_bad_flags_name_the_field(capsys, theory_file):
    # Flags are validated like the scenario section they override, with the field in the message.
    code, _, err = _run(capsys, "simulate", str(theory_file), "--max-retries", "-3", "--client", "retry")
    assert code == 2 and "client.max_retries" in err and "-3" in err
    code, _, err = _run(capsys, "simulate", str(theory_file), "--seed", "-1")
    assert code == 2 and "seed" in err
