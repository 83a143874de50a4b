"""Long simulations in day chunks: the Dask run (state carried between workers) equals the local one, which equals
one uninterrupted kernel run over the same requests."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from kimiplan.capacity.sim import kernel as K
from kimiplan.capacity.sim.simulate import kernel_args, result_from_state, run_stream
from kimiplan.catalog.admission import limits_array, scenario_limits
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario, price_card
from kimiplan.model.settings import SimSettings
from kimiplan.sweeps import apply_overrides
from kimiplan.sweeps.longrun import DAY_S, day_rates, draw_day, kernel_ready, kernel_step, simulate_long

DAYS = 3


@pytest.fixture(scope="module")
def setup():
    catalog = load_catalog()
    # A tight inline tier, so every limit (concurrency, the RPM/TPM window, TPD across midnights) refuses,
    # and a retrying client, so retries and the jitter generator cross the day boundaries too.
    sc = apply_overrides(
        load_scenario("support_chat"),
        {
            "traffic.requests_per_day": 30_000,
            "traffic.monthly_growth": 0.4,
            "tier": {"name": "tight", "concurrency": 12, "rpm": 60, "tpm": 400_000, "tpd": 120_000_000},
        },
    )
    settings = SimSettings.for_scenario(sc, seed=42, client={"kind": "retry", "max_retries": 3})
    return sc, catalog, settings


def _same(a, b):
    # as JSON text: exact, and NaN equal to NaN
    assert json.dumps(a.summary.to_dict(), default=float, sort_keys=True) == json.dumps(
        b.summary.to_dict(), default=float, sort_keys=True
    )
    pd.testing.assert_frame_equal(a.per_minute, b.per_minute)
    pd.testing.assert_frame_equal(a.per_day, b.per_day)
    np.testing.assert_array_equal(a.wait_hist, b.wait_hist)


def test_local_chunks_equal_one_uninterrupted_run(setup):
    """The same requests fed to the kernel as one stream (the single-process simulator's driver) give the same
    result as the day chunks with the state carried, and pickled, across each midnight."""
    sc, catalog, settings = setup
    local = simulate_long(sc, DAYS, catalog=catalog, settings=settings)
    assert local.summary["requests"] > 80_000
    refused = local.summary["refused"]
    assert all(refused[k] > 0 for k in ("concurrency", "rpm", "tpd")), refused
    assert local.summary["retries"] > 0

    card = price_card(sc, catalog)
    st = settings.model_copy(update={"start": sc.as_of, "hours": DAYS * 24.0})
    rates = day_rates(sc, DAYS, sc.as_of, 1.0)
    words = [(k.entropy, *k.spawn_key) for k in np.random.SeedSequence(42).spawn(DAYS)]
    days = [draw_day(sc, card, d, rates[d], words[d]) for d in range(DAYS)]
    limits = scenario_limits(sc, catalog)
    whole = tuple(np.concatenate(col) for col in zip(*days))
    names = [r.name for r in sc.routes if not r.batch]
    one = run_stream(iter([whole]), limits, DAYS * DAY_S, st, growth=0.4, routes=names)
    _same(local, one)

    # the state as another process would receive it: pickled at every midnight
    lim = limits_array(limits)
    kargs = kernel_args(lim, st, DAYS * DAY_S)
    state = K.KernelState(lim, DAYS * DAY_S, seed=42, n_routes=len(names))
    for d in range(DAYS):
        state = pickle.loads(pickle.dumps(kernel_step(state, days[d], kargs, d == DAYS - 1)))
    _same(local, result_from_state(state, limits, DAYS * DAY_S, st, 0.4, names))


def test_growth_steps_by_calendar_month(setup):
    """As the simulator counts it: the as_of month at today's volume, each later month (1 + growth) higher."""
    sc, _, _ = setup
    r = day_rates(sc, 14, sc.as_of, 1.0)  # as_of 2026-11-26: days 0-4 in November, 5- in December
    assert r[7].sum() / r[0].sum() == pytest.approx(1.4, rel=1e-12)  # same weekday, one month step later


def test_dask_days_equal_local(setup):
    """Two worker processes: the days are drawn on both, and the kernel state (heap of requests in flight, the
    RPM/TPM window, today's tokens, pending retries, the jitter generator) is pickled from one to the next."""
    from distributed import Client, LocalCluster

    sc, catalog, settings = setup
    local = simulate_long(sc, DAYS, catalog=catalog, settings=settings)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            on_dask = simulate_long(sc, DAYS, catalog=catalog, settings=settings, engine="dask", client=client)
            # the kernel compiled (or loaded from numba's cache) once in each worker, before the days ran
            warmed = client.run(kernel_ready)
            signatures = client.run(
                lambda: len(__import__("kimiplan.capacity.sim.kernel", fromlist=["K"]).run_chunk.signatures)
            )
    assert all(warmed.values()) and len(warmed) == 2
    assert set(signatures.values()) == {1}  # one compiled kernel per worker, not one per task
    _same(local, on_dask)


def test_cli_simulate_days_same_on_both_engines(capsys):
    from distributed import LocalCluster

    from kimiplan.cli import main

    args = ["simulate-days", "support_chat", "--days", "2", "--seed", "3", "--client", "retry", "--json"]
    assert main(args) == 0
    local = json.loads(capsys.readouterr().out)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert main([*args, "--engine", "dask", "--scheduler", cluster.scheduler_address]) == 0
    assert json.loads(capsys.readouterr().out) == local
    assert local["requests"] > 50_000 and local["hours"] == 48
    assert main(["simulate-days", "support_chat", "--days", "0"]) == 2
    assert "days must be a whole number" in capsys.readouterr().err
