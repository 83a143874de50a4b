"""The review room speaks the report's language (issue 20): `kimiplan diff` states the same headroom multiple
and the same month as the two reports of its scenario pair, in every rendering (text, Markdown, HTML, JSON);
`kimiplan check` reads headroom as that multiple (`min_growth_headroom`), refuses the retired `min_headroom`
and a flat policy file with the line to write instead, caps the month the report's cost card quotes (or each of
`horizon_months`), and gives usage errors their own exit code."""

from __future__ import annotations

import datetime as dt
import html as htmllib
import json
import re
from pathlib import Path

import pytest

import kimiplan as kp
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main
from kimiplan.errors import ConfigError
from kimiplan.report.html import collect_sections, render_html
from kimiplan.review.policy import PolicyViolation, load_policy
from kimiplan.review.snapshot import evaluate

ROOT = Path(__file__).resolve().parents[1]
PATHS = 400
MULTIPLE = r"(?:\d+\.\d\d×|none|unbounded)"


def _card(page: str, label: str) -> tuple[str, str]:
    """(big, small) of the report card whose label starts with `label`, read from the rendered page."""
    m = re.search(
        r'<div class="label">' + re.escape(label) + r'[^<]*</div><div class="big">([^<]*)</div>'
        r'<div class="small">([^<]*)</div>',
        page,
    )
    assert m, f"no card {label!r} on the page"
    return htmllib.unescape(m.group(1)), htmllib.unescape(m.group(2))


def _card_label(page: str, prefix: str) -> str:
    m = re.search(r'<div class="label">(' + re.escape(prefix) + r"[^<]*)</div>", page)
    assert m, prefix
    return htmllib.unescape(m.group(1))


def _text(html: str) -> str:
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture(scope="module")
def pair(catalog):
    base = load_scenario("support_chat", catalog)
    head = load_scenario(ROOT / "docs" / "ci" / "example_pr.yaml", catalog)
    return base, head


@pytest.fixture(scope="module")
def reports(pair, catalog):
    out = []
    for sc in pair:
        page = render_html(sc, collect_sections(sc, catalog, providers=(), budget=5000, balance=20000))
        out.append(page)
    return out


@pytest.fixture(scope="module")
def the_diff(pair, catalog):
    return kp.diff(*pair, catalog=catalog, paths=PATHS)


def test_diff_states_the_reports_headroom_in_every_rendering(pair, reports, the_diff, catalog):
    d = the_diff
    said = []
    for sc, page in zip(pair, reports, strict=True):
        p = kp.plan(sc, catalog)
        # The report's card is the tier to buy; the diff's the scenario's tier: the same tier here.
        assert p.tier == p.smallest_tier == "Tier3", (sc.name, p.tier, p.smallest_tier)
        big, small = _card(page, f"Headroom on {p.tier}")
        assert re.fullmatch(MULTIPLE, big), big
        said.append((big, small))
    (x, sx), (y, sy) = said
    assert x != y  # the change moves the headroom: the test reads two different figures
    # JSON: the figure as the report writes it, the number behind it, the sentence
    doc = json.loads(d.to_json())
    cap = doc["capacity"]
    assert cap["headroom_text"] == {"before": x, "after": y}
    assert f"{cap['growth_headroom']['before']:.2f}×" == x and f"{cap['growth_headroom']['after']:.2f}×" == y
    assert cap["headroom_sentence"] == {"before": sx, "after": sy}
    assert "headroom" not in cap and "headroom" not in doc["base"]  # the share-of-the-limit field is gone
    effects = [e for c in doc["causes"] for e in c["effects"] if e["figure"] == "growth_headroom"]
    assert [(f"{e['before']:.2f}×", f"{e['after']:.2f}×") for e in effects] == [(x, y)]
    # text, Markdown and HTML: the lead, the account row and the cause all say x → y, and the sentences
    text, md = d.to_text(), d.to_markdown()
    page = _text(d._repr_html_())
    for name, r in (("text", text), ("markdown", md), ("html", page)):
        assert f"(headroom {x} → {y})" in r, name
        assert re.search(rf"headroom {re.escape(x)} → \w+, headroom {re.escape(y)}", r), name  # account row
        assert f"binding limit RPM → TPM; headroom {x} → {y}" in r, name  # the joint cause
        assert sx in r and sy in r, name
        found = set(re.findall(rf"headroom (?:on Tier\d )?({MULTIPLE})", r))
        assert found == {x, y}, (name, found)
        assert not re.search(r"headroom[^.;|]{0,12}?−?\d+(?:\.\d+)? %", r), name  # never a percentage


