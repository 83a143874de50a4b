"""Benchmark: 30 days at 100 requests/s (about 259 million requests) with concurrency, RPM, TPM and TPD all
enforced, streamed in chunks. Targets: under 60 s wall time and under 2 GiB peak memory (ru_maxrss).

    .venv/bin/python benchmarks/bench_simulate_30days.py [--days 30] [--rps 100] [--no-progress]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from kimiplan.capacity.sim.simulate import SimSettings, simulate
from kimiplan.model.scenario import parse_scenario


def bench_scenario(rps: float):
    # A chat route with a fixed system prompt, lognormal user message and answer, and a 2,048 budget; the
    # custom tier is sized so every limit is close to the load and refuses some requests.
    return parse_scenario(
        {
            "name": "bench-30-days",
            "provider": "moonshot",
            "model": "kimi-k2.6",
            "as_of": "2026-11-26",
            "seed": 1,
            "tier": {
                "name": "bench",
                "concurrency": int(rps * 7.5),
                "rpm": int(rps * 62),
                "tpm": int(rps * 60 * 4000),
                "tpd": int(rps * 86400 * 3900),
            },
            "traffic": {"requests_per_second": rps},
            "routes": [
                {
                    "name": "chat",
                    "share": 1.0,
                    "system": 1500,
                    "user": {"kind": "lognormal", "median": 120, "p95": 600},
                    "output": {"kind": "lognormal", "median": 250, "p95": 900},
                    "max_completion_tokens": 2048,
                    "cache": {"mode": "none"},
                    "latency": {
                        "ttft_s": {"kind": "lognormal", "median": 0.8, "p95": 2.0},
                        "decode_tps": {"kind": "lognormal", "median": 60, "p95": 90},
                    },
                }
            ],
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--rps", type=float, default=100.0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--token-pool",
        type=int,
        default=0,
        help="0 (default): every request draws its own tokens and latency; N: each chunk draws N and "
        "resamples them (faster, slightly less independent)",
    )
    a = ap.parse_args()
    sc = bench_scenario(a.rps)
    simulate(sc, settings=SimSettings(hours=0.1))  # load the compiled kernel before timing
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    st = SimSettings(hours=24 * a.days, progress=not a.no_progress, token_pool=a.token_pool or None)
    r = simulate(sc, settings=st)
    dt = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
    s = r.summary
    print(f"token pool per chunk: {st.token_pool or 'none (every request drawn)'}")
    print(
        f"{s['requests']:,} requests over {a.days:g} days at {a.rps:g} req/s in {dt:.1f} s "
        f"({s['requests'] / dt:,.0f} req/s); peak memory {peak_gib:.2f} GiB (before the run {base / 2**20:.2f})"
    )
    print("refused: " + ", ".join(f"{k} {v:.4%}" for k, v in s["rejected_fraction"].items()))
    print(
        f"time target 60 s: {'OK' if dt < 60 else 'FAIL'} ({dt / 60:.2f} of budget); "
        f"memory target 2 GiB: {'OK' if peak_gib < 2 else 'FAIL'}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
