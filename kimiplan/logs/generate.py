"""Synthetic per-call logs, written by DuckDB itself (so 100 million rows take a minute or two, not an hour).

Every random number comes from an integer hash of (row, stream, seed) written in SQL, so the same arguments
give the same file on any machine, thread count or DuckDB version. The log is synthetic: lognormal token
counts, a cache-hit share, refusals at a fixed rate; it stands in for real traffic in tests, notebooks and
benchmarks, never for a measurement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

from kimiplan.errors import ConfigError

#: route -> (share, median prompt tokens, median completion tokens, reasoning share of completion)
DEFAULT_ROUTES: dict[str, tuple[float, int, int, float]] = {
    "answer": (0.8, 3200, 220, 0.0),
    "summarize_ticket": (0.15, 2000, 160, 0.0),
    "agent_step": (0.05, 9000, 900, 0.6),
}
REFUSALS = ("rate_limit", "tpd", "server")

_MACROS = """
CREATE OR REPLACE TEMP MACRO kp_r(x) AS (xor(x >> 16, x) * 73244475) & 4294967295;
CREATE OR REPLACE TEMP MACRO kp_h(x) AS xor(kp_r(kp_r(x)) >> 16, kp_r(kp_r(x)));
CREATE OR REPLACE TEMP MACRO kp_u(i, k, seed) AS
    (kp_h((i * 32 + k + seed * 2654435761) & 4294967295) + 0.5) / 4294967296.0;
CREATE OR REPLACE TEMP MACRO kp_z(i, k, seed) AS
    sqrt(-2 * ln(kp_u(i, k, seed))) * cos(2 * pi() * kp_u(i, k + 1, seed));
