"""Summaries of call logs of any size, computed out of core by DuckDB.

One pass over the log (Parquet, CSV or JSONL, gzipped or not; a file, a glob or a folder) yields, per group
(route and day by default): requests, refusals by error type, tokens by price class (cache hit, cache miss,
output, reasoning), cost, and token and latency percentiles. The log is never loaded into pandas: only the
per-group result (a few rows per route and day) comes back.

Money stays exact: token counts are summed as integers, each row's tokens are multiplied by the price of the
card in force on the call's day as DuckDB DECIMAL(38, 12) (prices per million tokens carry at most 12
decimals, checked), the sums come back as Python Decimals and are divided by one million in a 60-digit
context. Rows that fail a check (missing or malformed values, cached above prompt tokens ...) are rejected:
counted by reason, the first one named by file and row, never skipped silently.
"""

from __future__ import annotations

import datetime as dt
import decimal
import glob as _glob
import gzip
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.io.formats import money
from kimiplan.logs.mapping import FIELDS, LogMapping, Source, guess_mapping, load_mapping
from kimiplan.logs.otel import DERIVED, build_views, detect_exclusive_scopes, is_otlp_columns, materialize

MILLION = Decimal(1_000_000)
PRICE_SCALE = Decimal("1e-12")
_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
}
GROUP_KEYS = ("route", "day", "month", "model")
PRICE_CLASSES = ("cache_hit", "cache_miss", "output", "reasoning")
_INT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


