import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from kimiplan.calibration.fitters import (
    LogNormalFitter,
    MeanFitter,
    ProportionFitter,
    apply_calibration,
    fit_calibration,
    load_calibration,
    predicted_vs_observed,
    samples_frame,
    samples_needed,
)
from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, load_prompts, run_sampler
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.emulator import EmulatorConfig, LogNormalTruth, RouteTruth
from kimiplan.emulator.config import TEST_API_KEY
from kimiplan.emulator.engine import _HIDDEN_TOKEN, render_prompt_ids
from kimiplan.errors import ConfigError
from kimiplan.model.scenario import example_path
from kimiplan.workload.draws import draw_route, route_context

ROOT = Path(__file__).resolve().parent.parent
#: the small prompt sets these tests were written against (the shipped ones are built to support_chat's sizes)
FIXTURES = Path(__file__).resolve().parent / "data" / "prompts"
CARD = load_catalog().price("kimi-k2.6")
TRUTH = {
    "answer": RouteTruth(output=LogNormalTruth(median=220, p95=650)),
    "summarize_ticket": RouteTruth(output=LogNormalTruth(median=160, p95=400)),
    "agent_step": RouteTruth(
        output=LogNormalTruth(median=300, p95=1500), reasoning=LogNormalTruth(median=800, p95=3000)
    ),
}
OVERHEAD = 23


def inside(ci, x):
    return ci[0] <= x <= ci[1]


@pytest.fixture(scope="module")
def recovered(tmp_path_factory):
    """One sampler run against known ground truth (sequential, so the cache sequence can be replayed)."""
    from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
    from kimiplan.emulator import EmulatorConfig, emulator

    path = tmp_path_factory.mktemp("rec") / "samples.jsonl"
    cfg = SamplerConfig(
        run_id="recovery",
        max_concurrency=1,
        spend_cap=Decimal(5),
        routes=[
            RouteSampling(
                name="answer", n=120, max_completion_tokens=1024, thinking=False, prompts=FIXTURES / "answer.jsonl"
            ),
            RouteSampling(
                name="summarize_ticket",
                n=120,
                max_completion_tokens=1024,
                thinking=False,
                prompts=FIXTURES / "summarize_ticket.jsonl",
            ),
            RouteSampling(name="agent_step", n=120, max_completion_tokens=4096),
        ],
    )
    em_cfg = EmulatorConfig(
        seed=3, time_scale=0, stream_chunk_tokens=256, hidden_overhead=OVERHEAD, routes=TRUTH, default_route="answer"
    )
    with emulator(em_cfg) as em:
        client = KimiClient(
            KimiConfig(
                model="kimi-k2.6",
                base_url=em.base_url,
                api_key=TEST_API_KEY,
                retry=RetryPolicy(time_scale=0.001),
            )
        )
        summary = run_sampler(client, cfg, path, card=CARD, progress=False)
    assert summary.completed == 360
    df = samples_frame(path)
    return df, fit_calibration(df, notes="recovery test")


def test_recovery_of_lengths_within_confidence_intervals(recovered):
    _, cal = recovered
    assert cal.provenance == "emulator" and cal.n_samples == 360
    for route, truth in TRUTH.items():
        fit = cal.routes[route].output.lognormal
        assert inside(fit.median_ci, truth.output.median), (route, fit)
        assert inside(fit.p95_ci, truth.output.p95), (route, fit)
    r = cal.routes["agent_step"].reasoning.lognormal
    assert inside(r.median_ci, 800) and inside(r.p95_ci, 3000)
    # censoring is used: the agent route's 4096 budget truncates some calls
    assert cal.routes["agent_step"].output.lognormal.n_censored > 0
    assert cal.routes["answer"].reasoning is None


def test_recovery_of_template_overhead(recovered):
    _, cal = recovered
    for rc in cal.routes.values():
        assert rc.template_overhead.value == OVERHEAD and inside(rc.template_overhead.ci, OVERHEAD)


