"""Start-up time of the command line, against `python -c pass` measured in the same run (the interpreter's own
start-up, which no CLI can beat): `kimiplan --help` and `--version` should take under 0.3 s, `kimiplan plan
support_chat` under 1 s. Best of several runs each, so a busy machine's noise counts less.

    python benchmarks/bench_cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

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
    args = ap.parse_args()
    py = sys.executable
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
