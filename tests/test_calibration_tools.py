"""Calibrating a function-tool route end to end, held to a truth kimiplan did not choose: the emulator's hidden
tool law (each reply calls a tool with probability p, at most M rounds a turn), hidden reasoning and output laws,
a hidden preamble; the application's tool results come from a file whose sizes follow a heavy-tailed law drawn
here. The sampler sends the tools, answers the calls and runs to +-5 % at 95 %, the fit measures rounds and
result sizes, the route takes them, and the calibrated expected cost per request is compared with the truth's,
computed here in closed form: with K rounds, call j (j = 0..K) reads P_j = P_0 + j D, D = reasoning + call +
result + markers, so a request reads (K + 1) P_0 + K (K + 1) / 2 E[D] input tokens and writes
(K + 1) E[reasoning] + K call + E[output]."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest

from kimiplan.calibration.fitters import apply_calibration, fit_calibration, samples_frame
from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, run_until_precision
from kimiplan.catalog.cards import load_catalog
from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
from kimiplan.emulator import EmulatorConfig, LogNormalTruth, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY, ToolTruth
from kimiplan.finance.cost import expected_cost
from kimiplan.model.scenario import parse_scenario
from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE as T
from kimiplan.tokens.tokenizer import count_messages, count_text

Z95 = 1.6448536269514722
PREAMBLE = 90
BUDGET = 8192
P_CALL, MAX_ROUNDS = 0.6, 3
N = 200  # the first batch; the sampler then runs to +-5 % at 95 %
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look an order up",
            # No parameters: the call's arguments are "{}", so its size is known exactly.
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
PROMPTS = [
    [
        {"role": "system", "content": "You are the order desk of a shop. " * 40},
        {"role": "user", "content": f"Where is my order number {i}? It was due last week. " * (3 + i % 4)},
    ]
    for i in range(8)
]
REASONING = LogNormalTruth(median=150, p95=500)
OUTPUT = LogNormalTruth(median=300, p95=1100)
TRUTH = RouteTruth(
    output=OUTPUT,
    reasoning=REASONING,
    preamble_tokens=PREAMBLE,
    cache_hit_probability=0.0,
    tools=ToolTruth(p_call=P_CALL, max_rounds=MAX_ROUNDS),
)
SCENARIO = {
    "name": "tools-e2e",
    "model": "kimi-k2.6",
    "as_of": "2026-11-26",
    "traffic": {"requests_per_day": 5000},
    "routes": [
        {
            "name": "orders",
            "share": 1.0,
            "thinking": True,
            # The assumption before calibration: far off on purpose.
            "system": 600,
            "user": 100,
            "output": 200,
            "reasoning": 100,
            "max_completion_tokens": BUDGET,
            "tools": {"function_calls": 0.1, "function_call_tokens": 60, "function_result_tokens": 200},
        }
    ],
}


def _ln_mean(law) -> float:
    return law.median * math.exp(law.sigma**2 / 2)


def _results(rng) -> list[str]:
    """What the application's tool returns: sizes from a lognormal body with a power-law tail."""
    body = rng.lognormal(math.log(300), 0.6, 160)
    tail = 400 * (1 - rng.random(40)) ** (-1 / 1.6)
    sizes = np.minimum(np.concatenate([body, tail]), 20_000).astype(int) + 1
    return [" ".join(f"item{j % 7}" for j in range(int(s))) for s in sizes]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools")
    rows = _results(np.random.default_rng(17))
    results = tmp / "results.jsonl"
    results.write_text("".join(json.dumps({"name": "lookup_order", "content": c}) + "\n" for c in rows))
    cfg = SamplerConfig(
        run_id="tools-e2e",
        max_concurrency=8,
        spend_cap=Decimal(20),
        routes=[
            RouteSampling(
                name="orders",
                n=N,
                max_completion_tokens=BUDGET,
                thinking=True,
                tools=TOOLS,
                max_tool_rounds=MAX_ROUNDS + 2,
                tool_results=results,
            )
        ],
    )
    store = tmp / "calls.jsonl"
    card = load_catalog().price("kimi-k2.6")
    em_cfg = EmulatorConfig(
        seed=5, time_scale=0, stream_chunk_tokens=1024, routes={"orders": TRUTH}, default_route="orders"
    )
    with emulator(em_cfg) as em:
        retry = RetryPolicy(time_scale=0.001)
        client = KimiClient(KimiConfig(model="kimi-k2.6", base_url=em.base_url, api_key=TEST_API_KEY, retry=retry))
        run = run_until_precision(
            client, cfg, store, target=0.05, max_calls=3000, card=card, prompts={"orders": PROMPTS}, progress=False
        )
        stats = em.engine.stats
    return card, rows, store, run, stats


