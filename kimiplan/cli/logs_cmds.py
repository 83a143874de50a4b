"""`kimiplan logs summarize|calibrate|mappings`: call logs of any size, read out of core by DuckDB."""

from __future__ import annotations

from ._util import print_json, print_table


def _summarize(args, samples: int = 0):
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.logs import summarize_log

    return summarize_log(
        args.path,
        args.mapping,
        by=[k.strip() for k in args.by.split(",") if k.strip()],
        catalog=load_catalog(args.catalog),
        provider=args.provider,
        region=args.region,
        model=args.model,
        approx_percentiles=args.approx_percentiles,
        samples_per_route=samples,
        on_bad_rows="raise" if args.strict else "count",
        memory_limit=args.memory_limit,
    )


def cmd_summarize(args) -> int:
    s = _summarize(args)
    if args.usage_out:
        from kimiplan.io.export import to_csv

        to_csv(s.usage_frame(), args.usage_out)
    if args.json:
        print_json(s.to_dict())
        return 0
    print(s.headline())
    print()
    t = s.table.drop(columns=["cost_exact"])
    keep = [*s.by, "requests", "refused", "cache_hit_tokens", "cache_miss_tokens", "output_tokens"]
    keep += ["reasoning_tokens", "cost"]
    keep += [c for c in t.columns if c.endswith("_p50") or c.endswith("_p99")]
    if t["rejected_rows"].any():
        keep.append("rejected_rows")
    if t["unpriced_requests"].any():
        keep.append("unpriced_requests")
    shown = t[[c for c in keep if c in t.columns]].rename(columns={"cost": f"cost_{s.currency}"})
    print_table(shown, floatfmt="{:,.2f}")
    if args.usage_out:
        print(f"\nwrote {args.usage_out} (per day and route usage; `kimiplan.finance.backtest.backtest` reads it)")
    return 0


def cmd_calibrate(args) -> int:
    from kimiplan.calibration.fitters import fit_calibration

    args.by = "route"
    s = _summarize(args, samples=args.samples)
    cal = fit_calibration(
        s.samples,
        model=args.fit_model,
        notes=f"from call log {args.path} ({s.mapping})",
        sessions=s.sessions,
        tool_rounds=s.tool_rounds,
    )
    out = cal.save(args.output)
    print(s.headline())
    print(f"wrote {out}: {len(cal.routes)} route(s) from {cal.n_samples:,} sampled calls")
    return 0


def cmd_mappings(args) -> int:
    import pandas as pd

    from kimiplan.logs.mapping import builtin_mappings, load_mapping

    rows = []
    shipped = builtin_mappings()
    for name in shipped:
        m = load_mapping(name)
        rows.append({"mapping": name, "format": m.format or "(by extension)", "description": m.description})
    print_table(pd.DataFrame(rows))
    folder = next(iter(shipped.values())).parent
    print("\nA mapping is a small YAML file; see docs/LOGS.md. Shipped ones live in", folder)
    return 0


def _common(p) -> None:
    p.add_argument(
        "path",
        help="a log file, a glob ('logs/*.parquet') or a folder: Parquet, CSV or JSONL (.gz, .zst ok), or "
        "OpenTelemetry spans (OTLP JSON lines, or Parquet converted from them)",
    )
    p.add_argument(
        "--mapping",
        help="column mapping: openai, litellm, kimiplan-calls, kimiplan-samples, kimiplan-usage, otel-genai or a "
        "YAML file (default: guessed from the columns)",
    )
    p.add_argument("--model", help="model of rows that name none (e.g. a daily usage log), exact ID")
    p.add_argument("--provider", default="moonshot")
    p.add_argument("--region", help="intl (USD) or cn (CNY) for moonshot")
    p.add_argument("--catalog", action="append", default=[], metavar="FILE", help="extra price cards")
    p.add_argument("--approx-percentiles", action="store_true", help="t-digest percentiles (bounded memory)")
    p.add_argument("--memory-limit", metavar="SIZE", help="DuckDB memory limit, e.g. 2GB (spills beyond it)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad row instead of counting it")


def register(sub) -> None:
    lg = sub.add_parser("logs", help="summarize call logs of any size (DuckDB, out of core)")
    lg_sub = lg.add_subparsers(dest="logs_command", metavar="ACTION")
    lg_sub.required = True
    s = lg_sub.add_parser(
        "summarize",
        help="requests, refusals, tokens by price class, exact cost and percentiles per route and day",
        description="Per group: requests, refusals by error type, tokens by price class (cache hit, cache miss, "
        "output, reasoning), cost priced with the card in force on each call's day (exact Decimal sums), and "
        "token and latency percentiles. Bad rows are counted by reason and the first one is named.",
    )
    _common(s)
    s.add_argument("--by", default="route,day", help="group keys among route, day, month, model (default route,day)")
    s.add_argument("--usage-out", metavar="CSV", help="also write the per day and route usage the backtest reads")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_summarize)
    c = lg_sub.add_parser("calibrate", help="fit a calibration file straight from a call log")
    _common(c)
    c.add_argument("-o", "--output", required=True, help="calibration JSON to write")
    c.add_argument("--samples", type=int, default=2000, help="calls sampled per route (default 2000)")
    c.add_argument("--fit-model", help="which model's calls to fit when the log has several")
    c.set_defaults(func=cmd_calibrate)
    m = lg_sub.add_parser("mappings", help="list the shipped column mappings")
    m.set_defaults(func=cmd_mappings)
