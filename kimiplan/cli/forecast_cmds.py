"""`kimiplan forecast`: monthly spend with Monte Carlo bands, budget probability, balance run-out, exports."""

from __future__ import annotations

import argparse

from kimiplan.errors import ConfigError

from ._util import calibration_json, parse_date, print_calibration, print_json, print_table


def cmd_forecast(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.finance.balance import exhaustion, topup_needed, with_balance
    from kimiplan.finance.forecast import forecast
    from kimiplan.io.export import export_forecast
    from kimiplan.io.formats import money, percent

    catalog = load_catalog(args.catalog)
    scenario = load_scenario(args.scenario, catalog)
    fc = forecast(
        scenario,
        args.months,
        start=args.start,
        catalog=catalog,
        paths=args.paths,
        seed=args.seed,
        budget=args.budget,
        daily_cv=args.daily_cv,
        growth_sd=args.growth_sd,
        calibration_samples=args.calibration_samples,
        parameter_uncertainty=args.parameter_uncertainty,
        currency=args.currency,
    )
    focus = _write_focus(fc, args.focus) if args.focus else None
    ex = None
    topup = None
    topups = _topups(args.topup)
    if topups and args.balance is None:
        raise ConfigError("--topup needs --balance (the balance now, before the planned top-ups)")
    if args.balance is not None:
        ex = exhaustion(fc, args.balance, topups)
        # One `status` per month: price, capacity, budget and now the balance (in the table and the exports).
        fc = with_balance(fc, args.balance, topups)
        if args.until:
            topup = topup_needed(fc, args.balance, parse_date(args.until, "--until"), args.confidence, topups)
    # "Expected" is the exact mean (closed form); the Monte Carlo mean would only repeat it with noise.
    cols = ["month", "requests", "expected", *fc.quantile_columns()]
    cols += ["p_over_budget"] if args.budget is not None else []
    cols += ["status"]
    extra = {} if ex is None else {"balance": ex}
    written = export_forecast(fc, xlsx=args.xlsx, csv=args.csv, extra=extra)
    if args.json:
        print_json(
            {
                "scenario": scenario.name,
                "currency": fc.currency,
                "settings": fc.settings,
                "monthly": fc.monthly,
                "by_route": fc.by_route,
                "warnings": fc.warnings,
                "calibration": calibration_json(scenario),
                "balance": ex,
                "topup_needed": topup,
            }
        )
        return 0
    if focus is not None:
        print(f"wrote {args.focus}: {len(focus):,} FOCUS 1.3 rows (route x meter x month x quantile; list prices)")
    print(
        f"{scenario.name}: {scenario.provider}/{scenario.resolved_region} {scenario.model}, "
        f"{len(fc.months)} months from {fc.months[0]}, {fc.settings['paths']:,} paths, seed {fc.settings['seed']}, "
        f"{fc.currency}"
    )
    print_table(fc.monthly[cols], currency=fc.currency)
    print(
        f"Expected: the exact mean of each month's bill; P10–P90: quantiles of {fc.settings['paths']:,} simulated "
        "months (traffic, growth and token sizes vary). Status: ok, or what bites that month (price, capacity on "
        "the scenario's tier, the budget, the prepaid balance)."
    )
    if fc.parameter_note:
        print(f"P10–P90 {fc.parameter_note} (--no-parameter-uncertainty for traffic noise only).")
    for w in fc.warnings:
        print(f"warning: {w}")
    print_calibration(scenario)
    if ex is not None:
        planned = "".join(f", +{money(a, fc.currency)} on {d}" for d, a in sorted(topups.items()))
        print(
            f"\nprepaid balance {money(args.balance, fc.currency)}{planned}: runs out (then every call gets "
            f"{ex['after_that'].iloc[0]}):"
        )
        print_table(ex[["quantile", "runs_out_on", "p_within_horizon"]])
    if topup is not None:
        print(
            f"top-up needed now{' (besides the planned ones)' if topups else ''} to last until {args.until} "
            f"with probability {percent(args.confidence, trim=True)}: {money(topup, fc.currency)}"
        )
    _print_written(written, fc)
    return 0


def _print_written(written, fc) -> None:
    """What a command wrote, and the one-line verdict of the forecast inside it."""
    from kimiplan.io.formats import money

    if not written:
        return
    bad = fc.monthly[fc.monthly["status"] != "ok"]
    verdict = (
        f"every month ok ({money(fc.monthly['expected'].mean(), fc.currency, 0)} a month on average)"
        if bad.empty
        else f"from {bad['month'].iloc[0]}: {bad['status'].iloc[0]}"
    )
    for path in written:
        print(f"wrote {path} (forecast of {len(fc.months)} months; verdict: {verdict})")


def cmd_backtest(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.finance.backtest import backtest

    catalog = load_catalog(args.catalog)
    scenario = load_scenario(args.scenario, catalog)
    result = backtest(
        args.usage_log,
        scenario,
        catalog=catalog,
        min_history=args.min_history,
        token_window=args.token_window,
        level=args.level,
    )
    if args.json:
        print_json({"scenario": scenario.name, **result.to_dict(), "calibration": calibration_json(scenario)})
        return 0
    bt = result.table
    print(
        f"{scenario.name}: each month forecast from the months before it only, against the exact cost of the "
        f"log ({bt['currency'].iloc[0]})"
    )
    print_table(
        bt[
            [
                "month",
                "history_months",
                "forecast",
                "band_low",
                "band_high",
                "actual",
                "inside",
                "pct_error",
                "naive_pct_error",
            ]
        ],
        currency=bt["currency"].iloc[0],
    )
    print(f"actual inside the {result.level:.0%} band in {result.coverage:.0%} of {result.months_judged} months")
    print_calibration(scenario)
    return 0


def _topups(values: list[str]) -> dict:
    """--topup YYYY-MM-DD=AMOUNT, repeatable; amounts on the same day add up."""
    out: dict = {}
    for v in values:
        day, sep, amount = v.partition("=")
        if not sep:
            raise ConfigError(f"--topup must be YYYY-MM-DD=AMOUNT, got {v!r}")
        d = parse_date(day.strip(), "--topup")
        try:
            x = float(amount)
        except ValueError:
            raise ConfigError(f"--topup amount must be a number, got {amount!r} in {v!r}") from None
        out[d] = out.get(d, 0.0) + x
    return out


def cmd_compare(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.finance.variants import compare, run_variants, standard_variants, waterfall

    catalog = load_catalog(args.catalog)
    base = load_scenario(args.scenario, catalog)
    if args.others:
        variants = {"base": base}
        for ref in args.others:
            sc = load_scenario(ref, catalog)
            name = sc.name if sc.name not in variants else f"{sc.name} ({ref})"
            variants[name] = sc
    else:
        variants = standard_variants(base, catalog, k3_family=True if args.k3_family else None)
    if args.drivers is not None and args.drivers not in variants:
        raise ConfigError(f"--drivers: unknown variant {args.drivers!r}; variants: {', '.join(variants)}")
    fcs = run_variants(variants, args.months, catalog=catalog, paths=args.paths, seed=args.seed, currency=args.currency)
    table = compare(fcs)
    drivers = None if args.drivers is None else waterfall(fcs["base"], fcs[args.drivers])
    if args.json:
        print_json(
            {
                "scenario": base.name,
                "months": args.months,
                "variants": table,
                "drivers": drivers,
                "calibration": calibration_json(base),
            }
        )
        return 0
    print(
        f"{base.name}: {args.months} months from {fcs['base'].months[0]}, {args.paths:,} paths per variant, "
        f"{table['currency'].iloc[0]}"
    )
    print_table(
        table[
            [
                "variant",
                "provider",
                "model",
                "expected_total",
                "P10_total",
                "P90_total",
                "per_month",
                "vs_first_pct",
                "status",
            ]
        ],
        currency=table["currency"].iloc[0],
    )
    print_calibration(base)
    flagged = table[table["status"] != "ok"]
    for _, row in flagged.iterrows():
        print(f"note: {row['variant']}: {row['status']}")
    if drivers is not None:
        print(f"\nfrom base to {args.drivers!r}: drivers of the difference (they add up exactly)")
        steps = drivers[["step", "amount", "measure", "currency"]].copy()
        # The first and last rows are the two totals: name them after the variants, not "base"/"other".
        steps["step"] = steps["step"].replace({"base": "base (total)", "other": f"{args.drivers} (total)"})
        print_table(steps.rename(columns={"step": "driver"}), formats={"amount": "money"})
    return 0


def _int(name):
    # Ranges are checked by the library, which names the field; here only "is it a whole number".
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {v!r}") from None
        return n

    return parse


def register(sub) -> None:
    p = sub.add_parser("forecast", help="monthly spend forecast with bands, budget probability and balance run-out")
    p.add_argument("scenario", metavar="SCENARIO", help="scenario file or example name (support_chat, ...)")
    p.add_argument("--months", type=_int("--months"), default=12, help="horizon in calendar months (1-120)")
    p.add_argument("--start", metavar="YYYY-MM", help="first month (default: the month of the scenario's as_of)")
    p.add_argument("--budget", type=float, help="monthly budget: report P(month > budget)")
    p.add_argument("--paths", type=_int("--paths"), default=10_000, help="Monte Carlo paths")
    p.add_argument("--seed", type=_int("--seed"), help="random seed (default: the scenario's)")
    p.add_argument("--daily-cv", type=float, default=0.15, help="day-to-day traffic coefficient of variation")
    p.add_argument("--growth-sd", type=float, default=0.02, help="uncertainty (sd) of the monthly growth rate")
    p.add_argument(
        "--calibration-samples",
        type=_int("--calibration-samples"),
        help="calls the token sizes were calibrated from (adds the uncertainty of their mean)",
    )
    p.add_argument(
        "--no-parameter-uncertainty",
        dest="parameter_uncertainty",
        action="store_false",
        help="bands without the calibration's sampling uncertainty of each calibrated route's mean cost "
        "(only traffic and request noise)",
    )
    p.add_argument("--currency", help="report in this currency (needs the scenario's exchange_rate)")
    p.add_argument("--balance", type=float, help="prepaid balance now (as of the scenario's as_of)")
    p.add_argument(
        "--topup",
        action="append",
        default=[],
        metavar="YYYY-MM-DD=AMOUNT",
        help="with --balance: a planned top-up on that day (repeatable)",
    )
    p.add_argument("--until", metavar="YYYY-MM-DD", help="with --balance: the top-up that lasts until this date")
    p.add_argument("--confidence", type=float, default=0.9, help="with --until: probability of lasting (default 0.9)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--xlsx", metavar="OUT.xlsx", help="Excel workbook: one sheet per view plus assumptions")
    p.add_argument("--csv", metavar="OUT.csv", help="CSV of the monthly view")
    p.add_argument(
        "--focus",
        metavar="OUT.csv|OUT.parquet",
        help="the forecast as FOCUS 1.3 Cost and Usage rows (route x meter x month x quantile; x_Forecast=true)",
    )
    p.add_argument("--catalog", action="append", default=[], metavar="FILE")
    p.set_defaults(func=cmd_forecast)

    c = sub.add_parser("compare", help="forecast variants side by side (providers, models, batch, thinking, cache)")
    c.add_argument("scenario", metavar="SCENARIO", help="the base scenario (file or example name)")
    c.add_argument(
        "others",
        metavar="OTHER",
        nargs="*",
        help="scenarios to compare with the base; none: the standard variants (kimi-k2.5, other "
        "providers, Batch API, thinking off, prefix cached on 50 %% of requests) that the catalog can price",
    )
    c.add_argument("--months", type=_int("--months"), default=12, help="horizon in calendar months (1-120)")
    c.add_argument("--paths", type=_int("--paths"), default=2000, help="Monte Carlo paths per variant")
    c.add_argument("--seed", type=_int("--seed"), help="random seed (default: each scenario's)")
    c.add_argument("--currency", help="report in this currency (needs the base scenario's exchange_rate)")
    c.add_argument("--drivers", metavar="VARIANT", help="also split the change from base to VARIANT into drivers")
    c.add_argument(
        "--k3-family",
        action="store_true",
        help="add K3, K3.1 Pro and K3.1 Pro highspeed to the standard variants (default: when an agent route exists)",
    )
    c.add_argument("--json", action="store_true")
    c.add_argument("--catalog", action="append", default=[], metavar="FILE")
    c.set_defaults(func=cmd_compare)

    b = sub.add_parser("backtest", help="forecast past months from the months before them; compare with a usage log")
    b.add_argument("scenario", metavar="SCENARIO", help="scenario file or example name (support_chat, ...)")
    b.add_argument(
        "usage_log",
        metavar="USAGE_LOG",
        help="CSV: date, route, requests, prompt_tokens, cached_tokens, completion_tokens, web_search_calls",
    )
    b.add_argument("--min-history", type=_int("--min-history"), default=3, help="months of history before a forecast")
    b.add_argument(
        "--token-window",
        type=_int("--token-window"),
        default=3,
        help="recent months whose tokens per request the forecast uses",
    )
    b.add_argument("--level", type=float, default=0.8, help="prediction band level (default 0.8)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--catalog", action="append", default=[], metavar="FILE")
    b.set_defaults(func=cmd_backtest)


def _write_focus(fc, path):
    """The forecast as FOCUS 1.3 Cost and Usage rows, written to `path` (.csv or .parquet)."""
    from kimiplan.finance.focus import focus_frame
    from kimiplan.io.export import to_focus

    rows = focus_frame(fc)
    to_focus(rows, path)
    return rows
