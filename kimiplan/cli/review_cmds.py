"""`kimiplan diff` (the cost and capacity change between two scenarios, or one file at two git revisions) and
`kimiplan check` (guardrails on a plan or a diff, with exit codes CI can act on).

Exit codes of `check`: 0 pass; 1 a fail-level policy failed; 2 only warnings, when `--warn-exit 2`; 3 could not
evaluate (a bad file, a revision that does not exist, a policy that does not parse); 4 a usage error (an unknown
option, a missing argument: argparse's own 2 would read as warnings). Heavy modules load inside the command
functions, so `kimiplan --help` stays fast."""

from __future__ import annotations

import sys

from kimiplan.errors import KimiplanError

EXIT_ERROR = 3
EXIT_USAGE = 4
USAGE_EXIT_CODES = {"check": EXIT_USAGE}  # read by kimiplan.cli.main for argparse's usage errors


def _error(exc: Exception) -> int:
    print(f"kimiplan: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def _sides(args) -> list[tuple]:
    """(base side, head side) pairs from the positional paths and --base/--head."""
    from kimiplan.errors import ConfigError
    from kimiplan.review.sources import read_side

    paths = args.scenarios
    if args.base is None:
        if args.head is not None:
            raise ConfigError("--head REV needs --base REV (or give two files: kimiplan diff BASE HEAD)")
        if len(paths) != 2:
            raise ConfigError(
                f"diff takes two scenarios (BASE HEAD), or one or more files with --base REV; got {len(paths)}"
            )
        return [(read_side(paths[0]), read_side(paths[1]))]
    return [(read_side(p, args.base), read_side(p, args.head)) for p in paths]


def _calibrated(side):
    """The side with each route's `calibration:` file applied (read from the working tree, also for a side at
    another revision)."""
    if side.scenario is None or not any(r.calibration for r in side.scenario.routes):
        return side
    from kimiplan.calibration.fitters import apply_calibration
    from kimiplan.review.sources import Side

    return Side(apply_calibration(side.scenario), side.origin)


def _diffs(args, sides):
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import check_against_catalog
    from kimiplan.review.diff import diff

    catalog = load_catalog(args.catalog)
    if getattr(args, "calibrated", False):
        sides = [tuple(_calibrated(s) for s in pair) for pair in sides]
    out = []
    for a, b in sides:
        for s in (a, b):
            if s.scenario is not None:
                check_against_catalog(s.scenario, catalog, origin=s.origin)
        out.append(
            diff(
                a.scenario,
                b.scenario,
                catalog=catalog,
                paths=args.paths,
                seed=args.seed,
                base_label=args.base or "base",
                head_label=args.head or ("working tree" if args.base else "head"),
                base_origin=a.origin,
                head_origin=b.origin,
            )
        )
    return out


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return
    from kimiplan.io.atomic import atomic_write

    atomic_write(output, text, what="output")


def cmd_diff(args) -> int:
    try:
        if args.paths < 2:
            from kimiplan.errors import ConfigError

            raise ConfigError(f"--paths must be at least 2, got {args.paths}")
        diffs = _diffs(args, _sides(args))
    except KimiplanError as exc:
        return _error(exc)
    from kimiplan.review.render import combined_markdown

    if args.only_increases and not any(d.increases for d in diffs):
        return 0  # silent: nothing costs more (an empty output tells CI not to comment)
    if args.format == "json":
        import json

        docs = [d.to_dict() for d in diffs]
        _write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, ensure_ascii=False), args.output)
    elif args.format == "markdown":
        _write(combined_markdown(diffs, title=args.title), args.output)
    else:
        _write("\n\n".join(d.to_text() for d in diffs), args.output)
    return 0


