"""Sampler throughput against the emulator at a concurrency limit of 50 (measured, not asserted).

The emulator enforces concurrency 50 with Kimi's 429 body; the sampler is told the same limit. Printed: samples per
second, the sampler's and the server's average in-flight requests, and refusals caused by the sampler's own pacing
(should be 0). The reference is the ideal in-flight count (50), measured in the same run.
Run: .venv/bin/python benchmarks/bench_sampler.py [--n 1500] [--time-scale 0.01]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, run_sampler
from kimiplan.catalog.cards import load_catalog
from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
from kimiplan.emulator import EmulatorConfig, LatencyTruth, LimitsTruth, LogNormalTruth, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="calls in total")
    ap.add_argument(
        "--time-scale",
        type=float,
        default=0.3,
        help="emulated seconds -> real seconds (calls must be slow enough for 50 to overlap on 2 cores)",
    )
    args = ap.parse_args()
    limit = 50
    truth = {
        "answer": RouteTruth(output=LogNormalTruth(median=120, p95=300)),
        "summarize_ticket": RouteTruth(output=LogNormalTruth(median=100, p95=250)),
    }
    em_cfg = EmulatorConfig(
        time_scale=args.time_scale,
        stream_chunk_tokens=64,
        routes=truth,
        default_route="answer",
        limits=LimitsTruth(concurrency=limit),
        latency=LatencyTruth(ttft=LogNormalTruth(median=0.8, p95=2.0), decode_tokens_per_s=50),
    )
    cfg = SamplerConfig(
        run_id="bench",
        max_concurrency=limit,
        spend_cap=Decimal(100),
        routes=[
            RouteSampling(name="answer", n=args.n // 2, max_completion_tokens=1024, thinking=False),
            RouteSampling(name="summarize_ticket", n=args.n - args.n // 2, max_completion_tokens=1024, thinking=False),
        ],
    )
    with tempfile.TemporaryDirectory() as d, emulator(em_cfg) as em:
        client = KimiClient(
            KimiConfig(
                model="kimi-k2.6",
                base_url=em.base_url,
                api_key=TEST_API_KEY,
                retry=RetryPolicy(time_scale=args.time_scale),
            )
        )
        t0 = time.perf_counter()
        s = run_sampler(client, cfg, Path(d) / "s.jsonl", card=load_catalog().price("kimi-k2.6"), progress=False)
        wall = time.perf_counter() - t0
        st = em.engine.stats
    print(f"calls completed          {s.completed} / {s.planned} (failed {s.failed})")
    print(f"samples per second       {s.completed / wall:.1f}")
    print(f"in flight, sampler avg   {s.mean_in_flight:.1f}  (ratio to limit {s.mean_in_flight / limit:.2f})")
    print(f"in flight, server avg    {st.in_flight_seconds / wall:.1f}  (max {st.max_in_flight})")
    print(f"refusals (429)           {sum(st.refusals.values())} {st.refusals or ''}")
    print(f"client retries           {s.retries or 0}")


if __name__ == "__main__":
    main()
