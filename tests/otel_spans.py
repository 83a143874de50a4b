"""Real OpenTelemetry GenAI spans for tests: written by the OpenTelemetry Python SDK through its OTLP JSON file
exporter (one ExportTraceServiceRequest per line, as the collector's file exporter writes), never by hand; and the
same calls in kimiplan's own per-call log format, so that the two can be held together."""

from __future__ import annotations

import csv
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

T0_NS = 1_796_083_200_000_000_000  # 2026-12-01 00:00:00 UTC

#: attribute names by generation of the GenAI semantic conventions (and the instrumentations that wrote them)
GENERATIONS = {
    # current: gen_ai.provider.name, input/output tokens, cache_read / cache_write, reasoning
    "current": {
        "provider": "gen_ai.provider.name",
        "input": "gen_ai.usage.input_tokens",
        "output": "gen_ai.usage.output_tokens",
        "cache_read": "gen_ai.usage.cache_read.input_tokens",
        "cache_write": "gen_ai.usage.cache_write.input_tokens",
        "reasoning": "gen_ai.usage.reasoning.output_tokens",
    },
    # before the provider rename and the cache_write rename (semantic-conventions-genai #440)
    "cache_creation": {
        "provider": "gen_ai.system",
        "input": "gen_ai.usage.input_tokens",
        "output": "gen_ai.usage.output_tokens",
        "cache_read": "gen_ai.usage.cache_read.input_tokens",
        "cache_write": "gen_ai.usage.cache_creation.input_tokens",
        "reasoning": None,
    },
    # the oldest instrumentations: prompt/completion tokens
    "prompt_completion": {
        "provider": "gen_ai.system",
        "input": "gen_ai.usage.prompt_tokens",
        "output": "gen_ai.usage.completion_tokens",
        "cache_read": "gen_ai.usage.cache_read_input_tokens",
        "cache_write": "gen_ai.usage.cache_creation_input_tokens",
        "reasoning": None,
    },
}


@dataclass(frozen=True)
class Call:
    """One Kimi call as its usage reports it (prompt includes cached and written tokens)."""

    route: str
    start_ns: int
    duration_ns: int
    prompt: int
    cached: int
    completion: int
    reasoning: int = 0
    writes: int = 0
    finish: str = "stop"
    max_tokens: int | None = None
    conversation: str | None = None
    run: str | None = None  # agent run: the route is the agent's name
    model: str = "kimi-k2.6"


