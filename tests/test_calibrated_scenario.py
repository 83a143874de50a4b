"""One calibrated scenario, used everywhere: a `calibration:` field reaches every command, what was measured
(input as sent, cache, output, server overhead, latency) replaces what was assumed unless pinned, and the
figures say where they come from. Bad calibration files are errors or warnings naming file and route."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pytest
import yaml

from kimiplan.calibration.fitters import fit_calibration, samples_frame
from kimiplan.catalog.calibrated import apply_calibration, cached_share, input_mean
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main
from kimiplan.errors import ConfigError
from kimiplan.model.scenario import example_path, parse_scenario
from kimiplan.workload.draws import draw_route, route_context

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def records(route: str, n: int, *, prompt: float, cached_share: float, hit: float, out_median: float, seed: int,
            base_url: str = "https://api.moonshot.ai/v1", model: str = "kimi-k2.6", every_s: float = 1.0,
            overhead: int = 17, budget: int = 2048):  # fmt: skip
    """Calls as a sampler store would hold them, drawn from known laws (what a real API would have answered)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = int(rng.normal(prompt, prompt * 0.1))
        is_hit = rng.random() < hit
        cached = int(p * cached_share / hit) if is_hit else 0
        o = int(min(rng.lognormal(np.log(out_median), 0.6), budget))
        ttft = float(rng.lognormal(np.log(0.7), 0.3))
        out.append(
            {
                "id": f"{route}-{i}",
                "status": "ok",
                "route": route,
                "model": model,
                "provenance": "live",
                "base_url": base_url,
                "time": (T0 + dt.timedelta(seconds=i * every_s)).isoformat(),
                "prompt_tokens": p,
                "local_prompt_tokens": p - overhead,
                "cached_tokens": cached,
                "completion_tokens": o,
                "output_tokens": o,
                "reasoning_tokens": 0,
                "finish_reason": "length" if o >= budget else "stop",
                "max_completion_tokens": budget,
                "thinking": False,
                "ttft_s": ttft,
                "total_s": ttft + o / float(rng.lognormal(np.log(60.0), 0.2)),
            }
        )
    return out


@pytest.fixture(scope="module")
def calibration():
    rows = records("answer", 300, prompt=900, cached_share=0.3, hit=0.6, out_median=120, seed=1)
    rows += records("summarize_ticket", 200, prompt=500, cached_share=0.0, hit=0.5, out_median=90, seed=2, budget=1024)
    return fit_calibration(samples_frame(rows))


@pytest.fixture()
def calibrated_file(tmp_path, calibration):
    """support_chat with `calibration:` on two routes (relative to the scenario file); web_lookup stays assumed."""
    (tmp_path / "cal").mkdir()
    calibration.save(tmp_path / "cal" / "support.json")
    data = yaml.safe_load(example_path("support_chat").read_text())
    for r in data["routes"]:
        if r["name"] in ("answer", "summarize_ticket"):
            r["calibration"] = "cal/support.json"
    p = tmp_path / "support_cal.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_load_scenario_applies_the_measured_input_cache_output_and_says_so(calibrated_file, calibration):
    assumed = load_scenario("support_chat")
    sc = load_scenario(calibrated_file)
    ans, base = sc.route("answer"), assumed.route("answer")
    rc = calibration.routes["answer"]
    assert ans.calibrated is not None and sc.route("web_lookup").calibrated is None
    assert ans.calibrated.calls == 300 and ans.calibrated.date == dt.date(2026, 11, 20)
    assert set(ans.calibrated.applied) >= {"input", "cache", "output", "server_overhead", "latency"}
    assert ans.calibrated.describe().startswith("calibrated from 300 calls on 2026-11-20")
    # The route's own draws (workload, not the code that scaled it) average the measured prompt and cached share.
    d = draw_route(ans, 200_000, np.random.default_rng(0), route_context(sc, ans))
    assert d["input_tokens"].mean() == pytest.approx(rc.prompt_tokens.value, rel=0.01)
    assert d["cached_tokens"].mean() / d["input_tokens"].mean() == pytest.approx(rc.cached_fraction.value, abs=0.01)
    # The components keep their split (system stays the same share of the text) and the assumption is shown.
    assert ans.system.mean() / base.system.mean() == pytest.approx(
        ans.rag.chunk_tokens.mean() / base.rag.chunk_tokens.mean(), rel=1e-3
    )  # one factor (up to the 1/100-token rounding of the written values)
    diffs = {x.quantity: x for x in ans.calibrated.differences}
    assert diffs["input"].assumed == pytest.approx(input_mean(base)) and diffs["input"].used == "measured"
    text = diffs["input"].describe()
    m = rc.prompt_tokens
    assert text.startswith(
        f"assumed {input_mean(base):,.0f} input tokens per call; 300 calls measured {m.value:,.0f} ± "
        f"{m.ci[1] - m.value:,.0f}"
    )


