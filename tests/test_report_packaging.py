import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kimiplan.catalog.resolve import load_scenario
from kimiplan.model.scenario import example_path
from kimiplan.report.html import write_report

ROOT = Path(__file__).resolve().parent.parent


def test_report_is_self_contained(tmp_path):
    out = write_report(load_scenario(example_path("support_chat")), tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Tokens per request" in text and "Expected cost by route" in text
    # plotly.js inlined once; no script is loaded from the network
    assert text.count("plotly.js v") == 1 and '<script src="http' not in text
    assert not list(tmp_path.glob(".r.html.*"))  # no temporary left behind
    assert out.stat().st_mode & 0o044 == 0o044  # readable like any file the user writes, not 0600


def test_report_failure_keeps_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_text("previous report")
    import kimiplan.report.html as rep

    def boom(*a, **k):
        raise RuntimeError("section failed")

    monkeypatch.setattr(rep, "collect_sections", boom)
    with pytest.raises(RuntimeError):
        rep.write_report(load_scenario(example_path("support_chat")), target)
    assert target.read_text() == "previous report"


def test_wheel_carries_catalog_and_examples(tmp_path):
    # `pip install .` (not editable) must ship data/ inside the package as kimiplan.data.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("kimiplan-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "kimiplan/data/catalog/prices.toml",
        "kimiplan/data/catalog/tiers.toml",
        "kimiplan/data/scenarios/support_chat.yaml",
        "kimiplan/data/scenarios/coding_assistant.yaml",
        "kimiplan/cli/__init__.py",
        "kimiplan/tokens/tokenizer.py",
        "kimiplan/capacity/sim/kernel.py",
    ):
        assert needed in names, needed
