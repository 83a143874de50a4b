"""Evaluation campaigns: cost and duration against hand calculations, and the CLI for 500 SWE-Bench tasks."""

import datetime as dt
import json

import pytest

from kimiplan.cli import main
from kimiplan.errors import ConfigError
from kimiplan.finance.campaign import PRESETS, estimate_campaign

ON = dt.date(2026, 11, 29)
FIXED = {"overhead_tokens": 0, "user": 250, "reasoning": 10000, "output": 500, "latency": {"total_s": 100}}


def test_single_turn_math_by_hand(catalog):
    est = estimate_campaign(
        "math",
        30,
        tier="Tier3",
        catalog=catalog,
        as_of=ON,
        overrides=FIXED,
        samples=200,
        models=(("moonshot", "kimi-k2.6"),),
    )
    c = est.costs.set_index("variant")
    base = c.loc["as assumed"]
    # One run: 250 x 0.95 + (10,000 + 500) x 4.00 per 1M = $0.0422375; 30 problems x 32 runs = 960 runs.
    assert est.runs_per_task == 32 and base["cost_expected"] == pytest.approx(960 * 0.0422375, rel=1e-12)
    assert base["cost_p05"] == pytest.approx(base["cost_p95"])  # nothing varies: no band
    assert c.loc["Batch API", "cost_expected"] == pytest.approx(0.6 * 960 * 0.0422375, rel=1e-12)
    # Each run reserves 250 + 98,304 against TPM; one call each; 100 s in the model.
    t = catalog.tier("Tier3", on=ON)
    bounds = {
        "tpm": 960 * (250 + 98304) / t.tpm / 60,
        "rpm": 960 / t.rpm / 60,
        "concurrency": 960 * 100 / t.concurrency / 3600,
        "run length": 100 / 3600,
    }
    assert base["duration_h"] == pytest.approx(max(bounds.values()))
    assert base["binding"] == max(bounds, key=bounds.get)


def test_agentic_preset_defaults_match_published_measurements(catalog):
    # The SWE preset's assumptions are tuned to the published per-task figures (agent-workloads.md).
    est = estimate_campaign("swe-bench", 10, catalog=catalog, as_of=ON, samples=3000, variants=False)
    k26 = est.costs.set_index(["provider", "model"]).loc[("moonshot", "kimi-k2.6")]
    assert 1.5e6 < k26["input_tokens_per_run_p50"] < 3.5e6 and 20e3 < k26["completion_tokens_per_run"] < 60e3
    assert 0.85 < k26["cached_share_of_input"] < 0.95
    # Cache writes are a cost only on the K3 family.
    writes = est.costs.set_index("model")["cache_write_share"]
    assert writes["kimi-k2.6"] == 0 and writes["kimi-k3.1-pro"] > 0


def test_variants_move_the_cost_the_right_way(catalog):
    est = estimate_campaign(
        "swe-bench", 100, catalog=catalog, as_of=ON, samples=800, models=(("moonshot", "kimi-k2.6"),)
    )
    c = est.costs.set_index("variant")["cost_expected"]
    assert c["caching off"] > c["as assumed"] > c["reasoning dropped (not Kimi)"]
    assert c["tasks take half the steps"] < c["as assumed"] < c["tasks take twice the steps"]


def test_bad_inputs_name_the_field(catalog):
    with pytest.raises(ConfigError, match="tasks"):
        estimate_campaign("swe-bench", 0, catalog=catalog)
    with pytest.raises(ConfigError, match="runs"):
        estimate_campaign("swe-bench", 5, -1, catalog=catalog)
    with pytest.raises(ConfigError, match="unknown campaign preset 'mmlu'"):
        estimate_campaign("mmlu", 5, catalog=catalog)


def test_cli_500_swe_tasks_prints_band_and_duration(capsys):
    assert (
        main(["campaign", "swe-bench", "--tasks", "500", "--tier", "Tier3", "--on", "2026-11-29", "--samples", "500"])
        == 0
    )
    out = capsys.readouterr().out
    assert "500 tasks x 5 runs = 2,500 agent runs, at Tier3" in out
    line = next(ln for ln in out.splitlines() if "as assumed" in ln and "kimi-k2.6" in ln)
    assert line.count("$") >= 3 and ("days" in line or " h " in line)
    assert "Assumptions" in out
    assert (
        main(
            [
                "campaign",
                "swe-bench",
                "--tasks",
                "500",
                "--tier",
                "Tier3",
                "--on",
                "2026-11-29",
                "--samples",
                "500",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    k26 = next(e for e in d["estimates"] if e["model"] == "kimi-k2.6" and e["variant"] == "as assumed")
    assert 0 < k26["cost_p05"] < k26["cost_expected"] < k26["cost_p95"] and k26["duration_h"] > 0
    assert d["official_budgets"] == PRESETS["swe-bench"].official and d["runs_per_task"] == 5
