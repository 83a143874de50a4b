"""The command line starts without the heavy libraries (issue 20): building the parser for `kimiplan --help`
imports no pandas, numpy, scipy, numba, plotly or the report; each command loads them when it runs. Timings
live in benchmarks/bench_cli_startup.py (a ratio against `python -c pass`), never here."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys, kimiplan.cli as c; p = c.build_parser(); "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'numpy', 'scipy', 'numba', "
        "'plotly', 'pydantic') or m.startswith(('kimiplan.report', 'kimiplan.catalog.cards')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = {m.split(".")[0] if not m.startswith("kimiplan") else m for m in out.stdout.strip().split(",") if m}
    assert not loaded, f"imported at start-up: {sorted(loaded)}"


def test_plan_loads_no_scipy_stats_simulator_or_vocabulary():
    # scipy.stats (~1 s of import; model/laws.py computes its laws on scipy.special), the simulator's kernel (a
    # plan without a retrying client simulates nothing) and the tokenizer's vocabulary (the template's markers are
    # known) stay unloaded by `kimiplan plan` on the example.
    code = (
        "import sys, io, contextlib, kimiplan.cli as c\n"
        "with contextlib.redirect_stdout(io.StringIO()): rc = c.main(['plan', 'support_chat'])\n"
        "print(rc, ','.join(sorted(m for m in sys.modules if m in ('scipy.stats', 'splintr', "
        "'kimiplan.capacity.sim.kernel', 'kimiplan.capacity.sim.simulate'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    rc, _, loaded = out.stdout.strip().partition(" ")
    assert rc == "0" and not loaded, f"rc {rc}; loaded by plan: {loaded}"


def test_version_and_help_work_without_them():
    for args in (["--version"], ["--help"], ["plan", "--help"]):
        out = subprocess.run([sys.executable, "-m", "kimiplan.cli", *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "kimiplan" in out.stdout, out.stderr


def test_campaign_preset_names_are_the_models():
    from kimiplan.cli.campaign_cmds import PRESET_NAMES
    from kimiplan.finance.campaign import PRESETS

    assert PRESET_NAMES == tuple(sorted(PRESETS))
