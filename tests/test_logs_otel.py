"""OpenTelemetry GenAI spans as a call log: spans written by the real OpenTelemetry SDK (its OTLP JSON file
exporter) calibrate and summarize exactly like the same calls in kimiplan's own log format."""

import datetime as dt
import gzip
import json
import shutil
import subprocess
from decimal import Decimal

import duckdb
import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.cli import main
from kimiplan.errors import ConfigError
from kimiplan.finance.cost import Usage, cost_of_records
from kimiplan.logs import summarize_log

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.json.file")

from otel_spans import GENERATIONS, make_calls, write_kimiplan_log, write_otlp  # noqa: E402

CALLS = make_calls(seed=7)


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("otel")
    # The agent route comes from an instrumentation that counts input without cached tokens: detected.
    return {
        "otlp": write_otlp(d / "traces.jsonl", CALLS, exclusive_routes=("coder",)),
        "csv": write_kimiplan_log(d / "calls.csv", CALLS),
        "dir": d,
    }


def _calibration(path, out, capsys, *extra):
    assert main(["logs", "calibrate", str(path), "-o", str(out), *extra]) == 0
    text = capsys.readouterr().out
    cal = json.loads(out.read_text())
    for k in ("created", "notes"):
        cal.pop(k)
    return cal, text