@pytest.mark.parametrize(
    "route",
    [
        {"system": 1200, "user": {"kind": "lognormal", "median": 60, "p95": 300}},
        {
            "system": {"kind": "normal", "mean": 800, "sd": 100},
            "history": {
                "turns": {"kind": "poisson", "mean": 3},
                "tokens_per_turn": {"kind": "exponential", "mean": 150},
            },
            "user": 40,
        },  # fmt: skip
        {
            "system": 300,
            "rag": {"top_k": 4, "chunk_tokens": {"kind": "uniform", "low": 200, "high": 600}},
            "user": {"kind": "poisson", "mean": 50},
            "cache": {"prefix": ["system", "rag"], "hit_rate": 0.2},
        },  # fmt: skip
        {
            "system": 2000,
            "documents": {"probability": 0.4, "pages": 3, "tokens_per_page": 500},
            "user": 80,
            "overhead_tokens": 12,
        },  # fmt: skip
        {
            "system": {"kind": "empirical", "samples": [500, 900, 1400]},
            "user": {"kind": "texts", "texts": ["hi " * 50]},
            "cache": {"mode": "none"},
        },  # fmt: skip
    ],
)
@pytest.mark.parametrize("prompt,share", [(700, 0.2), (3000, 0.5), (1500, 0.0)])
def test_calibrated_route_draws_match_the_measurement_over_a_grid(route, prompt, share):
    """catalog.calibrated sets the laws from closed-form means; workload.draw_route samples them. Held together
    over route shapes x measurements: mean input and cached share as measured."""
    sc = parse_scenario(
        {
            "model": "kimi-k2.6",
            "as_of": "2026-11-26",
            "traffic": {"requests_per_day": 100000},
            "routes": [{"name": "r", "share": 1, "output": 100, **route}],
        }
    )
    cal = fit_calibration(samples_frame(records("r", 200, prompt=prompt, cached_share=share, hit=0.7, out_median=80,
                                                seed=prompt)))  # fmt: skip
    rc = cal.routes["r"]
    before = sc.route("r")
    d0 = draw_route(before, 100_000, np.random.default_rng(2), route_context(sc, before))
    assert input_mean(before) == pytest.approx(d0["input_tokens"].mean(), rel=0.015)  # closed form = draws
    r = apply_calibration(sc, cal).route("r")
    d = draw_route(r, 100_000, np.random.default_rng(1), route_context(sc, r))
    assert d["input_tokens"].mean() == pytest.approx(rc.prompt_tokens.value, rel=0.015)
    got = d["cached_tokens"].mean() / d["input_tokens"].mean()
    assert got == pytest.approx(rc.cached_fraction.value, abs=0.015)
    assert cached_share(r) == pytest.approx(got, abs=0.015)  # the closed form the report shows agrees too


def test_pin_keeps_the_assumption_and_shows_both(calibrated_file):
    data = yaml.safe_load(calibrated_file.read_text())
    data["routes"][0]["pin"] = ["input", "cache"]
    calibrated_file.write_text(yaml.safe_dump(data, sort_keys=False))
    base = load_scenario("support_chat").route("answer")
    ans = load_scenario(calibrated_file).route("answer")
    assert ans.system == base.system and ans.rag == base.rag and ans.cache == base.cache
    assert ans.output != base.output  # what is not pinned is still measured
    d = {x.quantity: x for x in ans.calibrated.differences}
    assert d["input"].used == "assumed" and "pinned" in d["input"].describe()
    assert ans.calibrated.pinned == ("input", "cache")


def test_scenario_level_calibration_and_a_route_it_lacks(tmp_path, calibration):
    calibration.save(tmp_path / "c.json")
    data = yaml.safe_load(example_path("support_chat").read_text())
    data["calibration"] = "c.json"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"route 'web_lookup'.*c\.json has no route of that name"):
        load_scenario(tmp_path / "s.yaml")
    data["routes"][2]["pin"] = ["all"]  # a route the sampler cannot reach keeps its assumptions, deliberately
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    sc = load_scenario(tmp_path / "s.yaml")
    assert [r.calibrated is not None for r in sc.routes] == [True, True, False]


