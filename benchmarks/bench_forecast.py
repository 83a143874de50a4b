"""Benchmark: 10,000 Monte Carlo paths x 12 months x 10 routes (target: under 2 s on 2 cores).

The reference is the naive method measured in the same run: draw every request of a path with
`workload.draw_route` and price it. It is timed on one path-month and extrapolated to the same workload,
because running it in full would take far too long. Run: `.venv/bin/python benchmarks/bench_forecast.py`."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kimiplan.catalog.cards import load_catalog  # noqa: E402
from kimiplan.catalog.resolve import price_card
from kimiplan.finance.forecast import forecast, price_vector, traffic_calendar  # noqa: E402
from kimiplan.model.scenario import example_path, load_scenario  # noqa: E402
from kimiplan.workload.draws import draw_route, route_context  # noqa: E402

PATHS, MONTHS, ROUTES = 10_000, 12, 10


def ten_route_scenario(catalog):
    base = load_scenario(example_path("support_chat"), catalog)
    data = base.model_dump(mode="python", by_alias=True)
    routes = [dict(data["routes"][i % 3], name=f"route_{i}", share=1 / ROUTES) for i in range(ROUTES)]
    data.update(routes=routes, traffic={**data["traffic"], "requests_per_day": 2000.0})
    return type(base).model_validate(data)


def naive_path_month(sc, catalog, rng) -> float:
    """One path-month the slow way: Poisson count per route, every request drawn and priced."""
    card = price_card(sc, catalog)
    vol = traffic_calendar(sc, 1)["requests"].sum()
    total = 0.0
    for route in sc.routes:
        n = rng.poisson(vol * route.share)
        d = draw_route(route, n, rng, route_context(sc, route, card))
        q = np.stack(
            [
                d["cached_tokens"],
                d["input_tokens"] - d["cached_tokens"],
                d["reasoning_tokens"],
                d["output_tokens"],
                d["web_search_calls"],
            ]
        ).astype(float)
        total += float(price_vector(card, route.batch) @ q.sum(axis=1))
    return total


def main() -> None:
    catalog = load_catalog()
    sc = ten_route_scenario(catalog)
    forecast(sc, 1, catalog=catalog, paths=10)  # warm-up (imports, caches)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fc = forecast(sc, MONTHS, catalog=catalog, paths=PATHS)
        times.append(time.perf_counter() - t0)
    fast = statistics.median(times)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        naive_path_month(sc, catalog, rng)
    naive_one = (time.perf_counter() - t0) / reps
    naive_total = naive_one * PATHS * MONTHS
    print(
        f"forecast: {PATHS:,} paths x {MONTHS} months x {len(sc.routes)} routes "
        f"({fc.settings['unit_samples']:,} unit draws per route): median {fast:.2f} s of {len(times)} runs "
        f"(target < 2 s: {'ok' if fast < 2 else 'MISSED'})"
    )
    print(
        f"naive reference (every request drawn, ~{traffic_calendar(sc, 1)['requests'].sum():,.0f} requests per "
        f"path-month): {naive_one * 1000:.0f} ms per path-month, ~{naive_total:,.0f} s extrapolated; "
        f"ratio {naive_total / fast:,.0f}x"
    )


if __name__ == "__main__":
    main()