def cmd_check(args) -> int:
    # Usage errors (as argparse's own, exit 4 rather than 2, which means warnings here).
    if args.policy is None:
        print("kimiplan check: error: --policy FILE is required (a YAML file with a `policies:` list; see docs/CI.md)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.warn_exit not in (0, 2):
        print(f"kimiplan check: error: --warn-exit must be 0 or 2, got {args.warn_exit}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from kimiplan.errors import ConfigError
        from kimiplan.review.policy import check, load_policy

        policy, origin = load_policy(args.policy)
        if args.base is None and args.head is not None:
            raise ConfigError("--head REV needs --base REV")
        if args.base is not None:
            subjects = _diffs(args, _sides(args))
        else:
            from kimiplan.catalog.cards import load_catalog
            from kimiplan.catalog.resolve import load_scenario
            from kimiplan.review.snapshot import evaluate

            catalog = load_catalog(args.catalog)
            from kimiplan.review.sources import Side

            subjects = []
            for p in args.scenarios:
                side = Side(load_scenario(p, catalog), p)
                side = _calibrated(side) if args.calibrated else side
                subjects.append(
                    evaluate(side.scenario, "scenario", catalog=catalog, paths=args.paths, seed=args.seed, origin=p)
                )
        from kimiplan.cli._util import parse_date

        result = check(
            subjects,
            policy,
            today=parse_date(args.today, "--today"),
            only_increases=args.only_increases,
            raise_on_fail=False,
            origin=origin,
        )
    except KimiplanError as exc:
        return _error(exc)
    if result.silent:
        return 0
    if args.format == "json":
        import json

        _write(
            json.dumps({**result.to_dict(), "exit_code": result.exit_code(args.warn_exit)}, indent=2, default=str),
            args.output,
        )
    elif args.format == "markdown":
        _write(result.to_markdown(), args.output)
    else:
        _write(result.summary(), args.output)
    return result.exit_code(args.warn_exit)


def _add_common(p) -> None:
    p.add_argument(
        "--base", metavar="REV", help="read each SCENARIO at git revision REV as the base (e.g. origin/main)"
    )
    p.add_argument(
        "--head", metavar="REV", help="read each SCENARIO at git revision REV as the head (default: the file)"
    )
    p.add_argument("--catalog", action="append", metavar="FILE", help="extra catalog rows (TOML/YAML), repeatable")
    p.add_argument("--paths", type=int, default=4000, help="Monte Carlo paths for the band of the difference")
    p.add_argument("--seed", type=int, help="seed of both sides (default: the smaller of the two scenarios' seeds)")
    p.add_argument("--calibrated", action="store_true", help="apply each route's calibration file to both sides first")


def register(sub) -> None:
    p = sub.add_parser(
        "diff",
        help="the cost and capacity change between two scenarios, or one file at two git revisions",
        description="Compare two scenarios (BASE HEAD), or each SCENARIO file at --base REV against the working "
        "tree (or --head REV): one lead line (monthly cost change with its P10-P90 band, the tier verdict "
        "before -> after), one row per route, then each changed field and what it moved. Exit 3 when a side "
        "cannot be read or evaluated.",
    )
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="BASE HEAD, or files with --base REV")
    _add_common(p)
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text", help="output format")
    p.add_argument("--title", help="heading of the Markdown comment")
    p.add_argument("--only-increases", action="store_true", help="print nothing unless the monthly cost rises")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_diff)

    c = sub.add_parser(
        "check",
        help="guardrails on plans and diffs: exit 0 pass, 1 fail, 2 warnings (with --warn-exit 2), 3 not evaluated, "
        "4 usage error",
        description="Apply the policies of --policy FILE to each SCENARIO (with --base REV: to its diff against "
        "that revision): maximum monthly cost or its P90, maximum increase (currency or percent), maximum refusal "
        "per route at the busiest minute, minimum headroom (the growth multiple, as the report states it), the tier "
        "must hold, the balance must last N months, calibrations no older than N days. Monthly costs are the next "
        "full month's (the report's cost card). Each verdict names the policy, the route and the figures. Exit "
        "codes: 0 pass, 1 a fail-level policy failed, 2 only warnings when --warn-exit 2, 3 could not evaluate (a "
        "bad file or policy, an unknown revision), 4 usage error (an unknown option, a missing argument).",
    )
    c.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario files (or bundled example names)")
    c.add_argument("--policy", metavar="FILE", help="the policy file (YAML/JSON), required")
    _add_common(c)
    c.add_argument("--only-increases", action="store_true", help="silent (exit 0) when no monthly cost rises")
    c.add_argument("--warn-exit", type=int, default=0, metavar="{0,2}", help="exit code when only warnings")
    c.add_argument("--format", choices=("text", "markdown", "json"), default="text", help="output format")
    c.add_argument("--today", metavar="YYYY-MM-DD", help="the date calibration ages count to (default: today, UTC)")
    c.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    c.set_defaults(func=cmd_check)
