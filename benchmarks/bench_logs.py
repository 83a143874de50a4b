"""Call-log summaries: DuckDB (kimiplan.logs.summarize_log) against pandas on the same log (measured, not asserted).

1. A generated 10-million-row CSV log. pandas: `read_csv` (only the columns it needs, typed) then `groupby` on
   route and day for these figures: requests, refusals, tokens by price class (cache hit, cache miss, output,
   reasoning) and exact quantiles of prompt/completion tokens, TTFT and latency. DuckDB twice: the same
   aggregation as one SQL query, and `summarize_log`, which does more (validation of every row, pricing each row
   with the card in force on its day, exact Decimal sums).
   pandas a second time with its pyarrow engine (`read_csv(engine="pyarrow")`, multi-threaded), the reader a user
   would pick for speed, as a second reference.
   Printed: wall time and peak memory (max RSS of a fresh process) of each, and the speed ratios (goal >= 5x).
2. A generated 100-million-row Parquet log summarized under a stated DuckDB `memory_limit` (t-digest
   percentiles, whose memory is bounded), with the peak RSS measured.

Each engine runs in its own subprocess so its peak RSS is its own. Generation uses DuckDB itself.
Run: .venv/bin/python benchmarks/bench_logs.py [--rows 10000000] [--big-rows 100000000] [--memory-limit 1GB]
(--rows 0 runs only the Parquet part, --big-rows 0 only the CSV part)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
engine, path, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
if engine in ("pandas", "pandas-pyarrow"):
    import pandas as pd
    cols = ["time", "route", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens",
            "ttft_s", "latency_s", "error_type"]
    if engine == "pandas":
        df = pd.read_csv(path, usecols=cols, dtype={"route": "category", "error_type": "category"})
    else:  # the multi-threaded Arrow CSV reader, what a user would pick for speed; it parses the times itself
        df = pd.read_csv(path, usecols=cols, engine="pyarrow")
        df["route"] = df["route"].astype("category")
        df["error_type"] = df["error_type"].astype("category")
    df["day"] = df["time"].str.slice(0, 10) if engine == "pandas" else df["time"].dt.floor("D")
    ok = df["error_type"].isna()
    df["cache_miss"] = df["prompt_tokens"] - df["cached_tokens"]
    df["output"] = df["completion_tokens"] - df["reasoning_tokens"]
    g = df[ok].groupby(["route", "day"], observed=True)
    out = g.agg(succeeded=("prompt_tokens", "size"), cache_hit=("cached_tokens", "sum"),
                cache_miss=("cache_miss", "sum"), output=("output", "sum"), reasoning=("reasoning_tokens", "sum"))
    q = g[["prompt_tokens", "completion_tokens", "ttft_s", "latency_s"]].quantile([0.5, 0.9, 0.99])
    refused = df[~ok].groupby(["route", "day", "error_type"], observed=True).size()
    groups = len(out)
elif engine == "duckdb-sql":
    # The same aggregation as the pandas branch, as one DuckDB query (no validation, no pricing).
    import duckdb
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    sql = (
        "SELECT route, CAST(time AS DATE) AS day, count(*) FILTER (WHERE OK) AS succeeded,"
        " sum(cached_tokens) FILTER (WHERE OK), sum(prompt_tokens - cached_tokens) FILTER (WHERE OK),"
        " sum(completion_tokens - reasoning_tokens) FILTER (WHERE OK), sum(reasoning_tokens) FILTER (WHERE OK),"
        " quantile_cont(prompt_tokens, Q) FILTER (WHERE OK), quantile_cont(completion_tokens, Q) FILTER (WHERE OK),"
        " quantile_cont(ttft_s, Q) FILTER (WHERE OK), quantile_cont(latency_s, Q) FILTER (WHERE OK),"
        " histogram(error_type) FILTER (WHERE NOT OK)"
        " FROM read_csv('PATH') GROUP BY 1, 2"
    )
    sql = sql.replace("OK", "error_type IS NULL").replace("Q", "[0.5, 0.9, 0.99]").replace("PATH", path)
    out = con.execute(sql).fetchall()
    groups = len(out)
else:
    from kimiplan.logs import summarize_log
    s = summarize_log(path, "kimiplan-calls", **extra)
    groups = len(s.table)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "groups": groups,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(engine: str, path: Path, **extra) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, engine, str(path), json.dumps(extra)], capture_output=True, text=True
    )
    if res.returncode:
        raise SystemExit(f"{engine} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000, help="0 skips the CSV part")
    ap.add_argument("--big-rows", type=int, default=100_000_000, help="0 skips the Parquet part")
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--dir", help="where to write the generated logs (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.rows:
            csv_part(tmp, args.rows)
        if args.big_rows:
            parquet_part(tmp, args.big_rows, args.memory_limit)


def csv_part(tmp: str, rows: int) -> None:
    from kimiplan.logs import generate_call_log

    csv = Path(tmp) / "calls.csv"
    t0 = time.perf_counter()
    generate_call_log(csv, rows, seed=1, days=30, refusal_rate=0.02)
    print(f"generated {rows:,} rows of CSV ({csv.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s")
    pd_res = run("pandas", csv)
    pa_res = run("pandas-pyarrow", csv)
    sql_res = run("duckdb-sql", csv)
    dk_res = run("duckdb", csv)
    print(
        f"pandas read_csv + groupby : {pd_res['seconds']:7.2f} s, peak RSS {pd_res['peak_mb']:8,.0f} MB "
        f"({pd_res['groups']} groups)"
    )
    print(
        f"pandas, pyarrow engine    : {pa_res['seconds']:7.2f} s, peak RSS {pa_res['peak_mb']:8,.0f} MB "
        f"({pa_res['groups']} groups)"
    )
    print(
        f"DuckDB, the same query    : {sql_res['seconds']:7.2f} s, peak RSS {sql_res['peak_mb']:8,.0f} MB "
        f"({sql_res['groups']} groups)"
    )
    print(
        f"DuckDB summarize_log      : {dk_res['seconds']:7.2f} s, peak RSS {dk_res['peak_mb']:8,.0f} MB "
        f"({dk_res['groups']} groups; also validates and prices every row)"
    )
    for ref_name, ref in (("pandas", pd_res), ("pandas+pyarrow", pa_res)):
        for name, r in (("same query", sql_res), ("summarize_log", dk_res)):
            print(
                f"{ref_name:14s} / DuckDB {name:13s}: speed {ref['seconds'] / r['seconds']:.1f}x (goal >= 5x "
                f"against pandas), peak memory {ref['peak_mb'] / r['peak_mb']:.1f}x"
            )
    csv.unlink()


def parquet_part(tmp: str, big_rows: int, memory_limit: str) -> None:
    from kimiplan.logs import generate_call_log

    pq = Path(tmp) / "calls.parquet"
    t0 = time.perf_counter()
    generate_call_log(pq, big_rows, seed=2, days=90)
    print(
        f"\ngenerated {big_rows:,} rows of Parquet ({pq.stat().st_size / 1e9:.2f} GB) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    big = run("duckdb", pq, memory_limit=memory_limit, approx_percentiles=True, temp_directory=str(tmp))
    print(
        f"DuckDB summarize_log, memory_limit={memory_limit}, t-digest percentiles: "
        f"{big['seconds']:.1f} s, peak RSS {big['peak_mb']:,.0f} MB ({big['groups']} route-day groups, "
        f"{big_rows / big['seconds'] / 1e6:.1f} M rows/s)"
    )


if __name__ == "__main__":
    main()
