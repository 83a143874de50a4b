"""OpenTelemetry GenAI spans: `summarize_log` on OTLP JSON lines against a plain `json.loads` loop over the same
file, in the same run (measured, not asserted; goal >= 10x).

The file holds N chat spans in export requests of 512 spans per line, in the exact shape the OpenTelemetry SDK's
OTLP JSON file exporter writes (int64 values as strings, hex ids, nanosecond times; the template is taken from a
span the SDK itself encodes when the SDK is installed): Kimi calls through the OpenAI SDK with the current GenAI
attribute names, a conversation id and a route attribute. The references, each in a fresh process:

- `json.loads` only: parse every line, nothing else (a floor for any Python reader);
- the plain loop a user would write: `json.loads` each line, walk resourceSpans/scopeSpans/spans, turn each span's
  attributes into a dict and sum input, cached and output tokens per route.

`summarize_log` does more (every attribute the mapping names, both attribute generations, Kimi detection, runs,
bad-row checks, pricing with the card in force on each call's day, exact Decimal sums, percentiles), under a
DuckDB `memory_limit`; it reads the lines with the compiled scanner (kimiplan.logs.otlp_scan, loaded from numba's
cache: run the OTel tests once first, or the first run also compiles it). Its peak RSS is printed with the
others', and each engine's CPU seconds (all threads) beside its wall time: on a shared machine the wall-time ratio
moves with the load, the CPU ratio much less.
Run: .venv/bin/python benchmarks/bench_otel.py [--spans 1000000] [--memory-limit 256MB]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
engine, path, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
spans = 0
if engine == "json.loads":
    with open(path, "rb") as fh:
        for line in fh:
            json.loads(line)
elif engine == "loop":
    routes = {}
    with open(path, "rb") as fh:
        for line in fh:
            req = json.loads(line)
            for rs in req["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for sp in ss["spans"]:
                        spans += 1
                        a = {x["key"]: x["value"] for x in sp["attributes"]}
                        r = routes.setdefault(a.get("app.route", {}).get("stringValue", "default"), [0, 0, 0])
                        r[0] += int(a.get("gen_ai.usage.input_tokens", {}).get("intValue", 0))
                        r[1] += int(a.get("gen_ai.usage.cache_read.input_tokens", {}).get("intValue", 0))
                        r[2] += int(a.get("gen_ai.usage.output_tokens", {}).get("intValue", 0))
else:
    from kimiplan.logs import summarize_log
    s = summarize_log(path, **extra)
    spans = s.rows
dt = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": dt, "cpu": ru.ru_utime + ru.ru_stime, "spans": spans, "peak_mb": ru.ru_maxrss / 1024}))
"""

T0_NS = 1_796_083_200_000_000_000  # 2026-12-01 00:00 UTC


