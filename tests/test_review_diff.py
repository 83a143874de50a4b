"""`kp.diff`: exact zero on itself, antisymmetry in every figure, common random numbers, causes, rendering
(GitHub Markdown tables parsed by markdown-it), the JSON document against docs/diff.schema.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kimiplan as kp
from kimiplan.model.scenario import Scenario
from kimiplan.review.diff import mirrored_quantile
from kimiplan.review.render import MARKER, markdown_to_html
from kimiplan.review.snapshot import evaluate

ROOT = Path(__file__).resolve().parents[1]
PATHS = 400  # bands from few paths: the properties are exact whatever their number


def edit(sc: Scenario, top: dict | None = None, **routes: dict) -> Scenario:
    """A copy with top-level fields replaced and route fields replaced (route name -> fields; None drops it)."""
    data = sc.model_dump(mode="python", by_alias=True)
    data.update(top or {})
    rs = []
    for r in data["routes"]:
        if r["name"] in routes:
            if routes[r["name"]] is None:
                continue
            r = {**r, **routes[r["name"]]}
        rs.append(r)
    data["routes"] = rs
    return Scenario.model_validate(data)


def add_route(sc: Scenario, name: str, share_from: str, **fields) -> Scenario:
    data = sc.model_dump(mode="python", by_alias=True)
    src = next(r for r in data["routes"] if r["name"] == share_from)
    new = {**src, "name": name, "share": src["share"] / 2, **fields}
    src["share"] /= 2
    data["routes"] = [*data["routes"], new]
    return Scenario.model_validate(data)


def walk_pairs(x, y, path=""):
    """Yield (path, value in x, value in y) over two documents of the same shape."""
    if isinstance(x, dict):
        assert isinstance(y, dict) and set(x) == set(y), path
        for k in x:
            yield from walk_pairs(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, list):
        assert isinstance(y, list) and len(x) == len(y), path
        for i, (a, b) in enumerate(zip(x, y)):
            yield from walk_pairs(a, b, f"{path}[{i}]")
    else:
        yield path, x, y


def assert_antisymmetric(ab, ba) -> None:
    """Every figure of diff(a, b) is minus that of diff(b, a): before and after swap, deltas and bands negate."""
    da, db = ab.to_dict(), ba.to_dict()
    assert da["cost"]["delta"] == -db["cost"]["delta"]
    assert da["cost"]["before"] == db["cost"]["after"] and da["cost"]["after"] == db["cost"]["before"]
    assert da["cost"]["band"]["P10"] == -db["cost"]["band"]["P90"]
    assert da["cost"]["band"]["P90"] == -db["cost"]["band"]["P10"]
    assert da["cost"]["band"]["P50"] == -db["cost"]["band"]["P50"]
    pa, pb = da["cost"]["percent"], db["cost"]["percent"]
    if pa is not None and pb is not None:  # a relative change is relative to its own base: (1 + p)(1 + p') = 1
        assert (1 + pa) * (1 + pb) == pytest.approx(1.0, rel=1e-12)
    for k in da["capacity"]:
        assert da["capacity"][k]["before"] == db["capacity"][k]["after"], k
        if "delta" in da["capacity"][k] and da["capacity"][k]["delta"] is not None:
            assert da["capacity"][k]["delta"] == -db["capacity"][k]["delta"], k
    ra = {r["name"]: r for r in da["routes"]}
    rb = {r["name"]: r for r in db["routes"]}
    assert set(ra) == set(rb)
    flip = {"added": "removed", "removed": "added", "changed": "changed", "unchanged": "unchanged"}
    for name, r in ra.items():
        assert rb[name]["status"] == flip[r["status"]]
        for key, fig in r.items():
            if isinstance(fig, dict) and "before" in fig:
                assert fig["before"] == rb[name][key]["after"], (name, key)
                if "delta" in fig and fig["delta"] is not None:
                    assert fig["delta"] == -rb[name][key]["delta"], (name, key)
        for part, fig in r["tokens"].items():
            assert fig["before"] == rb[name]["tokens"][part]["after"], (name, part)
    # the same fields changed, each seen from the other side, with figures that swap
    ca = sorted(
        (c["field"], json.dumps(c["before"]), json.dumps(c["after"])) for x in da["causes"] for c in x["changes"]
    )
    cb = sorted(
        (c["field"], json.dumps(c["after"]), json.dumps(c["before"])) for x in db["causes"] for c in x["changes"]
    )
    assert ca == cb
    ea = sorted((e["figure"], e["route"] or "", json.dumps(e["before"])) for x in da["causes"] for e in x["effects"])
    eb = sorted((e["figure"], e["route"] or "", json.dumps(e["after"])) for x in db["causes"] for e in x["effects"])
    assert ea == eb


def assert_zero(d) -> None:
    doc = d.to_dict()
    assert d.cost_delta == 0.0 and d.band == {"P10": 0.0, "P50": 0.0, "P90": 0.0}
    assert not d.causes and all("converted to" in n for n in d.notes)  # a side billed in another currency says so
    assert np.all(d.delta_paths == 0.0)
    assert all(r.status == "unchanged" for r in d.routes)
    for path, a, _ in walk_pairs(doc, doc):
        if path.endswith(".delta"):
            assert a in (0.0, None), path
    for k, fig in doc["capacity"].items():
        assert fig["before"] == fig["after"], k


# ---------------------------------------------------------------- the properties


def test_mirrored_quantile_is_exactly_antisymmetric_and_agrees_with_numpy():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 10, 401, 4000):
        x = rng.normal(size=n) * 1000
        for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9):
            assert mirrored_quantile(-x, q) == -mirrored_quantile(x, 1 - q)
            assert mirrored_quantile(x, q) == pytest.approx(float(np.quantile(x, q)), rel=1e-12, abs=1e-9)


# A change drawn from what moves an LLM bill in a pull request; bounded to keep the suite fast.
CHANGES = st.one_of(
    st.tuples(st.just("max_completion_tokens"), st.sampled_from([512, 4096, 16384])),
    st.tuples(st.just("requests_per_day"), st.sampled_from([5_000.0, 90_000.0])),
    st.tuples(st.just("tier"), st.sampled_from(["Tier1", "Tier5"])),
    st.tuples(st.just("thinking"), st.just(True)),
    st.tuples(st.just("drop"), st.just("summarize_ticket")),
    st.tuples(st.just("add"), st.just("triage")),
    st.tuples(st.just("region"), st.just("cn")),
)


def apply_change(sc: Scenario, change) -> Scenario:
    kind, v = change
    if kind == "max_completion_tokens":
        return edit(sc, answer={"max_completion_tokens": v})
    if kind == "requests_per_day":
        return edit(sc, {"traffic": {**sc.traffic.model_dump(by_alias=True), "requests_per_day": v}})
    if kind == "tier":
        return edit(sc, {"tier": v})
    if kind == "thinking":
        return edit(sc, answer={"thinking": True, "reasoning": {"kind": "lognormal", "median": 800, "p95": 3000}})
    if kind == "drop":
        data = sc.model_dump(mode="python", by_alias=True)
        data["routes"] = [r for r in data["routes"] if r["name"] != v]
        data["routes"][0]["share"] += sc.routes[1].share
        return Scenario.model_validate(data)
    if kind == "add":
        return add_route(sc, v, "answer", max_completion_tokens=8192)
    return edit(sc, {"region": v})


@pytest.fixture(scope="module")
def support_usd(support, catalog):
    """support_chat evaluated once (plan and forecast), reused as one side of many diffs."""
    return evaluate(support, "support", catalog=catalog, paths=PATHS, currency="USD")


def test_diff_of_a_scenario_with_itself_is_exactly_zero(support, catalog, support_usd):
    # from the scenario twice (two evaluations), and from one evaluation on both sides
    assert_zero(kp.diff(support, support, catalog=catalog, paths=PATHS))
    assert_zero(kp.diff(support_usd, support_usd, catalog=catalog, paths=PATHS))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=CHANGES)
def test_diff_is_antisymmetric_in_every_figure(support, catalog, support_usd, change):
    head = evaluate(apply_change(support, change), "head", catalog=catalog, paths=PATHS, currency="USD", seed=7)
    ab = kp.diff(support_usd, head, catalog=catalog, paths=PATHS, currency="USD")
    ba = kp.diff(head, support_usd, catalog=catalog, paths=PATHS, currency="USD")
    assert_antisymmetric(ab, ba)
    assert_zero(kp.diff(head, head, catalog=catalog, paths=PATHS, currency="USD"))


# ---------------------------------------------------------------- what a reader sees


@pytest.fixture(scope="module")
def raised(support, catalog):
    """answer.max_completion_tokens 2,048 -> 16,384 on Tier3: TPM takes over from RPM as the binding limit."""
    return kp.diff(support, edit(support, answer={"max_completion_tokens": 16384}), catalog=catalog, paths=PATHS)


def test_raising_max_completion_tokens_moves_the_reservation_and_the_binding_limit(raised):
    d = raised
    ans = next(r for r in d.routes if r.name == "answer")
    assert ans.status == "changed"
    # input + budget: the reservation rises by exactly the budget change (the input draws are common)
    assert ans.after.tpm_reservation - ans.before.tpm_reservation == pytest.approx(16384 - 2048, abs=1.0)
    assert {r.name: r.status for r in d.routes if r.name != "answer"} == {
        "summarize_ticket": "unchanged",
        "web_lookup": "unchanged",
    }
    assert d.base.account.binding_limit == "rpm" and d.head.account.binding_limit == "tpm"
    (cause,) = d.causes
    assert [c.path for c in cause.changes] == ["answer.max_completion_tokens"]
    text = d.to_markdown()
    assert "`answer.max_completion_tokens` 2,048 → 16,384: TPM reservation +14,336 per request" in text
    assert "binding limit RPM → TPM" in text
    assert "TPM now binds" in d.lead()
    # billing counts actual tokens: the budget barely moves the cost (only fewer truncated answers)
    assert 0 <= d.cost_delta < 0.001 * d.cost_before
    assert d.band["P10"] >= 0 and d.band["P90"] <= 0.001 * d.cost_before


def test_common_random_numbers_give_the_sign_and_a_narrow_band(support, catalog):
    head = edit(support, {"traffic": {**support.traffic.model_dump(by_alias=True), "requests_per_day": 44_000.0}})
    d = kp.diff(support, head, catalog=catalog, paths=1000)
    assert d.cost_delta == pytest.approx(0.1 * d.cost_before, rel=1e-9)  # same draws: exactly the volume ratio
    assert 0 < d.band["P10"] < d.cost_delta < d.band["P90"]
    # independent runs of the two sides (another seed for the head) spread over both signs
    base_fc = d.base.paths
    other = kp.forecast(head, 1, catalog=catalog, paths=1000, seed=support.seed + 1, capacity=False)
    indep = other.paths[:, 0] - base_fc
    width_crn = d.band["P90"] - d.band["P10"]
    width_ind = float(np.quantile(indep, 0.9) - np.quantile(indep, 0.1))
    assert width_ind > 3 * width_crn


def test_route_added_and_removed_rows(support, catalog):
    head = add_route(edit(support, web_lookup=None, answer={"share": 0.85}), "triage", "answer")
    d = kp.diff(support, head, catalog=catalog, paths=PATHS)
    st_ = {r.name: r.status for r in d.routes}
    assert st_["triage"] == "added" and st_["web_lookup"] == "removed"
    md = d.to_markdown()
    assert "| triage | added |" in md and "| web_lookup | removed |" in md
    assert "route added: triage" in md and "route removed: web_lookup" in md
    doc = d.to_dict()
    tri = next(r for r in doc["routes"] if r["name"] == "triage")
    assert tri["cost_per_month"]["before"] is None and tri["cost_per_month"]["delta"] == tri["cost_per_month"]["after"]


def test_a_new_scenario_is_all_added(support, catalog):
    d = kp.diff(None, support, catalog=catalog, paths=PATHS)
    assert all(r.status == "added" for r in d.routes)
    assert d.cost_before == 0 and d.cost_delta == d.cost_after > 0 and d.cost_percent is None
    assert "new scenario" in d.lead() and d.notes and "no scenario" in d.notes[0]
    assert d.band["P10"] > 0  # the whole spend is new


def test_other_region_and_currency_compare_and_say_so(support, catalog):
    d = kp.diff(support, edit(support, {"region": "cn"}), catalog=catalog, paths=PATHS)
    assert d.currency == "USD"
    assert any("different currencies" in n and "7.1 CNY per USD" in n for n in d.notes)
    assert any("different region" in n for n in d.notes)
    # the head in CNY converted at 7.1: its figures equal a forecast of the head in USD at the same rate
    fc = kp.forecast(edit(support, {"region": "cn"}), 2, catalog=catalog, paths=10, capacity=False)
    assert d.cost_after == pytest.approx(float(fc.monthly["expected"].iloc[fc.next_full_month()]) / 7.1, rel=1e-3)


def test_markdown_is_a_github_comment(raised, support, catalog):
    head = add_route(edit(support, {"region": "cn"}), "triage", "answer")
    for d in (raised, kp.diff(support, head, catalog=catalog, paths=PATHS)):
        md = d.to_markdown()
        assert md.startswith(MARKER + "\n")
        lines = md.splitlines()
        # every table row has as many cells as its header (unescaped pipes), and a delimiter row follows the header
        for i, line in enumerate(lines):
            if line.startswith("| route"):
                cells = len(line.replace("\\|", "").split("|"))
                assert set(lines[i + 1].replace("|", "").replace("-", "").replace(":", "")) == set()
                j = i + 2
                while j < len(lines) and lines[j].startswith("|"):
                    assert len(lines[j].replace("\\|", "").split("|")) == cells, lines[j]
                    j += 1
        assert "e+" not in md and "e-0" not in md and "nan" not in md.lower()
        html = markdown_to_html(md)
        n_routes = sum(r.status != "unchanged" for r in d.routes)
        # the first table: one row per changed route and the account
        first = html.split("</table>")[0]
        assert first.count("<tr>") == 1 + n_routes + 1
        assert html.count("<details>") == md.count("<details>") and "<summary>" in html
        assert "<table>" in html.split("<details>")[1]  # the folded table renders (blank line after summary)


def test_json_document_matches_its_schema(raised, support, catalog):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "docs" / "diff.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for d in (raised, kp.diff(None, support, catalog=catalog, paths=PATHS)):
        doc = json.loads(d.to_json())
        jsonschema.validate(doc, schema)
        for path, v, _ in walk_pairs(doc, doc):
            assert not (isinstance(v, float) and not math.isfinite(v)), path


def test_html_and_summary(raised):
    assert raised.lead() in raised.summary()
    html = raised._repr_html_()
    assert "<table>" in html and "kimiplan-diff" not in html  # no marker in a notebook


@pytest.mark.parametrize("name", ["coding_agent", "document_report"])  # agent routes; CNY on the China platform
def test_every_bundled_example(name, catalog):
    sc = kp.load_scenario(name, catalog)
    a = evaluate(sc, "base", catalog=catalog, paths=PATHS)
    assert_zero(kp.diff(a, a, catalog=catalog, paths=PATHS))
    traffic = sc.traffic.model_dump(by_alias=True)
    key = "requests_per_day" if traffic.get("requests_per_day") else "requests_per_second"
    more = edit(sc, {"traffic": {**traffic, key: traffic[key] * 1.1}})
    d = kp.diff(a, more, catalog=catalog, paths=PATHS)
    # the same draws at 1.1 times the volume: the expected cost scales exactly, the band has the change's sign
    assert d.cost_delta == pytest.approx(0.1 * d.cost_before, rel=1e-9)
    assert 0 < d.band["P10"] <= d.band["P90"]
    assert [c.group for c in d.causes][0] == "traffic" and "nan" not in d.to_markdown().lower()