# --- finding the files ---------------------------------------------------------------------------------------
def _format_of(p: str) -> str | None:
    name = p.lower()
    for ext in (".gz", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return _FORMATS.get(os.path.splitext(name)[1])


def resolve_files(path: str | Path | Sequence[str | Path]) -> tuple[list[str], str]:
    """The files a PATH names (a file, a glob, a folder searched recursively, or a list) and their format."""
    if isinstance(path, (list, tuple)):
        files = [str(p) for p in path]
    else:
        s = str(path)
        if os.path.isdir(s):
            files = sorted(
                p for p in _glob.glob(os.path.join(s, "**", "*"), recursive=True) if os.path.isfile(p) and _format_of(p)
            )
        elif any(ch in s for ch in "*?["):
            files = sorted(p for p in _glob.glob(s, recursive=True) if os.path.isfile(p))
        else:
            files = [s]
    if not files:
        raise ConfigError(f"log {str(path)!r}: no files found")
    for f in files:
        if not os.path.isfile(f):
            raise ConfigError(f"log {f!r} does not exist")
    formats = {f: _format_of(f) for f in files}
    unknown = [f for f, k in formats.items() if k is None]
    if unknown:
        raise ConfigError(f"log {unknown[0]!r}: unknown format; use .parquet, .csv or .jsonl (gzipped or not)")
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        raise ConfigError(f"log {str(path)!r} mixes formats {kinds}; summarize one format at a time")
    return files, kinds[0]


def _q(s: str) -> str:
    """A SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _reader(files: list[str], fmt: str, text: bool = False) -> str:
    lst = "[" + ", ".join(_q(f) for f in files) + "]"
    if fmt == "otlp":  # spans read once into a temp table (kimiplan.logs.otel)
        return "kp_otlp"
    if fmt == "parquet":
        return f"read_parquet({lst}, filename=true, file_row_number=true, union_by_name=true)"
    if fmt == "csv":
        if text:  # every column as text: nothing fails to parse (the bad-row hunt reads this way)
            return f"read_csv({lst}, all_varchar=true, header=true, filename=true)"
        # Typed as sniffed (parsing in the reader is several times faster than casting text); a value that does
        # not fit its column's type is not a failed read: DuckDB keeps the line in its rejects table.
        return (
            f"read_csv({lst}, header=true, filename=true, store_rejects=true, "
            "rejects_table='kp_rej_errors', rejects_scan='kp_rej_scans')"
        )
    # JSONL: one text line per row (blank lines come back NULL and are skipped), parsed below, so that a bad
    # line is a rejected row and a key that some lines lack is NULL there.
    return (
        f"read_csv({lst}, columns={{'line': 'VARCHAR'}}, header=false, delim='\\x1f', quote='', escape='', "
        "auto_detect=false, filename=true)"
    )


def _json_keys(path: str, con=None) -> list[str]:
    """The top-level keys of the first non-blank line (zstd files are read through DuckDB)."""
    if path.lower().endswith(".zst") and con is not None:
        row = con.execute(
            f"SELECT line FROM read_csv({_q(path)}, columns={{'line': 'VARCHAR'}}, header=false, delim='\\x1f', "
            "quote='', escape='', auto_detect=false) WHERE line IS NOT NULL LIMIT 1"
        ).fetchone()
        lines = [row[0]] if row else []
    else:
        opener = gzip.open if path.lower().endswith(".gz") else open
        fh = opener(path, "rt", encoding="utf-8")
        lines = (line for line in fh if line.strip())
    for line in lines:
        # Only the first line is read: a first line cut mid-way (one request of a crashed collector) still shows
        # its first key.
        if line.lstrip().startswith('{"resourceSpans"'):
            return ["resourceSpans"]
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return []
        return list(obj) if isinstance(obj, dict) else []
    return []


# --- the SQL -------------------------------------------------------------------------------------------------
_MACROS = """
CREATE OR REPLACE TEMP MACRO kp_int(x) AS
    CASE WHEN TRY_CAST(x AS DOUBLE) = TRY_CAST(x AS BIGINT) THEN TRY_CAST(x AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO kp_epoch(d, div) AS
    CASE WHEN abs(d / div) < 1e11 THEN to_timestamp(d / div) END;
"""


@dataclass
class _Plan:
    files: list[str]
    fmt: str
    mapping: LogMapping
    columns: dict[str, str]  # source column -> DuckDB type ('' when unknown: JSON)
    fields: dict[str, str | None]  # kimiplan field -> SQL expression (None: absent)
    origin: str
    known_models: list[str] | None = None  # set: a call of another model is a bad row (OTLP)


def _path_expr(path: str, plan_fmt: str, columns: dict[str, str]) -> str | None:
    """SQL for a source column (None when the log has no such column)."""
    if plan_fmt == "json":
        return _ident(path)  # extracted under its own name, NULL where a line lacks it
    if path in columns:
        return _ident(path)
    head, _, rest = path.partition(".")
    if rest and head in columns and columns[head].upper().startswith("STRUCT"):
        return ".".join(_ident(p) for p in path.split("."))
    return None


def _convert(expr: str, kind: str, src_type: str, time_div: int) -> str:
    t = src_type.upper()
    if kind == "BIGINT":
        return f"CAST({expr} AS BIGINT)" if t in _INT_TYPES else f"kp_int({expr})"
    if kind == "DOUBLE":
        return f"TRY_CAST({expr} AS DOUBLE)"
    if kind == "BOOLEAN":
        return f"TRY_CAST({expr} AS BOOLEAN)"
    if kind == "VARCHAR":
        return f"NULLIF({expr}, '')" if t == "VARCHAR" else f"NULLIF(trim(CAST({expr} AS VARCHAR)), '')"
    # time
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"CAST({expr} AS TIMESTAMPTZ)"
    if t in _INT_TYPES or t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
        return f"kp_epoch(CAST({expr} AS DOUBLE), {time_div})"
    txt = f"CAST({expr} AS VARCHAR)"
    return f"coalesce(TRY_CAST({txt} AS TIMESTAMPTZ), kp_epoch(TRY_CAST({txt} AS DOUBLE), {time_div}))"


def _field_expr(name: str, sources: tuple[Source, ...], plan_fmt: str, columns: dict[str, str], div: int):
    kind = FIELDS[name][0]
    parts = []
    for s in sources:
        if s.value is not None:
            parts.append(_convert(_literal(s.value), kind, "", div))
            continue
        if s.column is not None:
            e = _path_expr(s.column, plan_fmt, columns)
            if e is None:
                continue
            src_t = columns.get(s.column, "") if plan_fmt != "json" else ""
            parts.append(_convert(e, kind, src_t, div))
            continue
        if all(_path_expr(c, plan_fmt, columns) is not None for c in s.columns):
            parts.append(_convert(f"({s.sql})", kind, "", div))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return _q(v)


_DEFAULTS = {
    "route": "'default'",
    "cached_tokens": "0::BIGINT",
    "cache_write_tokens": "0::BIGINT",
    "web_search_calls": "0::BIGINT",
    "requests": "1::BIGINT",
    "batch": "false",
}


def _canon_sql(p: _Plan, model: str | None, with_rownum: bool = False, text: bool = False) -> str:
    """SELECT producing kimiplan's fields, `_reason` (why a row is rejected, NULL if kept), `_file`, `_row`."""
    f = dict(p.fields)
    sel = []
    for name, (kind, _) in FIELDS.items():
        e = f.get(name)
        if name == "model" and model is not None:
            e = f"coalesce({e}, {_q(model)})" if e else _q(model)
        if e is None:
            e = _DEFAULTS.get(name, f"NULL::{kind}")
        elif name in _DEFAULTS:
            e = f"coalesce({e}, {_DEFAULTS[name]})"
        sel.append(f"{e} AS {name}")
    if p.fmt == "json":
        paths = p.mapping.source_columns()
        jpaths = ", ".join(_q(_json_path(c)) for c in paths)
        cols = ", ".join(f"_v[{i + 1}] AS {_ident(c)}" for i, c in enumerate(paths))
        inner = (
            f"SELECT filename, line, json_valid(line) AS _json_ok, "
            f"json_extract_string(CASE WHEN json_valid(line) THEN line END, [{jpaths}]) AS _v "
            f"FROM {_reader(p.files, p.fmt)} WHERE line IS NOT NULL"
        )
        if with_rownum:
            inner = inner.replace("FROM ", ", row_number() OVER (PARTITION BY filename) AS _rn FROM ", 1)
            inner = inner.replace(" WHERE line IS NOT NULL", "")
            inner = f"SELECT * FROM ({inner}) WHERE line IS NOT NULL"
        src = f"(SELECT filename, _json_ok{', _rn' if with_rownum else ''}, {cols} FROM ({inner}))"
        ok_json = "_json_ok"
    else:
        src = _reader(p.files, p.fmt, text=text)
        ok_json = "_json_ok" if p.fmt == "otlp" else "true"
        if with_rownum:
            rn = {"parquet": "file_row_number + 1", "otlp": "_line"}.get(
                p.fmt, "row_number() OVER (PARTITION BY filename)"
            )
            src = f"(SELECT *, {rn} AS _rn FROM {src})"
    # The reason is a small integer (cheap to carry and count); REASONS holds the words.
    reason = "CASE " + " ".join(f"WHEN {c} THEN {i}" for i, (c, _) in enumerate(_reasons(ok_json))) + " END"
    extra = ", _rn" if with_rownum else ""
    canon = f"SELECT filename AS _file{extra}, {ok_json} AS _json_ok, {', '.join(sel)} FROM {src}"
    unknown = "false"
    if p.known_models is not None:
        names = "[" + ", ".join(_q(n) for n in sorted(p.known_models)) + "]::VARCHAR[]"
        unknown = f"(model IS NULL OR NOT list_contains({names}, model))"
    canon = f"SELECT *, {unknown} AS _unknown_model FROM ({canon})"
    # The UTC day as a day number: far cheaper per row than a time-zone-aware cast to DATE.
    return f"SELECT *, {reason} AS _reason, epoch_us(time) // 86400000000 AS _day FROM ({canon})"


def _reasons(ok_json: str = "true") -> list[tuple[str, str]]:
    """Why a row is rejected: (condition, words), first match wins. Token checks apply to successful calls."""
    ok_call = "error_type IS NULL"
    out = [
        (f"NOT {ok_json}", "not valid JSON"),
        ("time IS NULL", "time: missing or not a date/time"),
        ("requests IS NULL OR requests < 1", "requests: missing or below 1"),
        ("batch IS NULL", "batch: not true/false"),
    ]
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "web_search_calls"):
        out.append(
            (f"{ok_call} AND ({name} IS NULL OR {name} < 0)", f"{name}: missing, negative or not a whole number")
        )
    out += [
        (f"{ok_call} AND cache_write_tokens < 0", "cache_write_tokens: negative or not a whole number"),
        (f"{ok_call} AND cached_tokens > prompt_tokens", "cached_tokens: above prompt_tokens (which include them)"),
        (
            f"{ok_call} AND cached_tokens + coalesce(cache_write_tokens, 0) > prompt_tokens",
            "cache_write_tokens: cache read + cache write above prompt_tokens (which include both)",
        ),
        (f"{ok_call} AND reasoning_tokens < 0", "reasoning_tokens: negative"),
        (f"{ok_call} AND reasoning_tokens > completion_tokens", "reasoning_tokens: above completion_tokens"),
        ("ttft_s < 0 OR NOT isfinite(ttft_s)", "ttft_s: negative or not finite"),
        ("latency_s < 0 OR NOT isfinite(latency_s)", "latency_s: negative or not finite"),
        (f"{ok_call} AND _unknown_model", "model: missing or not in the catalog (provider and region)"),
    ]
    return out


REASONS = [words for _, words in _reasons()]


def _json_path(col: str) -> str:
    parts = []
    for part in col.split("."):
        if part.isdigit():
            parts.append(f"[{part}]")
        else:
            parts.append("." + json.dumps(part))
    return "$" + "".join(parts)


# --- prices --------------------------------------------------------------------------------------------------
def price_table(catalog: Catalog, provider: str, region: str | None, cache_retention: str = "5m") -> pd.DataFrame:
    """Every model name's price per million tokens over dated intervals that do not overlap, as the catalog
    prices it on each day (`Catalog.price`), for interactive and Batch calls; cache writes at the price of
    `cache_retention` ("5m" or "1h")."""
    region = region or ("intl" if provider == "moonshot" else "global")
    cards = [c for c in catalog.cards if c.provider == provider and c.region == region]
    if not cards:
        raise CatalogError(f"no price cards for provider={provider!r} region={region!r}")
    rows = []
    for name in sorted({n for c in cards for n in c.names()}):
        named = [c for c in cards if name in c.names()]
        bounds = sorted({dt.date(1900, 1, 1)} | {d for c in named for d in (c.effective_from, c.effective_to) if d})
        for lo, hi in zip(bounds, [*bounds[1:], dt.date(9999, 12, 31)]):
            try:
                card = catalog.price(name, provider, region, lo)
            except CatalogError:
                continue
            for batch in (False, True):
                if batch and card.batch_multiplier is None:
                    continue
                m = card.batch_multiplier if batch else Decimal(1)
                prices = {
                    "p_hit": card.cache_hit_price * m,
                    "p_miss": card.input_cache_miss * m,
                    "p_out": card.output * m,
                    "p_web": card.web_search_per_call,  # a per-call fee: no batch discount
                    # A paid cache write (K3 family) at the retention the mapping says (logs and spans do not
                    # record it; 5 minutes by default); K2.x: the cache-miss price, a written prefix being input.
                    "p_write": card.cache_write_price(cache_retention) * m,
                }
                for k, v in prices.items():
                    if v != v.quantize(PRICE_SCALE):
                        raise CatalogError(f"{card.model}: {k} {v} has more than 12 decimals; cannot sum it exactly")
                rows.append(
                    {
                        "name": name,
                        "valid_from": lo,
                        "valid_to": hi,
                        "batch": batch,
                        **prices,
                        "currency": card.currency,
                    }
                )
    out = pd.DataFrame(rows)
    cur = sorted(out["currency"].unique())
    if len(cur) > 1:
        raise CatalogError(f"{provider}/{region} prices in several currencies {cur}; pick a region")
    return out


# --- the result ----------------------------------------------------------------------------------------------
@dataclass
class LogSummary:
    """What `summarize_log` returns. `table` has one row per group; money columns are floats in `currency`
    for reading, `cost_exact` holds the exact Decimal. Totals are exact too."""

    table: pd.DataFrame
    by: tuple[str, ...]
    currency: str
    mapping: str
    files: list[str]
    rows: int
    requests: int
    cost: Decimal
    rejected: dict[str, int]
    first_rejected: dict[str, Any] | None
    unpriced: dict[str, int]
    refusals: dict[str, int]
    percentiles: tuple[float, ...]
    samples: pd.DataFrame | None = None
    provider: str = "moonshot"
    region: str | None = None
    notes: list[str] = field(default_factory=list)
    #: OpenTelemetry spans that are not Kimi calls with usage (agent and tool spans, other providers ...), by reason
    skipped: dict[str, int] = field(default_factory=dict)
    #: per route: agent runs and steps per run, conversations, turns and prompt growth per turn (None: no ids)
    sessions: pd.DataFrame | None = None
    #: per route with tool-call replies: function and search rounds per request and, where calls carry a
    #: conversation or run id, each function round's call and result tokens (None: no route called tools)
    tool_rounds: pd.DataFrame | None = None

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())

    def usage_frame(self) -> pd.DataFrame:
        """Per day and route usage sums in the backtest's columns (`kimiplan.finance.backtest.backtest` reads
        its monthly actuals from this frame)."""
        if not {"route", "day"} <= set(self.by):
            raise ConfigError(f"usage_frame needs a summary by route and day; this one is by {list(self.by)}")
        t = self.table.groupby(["day", "route"], as_index=False, sort=True)[
            ["succeeded", "cache_hit_tokens", "cache_miss_tokens", "output_tokens", "reasoning_tokens"]
            + ["web_search_calls"]
        ].sum()
        return pd.DataFrame(
            {
                "date": t["day"],
                "route": t["route"],
                "requests": t["succeeded"],
                "prompt_tokens": t["cache_hit_tokens"] + t["cache_miss_tokens"],
                "cached_tokens": t["cache_hit_tokens"],
                "completion_tokens": t["output_tokens"] + t["reasoning_tokens"],
                "web_search_calls": t["web_search_calls"],
                "source": f"kimiplan logs summarize ({self.mapping}: {len(self.files)} file(s))",
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": len(self.files),
            "mapping": self.mapping,
            "rows": self.rows,
            "requests": self.requests,
            "currency": self.currency,
            "cost": str(self.cost),
            "cost_rounded": str(self.cost.quantize(Decimal("0.01"), rounding=decimal.ROUND_HALF_UP)),
            "refusals": self.refusals,
            "rejected_rows": self.rejected_rows,
            "rejected": self.rejected,
            "first_rejected": self.first_rejected,
            "unpriced_requests": self.unpriced,
            "by": list(self.by),
            "groups": json.loads(
                self.table.drop(columns=["cost_exact"]).to_json(
                    orient="records", date_format="iso", double_precision=10
                )
            ),
            "notes": self.notes,
            "skipped_spans": self.skipped,
            "sessions": None
            if self.sessions is None
            else json.loads(self.sessions.to_json(orient="records", double_precision=10)),
            "tool_rounds": None
            if self.tool_rounds is None
            else json.loads(
                self.tool_rounds.drop(columns=["call_tokens", "result_tokens", "round_counts"]).to_json(
                    orient="records", double_precision=10
                )
            ),
        }

    def headline(self) -> str:
        lines = [
            f"{self.rows:,} rows in {len(self.files)} file(s) read as {self.mapping!r}: {self.requests:,} requests, "
            f"cost {money(self.cost.quantize(Decimal('0.01'), rounding=decimal.ROUND_HALF_UP), self.currency)} "
            f"(exact {self.cost.normalize():f} {self.currency})"
        ]
        if self.refusals:
            lines.append("refused: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.refusals.items())))
        if self.rejected:
            where = ""
            if self.first_rejected:
                fr = self.first_rejected
                where = f"; first: {fr['file']} row {fr['row']} ({fr['reason']})"
            lines.append(
                f"rejected {self.rejected_rows:,} rows: "
                + ", ".join(f"{k} ({v:,})" for k, v in sorted(self.rejected.items()))
                + where
            )
        if self.unpriced:
            lines.append(
                "not priced (no card in force on the call's day, or no Batch price): "
                + ", ".join(f"{k} {v:,} requests" for k, v in sorted(self.unpriced.items()))
            )
        if self.sessions is not None:
            for r in self.sessions.itertuples():
                parts = []
                if r.runs:
                    parts.append(
                        f"{r.runs:,} agent runs, {r.steps_per_run:,.2f} steps per run (p90 {r.steps_p90:,.0f})"
                    )
                if r.conversations:
                    g = "" if r.growth_n == 0 else f", prompt +{r.growth_per_turn:,.0f} tokens per turn"
                    parts.append(f"{r.conversations:,} conversations, {r.turns_per_conversation:,.2f} turns each{g}")
                if parts:
                    lines.append(f"route {r.route}: " + "; ".join(parts))
        if self.tool_rounds is not None:
            for r in self.tool_rounds.itertuples():
                size = ""
                if r.pairs:
                    size = f" (each {r.call_tokens_mean:,.0f} call + {r.result_tokens_mean:,.0f} result tokens)"
                lines.append(
                    f"route {r.route}: {r.function_rounds_per_request:,.2f} function rounds per request{size}, "
                    f"{r.search_rounds_per_request:,.2f} $web_search rounds "
                    f"({r.requests:,} requests, {r.calls:,} calls)"
                )
        lines += self.notes
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.headline()

    def _repr_html_(self) -> str:
        import html

        from kimiplan.io.tables import table_html

        head = "<br>".join(html.escape(x) for x in self.headline().splitlines())
        show = self.table.drop(columns=["cost_exact"]).head(40)
        more = f"first 40 of {len(self.table):,} rows" if len(self.table) > 40 else ""
        return f"<div><p>{head}</p>{table_html(show, self.currency, note=more)}</div>"


# --- the entry point -----------------------------------------------------------------------------------------
def summarize_log(
    path: str | Path | Sequence[str | Path],
    mapping: str | Path | LogMapping | dict | None = None,
    *,
    by: Sequence[str] = ("route", "day"),
    catalog: Catalog | None = None,
    provider: str = "moonshot",
    region: str | None = None,
    model: str | None = None,
    percentiles: Sequence[float] = (0.5, 0.9, 0.99),
    approx_percentiles: bool = False,
    samples_per_route: int = 0,
    on_bad_rows: str = "count",
    memory_limit: str | None = None,
    threads: int | None = None,
    temp_directory: str | None = None,
) -> LogSummary:
    """Summarize a call log out of core with DuckDB.

    `mapping`: a shipped mapping's name, a YAML file or a LogMapping (default: guessed from the columns).
    `model`: the model of rows that name none (a daily usage log). `approx_percentiles`: t-digest quantiles
    (bounded memory for logs of hundreds of millions of rows) instead of exact ones. `samples_per_route`: also
    keep up to that many successful calls per route (a deterministic hash sample) for calibration
    (`fit_calibration(summary.samples)`). `on_bad_rows`: "count" (reject and report) or "raise".
    `memory_limit` (e.g. "1GB") bounds DuckDB's memory; beyond it DuckDB spills to `temp_directory`."""
    import duckdb

    by = tuple(by)
    bad = [k for k in by if k not in GROUP_KEYS]
    if bad or not by:
        raise ConfigError(f"by: unknown key(s) {bad}; choose from {list(GROUP_KEYS)}")
    if on_bad_rows not in ("count", "raise"):
        raise ConfigError(f"on_bad_rows must be 'count' or 'raise', got {on_bad_rows!r}")
    qs = tuple(float(q) for q in percentiles)
    if any(not 0 <= q <= 1 for q in qs):
        raise ConfigError(f"percentiles must be in [0, 1], got {list(qs)}")
    if samples_per_route < 0:
        raise ConfigError(f"samples_per_route must be >= 0, got {samples_per_route}")
    files, fmt = resolve_files(path)
    origin = str(path) if not isinstance(path, (list, tuple)) else f"{len(files)} files"
    catalog = catalog or load_catalog()

    con = _connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if memory_limit:
            con.execute(f"SET memory_limit = {_q(memory_limit)}")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        if temp_directory:
            con.execute(f"SET temp_directory = {_q(temp_directory)}")
        con.execute(_MACROS)
        if fmt == "json":
            columns = {k: "" for k in _json_keys(files[0], con)}
        else:
            try:
                desc = con.execute(f"DESCRIBE SELECT * FROM {_reader(files, fmt)}").fetchall()
            except duckdb.Error as exc:
                raise ConfigError(f"log {origin}: cannot be read as {fmt}: {exc}") from None
            columns = {r[0]: r[1] for r in desc if r[0] not in ("filename", "file_row_number")}
        m = load_mapping(mapping if mapping is not None else guess_mapping(list(columns)))
        prices = price_table(catalog, provider, region, m.cache_write_retention)
        otlp = None
        if m.format == "otlp" or (m.format is None and is_otlp_columns(list(columns))):
            # OpenTelemetry spans: read once into a temp table of calls (the other spans counted by reason).
            keys = [c for c in m.source_columns() if c not in DERIVED]
            materialize(con, files, fmt, columns, keys)
            otlp = build_views(con, list(prices["name"]))
            fmt = "otlp"
            desc = con.execute("DESCRIBE SELECT * FROM kp_otlp").fetchall()
            columns = {r[0]: r[1] for r in desc}
        if m.format and m.format != fmt:
            raise ConfigError(f"log {origin}: mapping {m.name!r} reads {m.format} files, these are {fmt}")
        if m.input_counting == "auto" and fmt != "otlp":
            raise ConfigError(
                f"mapping {m.name!r}: input_counting 'auto' is decided per instrumentation scope, which only "
                "OpenTelemetry spans have; say 'inclusive' or 'exclusive'"
            )
        div = {"s": 1, "ms": 1000, "us": 1_000_000}[m.time_unit]
        fields = {name: _field_expr(name, srcs, fmt, columns, div) for name, srcs in m.columns.items()}
        if m.input_counting != "inclusive" and fields.get("prompt_tokens"):
            fields["prompt_tokens"] = _exclusive_prompt(con, m, fields, otlp)
        for name, (_, required) in FIELDS.items():
            if required and fields.get(name) is None:
                wanted = [s.column or s.sql for s in m.columns.get(name, ())]
                raise ConfigError(
                    f"log {origin}: column {' or '.join(map(repr, wanted))} (field {name} of mapping {m.name!r}) "
                    f"not found; the log's columns: {', '.join(sorted(columns)[:30])}"
                )
        plan = _Plan(files, fmt, m, columns, fields, origin, list(prices["name"]) if otlp else None)
        con.register("kp_prices_df", prices)
        con.execute(
            "CREATE TEMP TABLE kp_prices AS SELECT name, "
            "epoch(valid_from::DATE)::BIGINT // 86400 AS day_from, epoch(valid_to::DATE)::BIGINT // 86400 AS day_to, "
            "batch, p_hit::DECIMAL(18,12) AS p_hit, p_miss::DECIMAL(18,12) AS p_miss, "
            "p_out::DECIMAL(18,12) AS p_out, p_web::DECIMAL(18,12) AS p_web, p_write::DECIMAL(18,12) AS p_write "
            "FROM kp_prices_df"
        )
        con.unregister("kp_prices_df")
        result = _aggregate(con, plan, model, by, qs, approx_percentiles)
        table, totals = result
        rfirst = None
        if fmt == "csv":
            more, rfirst = _reader_rejects(con)
            for k, v in more.items():
                totals["rejected"][k] = totals["rejected"].get(k, 0) + v
            totals["rows"] += sum(more.values())
        rejected = totals["rejected"]
        first = None
        if rejected:
            order = {f: i for i, f in enumerate(files)}
            cands = [c for c in (_first_rejected(con, plan, model), rfirst) if c]
            first = min(cands, key=lambda c: (order.get(c["file"], 0), c["row"])) if cands else None
            if on_bad_rows == "raise" and first:
                raise ConfigError(
                    f"log {first['file']} row {first['row']}: {first['reason']} ({sum(rejected.values()):,} bad rows)"
                )
        _check_whole_columns(plan, totals, first)
        samples = _samples(con, plan, model, table, by, samples_per_route) if samples_per_route else None
        sessions = _sessions(con, plan, model)
        tool_rounds = None if m.aggregated else _tool_rounds(con, plan, model)
    except duckdb.Error as exc:
        raise ConfigError(f"log {origin} (mapping {m.name if 'm' in locals() else '?'}): {exc}") from None
    finally:
        con.close()
    notes = []
    if m.aggregated:
        notes.append("rows are daily sums: no per-request percentiles")
    if otlp is not None:
        notes += otlp.notes()
    return LogSummary(
        table=table,
        by=by,
        currency=str(prices["currency"].iloc[0]),
        mapping=m.name,
        files=files,
        rows=totals["rows"],
        requests=totals["requests"],
        cost=totals["cost"],
        rejected=rejected,
        first_rejected=first,
        unpriced=totals["unpriced"],
        refusals=totals["refusals"],
        percentiles=qs,
        samples=samples,
        provider=provider,
        region=region,
        notes=notes,
        skipped=dict(otlp.skipped) if otlp else {},
        sessions=sessions,
        tool_rounds=tool_rounds,
    )


def _exclusive_prompt(con, m: LogMapping, fields: dict, otlp) -> str:
    """prompt_tokens when input tokens exclude cached ones: input + cache read + cache write, for every row
    (`exclusive`) or for the instrumentation scopes whose spans prove it (`auto`)."""
    p = fields["prompt_tokens"]
    c = fields.get("cached_tokens") or "0"
    w = fields.get("cache_write_tokens") or "0"
    total = f"({p}) + coalesce({c}, 0) + coalesce({w}, 0)"
    if m.input_counting == "exclusive":
        return total
    exclusive, inclusive = detect_exclusive_scopes(con, p, c)
    otlp.exclusive_scopes, otlp.inclusive_scopes = exclusive, inclusive
    if not exclusive:
        return p
    scopes = "[" + ", ".join(_q(x) for x in exclusive) + "]"
    return f"CASE WHEN list_contains({scopes}, coalesce(_scope, '')) THEN {total} ELSE {p} END"


def _sessions(con, plan: _Plan, model) -> pd.DataFrame | None:
    """Per route: agent runs and their steps (calls per run), conversations, their turns and the prompt's growth
    per turn (the history a conversation accumulates). None when the log names neither runs nor conversations."""
    if plan.fields.get("run_id") is None and plan.fields.get("conversation_id") is None:
        return None
    canon = _canon_sql(plan, model)
    ok = "_reason IS NULL AND error_type IS NULL"
    # One row per run and per conversation comes back (not per call); the means are taken with math.fsum, so
    # they do not depend on the order DuckDB's threads add in.
    runs = con.execute(
        f"SELECT route, count(*) AS steps FROM ({canon}) WHERE {ok} AND run_id IS NOT NULL GROUP BY route, run_id"
    ).df()
    convs = con.execute(
        f"""SELECT route, count(*) AS turns,
               (arg_max(prompt_tokens, time) - arg_min(prompt_tokens, time)) / greatest(count(*) - 1, 1) AS growth
        FROM ({canon}) WHERE {ok} AND conversation_id IS NOT NULL GROUP BY route, conversation_id"""
    ).df()
    if runs.empty and convs.empty:
        return None
    rows = []
    for route in sorted(set(runs["route"]) | set(convs["route"])):
        r = runs.loc[runs["route"] == route, "steps"].to_numpy(dtype=float)
        c = convs[convs["route"] == route]
        g = c.loc[c["turns"] > 1, "growth"].to_numpy(dtype=float)
        rows.append(
            {
                "route": route,
                "runs": len(r),
                "steps_per_run": _fmean(r),
                "steps_sd": _fsd(r),
                "steps_p50": float(np.quantile(r, 0.5)) if len(r) else float("nan"),
                "steps_p90": float(np.quantile(r, 0.9)) if len(r) else float("nan"),
                "conversations": len(c),
                "turns_per_conversation": _fmean(c["turns"].to_numpy(dtype=float)),
                "turns_sd": _fsd(c["turns"].to_numpy(dtype=float)),
                "growth_per_turn": _fmean(g),
                "growth_sd": _fsd(g),
                "growth_n": len(g),
            }
        )
    return pd.DataFrame(rows)


#: the function rounds' call and result tokens kept per route (chosen by a hash: the same ones every run)
TOOL_ROUND_SAMPLES = 2000


def _tool_rounds(con, plan: _Plan, model) -> pd.DataFrame | None:
    """Per route whose calls end in tool calls: a request is its calls up to the one that answers, so each
    reply with `finish_reason=tool_calls` is one round of a request, and requests = calls - such replies. A
    reply with $web_search calls is a search round, any other a function round. Where calls carry a
    conversation id, the call after a function round (the next one of that conversation, by time) shows what the
    round added: its prompt minus the round's prompt, completion (the call message and the reasoning, read back
    within the turn) and the assistant and tool message markers is the results' size. Calls with a run id are
    agent steps (counted as steps per run), not tool rounds of a request."""
    from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE

    if plan.fields.get("finish_reason") is None:
        return None
    canon = _canon_sql(plan, model)
    ok = "_reason IS NULL AND error_type IS NULL"
    counts = con.execute(
        f"""SELECT route, count(*) AS calls,
               count(*) FILTER (WHERE finish_reason = 'tool_calls') AS tool_replies,
               count(*) FILTER (WHERE finish_reason = 'tool_calls' AND coalesce(web_search_calls, 0) = 0) AS fn
        FROM ({canon}) WHERE {ok} AND run_id IS NULL GROUP BY route ORDER BY route"""
    ).df()
    counts = counts[counts["tool_replies"] > 0]
    if counts.empty:
        return None
    pairs = pd.DataFrame(columns=["route", "call", "result"])
    per_request = pd.DataFrame(columns=["route", "k", "n"])
    if plan.fields.get("conversation_id") is not None:
        # Requests within an id: a call not after a tool-call reply starts one; its function rounds counted.
        per_request = con.execute(
            f"""WITH c AS (
                  SELECT route, conversation_id AS sid, time, finish_reason, web_search_calls,
                         CASE WHEN coalesce(lag(finish_reason) OVER (PARTITION BY route, conversation_id
                              ORDER BY time) = 'tool_calls', false) THEN 0 ELSE 1 END AS start
                  FROM ({canon}) WHERE {ok} AND conversation_id IS NOT NULL AND run_id IS NULL
                ), r AS (
                  SELECT *, sum(start) OVER (PARTITION BY route, sid ORDER BY time
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS req
                  FROM c
                )
                SELECT route, k, count(*) AS n FROM (
                  SELECT route, sid, req,
                         count(*) FILTER (WHERE finish_reason = 'tool_calls' AND coalesce(web_search_calls, 0) = 0)
                           AS k
                  FROM r GROUP BY route, sid, req
                ) GROUP BY route, k ORDER BY route, k"""
        ).df()
        markers = DEFAULT_TEMPLATE.message_overhead("assistant") + DEFAULT_TEMPLATE.message_overhead("tool")
        pairs = con.execute(
            f"""SELECT route, completion_tokens - coalesce(reasoning_tokens, 0) AS call,
                       next_prompt - prompt_tokens - completion_tokens - {int(markers)} AS result
                FROM (
                  SELECT route, time, prompt_tokens, completion_tokens, reasoning_tokens, finish_reason,
                         web_search_calls,
                         lead(prompt_tokens) OVER (PARTITION BY route, conversation_id ORDER BY time) AS next_prompt
                  FROM ({canon}) WHERE {ok} AND conversation_id IS NOT NULL AND run_id IS NULL
                )
                WHERE finish_reason = 'tool_calls' AND coalesce(web_search_calls, 0) = 0 AND next_prompt IS NOT NULL
                QUALIFY row_number() OVER (PARTITION BY route
                        ORDER BY hash(time, prompt_tokens, completion_tokens, next_prompt)) <= {TOOL_ROUND_SAMPLES}
                ORDER BY route, time"""
        ).df()
    rows = []
    for r in counts.to_dict(orient="records"):
        requests = int(r["calls"] - r["tool_replies"])
        p = pairs[pairs["route"] == r["route"]]
        q = per_request[per_request["route"] == r["route"]]
        call = p["call"].to_numpy(dtype=float)
        res = np.maximum(p["result"].to_numpy(dtype=float), 0.0)
        rows.append(
            {
                "route": r["route"],
                "calls": int(r["calls"]),
                "requests": requests,
                "function_rounds_per_request": r["fn"] / requests if requests else float("nan"),
                "search_rounds_per_request": (r["tool_replies"] - r["fn"]) / requests if requests else float("nan"),
                "pairs": len(p),
                "call_tokens_mean": _fmean(call),
                "result_tokens_mean": _fmean(res),
                "call_tokens": call.tolist(),
                "result_tokens": res.tolist(),
                # requests by their function rounds, where ids tell the requests apart (else None)
                "round_counts": {int(k): int(n) for k, n in zip(q["k"], q["n"])} if len(q) else None,
            }
        )
    return pd.DataFrame(rows)


def _fmean(x) -> float:
    return math.fsum(x) / len(x) if len(x) else float("nan")


def _fsd(x) -> float:
    if len(x) < 2:
        return float("nan")
    m = _fmean(x)
    return math.sqrt(math.fsum((v - m) ** 2 for v in x) / (len(x) - 1))


def _check_whole_columns(plan: _Plan, totals: dict, first: dict | None) -> None:
    """A required column that no row has is a wrong mapping, not a log of bad rows: say so."""
    for name, n in totals["rejected"].items():
        field_name = name.split(":")[0]
        if field_name in FIELDS and FIELDS[field_name][1] and n == totals["rows"] and n > 0:
            wanted = [s.column or s.sql for s in plan.mapping.columns.get(field_name, ())]
            where = f" (first: {first['file']} row {first['row']})" if first else ""
            raise ConfigError(
                f"log {plan.origin}: column {' or '.join(map(repr, wanted))} (field {field_name} of mapping "
                f"{plan.mapping.name!r}) is missing or malformed in every one of {n:,} rows{where}"
            )


def _aggregate(con, plan: _Plan, model, by, qs, approx) -> tuple[pd.DataFrame, dict]:
    good = "_reason IS NULL AND error_type IS NULL"
    priced = f"{good} AND p.p_hit IS NOT NULL"
    qlist = "[" + ", ".join(repr(q) for q in qs) + "]"
    qfun = "approx_quantile" if approx else "quantile_cont"
    pct = []
    if not plan.mapping.aggregated and qs:
        for col in ("prompt_tokens", "completion_tokens", "ttft_s", "latency_s"):
            pct.append(f"{qfun}({col}, {qlist}) FILTER (WHERE {good}) AS {col}_q")
    key_sql = {"route": "c.route", "model": "c.model", "day": "c._day", "month": "strftime(c.time, '%Y-%m')"}
    keys = ", ".join(f"{key_sql[k]} AS {k}" for k in by)
    sql = f"""
    SELECT {keys},
      count(*) AS _rows,
      coalesce(sum(requests) FILTER (WHERE _reason IS NULL), 0) AS requests,
      coalesce(sum(requests) FILTER (WHERE {good}), 0) AS succeeded,
      coalesce(sum(requests) FILTER (WHERE _reason IS NULL AND error_type IS NOT NULL), 0) AS refused,
      histogram(error_type) FILTER (WHERE _reason IS NULL AND error_type IS NOT NULL) AS _refusals,
      coalesce(sum(cached_tokens) FILTER (WHERE {good}), 0) AS cache_hit_tokens,
      coalesce(sum(prompt_tokens - cached_tokens - cache_write_tokens) FILTER (WHERE {good}), 0) AS cache_miss_tokens,
      coalesce(sum(cache_write_tokens) FILTER (WHERE {good}), 0) AS cache_write_tokens,
      coalesce(sum(completion_tokens - coalesce(reasoning_tokens, 0)) FILTER (WHERE {good}), 0) AS output_tokens,
      coalesce(sum(coalesce(reasoning_tokens, 0)) FILTER (WHERE {good}), 0) AS reasoning_tokens,
      coalesce(sum(web_search_calls) FILTER (WHERE {good}), 0) AS web_search_calls,
      sum(cached_tokens * p.p_hit) FILTER (WHERE {priced}) AS _c_hit,
      sum((prompt_tokens - cached_tokens - cache_write_tokens) * p.p_miss) FILTER (WHERE {priced}) AS _c_miss,
      sum(cache_write_tokens * p.p_write) FILTER (WHERE {priced}) AS _c_write,
      sum((completion_tokens - coalesce(reasoning_tokens, 0)) * p.p_out) FILTER (WHERE {priced}) AS _c_out,
      sum(coalesce(reasoning_tokens, 0) * p.p_out) FILTER (WHERE {priced}) AS _c_reason,
      sum(web_search_calls * p.p_web) FILTER (WHERE {priced}) AS _c_web,
      coalesce(sum(requests) FILTER (WHERE {good} AND p.p_hit IS NULL), 0) AS unpriced_requests,
      count(*) FILTER (WHERE _reason IS NOT NULL) AS rejected_rows,
      {", ".join(f"count(*) FILTER (WHERE _reason = {i}) AS _rej{i}" for i in range(len(REASONS)))}
      {"".join(", " + x for x in pct)}
    FROM ({_canon_sql(plan, model)}) c
    LEFT JOIN kp_prices p
      ON p.name = c.model AND p.batch = c.batch AND c._day >= p.day_from AND c._day < p.day_to
    GROUP BY {", ".join(key_sql[k] for k in by)}
    """
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    raw = pd.DataFrame(cur.fetchall(), columns=names)
    ctx = decimal.Context(prec=60)
    money = {"_c_hit": "cache_hit", "_c_miss": "cache_miss", "_c_out": "output", "_c_reason": "reasoning"}
    money["_c_write"] = "cache_write"

    def dec(v) -> Decimal:
        return Decimal(0) if v is None or (isinstance(v, float) and v != v) else ctx.divide(Decimal(v), MILLION)

    def tidy(d: Decimal) -> Decimal:  # same value, no trailing zeros, never exponent notation
        return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()

    exact = {k: [dec(v) for v in raw[k]] for k in money}
    web = [Decimal(0) if v is None or (isinstance(v, float) and v != v) else Decimal(v) for v in raw["_c_web"]]

    def exact_sum(values) -> Decimal:
        out = Decimal(0)
        for v in values:
            out = ctx.add(out, v)
        return out

    totals_exact = [exact_sum((*parts, w)) for *parts, w in zip(*exact.values(), web)]

    # Totals over every row, rejected ones and those without a group key included.
    def merge(col) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in raw[col]:
            for k, v in (d or {}).items():
                out[k] = out.get(k, 0) + int(v)
        return out

    rejected = {words: int(raw[f"_rej{i}"].sum()) for i, words in enumerate(REASONS)}
    totals = {
        "rows": int(raw["_rows"].sum()),
        "requests": int(raw["requests"].sum()),
        "cost": tidy(sum(totals_exact, Decimal(0))),
        "rejected": {k: v for k, v in rejected.items() if v},
        "unpriced": {},
        "refusals": merge("_refusals"),
    }
    if raw["unpriced_requests"].sum():  # rare: name the models in a second query
        totals["unpriced"] = dict(
            con.execute(
                f"""SELECT coalesce(c.model, '(no model)') || CASE WHEN c.batch THEN ' (batch)' ELSE '' END,
                  sum(requests)
                FROM ({_canon_sql(plan, model)}) c LEFT JOIN kp_prices p
                  ON p.name = c.model AND p.batch = c.batch AND c._day >= p.day_from AND c._day < p.day_to
                WHERE {good} AND p.p_hit IS NULL GROUP BY 1"""
            ).fetchall()
        )
        totals["unpriced"] = {k: int(v) for k, v in totals["unpriced"].items()}
    t = raw[list(by)].copy()
    for col in ("requests", "succeeded", "refused", "unpriced_requests", "rejected_rows"):
        t[col] = raw[col].astype("int64")
    kinds = sorted(totals["refusals"])
    for k in kinds:
        t[f"refused_{k}"] = [int((d or {}).get(k, 0)) for d in raw["_refusals"]]
    writes = plan.fields.get("cache_write_tokens") is not None  # the columns show only when the log has them
    for col in ("cache_hit_tokens", "cache_miss_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"):
        if col != "cache_write_tokens" or writes:
            t[col] = raw[col].astype("int64")
    t["web_search_calls"] = raw["web_search_calls"].astype("int64")
    for k, cls in money.items():
        if cls != "cache_write" or writes:
            t[f"cost_{cls}"] = [float(v) for v in exact[k]]
    t["cost_web_search"] = [float(v) for v in web]
    t["cost"] = [float(v) for v in totals_exact]
    t["cost_exact"] = [tidy(v) for v in totals_exact]
    for col in ("prompt_tokens", "completion_tokens", "ttft_s", "latency_s"):
        qcol = f"{col}_q"
        if qcol not in raw:
            continue
        for i, q in enumerate(qs):
            t[f"{col}_p{_qname(q)}"] = [float(v[i]) if v is not None else float("nan") for v in raw[qcol]]
    # Rows without a group key (their time, hence day, was unreadable) only feed the rejected counts.
    keep = t[list(by)].notna().all(axis=1) & (t["requests"] > 0)
    t = t[keep].sort_values(list(by), kind="stable").reset_index(drop=True)
    if "day" in t:
        t["day"] = [dt.date(1970, 1, 1) + dt.timedelta(days=int(d)) for d in t["day"]]
    return t, totals


def _qname(q: float) -> str:
    s = f"{q * 100:.4g}"
    return s.replace(".", "_")


def _first_rejected(con, plan: _Plan, model) -> dict[str, Any] | None:
    """The first bad row (file order, then row order). CSV is re-read as text for this, so that lines the typed
    reader set aside and values that fail a check are numbered alike (data rows, 1-based)."""
    if plan.fmt == "csv":
        cols = {c: "VARCHAR" for c in plan.columns}
        div = {"s": 1, "ms": 1000, "us": 1_000_000}[plan.mapping.time_unit]
        fields = {n: _field_expr(n, srcs, "csv", cols, div) for n, srcs in plan.mapping.columns.items()}
        plan = _Plan(plan.files, plan.fmt, plan.mapping, cols, fields, plan.origin)
    sql = (
        f"SELECT _file, _rn, _reason FROM ({_canon_sql(plan, model, with_rownum=True, text=plan.fmt == 'csv')}) "
        "WHERE _reason IS NOT NULL"
    )
    order = {p: i for i, p in enumerate(plan.files)}
    # One thread: text files are then read front to back, so row_number() counts rows in file order.
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute("SET threads = 1")
    try:
        found = con.execute(sql).fetchall()
    finally:
        con.execute(f"SET threads = {int(threads)}")
    if not found:
        return None
    f, rn, reason = min(found, key=lambda r: (order.get(r[0], 0), r[1]))
    return {"file": f, "row": int(rn), "reason": REASONS[int(reason)]}


def _reader_rejects(con) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Lines the typed CSV reader set aside (a value not of its column's type, a short line ...), by reason."""
    try:
        rows = con.execute(
            "SELECT s.file_path, e.line, e.column_name, CAST(e.error_type AS VARCHAR) FROM kp_rej_errors e "
            "JOIN kp_rej_scans s USING (scan_id, file_id) ORDER BY s.file_path, e.line"
        ).fetchall()
    except Exception:  # no CSV scan ran: no rejects table
        return {}, None
    counts: dict[str, int] = {}
    seen = set()
    first = None
    for path, line, col, kind in rows:
        if (path, line) in seen:
            continue
        seen.add((path, line))
        reason = f"{col}: not of the column's type" if kind == "CAST" else f"{kind.lower()}"
        counts[reason] = counts.get(reason, 0) + 1
        if first is None:
            first = {"file": path, "row": int(line) - 1, "reason": reason}
    return counts, first


def _samples(con, plan: _Plan, model, table: pd.DataFrame, by, k: int) -> pd.DataFrame:
    """Up to `k` successful calls per route, chosen by a hash of the row (the same rows every run), in the
    columns the calibration fitters read (`kimiplan.calibration.fitters.fit_calibration`)."""
    if plan.mapping.aggregated:
        raise ConfigError("samples_per_route: this log's rows are daily sums, not calls; nothing to calibrate on")
    n_route = table.groupby("route")["succeeded"].sum() if "route" in by else None
    canon = _canon_sql(plan, model)
    if n_route is None:
        n_route = pd.Series(
            dict(
                con.execute(
                    f"SELECT route, count(*) FROM ({canon}) WHERE _reason IS NULL AND error_type IS NULL GROUP BY 1"
                ).fetchall()
            )
        )
    # Keep a route's row when its hash falls under a threshold sized for ~2k rows, then the k smallest hashes:
    # one pass, no sort of the whole log.
    mod = 1 << 30
    cases = " ".join(
        f"WHEN {_q(r)} THEN {min(mod, int(mod * min(1.0, 2.0 * k / max(int(n), 1))) + 1)}" for r, n in n_route.items()
    )
    # A call that follows a tool-call reply of the same conversation or run is a tool round, not a request's
    # first call: marked, so the measured input is the first calls' (NULL: the log has no ids to tell).
    # An agent run's steps (calls with a run id) are its own unit: their prompts stay as they are.
    ids = plan.fields.get("conversation_id") is not None
    follows = (
        "CASE WHEN run_id IS NULL AND conversation_id IS NOT NULL THEN coalesce(lag(finish_reason) OVER "
        "(PARTITION BY route, conversation_id, run_id IS NULL ORDER BY time) = 'tool_calls', false) END"
        if ids
        else "NULL::BOOLEAN"
    )
    sql = f"""
    SELECT * FROM (
      SELECT route, model, time, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
             finish_reason, max_completion_tokens, ttft_s, latency_s, {follows} AS follows_tool_call,
             hash(time, route, prompt_tokens, completion_tokens, cached_tokens, ttft_s, latency_s) AS _h
      FROM ({canon})
      WHERE _reason IS NULL AND error_type IS NULL
    ) WHERE (_h % {mod}) < CASE route {cases} ELSE 0 END
    QUALIFY row_number() OVER (PARTITION BY route ORDER BY _h, time) <= {int(k)}
    ORDER BY route, _h, time
    """
    df = con.execute(sql).df().drop(columns=["_h"])
    df["output_tokens"] = df["completion_tokens"] - df["reasoning_tokens"]
    df = df.rename(columns={"latency_s": "total_s"})
    df["time"] = df["time"].astype(str)
    df["status"] = "ok"
    df["provenance"] = "usage-log"
    df["first_finish_reason"] = df["finish_reason"]
    df["cached_tokens"] = df["cached_tokens"].fillna(0)
    df["local_prompt_tokens"] = float("nan")
    df["continuations"] = 0
    df["thinking"] = float("nan")
    df["id"] = [f"log:{r}:{i}" for i, r in enumerate(df["route"])]
    return df.reset_index(drop=True)


def _connect():
    """An in-memory DuckDB that prints no progress bar (a library prints nothing on its own)."""
    import duckdb

    con = duckdb.connect()
    for setting in ("enable_progress_bar", "enable_progress_bar_print"):
        try:
            con.execute(f"SET {setting} = false")
            break
        except duckdb.Error:  # in Jupyter without ipywidgets DuckDB refuses the first; the second still works
            continue
    return con
