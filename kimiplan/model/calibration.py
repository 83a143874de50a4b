"""The calibration file: what live calls (or a call log) measured per route, with the sample behind it.

`kimiplan calibrate fit` and `kimiplan logs calibrate` write it (JSON, `schema_version` 1); a scenario names one
(`calibration:` on a route or on the whole scenario) and `load_scenario` applies it (`kimiplan.catalog.calibrated`).
It sits in the model layer because a scenario refers to it and every command reads it, not only the fitters.
Fields added after the first files were written are optional, so those files still load.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kimiplan.errors import ConfigError, validate
from kimiplan.io.atomic import atomic_write

SCHEMA_VERSION = 1


class _F(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_F):
    value: float
    ci: tuple[float, float]
    n: int


class LogNormalFit(_F):
    median: float
    p95: float
    median_ci: tuple[float, float]
    p95_ci: tuple[float, float]
    n: int
    n_censored: int
    ks_stat: float
    ks_pvalue: float


class FixedFit(_F):
    """A quantity that did not vary in the sample (e.g. a constant decode speed): the law is the constant."""

    kind: Literal["fixed"] = "fixed"
    value: float
    n: int


class EmpiricalFit(_F):
    mean: float
    quantiles: dict[str, float]
    samples: list[int]


class MixtureFit(_F):
    weights: list[float]
    medians: list[float]
    p95s: list[float]
    n: int
    n_censored: int
    ks_stat: float
    ks_pvalue: float


class LawTest(_F):
    """One candidate law's goodness of fit: the censoring-aware KS test, and whether its capped mean lies within
    the sample's own interval (z = distance in standard errors of the distribution-free restricted mean)."""

    law: Literal["lognormal", "mixture", "empirical"]
    ks_stat: float
    ks_pvalue: float
    capped_mean: float
    capped_mean_z: float
    accepted: bool
    reason: str = ""


class CappedMean(_F):
    """E[min(X, budget)] under the chosen law, with an interval that covers both the sampling error of the
    distribution-free restricted mean (`sample_value` +- z `sample_se`) and the law's distance from it."""

    value: float
    ci: tuple[float, float]
    confidence: float
    budget: float | None
    sample_value: float
    sample_se: float
    n: int


Law = Literal["lognormal", "mixture", "empirical"]


class ComponentFit(_F):
    lognormal: LogNormalFit | None = None
    empirical: EmpiricalFit
    mixture: MixtureFit | None = None
    #: the law chosen by goodness of fit (None in files written before it was chosen: lognormal then)
    law: Law | None = None
    law_reason: str = ""
    tests: list[LawTest] = []
    capped_mean: CappedMean | None = None

    def to_dist(self, kind: Literal["auto", "lognormal", "mixture", "empirical"] = "auto"):
        """The fitted law as a scenario distribution: `auto` is the one goodness of fit chose."""
        from kimiplan.model.dists import Empirical, LogNormal, Mixture

        if kind == "auto":
            kind = self.law or ("lognormal" if self.lognormal is not None else "empirical")
        if kind == "lognormal" and self.lognormal is not None:
            return LogNormal(median=self.lognormal.median, p95=self.lognormal.p95)
        if kind == "mixture" and self.mixture is not None:
            m = self.mixture
            return Mixture(
                components=tuple(
                    {"weight": w, "dist": {"kind": "lognormal", "median": med, "p95": p}}
                    for w, med, p in zip(m.weights, m.medians, m.p95s)
                )
            )
        return Empirical(samples=tuple(float(v) for v in self.empirical.samples))


class Precision(_F):
    """The sampling uncertainty of a route's mean cost per request and mean reservation (tokens a request puts
    on TPM: prompt + max_completion_tokens per call), and the calls that bring the cost within the target."""

    confidence: float
    target_rel_error: float
    currency: str
    method: str
    #: mean cost per request in `currency`, with its bootstrap interval
    cost_per_request: Estimate
    cost_se: float
    cost_cv: float
    #: half-width of the cost interval over the mean
    cost_rel_error: float
    reservation_tokens: Estimate
    reservation_se: float
    reservation_rel_error: float
    #: calls (in all) for +-target_rel_error at `confidence`, and how many more than were sampled
    calls_for_target: int
    more_calls_for_target: int


