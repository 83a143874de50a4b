"""Evaluation campaigns: what a benchmark run costs on each model and provider, and how long it takes at a tier.

Budgets come from Kimi's benchmark best-practice table for K2.6 (official, mirror fetched 2026-08-13:
https://platform.kimi.ai/docs/guide/benchmark-best-practice): SWE-Bench 32k per step / 256k total / 300 steps /
5 runs; BrowseComp 48k per step / 256k total / 300 steps / 1 run; AIME-style math 96k single turn / 32 runs.
Every other figure of a preset (steps a task takes, tool-result sizes, reasoning per step, cache reads, think
time) is an ASSUMPTION, listed in `Preset.assumptions`, tuned to published measurements
(shared/reference/agent-workloads.md: about 2.5M prompt tokens per SWE task at the median and 10M at P95, 20-50k
completion tokens per task, 85-95 % cache reads with a stable prefix). Change them with `overrides`.

Cost: every task x run is an agent run (`kimiplan.workload.agent`); the campaign total is the sum of
tasks x runs run costs. Its band has two parts: the sampling band (P05-P95 of the sum, central limit theorem
from the sampled runs' mean and variance), and the assumption band (the same campaign with tasks that take half
and twice the steps). Duration at a tier: every step is a request that reserves its prompt plus the per-step
budget against TPM, one call per minute counts against RPM, and a call in flight holds a concurrency slot, so
the campaign takes at least total reserved tokens / TPM, total calls / RPM and total model time / concurrency,
and no less than its longest run (runs are sequential chains of steps).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.resolve import rate_tier
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.finance.agents import run_cost_parts
from kimiplan.model.scenario import Scenario, parse_scenario
from kimiplan.workload.agent import draw_agent
from kimiplan.workload.draws import route_context

BENCHMARK_SOURCE = (
    "https://platform.kimi.ai/docs/guide/benchmark-best-practice (official, mirror fetched 2026-08-13): K2.6 rows"
)
Z95 = 1.6448536269514722


@dataclass(frozen=True)
class Preset:
    """A campaign preset: the official budgets plus the workload assumptions, as an agent route."""

    name: str
    description: str
    runs_per_task: int  # official table
    route: dict[str, Any]  # a scenario route (with its agent section, or single turn)
    official: dict[str, Any]
    assumptions: dict[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "swe-bench": Preset(
        "swe-bench",
        "SWE-Bench-style coding agent (SWE-Bench Pro / Multilingual / Verified)",
        5,
        {
            "thinking": True,
            "system": 5000,
            "user": {"kind": "lognormal", "median": 1500, "p95": 5000},
            "reasoning": {"kind": "lognormal", "median": 150, "p95": 1000},
            "output": {"kind": "lognormal", "median": 100, "p95": 500},
            "max_completion_tokens": 32768,
            "cache": {"mode": "prefix_rule", "prefix": ["system"], "hit_rate": 0.95},
            "latency": {
                "ttft_s": {"kind": "lognormal", "median": 2.0, "p95": 6.0},
                "decode_tps": {"kind": "lognormal", "median": 40, "p95": 65},
            },
            "agent": {
                "steps": {"kind": "lognormal", "median": 85, "p95": 200},
                "max_steps": 300,
                "tool_result_tokens": {"kind": "lognormal", "median": 150, "p95": 800},
                "think_time_s": {"kind": "lognormal", "median": 3, "p95": 20},
                "context_limit_tokens": 262144,
                "context_policy": "truncate_oldest",
            },
        },
        {"per_step_tokens": 32768, "total_tokens": 262144, "max_steps": 300, "runs": 5, "thinking": "enabled"},
        {
            "steps per task": "lognormal, median 85, P95 200, capped at 300 (published: about 100-300 calls per task)",
            "tool result per step": "lognormal, median 150, P95 800 tokens",
            "reasoning per step": "lognormal, median 150, P95 1,000 tokens; earlier steps' reasoning is re-sent and "
            "billed (Kimi's rule within a turn of tool calls)",
            "output per step": "lognormal, median 100, P95 500 tokens",
            "check": "on K2.6 these give about 3.2M prompt tokens per run at the median and 15M at P95, 44k "
            "completion tokens and 94 % cache reads (published: 2.5M / 10M, K2.5 on OpenHands 2.8M, 20-50k, 85-95 %)",
            "system prompt and task": "5,000 tokens; task lognormal median 1,500, P95 5,000",
            "cache": "95 % of steps read the previous prompt (published 86-94 % with a stable prefix)",
            "think time": "tool execution lognormal median 3 s, P95 20 s",
            "context policy": "past 256k, drop the oldest steps down to half the room (the harness's context "
            "management); each truncation breaks the cached prefix once",
        },
    ),
    "browsecomp": Preset(
        "browsecomp",
        "BrowseComp-style search agent (HLE-Full with tools, BrowseComp, DeepSearchQA)",
        1,
        {
            "thinking": True,
            "system": 3000,
            "user": {"kind": "lognormal", "median": 300, "p95": 1000},
            "reasoning": {"kind": "lognormal", "median": 600, "p95": 4000},
            "output": {"kind": "lognormal", "median": 120, "p95": 500},
            "max_completion_tokens": 49152,
            "cache": {"mode": "prefix_rule", "prefix": ["system"], "hit_rate": 0.95},
            "latency": {
                "ttft_s": {"kind": "lognormal", "median": 2.0, "p95": 6.0},
                "decode_tps": {"kind": "lognormal", "median": 40, "p95": 65},
            },
            "agent": {
                "steps": {"kind": "lognormal", "median": 40, "p95": 200},
                "max_steps": 300,
                "tool_result_tokens": {"kind": "lognormal", "median": 2500, "p95": 10000},
                "think_time_s": {"kind": "lognormal", "median": 2, "p95": 10},
                "context_limit_tokens": 262144,
                "context_policy": "truncate_oldest",
            },
        },
        {"per_step_tokens": 49152, "total_tokens": 262144, "max_steps": 300, "runs": 1, "thinking": "enabled"},
        {
            "steps per task": "lognormal, median 40, P95 200, capped at 300",
            "tool result per step": "search results, lognormal median 2,500, P95 10,000 tokens",
            "reasoning per step": "lognormal, median 600, P95 4,000 tokens; earlier reasoning dropped",
            "output per step": "lognormal, median 120, P95 500 tokens",
            "cache": "95 % of steps read the previous prompt",
            "context policy": "past 256k, drop the oldest steps down to half the room (context management for "
            "multi-hop search); each truncation breaks the cached prefix once",
            "search tool": "the harness's own search tool (not Moonshot's $web_search, which needs thinking off)",
        },
    ),
    "math": Preset(
        "math",
        "AIME-style math, single turn (AIME 2026, HMMT 2026)",
        32,
        {
            "thinking": True,
            "system": 0,
            "user": {"kind": "lognormal", "median": 250, "p95": 600},
            "reasoning": {"kind": "lognormal", "median": 14000, "p95": 60000},
            "output": {"kind": "lognormal", "median": 600, "p95": 2000},
            "max_completion_tokens": 98304,
            "cache": {"mode": "none"},
            "latency": {
                "ttft_s": {"kind": "lognormal", "median": 2.0, "p95": 6.0},
                "decode_tps": {"kind": "lognormal", "median": 40, "p95": 65},
            },
            "agent": {"steps": 1, "max_steps": 1},
        },
        {"max_tokens": 98304, "runs": 32, "thinking": "enabled"},
        {
            "reasoning per problem": "lognormal, median 14,000, P95 60,000 tokens, cut at the 96k budget",
            "answer": "lognormal, median 600, P95 2,000 tokens",
            "problem statement": "lognormal, median 250, P95 600 tokens; no cache reads assumed",
        },
    ),
}

# Models a campaign is priced on by default: (provider, model); a model not priced on the date is skipped.
DEFAULT_MODELS = (
    ("moonshot", "kimi-k2.6"),
    ("fireworks", "Kimi K2.6"),
    ("fireworks", "Kimi K2.6 Turbo"),
    ("moonshot", "kimi-k3"),
    ("moonshot", "kimi-k3.1-pro"),
    ("moonshot", "kimi-k3.1-pro-highspeed"),
)


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown campaign preset {name!r}; presets: {', '.join(PRESETS)}") from None


def campaign_scenario(
    p: Preset,
    model: str = "kimi-k2.6",
    provider: str = "moonshot",
    as_of: dt.date | None = None,
    tier: str | None = None,
    overrides: dict | None = None,
    agent_overrides: dict | None = None,
    seed: int = 13,
) -> Scenario:
    """The preset as a one-route scenario on `model` (route fields and agent fields replaced by the overrides)."""
    route = {**p.route, **(overrides or {})}
    route["agent"] = {**p.route["agent"], **(agent_overrides or {})}
    data = {
        "name": f"campaign-{p.name}",
        "provider": provider,
        "model": model,
        "as_of": str(as_of or dt.date.today()),
        "seed": seed,
        "tier": tier,
        "traffic": {"requests_per_day": 1},
        "routes": [{"name": p.name, "share": 1.0, **route}],
    }
    return parse_scenario(data, origin=f"campaign preset {p.name}")


@dataclass(frozen=True)
class CampaignEstimate:
    preset: str
    tasks: int
    runs_per_task: int
    tier: str | None
    costs: pd.DataFrame  # one row per model/provider (and variant)
    assumptions: dict[str, str]
    official: dict[str, Any]

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "tasks": self.tasks,
            "runs_per_task": self.runs_per_task,
            "tier": self.tier,
            "official_budgets": self.official,
            "official_source": BENCHMARK_SOURCE,
            "assumptions": self.assumptions,
            "estimates": self.costs.replace({np.nan: None}).to_dict("records"),
        }

    def _repr_html_(self) -> str:
        return (
            f"<b>Campaign {self.preset}</b>: {self.tasks:,} tasks x {self.runs_per_task} runs"
            + (f" at {self.tier}" if self.tier else "")
            + self.costs.to_html(index=False, float_format=lambda v: f"{v:,.4g}")
        )


def _duration(c: dict, n_runs: int, limits: dict | None) -> dict:
    """Lower bounds on the campaign's wall time (hours) from each limit, from per-run sample means."""
    total_calls = n_runs * float(c["api_calls"].mean())
    total_reserved = n_runs * float(c["reserved_tokens"].mean())
    model_s = n_runs * float(c["model_time_s"].mean())
    longest_h = float(np.quantile(c["latency_s"], 0.99)) / 3600
    out = {"longest_run_h": longest_h, "steps_total": total_calls, "reserved_tokens_total": total_reserved}
    if not limits:
        return {**out, "duration_h": None, "binding": None}
    bounds = {"run length": longest_h}
    if limits.get("tpm"):
        bounds["tpm"] = total_reserved / limits["tpm"] / 60
    if limits.get("rpm"):
        bounds["rpm"] = total_calls / limits["rpm"] / 60
    if limits.get("concurrency"):
        bounds["concurrency"] = model_s / limits["concurrency"] / 3600
    binding = max(bounds, key=bounds.get)
    return {**out, "duration_h": bounds[binding], "binding": binding, **{f"hours_{k}": v for k, v in bounds.items()}}


