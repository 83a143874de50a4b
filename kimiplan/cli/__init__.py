"""The `kimiplan` command line. Each sub-command group lives in its own module with a `register(subparsers)`
function; this file only wires them together. No arithmetic lives in the CLI: it calls the library."""

from __future__ import annotations

import argparse
import importlib
import sys

from kimiplan import __version__
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
    "kimiplan.cli.sweep_cmds",
    "kimiplan.cli.campaign_cmds",
    "kimiplan.cli.init_cmds",
    "kimiplan.cli.review_cmds",
]


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the text already states it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


def _walk(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _walk(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kimiplan",
        description="Plan Kimi K2.6 in production: tokens per route, rate-limit headroom, monthly cost. "
        "Start with `kimiplan init` (a starter scenario) or `kimiplan report support_chat` (a bundled example).",
    )
    parser.add_argument("--version", action="version", version=f"kimiplan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.usage_exit_codes = {}
    for name in _COMMAND_MODULES:
        mod = importlib.import_module(name)
        mod.register(sub)
        # A command whose own exit codes include argparse's 2 (check: 2 = warnings) names another for usage errors.
        parser.usage_exit_codes.update(getattr(mod, "USAGE_EXIT_CODES", {}))
    for p in _walk(parser):
        p.formatter_class = _HelpFormatter
        for action in p._actions:
            # An option without help text still shows its default.
            d = action.default
            if action.help is None and action.option_strings and not (d is None or d is False or d == []):
                action.help = "(default: %(default)s)"
    return parser


def _command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The sub-command named in `argv` (the first word that is one), for its usage-error exit code."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next((w for w in argv if w in sub.choices), None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        code = parser.usage_exit_codes.get(_command(parser, sys.argv[1:] if argv is None else argv))
        if exc.code == 2 and code is not None:
            raise SystemExit(code) from None
        raise
    try:
        return int(args.func(args) or 0)
    except KimiplanError as exc:
        print(f"kimiplan: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C (in the `init` wizard, or a long run): no traceback; writes are atomic, so nothing is half-written.
        print("\nkimiplan: interrupted; nothing more was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
