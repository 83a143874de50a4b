"""The emulator's hidden laws: a mixture with a power-law tail, a per-route preamble and a cache-hit
probability, checked against closed forms computed here (not by kimiplan)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kimiplan.emulator import EmulatorConfig, Engine, MixtureTruth, RouteTruth
from kimiplan.tokens.tokenizer import count_messages

MSGS = [
    {"role": "system", "content": "You are the support assistant of a hosting company. " * 30},
    {"role": "user", "content": "My site is down since this morning."},
    {"role": "assistant", "content": "I am sorry to hear that. Which domain is it?"},
    {"role": "user", "content": "example.org, on the starter plan."},
]


def _capped_lognormal(median, p95, b):
    from scipy import stats

    s = math.log(p95 / median) / 1.6448536269514722
    mu = math.log(median)
    return math.exp(mu + s * s / 2) * stats.norm.cdf((math.log(b) - mu - s * s) / s) + b * stats.norm.sf(
        (math.log(b) - mu) / s
    )


def test_hidden_laws_mixture_tail_preamble_and_cache_hits():
    truth = RouteTruth(
        output=MixtureTruth(
            components=[
                {"weight": 0.8, "law": {"median": 200, "p95": 500}},
                {"weight": 0.2, "law": {"kind": "pareto", "scale": 300, "alpha": 1.4}},
            ]
        ),
        preamble_tokens=150,
        cache_hit_probability=0.6,
    )
    eng = Engine(EmulatorConfig(routes={"default": truth}, hidden_overhead=7, time_scale=0))
    n, budget = 4000, 4096
    cached, content, prompt = [], [], set()
    for i in range(n):
        r = eng.chat(
            {"model": "kimi-k2.6", "messages": MSGS, "max_completion_tokens": budget}, {"x-kimiplan-call-id": f"c{i}"}
        )
        eng.release()
        cached.append(r.cached_tokens)
        content.append(r.content_tokens)
        prompt.add(r.prompt_tokens)
    assert prompt == {count_messages(MSGS) + 7 + 150}  # the preamble is billed, unseen by the client
    prefix = count_messages(MSGS[:-1], add_reply_primer=False) + 7 + 150
    assert set(cached) == {0, prefix}
    hits = np.mean(np.array(cached) > 0)
    assert abs(hits - 0.6) < 4 * math.sqrt(0.6 * 0.4 / n)
    # E[min(X, b)]: lognormal part in closed form; Pareto part xm + xm/(alpha-1) (1 - (xm/b)^(alpha-1)).
    xm, a = 300.0, 1.4
    want = 0.8 * _capped_lognormal(200, 500, budget) + 0.2 * (xm + xm / (a - 1) * (1 - (xm / budget) ** (a - 1)))
    c = np.array(content, float)
    assert abs(c.mean() - want) < 4 * c.std() / math.sqrt(n) + 0.5
    assert c.max() == budget  # the tail reaches the budget: some calls are cut


def test_hidden_laws_validate():
    with pytest.raises(ValueError, match="sum to 1"):
        MixtureTruth(components=[{"weight": 0.5, "law": {"median": 1, "p95": 2}}])
    with pytest.raises(ValueError):
        RouteTruth(cache_hit_probability=1.5)