def test_diff_quotes_the_month_and_cost_of_the_reports_cost_card(pair, reports, the_diff):
    d = the_diff
    for sc, page, side in zip(pair, reports, (d.base, d.head), strict=True):
        label = _card_label(page, "Cost, next full month")
        month = re.search(r"\((\w{3} \d{4})\)", label).group(1)
        # as_of 2026-11-26: November is partly history, December the next full month
        assert sc.as_of == dt.date(2026, 11, 26) and month == "Dec 2026"
        assert dt.date.fromisoformat(side.account.month + "-01").strftime("%b %Y") == month
        big, _ = _card(page, "Cost, next full month")
        # the same month's expected cost; the report draws token sizes from its own stream, the diff from keyed
        # ones: equal within the sampling noise of the mean tokens
        report_cost = float(big.replace("$", "").replace(",", ""))
        assert side.account.cost_per_month == pytest.approx(report_cost, rel=0.01)
    assert "next full month (Dec 2026)" in d.to_text()


def test_min_growth_headroom_decides_on_the_plans_multiple(support, catalog):
    snap = evaluate(support, "head", catalog=catalog, paths=PATHS)
    scale = kp.plan(support, catalog).headroom().scale
    assert 1.0 < scale < 3.0
    res = kp.check(snap, {"policies": [{"name": "room", "min_growth_headroom": round(scale - 0.01, 2)}]})
    (v,) = res.verdicts
    assert v.status == "pass" and v.value == pytest.approx(scale, rel=1e-12)
    assert f"headroom on Tier3 {scale:.2f}×" in v.message and "traffic can grow to" in v.message
    with pytest.raises(PolicyViolation) as exc:
        kp.check(snap, {"policies": [{"name": "room", "min_growth_headroom": f"{scale + 0.01:.2f}x"}]})
    assert f"under {scale + 0.01:.2f}×" in str(exc.value)
    # no tier: no headroom to compare, said so (exit 3), not a pass
    none = evaluate(support.model_copy(update={"tier": None}), "head", catalog=catalog, paths=PATHS)
    res = kp.check(none, {"policies": [{"name": "room", "min_growth_headroom": 1.2}]}, raise_on_fail=False)
    assert res.verdicts[0].status == "error" and res.exit_code() == 3


def test_the_retired_min_headroom_says_what_to_write(tmp_path):
    f = tmp_path / "guardrails.yaml"
    f.write_text("policies:\n  - name: room\n    min_headroom: 0.2\n    level: warn\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_policy(f)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{f}: policy 'room' field min_headroom: 0.2 is no longer read")
    assert "write min_growth_headroom: 1.25" in msg
    # what it says to write loads
    f.write_text("policies:\n  - name: room\n    min_growth_headroom: 1.25\n    level: warn\n", encoding="utf-8")
    assert load_policy(f)[0].policies[0].min_growth_headroom == 1.25
    with pytest.raises(ConfigError, match=r"<policy>: policy 'r' field min_headroom: 10 %"):
        load_policy({"policies": [{"name": "r", "min_headroom": "10 %"}]})


