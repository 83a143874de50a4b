"""`kimiplan report SCENARIO -o report.html`: the main job."""

from __future__ import annotations

from kimiplan.catalog.resolve import load_scenario
from kimiplan.report.html import write_report


def cmd_report(args) -> int:
    scenario = load_scenario(args.scenario)
    path = write_report(scenario, args.output)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) for scenario {scenario.name!r}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report (tokens, cost, capacity, forecast)")
    p.add_argument("scenario", help="scenario file or bundled example name")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=cmd_report)
