"""End to end, held to a truth kimiplan did not choose: the emulator serves hidden laws of kinds the fitters do
not assume (a lognormal body with a power-law tail, a cache-hit probability, a hidden preamble); the sampler
runs to +-5 % on synthetic prompts built from the scenario, the fit is applied, and the calibrated forecast of
one month is compared with that truth's expected cost, computed here in closed form from the hidden laws and
the scenario's traffic and input laws."""

from __future__ import annotations

import calendar
import math
from decimal import Decimal

import pytest
from scipy import stats

from kimiplan.calibration.fitters import apply_calibration, cost_uncertainty, fit_calibration, samples_frame
from kimiplan.calibration.prompts import scenario_prompts
from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, run_until_precision
from kimiplan.catalog.cards import load_catalog
from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
from kimiplan.emulator import EmulatorConfig, LogNormalTruth, MixtureTruth, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY
from kimiplan.finance.forecast import forecast
from kimiplan.model.scenario import parse_scenario
from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE as T

Z95 = 1.6448536269514722
PREAMBLE = 120
PER_DAY = 20_000
ANSWER_BUDGET, TICKET_BUDGET = 2048, 1024

SCENARIO = {
    "name": "e2e",
    "provider": "moonshot",
    "region": "intl",
    "model": "kimi-k2.6",
    "as_of": "2026-11-26",
    "seed": 3,
    "traffic": {"requests_per_day": PER_DAY},
    "routes": [
        {
            "name": "answer",
            "share": 0.8,
            "system": 1800,
            "history": {
                "turns": {"kind": "poisson", "mean": 2.5},
                "tokens_per_turn": {"kind": "lognormal", "median": 180, "p95": 600},
            },
            "rag": {"top_k": 5, "chunk_tokens": {"kind": "lognormal", "median": 350, "p95": 700}},
            "user": {"kind": "lognormal", "median": 40, "p95": 160},
            "output": {"kind": "lognormal", "median": 220, "p95": 650},
            "max_completion_tokens": ANSWER_BUDGET,
            "cache": {"mode": "prefix_rule", "prefix": ["system", "history"], "hit_rate": 0.9},
        },
        {
            "name": "summarize_ticket",
            "share": 0.2,
            "system": 600,
            "history": {
                "turns": {"kind": "poisson", "mean": 6},
                "tokens_per_turn": {"kind": "lognormal", "median": 180, "p95": 600},
            },
            "user": 30,
            "output": {"kind": "lognormal", "median": 160, "p95": 400},
            "max_completion_tokens": TICKET_BUDGET,
        },
    ],
}
# The hidden truth: not lognormal answers, a cache that hits 55 % / 30 % of calls, a 120-token preamble.
TRUTH = {
    "answer": RouteTruth(
        output=MixtureTruth(
            components=[
                {"weight": 0.8, "law": {"median": 200, "p95": 550}},
                {"weight": 0.2, "law": {"kind": "pareto", "scale": 250, "alpha": 1.5}},
            ]
        ),
        preamble_tokens=PREAMBLE,
        cache_hit_probability=0.55,
    ),
    "summarize_ticket": RouteTruth(
        output=LogNormalTruth(median=130, p95=330), preamble_tokens=PREAMBLE, cache_hit_probability=0.3
    ),
}


def _ln_mean(median, p95):
    s = math.log(p95 / median) / Z95
    return median * math.exp(s * s / 2)


def _capped_ln(median, p95, b):
    s, mu = math.log(p95 / median) / Z95, math.log(median)
    return math.exp(mu + s * s / 2) * stats.norm.cdf((math.log(b) - mu - s * s) / s) + b * stats.norm.sf(
        (math.log(b) - mu) / s
    )


def _capped_pareto(xm, a, b):
    return xm + xm / (a - 1) * (1 - (xm / b) ** (a - 1))


