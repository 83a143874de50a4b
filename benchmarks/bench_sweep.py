"""A 10,000-point sweep on the three example scenarios with the local engine (goal: under a minute on two cores).

Grid per scenario: 6 tiers x 3 max_completion_tokens (every route) x 6 volumes x 31 growth rates = 3,348
points, 10,044 in all. Printed: wall time, points per second, and the reference measured in the same run: one
direct `plan()` call per point for a sample of points, extrapolated to the grid (what a plain loop would take).
`--dask N` also runs the grid on a LocalCluster of N single-threaded worker processes.
Run: .venv/bin/python benchmarks/bench_sweep.py [--dask 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

GRID = {
    "tier": ["Tier0", "Tier1", "Tier2", "Tier3", "Tier4", "Tier5"],
    "routes.*.max_completion_tokens": [1024, 4096, 16384],
    "traffic.requests_per_day": [5_000, 10_000, 20_000, 40_000, 80_000, 160_000],
    "traffic.monthly_growth": [round(0.01 * k, 2) for k in range(31)],
}
SCENARIOS = ["support_chat", "coding_assistant", "document_report"]


def main() -> None:
    from kimiplan.capacity.plan import plan
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.sweeps import apply_overrides, load_grid, sweep

    ap = argparse.ArgumentParser()
    ap.add_argument("--dask", type=int, default=0, help="also run on a LocalCluster of this many processes")
    ap.add_argument("--reference-sample", type=int, default=20, help="points planned directly for the reference")
    args = ap.parse_args()
    catalog = load_catalog()
    points, _ = load_grid(GRID)
    n = len(points) * len(SCENARIOS)
    t0 = time.perf_counter()
    res = sweep(SCENARIOS, GRID, catalog=catalog, seed=0)
    local_s = time.perf_counter() - t0
    assert len(res.table) == n
    print(f"local engine: {n:,} points in {local_s:.1f} s ({n / local_s:,.0f} points/s; goal < 60 s)")

    rng = np.random.default_rng(0)
    sample = rng.choice(len(points), args.reference_sample, replace=False)
    bases = [load_scenario(s, catalog) for s in SCENARIOS]
    t0 = time.perf_counter()
    for i in sample:
        for b in bases:
            plan(apply_overrides(b, points[i]), catalog)
    per_point = (time.perf_counter() - t0) / (len(sample) * len(bases))
    print(
        f"reference: plan() per point {per_point * 1000:.0f} ms -> {per_point * n:,.0f} s for the grid as a plain "
        f"loop ({per_point * n / local_s:.0f}x the sweep)"
    )
    if args.dask:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=args.dask, threads_per_worker=1, processes=True, dashboard_address=None) as c:
            with Client(c) as client:
                t0 = time.perf_counter()
                d = sweep(SCENARIOS, GRID, catalog=catalog, seed=0, engine="dask", client=client)
                dask_s = time.perf_counter() - t0
        same = d.table.equals(res.table)
        print(f"dask engine ({args.dask} worker processes): {dask_s:.1f} s; table identical to local: {same}")


if __name__ == "__main__":
    main()
