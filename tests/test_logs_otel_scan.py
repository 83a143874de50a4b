"""The compiled OTLP JSON scanner (kimiplan.logs.otlp_scan) against a plain reading of the same files with
json.loads, and against DuckDB's SQL path: the same rows, the same summaries, on files with every edge case the
OTel tests cover (both attribute generations, exclusive and inclusive cached counting, bad rows, a cut last line,
gzip and zstd) and on input outside the scanner's subset, which must fall back to the SQL path."""

import gzip
import json
import math

import duckdb
import pytest

import kimiplan.logs.otel as otel
from kimiplan.logs import summarize_log
from kimiplan.logs.mapping import load_mapping

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.json.file")
zstandard = pytest.importorskip("zstandard")

from otel_spans import make_calls, write_otlp  # noqa: E402

KEYS = list(
    dict.fromkeys([*otel.BASE_KEYS, *(c for c in load_mapping("otel-genai").source_columns() if c not in otel.DERIVED)])
)


# --- the reference: json.loads, line by line ------------------------------------------------------------------
def _aval(v):
    """kp_aval: the first of stringValue, intValue, doubleValue, boolValue, the array's first string or int."""
    if not isinstance(v, dict):
        return None
    for k in ("stringValue", "intValue"):
        if v.get(k) is not None:
            return str(v[k])
    if v.get("doubleValue") is not None:
        return repr(float(v["doubleValue"]))  # the test's doubles print the same in Python and DuckDB
    if v.get("boolValue") is not None:
        return "true" if v["boolValue"] else "false"
    first = ((v.get("arrayValue") or {}).get("values") or [None])[0] or {}
    for k in ("stringValue", "intValue"):
        if first.get(k) is not None:
            return str(first[k])
    return None


def _first(attrs, key):
    for a in attrs or []:
        if a and a.get("key") == key:
            return _aval(a.get("value"))
    return None


def _int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def reference_rows(path, raw: bytes):
    """One row per span (one per line, resource or scope without spans), as kp_spans holds them."""
    lines = raw.split(b"\n")
    if raw.endswith(b"\n"):
        lines = lines[:-1]
    out = []
    for rn, line in enumerate(lines, 1):
        if not line:
            out.append((str(path), rn, True, None) + (None,) * (8 + len(KEYS)))
            continue
        try:
            req = json.loads(line)
        except ValueError:
            out.append((str(path), rn, False, False) + (None,) * (8 + len(KEYS)))
            continue
        for rs in req.get("resourceSpans") or [None]:
            rs = rs or {}
            res = (rs.get("resource") or {}).get("attributes")
            for ss in rs.get("scopeSpans") or [None]:
                ss = ss or {}
                scope = (ss.get("scope") or {}).get("name")
                for s in ss.get("spans") or [None]:
                    s = s or {}
                    vals = []
                    for k in KEYS:
                        v = _first(s.get("attributes"), k)
                        if v is None and not k.startswith("gen_ai."):
                            v = _first(res, k)
                        vals.append(v)
                    code = (s.get("status") or {}).get("code")
                    out.append(
                        (str(path), rn, False, True, scope, s.get("traceId"), s.get("spanId"),
                         s.get("parentSpanId") or None, s.get("name"), _int(s.get("startTimeUnixNano")),
                         _int(s.get("endTimeUnixNano")), None if code is None else str(code), *vals)
                    )  # fmt: skip
    return out


def _spans(path):
    """kp_spans as the scanner reads it (it must not fall back on these files)."""
    con = duckdb.connect()
    assert otel.scan_files(con, [str(path)], KEYS), f"{path.name}: the scanner fell back"
    rows = con.execute("SELECT * FROM kp_spans ORDER BY _rn, _span NULLS FIRST").fetchall()
    con.close()
    # the SQL path's checked read leaves _json_ok NULL on blank lines: not compared
    return [(r[0], r[1], r[2], None if r[2] else r[3], *r[4:]) for r in rows]