def test_bad_calibration_files_name_file_and_route(tmp_path, calibrated_file, calibration):
    cal = calibrated_file.parent / "cal" / "support.json"
    good = cal.read_text()
    cal.unlink()
    with pytest.raises(ConfigError, match=r"support\.json.*does not exist"):
        load_scenario(calibrated_file)
    cal.write_text("{not json")
    with pytest.raises(ConfigError, match=r"support\.json.*is not JSON"):
        load_scenario(calibrated_file)
    data = json.loads(good)
    data["model"] = "kimi-k2.5"
    cal.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"route 'answer'.*support\.json.*model 'kimi-k2\.5'"):
        load_scenario(calibrated_file)
    data = json.loads(good)
    data["routes"]["extra_route"] = data["routes"].pop("summarize_ticket")
    cal.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"route 'summarize_ticket'.*no route of that name.*extra_route"):
        load_scenario(calibrated_file)


def test_warnings_stale_other_provider_sparse_traffic_and_extra_routes(tmp_path):
    from kimiplan.model.calibration import calibration_warnings

    rows = records("answer", 120, prompt=900, cached_share=0.4, hit=0.6, out_median=100, seed=3,
                   base_url="http://127.0.0.1:8765/v1", every_s=0.1)  # fmt: skip
    rows += records("other", 20, prompt=300, cached_share=0.0, hit=0.5, out_median=50, seed=4,
                    base_url="http://127.0.0.1:8765/v1")  # fmt: skip
    cal = fit_calibration(samples_frame(rows))
    sc = load_scenario("support_chat").with_changes(
        as_of=dt.date(2027, 3, 1), traffic={"requests_per_day": 500, "monthly_growth": 0.0}
    )
    w = "\n".join(calibration_warnings(apply_calibration(sc, cal)))
    assert "days older than the scenario's as_of 2027-03-01" in w
    assert "local emulator (http://127.0.0.1:8765/v1), not on moonshot" in w
    assert "also has route(s) other that this scenario lacks" in w
    assert "the sampler sent" in w and "calls/min" in w and "may overstate" in w
    fresh = apply_calibration(load_scenario("support_chat"), fit_calibration(samples_frame(rows[:120])))
    # The shipped scenario is busy (40,000/day); a 600-call/min sampler is still much faster, but not stale.
    assert "days older" not in "\n".join(calibration_warnings(fresh))


def test_an_older_calibration_file_still_applies_without_what_it_lacks():
    from kimiplan.io.paths import data_path

    sc = apply_calibration(load_scenario("support_chat"), data_path("calibrations", "support_chat_emulator.json"))
    ans = sc.route("answer")
    assert "input" not in ans.calibrated.applied and "output" in ans.calibrated.applied
    assert any("no measured prompt size" in w for w in ans.calibrated.warnings)


# --- every command ---------------------------------------------------------------------------------------------
def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_forecast_simulate_compare_give_calibrated_figures_and_say_so(capsys, calibrated_file):
    s = str(calibrated_file)
    a = _json(capsys, ["plan", "support_chat", "--json"])
    b = _json(capsys, ["plan", s, "--json"])
    assert a["demand"] != b["demand"]
    assert b["calibration"][0]["status"].startswith("calibrated from 300 calls on 2026-11-20")
    assert b["calibration"][2]["status"] == "assumed"
    fa = _json(capsys, ["forecast", "support_chat", "--months", "2", "--paths", "200", "--json"])
    fb = _json(capsys, ["forecast", s, "--months", "2", "--paths", "200", "--json"])
    assert fb["monthly"][0]["expected"] < 0.7 * fa["monthly"][0]["expected"]  # 900 measured against ~4,400 assumed
    assert main(["forecast", s, "--months", "2", "--paths", "200"]) == 0
    out = capsys.readouterr().out
    assert "route 'answer': calibrated from 300 calls on 2026-11-20" in out and "route 'web_lookup': assumed" in out
    assert "input tokens per call; 300 calls measured" in out
    sa = _json(capsys, ["simulate", "support_chat", "--hours", "0.05", "--json"])
    sb = _json(capsys, ["simulate", s, "--hours", "0.05", "--json"])
    assert sa["peak_usage"]["tpm"]["peak"] != sb["peak_usage"]["tpm"]["peak"]
    assert sb["calibration"][1]["status"].startswith("calibrated from 200 calls")
    assert main(["compare", s, "support_chat", "--months", "2", "--paths", "200"]) == 0
    out = capsys.readouterr().out
    assert "route 'summarize_ticket': calibrated from 200 calls" in out
    c = _json(capsys, ["compare", s, "support_chat", "--months", "2", "--paths", "200", "--json"])
    totals = {v["variant"]: v["expected_total"] for v in c["variants"]}
    assert totals["base"] < 0.7 * totals["support-chat"], totals  # the calibrated base against the assumed one


