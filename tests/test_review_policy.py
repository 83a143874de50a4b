"""`kp.check` and `kimiplan check`: policies on a plan and on a diff, levels, exit codes, units, bad input."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import kimiplan as kp
from kimiplan.cli import main
from kimiplan.errors import ConfigError
from kimiplan.model.scenario import Scenario, example_path
from kimiplan.review.policy import PolicyViolation, load_policy
from kimiplan.review.snapshot import evaluate

PATHS = 400
SIMPLEST = """policies:
  - name: monthly-cap
    max_monthly_cost: 5000   # in the scenario's currency
    level: fail              # or warn
"""


def edit(sc: Scenario, **top) -> Scenario:
    data = sc.model_dump(mode="python", by_alias=True)
    data.update(top)
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def snap(support, catalog):
    return evaluate(support, "head", catalog=catalog, paths=PATHS, origin="support_chat.yaml")


@pytest.fixture(scope="module")
def more_traffic(support, catalog, snap):
    """+10 % requests per day: the monthly cost rises by exactly 10 % (common random numbers)."""
    head = edit(support, traffic={**support.traffic.model_dump(by_alias=True), "requests_per_day": 44_000.0})
    return kp.diff(snap, head, catalog=catalog, paths=PATHS)


def test_the_simplest_form_parses_and_decides(tmp_path, snap, catalog):
    f = tmp_path / "guardrails.yaml"
    f.write_text(SIMPLEST, encoding="utf-8")
    res = kp.check(snap, f, catalog=catalog)
    (v,) = res.verdicts
    assert v.status == "pass" and v.policy == "monthly-cap" and v.threshold == 5000
    # the next full month (as_of 2026-11-26: December), the month the report's cost card quotes
    assert v.value == snap.account.cost_per_month and "$5,000" in v.message and "Dec 2026" in v.message
    f.write_text(SIMPLEST.replace("5000", "3000"), encoding="utf-8")
    with pytest.raises(PolicyViolation) as exc:
        kp.check(snap, f, catalog=catalog)
    assert "monthly-cap" in str(exc.value) and "over the cap $3,000" in str(exc.value)
    assert exc.value.result.exit_code() == 1
    f.write_text(SIMPLEST.replace("5000", "3000").replace("level: fail", "level: warn"), encoding="utf-8")
    res = kp.check(snap, f, catalog=catalog)
    assert [v.status for v in res.verdicts] == ["warn"]
    assert res.exit_code() == 0 and res.exit_code(warn_exit=2) == 2


@pytest.mark.parametrize(
    "body, words",
    [
        ("    max_monthy_cost: 5000\n", ["max_monthy_cost", "Extra inputs"]),
        ("    max_monthly_cost: 10 %\n", ["max_monthly_cost", "not a percentage", "10 %"]),
        ("    max_increase_percent: 300 USD\n", ["max_increase_percent", "not an amount of money", "300 USD"]),
        ("    max_refusal: 5\n", ["max_refusal", "share in [0, 1]", "'5 %'"]),
        ("    min_growth_headroom: -0.1\n", ["min_growth_headroom", "-0.1", "at least 1"]),
        ("    min_growth_headroom: 0.2\n", ["min_growth_headroom", "0.2", "reads as a share", "write 1.2"]),
        ("    min_growth_headroom: 20 %\n", ["min_growth_headroom", "20 %", "not a percentage", "write 1.2"]),
        ("    min_headroom: 0.2\n", ["'p' field min_headroom: 0.2", "no longer read", "min_growth_headroom: 1.25"]),
        ("    min_headroom: 10 %\n", ["'p' field min_headroom: 10 %", "min_growth_headroom: 1.11"]),
        ("    horizon_months: 12\n    tier_must_hold: true\n", ["horizon_months applies to max_monthly_cost"]),
        ("    level: fatal\n    max_monthly_cost: 1\n", ["level", "fatal"]),
        ("    balance: 100\n", ["min_balance_months and balance go together"]),
    ],
)
def test_a_bad_policy_file_is_one_line_naming_file_key_and_value(tmp_path, body, words):
    f = tmp_path / "guardrails.yaml"
    f.write_text(f"policies:\n  - name: p\n{body}", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_policy(f)
    msg = str(exc.value)
    assert "\n" not in msg and str(f) in msg
    for w in words:
        assert w in msg, msg


def test_money_in_another_currency_is_refused_at_check(tmp_path, snap, catalog):
    f = tmp_path / "g.yaml"
    f.write_text("policies:\n  - name: cap\n    max_monthly_cost: 5000 CNY\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"g\.yaml: policy 'cap' key max_monthly_cost: 5,000 CNY .* USD"):
        kp.check(snap, f, catalog=catalog)
    # the same amount in the right currency, and with a symbol, decides
    for v in ("5000 USD", "$5,000", "5000"):
        f.write_text(f"policies:\n  - name: cap\n    max_monthly_cost: '{v}'\n", encoding="utf-8")
        assert kp.check(snap, f, catalog=catalog).verdicts[0].threshold == 5000


def test_increase_thresholds_on_a_diff(more_traffic, snap, catalog):
    d = more_traffic
    assert d.cost_percent == pytest.approx(0.10, rel=1e-9)
    res = kp.check(
        d,
        {"policies": [{"name": "pct", "max_increase_percent": 12}, {"name": "abs", "max_increase": "500 USD"}]},
        catalog=catalog,
    )
    assert [v.status for v in res.verdicts] == ["pass", "pass"]
    with pytest.raises(PolicyViolation) as exc:
        kp.check(d, {"policies": [{"name": "pct", "max_increase_percent": "5 %"}]}, catalog=catalog)
    assert "monthly cost change 10 %" in str(exc.value) and "over the allowed 5 %" in str(exc.value)
    # without a base there is nothing to compare with: could not evaluate, exit 3
    res = kp.check(snap, {"policies": [{"name": "pct", "max_increase_percent": 5}]}, catalog=catalog)
    assert res.verdicts[0].status == "error" and res.exit_code() == 3 and "needs a base" in res.verdicts[0].message


def test_capacity_policies_name_route_and_figures(support, catalog, snap):
    pol = {
        "policies": [
            {"name": "hold", "tier_must_hold": True},
            {"name": "refusal", "max_refusal": "0.1 %", "routes": ["answer"]},
            {"name": "headroom", "min_growth_headroom": 1.2},
        ]
    }
    res = kp.check(snap, pol, catalog=catalog)
    assert [v.status for v in res.verdicts] == ["pass", "pass", "pass"]
    assert res.verdicts[1].route == "answer" and "route answer refused" in res.verdicts[1].message
    small = evaluate(edit(support, tier="Tier1"), "head", catalog=catalog, paths=PATHS)
    res = kp.check(small, pol, catalog=catalog, raise_on_fail=False)
    by = {v.policy: v for v in res.verdicts}
    assert by["hold"].status == "fail" and "Tier1 does not hold" in by["hold"].message
    assert by["refusal"].status == "fail" and by["refusal"].value > 0.001
    assert by["headroom"].status == "fail"
    assert res.exit_code() == 1
    res = kp.check(snap, {"policies": [{"name": "r", "max_refusal": 0.01, "routes": ["nope"]}]}, catalog=catalog)
    assert res.verdicts[0].status == "error" and "'nope'" in res.verdicts[0].message


def test_balance_must_last(snap, catalog):
    # about $4,000 a month from as_of (2026-11-26), growing 6 % a month: $20,000 runs out about 4 months later
    ok = kp.check(snap, {"policies": [{"name": "b", "balance": 20000, "min_balance_months": 3}]}, catalog=catalog)
    assert ok.verdicts[0].status == "pass" and "(by 2027-02-26) on 0 % of paths" in ok.verdicts[0].message
    with pytest.raises(PolicyViolation, match=r"runs out within 5 months \(by 2027-04-26\) on 100 % of paths"):
        kp.check(snap, {"policies": [{"name": "b", "balance": 20000, "min_balance_months": 5}]}, catalog=catalog)


def test_calibration_age(support, catalog):
    cal = str(Path(example_path("support_chat")).parents[1] / "calibrations" / "support_chat_emulator.json")
    data = support.model_dump(mode="python", by_alias=True)
    data["routes"][0]["calibration"] = cal
    data["routes"][1]["calibration"] = cal
    snap = evaluate(Scenario.model_validate(data), "head", catalog=catalog, paths=PATHS)
    pol = {"policies": [{"name": "fresh", "max_calibration_age_days": 30, "routes": ["answer", "summarize_ticket"]}]}
    res = kp.check(snap, pol, catalog=catalog, today=dt.date(2026, 12, 3))
    assert [v.status for v in res.verdicts] == ["pass", "pass"]
    assert "calibrated on 2026-11-26 (7 days ago)" in res.verdicts[0].message
    res = kp.check(snap, pol, catalog=catalog, today=dt.date(2027, 2, 1), raise_on_fail=False)
    assert [v.status for v in res.verdicts] == ["fail", "fail"]
    res = kp.check(snap, {"policies": [{"name": "all", "max_calibration_age_days": 30}]}, catalog=catalog,
                   today=dt.date(2026, 12, 3), raise_on_fail=False)  # fmt: skip
    assert {v.route: v.status for v in res.verdicts}["web_lookup"] == "fail"  # never calibrated


# ---------------------------------------------------------------- the command line


def git(repo: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid", "GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_cli_exit_codes(tmp_path, capsys, monkeypatch):
    base = example_path("support_chat").read_text(encoding="utf-8")
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "app.yaml").write_text(base, encoding="utf-8")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    (tmp_path / "app.yaml").write_text(base.replace("requests_per_day: 40000", "requests_per_day: 44000"), "utf-8")
    g = tmp_path / "g.yaml"
    monkeypatch.chdir(tmp_path)

    def run(policy: str, *extra: str) -> tuple[int, str, str]:
        g.write_text(policy, encoding="utf-8")
        code = main(["check", "app.yaml", "--policy", "g.yaml", "--paths", "400", *extra])
        out = capsys.readouterr()
        return code, out.out, out.err

    pct = "policies:\n  - name: pct\n    max_increase_percent: {}\n    level: {}\n"
    assert run(pct.format(12, "fail"), "--base", "main")[0] == 0
    code, out, _ = run(pct.format(5, "fail"), "--base", "main")
    assert code == 1 and "FAIL  pct: monthly cost change 10 %" in out and "[app.yaml]" in out
    assert run(pct.format(5, "warn"), "--base", "main")[0] == 0
    assert run(pct.format(5, "warn"), "--base", "main", "--warn-exit", "2")[0] == 2
    code, out, _ = run(pct.format(5, "warn"), "--base", "main", "--format", "json")
    assert json.loads(out)["verdicts"][0]["status"] == "warn"
    # the cost falls from HEAD's point of view when head is the commit and base the working tree: silent
    (tmp_path / "app.yaml").write_text(base.replace("requests_per_day: 40000", "requests_per_day: 30000"), "utf-8")
    code, out, _ = run(pct.format(5, "fail"), "--base", "main", "--only-increases")
    assert code == 0 and out == ""
    # could not evaluate: no base for an increase, a revision that does not exist, a bad policy
    code, out, err = run(pct.format(5, "fail"))
    assert code == 3 and "needs a base" in out
    code, out, err = run(pct.format(5, "fail"), "--base", "nope")
    assert code == 3 and err.count("\n") == 1 and "'nope'" in err
    code, out, err = run("policies:\n  - name: p\n    max_monthly_cost: 10 %\n")
    assert code == 3 and err.count("\n") == 1 and "g.yaml" in err and "max_monthly_cost" in err and "10 %" in err
    # an error found while checking (not while parsing) names the file too, not "<policy>"
    code, out, err = run("policies:\n  - name: p\n    max_monthly_cost: 5000 EUR\n")
    assert code == 3 and err.startswith("kimiplan: error: g.yaml: policy 'p' key max_monthly_cost: 5,000 EUR"), err


def test_a_capacity_plan_alone_answers_capacity_policies(support, catalog):
    plan = kp.plan(support, catalog)
    pol = {
        "policies": [
            {"name": "hold", "tier_must_hold": True, "min_growth_headroom": "1.1x"},
            {"name": "cap", "max_monthly_cost": 1},
        ]
    }
    res = kp.check(plan, pol, catalog=catalog)
    by = {(v.policy, v.check): v for v in res.verdicts}
    assert by[("hold", "tier_must_hold")].status == "pass" and by[("hold", "min_growth_headroom")].status == "pass"
    assert (
        by[("cap", "max_monthly_cost")].status == "error"
        and "needs the scenario" in by[("cap", "max_monthly_cost")].message
    )
    assert res.exit_code() == 3