"""


def call_log_sql(
    rows: int,
    *,
    seed: int = 0,
    start: dt.date = dt.date(2026, 9, 1),
    days: int = 30,
    routes: Mapping[str, tuple[float, int, int, float]] | None = None,
    models: Sequence[tuple[str, float]] = (("kimi-k2.6", 1.0),),
    refusal_rate: float = 0.02,
    cache_hit_rate: float = 0.7,
    batch_share: float = 0.0,
) -> str:
    """The SELECT that generates the log (columns of the `kimiplan-calls` mapping)."""
    if not 1 <= rows <= 134_000_000:  # the hash input (row * 32 + stream) stays below 2**32
        raise ConfigError(f"rows must be in [1, 134,000,000], got {rows}")
    if days < 1:
        raise ConfigError(f"days must be >= 1, got {days}")
    for name, v in (("refusal_rate", refusal_rate), ("cache_hit_rate", cache_hit_rate), ("batch_share", batch_share)):
        if not 0 <= v <= 1:
            raise ConfigError(f"{name} must be in [0, 1], got {v}")
    routes = dict(routes or DEFAULT_ROUTES)
    total = sum(r[0] for r in routes.values())
    if total <= 0:
        raise ConfigError("routes: shares must add up to more than 0")

    def pick(items: list[tuple[str, float]], k: int) -> str:
        if len(items) == 1:
            return f"'{items[0][0]}'"
        acc, parts = 0.0, []
        tot = sum(w for _, w in items)
        for name, w in items[:-1]:
            acc += w / tot
            parts.append(f"WHEN kp_u(i, {k}, {seed}) < {acc!r} THEN '{name}'")
        return f"CASE {' '.join(parts)} ELSE '{items[-1][0]}' END"

    def by_route(values: dict[str, float]) -> str:
        return "CASE route " + " ".join(f"WHEN '{r}' THEN {v!r}" for r, v in values.items()) + " END"

    span = days * 86400.0
    t0 = dt.datetime.combine(start, dt.time(), dt.UTC).isoformat()
    route_pick = pick([(r, v[0]) for r, v in routes.items()], 0)
    model_pick = pick(list(models), 2)
    refusal = (
        f"CASE WHEN kp_u(i, 3, {seed}) < {refusal_rate!r} THEN "
        f"['{REFUSALS[0]}', '{REFUSALS[1]}', '{REFUSALS[2]}'][1 + CAST(floor(kp_u(i, 4, {seed}) * 3) AS INTEGER)] END"
    )
    return f"""
    WITH base AS (
      SELECT i, {route_pick} AS route, {model_pick} AS model, {refusal} AS error_type,
             TIMESTAMPTZ '{t0}' + to_seconds(CAST(floor((i + kp_u(i, 5, {seed})) * {span / rows!r}) AS BIGINT))
               AS time
      FROM range({int(rows)}) t(i)
    ), drawn AS (
      SELECT *,
        CAST(round({by_route({r: v[1] for r, v in routes.items()})} * exp(0.5 * kp_z(i, 6, {seed}))) AS BIGINT)
          AS p,
        CAST(round({by_route({r: v[2] for r, v in routes.items()})} * exp(0.7 * kp_z(i, 8, {seed}))) AS BIGINT)
          AS c,
        {by_route({r: v[3] for r, v in routes.items()})} AS rshare
      FROM base
    )
    SELECT time, route, model,
      CASE WHEN error_type IS NULL THEN p END AS prompt_tokens,
      CASE WHEN error_type IS NULL THEN
        CASE WHEN kp_u(i, 10, {seed}) < {cache_hit_rate!r}
             THEN CAST(floor(p * (0.5 + 0.4 * kp_u(i, 11, {seed}))) AS BIGINT) ELSE 0 END END AS cached_tokens,
      CASE WHEN error_type IS NULL THEN least(c, 4096) END AS completion_tokens,
      CASE WHEN error_type IS NULL THEN CAST(floor(least(c, 4096) * rshare) AS BIGINT) END AS reasoning_tokens,
      CASE WHEN error_type IS NULL AND route = 'agent_step' AND kp_u(i, 12, {seed}) < 0.3 THEN 1 ELSE 0 END
        AS web_search_calls,
      CASE WHEN error_type IS NULL THEN round(0.6 * exp(0.4 * kp_z(i, 14, {seed})), 4) END AS ttft_s,
      CASE WHEN error_type IS NULL THEN round(0.6 * exp(0.4 * kp_z(i, 14, {seed})) + least(c, 4096) / 45.0, 4) END
        AS latency_s,
      error_type,
      CASE WHEN error_type IS NULL THEN CASE WHEN c >= 4096 THEN 'length' ELSE 'stop' END END AS finish_reason,
      4096 AS max_completion_tokens,
      kp_u(i, 16, {seed}) < {batch_share!r} AS batch
    FROM drawn
    """


def generate_call_log(
    path: str | Path,
    rows: int,
    *,
    seed: int = 0,
    start: dt.date = dt.date(2026, 9, 1),
    days: int = 30,
    routes: Mapping[str, tuple[float, int, int, float]] | None = None,
    models: Sequence[tuple[str, float]] = (("kimi-k2.6", 1.0),),
    refusal_rate: float = 0.02,
    cache_hit_rate: float = 0.7,
    batch_share: float = 0.0,
    threads: int | None = None,
    row_group_size: int = 1_000_000,
) -> Path:
    """Write a synthetic per-call log (`kimiplan-calls` columns) to `path`: .parquet, .csv[.gz] or .jsonl[.gz].
    Completions above 4,096 tokens are cut there (finish_reason=length), as the budget would."""

    path = Path(path)
    sql = call_log_sql(
        rows,
        seed=seed,
        start=start,
        days=days,
        routes=routes,
        models=models,
        refusal_rate=refusal_rate,
        cache_hit_rate=cache_hit_rate,
        batch_share=batch_share,
    )
    name = path.name.lower()
    if name.endswith(".parquet"):
        opts = f"FORMAT parquet, ROW_GROUP_SIZE {int(row_group_size)}"
    elif name.endswith((".csv", ".csv.gz")):
        opts = "FORMAT csv, HEADER true" + (", COMPRESSION gzip" if name.endswith(".gz") else "")
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        opts = "FORMAT json" + (", COMPRESSION gzip" if name.endswith(".gz") else "")
    else:
        raise ConfigError(f"path {str(path)!r}: write .parquet, .csv[.gz] or .jsonl[.gz]")
    path.parent.mkdir(parents=True, exist_ok=True)
    from kimiplan.logs.summarize import _connect

    con = _connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute(_MACROS)
        # Keep row order (time order) in the file, so row numbers in error messages mean something.
        con.execute("SET preserve_insertion_order = true")
        target = str(path).replace("'", "''")
        con.execute(f"COPY ({sql}) TO '{target}' ({opts})")
    finally:
        con.close()
    return path