@pytest.mark.parametrize(
    "body, field",
    [
        ("max_monthly_cost: 5000\n", "max_monthly_cost"),
        ("name: cap\nmax_monthly_cost: 5000\nlevel: warn\n", "max_monthly_cost"),
        ("policies:\n  name: cap\n  max_monthly_cost: 5000\n", "policies"),
        ("max_monthly_cost: 5000\nmin_headroom: 0.2\n", "max_monthly_cost"),
    ],
)
def test_a_flat_policy_file_names_file_field_and_the_line_to_write(tmp_path, body, field):
    f = tmp_path / "g.yaml"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_policy(f)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{f}: field {field}") and "policies:" in msg
    # the line it says to write is a policy file that loads, with the same threshold
    line = msg.split("write ", 1)[1]
    f.write_text(line + "\n", encoding="utf-8")
    pf, _ = load_policy(f)
    assert pf.policies[0].max_monthly_cost.value == 5000
    if "min_headroom" in body:  # the retired key comes back as its replacement
        assert pf.policies[0].min_growth_headroom == 1.25


def test_max_monthly_cost_caps_the_report_month_or_each_of_the_horizon(support, catalog):
    snap = evaluate(support, "head", catalog=catalog, paths=PATHS)
    fc = kp.forecast(support, 13, catalog=catalog, paths=PATHS, seed=support.seed, common_random_numbers=True)
    m = fc.monthly
    first, nxt = float(m["expected"].iloc[0]), float(m["expected"].iloc[1])  # Nov 2026 (from the 26th), Dec
    year = m["expected"].iloc[1:13].astype(float)
    assert m["month"].iloc[1] == "2026-12" and first < nxt < year.max()
    # a cap the partial first month meets and the next full month does not: it fails (the report's month)
    cap = (first + nxt) / 2
    res = kp.check(snap, {"policies": [{"name": "c", "max_monthly_cost": cap}]}, raise_on_fail=False)
    (v,) = res.verdicts
    assert v.status == "fail" and v.value == pytest.approx(nxt, rel=1e-9) and "Dec 2026" in v.message
    # a cap the next full month meets and the year does not: passes alone, fails with horizon_months: 12
    cap = (nxt + year.max()) / 2
    ok = kp.check(snap, {"policies": [{"name": "c", "max_monthly_cost": cap}]})
    assert ok.verdicts[0].status == "pass"
    res = kp.check(
        snap, {"policies": [{"name": "c", "max_monthly_cost": cap, "horizon_months": 12}]}, raise_on_fail=False
    )
    (v,) = res.verdicts
    worst = m["month"].iloc[1 + int(year.to_numpy().argmax())]
    over = int((year > cap).sum())
    label = dt.date.fromisoformat(worst + "-01").strftime("%b %Y")
    assert v.status == "fail" and v.value == pytest.approx(year.max(), rel=1e-9)
    assert f"in {label} (the worst of 12 months from Dec 2026)" in v.message and f"over in {over} of 12" in v.message


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_check_usage_errors_exit_4_not_the_warning_code(capsys, tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("policies:\n  - name: cap\n    max_monthly_cost: 5000\n", encoding="utf-8")
    assert _run(["check", "support_chat", "--policy", str(f), "--no-such-option"], capsys)[0] == 4
    assert _run(["check", "--policy", str(f)], capsys)[0] == 4  # no SCENARIO
    assert _run(["check", "support_chat", "--policy", str(f), "--warn-exit", "abc"], capsys)[0] == 4
    code, out = _run(["check", "support_chat", "--policy", str(f), "--warn-exit", "5"], capsys)
    assert code == 4 and "--warn-exit must be 0 or 2" in out.err
    code, out = _run(["check", "support_chat"], capsys)
    assert code == 4 and "--policy FILE is required" in out.err
    # other commands keep argparse's 2; help is 0 and states the codes
    assert _run(["diff", "--no-such-option"], capsys)[0] == 2
    code, out = _run(["check", "--help"], capsys)
    assert code == 0 and "4 usage error" in " ".join(out.out.split())
