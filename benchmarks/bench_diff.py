"""`kimiplan diff`: (1) the band of a difference from common random numbers against independent runs of the two
sides, on the bundled example (goal: at least 3x narrower); (2) a cold command-line diff of two scenarios with
five routes (goal: under 2 s), against `kimiplan plan` of one of them and `kimiplan --help` in the same run.

    python benchmarks/bench_diff.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kimiplan as kp
from kimiplan.model.scenario import Scenario

GOAL_RATIO = 3.0
GOAL_S = 2.0
KIMIPLAN = [sys.executable, "-m", "kimiplan"]


def _edit(sc: Scenario, route: int | None = None, **fields) -> Scenario:
    data = sc.model_dump(mode="python", by_alias=True)
    routes = [dict(r) for r in data["routes"]]
    if route is None:
        data.update(fields)
    else:
        routes[route].update(fields)
    data["routes"] = routes
    return Scenario.model_validate(data)


def thinking_on(sc: Scenario) -> Scenario:
    """Thinking on for the main route (reasoning median 600, p95 2,500 tokens; budget 8,192)."""
    return _edit(
        sc, 0, thinking=True, reasoning={"kind": "lognormal", "median": 600, "p95": 2500}, max_completion_tokens=8192
    )


def five_routes(sc: Scenario) -> Scenario:
    data = sc.model_dump(mode="python", by_alias=True)
    routes = [dict(r) for r in data["routes"]]
    for name, src in (("triage", 1), ("rewrite", 2)):
        routes.append(dict(routes[src], name=name, share=routes[src]["share"] / 2))
        routes[src]["share"] /= 2
    data["routes"] = routes
    return Scenario.model_validate(data)


def changes(base: Scenario) -> dict[str, Scenario]:
    """Pull requests that move an LLM bill, on the bundled example."""
    traffic = base.traffic.model_dump(by_alias=True)
    return {
        "answer.max_completion_tokens 2,048 -> 16,384": _edit(base, 0, max_completion_tokens=16384),
        "traffic.requests_per_day 40,000 -> 44,000": _edit(base, traffic={**traffic, "requests_per_day": 44_000.0}),
        "answer.rag.top_k 5 -> 7 (more retrieved chunks)": _edit(
            base, 0, rag={**base.routes[0].rag.model_dump(by_alias=True), "top_k": {"kind": "fixed", "value": 7}}
        ),
        "answer: thinking on": thinking_on(base),
    }


def band_ratio(paths: int = 4000) -> None:
    base = kp.load_scenario("support_chat")
    print(f"support_chat, {paths:,} paths; independent = the head on 5 other seeds (median width), as two runs give")
    ratios = {}
    for label, head in changes(base).items():
        d = kp.diff(base, head, paths=paths)
        crn = d.band["P90"] - d.band["P10"]
        widths, wrong = [], []
        for k in range(1, 6):
            other = kp.forecast(head, 2, paths=paths, seed=base.seed + k, capacity=False, common_random_numbers=True)
            ind = other.paths[:, other.next_full_month()] - d.base.paths  # the diff's month: the next full one
            widths.append(float(np.quantile(ind, 0.9) - np.quantile(ind, 0.1)))
            wrong.append(float(np.mean(np.sign(ind) != np.sign(d.cost_delta))))
        ind_w = statistics.median(widths)
        ratios[label] = ind_w / crn
        print(
            f"  {label:48s} change {d.cost_delta:+9,.2f} USD/month ({d.cost_percent:+.1%}); P10-P90 width: common "
            f"random numbers {crn:8,.2f}, independent {ind_w:8,.2f} -> {ind_w / crn:7.1f}x narrower; paths of the "
            f"wrong sign {np.mean(np.sign(d.delta_paths) != np.sign(d.cost_delta)):.1%} vs "
            f"{statistics.median(wrong):.1%}"
        )
    typical = [r for k, r in ratios.items() if "thinking" not in k]
    print(
        f"  goal >= {GOAL_RATIO:.0f}x on changes of the size a pull request makes (cost within +-50 %): "
        f"{'met' if min(typical) >= GOAL_RATIO else 'NOT met'} (smallest {min(typical):.1f}x). A change that moves "
        "the cost by a large share keeps the traffic noise of its own size (thinking on: the band of +83 % is "
        "the traffic uncertainty of that +83 %), so its ratio tends to sqrt(1 + (1 + x)^2) / x."
    )


def best(cmd: list[str], repeat: int = 3) -> float:
    t_best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def cold_cli() -> None:
    base = five_routes(kp.load_scenario("support_chat"))
    head = thinking_on(base)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "base.json"), Path(tmp, "head.json")
        a.write_text(base.model_dump_json(by_alias=True), encoding="utf-8")
        b.write_text(head.model_dump_json(by_alias=True), encoding="utf-8")
        t_help = best([*KIMIPLAN, "--help"])
        t_plan = best([*KIMIPLAN, "plan", str(a), "--json"])
        t_diff = best([*KIMIPLAN, "diff", str(a), str(b), "--format", "json"])
    print(
        f"cold CLI, 5 routes (best of 3 fresh processes): `kimiplan --help` {t_help:.2f} s, `plan` {t_plan:.2f} s, "
        f"`diff` {t_diff:.2f} s = {t_diff / t_plan:.2f}x plan; goal < {GOAL_S:.0f} s: "
        f"{'met' if t_diff < GOAL_S else 'NOT met'} (start-up alone is {t_help / t_diff:.0%} of the diff)"
    )


if __name__ == "__main__":
    band_ratio()
    cold_cli()