def _truth(card, rows) -> float:
    """E[cost] per request under the hidden laws, in closed form (no cache hits; truncation at 8,192 tokens is
    below 1e-6 for these laws, so means are plain means)."""
    p0 = float(np.mean([count_messages(m, tools=TOOLS) for m in PROMPTS])) + PREAMBLE
    # K = min(Geometric, M): P(K >= k) = p^k for k = 1..M.
    e_k = sum(P_CALL**k for k in range(1, MAX_ROUNDS + 1))
    e_k2 = sum((2 * k - 1) * P_CALL**k for k in range(1, MAX_ROUNDS + 1))
    call = count_text("lookup_order") + count_text("{}")
    result = float(np.mean([count_text(c) for c in rows]))  # a call takes a row uniformly (by a hash of its ids)
    r, o = _ln_mean(REASONING), _ln_mean(OUTPUT)
    d = r + call + result + T.message_overhead("assistant") + T.message_overhead("tool")
    e_input = (e_k + 1) * p0 + (e_k2 + e_k) / 2 * d
    e_completion = (e_k + 1) * r + e_k * call + o
    return (e_input * float(card.input_cache_miss) + e_completion * float(card.output)) / 1e6


def test_the_sampler_records_every_round_and_adds_up_to_what_was_billed(sampled):
    card, rows, store, run, stats = sampled
    assert run.reached, str(run)
    assert all(s.failed == 0 for s in run.rounds)
    recs = [r for r in map(json.loads, store.read_text().splitlines()) if r["status"] == "ok"]
    assert len(recs) == sum(s.completed for s in run.rounds) > N  # the first batch was not enough
    billed_prompt = sum(r["prompt_tokens"] + r["tool_round_prompt_tokens"] for r in recs)
    assert billed_prompt == stats.billed_prompt_tokens
    assert sum(r["completion_tokens"] + r["tool_round_completion_tokens"] for r in recs) == (
        stats.billed_completion_tokens
    )
    assert max(r["function_rounds"] for r in recs) == MAX_ROUNDS  # the hidden cap, never the sampler's
    assert all(r["function_rounds"] == r["tool_rounds"] and r["final_finish_reason"] == "stop" for r in recs)
    # Counts and hashes only: no prompt, no argument and no tool result reaches the store.
    text = store.read_text()
    assert "order desk" not in text and "item3" not in text and "arguments" not in text


