"""The README's calibration path, run as written: the commands are read from the README itself, against the
emulator on 127.0.0.1 (a free port instead of 8765), in a fresh folder that sees only the clone's data/."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Calibrating from the command line") :]
    block = section[section.index("```sh") + 5 : section.index("```", section.index("```sh") + 5)]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line.split("#")[0]) for line in joined.splitlines() if line.strip()]


def test_readme_sample_fit_apply_report_on_the_emulator(tmp_path):
    cmds = readme_commands()
    assert [c[:2] for c in cmds] == [
        ["kimiplan", "emulator"],
        ["kimiplan", "calibrate"],
        ["kimiplan", "calibrate"],
        ["kimiplan", "calibrate"],
        ["kimiplan", "report"],
    ]
    assert [c[2] for c in cmds[1:4]] == ["sample", "fit", "apply"]
    (tmp_path / "data").symlink_to(ROOT / "data")
    kp = [sys.executable, "-m", "kimiplan"]
    serve = [a if a != "&" else None for a in cmds[0][1:]]
    serve = ["0" if a == "8765" else a for a in serve if a is not None]
    proc = subprocess.Popen([*kp, *serve], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url), url
        outputs = []
        for cmd in cmds[1:]:
            argv = [url if a == "http://127.0.0.1:8765/v1" else a for a in cmd[1:]]
            r = subprocess.run([*kp, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
            outputs.append(r.stdout)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "completed 40" in outputs[0] and "failed 0" in outputs[0]
    assert "route 'answer': calibrated from 20 calls on" in outputs[2]
    # The shipped prompts are built to the scenario's own sizes, so the measured input is applied (whether or not
    # it differs from the assumption by more than its interval); the emulator is named as what was measured.
    assert "measured on the local emulator" in outputs[2]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "calibrated from 20 calls on" in html and "on 1 of 3 routes (web_lookup)" in html
    written = (tmp_path / "support_chat_calibrated.yaml").read_text()
    assert written.count("# route ") == 3 and "measured: server_overhead, input, cache, output" in written
