"""`kimiplan campaign`: an evaluation campaign's cost band per model/provider and its duration at a tier."""

from __future__ import annotations

from ._util import parse_date, print_json, print_table

_SYMBOL = {"USD": "$", "CNY": "¥"}


def _money(v, cur: str) -> str:
    return f"{_SYMBOL.get(cur, '')}{v:,.0f}" if v == v and v is not None else ""


def _hours(h) -> str:
    if h is None or h != h:
        return ""
    return f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} days"


def cmd_campaign(args) -> int:
    import pandas as pd

    from kimiplan.catalog.cards import load_catalog
    from kimiplan.finance.campaign import BENCHMARK_SOURCE, estimate_campaign

    models = None
    if args.model:
        models = tuple((args.provider, m) for m in args.model)
    est = estimate_campaign(
        args.preset,
        args.tasks,
        args.runs,
        tier=args.tier,
        models=models,
        catalog=load_catalog(args.catalog),
        as_of=parse_date(args.on),
        samples=args.samples,
        variants=not args.no_variants,
        calibration=args.calibration,
    )
    if args.json:
        print_json(est.to_dict())
        return 0
    c = est.costs
    n = est.tasks * est.runs_per_task
    print(
        f"Campaign {est.preset}: {est.tasks:,} tasks x {est.runs_per_task} runs = {n:,} agent runs"
        + (f", at {est.tier}" if est.tier else " (no tier: pass --tier for a duration)")
    )
    print(f"Budgets (official): {est.official}  [{BENCHMARK_SOURCE}]")
    table = pd.DataFrame(
        {
            "variant": c["variant"],
            "provider": c["provider"],
            "model": c["model"] + c["batch"].map({True: " (batch)", False: ""}),
            "cost (P05-P95)": [
                f"{_money(lo, cur)} - {_money(hi, cur)}"
                for lo, hi, cur in zip(c["cost_p05"], c["cost_p95"], c["currency"])
            ],
            "expected": [_money(v, cur) for v, cur in zip(c["cost_expected"], c["currency"])],
            "per run P50 / P99": [
                f"{_SYMBOL.get(cur, '')}{a:,.2f} / {_SYMBOL.get(cur, '')}{b:,.2f}"
                for a, b, cur in zip(c["cost_per_run_p50"], c["cost_per_run_p99"], c["currency"])
            ],
            "cache writes": [f"{v:.0%}" for v in c["cache_write_share"]],
            "duration": [_hours(h) for h in c["duration_h"]],
            "bound by": c["binding"].fillna(""),
            "price source": c["official_price"].map({True: "official", False: "third party"}),
        }
    )
    print_table(table)
    for model, status in c.groupby("model", sort=False)["token_sizes"].first().items():
        if status != "assumed":
            print(f"token sizes on {model}: {status}; the other models' rows are assumed")
    print(
        "\nCost band: P05-P95 of the sum of the runs (sampling); the rows 'tasks take half/twice the steps' give the"
        " band of the assumptions. Duration: the slowest of total reserved tokens / TPM (each step reserves its"
        " prompt + the per-step budget), total steps / RPM, model time / concurrency, and the longest run (P99);"
        " only Moonshot's tiers are in the catalog. Prices may exclude taxes."
    )
    print("Assumptions (not from the official table; override them in a scenario of your own):")
    for k, v in est.assumptions.items():
        print(f"  - {k}: {v}")
    return 0


# The preset names for --help without importing the campaign model (numpy, pandas) at start-up; a test holds
# them equal to kimiplan.finance.campaign.PRESETS.
PRESET_NAMES = ("browsecomp", "math", "swe-bench")


def register(sub) -> None:
    p = sub.add_parser("campaign", help="cost band per model and duration at a tier of an evaluation campaign")
    p.add_argument("preset", choices=PRESET_NAMES, help="benchmark preset from Kimi's best-practice table")
    p.add_argument("--tasks", type=int, required=True, help="number of tasks (problems, instances)")
    p.add_argument("--runs", type=int, help="runs per task (default: the official table's)")
    p.add_argument("--tier", help="Moonshot rate tier for the duration, e.g. Tier3")
    p.add_argument("--model", action="append", help="price only these models (repeatable); default: K2.6 and K3 family")
    p.add_argument("--provider", default="moonshot", help="provider of --model (default moonshot)")
    p.add_argument("--on", metavar="YYYY-MM-DD", help="prices and tiers as of this date (default today)")
    p.add_argument("--samples", type=int, default=2000, help="runs sampled per model (default 2000)")
    p.add_argument("--no-variants", action="store_true", help="skip reasoning-dropped / no cache / step variants")
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration JSON with a route named like the preset: its measured per-step laws replace the assumed "
        "ones on the rows of its model",
    )
    p.add_argument("--catalog", action="append", default=[], metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_campaign)
