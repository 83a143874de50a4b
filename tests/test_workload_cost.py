import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import ConfigError
from kimiplan.finance.cost import Usage, cost_of_records, cost_of_usage, cost_summary, expected_cost
from kimiplan.model.scenario import example_path, parse_scenario
from kimiplan.workload.draws import context_check, draw_route, expected_tokens, route_context, sample_requests

CAT = load_catalog()
K26 = CAT.price("kimi-k2.6", on=dt.date(2026, 11, 26))
K26_CN = CAT.price("kimi-k2.6", region="cn", on=dt.date(2026, 11, 26))


def _scenario(**route):
    base = {"name": "r", "share": 1.0, **route}
    return parse_scenario(
        {"model": "kimi-k2.6", "as_of": "2026-11-26", "traffic": {"requests_per_day": 1000}, "routes": [base]}
    )


# ------------------------------------------------------------------ cost of usage (Kimi semantics)


def test_issue_reference_totals():
    assert cost_of_usage(Usage(1_000_000, 1_000_000), K26).total == Decimal("4.95")
    assert cost_of_usage(Usage(1_000_000, 1_000_000), K26_CN).total == Decimal("33.5")


def test_cached_tokens_are_inside_prompt_tokens_not_billed_twice():
    c = cost_of_usage(Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=800_000), K26)
    assert c.cache_hit_input == Decimal("0.128")  # 0.8M x 0.16
    assert c.cache_miss_input == Decimal("0.19")  # 0.2M x 0.95
    assert c.total == Decimal("0.318")


def test_tools_batch_and_tax():
    c = cost_of_usage(Usage(0, 0, 0, web_search_calls=10), K26)
    assert c.total == Decimal("0.04")
    assert cost_of_usage(Usage(0, 0, 0, 10), K26_CN).total == Decimal("0.3")
    b = cost_of_usage(Usage(1_000_000, 1_000_000), K26, batch=True)
    assert b.total == Decimal("2.97")  # 60 % of 4.95
    t = cost_of_usage(Usage(1_000_000, 1_000_000), K26, tax_rate=0.1)
    assert t.total == Decimal("5.445") and t.rounded() == Decimal("5.45")


def test_usage_from_response_shapes():
    top = {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "cached_tokens": 60}}
    assert Usage.from_response(top) == Usage(100, 20, 60, 0)
    stream_final = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "cached_tokens": 0},
            }
        ]
    }
    assert Usage.from_response(stream_final) == Usage(7, 3, 0, 0)
    openai_style = {
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 4}}
    }
    assert Usage.from_response(openai_style).cached_tokens == 4
    tool = {
        "usage": {"prompt_tokens": 5, "completion_tokens": 5},
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {"tool_calls": [{"function": {"name": "$web_search", "arguments": "{}"}}]},
            }
        ],
    }
    assert Usage.from_response(tool).web_search_calls == 1
    with pytest.raises(ConfigError, match="no usage"):
        Usage.from_response({"choices": [{}]})


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"prompt_tokens": -1, "completion_tokens": 0}, "prompt_tokens"),
        ({"prompt_tokens": 5, "completion_tokens": 0, "cached_tokens": 6}, "cached_tokens"),
    ],
)
def test_bad_usage(kw, field):
    with pytest.raises(ConfigError, match=field):
        Usage(**kw)


def test_sum_of_millions_is_exact():
    rng = np.random.default_rng(0)
    n = 2_000_000
    df = pd.DataFrame({"prompt_tokens": rng.integers(1, 20000, n), "completion_tokens": rng.integers(0, 4000, n)})
    df["cached_tokens"] = (df["prompt_tokens"] * rng.random(n)).astype(np.int64)
    total = cost_of_records(df, K26).total
    # Reference: integer arithmetic in units of 1e-8 dollars per token-million (prices have 2 decimals).
    ref_units = (
        int(df["cached_tokens"].sum()) * 16
        + int((df["prompt_tokens"] - df["cached_tokens"]).sum()) * 95
        + int(df["completion_tokens"].sum()) * 400
    )
    assert total == Decimal(ref_units) / Decimal(100) / Decimal(1_000_000)
    # A naive float sum of per-record costs drifts; ours does not.
    per_record = (
        df["cached_tokens"] * 0.16 + (df["prompt_tokens"] - df["cached_tokens"]) * 0.95 + df["completion_tokens"] * 4.0
    ) / 1e6
    assert abs(float(total) - per_record.sum()) < 1e-6