def _sql_spans(path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(otel, "scan_files", lambda *a: False)
        con = duckdb.connect()
        otel.materialize(con, [str(path)], "json", {}, KEYS)
        rows = con.execute("SELECT * FROM kp_spans ORDER BY _rn, _span NULLS FIRST").fetchall()
        con.close()
    # the SQL path's checked read leaves _json_ok NULL on blank lines: not compared
    return [(r[0], r[1], r[2], None if r[2] else r[3], *r[4:]) for r in rows]


def _canon(rows):
    return sorted(rows, key=repr)  # rows without a span (one per empty resource or scope) in any order


def _summary(path, monkeypatch, scanner: bool, **kw):
    with monkeypatch.context() as m:
        if not scanner:
            m.setattr(otel, "scan_files", lambda *a: False)
        try:
            s = summarize_log(path, **kw)
        except Exception as exc:  # the same error either way
            return repr(exc)

    def records(df):  # NaN (no value) compares equal to NaN here
        return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in df]

    return (
        records(s.table.to_dict("records")),
        s.cost,
        s.rows,
        s.requests,
        s.rejected,
        s.first_rejected,
        s.skipped,
        s.notes,
        None if s.sessions is None else records(s.sessions.to_dict("records")),
    )


# --- the files ------------------------------------------------------------------------------------------------
CALLS = make_calls(seed=11, conversations=12, runs=8)