def test_the_file_is_the_sdks_otlp_json(traces):
    lines = traces["otlp"].read_text().splitlines()
    assert len(lines) > 3  # several export requests, one per line
    req = json.loads(lines[0])
    span = req["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attr = {a["key"]: a["value"] for a in span["attributes"]}
    assert isinstance(attr["gen_ai.usage.input_tokens"]["intValue"], str)  # OTLP JSON: int64 as a string
    assert len(span["traceId"]) == 32 and span["startTimeUnixNano"].isdigit()


def test_calibrate_from_sdk_spans_equals_kimiplan_log(traces, capsys, tmp_path):
    a, text = _calibration(traces["otlp"], tmp_path / "a.json", capsys)
    b, _ = _calibration(traces["csv"], tmp_path / "b.json", capsys)
    assert a == b
    assert set(a["routes"]) == {"answer", "coder"}
    n_coder = sum(c.route == "coder" for c in CALLS)
    assert a["routes"]["coder"]["n"] == n_coder and a["n_samples"] == len(CALLS)
    # Steps per run and history growth, from the parent spans and conversation ids, against the calls themselves.
    runs = {}
    for c in CALLS:
        if c.run:
            runs[c.run] = runs.get(c.run, 0) + 1
    assert a["routes"]["coder"]["steps_per_run"]["value"] == pytest.approx(sum(runs.values()) / len(runs))
    assert a["routes"]["coder"]["steps_per_run"]["n"] == len(runs)
    convs = {}
    for c in CALLS:
        if c.conversation:
            convs.setdefault(c.conversation, []).append(c.prompt)
    growth = [(p[-1] - p[0]) / (len(p) - 1) for p in convs.values() if len(p) > 1]
    h = a["routes"]["answer"]["history_growth_tokens"]
    assert h["value"] == pytest.approx(sum(growth) / len(growth)) and h["n"] == len(growth)
    assert 340 < h["value"] < 400  # the fixture adds 350 tokens (+ noise) per turn
    assert "exclude cached ones" in text and "cache_exclusive" in text


def test_summary_matches_kimiplan_log_and_an_independent_cost(traces):
    s = summarize_log(traces["otlp"], by=["route"])
    k = summarize_log(traces["csv"], by=["route"])
    assert s.mapping == "otel-genai" and s.cost == k.cost and s.requests == k.requests == len(CALLS)
    cols = ["route", "requests", "cache_hit_tokens", "cache_miss_tokens", "output_tokens", "reasoning_tokens"]
    assert s.table[cols].to_dict("records") == k.table[cols].to_dict("records")
    # Cached tokens are billed once, at the cache-hit price: the finance layer's exact cost of the same usage.
    card = load_catalog().price("kimi-k2.6", on=dt.date(2026, 12, 1))
    usages = [Usage(c.prompt, c.completion, cached_tokens=c.cached) for c in CALLS]  # reasoning is output
    assert s.cost == cost_of_records(usages, card).total
    # The spans that are not Kimi calls are counted by reason, not dropped silently.
    assert s.skipped["not a GenAI span"] == 1
    assert s.skipped["not a Kimi call (openai, gpt-4o)"] == 1
    assert s.skipped["no token usage: invoke_agent span"] == len({c.run for c in CALLS if c.run})
    assert s.skipped["no token usage: execute_tool span"] >= 1
    assert s.rejected == {}


def test_older_attribute_generations(traces, tmp_path):
    ref = summarize_log(traces["otlp"], by=["route"])
    for generation in ("cache_creation", "prompt_completion"):
        assert GENERATIONS[generation]["provider"] == "gen_ai.system"
        path = write_otlp(tmp_path / f"{generation}.jsonl", CALLS, generation=generation, exclusive_routes=("coder",))
        old = summarize_log(path, by=["route"])
        assert old.cost == ref.cost and old.requests == ref.requests == len(CALLS), generation
        # These generations have no reasoning attribute: reasoning is counted as output (same price).
        for t in (old.table, ref.table):
            t["all_output"] = t["output_tokens"] + t["reasoning_tokens"]
        cols = ["route", "cache_hit_tokens", "cache_miss_tokens", "all_output"]
        assert old.table[cols].to_dict("records") == ref.table[cols].to_dict("records"), generation


def test_gzip_zstd_and_parquet(traces, tmp_path):
    src = traces["otlp"]
    ref = summarize_log(src, by=["route"])
    gz = tmp_path / "traces.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    con = duckdb.connect()
    zst = tmp_path / "traces.jsonl.zst"
    con.execute(
        f"COPY (SELECT line FROM read_csv('{src}', columns={{'line': 'VARCHAR'}}, header=false, delim='\\x1f', "
        f"quote='', escape='', auto_detect=false)) TO '{zst}' (FORMAT csv, HEADER false, DELIMITER '\\x1f', "
        "QUOTE '', ESCAPE '', COMPRESSION zstd)"
    )
    # Parquet as a user converts it: the requests as they are, or one span per row.
    nested = tmp_path / "requests.parquet"
    con.execute(f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited')) TO '{nested}' (FORMAT parquet)")
    flat = tmp_path / "spans.parquet"
    con.execute(
        f"""COPY (SELECT ss.scope.name AS scope_name, s.traceId AS trace_id, s.spanId AS span_id,
              s.parentSpanId AS parent_span_id, s.name, s.startTimeUnixNano AS start_time_unix_nano,
              s.endTimeUnixNano AS end_time_unix_nano, s.attributes
            FROM (SELECT unnest(rs.scopeSpans) AS ss FROM
                   (SELECT unnest(resourceSpans) AS rs FROM read_json('{src}', format='newline_delimited'))),
                 LATERAL (SELECT unnest(ss.spans) AS s)) TO '{flat}' (FORMAT parquet)"""
    )
    for path in (gz, zst, nested, flat):
        s = summarize_log(path, by=["route"])
        assert s.cost == ref.cost and s.requests == ref.requests, path.name
        assert s.table["cache_hit_tokens"].tolist() == ref.table["cache_hit_tokens"].tolist(), path.name
    assert zst.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # really zstd
    if shutil.which("zstd"):  # the command-line tool reads it back to the same bytes
        back = subprocess.run(["zstd", "-dc", str(zst)], capture_output=True, check=True).stdout
        assert back == src.read_bytes()


def test_bad_spans_are_counted_by_reason_with_file_and_line(tmp_path):
    calls = make_calls(seed=3, conversations=5, runs=0)
    path = write_otlp(tmp_path / "bad.jsonl", calls, noise=False, batch=4)
    lines = path.read_text().splitlines()
    assert len(lines) >= 4

    def edit(i, fn):
        req = json.loads(lines[i])
        span = req["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        attrs = {a["key"]: a for a in span["attributes"]}
        fn(attrs)
        lines[i] = json.dumps(req, separators=(",", ":"))

    def negative(a):
        a["gen_ai.usage.output_tokens"]["value"] = {"intValue": "-5"}

    def unknown_model(a):
        a["gen_ai.response.model"]["value"] = {"stringValue": "kimi-k9-preview"}
        a["gen_ai.request.model"]["value"] = {"stringValue": "kimi-k9-preview"}

    edit(1, negative)
    edit(2, unknown_model)
    # A file cut mid-line (a crashed collector): read up to the last whole line, and say so.
    text = "\n".join(lines) + "\n"
    cut = text[: len(text) - len(lines[-1]) // 2 - 1]
    path.write_text(cut)
    s = summarize_log(path, by=["route"])
    assert s.rejected == {
        "completion_tokens: missing, negative or not a whole number": 1,
        "model: missing or not in the catalog (provider and region)": 1,
    }
    assert s.first_rejected == {
        "file": str(path),
        "row": 2,
        "reason": "completion_tokens: missing, negative or not a whole number",
    }
    assert any(f"the last line (line {len(lines)})" in n and "cut mid-line" in n for n in s.notes)
    whole = sum(len(json.loads(x)["resourceSpans"][0]["scopeSpans"][0]["spans"]) for x in lines[:-1])
    assert s.rows == whole and s.requests == whole - 2
    with pytest.raises(ConfigError, match=r"bad\.jsonl row 2: completion_tokens"):
        summarize_log(path, on_bad_rows="raise")
    # A span without token usage is skipped and counted, not dropped silently.
    lines2 = lines[:-1]
    req = json.loads(lines2[0])
    span = req["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] = [a for a in span["attributes"] if "usage" not in a["key"]]
    lines2[0] = json.dumps(req)
    path.write_text("\n".join(lines2) + "\n")
    s2 = summarize_log(path)
    assert s2.skipped == {"no token usage: chat span without usage attributes (a stream without include_usage?)": 1}
    assert s2.notes and not any("cut mid-line" in n for n in s2.notes)


def test_input_counting_detected_or_said_by_the_mapping(tmp_path):
    calls = [c for c in CALLS if c.route == "coder"]
    excl = write_otlp(tmp_path / "excl.jsonl", calls, exclusive_routes=("coder",), noise=False)
    ref = summarize_log(write_kimiplan_log(tmp_path / "c.csv", calls))
    auto = summarize_log(excl)
    assert auto.cost == ref.cost and any("exclude cached ones" in n for n in auto.notes)
    from kimiplan.logs.mapping import load_mapping

    base = load_mapping("otel-genai").model_dump(mode="json")
    base["columns"] = {k: [s["column"] for s in v] for k, v in base["columns"].items()}
    said = summarize_log(excl, {**base, "input_counting": "exclusive"})
    assert said.cost == ref.cost
    # Told "inclusive", the spans whose cached tokens exceed their input are bad rows (never billed twice).
    wrong = summarize_log(excl, {**base, "input_counting": "inclusive"})
    n_bad = sum(c.cached > c.prompt - c.cached for c in calls)
    assert n_bad > 0 and wrong.rejected == {"cached_tokens: above prompt_tokens (which include them)": n_bad}
    assert wrong.first_rejected["file"] == str(excl) and wrong.first_rejected["row"] >= 1
    with pytest.raises(ConfigError, match="auto"):
        summarize_log(
            write_kimiplan_log(tmp_path / "c2.csv", calls),
            {
                **load_mapping("kimiplan-calls").model_dump(mode="json"),
                "columns": {"time": "time", "prompt_tokens": "prompt_tokens", "completion_tokens": "completion_tokens"},
                "input_counting": "auto",
            },
        )


def test_route_from_an_attribute_the_user_names(tmp_path):
    calls = [c for c in CALLS if c.route == "answer"][:20]
    path = write_otlp(tmp_path / "r.jsonl", calls, noise=False)
    from kimiplan.logs.mapping import load_mapping

    m = load_mapping("otel-genai").model_dump(mode="json")
    m["columns"] = {k: [s["column"] for s in v] for k, v in m["columns"].items()}
    m["columns"]["route"] = ["service.name"]  # a resource attribute
    s = summarize_log(path, m, by=["route"])
    assert s.table["route"].tolist() == ["kimi-app"] and s.requests == len(calls)
    assert Decimal(0) < s.cost
