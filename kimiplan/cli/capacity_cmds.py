"""`kimiplan plan` (analytic capacity plan) and `kimiplan simulate` (per-request simulation)."""

from __future__ import annotations

import sys

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario

from ._util import parse_date, print_json, print_table


def cmd_plan(args) -> int:
    from kimiplan.capacity.plan import plan

    catalog = load_catalog(args.catalog)
    scenario = load_scenario(args.scenario, catalog)
    p = plan(scenario, catalog, target=args.target, percentile=args.percentile)
    if args.json:
        out = {k: v for k, v in p.items() if k != "moments"}
        print_json(out)
        return 0
    print(
        f"scenario {scenario.name}: {scenario.traffic.per_day:,.0f} requests/day on {scenario.provider}"
        f" {p.get('tier') or '(no tier)'}; target refusals < {args.target:.2%}"
    )
    if p.get("tier"):
        ex = p["exhaustion"]
        print(
            f"refusals at the busiest minute: {p['refusal_total']:.3%} (week average "
            f"{p['week_average']['refusal_total']:.3%}); binding limit: {p['binding_limit']}"
        )
        if p["max_scale"] == float("inf"):
            print("sustains any traffic: no online request reaches a limit (Batch API routes do not count)")
        else:
            print(
                f"sustains {p['max_scale']:.2f}x today's traffic ({p['max_requests_per_second']:.3g} req/s); "
                f"exhausted by growth: {'now' if ex['months'] == 0 else ex['date'] or 'not within 3 years'}"
            )
    w = p.get("pacing_wait")
    if w is not None:
        wait = (
            "the queue grows without bound (peak load over the limit)"
            if not w["stable"]
            else (f"{w['p_wait']:.2%} of requests wait, {w['mean_wait_s']:.3g} s on average (Erlang C)")
        )
        print(f"a client pacing on concurrency {w['concurrency']} at the busiest minute: {wait}")
    print(f"smallest tier that holds: {p['smallest_tier'] or 'none'}\n")
    d = p["demand"]
    print_table(d[d["route"] == "total"].drop(columns=["route"]))
    if len(p["ladder"]):
        print()
        print_table(
            p["ladder"][
                [
                    "tier",
                    "concurrency",
                    "rpm",
                    "tpm",
                    "tpd",
                    "refusal_total",
                    "binding_limit",
                    "holds",
                    "max_requests_per_second",
                ]
            ]
        )
    return 0


def cmd_simulate(args) -> int:
    from kimiplan.capacity.sim.simulate import SimSettings, load_trace, replay_trace, simulate

    catalog = load_catalog(args.catalog)
    scenario = load_scenario(args.scenario, catalog)
    # Flags override the scenario's `simulation:` section field by field; a trace defaults to its own length.
    settings = SimSettings.for_scenario(
        scenario,
        hours=args.hours if args.hours is not None else (0.0 if args.trace else None),
        seed=args.seed,
        start=parse_date(args.start, "--start"),
        client={"kind": args.client, "max_retries": args.max_retries},
        window={"rate_window": args.window},
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.trace:
        result = replay_trace(load_trace(args.trace), scenario, catalog, settings)
    else:
        result = simulate(scenario, catalog, settings)
    s = result.summary
    if args.json:
        print_json(s)
        return 0
    print(
        f"{s['requests']:,} requests in {s['hours']:g} h from {s['start'] or 'the trace start'} "
        f"({s['attempts']:,} attempts, client {s['client']}, "
        f"{s['window']} window, seed {s['seed']})"
    )
    rf = s["rejected_fraction"]
    print("refused (share of attempts): " + ", ".join(f"{k} {v:.3%}" for k, v in rf.items()))
    print(
        f"failed for good: {s['failed_fraction']:.3%}; throughput {s['throughput_rps']:.3f} req/s; "
        f"mean in flight {s['mean_in_flight']:.2f}"
    )
    print(
        "busiest second / minute / day against the limits: "
        + ", ".join(
            f"{k} {u['peak']:,.0f}" + (f" of {u['limit']:,.0f} ({u['share_of_limit']:.0%})" if u["limit"] else "")
            for k, u in s["peak_usage"].items()
        )
    )
    print("wait s: " + ", ".join(f"{k} {v:.3g}" for k, v in s["wait_s"].items()))
    print("end-to-end s: " + ", ".join(f"{k} {v:.3g}" for k, v in s["end_to_end_s"].items()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("plan", help="analytic capacity plan: headroom per limit, binding limit, smallest tier")
    p.add_argument("scenario", help="scenario file (YAML/JSON) or example name")
    p.add_argument("--target", type=float, default=0.001, help="refusal target (default 0.001 = 0.1%%)")
    p.add_argument("--percentile", type=float, default=0.999, help="percentile of peak demand (default 0.999)")
    p.add_argument("--catalog", action="append", default=[], metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    s = sub.add_parser("simulate", help="per-request simulation against the tier's limits (429s by limit)")
    s.add_argument("scenario", help="scenario file (YAML/JSON) or example name")
    s.add_argument(
        "--hours",
        type=float,
        default=None,
        help="horizon in hours (default: the scenario's simulation.hours, 24 unless set; a trace: its length)",
    )
    s.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    s.add_argument(
        "--start",
        metavar="YYYY-MM-DD",
        help="first simulated day, 00:00 UTC (default: the scenario's simulation.start, else its as_of)",
    )
    s.add_argument(
        "--client",
        choices=["none", "retry", "pace"],
        default=None,
        help="client behaviour on 429 (default: the scenario's simulation.client, none unless set)",
    )
    s.add_argument("--max-retries", type=int, default=None, help="default: the scenario's, 5 unless set")
    s.add_argument(
        "--window",
        choices=["sliding", "fixed"],
        default=None,
        help="RPM/TPM window (default: the scenario's simulation.window, sliding unless set)",
    )
    s.add_argument("--trace", metavar="FILE", help="replay a usage log (CSV/JSONL: timestamp, input_tokens, ...)")
    s.add_argument("--catalog", action="append", default=[], metavar="FILE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)
