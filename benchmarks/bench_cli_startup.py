"""Start-up time of the command line, against `python -c pass` measured in the same run (the interpreter's own
start-up, which no CLI can beat): `kimiplan --help` and `--version` should take under 0.3 s, `kimiplan plan
support_chat` under 1 s. Best of several runs each, so a busy machine's noise counts less.

kimiplan is byte-compiled first, as an installed package is (pip compiles a wheel's modules): an editable install
under PYTHONDONTWRITEBYTECODE=1 never writes its .pyc files and would compile the ~50 modules `plan` loads from
source on every start (about 0.15 s), which no installed copy pays. `--no-compile` measures without that step.

    python benchmarks/bench_cli_startup.py [--repeat 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import compileall
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"--help": 0.3, "--version": 0.3, "plan support_chat": 1.0}


def best(cmd: list[str], repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out = min(out, time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile kimiplan first")
    args = ap.parse_args()
    py = sys.executable
    if not args.no_compile:
        import kimiplan

        # Writes only missing or stale .pyc files, whatever PYTHONDONTWRITEBYTECODE says.
        compileall.compile_dir(Path(kimiplan.__file__).parent, quiet=1)
    print(f"kimiplan byte-compiled first: {'no' if args.no_compile else 'yes'}")
    ref = best([py, "-c", "pass"], args.repeat)
    print(f"python -c pass (reference):      {ref:6.3f} s")
    missed = 0
    for what, target in TARGETS.items():
        t = best([py, "-m", "kimiplan.cli", *what.split()], args.repeat)
        ok = t <= target
        missed += not ok
        print(
            f"kimiplan {what:<22} {t:6.3f} s  ({t / ref:5.1f}x the reference, +{t - ref:.3f} s; "
            f"target {target:g} s: {'met' if ok else 'MISSED'})"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
