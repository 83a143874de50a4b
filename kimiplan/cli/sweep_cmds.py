"""`kimiplan sweep SCENARIO... --grid GRID.yaml`: plan every point of a grid of overrides, locally or on Dask;
`kimiplan simulate-days SCENARIO --days N`: a long simulation in day chunks, locally or on Dask."""

from __future__ import annotations

from ._util import print_table


def cmd_sweep(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.sweeps import sweep

    res = sweep(
        args.scenario or None,
        args.grid,
        catalog=load_catalog(args.catalog),
        engine=args.engine,
        scheduler=args.scheduler,
        seed=args.seed,
        simulate_hours=args.simulate_hours,
        target=args.target,
        horizon_months=args.horizon_months,
    )
    t = res.table
    if args.out:
        res.to_parquet(args.out)
    if args.html:
        from kimiplan.io.export import atomic_write

        fig = res.figure()
        atomic_write(args.html, lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"), ".html")
    cur = t["currency"].iloc[0]
    holds = int(t["holds"].sum())
    print(
        f"{len(t):,} points ({args.engine} engine, seed {args.seed}): {holds:,} hold the refusal target "
        f"({res.target:.2%}); monthly cost {t['cost_per_month'].min():,.2f} to {t['cost_per_month'].max():,.2f} {cur}"
    )
    f = res.frontier()
    cols = ["scenario", *res.paths, "tier", "cost_per_month", "refusal_total", "binding_limit", "max_scale"]
    cols += ["months_to_exhaustion"]
    shown = f[[c for c in dict.fromkeys(cols) if c in f.columns]].rename(
        columns={"cost_per_month": f"cost_per_month_{cur}"}
    )
    for note in res.notes:  # which routes are calibrated
        print(note)
    print(f"\ncost/refusal frontier ({len(f)} points):")
    print_table(shown.head(args.top), floatfmt="{:,.4g}")
    if args.out:
        print(f"\nwrote {args.out} ({len(t):,} rows)")
    if args.html:
        print(f"wrote {args.html} (frontier figure)")
    return 0


def cmd_simulate_days(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.model.settings import SimSettings
    from kimiplan.sweeps.longrun import simulate_long

    catalog = load_catalog(args.catalog)
    sc = load_scenario(args.scenario, catalog)
    settings = SimSettings.for_scenario(sc, seed=args.seed, client={"kind": args.client} if args.client else None)
    res = simulate_long(sc, args.days, catalog=catalog, settings=settings, engine=args.engine, scheduler=args.scheduler)
    if args.json:
        print(res.to_json())
        return 0
    s = res.summary
    rf = s["rejected_fraction"]
    print(
        f"{sc.name}: {args.days} days ({args.engine} engine, seed {s['seed']}, growth {s['growth']:.1%}/month): "
        f"{s['requests']:,} requests, {rf['total']:.3%} of attempts refused, {s['failed_fraction']:.3%} failed"
    )
    refused = {k: v for k, v in s["refused"].items() if v}
    if refused:
        print("refused by limit: " + ", ".join(f"{k} {v:,}" for k, v in refused.items()))
    per_day = res.per_day
    if len(per_day):
        print()
        print_table(per_day.head(args.top), floatfmt="{:,.4g}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="plan every point of a grid of scenario overrides (tier, budgets, growth, model ...), local or Dask",
        description="A grid file maps dotted scenario paths to lists of values (tier, model, provider, "
        "traffic.monthly_growth, traffic.requests_per_day, routes.NAME.max_completion_tokens, routes.*.FIELD, inline "
        "tiers as maps); the points are their product. Each point is planned (optionally simulated with its own "
        "seed); the result is one tidy table and the cost/refusal frontier.",
    )
    p.add_argument("scenario", nargs="*", help="scenario files or example names (default: the grid's scenarios:)")
    p.add_argument("--grid", required=True, help="YAML grid: path -> list of values (and/or points:)")
    p.add_argument("--engine", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--out", metavar="PARQUET", help="write the full table (one row per point) as Parquet")
    p.add_argument("--html", metavar="FILE", help="write the frontier figure as HTML")
    p.add_argument("--seed", type=_nonneg, default=0, help="root seed; each point gets SeedSequence(seed).spawn")
    p.add_argument("--simulate-hours", type=float, default=0.0, help="also simulate each point for this many hours")
    p.add_argument("--target", type=float, help="refusal target (default the planner's)")
    p.add_argument("--horizon-months", type=int, default=12, help="months of growth in cost_over_horizon")
    p.add_argument("--top", type=int, default=30, help="frontier rows printed")
    p.add_argument("--catalog", action="append", default=[], metavar="FILE")
    p.set_defaults(func=cmd_sweep)
    register_days(sub)


def _nonneg(v: str) -> int:
    import argparse

    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def register_days(sub) -> None:
    p = sub.add_parser(
        "simulate-days",
        help="simulate many days (a month, months with growth) in day chunks, locally or on Dask",
        description="Each day is drawn from its own seed (SeedSequence(seed).spawn(days)), on Dask workers in "
        "parallel with --engine dask; the rate-limit state (requests in flight, the RPM/TPM window, tokens used "
        "today, pending retries) is carried from day to day. Both engines give the same result for a seed.",
    )
    p.add_argument("scenario", help="scenario file or example name")
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--engine", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--seed", type=_nonneg, help="default: the scenario's")
    p.add_argument("--client", choices=("none", "retry", "pace", "openai-sdk"), help="client behaviour on a 429")
    p.add_argument("--top", type=int, default=40, help="days printed")
    p.add_argument("--catalog", action="append", default=[], metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate_days)
