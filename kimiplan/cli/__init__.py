"""The `kimiplan` command line. Each sub-command group lives in its own module with a `register(subparsers)`
function; this file only wires them together. No arithmetic lives in the CLI: it calls the library."""

from __future__ import annotations

import argparse
import importlib
import sys

from kimiplan.errors import KimiplanError

# Modules that add sub-commands; each exposes register(subparsers).
_COMMAND_MODULES = [
    "kimiplan.cli.catalog_cmds",
    "kimiplan.cli.tokens_cmds",
    "kimiplan.cli.cost_cmds",
    "kimiplan.cli.scenario_cmds",
    "kimiplan.cli.capacity_cmds",
    "kimiplan.cli.forecast_cmds",
    "kimiplan.cli.calibration_cmds",
    "kimiplan.cli.report_cmds",
    "kimiplan.cli.logs_cmds",
    "kimiplan.cli.campaign_cmds",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kimiplan",
        description="Plan Kimi K2.6 in production: tokens per route, rate-limit headroom, monthly cost.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KimiplanError as exc:
        print(f"kimiplan: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