def _template() -> str:
    """One span as the SDK's OTLP JSON encoder writes it, with {placeholders} for what varies."""
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "server.address": "api.moonshot.ai",
        "server.port": 443,
        "gen_ai.request.model": "kimi-k2.6",
        "gen_ai.response.model": "kimi-k2.6",
        "gen_ai.usage.input_tokens": 1111,
        "gen_ai.usage.output_tokens": 2222,
        "gen_ai.usage.cache_read.input_tokens": 3333,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.max_tokens": 4096,
        "gen_ai.conversation.id": "conv-4444",
        "app.route": "route-5555",
    }
    try:
        from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        got = []

        class Keep(SpanExporter):
            def export(self, spans):
                got.extend(spans)
                return SpanExportResult.SUCCESS

        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(Keep()))
        tp.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0").start_span(
            "chat kimi-k2.6", start_time=T0_NS, attributes=attrs
        ).end(end_time=T0_NS + 1)
        span = encode_spans(got).to_dict()["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    except ImportError:  # the same shape, written out
        enc = []
        for k, v in attrs.items():
            if isinstance(v, list):
                val = {"arrayValue": {"values": [{"stringValue": x} for x in v]}}
            elif isinstance(v, int):
                val = {"intValue": str(v)}
            else:
                val = {"stringValue": v}
            enc.append({"key": k, "value": val})
        span = {"traceId": "0" * 32, "spanId": "0" * 16, "flags": 256, "name": "chat kimi-k2.6", "kind": 1,
                "startTimeUnixNano": str(T0_NS), "endTimeUnixNano": str(T0_NS + 1), "attributes": enc,
                "status": {}}  # fmt: skip
    span.pop("parentSpanId", None)
    span["traceId"], span["spanId"] = "TRACE", "SPANID"
    span["startTimeUnixNano"], span["endTimeUnixNano"] = "START", "END"
    text = json.dumps(span, separators=(",", ":")).replace("{", "{{").replace("}", "}}")
    for a, b in (("TRACE", "{trace}"), ("SPANID", "{span}"), ("START", "{start}"), ("END", "{end}"),
                 ("1111", "{inp}"), ("2222", "{out}"), ("3333", "{cached}"), ("conv-4444", "conv-{conv}"),
                 ("route-5555", "{route}")):  # fmt: skip
        text = text.replace(a, b)
    return text


def write_spans(path: Path, n: int, batch: int = 512) -> None:
    tmpl = _template()
    head = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"kimi-app"}}]},'
        '"scopeSpans":[{"scope":{"name":"opentelemetry.instrumentation.openai_v2","version":"2.1b0"},"spans":['
    )
    rnd = random.Random(1)
    routes = ("answer", "summarize_ticket", "web_lookup")
    with open(path, "w", encoding="utf-8") as fh:
        for first in range(0, n, batch):
            parts = []
            for i in range(first, min(n, first + batch)):
                inp = rnd.randint(300, 9000)
                start = T0_NS + i * 2_000_000_000
                parts.append(
                    tmpl.format(
                        trace=f"{i:032x}",
                        span=f"{i:016x}",
                        start=start,
                        end=start + rnd.randint(200, 9000) * 1_000_000,
                        inp=inp,
                        out=rnd.randint(20, 1500),
                        cached=inp // 256 * 128,
                        conv=i // 4,
                        route=routes[i % 3],
                    )
                )
            fh.write(head + ",".join(parts) + "]}]}]}\n")


def run(engine: str, path: Path, **extra) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, engine, str(path), json.dumps(extra)], capture_output=True, text=True
    )
    if res.returncode:
        raise SystemExit(f"{engine} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--memory-limit", default="256MB")
    ap.add_argument("--dir", help="where to write the generated file (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "traces.jsonl"
        t0 = time.perf_counter()
        write_spans(path, args.spans)
        print(
            f"generated {args.spans:,} OTLP JSON spans ({path.stat().st_size / 1e9:.2f} GB, 512 per line) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        loads = run("json.loads", path)
        loop = run("loop", path)
        kp = run("kimiplan", path, memory_limit=args.memory_limit, temp_directory=tmp)
        if kp["spans"] != args.spans or loop["spans"] != args.spans:
            raise SystemExit(f"span counts differ: loop {loop['spans']:,}, summarize_log {kp['spans']:,}")
        for name, r in (("json.loads only", loads), ("json.loads loop, tokens per route", loop)):
            print(f"{name:34s}: {r['seconds']:7.1f} s ({r['cpu']:6.1f} s CPU), peak RSS {r['peak_mb']:7,.0f} MB")
        print(
            f"{'summarize_log (memory_limit ' + args.memory_limit + ')':34s}: {kp['seconds']:7.1f} s "
            f"({kp['cpu']:6.1f} s CPU), peak RSS {kp['peak_mb']:7,.0f} MB ({args.spans / kp['seconds'] / 1e3:,.0f} k "
            "spans/s)"
        )
        print(
            f"speed: {loop['seconds'] / kp['seconds']:.1f}x the json.loads loop (goal >= 10x), "
            f"{loads['seconds'] / kp['seconds']:.1f}x json.loads alone; CPU: {loop['cpu'] / kp['cpu']:.1f}x and "
            f"{loads['cpu'] / kp['cpu']:.1f}x"
        )


if __name__ == "__main__":
    main()
