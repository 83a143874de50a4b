"""Agent runs against the limits: each call reserves its prompt + max_completion_tokens (the admission rule),
runs are sessions of sequential calls; the simulator and the planner agree on the load."""

import numpy as np
import pytest

from kimiplan.capacity.agent_steps import agent_capacity, session_chunks
from kimiplan.capacity.plan import demand_table, route_moments
from kimiplan.capacity.sim.simulate import run_stream, simulate
from kimiplan.catalog.resolve import price_card
from kimiplan.model.scenario import parse_scenario
from kimiplan.model.settings import SimSettings
from kimiplan.workload.draws import route_context

HUGE = {"name": "huge", "concurrency": 2000, "rpm": 10**6, "tpm": 10**10}


def scenario(model="kimi-k2.6", agent=None, rpd=2000, **route):
    r = {
        "name": "agent",
        "share": 1.0,
        "system": 1000,
        "user": 200,
        "overhead_tokens": 0,
        "output": 100,
        "max_completion_tokens": 4000,
        "cache": {"mode": "prefix_rule", "prefix": ["system"], "hit_rate": 1.0},
        "latency": {"total_s": 5},
        "agent": {"steps": 3, "tool_result_tokens": 500, "think_time_s": 10, **(agent or {})},
    }
    r.update(route)
    return parse_scenario(
        {
            "name": "t",
            "model": model,
            "as_of": "2026-11-29",
            "tier": HUGE,
            "traffic": {"requests_per_day": rpd},
            "routes": [r],
        }
    )


@pytest.mark.parametrize(
    "steps, think, budget, model",
    [(3, 10, 4000, "kimi-k2.6"), (5, 25, 8000, "kimi-k2.6"), (4, 50, 16000, "kimi-k3.1-pro"), (1, 0, 2000, "kimi-k3")],
)
def test_calls_reserve_prompt_plus_budget_when_they_start(catalog, steps, think, budget, model):
    # Fixed runs at chosen times: call k of a run starts at t0 + k x (5 s latency + think) and reserves its prompt
    # (1,200 + 600 k: head plus k appended steps) plus max_completion_tokens, whatever it generates.
    sc = scenario(model, agent={"steps": steps, "think_time_s": think}, max_completion_tokens=budget)
    route = sc.routes[0]
    ctx = route_context(sc, route, price_card(sc, catalog))
    t0 = np.array([3.0, 50.0, 61.0, 119.5, 400.0, 1000.0, 1799.0])
    horizon = 1800.0
    chunks = session_chunks(iter([t0]), [route], [ctx], None, np.random.default_rng(0), horizon, 4)
    res = run_stream(chunks, {"concurrency": 2000, "rpm": 10**6, "tpm": 10**10}, horizon, SimSettings(hours=0.5))
    want = np.zeros(30)
    calls = 0
    for t in t0:
        for k in range(steps):
            start = t + k * (5 + think)
            if start < horizon:
                want[int(start // 60)] += (1200 + 600 * k) + budget
                calls += 1
    got = res.per_minute.set_index("minute")["reserved_tokens"].reindex(range(30), fill_value=0).to_numpy()
    assert np.array_equal(got, want) and res.summary.requests == calls


@pytest.mark.parametrize("think, model", [(5, "kimi-k2.6"), (30, "kimi-k2.6"), (20, "kimi-k3.1-pro")])
def test_plan_and_simulator_agree_on_agent_load(catalog, think, model):
    # Random runs at a flat rate: the plan's mean TPM, RPM and calls in flight (a stream of calls at runs/s x
    # calls per run) against the simulator's minutes, past a warm-up of the longest run.
    sc = scenario(
        model,
        rpd=1440 * 4,
        agent={
            "steps": {"kind": "lognormal", "median": 8, "p95": 30},
            "tool_result_tokens": {"kind": "lognormal", "median": 400, "p95": 3000},
            "think_time_s": {"kind": "exponential", "mean": think},
        },
        output={"kind": "lognormal", "median": 150, "p95": 900},
        latency={"total_s": {"kind": "lognormal", "median": 4, "p95": 15}},
    )
    hours = 4
    res = simulate(sc, catalog, SimSettings.for_scenario(sc, hours=hours, seed=7))
    pm = res.per_minute.set_index("minute").reindex(range(hours * 60), fill_value=0)
    steady = pm.iloc[60:]  # runs last minutes: the first hour warms up
    plan = demand_table(sc, catalog).set_index(["route", "limit"])
    tpm_plan = plan.loc[("total", "tpm"), "mean"]
    rpm_plan = plan.loc[("total", "rpm"), "mean"]
    se = steady["reserved_tokens"].std(ddof=1) / np.sqrt(len(steady)) * 3  # minutes are correlated: 3x the iid SE
    assert abs(steady["reserved_tokens"].mean() - tpm_plan) < 4 * se, (steady["reserved_tokens"].mean(), tpm_plan)
    assert steady["admitted_calls"].mean() == pytest.approx(rpm_plan, rel=0.1)
    cap = agent_capacity(sc, catalog, route_moments(sc, catalog)).iloc[0]
    assert cap["steps_per_minute"] == pytest.approx(rpm_plan, rel=1e-9)
    assert res.summary.mean_in_flight == pytest.approx(cap["calls_in_flight"], rel=0.15)


def test_plan_cli_reports_sessions(capsys):
    import json

    from kimiplan.cli import main

    assert main(["plan", "coding_agent"]) == 0
    out = capsys.readouterr().out
    assert "agent route 'fix_issue': a request is a run of" in out and "runs in flight" in out
    assert main(["plan", "coding_agent", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["agent_sessions"][0]
    # Little's law ties the session figures together: calls in flight = calls per minute / 60 x call latency.
    assert s["steps_per_minute"] == pytest.approx(s["runs_per_minute"] * s["calls_per_run"], rel=1e-9)
    assert s["runs_in_flight"] == pytest.approx(s["runs_per_minute"] / 60 * s["run_duration_s"], rel=1e-9)
