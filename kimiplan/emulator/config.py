"""Ground truth for the local Kimi-compatible emulator.

Everything the emulator "knows" (output lengths per route, the hidden prompt overhead, latency, rate limits,
faults) is declared here, so calibration can be checked against a known answer. Numbers that mirror Kimi
(default output budget 32,768, context 262,144, the 256-token cache rule) come from
kimi-platform-facts.md §2-§3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kimiplan.catalog.behaviour import kimi_behaviour
from kimiplan.catalog.providers import K26_DEFAULT_MAX_COMPLETION
from kimiplan.errors import ConfigError, validate
from kimiplan.model.dists import LogNormal
from kimiplan.model.loader import load_file
from kimiplan.model.settings import WindowSettings

#: The one key a local emulator accepts when none is configured (`api_keys`); public, never a secret. `kimiplan
#: calibrate sample` sends it to a local emulator when MOONSHOT_API_KEY is unset.
TEST_API_KEY = "kimiplan-emulator-test-key"

FaultKind = Literal["ok", "server_error", "unavailable", "stream_cut", "no_usage", "overloaded", "quota"]


class LogNormalTruth(LogNormal):
    """A lognormal given by its median and 95th percentile, drawn one value at a time by the emulator."""

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.lognormal(self.mu, self.sigma))


class ParetoTruth(BaseModel):
    """A power law (Pareto type I): P(X > x) = (scale / x)^alpha for x >= scale. With alpha <= 2 its variance is
    infinite, with alpha <= 1 its mean too: only the budget bounds what a call costs."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["pareto"] = "pareto"
    scale: float = Field(gt=0, le=1e7)
    alpha: float = Field(gt=0.1, le=100)

    def draw(self, rng: np.random.Generator) -> float:
        return float(min(self.scale * (1.0 - rng.random()) ** (-1.0 / self.alpha), 1e9))


class MixtureTruthComponent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(gt=0, le=1)
    law: LogNormalTruth | ParetoTruth


class MixtureTruth(BaseModel):
    """Hidden laws of a kind the fitters do not assume: e.g. a lognormal body with a power-law tail."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["mixture"] = "mixture"
    components: list[MixtureTruthComponent] = Field(min_length=1, max_length=8)

    @model_validator(mode="after")
    def _weights(self):
        total = sum(c.weight for c in self.components)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"mixture weights must sum to 1, got {total:.9g}")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        u, acc = rng.random(), 0.0
        for c in self.components:
            acc += c.weight
            if u < acc:
                return c.law.draw(rng)
        return self.components[-1].law.draw(rng)


LengthTruth = LogNormalTruth | MixtureTruth | ParetoTruth


class ToolTruth(BaseModel):
    """What the "model" does with the tools a request offers (hidden truth, so tool routes can be calibrated).

    With `tool_choice` auto, a call whose current turn (the messages after the last user message) has made
    fewer than `max_rounds` tool rounds calls tools with probability `p_call`; `required` or a named function
    always calls, `none` never. A round makes 1 to `max_parallel_calls` calls (uniform), each to a tool drawn
    uniformly from those offered (a named tool_choice: that one), with arguments drawn to fit its schema."""

    model_config = ConfigDict(extra="forbid")
    p_call: float = Field(default=0.5, ge=0, le=1)
    max_rounds: int = Field(default=4, ge=0, le=1000)
    max_parallel_calls: int = Field(default=1, ge=1, le=16)
    #: tokens of text in each string argument
    string_argument_tokens: LogNormalTruth = LogNormalTruth(median=6, p95=24)
    #: tokens of one `$web_search` result, billed as input on the call that sends the echoed arguments back
    #: (Kimi's example: 13,046 tokens of results for one search; use-web-search guide, fetched 2026-08-13)
    web_search_result_tokens: LogNormalTruth = LogNormalTruth(median=9000, p95=20000)


class RouteTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: substring of the first system message that selects this route when no header/metadata names one
    match: str | None = None
    output: LengthTruth = LogNormalTruth(median=300, p95=1200)
    #: reasoning tokens, drawn only when thinking is enabled (Kimi's default)
    reasoning: LengthTruth | None = None
    #: hidden prompt tokens the server adds to this route's calls (on top of `hidden_overhead`)
    preamble_tokens: int = Field(default=0, ge=0, le=1_000_000)
    #: None: the prefix cache decides what is cached. A probability: each call (drawn by its call id) is a hit
    #: with it, and a hit serves everything before the last message (preamble included) from cache, as a
    #: conversation re-sent while its prefix is warm; a miss caches nothing.
    cache_hit_probability: float | None = Field(default=None, ge=0, le=1)
    reasoning: LogNormalTruth | None = None
    tools: ToolTruth = Field(default_factory=ToolTruth)


class LatencyTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft: LogNormalTruth = LogNormalTruth(median=0.6, p95=1.5)
    prefill_tokens_per_s: float = Field(default=20_000.0, gt=0)  # uncached input adds to TTFT
    decode_tokens_per_s: float = Field(default=60.0, gt=0)


class LimitsTruth(BaseModel):
    """None = no limit. Admission follows Kimi's rule: input + max_completion_tokens counts against TPM/TPD."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    tpd: int | None = Field(default=None, gt=0)


class FaultTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: consumed one per chat request in arrival order before the probabilities apply (deterministic tests)
    script: list[FaultKind] = Field(default_factory=list)
    p_server_error: float = Field(default=0.0, ge=0, le=1)
    p_stream_cut: float = Field(default=0.0, ge=0, le=1)
    p_no_usage: float = Field(default=0.0, ge=0, le=1)
    p_overloaded: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0)
    #: every chat request is refused with exceeded_current_quota_error
    quota_exceeded: bool = False


