"""The calibration path a newcomer takes from the CLI: an emulator serving the scenario's routes, a sample run
that needs no key against it, a run where every call fails exits non-zero with the reason, and a company gateway
is accepted only when asked for explicitly."""

from __future__ import annotations

import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario, rate_tier
from kimiplan.cli import main
from kimiplan.cli.calibration_cmds import emulator_config_for_scenario
from kimiplan.client import KimiConfig
from kimiplan.emulator import EmulatorConfig, emulator
from kimiplan.io.paths import data_path

SAMPLER = str(data_path("calibrations", "support_chat_sampler.yaml"))


@pytest.mark.parametrize("name", ["support_chat", "document_report", "coding_assistant"])
def test_emulator_serves_the_scenarios_routes(name):
    catalog = load_catalog()
    sc = load_scenario(name, catalog)
    cfg = emulator_config_for_scenario(sc, catalog)
    assert list(cfg.routes) == [r.name for r in sc.routes]
    for r in sc.routes:
        truth = cfg.routes[r.name].output
        assert truth.median == pytest.approx(max(float(r.output.quantile(0.5)), 1.0))
    tier = rate_tier(sc, catalog)
    if tier is not None:
        for k, v in tier.limits().items():
            if k in ("concurrency", "rpm", "tpm", "tpd"):
                assert getattr(cfg.limits, k) == v


def _sample(capsys, base_url, store):
    code = main(
        [
            "calibrate", "sample", SAMPLER, "--store", str(store), "--model", "kimi-k2.6",
            "--base-url", base_url, "--time-scale", "0.001", "--no-progress",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_against_the_scenarios_emulator_needs_no_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOONSHOT_API_KEY", raising=False)
    cfg = emulator_config_for_scenario(load_scenario("support_chat")).model_copy(update={"time_scale": 0.001})
    with emulator(cfg) as em:
        code, out, err = _sample(capsys, em.base_url, tmp_path / "calls.jsonl")
    assert code == 0, err
    assert "completed 40" in out and "failed 0" in out


def test_every_call_failing_exits_non_zero_with_the_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOONSHOT_API_KEY", raising=False)
    with emulator(EmulatorConfig(time_scale=0.001)) as em:  # knows only the route "default"
        code, out, err = _sample(capsys, em.base_url, tmp_path / "calls.jsonl")
    assert code == 1
    assert "every call failed (40 of 40)" in err and "unknown route 'answer'" in err
    assert "--scenario" in err


def test_a_gateway_needs_an_explicit_allow(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test-not-a-key")
    gw = "https://llm-gateway.example.com/v1"
    code, out, err = _sample(capsys, gw, tmp_path / "calls.jsonl")
    assert code == 2 and "--allow-base-url" in err and "Traceback" not in err
    assert not (tmp_path / "calls.jsonl").exists()
    assert KimiConfig(model="kimi-k2.6", base_url=gw + "/", allowed_base_urls=(gw,)).base_url == gw
    with pytest.raises(ValueError):
        KimiConfig(model="kimi-k2.6", base_url=gw)
    with pytest.raises(ValueError):
        KimiConfig(model="kimi-k2.6", base_url="ftp://x/v1", allowed_base_urls=("ftp://x/v1",))
