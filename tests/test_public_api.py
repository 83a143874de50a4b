"""The public namespace, name by name (as pandas pins its own): an accidental addition or loss fails here."""

from __future__ import annotations

import subprocess
import sys

import kimiplan as kp

EXPECTED = [
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

VIZ = [
    "budget_tradeoff_figure",
    "cached_input_figure",
    "context_growth_figure",
    "cost_breakdown_figure",
    "cost_per_step_figure",
    "fan_chart",
    "headroom_figure",
    "predicted_vs_observed_figure",
    "route_area_chart",
    "setup_notebook",
    "tier_ladder_figure",
    "tier_tables_figure",
    "token_breakdown_figure",
    "utilization_figure",
    "variants_chart",
    "waterfall_chart",
]


def test_public_names():
    assert sorted(kp.__all__) == sorted(EXPECTED)
    # every lazily loaded name is public, and every public name loads
    assert set(kp._EXPORTS) | set(kp._SUBMODULES) | {"__version__"} == set(EXPECTED)


def test_every_public_name_resolves():
    for name in EXPECTED:
        assert getattr(kp, name) is not None, name
    assert sorted(kp.viz.__all__) == VIZ
    for name in VIZ:
        assert callable(getattr(kp.viz, name)), name
    # the other curated namespaces a notebook reaches through kp: the local emulator, and the command line
    assert {"emulator", "EmulatorConfig", "RouteTruth", "LogNormalTruth"} <= set(kp.emulator.__all__)
    assert callable(kp.emulator.emulator) and callable(kp.cli.main)


def test_unknown_name_is_an_attribute_error():
    try:
        kp.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("kp.no_such_thing did not raise")


def test_import_is_lazy():
    # `import kimiplan` must not pull in the heavy engines (the CLI's --help stays fast).
    heavy = "('numba', 'scipy', 'plotly', 'openai', 'pandas')"
    code = f"import sys, kimiplan; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_front_door_in_a_fresh_process():
    code = (
        "import kimiplan as kp; p = kp.plan(kp.load_scenario('support_chat')); "
        "print(type(p).__name__); print(p.describe()); print(len(p._repr_html_()))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    name, *text = r.stdout.splitlines()
    assert name == "CapacityPlan"
    assert "Tier" in "\n".join(text) and int(text[-1]) > 100


def test_count_tokens_text_and_messages():
    n_text = kp.count_tokens("hello world")
    n_msgs = kp.count_tokens([{"role": "user", "content": "hello world"}])
    assert n_text > 0 and n_msgs > n_text


def test_dir_shows_only_the_public_names():
    assert dir(kp) == sorted(EXPECTED)
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(dir(kp))
