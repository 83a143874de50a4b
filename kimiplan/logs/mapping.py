"""Column mappings: how a call log's columns become kimiplan's fields.

A mapping is a small YAML file a user can write for any gateway (see `data/mappings/*.yaml` for the shipped
ones and `docs/LOGS.md`). Each kimiplan field maps to one *source*, or a list of sources (the first non-null
of those present is used):

- a column name, dotted for nested JSON fields (`usage.prompt_tokens`);
- `{sql: "<DuckDB expression>", columns: [..]}`: an expression over the listed source columns (quote dotted
  names: `"error.type"`); it counts as absent when one of its columns is;
- `{value: <constant>}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kimiplan.errors import ConfigError
from kimiplan.io.paths import data_path

#: kimiplan's fields: (DuckDB type, required for a successful call). Optional ones default as noted in FIELD_DOCS.
FIELDS: dict[str, tuple[str, bool]] = {
    "time": ("TIMESTAMPTZ", True),
    "route": ("VARCHAR", False),
    "model": ("VARCHAR", False),
    "prompt_tokens": ("BIGINT", True),
    "cached_tokens": ("BIGINT", False),
    "cache_write_tokens": ("BIGINT", False),
    "completion_tokens": ("BIGINT", True),
    "reasoning_tokens": ("BIGINT", False),
    "web_search_calls": ("BIGINT", False),
    "requests": ("BIGINT", False),
    "ttft_s": ("DOUBLE", False),
    "latency_s": ("DOUBLE", False),
    "error_type": ("VARCHAR", False),
    "finish_reason": ("VARCHAR", False),
    "max_completion_tokens": ("BIGINT", False),
    "batch": ("BOOLEAN", False),
    "conversation_id": ("VARCHAR", False),
    "run_id": ("VARCHAR", False),
}

FIELD_DOCS = {
    "time": "when the call was made (ISO 8601, or epoch numbers with time_unit); days are UTC",
    "route": "the scenario route the call belongs to (default: 'default')",
    "model": "exact model ID as priced in the catalog (default: the mapping's or the caller's model)",
    "prompt_tokens": "usage.prompt_tokens, cached tokens included (Kimi semantics)",
    "cached_tokens": "usage.cached_tokens (default 0)",
    "cache_write_tokens": "prompt tokens written to a paid prompt cache (K3 family; priced at the write price of "
    "the mapping's cache_write_retention, 5 minutes by default; K2.x writes are ordinary input). Default 0",
    "completion_tokens": "usage.completion_tokens, reasoning included",
    "reasoning_tokens": "reasoning part of completion_tokens (default unknown: counted as 0 reasoning)",
    "web_search_calls": "$web_search calls billed (default 0)",
    "requests": "requests the row stands for (default 1; daily aggregated logs carry a count)",
    "ttft_s": "seconds to the first token",
    "latency_s": "seconds to the last token",
    "error_type": "why the call was refused (null: it succeeded), e.g. rate_limit, tpd, server",
    "finish_reason": "stop, length, tool_calls ... (length marks truncated, censored outputs for calibration)",
    "max_completion_tokens": "the call's budget",
    "batch": "billed at the Batch API price (default false)",
    "conversation_id": "the conversation a call belongs to: turns per conversation and history growth per turn",
    "run_id": "the agent run a call is a step of: steps per run",
}


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str | None = None
    sql: str | None = None
    columns: tuple[str, ...] = ()
    value: Any = None

    def needs(self) -> tuple[str, ...]:
        return (self.column,) if self.column else self.columns


class LogMapping(BaseModel):
    """One log format: which source columns feed which kimiplan fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    #: csv, json (one object per line), parquet, or otlp (OpenTelemetry spans: OTLP JSON lines, or Parquet
    #: converted from them); None: from the file extension (and, for JSON and Parquet, the columns)
    format: Literal["csv", "json", "parquet", "otlp"] | None = None
    #: how numeric times are written: seconds, milliseconds or microseconds since 1970 (strings are ISO 8601)
    time_unit: Literal["s", "ms", "us"] = "s"
    #: rows stand for several requests each (daily sums): token and latency percentiles are not computed
    aggregated: bool = False
    #: whether prompt_tokens include cached_tokens and cache_write_tokens: "inclusive" (Kimi's usage, the
    #: OpenTelemetry conventions), "exclusive" (prompt = input + cache read + cache write), or "auto" (OTLP only:
    #: per instrumentation scope, exclusive when a span shows cached > input, which inclusive counting cannot)
    input_counting: Literal["inclusive", "exclusive", "auto"] = "inclusive"
    #: the retention cache writes are priced at (K3 family: "5m" at 1x the input price, "1h" at 2x). Logs and
    #: spans do not record it; the default is the 5-minute price. Say "1h" for a client that asks for 1-hour
    #: retention
    cache_write_retention: Literal["5m", "1h"] = "5m"
    columns: dict[str, tuple[Source, ...]]

    @field_validator("columns", mode="before")
    @classmethod
    def _sources(cls, v):
        if not isinstance(v, dict):
            raise ValueError("columns must map kimiplan fields to source columns")
        out = {}
        for field, spec in v.items():
            if field not in FIELDS:
                raise ValueError(f"unknown field {field!r}; kimiplan fields are {', '.join(FIELDS)}")
            items = spec if isinstance(spec, list) else [spec]
            srcs = []
            for it in items:
                if isinstance(it, str):
                    srcs.append(Source(column=it))
                elif isinstance(it, dict) and ("sql" in it or "value" in it):
                    srcs.append(Source(**it))
                else:
                    raise ValueError(f"field {field}: a source is a column name, {{sql: ...}} or {{value: ...}}")
            out[field] = tuple(srcs)
        return out

    @field_validator("columns")
    @classmethod
    def _required(cls, v):
        missing = [f for f, (_, req) in FIELDS.items() if req and f not in v]
        if missing:
            raise ValueError(f"fields {missing} must be mapped")
        return v

    def source_columns(self) -> list[str]:
        """Every source column the mapping may read, in a stable order."""
        seen: dict[str, None] = {}
        for srcs in self.columns.values():
            for s in srcs:
                for c in s.needs():
                    seen[c] = None
        return list(seen)