class RouteCalibration(_F):
    n: int
    thinking: bool | None = None
    max_completion_tokens: int | None = None
    output: ComponentFit
    reasoning: ComponentFit | None = None
    truncation_rate: Estimate
    cache_hit_rate: Estimate
    cached_fraction: Estimate | None = None
    template_overhead: Estimate | None = None
    ttft_s: LogNormalFit | FixedFit | None = None
    decode_tps: LogNormalFit | FixedFit | None = None
    precision: Precision | None = None
    #: where the prompts came from when the sampler recorded it (e.g. "synthetic: built from scenario X")
    prompt_source: str | None = None
    # Added later (optional: older files lack them and still apply, without what they lack).
    prompt_tokens: Estimate | None = Field(
        default=None, description="Mean prompt_tokens per call as the API counted them (cached ones included)"
    )
    calls_per_minute: float | None = Field(
        default=None, description="The sampler's own pace on this route (calls / minute over its sampling window)"
    )
    tool_rounds: Estimate | None = Field(
        default=None, description="Tool round trips per request (further API calls), when the samples record them"
    )
    tool_result_tokens: Estimate | None = Field(
        default=None, description="Tokens one tool result adds to the next call's input, when recorded"
    )
    agent_steps: Estimate | None = Field(default=None, description="Steps per agent run, when the log has runs")
    context_growth_tokens: Estimate | None = Field(
        default=None, description="Input tokens an agent run's context grows per step, when the log has runs"
    )
    # From the ids in a call log (all its calls, not the sample): calls per agent run, turns per conversation
    # and the prompt tokens a conversation adds per turn (its history growth).
    steps_per_run: Estimate | None = None
    turns_per_conversation: Estimate | None = None
    history_growth_tokens: Estimate | None = None


class Calibration(_F):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["kimiplan.calibration"] = "kimiplan.calibration"
    model: str
    provenance: Literal["live", "emulator", "usage-log", "mixed", "unknown"]
    created: dt.datetime
    samples_from: dt.datetime | None = None
    samples_to: dt.datetime | None = None
    n_samples: int
    notes: str = ""
    routes: dict[str, RouteCalibration]
    base_url: str | None = Field(default=None, description="API base URL the calls went to (None: unknown)")

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, self.model_dump_json(indent=2, exclude_none=False) + "\n", what="calibration file")
        return p

    def __repr__(self) -> str:
        return (
            f"<Calibration of {self.model}: {len(self.routes)} routes, {self.n_samples:,} samples "
            f"({self.provenance}); summary() for the table>"
        )

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def summary(self):
        """One row per route (fitted medians, p95, rates), as a `SummaryTable` that also reads like the frame."""
        from kimiplan.io.tables import SummaryTable

        facts = [
            ("Model", self.model),
            ("Samples", f"{self.n_samples:,} ({self.provenance})"),
            ("Created", f"{self.created:%Y-%m-%d %H:%M}"),
        ]
        notes = ["Medians and p95 are of fitted log-normals (tokens); rates are shares of calls."]
        if self.provenance == "emulator":
            notes.append("Fitted from the local emulator, not from live Kimi calls.")
        return SummaryTable(
            f"Calibration: {self.model}", facts, [("By route", self._frame(), None)], notes, self.frame_formats()
        )

    def frame_formats(self) -> dict:
        """How the summary's columns read: token counts say "(tokens)", the cost its currency."""
        from kimiplan.io.formats import ColumnFormat

        cur = next((r.precision.currency for r in self.routes.values() if r.precision is not None), None)
        tokens = {
            "prompt_tokens": "Prompt",
            "output_median": "Output median",
            "output_p95": "Output P95",
            "reasoning_median": "Reasoning median",
            "reasoning_p95": "Reasoning P95",
            "template_overhead": "Server overhead",
        }
        out: dict = {k: ColumnFormat("count", header=f"{v} (tokens)") for k, v in tokens.items()}
        out["n"] = ColumnFormat("count", header="Calls")
        out["cost_per_request"] = ColumnFormat("money", currency=cur)
        out["cost_rel_error"] = ColumnFormat("percent", header="Cost ± (95 %)")
        out["more_calls_for_5pct"] = ColumnFormat("count", header="More calls for ±5 %")
        return out

    def _frame(self):
        import pandas as pd

        rows = []
        for name, r in self.routes.items():
            lo = r.output.lognormal
            re_ = r.reasoning.lognormal if r.reasoning else None
            rows.append(
                {
                    "route": name,
                    "n": r.n,
                    "prompt_tokens": r.prompt_tokens.value if r.prompt_tokens else None,
                    "output_median": lo.median if lo else None,
                    "output_p95": lo.p95 if lo else None,
                    "reasoning_median": re_.median if re_ else None,
                    "reasoning_p95": re_.p95 if re_ else None,
                    "truncation_rate": r.truncation_rate.value,
                    "cache_hit_rate": r.cache_hit_rate.value,
                    "cached_fraction": r.cached_fraction.value if r.cached_fraction else None,
                    "template_overhead": r.template_overhead.value if r.template_overhead else None,
                    "output_law": r.output.law,
                    "cost_per_request": r.precision.cost_per_request.value if r.precision else None,
                    "cost_rel_error": r.precision.cost_rel_error if r.precision else None,
                    "more_calls_for_5pct": r.precision.more_calls_for_target if r.precision else None,
                }
            )
        return pd.DataFrame(rows).set_index("route")


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; missing, unreadable, not JSON or another schema is a ConfigError
    naming the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"calibration file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"calibration file {str(p)!r} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"calibration file {str(p)!r} is not UTF-8 text (offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration file {str(p)!r} is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or data.get("kind", "kimiplan.calibration") != "kimiplan.calibration":
        raise ConfigError(f"calibration file {str(p)!r} is not a kimiplan calibration (no kind: kimiplan.calibration)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"calibration file {str(p)!r}: schema_version {data.get('schema_version')!r} is not supported "
            f"(expected {SCHEMA_VERSION})"
        )
    return validate(Calibration, data, f"calibration file {str(p)!r}")


