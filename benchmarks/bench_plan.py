"""How long `plan()` takes on the four examples in a warm process (goal: under 0.3 s each, so notebook 02 stays
interactive), against a reference measured in the same run on the same scenario: a one-hour simulation of it
(`simulate(..., hours=1)`), the other way to get a refusal share.

    python benchmarks/bench_plan.py
"""

from __future__ import annotations

import time

from kimiplan.capacity.plan import plan
from kimiplan.capacity.sim.simulate import SimSettings, simulate
from kimiplan.capacity.verdict import _window_cached
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario

GOAL_S = 0.3


def best_of(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    catalog = load_catalog()
    t = time.perf_counter()
    plan(load_scenario("support_chat", catalog), catalog)
    print(f"first plan() in a fresh process (imports, compiled-code cache): {time.perf_counter() - t:.2f} s")
    worst = 0.0
    for name in ("support_chat", "coding_assistant", "document_report", "coding_agent"):
        sc = load_scenario(name, catalog)
        # The window knapsack's memo is emptied before every call: the figure is a plan of a new scenario.
        p_s = best_of(lambda sc=sc: (_window_cached.cache_clear(), plan(sc, catalog)))
        sim_s = best_of(lambda sc=sc: simulate(sc, catalog, SimSettings.for_scenario(sc, hours=1.0)), repeat=3)
        worst = max(worst, p_s)
        print(
            f"{name:17s} plan() {p_s * 1000:6.0f} ms   1 h simulation {sim_s * 1000:6.0f} ms   "
            f"plan / simulation {p_s / sim_s:5.2f}   goal < {GOAL_S:.1f} s: {'met' if p_s < GOAL_S else 'NOT met'}"
        )
    print(f"slowest plan(): {worst:.3f} s")


if __name__ == "__main__":
    main()
