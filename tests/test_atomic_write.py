"""The one atomic writer: all or nothing, mode of a plain new file, fsync before the rename, no temp files left
on errors, interrupts or (after the next write) a kill -9 mid-write."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest

from kimiplan.errors import ConfigError
from kimiplan.io import atomic
from kimiplan.io.atomic import atomic_write
from kimiplan.io.export import to_csv, to_excel


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_files_get_the_mode_a_plain_open_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the umask makes of a new file (0644 usually), not mkstemp's 0600
    for p in (atomic_write(tmp_path / "a.txt", "hello"), to_csv(pd.DataFrame({"a": [1]}), tmp_path / "b.csv")):
        assert _mode(p) == _mode(plain)
    to_excel({"v": pd.DataFrame({"a": [1]})}, tmp_path / "c.xlsx")
    assert _mode(tmp_path / "c.xlsx") == _mode(plain)
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.csv", "c.xlsx", "plain.txt"]


@pytest.mark.parametrize("exc", [ZeroDivisionError, KeyboardInterrupt, SystemExit])
def test_any_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, exc):
    target = tmp_path / "r.html"
    atomic_write(target, "old")

    def boom(tmp):
        tmp.write_text("half of the new one")
        raise exc()

    with pytest.raises(exc):
        atomic_write(target, boom)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.html"]


def test_fsync_happens_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "f.txt", b"data")
    # the file's data, then the rename, then the folder (so the rename itself is durable)
    assert events[:2] == ["fsync", "replace"] and events[-1] == "fsync"


def test_missing_folder_is_a_named_error(tmp_path):
    with pytest.raises(ConfigError, match="report folder .*does not exist"):
        atomic_write(tmp_path / "nope" / "r.html", "x", what="report")


def test_kill_mid_write_leaves_nothing_after_the_next_write(tmp_path):
    """A writer killed with SIGKILL halfway leaves its temp file; the next write of that file removes it (its
    pid is gone), and a temp file of a live writer is left alone."""
    target = tmp_path / "big.html"
    code = (
        "import sys, time\n"
        "from kimiplan.io.atomic import atomic_write\n"
        "def slow(tmp):\n"
        "    with open(tmp, 'w') as f:\n"
        "        f.write('x' * 100000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"atomic_write({str(target)!r}, slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()
    live = tmp_path / f".big.html.{os.getpid()}.abc.html.tmp"  # this process is alive: not stale
    live.write_text("in progress")
    deadline = time.monotonic() + 5
    atomic_write(target, "fresh")
    assert time.monotonic() < deadline
    assert sorted(os.listdir(tmp_path)) == sorted(["big.html", live.name]) and target.read_text() == "fresh"
