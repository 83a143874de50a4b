"""kimiplan: plan Kimi in production — tokens per route, rate-limit headroom, monthly cost.

The front door (``import kimiplan as kp``)::

    sc = kp.load_scenario("support_chat")      # a bundled example, or a YAML/JSON file
    kp.plan(sc).describe()                       # the capacity verdict
    kp.forecast(sc, 12).monthly                  # monthly spend with Monte Carlo bands

Names load on first use (PEP 562), so ``import kimiplan`` and the CLI stay fast. Everything else lives in the
subpackages (``kimiplan.capacity``, ``kimiplan.finance`` ...); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (a module itself when the value is None)
_EXPORTS: dict[str, str] = {
    "load_scenario": "kimiplan.catalog.resolve",
    "load_catalog": "kimiplan.catalog.cards",
    "count_tokens": "kimiplan.tokens.tokenizer",
    "expected_cost": "kimiplan.finance.cost",
    "cost_of_usage": "kimiplan.finance.cost",
    "forecast": "kimiplan.finance.forecast",
    "compare": "kimiplan.finance.variants",
    "standard_variants": "kimiplan.finance.variants",
    "runway": "kimiplan.finance.balance",
    "backtest": "kimiplan.finance.backtest",
    "plan": "kimiplan.capacity.plan",
    "simulate": "kimiplan.capacity.sim.simulate",
    "sweep": "kimiplan.sweeps.run",
    "diff": "kimiplan.review.diff",
    "check": "kimiplan.review.policy",
    "CalibrationFitter": "kimiplan.calibration.fitters",
    "apply_calibration": "kimiplan.catalog.calibrated",
    "load_calibration": "kimiplan.model.calibration",
    "KimiClient": "kimiplan.client",
    "write_report": "kimiplan.report.html",
    "price_card": "kimiplan.catalog.resolve",
    "rate_tier": "kimiplan.catalog.resolve",
    "Usage": "kimiplan.finance.cost",
    "cost_summary": "kimiplan.finance.cost",
    "parse_scenario": "kimiplan.model.scenario",
    "count_messages": "kimiplan.tokens.tokenizer",
    "count_text": "kimiplan.tokens.tokenizer",
    "context_check": "kimiplan.workload.draws",
    "expected_tokens": "kimiplan.workload.draws",
    "verdict_warnings": "kimiplan.workload.checks",
    "budget_curve": "kimiplan.capacity.budgets",
    "recommend_budgets": "kimiplan.capacity.budgets",
    "growth_exhaustion": "kimiplan.capacity.plan",
    "tier_headroom": "kimiplan.capacity.plan",
    "erlang_b": "kimiplan.capacity.plan",
    "SimSettings": "kimiplan.capacity.sim.simulate",
    "ClientPolicy": "kimiplan.capacity.sim.simulate",
    "exhaustion": "kimiplan.finance.balance",
    "tier_recharge": "kimiplan.finance.balance",
    "topup_needed": "kimiplan.finance.balance",
    "monthly_by": "kimiplan.finance.forecast",
    "compare_monthly": "kimiplan.finance.variants",
    "run_variants": "kimiplan.finance.variants",
    "waterfall": "kimiplan.finance.variants",
    "export_forecast": "kimiplan.io.export",
    "data_path": "kimiplan.io.paths",
    "table": "kimiplan.io.tables",
    "fit_calibration": "kimiplan.calibration.fitters",
    "generate_call_log": "kimiplan.logs",
    "summarize_log": "kimiplan.logs",
    "agent_capacity": "kimiplan.capacity.agent_steps",
    "agent_stats": "kimiplan.finance.agents",
    "estimate_campaign": "kimiplan.finance.campaign",
    "model_variant": "kimiplan.finance.variants",
    "steps_frame": "kimiplan.workload.agent",
    "KimiConfig": "kimiplan.client",
    "RetryPolicy": "kimiplan.client",
    "run_sampler": "kimiplan.calibration.sampler",
    "SamplerConfig": "kimiplan.calibration.sampler",
    "RouteSampling": "kimiplan.calibration.sampler",
    "samples_frame": "kimiplan.calibration.fitters",
    "samples_needed": "kimiplan.calibration.fitters",
    "predicted_vs_observed": "kimiplan.calibration.fitters",
    "LogNormalFitter": "kimiplan.calibration.fitters",
}
_SUBMODULES = ("viz", "emulator", "cli")  # curated namespaces: kp.viz.*, kp.emulator.*, kp.cli.main

__all__ = [  # pinned name by name in tests/test_public_api.py
    "__version__",
    "agent_capacity",
    "agent_stats",
    "apply_calibration",
    "backtest",
    "budget_curve",
    "CalibrationFitter",
    "check",
    "cli",
    "ClientPolicy",
    "compare",
    "compare_monthly",
    "context_check",
    "cost_of_usage",
    "cost_summary",
    "count_messages",
    "count_text",
    "count_tokens",
    "data_path",
    "diff",
    "emulator",
    "erlang_b",
    "estimate_campaign",
    "exhaustion",
    "expected_cost",
    "expected_tokens",
    "export_forecast",
    "fit_calibration",
    "forecast",
    "generate_call_log",
    "growth_exhaustion",
    "KimiClient",
    "KimiConfig",
    "load_calibration",
    "load_catalog",
    "load_scenario",
    "LogNormalFitter",
    "model_variant",
    "monthly_by",
    "parse_scenario",
    "plan",
    "predicted_vs_observed",
    "price_card",
    "rate_tier",
    "recommend_budgets",
    "RetryPolicy",
    "RouteSampling",
    "run_sampler",
    "run_variants",
    "runway",
    "SamplerConfig",
    "samples_frame",
    "samples_needed",
    "SimSettings",
    "simulate",
    "standard_variants",
    "steps_frame",
    "summarize_log",
    "sweep",
    "table",
    "tier_headroom",
    "tier_recharge",
    "topup_needed",
    "Usage",
    "verdict_warnings",
    "viz",
    "waterfall",
    "write_report",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from kimiplan import cli, emulator, viz
    from kimiplan.calibration.fitters import (
        CalibrationFitter,
        LogNormalFitter,
        fit_calibration,
        predicted_vs_observed,
        samples_frame,
        samples_needed,
    )
    from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, run_sampler
    from kimiplan.capacity.agent_steps import agent_capacity
    from kimiplan.capacity.budgets import budget_curve, recommend_budgets
    from kimiplan.capacity.plan import erlang_b, growth_exhaustion, plan, tier_headroom
    from kimiplan.capacity.sim.simulate import ClientPolicy, SimSettings, simulate
    from kimiplan.catalog.calibrated import apply_calibration
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario, price_card, rate_tier
    from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
    from kimiplan.finance.agents import agent_stats
    from kimiplan.finance.backtest import backtest
    from kimiplan.finance.balance import exhaustion, runway, tier_recharge, topup_needed
    from kimiplan.finance.campaign import estimate_campaign
    from kimiplan.finance.cost import Usage, cost_of_usage, cost_summary, expected_cost
    from kimiplan.finance.forecast import forecast, monthly_by
    from kimiplan.finance.variants import (
        compare,
        compare_monthly,
        model_variant,
        run_variants,
        standard_variants,
        waterfall,
    )
    from kimiplan.io.export import export_forecast
    from kimiplan.io.paths import data_path
    from kimiplan.io.tables import table
    from kimiplan.logs import generate_call_log, summarize_log
    from kimiplan.model.calibration import load_calibration
    from kimiplan.model.scenario import parse_scenario
    from kimiplan.report.html import write_report
    from kimiplan.review.diff import diff
    from kimiplan.review.policy import check
    from kimiplan.sweeps.run import sweep
    from kimiplan.tokens.tokenizer import count_messages, count_text, count_tokens
    from kimiplan.workload.agent import steps_frame
    from kimiplan.workload.checks import verdict_warnings
    from kimiplan.workload.draws import context_check, expected_tokens


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"kimiplan.{name}")
    else:
        raise AttributeError(f"module 'kimiplan' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    # The public names only: not the module's own helpers (`Any`, `importlib`, `annotations` ...).
    return sorted(__all__)