def test_the_fit_recovers_the_hidden_rounds_and_result_sizes(sampled):
    card, rows, store, _, _ = sampled
    rc = fit_calibration(samples_frame(store), card=card).routes["orders"]
    # The law of rounds: each frequency within 4 binomial standard errors of P(K = k) under the hidden law.
    p = {k: P_CALL**k * (1 - P_CALL) for k in range(MAX_ROUNDS)} | {MAX_ROUNDS: P_CALL**MAX_ROUNDS}
    for k, pk in p.items():
        got = rc.function_round_counts.get(k, 0) / rc.n
        assert abs(got - pk) <= 4 * math.sqrt(pk * (1 - pk) / rc.n), (k, got, pk)
    e_k = sum(P_CALL**k for k in range(1, MAX_ROUNDS + 1))
    assert rc.function_rounds.ci[0] <= e_k <= rc.function_rounds.ci[1]
    assert rc.function_call_tokens.empirical.mean == count_text("lookup_order") + count_text("{}")
    sizes = np.array([count_text(c) for c in rows], dtype=float)
    m, n = rc.function_result_tokens.empirical.mean, len(rc.function_result_tokens.empirical.samples)
    assert abs(m - sizes.mean()) <= 4 * sizes.std() / math.sqrt(n), (m, sizes.mean())
    assert rc.tool_rounds_cut == 0
    # The answer's laws are the last call's: its output, not the first call's tool-call message.
    assert abs(rc.output.empirical.mean / _ln_mean(OUTPUT) - 1) < 0.15


def test_calibrated_cost_per_request_holds_the_hidden_truth(sampled):
    card, rows, store, _, _ = sampled
    cal = fit_calibration(samples_frame(store), card=card)
    rc = cal.routes["orders"]
    truth = _truth(card, rows)
    # The sample's own mean cost per request (every round included) covers the truth at its stated 95 %.
    lo, hi = rc.precision.cost_per_request.ci
    assert lo <= truth <= hi, (lo, truth, hi)
    scenario = parse_scenario(SCENARIO)
    fitted = apply_calibration(scenario, cal)
    route = fitted.routes[0]
    assert "tools" in route.calibrated.applied
    said = " | ".join(d.describe() for d in route.calibrated.differences)
    assert f"{rc.n:,} requests measured" in said and "rounds measured" in said, said
    assert route.tools.function_calls.mean() == pytest.approx(rc.function_rounds.value)
    model = expected_cost(fitted)["cost_per_request"].sum()
    before = expected_cost(scenario)["cost_per_request"].sum()
    # At the calls the sampler chose, the stated precision is +-5 %, and the calibrated figure (a model built from
    # the fitted parts, not the sample mean) is within it of the truth.
    err = rc.precision.cost_rel_error
    assert err <= 0.055, rc.precision
    assert abs(model / truth - 1) <= 0.05, (model, truth, err)
    assert abs(before / truth - 1) > 0.3  # the assumption was far off: calibration changed the answer
    # Without the measured rounds (the route pins its tools) the rest of the calibration cannot reach the truth.
    pinned = parse_scenario({**SCENARIO, "routes": [{**SCENARIO["routes"][0], "pin": ["tools"]}]})
    kept = expected_cost(apply_calibration(pinned, cal))["cost_per_request"].sum()
    assert abs(kept / truth - 1) > 2 * err, (kept, truth)
    print(
        f"truth {truth:.6f}, calibrated {model:.6f} ({model / truth - 1:+.2%}, stated +-{err:.1%} at 95 %), "
        f"tools pinned {kept:.6f} ({kept / truth - 1:+.1%}), assumed {before:.6f} ({before / truth - 1:+.1%})"
    )