def _estimate_one(sc: Scenario, card, n_runs: int, samples: int, limits: dict | None, batch: bool = False) -> dict:
    route = sc.routes[0]
    rng = np.random.default_rng([sc.seed, 1313, 4])
    d = draw_agent(route, samples, rng, route_context(sc, route, card))
    c = d.columns
    m = float(card.batch_multiplier) if batch else 1.0
    parts = run_cost_parts(d, card, route)
    tool = parts.pop("tool_calls")
    per_run = sum(parts.values()) * m + tool
    mu, sd = float(per_run.mean()), float(per_run.std(ddof=1))
    total, total_sd = n_runs * mu, np.sqrt(n_runs) * sd
    row = {
        "provider": card.provider,
        "model": card.model,
        "currency": card.currency,
        "batch": batch,
        "official_price": card.official,
        "price_verified_on": card.verified_on,
        "cost_expected": total,
        # Sampling band of the sum of n_runs runs (CLT) plus the uncertainty of the sample mean itself.
        "cost_p05": max(total - Z95 * np.sqrt(total_sd**2 + (n_runs * sd / np.sqrt(samples)) ** 2), 0.0),
        "cost_p95": total + Z95 * np.sqrt(total_sd**2 + (n_runs * sd / np.sqrt(samples)) ** 2),
        "cost_per_run_p50": float(np.quantile(per_run, 0.5)),
        "cost_per_run_p90": float(np.quantile(per_run, 0.9)),
        "cost_per_run_p99": float(np.quantile(per_run, 0.99)),
        "cache_write_share": float(parts["input_cache_write"].sum() * m / max(per_run.sum(), 1e-300)),
        "cached_share_of_input": float(c["cached_tokens"].sum() / max(c["input_tokens"].sum(), 1)),
        "input_tokens_per_run_p50": float(np.quantile(c["input_tokens"], 0.5)),
        "input_tokens_per_run_p95": float(np.quantile(c["input_tokens"], 0.95)),
        "completion_tokens_per_run": float(c["completion_tokens"].mean()),
        "steps_per_run": float(c["steps"].mean()),
        "unresolved_share": float(1 - c["resolved"].mean()),
        "token_sizes": route.calibrated.describe() if route.calibrated else "assumed",
    }
    if batch:
        row.update(duration_h=None, binding="batch (completion window)", longest_run_h=None)
    else:
        row.update(_duration(c, n_runs, limits))
    return row


