"""Prompts built to a scenario's own component sizes (calibrate sample --from-scenario), and the shipped ones."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kimiplan.calibration.prompts import route_prompts, scenario_prompts, text_of
from kimiplan.calibration.sampler import load_prompts
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main
from kimiplan.cli.calibration_cmds import emulator_config_for_scenario
from kimiplan.emulator import emulator
from kimiplan.errors import ConfigError
from kimiplan.finance.forecast import unit_stats
from kimiplan.io.paths import data_path
from kimiplan.tokens.tokenizer import count_messages, count_text


@pytest.mark.parametrize("tokens", [1, 2, 7, 40, 333, 1800])
def test_text_of_has_exactly_the_tokens_asked_for(tokens):
    from kimiplan.calibration import prompts as P

    t = text_of(tokens, np.random.default_rng(tokens), P._ARTICLE)
    assert count_text(t) == tokens
    assert len(t.split()) >= min(tokens // 3, 10)  # words, not filler


def test_prompts_render_to_the_input_the_scenario_assumes():
    sc = load_scenario("support_chat")
    units = unit_stats(sc, load_catalog().price("kimi-k2.6"))
    exp = units.expected.set_index("route")
    ps = scenario_prompts(sc, ["answer", "summarize_ticket"], n=150)
    for name, prompts in ps.items():
        c = np.array([count_messages(p) for p in prompts], float)
        want = float(exp.loc[name, ["system", "history", "rag", "documents", "user", "overhead"]].sum())
        # within 4 standard errors of the scenario's expected input (the prompts are a sample of its laws),
        # plus a token per joined part for the separators
        assert abs(c.mean() - want) <= 4 * c.std() / math.sqrt(len(c)) + 8, (name, c.mean(), want)
        assert len({p[0]["content"] for p in prompts}) == 1  # one system prompt per route: a cacheable prefix


def test_routes_synthetic_prompts_cannot_stand_in_for_are_refused():
    sc = load_scenario("support_chat")
    web = next(r for r in sc.routes if r.name == "web_lookup")
    with pytest.raises(ConfigError, match="web_search"):
        route_prompts(web, 5)
    with pytest.raises(ConfigError, match="not in scenario"):
        scenario_prompts(sc, ["nope"])


def test_shipped_prompts_match_the_support_chat_scenario():
    # The shipped prompts were about a tenth of the input support_chat assumes; now they are built to its sizes.
    sc = load_scenario("support_chat")
    exp = unit_stats(sc, load_catalog().price("kimi-k2.6")).expected.set_index("route")
    for name in ("answer", "summarize_ticket"):
        c = np.array([count_messages(p) for p in load_prompts(data_path("prompts", f"{name}.jsonl"))], float)
        want = float(exp.loc[name, ["system", "history", "rag", "documents", "user", "overhead"]].sum())
        assert abs(c.mean() / want - 1) < 0.25, (name, c.mean(), want)


def test_cli_from_scenario_until_precision_says_the_input_was_synthetic(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOONSHOT_API_KEY", raising=False)
    sc = load_scenario("support_chat")
    cfg = emulator_config_for_scenario(sc).model_copy(update={"time_scale": 0.001, "stream_chunk_tokens": 1024})
    store = tmp_path / "calls.jsonl"
    with emulator(cfg) as em:
        code = main(
            [
                "calibrate", "sample", "--from-scenario", "support_chat", "--store", str(store),
                "--model", "kimi-k2.6", "--base-url", em.base_url, "--no-progress", "--time-scale", "0.001",
                "--until-precision", "0.1", "--max-calls", "600", "--prompts-per-route", "20",
            ]
        )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert "target reached on every route" in out and "web_lookup" in err
    cal_path = tmp_path / "cal.json"
    assert main(["calibrate", "fit", str(store), "-o", str(cal_path)]) == 0
    out, _ = capsys.readouterr()
    assert "Cost (USD/request)" in out and "± at 95 %" in out and "wrote " in out
    cal = json.loads(cal_path.read_text())
    assert "synthetic" in cal["notes"]
    for name in ("answer", "summarize_ticket"):
        r = cal["routes"][name]
        assert r["prompt_source"].startswith("synthetic")
        assert r["precision"]["cost_rel_error"] <= 0.11
