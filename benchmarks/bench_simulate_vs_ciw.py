"""Benchmark: kimiplan's simulator against Ciw on the same M/M/50/50 loss system (10 req/s, mean 5 s).

Both must land within +-0.005 of Erlang B (0.105); the speed ratio (simulated requests per second of wall
time) is measured in this run. Ciw gets a shorter horizon because it is slower; both horizons are long
enough for the agreement check.

    .venv/bin/python benchmarks/bench_simulate_vs_ciw.py [--ciw-seconds 20000] [--kimiplan-seconds 2000000]
"""

from __future__ import annotations

import argparse
import time

import ciw

from kimiplan.capacity.plan import erlang_b
from kimiplan.capacity.sim.simulate import simulate_poisson
from kimiplan.model.dists import Exponential

LAM, MEAN, C = 10.0, 5.0, 50


def run_ciw(horizon: float, seed: int = 1):
    net = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(LAM)],
        service_distributions=[ciw.dists.Exponential(1 / MEAN)],
        number_of_servers=[C],
        queue_capacities=[0],
    )
    ciw.seed(seed)
    sim = ciw.Simulation(net)
    t0 = time.perf_counter()
    sim.simulate_until_max_time(horizon)
    dt = time.perf_counter() - t0
    recs = sim.get_all_records()
    rejected = sum(r.record_type == "rejection" for r in recs)
    return len(recs), rejected / len(recs), dt


def run_kimiplan(horizon: float, seed: int = 1):
    lim = {"concurrency": float(C), "rpm": None, "tpm": None, "tpd": None, "rpd": None}
    simulate_poisson(LAM, 1000.0, lim, Exponential(mean=MEAN), seed=0)  # load the compiled kernel first
    t0 = time.perf_counter()
    r = simulate_poisson(LAM, horizon, lim, Exponential(mean=MEAN), seed=seed)
    dt = time.perf_counter() - t0
    return r.summary["requests"], r.summary["rejected_fraction"]["concurrency"], dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ciw-seconds", type=float, default=20_000.0)
    ap.add_argument("--kimiplan-seconds", type=float, default=2_000_000.0)
    a = ap.parse_args()
    b = erlang_b(C, LAM * MEAN)
    n_c, p_c, t_c = run_ciw(a.ciw_seconds)
    n_k, p_k, t_k = run_kimiplan(a.kimiplan_seconds)
    rate_c, rate_k = n_c / t_c, n_k / t_k
    print(f"Erlang B(50, 50) = {b:.5f}")
    print(
        f"ciw      : {n_c:>11,} requests in {t_c:7.2f} s = {rate_c:>13,.0f} req/s; blocked {p_c:.5f} "
        f"(diff {p_c - b:+.5f}) {'OK' if abs(p_c - b) <= 0.005 else 'FAIL'}"
    )
    print(
        f"kimiplan : {n_k:>11,} requests in {t_k:7.2f} s = {rate_k:>13,.0f} req/s; blocked {p_k:.5f} "
        f"(diff {p_k - b:+.5f}) {'OK' if abs(p_k - b) <= 0.005 else 'FAIL'}"
    )
    ratio = rate_k / rate_c
    print(f"speed ratio kimiplan / ciw = {ratio:,.0f}x (target >= 200x): {'OK' if ratio >= 200 else 'FAIL'}")


if __name__ == "__main__":
    main()
