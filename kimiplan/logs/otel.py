"""OpenTelemetry GenAI spans as a call log: OTLP JSON lines (the collector's file exporter, the SDK's JSON file
exporter), gzip or zstd, and Parquet converted from them.

The spans are read once into a temporary table of one row per span with only the attributes the mapping needs
(bounded memory: DuckDB spills beyond its memory limit). OTLP JSON lines go through the compiled scanner
(kimiplan.logs.otlp_scan: 32 MB chunks, two scanned at once, streamed into the table); input outside its subset,
and Parquet, go through DuckDB's SQL below, which gives the same rows. `summarize_log` then reads that table like
any other log. What is specific to traces lives here:

- which spans are Kimi calls: GenAI spans whose provider is Moonshot, or whose `server.address` is a Moonshot
  host, or whose model is a Kimi model (Kimi called through the OpenAI SDK is `gen_ai.provider.name=openai`);
  the others are skipped and counted by reason (not a GenAI span, an agent or tool span, another provider's
  model, a call without token usage);
- runs: a call's enclosing `invoke_agent` span (up to four levels up) is its run; the run's agent name can name
  the route;
- the two generations of attribute names, read by the shipped `otel-genai` mapping;
- whether `gen_ai.usage.input_tokens` includes cached tokens (inclusive, as the conventions ask) or not
  (exclusive, as some instrumentations count): `detect_exclusive_scopes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Attribute keys the reader always extracts (besides those the mapping names): provider, model, host,
#: operation, agent, errors and both generations of usage names.
BASE_KEYS = (
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "gen_ai.agent.name",
    "gen_ai.agent.id",
    "gen_ai.conversation.id",
    "error.type",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
)
#: Columns the reader derives (not attributes): the mapping may name them.
DERIVED = (
    "span.start_time",
    "span.duration_s",
    "span.name",
    "span.trace_id",
    "span.span_id",
    "span.scope",
    "run.id",
    "run.agent_name",
    "run.conversation_id",
)
#: Moonshot's API hosts (international and China): a span sent there is a Kimi call whatever its provider name.
MOONSHOT_HOSTS = ("api.moonshot.ai", "api.moonshot.cn", "api.kimi.com")
MOONSHOT_PROVIDERS = ("moonshot", "moonshotai", "moonshot_ai", "kimi")
_USAGE_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
)
_AGENT_OPS = ("invoke_agent", "create_agent", "execute_tool")

_VALUE = (
    'STRUCT(stringValue VARCHAR, intValue VARCHAR, doubleValue DOUBLE, boolValue BOOLEAN, arrayValue STRUCT("values" '
    "STRUCT(stringValue VARCHAR, intValue VARCHAR)[]))"
)
_ATTRS = f"STRUCT(key VARCHAR, value {_VALUE})[]"
_SPAN = (
    "STRUCT(traceId VARCHAR, spanId VARCHAR, parentSpanId VARCHAR, name VARCHAR, startTimeUnixNano VARCHAR, "
    f"endTimeUnixNano VARCHAR, attributes {_ATTRS}, status STRUCT(code VARCHAR))"
)
_RESOURCE_SPANS = (
    f"STRUCT(resource STRUCT(attributes {_ATTRS}), scopeSpans STRUCT(scope STRUCT(name VARCHAR, version VARCHAR), "
    f"spans {_SPAN}[])[])[]"
)
_REQUEST = f"STRUCT(resourceSpans {_RESOURCE_SPANS})"

_MACROS = """
CREATE OR REPLACE TEMP MACRO kp_aval(a) AS coalesce(a.value.stringValue, a.value.intValue,
    CAST(a.value.doubleValue AS VARCHAR), CAST(a.value.boolValue AS VARCHAR),
    a.value.arrayValue."values"[1].stringValue, a.value.arrayValue."values"[1].intValue);
