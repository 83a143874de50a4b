"""Function-tool rounds (`tools.function_calls`): each round is one more API call that resends the prompt with
the tool-call message, the tool results and (thinking on) the round's reasoning. Held to arithmetic done here:
per-call token sums for fixed sizes, the expected cost per request in closed form for a Poisson count of rounds,
the plan's exact moments against the draws, and the demand table's RPM and TPM against the calls they make."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kimiplan.capacity.demand import route_reservation
from kimiplan.capacity.moments import latency_mean, reserved_and_calls, rounds_pmf
from kimiplan.capacity.plan import demand_table, route_moments
from kimiplan.catalog.resolve import price_card
from kimiplan.errors import ScenarioError
from kimiplan.finance.cost import expected_cost
from kimiplan.model.scenario import parse_scenario
from kimiplan.workload.draws import RouteContext, draw_route, expected_tokens, route_context

MARKERS = 8  # the K2.6 template's assistant and tool message markers (4 each), as for a $web_search round


def _scenario(**route):
    base = {"name": "r", "share": 1.0, **route}
    return parse_scenario(
        {"model": "kimi-k2.6", "as_of": "2026-11-26", "traffic": {"requests_per_day": 1000}, "routes": [base]}
    )


def test_each_round_resends_the_prompt_with_call_result_and_its_reasoning():
    s = _scenario(
        system=500,
        user=50,
        output=100,
        thinking=True,
        reasoning=200,
        max_completion_tokens=1000,
        cache={"mode": "none"},
        tools={"function_calls": 2, "function_call_tokens": 30, "function_result_tokens": 700},
    )
    d = draw_route(s.routes[0], 5, np.random.default_rng(0), route_context(s, s.routes[0]))
    first = 500 + 50 + 11  # text, then the markers of the system and user messages and the reply primer
    # Each tool-call reply reasons (200) and calls (30); both are sent back and read, with the result (700).
    second = first + 200 + 30 + 700 + MARKERS
    third = second + 200 + 30 + 700 + MARKERS
    assert (d["api_calls"] == 3).all() and (d["function_calls"] == 2).all() and (d["web_search_calls"] == 0).all()
    assert (d["input_tokens"] == first + second + third).all()
    assert (d["tool_rounds"] == second + third).all()
    assert (d["reserved_tokens"] == first + second + third + 3 * 1000).all()
    assert (d["reasoning_tokens"] == 3 * 200).all() and (d["output_tokens"] == 100 + 2 * 30).all()
    assert (d["completion_tokens"] == 3 * 200 + 100 + 2 * 30).all()
    # Thinking off: no reasoning in the rounds, nothing read back.
    off = _scenario(**{**s.routes[0].model_dump(exclude={"name", "share"}), "thinking": False})
    d = draw_route(off.routes[0], 5, np.random.default_rng(0), route_context(off, off.routes[0]))
    second = first + 30 + 700 + MARKERS
    assert (d["input_tokens"] == first + second + second + 30 + 700 + MARKERS).all()
    assert (d["reasoning_tokens"] == 0).all()


def test_searches_come_first_then_function_rounds():
    s = _scenario(
        system=500,
        user=50,
        output=100,
        max_completion_tokens=1000,
        cache={"mode": "none"},
        tools={
            "web_search_calls": 1,
            "result_tokens": 2000,
            "tool_call_tokens": 20,
            "function_calls": 1,
            "function_call_tokens": 30,
            "function_result_tokens": 700,
        },
    )
    d = draw_route(s.routes[0], 3, np.random.default_rng(0), route_context(s, s.routes[0]))
    first = 561
    second = first + 20 + 2000 + MARKERS
    third = second + 30 + 700 + MARKERS
    assert (d["api_calls"] == 3).all() and (d["input_tokens"] == first + second + third).all()
    # Only the search pays the per-call fee.
    c = expected_cost(s).set_index(["component", "price_class"])
    card = price_card(s)
    assert c.loc[("tools", "tool_calls"), "calls_per_request"] == 1.0
    assert c.loc[("tools", "tool_calls"), "cost_per_request"] == pytest.approx(float(card.web_search_per_call))


@pytest.mark.parametrize("thinking", [False, True])
def test_expected_cost_per_request_matches_the_closed_form(thinking):
    lam, p0, call, result, out, think = 1.6, 1200 + 80 + 11, 40.0, 1500.0, 250.0, 300.0
    tools = {
        "function_calls": {"kind": "poisson", "mean": lam},
        "function_call_tokens": {"kind": "exponential", "mean": call},
        "function_result_tokens": {"kind": "lognormal", "median": 1100, "p95": 3600},
    }
    s = _scenario(
        system=1200,
        user=80,
        output=out,
        thinking=thinking,
        reasoning=think,
        max_completion_tokens=8000,
        cache={"mode": "none"},
        tools=tools,
    )
    result = s.routes[0].tools.function_result_tokens.mean()  # the lognormal's own mean (median 1,100)
    card = price_card(s)
    r = think if thinking else 0.0
    # Given k rounds, call j (j = 0..k) reads P_j = P_0 + j D with E[D] = reasoning + call + result + markers:
    # sum_j E[P_j] = (k + 1) P_0 + k (k + 1) / 2 E[D]. For Poisson k: E[k + 1] = lam + 1, E[k (k + 1)] = lam^2 + 2 lam.
    e_d = r + call + result + MARKERS
    e_input = (lam + 1) * p0 + (lam**2 + 2 * lam) / 2 * e_d
    e_output = out + lam * call
    e_reasoning = (lam + 1) * r
    closed = (
        (e_input * float(card.input_cache_miss) + (e_output + e_reasoning) * float(card.output))
        / 1e6
        * (1 + s.tax_rate)
    )
    exp = expected_tokens(s)
    got = expected_cost(s, expected=exp)["cost_per_request"].sum()
    # The draws' mean has sampling error (and whole-token rounding under half a token a component).
    se = (
        math.hypot(
            exp["input_tokens_se"].iloc[0] * float(card.input_cache_miss),
            exp["completion_tokens_se"].iloc[0] * float(card.output),
        )
        / 1e6
    )
    assert abs(got - closed) <= 5 * se + closed * 2e-4, (got, closed, se)
    assert exp["function_calls"].iloc[0] == pytest.approx(lam, abs=5 * math.sqrt(lam / 200_000))
    assert exp["api_calls"].iloc[0] == pytest.approx(1 + lam, abs=5 * math.sqrt(lam / 200_000))


@pytest.mark.parametrize("thinking", [False, True])
def test_plan_moments_agree_with_the_draws(thinking):
    s = _scenario(
        system=900,
        user={"kind": "lognormal", "median": 40, "p95": 160},
        output=200,
        thinking=thinking,
        reasoning={"kind": "lognormal", "median": 400, "p95": 1500},
        max_completion_tokens=1024,
        tools={
            "function_calls": {"kind": "poisson", "mean": 1.3},
            "function_call_tokens": {"kind": "exponential", "mean": 30},
            "function_result_tokens": {"kind": "lognormal", "median": 800, "p95": 3000},
        },
    )
    route = s.routes[0]
    n = 300_000
    d = draw_route(route, n, np.random.default_rng(3), RouteContext(max_completion_tokens=32768, context_window=262144))
    res, calls = reserved_and_calls(route, route.max_completion_tokens, d)
    # Thinking off has an exact path (the $web_search sum with the function laws); thinking on is sampled.
    assert res.method == ("sampled" if thinking else "exact")
    r = d["reserved_tokens"].astype(float)
    for k, m in enumerate((res.m1, res.m2, res.m3), start=1):
        se = np.std(r**k) / math.sqrt(n)
        assert abs(m - np.mean(r**k)) <= 5 * se + k * 6 * np.mean(r ** (k - 1)) * 0.5, k
    c = d["api_calls"].astype(float)
    for k, m in enumerate((calls.m1, calls.m2, calls.m3), start=1):
        assert abs(m - np.mean(c**k)) <= 5 * np.std(c**k) / math.sqrt(n)
    vals, probs = rounds_pmf(route)
    assert float((vals * probs).sum()) == pytest.approx(1.3)
    lat, se, _ = latency_mean(route, route.max_completion_tokens, np.random.default_rng(4))
    x = d["latency_s"]
    assert abs(lat - x.mean()) <= 5 * math.hypot(se, x.std() / math.sqrt(n))


def test_rounds_of_both_kinds_add_as_independent_counts():
    s = _scenario(
        output=10,
        tools={"web_search_calls": {"kind": "poisson", "mean": 0.5}, "function_calls": {"kind": "poisson", "mean": 1}},
    )
    vals, probs = rounds_pmf(s.routes[0])
    # The sum of independent Poisson counts is Poisson with the summed mean.
    from scipy import stats

    assert probs.sum() == pytest.approx(1.0)
    assert probs[:6] == pytest.approx(stats.poisson.pmf(np.arange(6), 1.5), rel=1e-9)
    assert list(vals[:6]) == [0, 1, 2, 3, 4, 5]


def test_demand_table_counts_each_round_against_rpm_and_tpm():
    base = dict(system=500, user=50, output=100, max_completion_tokens=1000, cache={"mode": "none"})
    one = _scenario(**base)
    three = _scenario(**base, tools={"function_calls": 2, "function_call_tokens": 30, "function_result_tokens": 700})
    t1 = demand_table(one).set_index(["route", "limit"])
    t3 = demand_table(three).set_index(["route", "limit"])
    assert t3.loc[("total", "rpm"), "mean"] == pytest.approx(3 * t1.loc[("total", "rpm"), "mean"])
    m = route_moments(three).iloc[0]
    first = 561
    second = first + 30 + 700 + MARKERS
    third = second + 30 + 700 + MARKERS
    assert m["calls_mean"] == 3.0
    assert m["reserved_mean"] == pytest.approx(first + second + third + 3 * 1000)
    # route_reservation (the budget tables) agrees with the demand table's token load at every budget.
    assert route_reservation(m, 4000) == pytest.approx(first + second + third + 3 * 4000)
    per_min = three.traffic.mean_rps * 60
    assert t3.loc[("total", "tpm"), "mean"] == pytest.approx(per_min * m["reserved_mean"])


def test_thinking_is_allowed_with_function_tools_not_with_web_search():
    _scenario(thinking=True, output=10, tools={"function_calls": 1})  # Kimi allows it (tool_choice auto)
    with pytest.raises(ScenarioError, match="web_search_calls needs thinking off"):
        _scenario(thinking=True, output=10, tools={"web_search_calls": 1})


def test_an_agent_route_counts_its_tool_rounds_as_steps():
    with pytest.raises(ScenarioError, match="not tools.function_calls"):
        _scenario(output=10, agent={"steps": 3}, tools={"function_calls": 1})


def test_rounds_are_bounded():
    with pytest.raises(ScenarioError, match="function_calls"):
        _scenario(output=10, tools={"function_calls": 1000})


def test_a_measured_law_of_rounds_has_exact_moments():
    # Calibration writes the observed rounds as an empirical law: its mass function is exact, so is the plan.
    s = _scenario(
        system=700,
        output=150,
        max_completion_tokens=2000,
        tools={
            "function_calls": {"kind": "empirical", "samples": [0, 1, 1, 3]},
            "function_call_tokens": 25,
            "function_result_tokens": {"kind": "lognormal", "median": 600, "p95": 2400},
        },
    )
    route = s.routes[0]
    vals, probs = rounds_pmf(route)
    assert list(vals) == [0, 1, 3] and list(probs) == [0.25, 0.5, 0.25]
    n = 300_000
    d = draw_route(route, n, np.random.default_rng(8), route_context(s, route))
    res, calls = reserved_and_calls(route, 2000, d)
    assert res.method == "exact" and calls.m1 == pytest.approx(1 + 1.25)
    r = d["reserved_tokens"].astype(float)
    assert abs(res.m1 - r.mean()) <= 5 * r.std() / math.sqrt(n) + 3