# --- what a calibrated route carries -----------------------------------------------------------------------
#: What a route can pin (keep as the scenario states it, whatever was measured); `all` pins everything.
PIN_QUANTITIES = ("input", "cache", "output", "reasoning", "server_overhead", "latency", "tools")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Difference(_Frozen):
    """An assumption the measurement contradicts: the assumed mean lies outside the measured 95 % interval."""

    quantity: str
    what: str = Field(description="e.g. 'input tokens per call'")
    assumed: float
    measured: float
    ci: tuple[float, float]
    n: int
    used: Literal["measured", "assumed"] = Field(description="'assumed' when the route pins the quantity")

    def describe(self) -> str:
        half = max(self.measured - self.ci[0], self.ci[1] - self.measured)
        fmt = _fmt_for(self.measured, half)
        pinned = "pinned: the forecast keeps the assumption" if self.used == "assumed" else "the forecast uses it"
        return (
            f"assumed {fmt(self.assumed)} {self.what}; {self.n:,} calls measured {fmt(self.measured)} ± "
            f"{fmt(half)} ({pinned})"
        )


def _fmt_for(value: float, half: float):
    # Token counts read as whole numbers; shares and seconds need their decimals.
    if abs(value) >= 10:
        return lambda v: f"{v:,.0f}"
    if abs(value) >= 1:
        return lambda v: f"{v:,.2f}"
    return lambda v: f"{v:.3f}"


class CalibratedFrom(_Frozen):
    """Where a route's laws come from: set by `load_scenario` when it applies a calibration file, and written
    inline by `kimiplan calibrate apply`, so a calibrated scenario says so wherever it is read."""

    file: str | None = Field(default=None, description="The calibration file applied")
    calls: int = Field(ge=0, description="Calls sampled on this route")
    samples_from: dt.datetime | None = None
    samples_to: dt.datetime | None = None
    model: str
    provenance: str = Field(description="live, emulator, usage-log, mixed or unknown")
    base_url: str | None = None
    applied: tuple[str, ...] = Field(default=(), description="Quantities taken from the measurement")
    pinned: tuple[str, ...] = Field(default=(), description="Measured quantities the route keeps as assumed")
    differences: tuple[Difference, ...] = ()
    warnings: tuple[str, ...] = ()
    # The sampling uncertainty of what was measured (from the calibration's `precision`; None when it has none
    # or the route pins every quantity its cost rests on). The forecast widens its bands by the cost's.
    confidence: float | None = Field(default=None, description="Confidence of the relative errors below")
    cost_rel_se: float | None = Field(
        default=None, ge=0, description="Standard error of the measured mean cost per request, over the mean"
    )
    cost_rel_error: float | None = Field(
        default=None, ge=0, description="Half-width of the mean cost's interval at `confidence`, over the mean"
    )
    reservation_rel_se: float | None = Field(
        default=None, ge=0, description="Standard error of the mean TPM reservation per request, over the mean"
    )
    reservation_rel_error: float | None = Field(
        default=None, ge=0, description="Half-width of the mean reservation's interval at `confidence`, over it"
    )

    @property
    def date(self) -> dt.date | None:
        t = self.samples_to or self.samples_from
        return t.date() if t is not None else None

    def describe(self) -> str:
        when = f" on {self.date}" if self.date else ""
        where = f", {self.base_url}" if self.base_url else ""
        return f"calibrated from {self.calls:,} calls{when} ({self.provenance}{where})"


def calibration_status(scenario) -> list[tuple[str, str]]:
    """(route, 'calibrated from N calls on DATE (...)' or 'assumed') for every route."""
    return [(r.name, r.calibrated.describe() if r.calibrated else "assumed") for r in scenario.routes]


def calibration_warnings(scenario) -> list[str]:
    """Every route's calibration warnings and measured-against-assumed lines, each once, route named."""
    out: list[str] = []
    for r in scenario.routes:
        c = r.calibrated
        if c is None:
            continue
        for d in c.differences:
            out.append(f"route {r.name!r}: {d.describe()}")
        for w in c.warnings:
            line = w if w.startswith("calibration file") else f"route {r.name!r}: {w}"
            if line not in out:
                out.append(line)
    return out


def assumed_routes(scenario) -> list[str]:
    """Routes whose token sizes are still the scenario's assumptions (no calibration applied)."""
    return [r.name for r in scenario.routes if r.calibrated is None]
