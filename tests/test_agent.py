"""Agent routes: per-run tokens and cost against hand calculations, the context policies, budgets, caching."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from kimiplan.catalog.resolve import price_card
from kimiplan.finance.cost import Usage, cost_of_usage, expected_cost
from kimiplan.model.agent import STOP_REASONS
from kimiplan.model.scenario import parse_scenario
from kimiplan.workload.agent import draw_agent, steps_frame
from kimiplan.workload.draws import expected_tokens, route_context

ON = dt.date(2026, 11, 29)


def scenario(model="kimi-k2.6", agent=None, **route):
    r = {
        "name": "agent",
        "share": 1.0,
        "system": 1000,
        "user": 200,
        "overhead_tokens": 0,
        "output": 100,
        "reasoning": 50,
        "max_completion_tokens": 4000,
        "cache": {"mode": "prefix_rule", "prefix": ["system"], "hit_rate": 1.0},
        "latency": {"total_s": 5},
        "agent": {"steps": 3, "tool_result_tokens": 500, "think_time_s": 10, **(agent or {})},
    }
    r.update(route)
    return parse_scenario(
        {"name": "t", "model": model, "as_of": str(ON), "traffic": {"requests_per_day": 100}, "routes": [r]}
    )


def runs(sc, catalog, n=4, record=False):
    route = sc.routes[0]
    card = price_card(sc, catalog)
    d = draw_agent(route, n, np.random.default_rng(1), route_context(sc, route, card), record_steps=record)
    return d, card


def exact_run_cost(d, card, retention="5m"):
    c = d.columns
    u = Usage(
        int(c["input_tokens"][0]),
        int(c["completion_tokens"][0]),
        int(c["cached_tokens"][0]),
        int(c["web_search_calls"][0]),
        int(c["cache_write_tokens"][0]),
    )
    return cost_of_usage(u, card, cache_retention=retention).total


def test_three_steps_on_k26_by_hand(catalog):
    # Thinking off, so no reasoning. Step 1: prompt 1,200 (system 1,000 read from the cache, 200 miss).
    # Each step appends output 100 + tool result 500. Step 2: 1,800, reads step 1's 1,200. Step 3: 2,400, reads 1,800.
    d, card = runs(scenario(), catalog)
    c = d.columns
    assert list(c["input_tokens"]) == [5400] * 4 and list(c["cached_tokens"]) == [4000] * 4
    assert list(c["output_tokens"]) == [300] * 4 and list(c["reasoning_tokens"]) == [0] * 4
    assert list(c["cache_write_tokens"]) == [0] * 4 and list(c["steps"]) == [3] * 4 and c["resolved"].all()
    assert list(c["api_calls"]) == [3] * 4 and list(c["reserved_tokens"]) == [5400 + 3 * 4000] * 4
    # 4,000 x 0.16 + 1,400 x 0.95 + 300 x 4.00, per 1M
    assert exact_run_cost(d, card) == Decimal("0.00317")
    assert c["run_cost"][0] == pytest.approx(0.00317)
    # Per component: the system prompt 3 x 1,000 all read; the history 600 + 1,200, of which step 3 read 600.
    assert (c["system"][0], c["system_cached"][0], c["user"][0], c["user_cached"][0]) == (3000, 3000, 600, 400)
    assert (c["history"][0], c["history_cached"][0]) == (1800, 600)
    assert c["latency_s"][0] == pytest.approx(3 * 5 + 2 * 10)


def test_three_steps_on_k31_pro_with_5_minute_write_by_hand(catalog):
    # K3.1 Pro always reasons: 50 reasoning per step, re-sent with the step (Kimi reads reasoning sent back within
    # a turn of tool calls), so each step appends 100 + 50 + 500 = 650: prompts 1,200, 1,850, 2,500. Every step
    # writes what it did not read: 200, then 650, then 650 (5-minute retention, 1x input); reads 1,000 + 1,200 + 1,850.
    d, card = runs(scenario("kimi-k3.1-pro"), catalog)
    c = d.columns
    assert (c["input_tokens"][0], c["cached_tokens"][0], c["cache_write_tokens"][0]) == (5550, 4050, 1500)
    assert (c["reasoning_tokens"][0], c["output_tokens"][0]) == (150, 300)
    # 4,050 x 0.20 + 1,500 x 2.00 + 0 miss + 450 x 10.00, per 1M = 0.00831
    assert exact_run_cost(d, card) == Decimal("0.00831")
    assert c["run_cost"][0] == pytest.approx(0.00831)
    # The 1-hour retention doubles the write: 810 + 6,000 + 4,500 per 1M
    d1, _ = runs(scenario("kimi-k3.1-pro", agent={"cache_retention": "1h"}), catalog)
    assert exact_run_cost(d1, card, "1h") == Decimal("0.01131")
    assert d1.columns["run_cost"][0] == pytest.approx(0.01131)
    # A harness that strips earlier reasoning (Kimi refuses that with thinking on): 600 per step, as before.
    d2, _ = runs(scenario("kimi-k3.1-pro", agent={"preserve_thinking": False}), catalog)
    assert (d2.columns["input_tokens"][0], d2.columns["cache_write_tokens"][0]) == (5400, 1400)


def test_expired_write_misses(catalog):
    # 400 s between steps passes the 5-minute retention: steps 2 and 3 lose their run's prefix but, like step 1,
    # read the shared system head that other runs keep warm (one rule for the head), and rewrite the rest.
    # Prompts 1,200, 1,850, 2,500: reads 1,000 each, writes 200 + 850 + 1,500.
    d, _ = runs(scenario("kimi-k3.1-pro", agent={"think_time_s": 400}), catalog)
    c = d.columns
    assert (c["cached_tokens"][0], c["cache_write_tokens"][0]) == (3000, 200 + 850 + 1500)
    assert (c["system_cached"][0], c["history_cached"][0], c["user_cached"][0]) == (3000, 0, 0)
    d1, _ = runs(scenario("kimi-k3.1-pro", agent={"think_time_s": 400, "cache_retention": "1h"}), catalog)
    assert d1.columns["cached_tokens"][0] == 4050
    # K2.6's automatic cache has no TTL to lapse.
    d2, _ = runs(scenario(agent={"think_time_s": 400}), catalog)
    assert d2.columns["cached_tokens"][0] == 4000


def test_preserved_thinking_is_resent(catalog):
    # Thinking on, reasoning kept: each step appends 100 + 50 + 500 = 650. Prompts 1,200, 1,850, 2,500.
    d, _ = runs(scenario(thinking=True, agent={"preserve_thinking": True}), catalog)
    c = d.columns
    assert (c["input_tokens"][0], c["cached_tokens"][0], c["reasoning_tokens"][0]) == (5550, 1000 + 1200 + 1850, 150)
    dropped, _ = runs(scenario(thinking=True, agent={"preserve_thinking": False}), catalog)
    assert dropped.columns["input_tokens"][0] == 5400
    default, _ = runs(scenario(thinking=True), catalog)  # Kimi's rule is the default: reasoning is re-sent
    assert default.columns["input_tokens"][0] == 5550


def test_min_prompt_rule(catalog):
    # Kimi: a request hits the prefix cache only when the previous prompt exceeded 256 tokens.
    d, _ = runs(scenario(system=100, user=50, agent={"tool_result_tokens": 0}, output=10), catalog)
    # Prompts 150, 160, 170: none exceeds 256, so nothing is read.
    assert d.columns["input_tokens"][0] == 480 and d.columns["cached_tokens"][0] == 0


def test_breakdown_prices_the_run(catalog):
    sc = scenario("kimi-k3.1-pro")
    exp = expected_tokens(sc, price_card(sc, catalog), samples=50)
    cost = expected_cost(sc, catalog, expected=exp)
    assert cost["cost_per_request"].sum() == pytest.approx(0.00831)
    assert cost.groupby("price_class")["tokens_per_request"].sum()["input_cache_write"] == pytest.approx(1500)
    assert exp["input_tokens"].iloc[0] == 5550 and exp["steps"].iloc[0] == 3


def test_step_cap_and_budgets(catalog):
    d, _ = runs(scenario(agent={"steps": 10, "max_steps": 4}), catalog)
    c = d.columns
    assert list(c["steps"]) == [4] * 4 and STOP_REASONS[c["stop_reason"][0]] == "max_steps" and not c["resolved"].any()
    # Budget of 5,000 tokens: step 1 uses 1,200 + 100, step 2 1,800 + 100 (3,200), step 3 2,400 + 100 (5,700 >= 5,000).
    d, _ = runs(scenario(agent={"steps": 10, "run_budget_tokens": 5000}), catalog)
    assert d.columns["steps"][0] == 3 and STOP_REASONS[d.columns["stop_reason"][0]] == "budget_tokens"
    d, _ = runs(scenario(agent={"steps": 10, "run_budget_cost": 0.002}), catalog)
    # Step costs 0.00075, 0.001162 (cumulative 0.001912), 0.001258 (0.00317 >= 0.002): stops after step 3.
    assert d.columns["steps"][0] == 3 and STOP_REASONS[d.columns["stop_reason"][0]] == "budget_cost"


def test_context_policies(catalog):
    # Limit 3,000 with a 1,000 step budget: a prompt may be at most 2,000. Prompts grow 1,200, 1,800, 2,400 ...
    base = {"steps": 5, "context_limit_tokens": 3000}
    stop, _ = runs(scenario(max_completion_tokens=1000, agent={**base, "context_policy": "stop"}), catalog)
    assert stop.columns["steps"][0] == 2 and STOP_REASONS[stop.columns["stop_reason"][0]] == "context"
    trunc, _ = runs(
        scenario(max_completion_tokens=1000, agent={**base, "context_policy": "truncate_oldest", "truncate_to": 1.0}),
        catalog,
        record=True,
    )
    c = trunc.columns
    assert c["resolved"].all() and c["steps"][0] == 5 and c["compactions"][0] == 3
    steps = steps_frame(trunc)
    first = steps[steps.run == 0]
    # Step 3 drops step 1's entry (1,200 + 600 kept = 1,800); after a truncation only the head (1,200) is read.
    assert list(first["prompt"]) == [1200, 1800, 1800, 1800, 1800]
    assert list(first["cached"]) == [1000, 1200, 1200, 1200, 1200]
    # Keeping half the room (400): step 3 drops both earlier steps (600 > 400), so its prompt is the head alone;
    # step 4 (1,800) then reads step 3's prompt again, and step 5 truncates again.
    half, _ = runs(
        scenario(max_completion_tokens=1000, agent={**base, "context_policy": "truncate_oldest"}), catalog, record=True
    )
    first = steps_frame(half).query("run == 0")
    assert list(first["prompt"]) == [1200, 1800, 1200, 1800, 1200]
    assert list(first["cached"]) == [1000, 1200, 1200, 1200, 1200] and half.columns["compactions"][0] == 2
    summ, _ = runs(
        scenario(max_completion_tokens=1000, agent={**base, "context_policy": "summarise", "summary_tokens": 300}),
        catalog,
    )
    c = summ.columns
    # Step 3 would be 2,400: a summary call (prompt 2,400, output 300) first, then step 3 is 1,200 + 300 = 1,500.
    # Steps 4 and 5 would be 2,100 + 1,000 > 3,000: a summary call (prompt 2,100) before each.
    # Calls: 1,200, 1,800, 2,400 (summary), 1,500, 2,100 (summary), 1,500, 2,100 (summary), 1,500.
    assert c["resolved"].all() and (c["steps"][0], c["api_calls"][0], c["compactions"][0]) == (5, 8, 3)
    assert c["input_tokens"][0] == 14100 and c["output_tokens"][0] == 5 * 100 + 3 * 300
    # Reads: 1,000; 1,200; 1,800 (summary reads step 2); 1,200 (head only after the compaction); 1,500; 1,200; 1,500;
    # 1,200.
    assert c["cached_tokens"][0] == 1000 + 1200 + 1800 + 1200 + 1500 + 1200 + 1500 + 1200


def test_web_search_needs_thinking_off(catalog):
    from kimiplan.errors import ConfigError, ScenarioError

    with pytest.raises(ScenarioError, match="thinking off"):
        scenario(thinking=True, agent={"web_search_per_step": 1})
    sc = scenario(agent={"web_search_per_step": 1})
    d, card = runs(sc, catalog)
    assert d.columns["web_search_calls"][0] == 3
    assert exact_run_cost(d, card) == Decimal("0.00317") + 3 * Decimal("0.005")
    with pytest.raises(ConfigError, match="always reasons"):
        runs(scenario("kimi-k3.1-pro", agent={"web_search_per_step": 1}), catalog)


def test_steps_frame_adds_up_to_the_runs(catalog):
    sc = scenario(
        "kimi-k3",
        agent={
            "steps": {"kind": "lognormal", "median": 8, "p95": 30},
            "tool_result_tokens": {"kind": "poisson", "mean": 700},
        },
        output={"kind": "lognormal", "median": 150, "p95": 600},
        reasoning={"kind": "lognormal", "median": 300, "p95": 2000},
        max_completion_tokens=8000,
    )
    d, card = runs(sc, catalog, n=300, record=True)
    s = steps_frame(d).groupby("run").sum()
    c = d.columns
    assert (s["prompt"].to_numpy() == c["input_tokens"]).all() and (s["cached"].to_numpy() == c["cached_tokens"]).all()
    assert (s["written"].to_numpy() == c["cache_write_tokens"]).all()
    assert np.allclose(s["cost"].to_numpy(), c["run_cost"])
    # Every prompt token is read, written or missed, and per component the parts add up to the totals.
    parts = ("system", "rag", "documents", "user", "overhead", "history")
    assert (sum(c[p] for p in parts) == c["input_tokens"]).all()
    assert (sum(c[f"{p}_cached"] for p in parts) == c["cached_tokens"]).all()
    assert (sum(c[f"{p}_written"] for p in parts) == c["cache_write_tokens"]).all()
    # The float run cost agrees with the exact Decimal price of the run's usage.
    for i in range(0, 300, 37):
        u = Usage(
            int(c["input_tokens"][i]),
            int(c["completion_tokens"][i]),
            int(c["cached_tokens"][i]),
            0,
            int(c["cache_write_tokens"][i]),
        )
        assert float(cost_of_usage(u, card).total) == pytest.approx(c["run_cost"][i], rel=1e-12)


def test_breakdown_json_reports_runs(capsys, tmp_path):
    import json

    import yaml

    from kimiplan.cli import main
    from kimiplan.model.scenario import example_path

    assert main(["breakdown", "coding_agent", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    tok = {t["route"]: t for t in d["tokens"]}
    summ = {s["route"]: s for s in d["summary"]}
    # Per request = per run: millions of input tokens over tens of steps, and a cost per request like any route.
    assert tok["fix_issue"]["input_tokens"] > 1e6 and tok["fix_issue"]["steps"] > 10
    assert 0 < summ["fix_issue"]["cost_per_request"] and summ["explain"]["cost_per_request"] < 0.05
    runs_ = d["agent_runs"][0]
    assert runs_["route"] == "fix_issue" and {r["metric"] for r in runs_["distributions"]} >= {
        "cost per run",
        "cost per step",
    }
    cost = next(r for r in runs_["distributions"] if r["metric"] == "cost per run")
    assert 0 < cost["p50"] <= cost["p90"] <= cost["p99"]
    # The same scenario on K3.1 Pro with a 1-hour cache: a cache-write price class appears.
    data = yaml.safe_load(example_path("coding_agent").read_text())
    data["model"] = "kimi-k3.1-pro"
    data["routes"][0]["agent"]["cache_retention"] = "1h"
    p = tmp_path / "k31.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["breakdown", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    writes = [c for c in d["cost"] if c["price_class"] == "input_cache_write" and c["route"] == "fix_issue"]
    assert sum(c["cost_per_request"] for c in writes) > 0


def test_k3_family_variants_and_report_sections(catalog):
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.finance.variants import K3_FAMILY, model_variant, standard_variants
    from kimiplan.report.agents import agent_report_sections

    sc = load_scenario("coding_agent", catalog)
    v = standard_variants(sc, catalog)
    assert set(K3_FAMILY) <= set(v)  # an agent scenario sets K2.6 against the K3 family by default
    assert not set(K3_FAMILY) & set(standard_variants(load_scenario("support_chat", catalog), catalog))
    k31 = model_variant(sc, "kimi-k3.1-pro", catalog)
    assert all(r.thinking for r in k31.routes) and "reasoning always on" in k31.description
    base = expected_cost(sc, catalog).groupby("route")["cost_per_request"].sum()
    other = expected_cost(k31, catalog).groupby("route")["cost_per_request"].sum()
    assert other["fix_issue"] > base["fix_issue"]
    titles = [t for t, _ in agent_report_sections(sc, catalog)]
    assert any("per run, step and price class" in t for t in titles) and any("sessions" in t for t in titles)
    assert agent_report_sections(load_scenario("support_chat", catalog), catalog) == []


@pytest.mark.parametrize("model", ["kimi-k2.6", "kimi-k3", "kimi-k3.1-pro-highspeed"])
@pytest.mark.parametrize("policy", ["truncate_oldest", "summarise", "stop"])
def test_no_negative_or_nan_figures(catalog, model, policy):
    sc = scenario(
        model,
        thinking=True,
        agent={
            "steps": {"kind": "lognormal", "median": 30, "p95": 200},
            "max_steps": 120,
            "tool_result_tokens": {"kind": "lognormal", "median": 3000, "p95": 30000},
            "think_time_s": {"kind": "exponential", "mean": 200},
            "context_limit_tokens": 60000,
            "context_policy": policy,
            "summary_tokens": {"kind": "lognormal", "median": 1500, "p95": 6000},
            "preserve_thinking": True,
            "run_budget_tokens": 3_000_000,
        },
        reasoning={"kind": "lognormal", "median": 800, "p95": 6000},
        output={"kind": "lognormal", "median": 200, "p95": 3000},
        max_completion_tokens=8000,
        cache={"mode": "prefix_rule", "prefix": ["system"], "hit_rate": 0.8},
        latency={
            "ttft_s": {"kind": "lognormal", "median": 1, "p95": 5},
            "decode_tps": {"kind": "lognormal", "median": 40, "p95": 80},
        },
    )
    d, card = runs(sc, catalog, n=400, record=True)
    c = d.columns
    for k, v in c.items():
        v = np.asarray(v, dtype=float)
        assert np.isfinite(v).all() and (v >= 0).all(), k
    assert (c["cached_tokens"] + c["cache_write_tokens"] <= c["input_tokens"]).all()
    # No call passes the model's window (Kimi would answer 400); the steps stay within the harness's limit (a
    # summary call is made when the next step would not, so its own prompt may pass the limit, not the window).
    assert (c["prompt_peak"] + 8000 <= card.context_window).all()
    s = steps_frame(d)
    assert (s["prompt"] + 8000 <= 60000).all()
    assert (s[["prompt", "cached", "written", "completion", "cost", "latency"]] >= 0).all().all()
    for i in range(0, 400, 57):
        u = Usage(
            int(c["input_tokens"][i]),
            int(c["completion_tokens"][i]),
            int(c["cached_tokens"][i]),
            0,
            int(c["cache_write_tokens"][i]),
        )
        assert float(cost_of_usage(u, card).total) == pytest.approx(c["run_cost"][i], rel=1e-9)


def test_agent_errors_name_route_and_field():
    from kimiplan.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"route 'agent' \(routes\[0\]\): field agent.max_steps"):
        scenario(agent={"max_steps": 0})
    with pytest.raises(ScenarioError, match="agent.context_policy"):
        scenario(agent={"context_policy": "forget"})
    with pytest.raises(ScenarioError, match="agent.truncate_to"):
        scenario(agent={"truncate_to": 1.5})
