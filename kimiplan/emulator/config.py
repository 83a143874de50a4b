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

from kimiplan.catalog.providers import K26_DEFAULT_MAX_COMPLETION
from kimiplan.errors import ConfigError, validate
from kimiplan.model.dists import LogNormal
from kimiplan.model.loader import load_file
from kimiplan.model.settings import WindowSettings

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


class EmulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["kimi-k2.6"], min_length=1)
    seed: int = 0
    #: tokens the "server" adds to every prompt that the client cannot see (calibration should recover it)
    hidden_overhead: int = Field(default=0, ge=0)
    #: a prompt becomes a cache source only when its prompt tokens exceed this (Kimi: 256)
    cache_min_prompt_tokens: int = Field(default=256, ge=0)
    default_max_completion_tokens: int = Field(default=K26_DEFAULT_MAX_COMPLETION, gt=0)
    context_window: int = Field(default=262_144, gt=0)
    #: real seconds per emulated second: 0.01 runs 100x faster than real time; 0 never sleeps
    time_scale: float = Field(default=1.0, ge=0)
    #: tokens per SSE chunk; bigger chunks keep the (slow) client-side chunk parsing off the critical path
    stream_chunk_tokens: int = Field(default=32, gt=0)
    #: where the final stream chunk carries usage: top level (current OpenAPI) or inside choices[0] (Jan-2026)
    stream_usage_location: Literal["top", "choice", "both"] = "top"
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
    organization_id: str = "org-emulated"
    ak_id: str = "ak-emulated"
    token_credit: int = 0

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