def truth_cost_per_request(card) -> dict[str, float]:
    """E[cost] per request of each route under the hidden laws, traffic drawn from the scenario's input laws."""
    miss, hit, out = float(card.input_cache_miss), float(card.cache_hit_price), float(card.output)
    m_sys, m_user, m_asst = T.message_overhead("system"), T.message_overhead("user"), T.message_overhead("assistant")
    turn = _ln_mean(180, 600) + m_user + m_asst
    # answer: prompt = preamble + system + turns + chunks + user + markers; a hit caches all before the last message
    before = PREAMBLE + 1800 + m_sys + 2.5 * turn
    prompt = before + 5 * _ln_mean(350, 700) + _ln_mean(40, 160) + m_user + T.reply_primer
    o = 0.8 * _capped_ln(200, 550, ANSWER_BUDGET) + 0.2 * _capped_pareto(250, 1.5, ANSWER_BUDGET)
    h = 0.55
    answer = ((prompt - h * before) * miss + h * before * hit + o * out) / 1e6
    before = PREAMBLE + 600 + m_sys + 6 * turn
    prompt = before + 30 + m_user + T.reply_primer
    h = 0.3
    ticket = ((prompt - h * before) * miss + h * before * hit + _capped_ln(130, 330, TICKET_BUDGET) * out) / 1e6
    return {"answer": answer, "summarize_ticket": ticket}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    scenario = parse_scenario(SCENARIO)
    card = load_catalog().price("kimi-k2.6")
    prompts = scenario_prompts(scenario, n=80)
    cfg = SamplerConfig(
        run_id="e2e",
        max_concurrency=8,
        spend_cap=Decimal(50),
        routes=[
            RouteSampling(name="answer", n=60, max_completion_tokens=ANSWER_BUDGET, thinking=False),
            RouteSampling(name="summarize_ticket", n=60, max_completion_tokens=TICKET_BUDGET, thinking=False),
        ],
    )
    store = tmp_path_factory.mktemp("e2e") / "calls.jsonl"
    em_cfg = EmulatorConfig(seed=11, time_scale=0, stream_chunk_tokens=1024, routes=TRUTH, default_route="answer")
    with emulator(em_cfg) as em:
        client = KimiClient(
            KimiConfig(
                model="kimi-k2.6",
                base_url=em.base_url,
                api_key=TEST_API_KEY,
                retry=RetryPolicy(time_scale=0.001),
            )
        )
        run = run_until_precision(
            client,
            cfg,
            store,
            target=0.05,
            max_calls=4000,
            card=card,
            prompts=prompts,
            progress=False,
            prompt_source="synthetic: built from scenario e2e",
        )
    cal = fit_calibration(samples_frame(store), card=card)
    return scenario, card, run, cal


def test_sampler_reaches_the_target_spending_calls_where_the_variance_is(calibrated):
    _, _, run, cal = calibrated
    assert run.reached, str(run)
    # Calls go where the variance is: each route got about the calls its own CV needs, not a common number.
    for r in run.routes:
        assert r.calls_needed <= r.n <= max(1.6 * r.calls_needed, 60), r
    # The figure the sampler stopped on is the one the calibration file states (one function, the same calls).
    for r in run.routes:
        p = cal.routes[r.route].precision
        assert r.rel_error == p.cost_rel_error and r.calls_needed == p.calls_for_target, (r, p)
    for name, rc in cal.routes.items():
        p = rc.precision
        assert p.cost_rel_error <= 0.05, (name, p)
        assert p.more_calls_for_target <= 0.1 * rc.n + 10, (name, p)
        assert "synthetic" in (rc.prompt_source or ""), rc.prompt_source


def test_calibrated_forecast_holds_the_hidden_truth(calibrated):
    scenario, card, _, cal = calibrated
    truth = truth_cost_per_request(card)
    fitted = apply_calibration(scenario, cal)
    if fitted.routes[0].cache == scenario.routes[0].cache:
        # The measured cache behaviour (55 % of calls hit) must reach the scenario, or no forecast can hold the
        # truth; until apply carries it (issue 17's plumbing half), this test says so instead of passing.
        pytest.xfail("apply_calibration does not carry the measured cache-hit rate into the scenario yet")
    fc = forecast(
        fitted,
        months=1,
        paths=4000,
        daily_cv=0.0,
        growth_sd=0.0,
        capacity=False,
        quantiles=(0.025, 0.5, 0.975),
    )
    # The calibrated scenario carries each route's sampling error: the default forecast draws it, the same as
    # passing the calibration's cost_uncertainty, and says so.
    assert fc.settings["parameter_uncertainty"] == pytest.approx(cost_uncertainty(cal))
    for name in ("answer", "summarize_ticket"):
        assert f"on route {name}" in fc.parameter_note, fc.parameter_note
    row = fc.monthly.iloc[0]
    y, m = scenario.as_of.year, scenario.as_of.month
    requests = PER_DAY * calendar.monthrange(y, m)[1]
    want = requests * (0.8 * truth["answer"] + 0.2 * truth["summarize_ticket"])
    lo, hi = row["P2.5"], row["P97.5"]
    assert lo <= want <= hi, (lo, want, hi, fc.monthly)
    assert abs(row["expected"] / want - 1) <= 0.05, (row["expected"], want)
    # the uncalibrated scenario is far off the truth: calibration changed the answer
    raw = forecast(scenario, months=1, paths=200, daily_cv=0.0, growth_sd=0.0, capacity=False)
    assert abs(raw.monthly.iloc[0]["expected"] / want - 1) > 0.05
