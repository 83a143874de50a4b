"""Sweeps: every point equals a direct plan of that scenario; the Dask engine equals the local one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kimiplan.capacity.plan import growth_exhaustion, plan
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import CatalogError, ConfigError, ScenarioError
from kimiplan.finance.cost import cost_summary, expected_cost
from kimiplan.sweeps import apply_overrides, load_grid, sweep

GRID = {
    "tier": ["Tier1", "Tier3", {"name": "mine", "concurrency": 40, "rpm": 900}],
    "routes.answer.max_completion_tokens": [512, 2048],
    "traffic.monthly_growth": [0.0, 0.07],
    "traffic.requests_per_day": [15000, 60000],
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def local(catalog):
    return sweep("support_chat", GRID, catalog=catalog, seed=11)


def test_each_point_equals_a_direct_plan(local, catalog):
    """The sweep's caches (moments per workload, peaks per traffic shape, sustainable rate per tier) may not
    change any figure: each row against `plan()` of the overridden scenario, computed from scratch."""
    base = load_scenario("support_chat")
    points, _ = load_grid(GRID)
    assert len(local.table) == len(points) == 24
    for row, p in zip(local.table.itertuples(), points):
        sc = apply_overrides(base, p)
        ref = plan(sc, catalog)
        assert row.refusal_total == ref["refusal_total"]
        assert row.binding_limit == (ref["binding_limit"] or "none")
        # the sustainable rate comes from a bisection to 0.1 % run at the base volume
        assert row.max_requests_per_second == pytest.approx(ref["max_requests_per_second"], rel=2.5e-3)
        cost = cost_summary(expected_cost(sc, catalog)).set_index("route").loc["all routes", "cost_per_month"]
        assert row.cost_per_month == pytest.approx(cost, rel=1e-9)
        # the grid-wide closed form for the exhaustion month is growth_exhaustion's
        ex = growth_exhaustion(sc, row.max_scale)["months"]
        assert (ex is None and math.isnan(row.months_to_exhaustion)) or ex == row.months_to_exhaustion
        assert row.tier == (p["tier"]["name"] if isinstance(p["tier"], dict) else p["tier"])


def test_growth_over_the_horizon_is_the_sum_of_months(local):
    t = local.table
    for row in t.itertuples():
        months = [row.cost_per_month * (1 + row.monthly_growth) ** k for k in range(local.horizon_months)]
        assert row.cost_over_horizon == pytest.approx(sum(months), rel=1e-12)


def test_frontier_points_are_not_dominated(local):
    f = local.frontier()
    t = local.table
    assert len(f) >= 1
    same = ["scenario", "requests_per_day", "monthly_growth"]
    for row in f.itertuples():
        peers = t[(t[same] == [row.scenario, row.requests_per_day, row.monthly_growth]).all(axis=1)]
        better = peers[
            (peers["cost_per_month"] <= row.cost_per_month) & (peers["refusal_total"] < row.refusal_total - 1e-15)
        ]
        assert better.empty
    # every demand has a frontier, and its cheapest point is on it
    assert f.groupby(same).ngroups == t.groupby(same).ngroups == 4
    fig = local.figure()
    assert len(fig.data) == 1 + 4


def test_dask_engine_equals_local_on_a_local_cluster(catalog, tmp_path):
    """Two workers (threads, small), two tasks and many: the same table as the local engine, simulations and
    their per-point seeds included; and the same again on a second run."""
    from distributed import Client, LocalCluster

    grid = {"tier": ["Tier1", "Tier2"], "traffic.requests_per_day": [20000, 50000]}
    scen = ["support_chat", "document_report"]
    kw = dict(catalog=catalog, seed=5, simulate_hours=0.1)
    ref = sweep(scen, grid, **kw).table
    assert ref["sim_seed"].nunique() == len(ref)  # each point its own seed
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            a = sweep(scen, grid, engine="dask", client=client, **kw).table
            b = sweep(scen, grid, engine="dask", client=client, chunk_size=1, **kw).table
            c = sweep(scen, grid, engine="dask", scheduler=cluster.scheduler_address, **kw).table
    for got in (a, b, c):
        pd.testing.assert_frame_equal(got, ref)
    # a different root seed changes the simulations, not the plan
    other = sweep(scen, grid, catalog=catalog, seed=6, simulate_hours=0.1).table
    assert (other["sim_seed"] != ref["sim_seed"]).all()
    pd.testing.assert_series_equal(other["refusal_total"], ref["refusal_total"])


def test_results_write_to_parquet(local, tmp_path):
    out = local.to_parquet(tmp_path / "r.parquet")
    back = pd.read_parquet(out)
    assert len(back) == len(local.table)
    np.testing.assert_allclose(back["cost_per_month"], local.table["cost_per_month"])


def test_bad_points_name_the_path_and_value(catalog):
    with pytest.raises(ScenarioError, match=r"traffic.monthly_growth: must be a number > -1, got -2"):
        sweep("support_chat", {"traffic.monthly_growth": [-2]}, catalog=catalog)
    with pytest.raises(ConfigError, match=r"no route 'nope'"):
        sweep("support_chat", {"routes.nope.max_completion_tokens": [10]}, catalog=catalog)
    with pytest.raises(ScenarioError, match=r"max_completion_tokens"):
        sweep("support_chat", {"routes.*.max_completion_tokens": [0]}, catalog=catalog)
    with pytest.raises(CatalogError, match="unknown tier 'Tier99'"):
        sweep("support_chat", {"tier": ["Tier99"]}, catalog=catalog)
    with pytest.raises(ConfigError, match="engine='dask' needs client"):
        sweep("support_chat", {"tier": ["Tier1"]}, catalog=catalog, engine="dask")


def test_cli_sweep_writes_parquet(tmp_path, capsys):
    import yaml

    from kimiplan.cli import main

    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"tier": ["Tier1", "Tier3"], "traffic.monthly_growth": [0.0, 0.1]}))
    out = tmp_path / "r.parquet"
    assert main(["sweep", "support_chat", "--grid", str(grid), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 points (local engine, seed 0)" in text and "frontier" in text
    assert len(pd.read_parquet(out)) == 4
    grid.write_text("tier: Tier1\n")
    assert main(["sweep", "support_chat", "--grid", str(grid)]) == 2
    assert "field tier: expected a non-empty list" in capsys.readouterr().err


def test_a_point_can_bring_its_own_tier_table(tmp_path, catalog):
    """`catalog:` gives a point extra catalog files (here a tier table with a small tier); that point equals a
    direct plan against the same catalog, the others use the shipped one."""
    table = tmp_path / "tiers.toml"
    table.write_text(
        "[[tier]]\nprovider = 'moonshot'\nregion = 'intl'\nname = 'Tier3-small'\nconcurrency = 20\nrpm = 200\n"
        "verified_on = 2026-11-01\nofficial = false\nsource = 'a test'\n"
    )
    points = [{"tier": "Tier3"}, {"tier": "Tier3-small", "catalog": str(table)}]
    res = sweep("support_chat", points, catalog=catalog).table
    base = load_scenario("support_chat")
    small = plan(apply_overrides(base, {"tier": "Tier3-small"}), load_catalog([table]))
    assert res.loc[1, "refusal_total"] == small["refusal_total"] > res.loc[0, "refusal_total"]
    assert res.loc[0, "refusal_total"] == plan(base, catalog)["refusal_total"]