def _kimi(key: str):
    """Default from data/catalog/behaviour.toml, the one home of Kimi's open or disputed behaviours."""
    return lambda: kimi_behaviour()[key]


class ProtocolTruth(BaseModel):
    """How the emulator's HTTP replies look where Kimi's docs are silent or sources disagree; every default is a
    row of data/catalog/behaviour.toml (sources in docs/KIMI_BEHAVIOUR.md), which the client reads too."""

    model_config = ConfigDict(extra="forbid")
    request_id_header: str = Field(default_factory=_kimi("request_id_header"), pattern=r"^[A-Za-z0-9-]+$")
    #: X-RateLimit-Limit / -Remaining / -Reset (the RPM window) on every chat response and 429
    rate_limit_headers: bool = Field(default_factory=_kimi("rate_limit_headers"))
    #: Retry-After on rate_limit_reached_error 429s (Kimi: the hint is only in the message)
    rate_limit_retry_after_header: bool = Field(default_factory=_kimi("rate_limit_retry_after_header"))
    overloaded_retry_after_header: bool = Field(default_factory=_kimi("overloaded_retry_after_header"))
    empty_balance_status: Literal[429, 403] = Field(default_factory=_kimi("empty_balance_status"))
    over_context_message: str = Field(default_factory=_kimi("over_context_message"))
    auth_error_message: str = Field(default_factory=_kimi("auth_error"))
    #: temperature, top_p, n and the penalties at other than K2.6's fixed values: "refuse" (Kimi) or "ignore"
    sampling_parameters: Literal["refuse", "ignore"] = Field(default_factory=_kimi("sampling_parameters"))
    web_search_with_thinking: bool = Field(default_factory=_kimi("web_search_with_thinking"))
    #: an assistant message sent back with empty content: "accept" (Kimi's guides) or "refuse" (seen reported)
    empty_assistant_content: Literal["accept", "refuse"] = Field(default_factory=_kimi("empty_assistant_content"))


class EmulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["kimi-k2.6"], min_length=1)
    seed: int = 0
    #: tokens the "server" adds to every prompt that the client cannot see (calibration should recover it)
    hidden_overhead: int = Field(default=0, ge=0)
    #: a prompt becomes a cache source only when its prompt tokens exceed this (Kimi: 256)
    cache_min_prompt_tokens: int = Field(default_factory=_kimi("cache_min_prompt_tokens"), ge=0)
    #: cached counts are whole blocks of this many tokens (1: token by token)
    cache_block_tokens: int = Field(default_factory=_kimi("cache_block_tokens"), ge=1, le=65_536)
    default_max_completion_tokens: int = Field(default=K26_DEFAULT_MAX_COMPLETION, gt=0)
    context_window: int = Field(default=262_144, gt=0)
    #: real seconds per emulated second: 0.01 runs 100x faster than real time; 0 never sleeps
    time_scale: float = Field(default=1.0, ge=0)
    #: tokens per SSE chunk; bigger chunks keep the (slow) client-side chunk parsing off the critical path
    stream_chunk_tokens: int = Field(default=32, gt=0)
    #: where the final stream chunk carries usage: top level (current OpenAPI) or inside choices[0] (Jan-2026)
    stream_usage_location: Literal["top", "choice", "both"] = Field(default_factory=_kimi("stream_usage_location"))
    routes: dict[str, RouteTruth] = Field(default_factory=lambda: {"default": RouteTruth()})
    default_route: str = "default"
    latency: LatencyTruth = Field(default_factory=LatencyTruth)
    limits: LimitsTruth = Field(default_factory=LimitsTruth)
    #: how the limits' windows are counted, with the simulator's default (sliding 60 s RPM/TPM; TPD resets at
    #: midnight UTC+8, where Moonshot runs), so emulator runs and simulations refuse the same requests.
    #: Emulated time 0 is read as 00:00 UTC, as in the simulator: by default TPD first resets 16 h after start.
    window: WindowSettings = WindowSettings()
    faults: FaultTruth = Field(default_factory=FaultTruth)
    #: seconds a socket may sit idle (a half-sent request, a body that never comes) before it is dropped
    socket_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: request bodies above this get 413 without being read (a 256K-token prompt is ~1-2 MB of JSON)
    max_body_bytes: int = Field(default=8_000_000, gt=0, le=1_000_000_000)
    #: keys accepted as `Authorization: Bearer KEY` (`kimiplan emulator serve --api-key KEY`); none: only TEST_API_KEY
    api_keys: list[str] = Field(default_factory=list)
    protocol: ProtocolTruth = Field(default_factory=ProtocolTruth)
    organization_id: str = "org-emulated"
    ak_id: str = "ak-emulated"
    token_credit: int = 0

    @property
    def accepted_keys(self) -> frozenset[str]:
        return frozenset(self.api_keys) if self.api_keys else frozenset({TEST_API_KEY})

    @model_validator(mode="after")
    def _default_route_exists(self):
        if self.default_route not in self.routes:
            raise ValueError(f"default_route {self.default_route!r} is not among routes {sorted(self.routes)}")
        return self


def load_emulator_config(path: str | Path) -> EmulatorConfig:
    """An emulator config file (YAML or JSON); a malformed file is a ConfigError naming file and field."""
    p = Path(path)
    data = load_file(p, "emulator config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"emulator config {str(p)!r}: must be a mapping at the top level, got {type(data).__name__}")
    return validate(EmulatorConfig, data, f"emulator config {str(p)!r}")
