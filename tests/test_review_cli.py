"""`kimiplan diff` on a scripted git history in a temporary repository: a commit that raises
max_completion_tokens, one that adds a route, one that swaps the model; a file absent at the base; bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kimiplan.cli import main
from kimiplan.model.scenario import example_path
from kimiplan.review.render import MARKER, markdown_to_html

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


BASE = example_path("support_chat").read_text(encoding="utf-8")
RAISED = BASE.replace(
    "output: {kind: lognormal, median: 220, p95: 650}\n    max_completion_tokens: 2048",
    "output: {kind: lognormal, median: 220, p95: 650}\n    max_completion_tokens: 16384",
)
NEW_ROUTE = """  - name: triage
    share: 0.05
    system: 400
    user: {kind: lognormal, median: 60, p95: 200}
    output: {kind: lognormal, median: 40, p95: 120}
    max_completion_tokens: 256
"""
WITH_ROUTE = RAISED.replace("  - name: web_lookup\n    share: 0.05", "  - name: web_lookup\n    share: 0.0001").replace(
    "    share: 0.15\n", "    share: 0.0999\n"
) + NEW_ROUTE.replace("share: 0.05", "share: 0.1")
SWAPPED = WITH_ROUTE.replace("model: kimi-k2.6", "model: kimi-k2.5")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("app")
    git(repo, "init", "-q", "-b", "main")
    (repo / "plans").mkdir()
    f = repo / "plans" / "app.yaml"
    for text, msg in ((BASE, "base"), (RAISED, "raise answer budget"), (WITH_ROUTE, "add triage"), (SWAPPED, "k2.5")):
        f.write_text(text, encoding="utf-8")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", msg)
    (repo / "plans" / "other.yaml").write_text(BASE, encoding="utf-8")  # in the working tree only
    return repo


def run(capsys, monkeypatch, cwd: Path, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_raised_max_completion_tokens_commit(repo, capsys, monkeypatch):
    code, out, err = run(
        capsys, monkeypatch, repo / "plans", "diff", "app.yaml", "--base", "main~3", "--head", "main~2",
        "--format", "markdown", "--paths", "400",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith(MARKER)
    assert "`answer.max_completion_tokens` 2,048 → 16,384: TPM reservation +14,336 per request" in out
    assert "TPM now binds" in out
    html = markdown_to_html(out)
    assert html.count("<table>") >= 1 and "<strong>monthly cost" in html


def test_added_route_and_model_swap_commits(repo, capsys, monkeypatch):
    code, out, err = run(
        capsys, monkeypatch, repo, "diff", "plans/app.yaml", "--base", "main~2", "--head", "main~1",
        "--format", "json", "--paths", "400",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert {r["name"]: r["status"] for r in doc["routes"]}["triage"] == "added"
    assert any(c["field"] == "routes" and c["after"] == "triage" for x in doc["causes"] for c in x["changes"])
    assert doc["base"]["origin"] == "main~2:app.yaml"
    code, out, err = run(
        capsys, monkeypatch, repo, "diff", "plans/app.yaml", "--base", "main~1", "--format", "markdown",
        "--paths", "400",
    )  # fmt: skip
    assert code == 0, err
    assert "different model: kimi-k2.6 → kimi-k2.5" in out
    assert "`model` kimi-k2.6 → kimi-k2.5" in out


def test_file_absent_at_base_is_all_added(repo, capsys, monkeypatch):
    code, out, err = run(
        capsys, monkeypatch, repo, "diff", "plans/other.yaml", "--base", "main", "--format", "json", "--paths", "400"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["base"]["exists"] is False and {r["status"] for r in doc["routes"]} == {"added"}
    assert doc["cost"]["before"] == 0 and doc["cost"]["delta"] == doc["cost"]["after"] > 0


def test_only_increases_is_silent_when_cost_falls(repo, capsys, monkeypatch):
    # main~1 -> main swaps K2.6 for K2.5; the reverse direction is the other sign: one of them is silent
    outs = []
    for base, head in (("main~1", "main"), ("main", "main~1")):
        code, out, err = run(
            capsys, monkeypatch, repo, "diff", "plans/app.yaml", "--base", base, "--head", head, "--only-increases",
            "--format", "markdown", "--paths", "400",
        )  # fmt: skip
        assert code == 0, err
        outs.append(out)
    assert sorted(bool(o) for o in outs) == [False, True]


def test_bad_revision_and_bad_file_exit_3_with_one_line(repo, capsys, monkeypatch, tmp_path):
    code, out, err = run(capsys, monkeypatch, repo, "diff", "plans/app.yaml", "--base", "no-such-branch")
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "no-such-branch" in err and "app.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("max_completion_tokens: 2048", "max_completion_tokens: -5", 1), encoding="utf-8")
    code, out, err = run(capsys, monkeypatch, repo, "diff", str(example_path("support_chat")), str(bad))
    assert code == 3 and err.count("\n") == 1 and "max_completion_tokens" in err and "bad.yaml" in err
    code, out, err = run(capsys, monkeypatch, tmp_path, "diff", str(bad), "--base", "main")
    assert code == 3 and "not inside a git repository" in err


def test_calibrated_sides(tmp_path, capsys, monkeypatch):
    cal = example_path("support_chat").parents[1] / "calibrations" / "support_chat_emulator.json"
    head = tmp_path / "head.yaml"
    budget = "    max_completion_tokens: 2048\n    cache:"
    head.write_text(BASE.replace(budget, budget.replace("\n", f"\n    calibration: {cal}\n")), encoding="utf-8")
    base = str(example_path("support_chat"))
    _, plain, _ = run(capsys, monkeypatch, tmp_path, "diff", base, str(head), "--format", "json", "--paths", "400")
    code, calibrated, err = run(
        capsys, monkeypatch, tmp_path, "diff", base, str(head), "--format", "json", "--paths", "400", "--calibrated"
    )
    assert code == 0, err
    plain, calibrated = json.loads(plain), json.loads(calibrated)
    # the field alone moves nothing; applied, the fitted output law (median 218 against 220) moves the answer route
    assert plain["cost"]["delta"] == 0
    ans = next(r for r in calibrated["routes"] if r["name"] == "answer")
    assert ans["status"] == "changed" and ans["tokens"]["output"]["delta"] != 0
