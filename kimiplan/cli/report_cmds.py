"""`kimiplan report SCENARIO -o report.html`: the main job."""

from __future__ import annotations

import sys

from ._util import print_calibration


def cmd_report(args) -> int:
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.report.html import write_report_summary

    scenario = load_scenario(args.scenario)
    path, summary = write_report_summary(scenario, args.output, budget=args.budget, balance=args.balance)
    path = path.resolve()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) for scenario {scenario.name!r}")
    print(f"verdict: {summary.verdict}")
    for w in summary.warnings:
        print(f"warning: {w}")
    print_calibration(scenario)
    opener = "open" if sys.platform == "darwin" else "start" if sys.platform == "win32" else "xdg-open"
    print(f"open it in a browser: {opener} {path}   (or file://{path})")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report (the answer first, then capacity, cost over time, sources)",
        description="Write one self-contained HTML file (works offline) that leads with the decision: the tier to "
        "buy, the binding limit, the month it runs out, the monthly cost band and the assumptions to check.",
    )
    p.add_argument("scenario", help="scenario file or bundled example name")
    p.add_argument("-o", "--output", default="report.html", help="where to write the HTML")
    p.add_argument("--budget", type=float, help="monthly budget in the scenario's currency: adds P(over budget)")
    p.add_argument(
        "--balance", type=float, help="prepaid balance today in the scenario's currency: adds the run-out date"
    )
    p.set_defaults(func=cmd_report)
