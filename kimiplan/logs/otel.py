"""OpenTelemetry GenAI spans as a call log: OTLP JSON lines (the collector's file exporter, the SDK's JSON file
exporter), gzip or zstd, and Parquet converted from them.

The spans are read once, by DuckDB, into a temporary table of one row per span with only the attributes the
mapping needs (bounded memory: DuckDB spills beyond its memory limit). `summarize_log` then reads that table
like any other log. What is specific to traces lives here:

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
        if self.skipped:
            out.append(
                f"{sum(self.skipped.values()):,} of {self.spans:,} spans are not Kimi calls with usage, skipped: "
                + ", ".join(f"{k} ({v:,})" for k, v in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
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