def _edited(path):
    """A negative count, an unknown model, a span without usage, then a last line cut mid-way."""
    lines = path.read_text().splitlines()

    def edit(i, fn):
        req = json.loads(lines[i])
        spans = req["resourceSpans"][0]["scopeSpans"][0]["spans"]
        span = next(
            s for s in spans if any(a["key"].endswith(("output_tokens", "completion_tokens")) for a in s["attributes"])
        )
        fn({a["key"]: a for a in span["attributes"]}, span)
        lines[i] = json.dumps(req, separators=(",", ":"))

    def negative(a, s):
        k = "gen_ai.usage.output_tokens" if "gen_ai.usage.output_tokens" in a else "gen_ai.usage.completion_tokens"
        a[k]["value"] = {"intValue": "-5"}

    def unknown(a, s):
        for k in ("gen_ai.request.model", "gen_ai.response.model"):
            if k in a:
                a[k]["value"] = {"stringValue": "kimi-k9-preview"}

    def no_usage(a, s):
        s["attributes"] = [x for x in s["attributes"] if "usage" not in x["key"]]

    edit(1, negative)
    edit(2, unknown)
    edit(3, no_usage)
    text = "\n".join(lines) + "\n"
    path.write_text(text[: len(text) - len(lines[-1]) // 2 - 1])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    out = {}
    for gen in ("current", "cache_creation", "prompt_completion"):
        p = write_otlp(d / f"{gen}.jsonl", CALLS, generation=gen, exclusive_routes=("coder",), batch=16)
        out[gen] = p
        out[f"{gen}-bad"] = _edited(write_otlp(d / f"{gen}-bad.jsonl", CALLS, generation=gen, batch=16))
    inclusive = write_otlp(d / "inclusive.jsonl", CALLS, batch=16)
    out["inclusive"] = inclusive
    raw = out["current-bad"].read_bytes()
    (d / "cut.jsonl.gz").write_bytes(gzip.compress(raw))
    (d / "cut.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    out["gz"], out["zst"] = d / "cut.jsonl.gz", d / "cut.jsonl.zst"
    return out


def _raw(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(data).read()
    return data


NAMES = [
    "current",
    "cache_creation",
    "prompt_completion",
    "current-bad",
    "cache_creation-bad",
    "prompt_completion-bad",
    "inclusive",
    "gz",
    "zst",
]


@pytest.mark.parametrize("name", NAMES)
def test_scanner_rows_equal_json_loads_and_sql(files, name, monkeypatch):
    path = files[name]
    ref = reference_rows(path, _raw(path))
    got = _spans(path)
    assert len(got) == len(ref) > 50
    assert _canon(got) == _canon(ref)
    assert _canon(_sql_spans(path, monkeypatch)) == _canon(ref)


@pytest.mark.parametrize("name", NAMES)
def test_scanner_summary_equals_sql_path(files, name, monkeypatch):
    path = files[name]
    fast = _summary(path, monkeypatch, True, by=["route", "day"], samples_per_route=0)
    slow = _summary(path, monkeypatch, False, by=["route", "day"], samples_per_route=0)
    assert fast == slow
    if name.endswith("-bad") or name in ("gz", "zst"):
        rejected, first, notes = fast[4], fast[5], fast[7]
        assert sum(rejected.values()) == 2 and first["file"] == str(path) and first["row"] == 2
        assert any("cut mid-line" in n for n in notes)
    if name != "inclusive" and not name.endswith("-bad") and name not in ("gz", "zst"):
        assert any("exclude cached ones" in n for n in fast[7])


def _hostile(tmp_path):
    """Input at and past the edges of the scanner's subset, line by line."""
    base = json.loads(write_otlp(tmp_path / "base.jsonl", CALLS[:6], noise=False, batch=3).read_text().splitlines()[0])
    lines = []

    def variant(fn, ascii=False):
        req = json.loads(json.dumps(base))
        fn(req)
        lines.append(json.dumps(req, ensure_ascii=ascii))

    spans = lambda r: r["resourceSpans"][0]["scopeSpans"][0]["spans"]  # noqa: E731

    def escaped_route(r):
        spans(r)[0]["attributes"].append({"key": "app.route", "value": {"stringValue": 'caf\u00e9 "q" \\ /'}})

    def typed_values(r):
        a = spans(r)[1]["attributes"]
        a.insert(0, {"key": "gen_ai.response.time_to_first_chunk", "value": {"doubleValue": 0.25}})
        a.insert(0, {"key": "kimiplan.route", "value": {"boolValue": True}})
        a.insert(0, {"key": "gen_ai.request.max_tokens", "value": {"intValue": 900}})  # an int as a number

    def duplicate_and_null_keys(r):
        a = spans(r)[2]["attributes"]
        a.insert(0, {"key": "gen_ai.usage.output_tokens", "value": None})  # the first one counts: NULL
        a.append({"key": None, "value": {"stringValue": "x"}})

    def resource_route_and_empty_scope(r):
        r["resourceSpans"][0]["resource"]["attributes"].append({"key": "route", "value": {"stringValue": "res"}})
        r["resourceSpans"].append({"resource": {}, "scopeSpans": []})
        r["resourceSpans"][0]["scopeSpans"].append({"scope": {"name": "empty"}, "spans": []})

    def reordered(r):
        rs = r["resourceSpans"][0]
        r["resourceSpans"][0] = {"scopeSpans": rs["scopeSpans"], "resource": rs["resource"]}
        s = spans(r)[0]
        spans(r)[0] = dict(reversed(list(s.items())))
        spans(r)[0]["status"] = {"code": 2, "message": "boom"}

    for fn in (escaped_route, typed_values, duplicate_and_null_keys, resource_route_and_empty_scope, reordered):
        variant(fn)
    variant(escaped_route, ascii=True)  # the é as a \\u escape
    lines.insert(2, "")  # a blank line
    lines.append('{"resourceSpans": []}')
    lines.append("{}")
    return lines


def test_scanner_edges_equal_json_loads_and_sql(tmp_path, monkeypatch):
    lines = _hostile(tmp_path)
    path = tmp_path / "edges.jsonl"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    ref = _canon(reference_rows(path, path.read_bytes()))
    assert _canon(_spans(path)) == ref
    assert _canon(_sql_spans(path, monkeypatch)) == ref
    assert _summary(path, monkeypatch, True) == _summary(path, monkeypatch, False)


@pytest.mark.parametrize(
    "line",
    [
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": 5}]}]}]}',  # another type: a number for an id
        '{"resourceSpans": [], "resourceSpans": []}',  # a duplicate field
        '{"resource\\u0053pans": []}',  # an escaped key
        "[1, 2]",  # JSON, not an object
        "not json",  # a bad line before the last one
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1.5e400}]}]}]}',  # a number to round
    ],
)
def test_input_outside_the_subset_falls_back_to_sql(tmp_path, monkeypatch, line):
    lines = _hostile(tmp_path)
    lines.insert(1, line)
    path = tmp_path / "fallback.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    con = duckdb.connect()
    assert not otel.scan_files(con, [str(path)], KEYS)
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'kp_spans'").fetchone()[0]
    assert _summary(path, monkeypatch, True) == _summary(path, monkeypatch, False)


@pytest.mark.parametrize("name", ["current-bad", "zst"])
def test_small_chunks_split_lines_the_same(files, name, monkeypatch):
    """Chunks smaller than a line (read on to the line's end) and many chunks per file: the same rows."""
    monkeypatch.setattr(otel, "CHUNK_BYTES", 3000)
    path = files[name]
    assert _canon(_spans(path)) == _canon(reference_rows(path, _raw(path)))
