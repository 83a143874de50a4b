"""CapacityPlan: the object plan() returns, its JSON, its sentences, tier tables, the upgrade path, bad input."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from theory import theory_scenario

from kimiplan.capacity.plan import plan
from kimiplan.capacity.result import CapacityPlan
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main
from kimiplan.errors import ConfigError


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def support(catalog):
    return plan(load_scenario("support_chat", catalog), catalog)


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_is_a_frozen_result_object_that_still_reads_like_the_old_dict(support):
    assert isinstance(support, CapacityPlan)
    assert support["tier"] == support.tier == "Tier3"
    assert support.get("pacing_wait") is support.pacing_wait
    with pytest.raises(KeyError):
        support["nope"]
    with pytest.raises(AttributeError):
        support.tier = "Tier5"  # frozen
    assert "<table" in support._repr_html_() and "Tier3" in support._repr_html_()


def test_both_tier_tables_of_the_last_12_months_side_by_side(support, catalog):
    t = {r["version"]: r for r in support.by_tier_table}
    assert set(t) == {"A", "B"}
    assert t["A"]["official"] is True and t["B"]["official"] is False
    assert t["B"]["headline"] and not t["A"]["headline"]  # B is in force on as_of 2026-11-26
    # Under table A Tier3 has concurrency 200 and RPM 5,000: far more headroom than under B.
    assert t["A"]["headroom"] > t["B"]["headroom"]
    assert support.assumptions["tier_table"]["version"] == "B"
    assert support.assumptions["tier_table"]["official"] is False
    # Picking table A makes it the headline, and the scenario's tier takes A's limits.
    a = plan(load_scenario("support_chat", catalog), catalog, tier_table="A")
    assert a.headline_table()["version"] == "A"
    assert a.demand.set_index(["route", "limit"]).loc[("total", "concurrency"), "limit_value"] == 200
    assert "tier_table" in a.assumptions and "--tier-table" in a.assumptions["tier_table"]["why"]


def test_the_upgrade_skips_tiers_that_do_not_raise_the_binding_limit(support):
    up = support.upgrade
    assert support.binding_limit == "rpm"
    # Tier4 has the same RPM (200) as Tier3 under table B: the move is to Tier5 (RPM 300).
    assert up["to"] == "Tier5" and up["skipped"] == ["Tier4"]
    assert up["limit_from"] == 200 and up["limit_to"] == 300
    assert up["recharge"] == 3000 and up["recharge_currency"] == "USD"
    assert up["move_by"] == support.exhaustion["date"]
    text = support.describe()
    assert "Tier5" in text and "$3,000" in text and "Tier4 raises only other limits" in text


def test_json_carries_assumptions_and_tier_tables_and_no_infinity(capsys):
    code, out, _ = _run(capsys, "plan", "support_chat", "--json")
    assert code == 0

    def no_constants(x):
        raise AssertionError(f"{x} is not JSON")

    doc = json.loads(out, parse_constant=no_constants)
    for key in ("demand", "ladder", "refusal_total", "binding_limit", "exhaustion", "smallest_tier"):
        assert key in doc
    assert doc["assumptions"]["window"] == "sliding" and doc["assumptions"]["client"] == "none"
    assert {r["version"] for r in doc["by_tier_table"]} == {"A", "B"}
    for r in doc["by_tier_table"]:
        assert {"version", "official", "smallest_tier", "binding_limit", "headroom"} <= set(r)


def test_cli_prints_describe_and_the_tables_side_by_side(capsys, support):
    code, out, _ = _run(capsys, "plan", "support_chat")
    assert code == 0
    for line in support.describe().splitlines():
        assert line in out
    assert "the verdict under each tier table" in out


@pytest.mark.parametrize(
    "flag, value", [("--target", "0"), ("--target", "1.5"), ("--percentile", "1"), ("--percentile", "-0.2")]
)
def test_bad_targets_are_errors_naming_the_flag(capsys, flag, value):
    code, out, err = _run(capsys, "plan", "support_chat", flag, value)
    assert code == 2 and flag in err and out == ""


def test_unknown_tier_table_lists_the_known_ones(capsys):
    code, _, err = _run(capsys, "plan", "support_chat", "--tier-table", "Z")
    assert code == 2 and "'Z'" in err and "A, B" in err


def test_library_rejects_bad_targets_too():
    with pytest.raises(ConfigError, match="target"):
        plan(theory_scenario(), target=0.0)
    with pytest.raises(ConfigError, match="percentile"):
        plan(theory_scenario(), percentile=1.0)


def test_a_limit_no_request_can_fit_says_so_instead_of_inf(capsys):
    # Every request reserves 2,024 tokens; a TPM of 1,500 can never admit one.
    sc = theory_scenario(tier={"name": "tiny", "tpm": 1500})
    p = plan(sc)
    assert p.never_fits == {"tpm": 1.0}
    assert p.max_scale == 0.0 and p.exhaustion["months"] == 0
    assert "can never be admitted" in p.describe()
    # Nothing reachable (every request goes through the Batch API): no infinity in the JSON, `unbounded` says why.
    route = {"name": "b", "share": 1.0, "batch": True, "system": 1000, "output": 200, "max_completion_tokens": 1024}
    free = plan(theory_scenario(routes=[route]))
    d = free.to_dict()
    assert d["unbounded"] is True and d["max_scale"] is None
    assert "sustains any traffic" in free.describe()
    assert all(not (isinstance(v, float) and math.isinf(v)) for v in d.values())


def test_capacity_status_follows_the_plan(support):
    assert support.capacity_status(1.0) == "ok"
    assert support.capacity_status(support.max_scale * 1.01) == "over_capacity"
    assert support.near_scale < support.max_scale
    assert support.capacity_status((support.near_scale + support.max_scale) / 2) == "near_limit"


def test_sim_summary_is_an_object_and_to_json_is_text():
    from kimiplan.capacity.sim.simulate import SimSettings, SimSummary, simulate

    r = simulate(theory_scenario(), settings=SimSettings(hours=0.5))
    assert isinstance(r.summary, SimSummary)
    assert r.summary["requests"] == r.summary.requests
    assert dict(r.summary) == r.summary.to_dict()
    text = r.to_json()
    assert isinstance(text, str) and json.loads(text)["requests"] == r.summary.requests
    assert "refused" in r._repr_html_()


def test_forecast_months_carry_the_plans_capacity_status(catalog):
    from kimiplan.finance.forecast import forecast

    sc = load_scenario("support_chat", catalog)
    p = plan(sc, catalog)
    fc = forecast(sc, 12, catalog=catalog, paths=200, capacity=p)
    m = fc.monthly.set_index("month")
    over = m.index[m["capacity_status"] == "over_capacity"]
    # The first month over capacity is the month the plan says growth exhausts the tier.
    assert over[0] == f"{p.exhaustion['date']:%Y-%m}"
    assert (m.loc[: over[0], "capacity_status"].iloc[:-1] != "over_capacity").all()
    assert (m.loc[over, "upgrade_to"] == "Tier5").all() and (m.loc[over, "upgrade_recharge"] == 3000).all()
    assert any("over capacity" in w and "Tier5" in w for w in fc.warnings)
    # Without a tier there is no status, and nothing fails.
    free = forecast(sc.with_changes(tier=None), 3, catalog=catalog, paths=50)
    assert free.monthly["capacity_status"].isna().all()


def test_a_90_day_simulation_shows_refusals_when_the_plan_says():
    # 0.2 requests/s, 20 s mean latency (4 Erlangs), 12 slots, +25 % a month: Erlang B 0.06 % in November,
    # 0.34 % in December, 1.4 % in January. With a 0.5 % target the plan says January; the simulator, which
    # grows the traffic month by month, must see the same months on both sides of the target.
    from kimiplan.capacity.plan import horizon_refusal
    from kimiplan.capacity.sim.simulate import simulate

    sc = theory_scenario(
        as_of="2026-11-01",
        tier={"name": "slots", "concurrency": 12},
        traffic={"requests_per_second": 0.2, "monthly_growth": 0.25},
        routes=[
            {
                "name": "r",
                "share": 1.0,
                "system": 1000,
                "output": 200,
                "max_completion_tokens": 1024,
                "latency": {"total_s": {"kind": "exponential", "mean": 20.0}},
            }
        ],
        simulation={"hours": 92 * 24},
    )
    p = plan(sc, target=0.005)
    assert p.exhaustion["months"] == 2 and f"{p.exhaustion['date']:%Y-%m}" == "2027-01"
    res = simulate(sc)
    pm = res.per_minute
    day = pm["minute"] // 1440
    months = {"2026-11": day < 30, "2026-12": (day >= 30) & (day < 61), "2027-01": day >= 61}
    for k, (month, sel) in enumerate(months.items()):
        att, ref = pm.loc[sel, "attempts"].sum(), pm.loc[sel, "refused_concurrency"].sum()
        share = ref / att
        start = dt.date.fromisoformat(f"{month}-01")
        want = horizon_refusal(sc, hours=float(sel.sum()) / 60.0, start=start)["refusal_total"]
        assert abs(share - want) < 5 * math.sqrt(want / att) * 3, (month, share, want)
        assert (share > p.target) == (k >= p.exhaustion["months"]), (month, share)


def test_a_retrying_client_is_read_from_the_scenario_and_simulated_briefly():
    # No closed form holds for correlated retries: the plan runs a short simulation at the busiest minute and
    # says so; first attempts keep their closed form.
    sc = theory_scenario(
        tier={"name": "slots", "concurrency": 16}, simulation={"client": {"kind": "retry", "max_retries": 3}}
    )
    p = plan(sc)
    ce = p.client_effect
    assert p.assumptions["client"] == "retry" and "client_effect" in p.assumptions["client_note"]
    assert ce["max_retries"] == 3 and ce["method"].startswith("simulation")
    assert 0 < ce["failed"] < ce["attempt_refusal"] and ce["attempts_per_request"] > 1
    # Retries raise the load, so an attempt is refused more often than a first attempt.
    assert ce["attempt_refusal"] > p.refusal_total
    assert "fail for good" in p.describe()
    assert plan(theory_scenario(tier={"name": "slots", "concurrency": 16})).client_effect is None
    # An inline tier belongs to no catalog table: no table is the headline.
    assert p.assumptions["tier_table"] is None and not any(t["headline"] for t in p.by_tier_table)


def test_tier_tables_figure_shows_every_table_side_by_side(support):
    from kimiplan.viz.capacity import tier_tables_figure

    fig = tier_tables_figure(support, 40000 / 86400)
    names = [t.name for t in fig.data if t.type == "bar"]  # and today's traffic as a labelled line
    assert len(names) == 2 and any("table A (official)" in n for n in names)
    assert [t.name for t in fig.data if t.type == "scatter"] == ["today: 40,000 requests/day"]
    assert any("third-party" in n and "headline" in n for n in names)
    assert list(fig.data[0].x) == [f"Tier{i}" for i in range(6)]