def builtin_mappings() -> dict[str, Path]:
    return {p.stem: p for p in sorted(data_path("mappings").glob("*.yaml"))}


def load_mapping(spec: str | Path | LogMapping | dict) -> LogMapping:
    """A shipped mapping by name (`openai`, `litellm`, `kimiplan-calls`, `kimiplan-samples`, `kimiplan-usage`,
    `otel-genai`), a YAML file, a dict or a LogMapping."""
    if isinstance(spec, LogMapping):
        return spec
    origin = "mapping"
    if isinstance(spec, dict):
        data = spec
    else:
        shipped = builtin_mappings()
        path = shipped.get(str(spec)) or Path(spec)
        origin = str(path)
        if not path.exists():
            raise ConfigError(f"mapping {str(spec)!r}: no such file or shipped mapping (shipped: {', '.join(shipped)})")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"mapping {origin}: cannot be read: {exc}") from None
    try:
        return LogMapping.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(mapping)"
        raise ConfigError(f"mapping {origin}: field {loc}: {e['msg']}") from None


def guess_mapping(columns: list[str]) -> str:
    """The shipped mapping whose required columns a log has (its top-level column names)."""
    cols = set(columns)
    from kimiplan.logs.otel import is_otlp_columns

    if is_otlp_columns(columns):
        return "otel-genai"
    if {"run_id", "status"} <= cols:
        return "kimiplan-samples"
    if {"date", "route", "requests", "prompt_tokens"} <= cols:
        return "kimiplan-usage"
    if {"time", "prompt_tokens", "completion_tokens"} <= cols:
        return "kimiplan-calls"
    if {"startTime", "prompt_tokens", "completion_tokens"} <= cols:
        return "litellm"
    if "usage" in cols or "usage.prompt_tokens" in cols or "response" in cols:
        return "openai"
    raise ConfigError(
        f"cannot tell the log's format from its columns {sorted(cols)[:20]}; pass a mapping "
        f"(shipped: {', '.join(builtin_mappings())}, or a YAML file of your own)"
    )