def test_a_call_log_shows_tool_rounds_and_calibrates_them(tmp_path):
    """A per-call log of a tool route (a conversation id per request): each reply that ended in tool calls is a
    round, and the next call of the conversation shows the round's results. The calibrated route's expected
    cost per request is held to the log's own mean cost per request, summed over its rows here."""
    import pandas as pd

    from kimiplan.logs.summarize import summarize_log

    rng = np.random.default_rng(4)
    markers = T.message_overhead("assistant") + T.message_overhead("tool")
    rows, ks, first_prompts, results, costs = [], [], [], [], []
    card = load_catalog().price("kimi-k2.6")
    miss, out = float(card.input_cache_miss), float(card.output)
    t0 = pd.Timestamp("2026-11-20T08:00:00Z")
    for i in range(800):
        k = int(rng.integers(0, 3))  # 0, 1 or 2 rounds, equally often: not a Poisson law
        prompt = int(rng.integers(1500, 2500))
        ks.append(k)
        first_prompts.append(prompt)
        cost = 0.0
        for j in range(k + 1):
            reasoning = int(rng.integers(50, 150))
            last = j == k
            completion = reasoning + (int(rng.integers(200, 400)) if last else 25)
            rows.append(
                {
                    "time": (t0 + pd.Timedelta(seconds=10 * i + j)).isoformat(),
                    "route": "orders",
                    "model": "kimi-k2.6",
                    "prompt_tokens": prompt,
                    "cached_tokens": 0,
                    "completion_tokens": completion,
                    "reasoning_tokens": reasoning,
                    "web_search_calls": 0,
                    "finish_reason": "stop" if last else "tool_calls",
                    "max_completion_tokens": BUDGET,
                    "conversation_id": f"c{i}",
                }
            )
            cost += (prompt * miss + completion * out) / 1e6
            if not last:
                result = int(rng.lognormal(math.log(600), 0.8))
                results.append(result)
                prompt += completion + result + markers  # the call, its reasoning and the results are read back
        costs.append(cost)
    p = tmp_path / "calls.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    s = summarize_log(p, "kimiplan-calls", by=("route",), samples_per_route=5000)
    tr = s.tool_rounds.set_index("route").loc["orders"]
    assert tr["requests"] == 800 and tr["function_rounds_per_request"] == pytest.approx(np.mean(ks))
    assert tr["round_counts"] == {k: int(c) for k, c in enumerate(np.bincount(ks))}
    assert tr["result_tokens_mean"] == pytest.approx(np.mean(results))
    assert tr["call_tokens_mean"] == 25
    assert "function rounds per request" in s.headline()
    cal = fit_calibration(s.samples, tool_rounds=s.tool_rounds, sessions=s.sessions)
    rc = cal.routes["orders"]
    # The measured input is the requests' first calls' (a round resends a longer prompt).
    assert rc.prompt_tokens.value == pytest.approx(np.mean(first_prompts))
    assert rc.function_round_counts == {k: int(c) for k, c in enumerate(np.bincount(ks))}
    fitted = apply_calibration(parse_scenario(SCENARIO), cal)
    model = expected_cost(fitted)["cost_per_request"].sum()
    truth = float(np.mean(costs))
    se = float(np.std(costs) / math.sqrt(len(costs)))
    assert abs(model - truth) <= 4 * se, (model, truth, se)
    print(f"log: mean cost per request {truth:.6f} +- {se:.6f}, calibrated {model:.6f} ({model / truth - 1:+.2%})")


def test_tool_results_file_errors_name_file_and_line(tmp_path):
    from kimiplan.calibration.sampler import load_tool_results
    from kimiplan.errors import ConfigError

    with pytest.raises(ConfigError, match="tool results file .*nope.jsonl.* does not exist"):
        load_tool_results(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "ok"}\n{"content": 3}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl' line 2: field content must be a string"):
        load_tool_results(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="has no results"):
        load_tool_results(empty)


def test_a_call_is_answered_from_its_own_tools_rows_the_same_way_every_run(tmp_path):
    from kimiplan.calibration.sampler import _result_picker, load_tool_results

    f = tmp_path / "r.jsonl"
    f.write_text(
        "".join(json.dumps(r) + "\n" for r in [{"name": "a", "content": "A1"}, {"name": "a", "content": "A2"}])
        + json.dumps({"content": "any"})
        + "\n"
    )
    pick = _result_picker(None, load_tool_results(f))
    call_a = {"id": "functions.a:0", "function": {"name": "a"}}
    call_b = {"id": "functions.b:0", "function": {"name": "b"}}
    got = {pick(f"req{i}", call_a) for i in range(40)}
    assert got == {"A1", "A2"}  # only a's rows, both used
    assert pick("req1", call_a) == pick("req1", call_a)  # by the ids: a resumed run answers alike
    assert pick("req1", call_b) in {"A1", "A2", "any"}  # a tool without rows of its own takes any row