def test_report_and_sweep_and_backtest_say_which_routes_are_calibrated(capsys, tmp_path, calibrated_file):
    s = str(calibrated_file)
    assert main(["report", s, "-o", str(tmp_path / "r.html")]) == 0
    assert "route 'answer': calibrated from 300 calls" in capsys.readouterr().out
    html = (tmp_path / "r.html").read_text()
    assert "calibrated from 300 calls on 2026-11-20" in html
    assert "on 1 of 3 routes (web_lookup)" in html  # the "token sizes are assumptions" risk names only that one
    grid = tmp_path / "g.yaml"
    grid.write_text("tier: [Tier2, Tier3]\n")
    assert main(["sweep", s, "support_chat", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "support-chat: route 'answer': calibrated from 300 calls" in out
    from kimiplan.sweeps import sweep

    cal_cost = sweep(s, str(grid)).table["cost_per_month"]
    assumed_cost = sweep("support_chat", str(grid)).table["cost_per_month"]
    assert (cal_cost < 0.7 * assumed_cost).all()
    # The backtest takes tokens from the log, not the scenario's laws: figures are the same, and it says so.
    log = str(tmp_path / "log.csv")
    shutil.copy(_usage_log(), log)
    a = _json(capsys, ["backtest", "support_chat", log, "--json"])
    b = _json(capsys, ["backtest", s, log, "--json"])
    assert a["months"] == b["months"] and b["calibration"][0]["status"].startswith("calibrated from")


def _usage_log():
    from kimiplan.io.paths import data_path

    files = sorted(data_path("usage").glob("past_months_synthetic.csv"))
    assert files, "a support_chat usage log ships in data/usage"
    return files[0]


# --- calibrate apply ---------------------------------------------------------------------------------------------
def test_calibrate_apply_writes_a_scenario_that_validates_and_equals_the_applied_one(capsys, tmp_path, calibration):
    calibration.save(tmp_path / "c.json")
    out = tmp_path / "out" / "calibrated.yaml"
    out.parent.mkdir()
    assert main(["calibrate", "apply", "support_chat", str(tmp_path / "c.json"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "route 'answer': calibrated from 300 calls on 2026-11-20" in printed and "validates" in printed
    text = out.read_text()
    # Provenance as comments a reviewer reads in the diff: calls, dates, model, base URL.
    assert "#   calls 300, 2026-11-20 09:00 to 2026-11-20 09:04 UTC, model kimi-k2.6, provenance live" in text
    assert "base URL https://api.moonshot.ai/v1" in text and "# route web_lookup: assumed" in text
    written = load_scenario(out)
    applied = apply_calibration(load_scenario("support_chat"), calibration)
    for a, b in zip(written.routes, applied.routes, strict=True):
        assert a.model_dump(exclude={"calibrated", "calibration"}) == b.model_dump(
            exclude={"calibrated", "calibration"}
        )
        assert (a.calibrated is None) == (b.calibrated is None)
    assert written.route("answer").calibrated.differences == applied.route("answer").calibrated.differences
    # Nothing already written is overwritten without --force; the file is untouched.
    before = out.read_bytes()
    assert main(["calibrate", "apply", "support_chat", str(tmp_path / "c.json"), "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["calibrate", "apply", "support_chat", str(tmp_path / "c.json"), "-o", str(out), "--force"]) == 0


def test_calibrate_apply_names_a_calibration_that_covers_no_route(capsys, tmp_path):
    cal = fit_calibration(samples_frame(records("nothing_here", 20, prompt=300, cached_share=0, hit=0.5,
                                                out_median=50, seed=9)))  # fmt: skip
    cal.save(tmp_path / "c.json")
    assert main(["calibrate", "apply", "support_chat", str(tmp_path / "c.json"), "-o", str(tmp_path / "o.yaml")]) == 2
    err = capsys.readouterr().err
    assert "covers none of the routes" in err and "nothing_here" in err and not (tmp_path / "o.yaml").exists()


def test_logs_calibrate_writes_the_same_format_applied_the_same_way(capsys, tmp_path):
    from kimiplan.logs.generate import generate_call_log

    log = generate_call_log(tmp_path / "calls.parquet", 6000, seed=5, days=2)
    assert main(["logs", "calibrate", str(log), "-o", str(tmp_path / "c.json")]) == 0
    capsys.readouterr()
    out = tmp_path / "s.yaml"
    assert main(["calibrate", "apply", "support_chat", str(tmp_path / "c.json"), "-o", str(out)]) == 0
    capsys.readouterr()
    ans = load_scenario(out).route("answer")
    assert ans.calibrated.provenance == "usage-log" and "input" in ans.calibrated.applied


def test_campaign_takes_a_calibration_of_its_preset_route(capsys, tmp_path):
    # Per-step laws measured on K2.6 (output far longer than the preset assumes): K2.6 rows change, K3 rows do not.
    rows = records("math", 100, prompt=900, cached_share=0.0, hit=0.5, out_median=3000, seed=11, budget=32768)
    fit_calibration(samples_frame(rows)).save(tmp_path / "c.json")
    argv = ["campaign", "math", "--tasks", "100", "--on", "2026-11-26", "--samples", "200", "--no-variants", "--json"]
    a = _json(capsys, argv)["estimates"]
    b = _json(capsys, [*argv, "--calibration", str(tmp_path / "c.json")])["estimates"]
    by = {(r["model"], r["variant"]): r for r in b}
    for r in a:
        other = by[(r["model"], r["variant"])]
        if r["model"] == "kimi-k2.6":
            assert other["token_sizes"].startswith("calibrated from 100 calls")
            assert other["cost_expected"] != pytest.approx(r["cost_expected"], rel=0.05)
        else:
            assert other["token_sizes"] == "assumed" and other["cost_expected"] == r["cost_expected"]
    assert main([*argv[:-1], "--calibration", str(tmp_path / "c.json")]) == 0
    assert "token sizes on kimi-k2.6: calibrated from 100 calls" in capsys.readouterr().out
    assert main(["campaign", "swe-bench", "--tasks", "10", "--calibration", str(tmp_path / "c.json")]) == 2
    assert "has no route 'swe-bench' (it has math)" in capsys.readouterr().err


def test_tool_rounds_the_sampler_records_reach_a_search_route():
    # Records as the tool-calling sampler writes them: tool_rounds further calls, each search's result size.
    rows = records("web_lookup", 120, prompt=1000, cached_share=0.0, hit=0.5, out_median=200, seed=5)
    rng = np.random.default_rng(6)
    for r in rows:
        k = int(rng.poisson(2.0))
        r["tool_rounds"] = k
        r["rounds"] = [{"web_search_calls": 1, "web_search_result_tokens": int(rng.normal(3000, 300))}] * k + [
            {"web_search_calls": 0, "web_search_result_tokens": 0}
        ]
    cal = fit_calibration(samples_frame(rows))
    rc = cal.routes["web_lookup"]
    assert rc.tool_rounds.value == pytest.approx(np.mean([r["tool_rounds"] for r in rows]))
    assert rc.tool_result_tokens.value == pytest.approx(3000, rel=0.03)
    sc = load_scenario("support_chat")
    r = apply_calibration(sc, cal).route("web_lookup")
    assert "tools" in r.calibrated.applied
    assert r.tools.result_tokens.mean() == pytest.approx(rc.tool_result_tokens.value)
    d = draw_route(r, 50_000, np.random.default_rng(0), route_context(sc, r))
    assert d["web_search_calls"].mean() == pytest.approx(rc.tool_rounds.value, rel=0.03)
    # A route without $web_search is told, not silently given searches.
    ans = apply_calibration(sc, cal.model_copy(update={"routes": {"answer": rc}})).route("answer")
    assert "tools" not in ans.calibrated.applied and any("tool rounds" in w for w in ans.calibrated.warnings)


def test_a_latency_law_no_route_can_hold_is_told_and_not_applied():
    # Millisecond timings from a sped-up emulator on a loaded machine can fit decode speeds past the limit.
    cal = fit_calibration(
        samples_frame(records("answer", 60, prompt=900, cached_share=0.0, hit=0.5, out_median=200, seed=3))
    )
    rc = cal.routes["answer"]
    wild = rc.decode_tps.model_copy(update={"median": 2e5, "p95": 4e8})
    cal = cal.model_copy(update={"routes": {"answer": rc.model_copy(update={"decode_tps": wild})}})
    sc = load_scenario("support_chat")
    r = apply_calibration(sc, cal).route("answer")
    assert "latency" not in r.calibrated.applied and "output" in r.calibrated.applied
    assert r.latency == sc.route("answer").latency
    assert any("latency stays assumed" in w for w in r.calibrated.warnings)