def test_batch_needs_a_batch_price():
    cf = CAT.price("@cf/moonshotai/kimi-k2.6", provider="cloudflare")
    with pytest.raises(ConfigError, match="no Batch API price"):
        cost_of_usage(Usage(1, 1), cf, batch=True)


# ------------------------------------------------------------------ workload


def test_fixed_route_tokens_and_truncation():
    s = _scenario(
        system=1000,
        user=100,
        output=300,
        reasoning=900,
        thinking=True,
        max_completion_tokens=1000,
        cache={"mode": "none"},
    )
    d = draw_route(s.routes[0], 50, np.random.default_rng(0), route_context(s, s.routes[0]))
    # K2.6's template: 4 markers for the system message, 4 for the user's, 3 for the reply primer.
    assert (d["overhead"] == 11).all()
    assert (d["input_tokens"] == 1111).all() and (d["reserved_tokens"] == 2111).all()
    # 900 reasoning + 300 output > 1000: truncated, reasoning kept, 100 visible tokens left.
    assert d["truncated"].all() and (d["reasoning_tokens"] == 900).all() and (d["output_tokens"] == 100).all()
    assert (d["cached_tokens"] == 0).all()


def test_default_budget_is_model_default():
    s = _scenario(user=10, output=5)
    d = draw_route(s.routes[0], 3, np.random.default_rng(0), route_context(s, s.routes[0]))
    # No system prompt: only the user message's 4 markers and the 3 of the reply primer.
    assert (d["max_completion_tokens"] == 32768).all() and (d["reserved_tokens"] == 10 + 7 + 32768).all()


def test_prefix_cache_rule():
    s = _scenario(system=2000, user=50, output=10, cache={"mode": "prefix_rule", "hit_rate": 0.7})
    d = draw_route(s.routes[0], 100_000, np.random.default_rng(0), route_context(s, s.routes[0]))
    hits = d["cached_tokens"] > 0
    assert set(np.unique(d["cached_tokens"])) == {0, 2000}
    assert abs(hits.mean() - 0.7) < 4 * np.sqrt(0.21 / 100_000)
    small = _scenario(system=100, user=50, output=10)  # prompt of 150 <= 256 tokens: never cached
    d = draw_route(small.routes[0], 1000, np.random.default_rng(0), route_context(small, small.routes[0]))
    assert (d["cached_tokens"] == 0).all()


def test_sample_requests_mix_and_expected_tokens():
    s = load_scenario(example_path("support_chat"))
    df = sample_requests(s, 200_000)
    share = df["route"].value_counts(normalize=True)
    for r in s.routes:
        assert abs(share[r.name] - r.share) < 4 * np.sqrt(r.share * (1 - r.share) / len(df))
    exp = expected_tokens(s).set_index("route")
    for r in s.routes:
        sub = df[df["route"] == r.name]
        for col in ("input_tokens", "output_tokens", "cached_tokens"):
            se = np.hypot(sub[col].std() / np.sqrt(len(sub)), exp.loc[r.name, f"{col}_se"])
            assert abs(sub[col].mean() - exp.loc[r.name, col]) < 5 * se + 1e-9
        # linear components: sample mean within rounding of the spec mean
        assert abs(exp.loc[r.name, "system"] - exp.loc[r.name, "system_spec_mean"]) < 0.5


def test_expected_cost_matches_record_cost():
    s = load_scenario(example_path("coding_assistant"))
    cost = expected_cost(s)
    per_req = cost.groupby("route", sort=False)["cost_per_request"].sum()
    df = sample_requests(s, 300_000, rng=5)
    for r in s.routes:
        sub = df[df["route"] == r.name]
        billed = cost_of_records(sub.rename(columns={"input_tokens": "prompt_tokens"}), K26)
        mean = float(billed.total) / len(sub)
        assert mean == pytest.approx(per_req[r.name], rel=0.02)
    summary = cost_summary(cost)
    assert summary.iloc[-1]["route"] == "all routes"
    assert summary.iloc[-1]["cost_per_day"] == pytest.approx(cost["cost_per_day"].sum())


