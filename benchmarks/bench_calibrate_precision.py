"""Sequential sampling to a target precision against fixed 200-call sampling (measured, not asserted).

Two routes served by the emulator with hidden laws: `heavy` (answers from a lognormal body with a Pareto tail,
alpha 1.3, cut at a 4,096-token budget: the cost per call has a coefficient of variation near 1) and `light`
(a long fixed prompt and short, steady answers: the cost barely varies). Printed per route: the calls
`run_until_precision` spent to state the mean cost per request within +-5 % at 95 %, the interval it then
states, and the same for fixed 200-call sampling in the same run, with the truth's mean cost per request
(closed form) so each interval can be checked against it.
Run: .venv/bin/python benchmarks/bench_calibrate_precision.py [--target 0.05] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from scipy import stats

from kimiplan.calibration.fitters import fit_calibration, samples_frame
from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, run_sampler, run_until_precision
from kimiplan.catalog.cards import load_catalog
from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
from kimiplan.emulator import EmulatorConfig, LogNormalTruth, MixtureTruth, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY
from kimiplan.tokens.tokenizer import count_messages

BUDGET = 4096
PROMPTS = {
    "heavy": [
        [{"role": "system", "content": "heavy"}, {"role": "user", "content": f"Question {i}: explain it."}]
        for i in range(20)
    ],
    "light": [
        [
            {"role": "system", "content": "light " + "Policy text for the assistant. " * 400},
            {"role": "user", "content": f"Ticket {i}: summarize."},
        ]
        for i in range(20)
    ],
}
TRUTH = {
    "heavy": RouteTruth(
        match="heavy",
        output=MixtureTruth(
            components=[
                {"weight": 0.75, "law": {"median": 250, "p95": 800}},
                {"weight": 0.25, "law": {"kind": "pareto", "scale": 400, "alpha": 1.3}},
            ]
        ),
    ),
    "light": RouteTruth(match="light", output=LogNormalTruth(median=150, p95=200)),
}


def capped_lognormal(median, p95, b):
    s = math.log(p95 / median) / 1.6448536269514722
    mu = math.log(median)
    return math.exp(mu + s * s / 2) * stats.norm.cdf((math.log(b) - mu - s * s) / s) + b * stats.norm.sf(
        (math.log(b) - mu) / s
    )


def truth_cost(route, card):
    """Mean cost per request of the hidden law, in closed form (prompts cycle; no cache hits: one short prompt
    set per route is below the cache threshold or differs per call after the system prompt, see below)."""
    if route == "heavy":
        xm, a = 400.0, 1.3
        out = 0.75 * capped_lognormal(250, 800, BUDGET) + 0.25 * (xm + xm / (a - 1) * (1 - (xm / BUDGET) ** (a - 1)))
    else:
        out = capped_lognormal(150, 200, BUDGET)
    return out, float(card.output) * out / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.05)
    ap.add_argument("--fixed", type=int, default=200)
    ap.add_argument("--max-calls", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    card = load_catalog().price("kimi-k2.6")
    # No cache at all: the truth's cost is then input + capped output, both in closed form.
    em_cfg = EmulatorConfig(
        seed=args.seed,
        time_scale=0,
        stream_chunk_tokens=512,
        routes=TRUTH,
        default_route="heavy",
        cache_min_prompt_tokens=10**9,
    )
    routes = [RouteSampling(name=r, n=30, max_completion_tokens=BUDGET, thinking=False) for r in TRUTH]
    rows = {}
    with tempfile.TemporaryDirectory() as d, emulator(em_cfg) as em:
        client = KimiClient(
            KimiConfig(
                model="kimi-k2.6",
                base_url=em.base_url,
                api_key=TEST_API_KEY,
                retry=RetryPolicy(time_scale=0.001),
            )
        )
        seq_cfg = SamplerConfig(run_id=f"seq-{args.seed}", routes=routes, spend_cap=Decimal(100), max_concurrency=8)
        t0 = time.perf_counter()
        seq = run_until_precision(
            client,
            seq_cfg,
            Path(d) / "seq.jsonl",
            target=args.target,
            max_calls=args.max_calls,
            card=card,
            prompts=PROMPTS,
            progress=False,
        )
        t_seq = time.perf_counter() - t0
        fix_cfg = SamplerConfig(
            run_id=f"fixed-{args.seed}",
            routes=[r.model_copy(update={"n": args.fixed}) for r in routes],
            spend_cap=Decimal(100),
            max_concurrency=8,
        )
        t0 = time.perf_counter()
        run_sampler(client, fix_cfg, Path(d) / "fixed.jsonl", card=card, prompts=PROMPTS, progress=False)
        t_fix = time.perf_counter() - t0
        cal_seq = fit_calibration(samples_frame(Path(d) / "seq.jsonl"), card=card)
        cal_fix = fit_calibration(samples_frame(Path(d) / "fixed.jsonl"), card=card)
    print(
        f"sequential: {seq.stopped_reason}; {len(seq.rounds)} rounds, {t_seq:.1f} s; "
        f"fixed {args.fixed} calls: {t_fix:.1f} s"
    )
    print(
        f"{'route':7} {'how':11} {'calls':>6} {'mean cost/request':>18} {'stated 95% interval':>25} {'+-':>6} "
        f"{'truth':>10} {'covers':>6} {'calls for +-5%':>14}"
    )
    for route in TRUTH:
        prompt = sum(count_messages(p) for p in PROMPTS[route]) / len(PROMPTS[route])
        out, out_cost = truth_cost(route, card)
        truth = out_cost + prompt * float(card.input_cache_miss) / 1e6  # prompts cycle evenly (n per route)
        for how, cal in (("sequential", cal_seq), (f"fixed {args.fixed}", cal_fix)):
            p = cal.routes[route].precision
            lo, hi = p.cost_per_request.ci
            print(
                f"{route:7} {how:11} {p.cost_per_request.n:6,} {p.cost_per_request.value * 1e6:15,.1f} u$ "
                f"{lo * 1e6:11,.1f} - {hi * 1e6:9,.1f} u$ {p.cost_rel_error:6.1%} {truth * 1e6:8,.1f} u$ "
                f"{'yes' if lo <= truth <= hi else 'NO':>6} {p.calls_for_target:14,}"
            )
        rows[route] = truth
    print("u$ = millionths of a US dollar (the card's currency); the interval is the fit's bootstrap percentile one")


if __name__ == "__main__":
    main()