def estimate_campaign(
    name: str,
    tasks: int,
    runs_per_task: int | None = None,
    tier: str | None = None,
    models: tuple[tuple[str, str], ...] | None = None,
    catalog: Catalog | None = None,
    as_of: dt.date | None = None,
    samples: int = 2000,
    variants: bool = True,
    overrides: dict | None = None,
    agent_overrides: dict | None = None,
    calibration=None,
) -> CampaignEstimate:
    """Cost band per model/provider and duration at `tier` of `tasks` tasks x `runs_per_task` runs.

    With `variants`, K2.6 on Moonshot is also priced with earlier reasoning dropped (a harness that strips it;
    Kimi refuses that with thinking on), with caching off, with tasks that
    take half and twice the steps (the assumption band) and, for single-turn presets, on the Batch API.
    `calibration` (a file or a `Calibration` with a route named like the preset) replaces the per-step laws it
    measured on the rows of its model (`kimiplan.catalog.calibrated`); the `token_sizes` column says which."""
    from kimiplan.catalog.calibrated import apply_calibration, same_model
    from kimiplan.model.calibration import Calibration, load_calibration

    p = preset(name)
    cal = calibration if calibration is None or isinstance(calibration, Calibration) else load_calibration(calibration)
    if cal is not None and p.name not in cal.routes:
        raise ConfigError(
            f"calibration {calibration if not isinstance(calibration, Calibration) else '(in memory)'} has no route "
            f"{p.name!r} (it has {', '.join(sorted(cal.routes))}): sample the preset's steps under that route name"
        )

    def build(*args, **kwargs) -> Scenario:
        sc = campaign_scenario(*args, **kwargs)
        return apply_calibration(sc, cal) if cal is not None and same_model(cal.model, sc.model) else sc

    if not isinstance(tasks, int) or tasks <= 0:
        raise ConfigError(f"tasks must be a whole number > 0, got {tasks!r}")
    runs_per_task = p.runs_per_task if runs_per_task is None else runs_per_task
    if not isinstance(runs_per_task, int) or runs_per_task <= 0:
        raise ConfigError(f"runs must be a whole number > 0, got {runs_per_task!r}")
    if not 50 <= samples <= 200_000:
        raise ConfigError(f"samples must be in [50, 200000], got {samples}")
    catalog = catalog or load_catalog()
    as_of = as_of or dt.date.today()
    n_runs = tasks * runs_per_task
    limits = None
    if tier is not None:
        t = rate_tier(build(p, as_of=as_of, tier=tier), catalog)
        limits = t.limits()
    rows = []
    for provider, model in models or DEFAULT_MODELS:
        try:
            card = catalog.price(model, provider, on=as_of)
        except CatalogError:
            continue
        sc = build(p, model, provider, as_of, overrides=overrides, agent_overrides=agent_overrides)
        # Moonshot's tiers are per account and shared across models; other providers' limits are not in the catalog.
        row = _estimate_one(sc, card, n_runs, samples, limits if provider == "moonshot" else None)
        rows.append({"variant": "as assumed", **row})
    if variants:
        card = catalog.price("kimi-k2.6", "moonshot", on=as_of)
        base_agent = {**p.route["agent"], **(agent_overrides or {})}
        single_turn = base_agent.get("max_steps") == 1
        tries = (
            []
            if single_turn
            else [
                ("reasoning dropped (not Kimi)", {}, {"preserve_thinking": False}),
                ("caching off", {"cache": {"mode": "none"}}, {}),
            ]
        )
        steps = base_agent["steps"]
        if isinstance(steps, dict) and steps.get("kind") == "lognormal":
            half = {**steps, "median": steps["median"] / 2, "p95": steps["p95"] / 2}
            double = {**steps, "median": steps["median"] * 2, "p95": steps["p95"] * 2}
            tries += [
                ("tasks take half the steps", {}, {"steps": half}),
                ("tasks take twice the steps", {}, {"steps": double}),
            ]
        for label, ov, aov in tries:
            sc = build(
                p,
                "kimi-k2.6",
                "moonshot",
                as_of,
                overrides={**(overrides or {}), **ov},
                agent_overrides={**base_agent, **aov},
            )
            rows.append({"variant": label, **_estimate_one(sc, card, n_runs, samples, limits)})
        if single_turn and card.batch_multiplier is not None:
            sc = build(p, "kimi-k2.6", "moonshot", as_of, overrides=overrides, agent_overrides=agent_overrides)
            rows.append({"variant": "Batch API", **_estimate_one(sc, card, n_runs, samples, None, batch=True)})
    return CampaignEstimate(
        p.name, tasks, runs_per_task, tier, pd.DataFrame(rows), dict(p.assumptions), dict(p.official)
    )