def test_context_window_check_flags_oversized_route():
    s = _scenario(documents={"probability": 1, "pages": 400, "tokens_per_page": 700}, output=100)
    ctx = context_check(s)
    assert bool(ctx["exceeds"].iloc[0]) and ctx["share_rejected_400"].iloc[0] == 1.0


def test_overhead_counts_template_markers_per_request_or_a_set_number():
    from kimiplan.tokens.tokenizer import count_message_text, count_messages

    s = _scenario(
        system=500, user=20, output=5, history={"turns": {"kind": "poisson", "mean": 3.0}, "tokens_per_turn": 50}
    )
    d = draw_route(s.routes[0], 20_000, np.random.default_rng(1), route_context(s, s.routes[0]))
    turns = d["history"] // 50
    assert (d["overhead"] == 4 + 8 * turns + 4 + 3).all()  # system, two per turn, user, reply primer
    assert (d["input_tokens"] == d["system"] + d["history"] + d["user"] + d["overhead"]).all()
    # The rule matches the tokenizer: a rendered chat minus its bare text.
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "price of tea?"},
    ]
    assert count_messages(msgs) - count_message_text(msgs) == 4 + 8 * 1 + 4 + 3
    fixed = _scenario(system=500, user=20, output=5, overhead_tokens=40)
    d = draw_route(fixed.routes[0], 10, np.random.default_rng(1), route_context(fixed, fixed.routes[0]))
    assert (d["overhead"] == 40).all() and (d["input_tokens"] == 560).all()
    e = expected_tokens(s)
    assert e["overhead"].iloc[0] == pytest.approx(4 + 8 * 3 + 4 + 3, rel=0.01)


def test_web_search_round_trips_resend_the_prompt_with_results():
    route = dict(
        system=500,
        user=50,
        output=100,
        max_completion_tokens=1000,
        cache={"mode": "none"},
        tools={"web_search_calls": 2, "result_tokens": 1000, "tool_call_tokens": 20},
    )
    s = _scenario(**route)
    d = draw_route(s.routes[0], 5, np.random.default_rng(0), route_context(s, s.routes[0]))
    first = 500 + 50 + 11  # text, then the markers of the system and user messages and the reply primer
    second = first + 20 + 1000 + 8  # + tool call, results, assistant and tool message markers
    third = second + 20 + 1000 + 8
    assert (d["api_calls"] == 3).all() and (d["tool_rounds"] == second + third).all()
    assert (d["input_tokens"] == first + second + third).all()
    assert (d["reserved_tokens"] == first + second + third + 3 * 1000).all()
    assert (d["output_tokens"] == 100 + 2 * 20).all() and (d["cached_tokens"] == 0).all()
    # With the prefix rule at a 100 % hit rate, each further call hits on the previous call's prompt.
    cached = _scenario(**{**route, "cache": {"mode": "prefix_rule", "hit_rate": 1.0}})
    d = draw_route(cached.routes[0], 5, np.random.default_rng(0), route_context(cached, cached.routes[0]))
    assert (d["tool_rounds_cached"] == first + second).all() and (d["cached_tokens"] == 500 + first + second).all()
    e = expected_tokens(cached)
    assert e["tool_rounds"].iloc[0] == second + third and e["tool_rounds_cached"].iloc[0] == first + second
    # The cost prices the further calls' input by component: cached at the hit price, the rest at the miss price.
    c = expected_cost(cached).set_index(["component", "price_class"])
    assert c.loc[("tool_rounds", "input_cache_hit"), "tokens_per_request"] == first + second
    assert c.loc[("tool_rounds", "input_cache_miss"), "tokens_per_request"] == third - first  # what each call added


def test_plan_counts_every_call_of_a_searching_request_against_rpm():
    from kimiplan.capacity.plan import demand_table

    one = _scenario(system=500, user=50, output=100, max_completion_tokens=1000)
    three = _scenario(system=500, user=50, output=100, max_completion_tokens=1000, tools={"web_search_calls": 2})
    rpm = {
        n: demand_table(sc).set_index(["route", "limit"]).loc[("total", "rpm")]
        for n, sc in (("one", one), ("three", three))
    }
    assert rpm["three"]["mean"] == pytest.approx(3 * rpm["one"]["mean"])
    assert rpm["three"]["peak"] > 2.5 * rpm["one"]["peak"]