CREATE OR REPLACE TEMP MACRO kp_attr(attrs, k) AS kp_aval(list_filter(attrs, lambda a: a.key = k)[1]);
CREATE OR REPLACE TEMP MACRO kp_nonempty(x) AS CASE WHEN len(x) > 0 THEN x ELSE [NULL] END;
"""


def _q(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


@dataclass
class OtlpRead:
    """What reading the spans found (beyond the calls): skipped spans by reason, cut files, counts."""

    lines: int = 0
    spans: int = 0
    calls: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    cut: list[tuple[str, int]] = field(default_factory=list)  # (file, line number of the cut last line)
    exclusive_scopes: dict[str, int] = field(default_factory=dict)  # scope -> spans proving exclusive counting
    inclusive_scopes: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        out = []
        for f, line in self.cut:
            out.append(f"{f}: the last line (line {line:,}) is cut mid-line (a crash?); read up to line {line - 1:,}")
        if self.skipped:  # most first, ties by reason (the GROUP BY that counted them has no fixed order)
            out.append(
                f"{sum(self.skipped.values()):,} of {self.spans:,} spans are not Kimi calls with usage, skipped: "
                + ", ".join(f"{k} ({v:,})" for k, v in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
            )
        for scope, n in sorted(self.exclusive_scopes.items()):
            out.append(
                f"instrumentation {scope!r}: input tokens exclude cached ones ({n:,} spans with cached > input "
                "prove it); prompt tokens = input + cache read + cache write"
            )
        return out


def is_otlp_columns(columns: list[str]) -> bool:
    """True for an OTLP request per line (JSON, or Parquet converted from it) or one span per Parquet row."""
    cols = set(columns)
    return "resourceSpans" in cols or (bool(cols & {"spanId", "span_id"}) and "attributes" in cols)


def _lines_sql(files: list[str]) -> str:
    lst = "[" + ", ".join(_q(f) for f in files) + "]"
    # One text line per row, numbered in file order by a streaming window (no materialization).
    return (
        f"SELECT filename, row_number() OVER () AS _rn, line FROM read_csv({lst}, columns={{'line': 'VARCHAR'}}, "
        "header=false, delim='\\x1f', quote='', escape='', auto_detect=false, filename=true)"
    )


def _spans_from_requests(src: str, req_expr: str, keys: list[str]) -> str:
    """Rows of (file, line, one span) from rows that each hold one ExportTraceServiceRequest."""
    # A resource attribute stands in for a span's missing one (service.name as a route ...); gen_ai.* ones are
    # per call, so they are looked up on the span only.
    # Each span's attribute keys are listed once; a key's value is then found by list_position, far cheaper than
    # one lambda filter over the attributes per key.
    attrs = ", ".join(
        f"kp_aval(_a[list_position(_k, {_q(k)})]) AS {_ident(k)}"
        if k.startswith("gen_ai.")
        else f"coalesce(kp_aval(_a[list_position(_k, {_q(k)})]), kp_aval(_res[list_position(_rk, {_q(k)})])) "
        f"AS {_ident(k)}"
        for k in keys
    )
    return f"""
    WITH q AS (SELECT filename, _rn, line IS NULL AS _blank, {req_expr} AS _r, _ok FROM ({src})),
    a AS (SELECT filename, _rn, _blank, _ok, unnest(kp_nonempty(_r.resourceSpans)) AS _rs FROM q),
    b AS (SELECT filename, _rn, _blank, _ok, _rs.resource.attributes AS _res,
                 unnest(kp_nonempty(_rs.scopeSpans)) AS _ss FROM a),
    c AS (SELECT filename, _rn, _blank, _ok, _res, list_transform(_res, lambda a: a.key) AS _rk,
                 _ss.scope.name AS _scope, unnest(kp_nonempty(_ss.spans)) AS s FROM b),
    d AS (SELECT *, s.attributes AS _a, list_transform(s.attributes, lambda a: a.key) AS _k FROM c)
    SELECT filename, _rn, _blank, _ok AS _json_ok, _scope, s.traceId AS _trace, s.spanId AS _span,
           nullif(s.parentSpanId, '') AS _parent, s.name AS _name,
           TRY_CAST(s.startTimeUnixNano AS BIGINT) AS _start_ns, TRY_CAST(s.endTimeUnixNano AS BIGINT) AS _end_ns,
           s.status.code AS _status, {attrs}
    FROM d"""


def _flat_parquet_sql(files: list[str], columns: dict[str, str], keys: list[str]) -> str:
    """One span per Parquet row: OTLP names (traceId ...) or snake_case; attributes as OTLP key/value structs,
    a MAP, or one column per attribute key."""
    lst = "[" + ", ".join(_q(f) for f in files) + "]"

    def col(*names: str) -> str:
        for n in names:
            if n in columns:
                return _ident(n)
        return "NULL"

    attr_t = columns.get("attributes", "").upper()

    def attr(k: str) -> str:
        if k in columns:
            return f"CAST({_ident(k)} AS VARCHAR)"
        if attr_t.startswith("MAP"):
            return f"CAST(attributes[{_q(k)}] AS VARCHAR)"
        if attr_t.startswith("STRUCT(") and attr_t.endswith("[]"):  # OTLP key/value structs
            return f"kp_attr(TRY_CAST(to_json(attributes) AS {_ATTRS}), {_q(k)})"
        return "NULL::VARCHAR"

    attrs = ", ".join(f"{attr(k)} AS {_ident(k)}" for k in keys)
    start = col("startTimeUnixNano", "start_time_unix_nano")
    end = col("endTimeUnixNano", "end_time_unix_nano")
    status = col("status_code") if "status_code" in columns else ("status.code" if "status" in columns else "NULL")
    return f"""
    SELECT filename, file_row_number + 1 AS _rn, false AS _blank, true AS _json_ok,
           CAST({col("scope_name", "scope")} AS VARCHAR) AS _scope,
           CAST({col("traceId", "trace_id")} AS VARCHAR) AS _trace,
           CAST({col("spanId", "span_id")} AS VARCHAR) AS _span,
           nullif(CAST({col("parentSpanId", "parent_span_id")} AS VARCHAR), '') AS _parent,
           CAST({col("name", "span_name")} AS VARCHAR) AS _name,
           TRY_CAST({start} AS BIGINT) AS _start_ns, TRY_CAST({end} AS BIGINT) AS _end_ns,
           CAST({status} AS VARCHAR) AS _status, {attrs}
    FROM read_parquet({lst}, filename=true, file_row_number=true, union_by_name=true)"""


def materialize(con, files: list[str], fmt: str, columns: dict[str, str], keys: list[str]) -> None:
    """Read the spans into the temp table `kp_spans` (one row per span; one per line without spans)."""
    import duckdb

    con.execute(_MACROS)
    keys = list(dict.fromkeys([*BASE_KEYS, *keys]))
    if fmt == "parquet" and "resourceSpans" in columns:
        lst = "[" + ", ".join(_q(f) for f in files) + "]"
        src = (
            f"SELECT filename, file_row_number + 1 AS _rn, resourceSpans, true AS _ok, false AS line "
            f"FROM read_parquet({lst}, filename=true, file_row_number=true, union_by_name=true)"
        )
        # The converted struct types hold only the fields the file had: through JSON to the full OTLP shape.
        req = f"TRY_CAST(to_json({{'resourceSpans': resourceSpans}}) AS {_REQUEST})"
        sql = _spans_from_requests(src, req, keys).replace("line IS NULL AS _blank", "false AS _blank")
    elif fmt == "parquet":
        sql = _flat_parquet_sql(files, columns, keys)
    else:
        if scan_files(con, files, keys):
            return
        fast = f"SELECT *, true AS _ok FROM ({_lines_sql(files)})"
        # TRY_CAST: a field the struct names but a span lacks (an empty status ...) is NULL; `line::JSON` still
        # fails on a line that is not JSON, which sends the file down the slower, checked path below.
        sql = _spans_from_requests(fast, f"TRY_CAST(line::JSON AS {_REQUEST})", keys)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE kp_spans AS {sql}")
            return
        except duckdb.Error as exc:
            if "malformed json" not in str(exc).lower():
                raise
        # A line that is not JSON (a cut last line, a torn write): validate each line, slower.
        checked = f"SELECT *, json_valid(line) AS _ok FROM ({_lines_sql(files)})"
        sql = _spans_from_requests(
            checked, f"TRY_CAST(CASE WHEN json_valid(line) THEN line END::JSON AS {_REQUEST})", keys
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE kp_spans AS {sql}")


def build_views(con, catalog_names: list[str]) -> OtlpRead:
    """Derived columns, runs, Kimi detection and skip reasons over `kp_spans`; the view `kp_otlp` holds the
    rows `summarize_log` reads (calls and bad lines), numbered per file."""
    names = "[" + ", ".join(_q(n) for n in sorted(set(catalog_names))) + "]" if catalog_names else "[]::VARCHAR[]"
    hosts = "[" + ", ".join(_q(h) for h in MOONSHOT_HOSTS) + "]"
    provs = "[" + ", ".join(_q(p) for p in MOONSHOT_PROVIDERS) + "]"
    model = 'coalesce("gen_ai.response.model", "gen_ai.request.model")'
    provider = 'lower(coalesce("gen_ai.provider.name", "gen_ai.system"))'
    usage = " OR ".join(f"{_ident(k)} IS NOT NULL" for k in _USAGE_KEYS)
    genai = (
        f'{provider} IS NOT NULL OR "gen_ai.operation.name" IS NOT NULL OR {model} IS NOT NULL OR '
        f'"gen_ai.agent.name" IS NOT NULL OR {usage}'
    )
    kimi = (
        f'list_contains({hosts}, lower("server.address")) OR list_contains({provs}, {provider}) OR '
        f"list_contains({names}, {model}) OR lower({model}) LIKE 'kimi%' OR lower({model}) LIKE 'moonshot%' "
        f"OR lower({model}) LIKE '%/kimi%' OR lower({model}) LIKE '%moonshotai%'"
    )
    failed = "coalesce(\"error.type\" IS NOT NULL OR _status IN ('2', 'STATUS_CODE_ERROR'), false)"
    skip = f"""CASE
      WHEN _blank OR NOT _json_ok THEN NULL
      WHEN _span IS NULL THEN 'request without spans'
      WHEN NOT ({genai}) THEN 'not a GenAI span'
      WHEN NOT ({usage}) AND NOT {failed} AND "gen_ai.operation.name" IN {tuple(_AGENT_OPS)}
        THEN 'no token usage: ' || "gen_ai.operation.name" || ' span'
      WHEN NOT coalesce({kimi}, false)
        THEN 'not a Kimi call (' || coalesce({provider}, 'no provider') || ', ' || coalesce({model}, 'no model') || ')'
      WHEN NOT ({usage}) AND NOT {failed} THEN 'no token usage: ' || coalesce("gen_ai.operation.name", 'GenAI')
        || ' span without usage attributes (a stream without include_usage?)'
    END"""
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW kp_spans_x AS
        SELECT *, {skip} AS _skip,
          ("gen_ai.operation.name" = 'invoke_agent' OR ("gen_ai.agent.name" IS NOT NULL AND NOT ({usage})))
            AS _is_agent
        FROM kp_spans"""
    )
    # Each file's lines are numbered from 1 (the streaming row number runs over all files in order).
    con.execute(
        """CREATE OR REPLACE TEMP TABLE kp_files AS
        SELECT filename, min(_rn) AS _first, max(_rn) FILTER (WHERE NOT _blank) AS _last
        FROM kp_spans GROUP BY filename"""
    )
    # The enclosing agent span (up to four levels up) is the call's run.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE kp_agents AS
        SELECT _trace, _span, _parent, _is_agent, "gen_ai.agent.name" AS _agent, "gen_ai.conversation.id" AS _conv
        FROM kp_spans_x WHERE _span IS NOT NULL AND (_skip IS NOT NULL OR _is_agent)"""
    )
    # A table, not a view: the summary reads it several times (totals, scopes, sessions, samples, bad rows).
    con.execute(
        """CREATE OR REPLACE TEMP TABLE kp_otlp AS
        SELECT c.*, c._rn - f._first + 1 AS _line,
          make_timestamp(c._start_ns // 1000)::TIMESTAMPTZ AS "span.start_time",
          CASE WHEN c._end_ns >= c._start_ns THEN (c._end_ns - c._start_ns) / 1e9 END AS "span.duration_s",
          c._name AS "span.name", c._trace AS "span.trace_id", c._span AS "span.span_id", c._scope AS "span.scope",
          CASE WHEN p1._is_agent THEN p1._span WHEN p2._is_agent THEN p2._span WHEN p3._is_agent THEN p3._span
               WHEN p4._is_agent THEN p4._span END AS "run.id",
          CASE WHEN p1._is_agent THEN p1._agent WHEN p2._is_agent THEN p2._agent WHEN p3._is_agent THEN p3._agent
               WHEN p4._is_agent THEN p4._agent END AS "run.agent_name",
          coalesce(c."gen_ai.conversation.id", p1._conv, p2._conv, p3._conv, p4._conv) AS "run.conversation_id"
        FROM (SELECT * FROM kp_spans_x WHERE _skip IS NULL AND NOT _blank) c
        JOIN kp_files f USING (filename)
        LEFT JOIN kp_agents p1 ON p1._trace = c._trace AND p1._span = c._parent
        LEFT JOIN kp_agents p2 ON p2._trace = p1._trace AND p2._span = p1._parent
        LEFT JOIN kp_agents p3 ON p3._trace = p2._trace AND p3._span = p2._parent
        LEFT JOIN kp_agents p4 ON p4._trace = p3._trace AND p4._span = p3._parent
        WHERE NOT (NOT c._json_ok AND c._rn = f._last)"""
    )
    read = OtlpRead()
    read.lines, read.spans = con.execute(
        "SELECT count(DISTINCT (filename, _rn)) FILTER (WHERE NOT _blank), count(_span) FROM kp_spans"
    ).fetchone()
    read.skipped = {
        k: int(v)
        for k, v in con.execute(
            "SELECT _skip, count(*) FROM kp_spans_x WHERE _skip IS NOT NULL AND _skip <> 'request without spans' "
            "GROUP BY 1"
        ).fetchall()
    }
    read.cut = [
        (f, int(n))
        for f, n in con.execute(
            "SELECT s.filename, s._rn - f._first + 1 FROM kp_spans s JOIN kp_files f USING (filename) "
            "WHERE s._rn = f._last AND NOT s._blank AND NOT s._json_ok ORDER BY 1"
        ).fetchall()
    ]
    return read


def detect_exclusive_scopes(con, prompt_expr: str, cached_expr: str) -> tuple[dict[str, int], list[str]]:
    """Instrumentation scopes whose input tokens exclude cached ones: a span with cached > input proves it
    (inclusive counting can never show that). Scopes without such a span count as inclusive."""
    rows = con.execute(
        f"""SELECT coalesce(_scope, ''), count(*) FILTER (WHERE ({cached_expr}) > ({prompt_expr}))
        FROM kp_otlp WHERE _json_ok GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    exclusive = {s: int(n) for s, n in rows if n}
    inclusive = [s for s, n in rows if not n]
    return exclusive, inclusive


# --- the compiled scanner (kimiplan.logs.otlp_scan): the same rows as the SQL above, several times faster ------
#: bytes of a file scanned at once (whole lines; a longer line is read whole): bounds the reader's memory
CHUNK_BYTES = 8 << 20


def _open_binary(path: str):
    low = path.lower()
    if low.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if low.endswith(".zst"):
        import io

        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _chunks(path: str, size: int):
    """(buffer, length): whole lines of the file, about `size` bytes at a time (the last one may lack its newline).
    Each chunk is read into a buffer of its own: two are scanned while the next is read."""
    with _open_binary(path) as fh:
        carry = b""
        while True:
            buf = bytearray(size + len(carry))
            buf[: len(carry)] = carry
            got = fh.readinto(memoryview(buf)[len(carry) :])
            total = len(carry) + got
            if got == 0:
                if carry:
                    yield buf, total
                return
            cut = buf.rfind(b"\n", 0, total)
            if cut < 0:  # a line longer than the chunk: read on
                carry = bytes(buf[:total])
                continue
            carry = bytes(buf[cut + 1 : total])
            yield buf, cut + 1


class _Keys:
    """The wanted attribute keys as the scanner looks them up: sorted by length, bucketed by it."""

    def __init__(self, keys: list[str]):
        import numpy as np

        enc = [k.encode("utf-8") for k in keys]
        order = sorted(range(len(keys)), key=lambda j: len(enc[j]))
        self.n = len(keys)
        self.order = np.array(order, dtype=np.int64)
        self.keys = np.frombuffer(b"".join(enc[j] for j in order) or b"\0", dtype=np.uint8).copy()
        self.off = np.array([0, *np.cumsum([len(enc[j]) for j in order])], dtype=np.int64)
        lens = [min(len(enc[j]), 255) for j in order]
        self.by_len = np.array([sum(x < b for x in lens) for b in range(257)], dtype=np.int64)


def _scan_chunk(buf, length: int, k: _Keys):
    """Run the scanner over one chunk, growing its output arrays until they fit; None to fall back."""
    import numpy as np

    import kimiplan.logs.otlp_scan as sc

    a = np.frombuffer(buf, dtype=np.uint8, count=length)
    cap = max(1024, length // 800)
    while True:
        rows = np.empty((cap, 4), dtype=np.int32)
        # column-major (one block per column): the gather after the scan reads each column in order
        fix = np.empty((sc.NF, cap, 3), dtype=np.int32)
        kv = np.empty((k.n, cap, 3), dtype=np.int32)
        res = np.empty((k.n, cap // 2 + 16, 3), dtype=np.int32)
        state = np.zeros(4, dtype=np.int64)
        invalid = np.zeros(16, dtype=np.int64)
        rc = sc.scan(a, k.keys, k.off, k.order, k.by_len, rows, fix, kv, res, state, invalid)
        if rc == sc.FULL:
            cap *= 4
            continue
        if rc != sc.OK:
            return None
        n = int(state[0])
        return a, rows[:n], fix[:, :n], kv[:, :n], res[:, : int(state[1])], int(state[2]), invalid[: int(state[3])]


class _Fallback(Exception):
    pass


#: at most this many attribute keys (one bit each in a row's mask of values that are JSON numbers)
MAX_KEYS = 63
_FIXED = ("_scope", "_trace", "_span", "_parent", "_name", "_start", "_end", "_status")


def _schema(nkeys: int):
    import pyarrow as pa

    fields = [("_file", pa.large_string()), ("_rn", pa.int64()), ("_blank", pa.bool_()), ("_ok", pa.bool_())]
    fields += [(c, pa.large_string()) for c in _FIXED] + [(f"k{j}", pa.large_string()) for j in range(nkeys)]
    return pa.schema([*fields, ("_dmask", pa.int64())])


def _chunk_batch(scanned, file: str, rn0: int, from_resource, schema):
    """The Arrow record batch of one scanned chunk (strings point into one buffer gathered from the chunk)."""
    import json

    import numpy as np
    import pyarrow as pa

    import kimiplan.logs.otlp_scan as sc

    a, rows, fix, kv, res, _, _ = scanned
    offsets, valid, kinds, data = sc.gather(a, rows, fix, kv, res, from_resource)
    n = len(rows)
    data_buf = pa.py_buffer(data)
    fb = file.encode("utf-8")
    arrays = [
        pa.Array.from_buffers(
            pa.large_string(), n, [None, pa.py_buffer(np.arange(n + 1, dtype=np.int64) * len(fb)), pa.py_buffer(fb * n)]
        ),
        pa.array(rows[:, 0].astype(np.int64) + (rn0 + 1)),
        pa.array(rows[:, 3] == 1),
        pa.array(rows[:, 1] == 1),
    ]
    for c in range(len(valid)):
        v = valid[c]
        arr = pa.Array.from_buffers(
            pa.large_string(),
            n,
            [pa.py_buffer(np.packbits(v, bitorder="little")), pa.py_buffer(offsets[c]), data_buf],
            null_count=n - int(np.count_nonzero(v)),
        )
        esc = np.flatnonzero(kinds[c] == sc.K_ESCAPED)
        if len(esc):  # escaped strings (rare): decoded one by one
            values = arr.to_pylist()
            for i in esc:
                values[i] = json.loads('"' + values[i] + '"')
                values[i].encode("utf-8")  # a lone surrogate raises: the caller falls back
            arr = pa.array(values, type=pa.large_string())
        arrays.append(arr)
    doubles = kinds[sc.NF :] == sc.K_DOUBLE
    if doubles.any():  # which values DuckDB must write as doubles, as the SQL path's CAST does
        bits = np.left_shift(np.int64(1), np.arange(doubles.shape[0], dtype=np.int64))
        arrays.append(pa.array((doubles.astype(np.int64) * bits[:, None]).sum(axis=0)))
    else:
        arrays.append(pa.nulls(n, pa.int64()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def scan_files(con, files: list[str], keys: list[str]) -> bool:
    """Read OTLP JSON lines into kp_spans with the compiled scanner; False (and no table) when a file needs the
    SQL path (kimiplan.logs.otlp_scan says which input does)."""
    import pyarrow as pa

    if len(keys) > MAX_KEYS:
        return False
    reader = _Scanned(files, keys)
    stream = pa.RecordBatchReader.from_batches(reader.schema, reader.batches())
    vals = ", ".join(
        f"CASE WHEN (_dmask >> {j}) & 1 = 1 THEN CAST(CAST(k{j} AS DOUBLE) AS VARCHAR) ELSE k{j} END AS {_ident(k)}"
        for j, k in enumerate(keys)
    )
    con.register("kp_stream", stream)
    try:
        # One streaming CREATE TABLE AS (several times cheaper than an INSERT per chunk).
        con.execute(
            "CREATE OR REPLACE TEMP TABLE kp_spans AS SELECT _file AS filename, _rn, _blank, _ok AS _json_ok, "
            "_scope, _trace, _span, nullif(_parent, '') AS _parent, _name, TRY_CAST(_start AS BIGINT) AS _start_ns, "
            f"TRY_CAST(_end AS BIGINT) AS _end_ns, _status{', ' if vals else ''}{vals} FROM kp_stream"
        )
        reader.check_cut(con)
    except Exception:
        con.execute("DROP TABLE IF EXISTS kp_spans")
        if reader.fallback:
            return False
        raise
    finally:
        con.unregister("kp_stream")
    return True


class _Scanned:
    """The files' chunks, scanned two at a time, as record batches in file order; the checks that send a file
    back to the SQL path (`fallback`)."""

    def __init__(self, files: list[str], keys: list[str]):
        import numpy as np

        self.files, self.keys = files, keys
        self.wanted = _Keys(keys)
        self.from_resource = np.array([not k.startswith("gen_ai.") for k in keys], dtype=np.bool_)
        self.schema = _schema(len(keys))
        self.fallback = False
        self.cut = []  # (file, its last non-blank line, the lines that did not parse)

    def batches(self):
        import concurrent.futures as cf

        try:
            with cf.ThreadPoolExecutor(2) as pool:  # the scanner releases the GIL: two chunks at once
                rn = 0  # lines before this chunk, over all files (the SQL path's row_number)
                for f in self.files:
                    pending, last_line, bad, chunks = [], None, [], 0
                    for buf, length in _chunks(f, CHUNK_BYTES):
                        if buf.find(b"\r", 0, length) >= 0:
                            raise _Fallback  # CR line ends: the SQL path's CSV reader decides what they are
                        pending.append((buf, length, pool.submit(_scan_chunk, buf, length, self.wanted)))
                        while len(pending) > 2:  # at most two chunks in flight: bounded memory
                            rn, last_line = yield from self._emit(f, pending.pop(0), rn, last_line, bad)
                            chunks += 1
                    while pending:
                        rn, last_line = yield from self._emit(f, pending.pop(0), rn, last_line, bad)
                        chunks += 1
                    if not chunks:
                        raise _Fallback  # an empty file: as the SQL path reads it
                    self.cut.append((f, last_line, bad))
        except (_Fallback, UnicodeDecodeError):
            self.fallback = True
            raise

    def _emit(self, f, item, rn, last_line, bad):
        buf, length, fut = item
        got = fut.result()
        if got is None:
            raise _Fallback
        rows, lines, invalid = got[1], got[5], got[6]
        nonblank = rows[rows[:, 3] == 0, 0]
        if len(nonblank):
            last_line = rn + int(nonblank[-1]) + 1
        if len(invalid):
            pieces = bytes(memoryview(buf)[:length]).split(b"\n")
            bad += [(rn + int(i) + 1, pieces[int(i)]) for i in invalid]
            if len(bad) > 1:
                raise _Fallback  # a line that is not JSON before the last one: the SQL path counts it
        yield _chunk_batch(got, f, rn, self.from_resource, self.schema)
        return rn + lines, last_line

    def check_cut(self, con) -> None:
        """Only the last line of a file may fail to parse (a cut file), and DuckDB must agree it is not JSON."""
        for _, last_line, bad in self.cut:
            for line_rn, line in bad:
                try:
                    valid = con.execute("SELECT json_valid(?)", [line.decode("utf-8")]).fetchall()[0][0]
                except UnicodeDecodeError:
                    valid = True
                if line_rn != last_line or valid:
                    self.fallback = True
                    raise _Fallback
