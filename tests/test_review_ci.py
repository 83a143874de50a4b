"""The CI recipes in docs/ci and .pre-commit-hooks.yaml: valid YAML, and their `kimiplan` commands are run here, as
written, on a scripted repository (a base branch and a pull request that raises the traffic)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kimiplan.cli import main
from kimiplan.model.scenario import example_path
from kimiplan.review.render import MARKER

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")

GUARDRAILS = """policies:
  - name: monthly-cap
    max_monthly_cost: 5000
    level: fail
  - name: no-big-jumps
    max_increase_percent: 25
    level: warn
  - name: tier-holds
    tier_must_hold: true
"""


def git(repo: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid", "GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture
def pr_repo(tmp_path, monkeypatch):
    """main holds plans/app.yaml (support_chat); the pull request's working tree raises its traffic by 10 %."""
    base = example_path("support_chat").read_text(encoding="utf-8")
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "app.yaml").write_text(base, encoding="utf-8")
    (tmp_path / "guardrails.yaml").write_text(GUARDRAILS, encoding="utf-8")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    git(tmp_path, "update-ref", "refs/remotes/origin/main", "main")  # what actions/checkout fetches
    git(tmp_path, "checkout", "-q", "-b", "pr")
    raised = base.replace("requests_per_day: 40000", "requests_per_day: 44000")
    (tmp_path / "plans" / "app.yaml").write_text(raised, encoding="utf-8")
    git(tmp_path, "commit", "-q", "-am", "more traffic")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_traffic(repo: Path, per_day: int) -> None:
    text = example_path("support_chat").read_text(encoding="utf-8")
    (repo / "plans" / "app.yaml").write_text(
        text.replace("requests_per_day: 40000", f"requests_per_day: {per_day}"), "utf-8"
    )


def run_kimiplan(cmd: str, capsys) -> tuple[int, str]:
    argv = shlex.split(cmd)
    assert argv[0] == "kimiplan", cmd
    code = main(argv[1:])
    return code, capsys.readouterr().out


def kimiplan_lines(script: str, env: dict[str, str]) -> list[str]:
    out = []
    for line in script.splitlines():
        line = line.strip()
        if line.startswith("kimiplan "):
            for k, v in env.items():
                line = line.replace(k, v)
            out.append(line)
    return out


def test_github_workflow(pr_repo, capsys):
    wf = yaml.safe_load((ROOT / "docs" / "ci" / "kimiplan-diff.yml").read_text(encoding="utf-8"))
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on and wf["permissions"]["pull-requests"] == "write"
    steps = wf["jobs"]["kimiplan"]["steps"]
    assert any(s.get("uses", "").startswith("actions/checkout") and s["with"]["fetch-depth"] == 0 for s in steps)
    script = next(s for s in steps if s.get("uses", "").startswith("actions/github-script"))["with"]["script"]
    assert f'"{MARKER}"' in script and "updateComment" in script and "createComment" in script
    cmds = [c for s in steps if "run" in s for c in kimiplan_lines(s["run"], {"${{ github.base_ref }}": "main"})]
    assert [c.split()[1] for c in cmds] == ["diff", "check"]
    code, _ = run_kimiplan(cmds[0], capsys)
    assert code == 0
    comment = (pr_repo / "kimiplan-diff.md").read_text(encoding="utf-8")
    # +10 % of December 2026 (the next full month from as_of 2026-11-26), $4,516
    assert comment.startswith(MARKER) and "monthly cost +$452" in comment and "(+10 %)" in comment
    code, out = run_kimiplan(cmds[1], capsys)
    assert code == 0, out  # +10 %: under the cap, within the jump, the tier holds
    assert "0 failed" in out and "monthly-cap" in out
    # a pull request that lowers the cost: --only-increases writes an empty comment, and the script deletes it
    write_traffic(pr_repo, 30000)
    (pr_repo / "kimiplan-diff.md").unlink()
    assert run_kimiplan(cmds[0], capsys)[0] == 0
    assert not (pr_repo / "kimiplan-diff.md").exists() or (pr_repo / "kimiplan-diff.md").read_text() == ""
    assert "deleteComment" in script and 'existsSync("kimiplan-diff.md")' in script


def test_gitlab_snippet(pr_repo, capsys):
    doc = yaml.safe_load((ROOT / "docs" / "ci" / "gitlab-ci.yml").read_text(encoding="utf-8"))
    script = doc["kimiplan"]["script"]
    cmds = kimiplan_lines("\n".join(script), {"$CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main"})
    assert [c.split()[1] for c in cmds] == ["diff", "check"]
    for c in cmds:
        code, out = run_kimiplan(c, capsys)
        assert code == 0, (c, out)
    assert (pr_repo / "kimiplan-diff.md").read_text(encoding="utf-8").startswith(MARKER)
    assert any(MARKER in s for s in script)  # the note is found by the same marker


def test_pre_commit_hooks(pr_repo, capsys):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    ids = {h["id"]: h for h in hooks}
    assert set(ids) == {"kimiplan-check", "kimiplan-diff"}
    # pre-commit runs `entry + args + files`; the file changed since HEAD in the working tree
    write_traffic(pr_repo, 60000)
    for h in hooks:
        args = ["--policy", "guardrails.yaml"] if h["id"] == "kimiplan-check" else []
        code, out = run_kimiplan(" ".join([h["entry"], *args, "plans/app.yaml"]), capsys)
        if h["id"] == "kimiplan-check":
            assert code == 1 and "monthly-cap" in out and "FAIL" in out  # +36 % from HEAD: over $5,000
        else:
            assert code == 0 and "monthly cost +" in out


def test_readme_shows_the_generated_comment_and_the_shipped_workflow():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_diff_example", ROOT / "tools" / "readme_diff_example.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    # the figures may move with the rest of kimiplan (python tools/readme_diff_example.py --write refreshes them);
    # the text, the tables and the workflow must be what the tool writes
    assert ex.stale(digits=False) == [], "README.md is stale: run python tools/readme_diff_example.py --write"
