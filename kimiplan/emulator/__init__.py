"""A local, Kimi-compatible emulator with known ground truth, for calibration tests, demos and benchmarks.

Route selection (first that applies): header `X-Kimiplan-Route`; body `metadata.route`; body `user` of the form
`route:<name>`; the first route whose `match` string occurs in the system prompt; `default_route`.
Draws are keyed by the `X-Kimiplan-Call-Id` header when present (kimiplan's client always sends it), so a
Partial Mode continuation of the same call continues the same target length and runs are reproducible.
Anything recorded from it is labelled provenance "emulator".
"""

from .config import (
    EmulatorConfig,
    FaultTruth,
    LatencyTruth,
    LimitsTruth,
    LogNormalTruth,
    MixtureTruth,
    ParetoTruth,
    RouteTruth,
    load_emulator_config,
)
from .engine import CONTENT_WORD, REASONING_WORD, Engine, render_prompt_ids
from .server import EmulatorServer, RunningEmulator, emulator, serve_forever

__all__ = [
    "EmulatorConfig",
    "FaultTruth",
    "LatencyTruth",
    "LimitsTruth",
    "LogNormalTruth",
    "MixtureTruth",
    "ParetoTruth",
    "RouteTruth",
    "load_emulator_config",
    "Engine",
    "render_prompt_ids",
    "EmulatorServer",
    "RunningEmulator",
    "emulator",
    "serve_forever",
    "CONTENT_WORD",
    "REASONING_WORD",
]