def test_recovery_of_cache_behaviour(recovered):
    """Replay Kimi's prefix rule over the prompts in the order they were sent, independently of the emulator."""
    df, cal = recovered
    prompts = {
        name: load_prompts(
            (FIXTURES if (FIXTURES / f"{name}.jsonl").exists() else ROOT / "data" / "prompts") / f"{name}.jsonl"
        )
        for name in TRUTH
    }
    seen, expected = [], []
    for _, row in df.iterrows():  # the store is in send order (concurrency 1)
        ids = np.asarray(
            [_HIDDEN_TOKEN] * OVERHEAD + render_prompt_ids(prompts[row.route][row["index"] % len(prompts[row.route])])
        )
        best = 0
        for s in seen:  # longest common prefix (first mismatch, or the shorter length)
            m = min(len(s), len(ids))
            neq = np.flatnonzero(s[:m] != ids[:m])
            best = max(best, int(neq[0]) if len(neq) else m)
        block = EmulatorConfig().cache_block_tokens  # Kimi's cached counts come in whole blocks (256 measured)
        expected.append(best // block * block)
        if len(ids) > 256:
            seen.append(ids)
    assert df["cached_tokens"].tolist() == expected
    exp = np.array(expected)
    for route, rc in cal.routes.items():
        m = (df.route == route).to_numpy()
        assert rc.cached_fraction.value == pytest.approx(exp[m].sum() / df.prompt_tokens[m].sum())
        assert rc.cache_hit_rate.value == pytest.approx((exp[m] > 0).mean())


def test_predicted_vs_observed_and_goodness_of_fit(recovered):
    df, cal = recovered
    table = predicted_vs_observed(cal, df)
    means = table[table.metric.str.endswith("mean")]
    assert (means.ratio.between(0.85, 1.15)).all(), means
    assert all(rc.output.lognormal.ks_pvalue > 0.01 for rc in cal.routes.values())


def test_lognormal_fitter_handles_censoring():
    rng = np.random.default_rng(1)
    x = rng.lognormal(math.log(500), 0.8, 3000)
    budget = 900.0
    naive = LogNormalFitter().fit(np.minimum(x, budget))
    cens = LogNormalFitter().fit(np.minimum(x, budget), x > budget)
    true_p95 = 500 * math.exp(1.6448536 * 0.8)
    assert inside(cens.p95_ci_, true_p95) and inside(cens.median_ci_, 500)
    assert naive.p95_ < 0.8 * true_p95  # ignoring truncation underestimates the tail
    assert LogNormalFitter().fit([10, 20, 30]) is not None


def test_small_fitters():
    p = ProportionFitter().fit([1] * 3 + [0] * 7)
    assert p.rate_ == 0.3 and p.ci_ == pytest.approx((0.1078, 0.6032), abs=1e-4)  # Wilson 95 %
    m = MeanFitter().fit([5, 5, 5])
    assert m.mean_ == 5 and m.ci_ == (5, 5)
    with pytest.raises(ConfigError):
        LogNormalFitter().fit([3])


def test_calibration_file_round_trip_and_schema_check(recovered, tmp_path):
    _, cal = recovered
    p = cal.save(tmp_path / "c.json")
    again = load_calibration(p)
    assert again == cal
    data = json.loads(p.read_text())
    data["schema_version"] = 99
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="schema_version 99"):
        load_calibration(p)


def df_prompt_mean(df, route):
    return float(df.loc[df["route"] == route, "prompt_tokens"].mean())


def test_apply_calibration_replaces_route_distributions(recovered):
    _, cal = recovered
    scen = load_scenario(example_path("support_chat"))
    new = apply_calibration(scen, cal)
    ans = next(r for r in new.routes if r.name == "answer")
    assert ans.output.median == pytest.approx(cal.routes["answer"].output.lognormal.median)
    # The emulator's hidden per-request tokens come through, and the input as sent is the measured one: the
    # route's own draws (not the code that scaled it) average the prompt_tokens the emulator reported.
    assert ans.server_overhead_tokens == OVERHEAD
    old_ans = next(r for r in scen.routes if r.name == "answer")
    ctx = route_context(scen, old_ans)
    d = draw_route(ans, 200_000, np.random.default_rng(3), ctx)
    measured = df_prompt_mean(recovered[0], "answer")
    assert d["input_tokens"].mean() == pytest.approx(measured, rel=0.01)
    assert ans.calibrated.calls == cal.routes["answer"].n and "input" in ans.calibrated.applied
    old = next(r for r in scen.routes if r.name == "web_lookup")
    assert next(r for r in new.routes if r.name == "web_lookup") == old  # not calibrated: unchanged
    emp = apply_calibration(scen, cal, kind="empirical")
    assert next(r for r in emp.routes if r.name == "answer").output.kind == "empirical"
    with pytest.raises(ConfigError, match="model"):
        apply_calibration(scen.model_copy(update={"model": "kimi-k2.5"}), cal)