def make_calls(seed: int = 0, conversations: int = 30, runs: int = 25) -> list[Call]:
    """A chat route whose conversations grow turn by turn and an agent route of runs of several steps."""
    rnd = random.Random(seed)
    calls = []
    t = T0_NS
    for c in range(conversations):
        base = rnd.randint(600, 1500)
        for turn in range(rnd.randint(1, 6)):
            prompt = base + 350 * turn + rnd.randint(0, 40)
            cached = 0 if turn == 0 else (prompt - 400) // 256 * 256
            out = rnd.randint(40, 700)
            finish = "length" if out > 650 else "stop"
            calls.append(
                Call(
                    "answer",
                    t,
                    rnd.randint(300, 6000) * 1_000_000,
                    prompt,
                    max(cached, 0),
                    out,
                    0,
                    0,
                    finish,
                    700,
                    conversation=f"conv-{c}",
                )
            )
            t += rnd.randint(1, 90) * 1_000_000_000
    for r in range(runs):
        ctx = rnd.randint(3000, 6000)
        for step in range(rnd.randint(2, 9)):
            prompt = ctx + 900 * step
            cached = 0 if step == 0 else ctx + 900 * (step - 1)
            out = rnd.randint(100, 1500)
            reasoning = rnd.randint(0, out // 2)
            calls.append(
                Call(
                    "coder",
                    t,
                    rnd.randint(1000, 20000) * 1_000_000,
                    prompt,
                    cached,
                    out,
                    reasoning,
                    0,
                    "tool_calls",
                    16000,
                    run=f"run-{r}",
                )
            )
            t += rnd.randint(1, 30) * 1_000_000_000
    return calls


def write_otlp(
    path: Path,
    calls: list[Call],
    *,
    generation: str = "current",
    exclusive_routes: tuple[str, ...] = (),
    noise: bool = True,
    batch: int = 40,
) -> Path:
    """Spans of `calls` through the SDK's OTLP JSON file exporter. Calls of `exclusive_routes` come from an
    instrumentation that counts input tokens without the cached ones (as some do); the others count them in, as
    the conventions ask. Agent calls sit under an `invoke_agent` span of their run. With `noise`, spans that are
    not Kimi calls ride along (an HTTP span, another provider's model, a tool span)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    names = GENERATIONS[generation]
    provider = TracerProvider(resource=Resource.create({"service.name": "kimi-app", "deployment.environment": "test"}))
    provider.add_span_processor(
        BatchSpanProcessor(FileSpanExporter(path), max_export_batch_size=batch, schedule_delay_millis=60_000)
    )
    inclusive = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0")
    exclusive = provider.get_tracer("example.instrumentation.cache_exclusive", "0.3.0")
    agents: dict[str, trace.Span] = {}
    ends: dict[str, int] = {}
    for c in calls:
        if c.run is not None:
            ends[c.run] = max(ends.get(c.run, 0), c.start_ns + c.duration_ns)
    for c in calls:
        tracer = exclusive if c.route in exclusive_routes else inclusive
        ctx = None
        if c.run is not None:
            if c.run not in agents:
                agents[c.run] = inclusive.start_span(
                    f"invoke_agent {c.route}",
                    start_time=c.start_ns,
                    attributes={
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": c.route,
                        names["provider"]: "openai",
                    },
                )
            ctx = trace.set_span_in_context(agents[c.run])
        inp = c.prompt - c.cached - c.writes if c.route in exclusive_routes else c.prompt
        attrs = {
            "gen_ai.operation.name": "chat",
            names["provider"]: "openai",  # Kimi through the OpenAI SDK
            "server.address": "api.moonshot.ai",
            "server.port": 443,
            "gen_ai.request.model": c.model,
            "gen_ai.response.model": c.model,
            names["input"]: inp,
            names["output"]: c.completion,
            "gen_ai.response.finish_reasons": [c.finish],
        }
        if c.cached:
            attrs[names["cache_read"]] = c.cached
        if c.writes:
            attrs[names["cache_write"]] = c.writes
        if names["reasoning"]:
            attrs[names["reasoning"]] = c.reasoning
        if c.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = c.max_tokens
        if c.conversation is not None:
            attrs["gen_ai.conversation.id"] = c.conversation
        if c.run is None:
            attrs["app.route"] = c.route
        span = tracer.start_span(f"chat {c.model}", context=ctx, start_time=c.start_ns, attributes=attrs)
        span.end(end_time=c.start_ns + c.duration_ns)
        if noise and c.run is not None and c.reasoning % 3 == 0:
            tool = inclusive.start_span(
                "execute_tool run_tests",
                context=ctx,
                start_time=c.start_ns + c.duration_ns,
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "run_tests"},
            )
            tool.end(end_time=c.start_ns + c.duration_ns + 1_000_000)
    for run, span in agents.items():
        span.end(end_time=ends[run])
    if noise:
        http = inclusive.start_span("GET /health", start_time=T0_NS, attributes={"http.route": "/health"})
        http.end(end_time=T0_NS + 1_000)
        gpt = inclusive.start_span(
            "chat gpt-4o",
            start_time=T0_NS,
            attributes={
                names["provider"]: "openai",
                "server.address": "api.openai.com",
                "gen_ai.request.model": "gpt-4o",
                names["input"]: 100,
                names["output"]: 10,
            },
        )
        gpt.end(end_time=T0_NS + 1_000_000)
    provider.shutdown()
    return path


def iso(ns: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)).isoformat()


def write_kimiplan_log(path: Path, calls: list[Call]) -> Path:
    """The same calls in kimiplan's own per-call log (the `kimiplan-calls` mapping)."""
    cols = [
        "time",
        "route",
        "model",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "latency_s",
        "finish_reason",
        "max_completion_tokens",
        "error_type",
        "conversation_id",
        "run_id",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for c in calls:
            w.writerow(
                [
                    iso(c.start_ns),
                    c.route,
                    c.model,
                    c.prompt,
                    c.cached,
                    c.completion,
                    c.reasoning,
                    repr(c.duration_ns / 1e9),
                    c.finish,
                    c.max_tokens,
                    "",
                    c.conversation or "",
                    c.run or "",
                ]
            )
    return path
