"""`kimiplan plan` (analytic capacity plan) and `kimiplan simulate` (per-request simulation)."""

from __future__ import annotations

import sys

from kimiplan.errors import ConfigError

from ._util import calibration_json, parse_date, print_calibration, print_json, print_table


def _fraction_flag(value: float, flag: str, example: str) -> float:
    if not 0 < value < 1:
        raise ConfigError(f"{flag} must be in (0, 1), e.g. {example}, got {value:g}")
    return value


def cmd_plan(args) -> int:
    from kimiplan.capacity.plan import plan
    from kimiplan.capacity.result import TIER_TABLE_COLUMNS
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario

    target = _fraction_flag(args.target, "--target", "0.001 for 0.1 % refused")
    percentile = _fraction_flag(args.percentile, "--percentile", "0.999")
    catalog = load_catalog(args.catalog)
    scenario = load_scenario(args.scenario, catalog)
    if args.tier_table is not None:
        scenario = scenario.model_copy(update={"tier_table": args.tier_table})
    if args.window is not None or args.client is not None:
        from kimiplan.model.settings import SimSettings, Simulation

        # Through SimSettings.for_scenario, so a new client kind takes its own defaults (max_retries).
        st = SimSettings.for_scenario(scenario, client={"kind": args.client}, window={"rate_window": args.window})
        sim = Simulation(
            hours=scenario.simulation.hours, start=scenario.simulation.start, client=st.client, window=st.window
        )
        scenario = scenario.model_copy(update={"simulation": sim})
    p = plan(scenario, catalog, target=target, percentile=percentile)
    sessions = None
    if any(r.agent is not None and not r.batch for r in scenario.routes):
        from kimiplan.capacity.agent_steps import agent_capacity

        sessions = agent_capacity(scenario, catalog)
    if args.json:
        out = p.to_dict()
        if sessions is not None:  # agent routes: the demand rows count calls; the session view per route
            out["agent_sessions"] = sessions
        out["calibration"] = calibration_json(scenario)
        print_json(out)
        return 0
    print(f"{scenario.traffic.per_day:,.0f} requests/day on {scenario.provider}")
    if sessions is not None:
        for r in sessions.itertuples():
            print(
                f"agent route {r.route!r}: a request is a run of {r.calls_per_run:,.1f} calls on average; at the "
                f"busiest minute {r.runs_per_minute:,.2f} runs/min start, {r.runs_in_flight:,.1f} runs in flight, "
                f"{r.steps_per_minute:,.1f} calls/min, {r.reserved_tokens_per_minute:,.0f} reserved tokens/min "
                "(mean); the tables below count its calls as requests"
            )
    print(p.verdict())
    print(p.describe())
    by = p.refusal_by_route or {}
    from kimiplan.io.formats import percent

    if len(by) > 1:
        print(
            "refused at the busiest minute, by route (share of its requests): "
            + ", ".join(f"{k} {percent(v)}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
        )
    print_calibration(scenario)
    print()
    from kimiplan.io.formats import ColumnFormat

    # One headroom: the growth multiple before refusals pass the target (not a second "1 - use" column).
    head = {"max_scale": ColumnFormat("multiple", header="Headroom (×)")}
    d = p.demand
    print_table(d[d["route"] == "total"].drop(columns=["route", "headroom"], errors="ignore"))
    if p.by_tier_table:
        print("\nthe verdict under each tier table (headline marked):")
        print_table(p.tier_tables[list(TIER_TABLE_COLUMNS)], formats=head)
    if len(p.ladder):
        print()
        print_table(
            p.ladder[
                [
                    "tier",
                    "concurrency",
                    "rpm",
                    "tpm",
                    "tpd",
                    "refusal_total",
                    "binding_limit",
                    "holds",
                    "max_scale",
                    "max_requests_per_second",
                    "recharge",
                    "recharge_currency",
                ]
            ],
            formats=head,
        )
    return 0


def cmd_simulate(args) -> int:
    from kimiplan.capacity.sim.simulate import SimSettings, load_trace, replay_trace, simulate
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.io.formats import number, percent, seconds

    catalog = load_catalog(args.catalog)
    scenario = load_scenario(args.scenario, catalog)
    # Flags override the scenario's `simulation:` section field by field; a trace defaults to its own length.
    settings = SimSettings.for_scenario(
        scenario,
        hours=args.hours if args.hours is not None else (0.0 if args.trace else None),
        seed=args.seed,
        start=parse_date(args.start, "--start"),
        client={"kind": args.client, "max_retries": args.max_retries, "retry_after": args.retry_after},
        window={"rate_window": args.window},
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.trace:
        result = replay_trace(load_trace(args.trace), scenario, catalog, settings)
    else:
        result = simulate(scenario, catalog, settings)
    s = result.summary
    if args.json:
        print_json({**s.to_dict(), "calibration": calibration_json(scenario)})
        return 0
    print(
        f"{s['requests']:,} requests in {s['hours']:g} h from {s['start'] or 'the trace start'} "
        f"({s['attempts']:,} attempts, client {s['client']}, "
        f"{s['window']} window, seed {s['seed']})"
    )
    rf = s["rejected_fraction"]
    print("refused (share of attempts): " + ", ".join(f"{k} {percent(v)}" for k, v in rf.items()))
    failed = percent(s["failed_fraction"])
    if s["client"] == "openai-sdk":
        failed += " (raise RateLimitError in the application after the OpenAI SDK's retries)"
    print(
        f"failed for good: {failed}; throughput {number(s['throughput_rps'])} req/s; "
        f"mean in flight {number(s['mean_in_flight'])}"
    )
    if len(s["by_route"]) > 1:
        from kimiplan.capacity.sim.simulate import worst_route

        print(
            "refused by route (share of its attempts): "
            + ", ".join(f"{k} {percent(v)}" for k, v in s["rejected_fraction_by_route"].items())
        )
        worst = worst_route(s["rejected_fraction_by_route"])
        if worst:
            print(f"route refused most: {worst}")
    print(
        "busiest second / minute / day against the limits: "
        + ", ".join(
            f"{k} {u['peak']:,.0f}" + (f" of {u['limit']:,.0f} ({percent(u['share_of_limit'])})" if u["limit"] else "")
            for k, u in s["peak_usage"].items()
        )
    )
    print("wait: " + ", ".join(f"{k} {seconds(v)}" for k, v in s["wait_s"].items()))
    print("end to end: " + ", ".join(f"{k} {seconds(v)}" for k, v in s["end_to_end_s"].items()))
    print_calibration(scenario)
    return 0


def register(sub) -> None:
    p = sub.add_parser("plan", help="analytic capacity plan: headroom per limit, binding limit, smallest tier")
    p.add_argument("scenario", help="scenario file (YAML/JSON) or example name")
    p.add_argument("--target", type=float, default=0.001, help="refusal target (default 0.001 = 0.1%%)")
    p.add_argument("--percentile", type=float, default=0.999, help="percentile of peak demand (default 0.999)")
    p.add_argument(
        "--tier-table",
        metavar="VERSION",
        default=None,
        help="tier table version to plan with (Moonshot: A or B; default: the scenario's tier_table, else the one "
        "in force on its as_of)",
    )
    p.add_argument(
        "--window",
        choices=["sliding", "fixed"],
        default=None,
        help="RPM/TPM window (default: the scenario's simulation.window, sliding unless set)",
    )
    p.add_argument(
        "--client",
        choices=["none", "retry", "pace", "openai-sdk"],
        default=None,
        help="client behaviour on 429 (default: the scenario's simulation.client); retry and openai-sdk add the "
        "share of requests that fail after the client's retries, from a short simulation at the busiest minute",
    )
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
        choices=["none", "retry", "pace", "openai-sdk"],
        default=None,
        help="client behaviour on 429 (default: the scenario's simulation.client, none unless set); openai-sdk: "
        "the OpenAI SDK's own retries",
    )
    s.add_argument(
        "--max-retries", type=int, default=None, help="default: the scenario's, else 5 (retry) or 2 (openai-sdk)"
    )
    s.add_argument(
        "--retry-after",
        choices=["none", "seconds"],
        default=None,
        help="what the server's 429 carries for the openai-sdk client: no hint (Kimi's documented reply) or a "
        "Retry-After in seconds",
    )
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