def test_samples_needed_matches_its_own_formula(recovered):
    df, _ = recovered
    t = samples_needed(df, CARD, rel_error=0.05, shares={"answer": 0.5, "summarize_ticket": 0.3, "agent_step": 0.2})
    row = t.loc["answer"]
    # at n_needed samples the relative half-width would be 5 %
    assert row.current_rel_error * math.sqrt(row.n / row.n_needed) == pytest.approx(0.05, rel=0.01)
    assert t.loc["(mix)"].current_rel_error < t.drop("(mix)").current_rel_error.max()


def test_shipped_example_calibration_loads_and_applies():
    files = sorted((ROOT / "data" / "calibrations").glob("*.json"))
    assert files, "an example calibration file ships in data/calibrations"
    for f in files:
        cal = load_calibration(f)
        assert cal.provenance == "emulator"
        apply_calibration(load_scenario(example_path("support_chat")), cal)


def test_cli_fit_writes_a_calibration(recovered, tmp_path):
    from kimiplan.cli import main

    df, _ = recovered
    store = tmp_path / "s.jsonl"
    store.write_text("".join(json.dumps(r, default=str) + "\n" for r in df.to_dict("records")))
    assert main(["calibrate", "fit", str(store), "-o", str(tmp_path / "cal.json")]) == 0
    assert load_calibration(tmp_path / "cal.json").n_samples == 360
    assert main(["calibrate", "fit", str(store), "-o", str(tmp_path / "x.json"), "--model", "kimi-k9"]) == 2


def test_fitters_follow_the_lifelines_shape():
    from kimiplan.calibration.fitters import CalibrationFitter, ConvergenceWarning, EmpiricalFitter  # noqa: F401

    x = np.random.default_rng(3).lognormal(np.log(400), 0.5, 500)
    f95, f80 = LogNormalFitter().fit(x), LogNormalFitter(alpha=0.2).fit(x)
    assert f95.median_ == f80.median_  # alpha changes the intervals, not the estimate
    w95 = f95.median_ci_[1] - f95.median_ci_[0]
    w80 = f80.median_ci_[1] - f80.median_ci_[0]
    # normal intervals: the width scales with z(1 - alpha/2): 1.96 / 1.2816
    assert w95 / w80 == pytest.approx(1.959964 / 1.281552, rel=1e-3)
    s = f80.summary
    assert list(s.index) == ["median", "p95"] and list(s.columns) == ["value", "lower 80%", "upper 80%"]
    assert "fitted with 500 observations" in repr(f95)
    assert "not fitted" in repr(EmpiricalFitter())
    with pytest.raises(ConfigError, match="not fitted"):
        _ = EmpiricalFitter().summary
    with pytest.raises(ConfigError, match="alpha"):
        LogNormalFitter(alpha=1.5)
    with pytest.raises(ConfigError, match="alpha"):
        CalibrationFitter(alpha=0)


def test_calibration_fitter_summary_and_repr(recovered):
    from kimiplan.calibration.fitters import CalibrationFitter

    df, cal = recovered
    f = CalibrationFitter(alpha=0.1).fit(df)
    assert f.fit(df) is f  # fit() returns self
    s = f.summary
    assert sorted(s.index) == sorted(cal.routes) and (s["n"] > 0).all()
    for route in TRUTH:
        assert s.loc[route, "output median"] == pytest.approx(cal.routes[route].output.lognormal.median)
    assert "360 samples" in repr(f)
    # a narrower level gives narrower intervals on the same data
    wide = cal.routes["answer"].truncation_rate.ci
    narrow = f.calibration_.routes["answer"].truncation_rate.ci
    assert narrow[1] - narrow[0] <= wide[1] - wide[0]
