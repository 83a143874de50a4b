"""Batch API routes do not load the online rate limits: the planner and the simulator both leave them out,
and a scenario whose every route is batch plans and reports without error."""

from __future__ import annotations

import math

import pytest

from kimiplan.capacity.plan import plan
from kimiplan.capacity.sim.simulate import SimSettings, simulate
from kimiplan.errors import ConfigError
from kimiplan.finance.variants import batch_variant, standard_variants
from kimiplan.report.html import collect_sections


def test_all_batch_plan_has_no_binding_limit(support, catalog):
    p = plan(batch_variant(support), catalog)
    assert p["refusal_total"] == 0 and p["binding_limit"] is None and math.isinf(p["max_scale"])
    assert p["smallest_tier"] == p["ladder"]["tier"].iloc[0]  # the smallest tier holds no traffic at all
    total = p["demand"][p["demand"]["route"] == "total"]
    assert len(total) == 5 and (total["peak"] == 0).all()


def test_simulator_leaves_batch_routes_out(support, catalog):
    st = SimSettings(hours=6, seed=4)
    part = batch_variant(support, ["answer"])  # 80 % of requests go through the Batch API
    a = simulate(support, catalog, st).summary["requests"]
    b = simulate(part, catalog, st).summary["requests"]
    expected = 0.2 * a
    assert abs(b - expected) < 4 * math.sqrt(expected)
    with pytest.raises(ConfigError, match="routes: every route"):
        simulate(batch_variant(support), catalog, st)


def test_all_batch_report_and_variants(support, catalog):
    sc = batch_variant(support)
    titles = [t for t, _ in collect_sections(sc, catalog)]
    assert "Capacity summary" in titles and not any(t.startswith("Simulated") for t in titles)
    # Providers without a Batch API are not offered as like-for-like variants of batch routes.
    assert set(standard_variants(sc, catalog)) <= {"base", "kimi-k2.5", "prefix cached on 50 % of requests"}
