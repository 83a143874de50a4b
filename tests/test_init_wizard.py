"""`kimiplan init` forgives (issue 20): a scripted session of the mistakes a newcomer makes (`5%`, `50k`,
`Tier 2`, a kind that does not exist, a bare 5 for growth) ends with a scenario that validates and the command to
run next, never a traceback or an internal path; flags take the same spellings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main


def _session(tmp_path, answers: list[str], *args: str):
    out = tmp_path / "my_app.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "kimiplan.cli", "init", str(out), "--ask", *args],
        input="\n".join(answers) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "160"},
    )
    return proc, out


def test_a_session_of_mistakes_ends_with_a_valid_scenario(tmp_path):
    answers = [
        "rag-app",  # name
        "RAG app",  # not a kind: asked again with the choices
        "rag",
        "fifty thousand",  # not a number: asked again
        "50k",
        "5",  # a bare 5: "did you mean 5 %?"
        "5%",
        "tier 9",  # not a tier: asked again with the list
        "Tier 2",
    ]
    proc, out = _session(tmp_path, answers)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "Traceback" not in text and ".tmp" not in text and "/tmp/" not in text.replace(str(tmp_path), "")
    assert "one of chat, rag, agent" in text
    assert "did you mean 5 %?" in text
    assert "one of Tier0, Tier1, Tier2, Tier3, Tier4, Tier5" in text
    assert "e.g. 50000, 50,000 or 50k" in text
    sc = load_scenario(out)
    assert sc.tier == "Tier2" and sc.traffic.per_day == 50_000 and sc.traffic.monthly_growth == pytest.approx(0.05)
    assert sc.routes[0].name == "answer"  # the rag shape
    last = proc.stdout.strip().splitlines()[-1]
    assert last.strip() == f"kimiplan report {out} -o {out.with_suffix('.html')} --budget 5000 --balance 20000"


def test_end_of_input_takes_the_defaults_and_a_hopeless_answer_writes_nothing(tmp_path):
    proc, out = _session(tmp_path, [])
    assert proc.returncode == 0, proc.stderr
    assert load_scenario(out).traffic.monthly_growth == pytest.approx(0.05)
    out.unlink()
    proc, out = _session(tmp_path, ["x", "rag", "lots"] + ["lots"] * 5)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "requests per day" in proc.stderr and "nothing was written" in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    "flags, want",
    [
        (["--requests-per-day", "50k", "--growth", "5%", "--tier", "tier 2"], (50_000, 0.05, "Tier2")),
        (["--requests-per-day", "1.2M", "--growth", "0.03", "--tier", "3"], (1_200_000, 0.03, "Tier3")),
        (["--requests-per-day", "50,000", "--growth", "150%", "--tier", "Tier1"], (50_000, 1.5, "Tier1")),
    ],
)
def test_flags_take_the_same_spellings(tmp_path, capsys, flags, want):
    out = tmp_path / "f.yaml"
    assert main(["init", str(out), "--yes", *flags]) == 0
    sc = load_scenario(out)
    assert sc.traffic.per_day == pytest.approx(want[0])
    assert sc.traffic.monthly_growth == pytest.approx(want[1]) and sc.tier == want[2]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--growth", "5"], "did you mean 5 %?"),
        (["--tier", "gold"], "one of Tier0"),
        (["--requests-per-day", "many"], "e.g. 50000"),
    ],
)
def test_bad_flags_are_one_clear_line(tmp_path, capsys, flags, needle):
    out = tmp_path / "f.yaml"
    assert main(["init", str(out), "--yes", *flags]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not out.exists()


def test_ctrl_c_in_the_wizard_is_not_a_traceback(tmp_path, monkeypatch, capsys):
    def interrupted(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupted)
    out = tmp_path / "x.yaml"
    assert main(["init", str(out), "--ask"]) == 130
    assert "interrupted" in capsys.readouterr().err and not out.exists()
