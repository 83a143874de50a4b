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
    function_rounds: Estimate | None = Field(
        default=None,
        description="Function-tool rounds per request (replies with function calls that were answered)",
    )
    function_round_counts: dict[int, int] | None = Field(
        default=None, description="Requests by their number of function rounds (the law of tools.function_calls)"
    )
    function_call_tokens: ComponentFit | None = Field(
        default=None, description="Tokens of one function round's tool-call message (the reply's visible output)"
    )
    function_result_tokens: ComponentFit | None = Field(
        default=None, description="Tokens of the function results sent back in one round (counted by the sampler)"
    )
    tool_rounds_cut: int | None = Field(
        default=None,
        description="Requests whose last recorded reply still called tools (the sampler's max_tool_rounds, its "
        "spend cap or an error stopped them): their rounds are a lower bound",
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
        """The calibration at a glance, as statsmodels prints a fit: what was measured where (model, calls, dates,
        base URL), one row per route with its units (tokens per call, shares, money per request with its ± at
        95 %), and the caveats. A `SummaryTable`; its first table still reads like the per-route frame."""
        from kimiplan.io.formats import ColumnFormat, money, percent
        from kimiplan.io.tables import SummaryTable

        precisions = [r.precision for r in self.routes.values() if r.precision is not None]
        cur = precisions[0].currency if precisions else None
        where = {
            "live": "Kimi (live calls)",
            "emulator": "the local emulator (not Kimi)",
            "usage-log": "a call log",
            "mixed": "several sources (live, emulator or logs)",
        }.get(self.provenance, "unknown")
        facts = [
            ("Model", self.model),
            ("Measured on", where),
            ("Base URL", self.base_url or "not recorded in this file"),
            ("Calls", f"{self.n_samples:,} on {len(self.routes)} route{'s' if len(self.routes) != 1 else ''}"),
            ("Sampled", _span(self.samples_from, self.samples_to)),
        ]
        if self.samples_from is None and self.samples_to is None:  # the file's own date is the best there is
            facts.append(("Written", f"{self.created:%Y-%m-%d %H:%M} UTC"))
        overheads = {r.template_overhead.value for r in self.routes.values() if r.template_overhead is not None}
        if len(overheads) == 1:
            facts.append(("Template overhead", f"{overheads.pop():,.0f} tokens per call (billed, not in your text)"))
        if precisions:
            p = precisions[0]
            facts.append(
                (
                    "Precision",
                    f"mean cost per request ± at {percent(p.confidence, trim=True)} confidence ({p.method}); "
                    f"target ± {percent(p.target_rel_error, trim=True)}",
                )
            )
        if self.notes:
            facts.append(("Notes", self.notes))
        df = self._frame().dropna(axis=1, how="all")  # a column no route has (reasoning, precision) says nothing
        target = f"± {percent(precisions[0].target_rel_error, trim=True)}" if precisions else "the target"
        fmts = {
            "calls": ColumnFormat("count", header="Calls"),
            "prompt_tokens": ColumnFormat("count", header="Prompt"),
            "output_median": ColumnFormat("count", header="Output p50"),
            "output_p95": ColumnFormat("count", header="Output p95"),
            "reasoning_median": ColumnFormat("count", header="Reasoning p50"),
            "reasoning_p95": ColumnFormat("count", header="Reasoning p95"),
            "output_law": ColumnFormat("text", header="Output law"),
            "truncated": ColumnFormat("percent", header="Truncated (of calls)"),
            "cached_share": ColumnFormat("percent", header="Cached (of input)"),
            "cost_per_request": ColumnFormat("money", currency=cur, decimals=4, header=f"Cost ({cur}/request)"),
            "cost_pm_95": ColumnFormat("percent", header="± at 95 %"),
            "more_calls_for_target": ColumnFormat("count", header=f"More calls for {target}"),
        }
        sizes = [c for c in df.columns if c in _SIZE_COLUMNS]
        tables = [("Tokens per call, by route", df[sizes], None)]
        rest = [c for c in df.columns if c not in _SIZE_COLUMNS]
        if rest:
            title = "Shares and cost per request" if "cost_per_request" in rest else "Shares"
            tables.append((f"{title}, by route", df[rest], cur))
        notes = [
            "Output and reasoning sizes are of each route's chosen law (log-normal, a mixture of two, or the "
            "sample itself); truncated calls (finish_reason length) count as censored, not as short answers."
        ]
        if self.provenance == "emulator":
            notes.append(
                "Measured on the local emulator, not on Kimi: the sizes are its ground truth, not your traffic's."
            )
        sampled = self.provenance in ("live", "emulator", "mixed")  # a call log's cache hits are the traffic's own
        if sampled and any(r.cached_fraction is not None and r.cached_fraction.value > 0 for r in self.routes.values()):
            notes.append(
                "The cached share is what the sampler's pace found; Kimi keeps a prefix cached only while it is seen "
                "often, so traffic slower than the sampler reads less from cache."
            )
        short = [(n, r.precision) for n, r in self.routes.items() if r.precision and r.precision.more_calls_for_target]
        if short:
            notes.append(
                f"Not yet within {target}: "
                + "; ".join(
                    f"{name} ({money(p.cost_per_request.value, p.currency, 4)} ± {percent(p.cost_rel_error)}, "
                    f"{p.more_calls_for_target:,} more calls)"
                    for name, p in short
                )
                + "."
            )
        if not precisions:
            notes.append("This file predates the cost precision: fit it again (kimiplan calibrate fit) to get the ±.")
        return SummaryTable(
            f"Calibration: {self.model}, {self.n_samples:,} calls ({self.provenance})",
            facts,
            tables,
            notes,
            overrides=fmts,
        )

    def _frame(self):
        import pandas as pd

        rows = []
        for name, r in self.routes.items():
            out, rea = r.output.to_dist(), r.reasoning.to_dist() if r.reasoning else None
            cached = r.cached_fraction if r.cached_fraction is not None else None
            p = r.precision
            rows.append(
                {
                    "route": name,
                    "calls": r.n,
                    "prompt_tokens": r.prompt_tokens.value if r.prompt_tokens else None,
                    "output_median": float(out.quantile(0.5)),
                    "output_p95": float(out.quantile(0.95)),
                    "reasoning_median": float(rea.quantile(0.5)) if rea is not None else None,
                    "reasoning_p95": float(rea.quantile(0.95)) if rea is not None else None,
                    "output_law": r.output.law or ("lognormal" if r.output.lognormal else "empirical"),
                    "truncated": r.truncation_rate.value,
                    "cached_share": cached.value if cached is not None else None,
                    "cost_per_request": p.cost_per_request.value if p else None,
                    "cost_pm_95": p.cost_rel_error if p else None,
                    "more_calls_for_target": p.more_calls_for_target if p else None,
                }
            )
        return pd.DataFrame(rows).set_index("route")


_SIZE_COLUMNS = (
    "calls",
    "prompt_tokens",
    "output_median",
    "output_p95",
    "reasoning_median",
    "reasoning_p95",
    "output_law",
)


def _span(a: dt.datetime | None, b: dt.datetime | None) -> str:
    """'2026-11-26 00:58 to 01:04 UTC' (one day), or the two dates; 'not recorded' when neither is known."""
    if a is None and b is None:
        return "not recorded in this file"
    a, b = a or b, b or a
    if a.date() == b.date():
        return f"{a:%Y-%m-%d %H:%M} to {b:%H:%M} UTC"
    return f"{a:%Y-%m-%d} to {b:%Y-%m-%d}"


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
    of: Literal["calls", "requests", "rounds"] = Field(default="calls", description="what `n` counts")

    def describe(self) -> str:
        half = max(self.measured - self.ci[0], self.ci[1] - self.measured)
        fmt = _fmt_for(self.measured, half)
        pinned = "pinned: the forecast keeps the assumption" if self.used == "assumed" else "the forecast uses it"
        return (
            f"assumed {fmt(self.assumed)} {self.what}; {self.n:,} {self.of} measured {fmt(self.measured)} ± "
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
