"""Rebuild the shipped prompts of the support_chat example (data/prompts/answer.jsonl, summarize_ticket.jsonl)
to the scenario's own component sizes, with realistic text (kimiplan.calibration.prompts). Deterministic.

    python tools/build_prompts.py
"""

from __future__ import annotations

import json
from pathlib import Path

from kimiplan.calibration.prompts import scenario_prompts
from kimiplan.catalog.resolve import load_scenario

ROOT = Path(__file__).resolve().parents[1]
N = 24


def main() -> None:
    sc = load_scenario("support_chat")
    for route, prompts in scenario_prompts(sc, ["answer", "summarize_ticket"], n=N).items():
        path = ROOT / "data" / "prompts" / f"{route}.jsonl"
        path.write_text("".join(json.dumps({"messages": p}, ensure_ascii=False) + "\n" for p in prompts), "utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(prompts)} prompts)")


if __name__ == "__main__":
    main()
