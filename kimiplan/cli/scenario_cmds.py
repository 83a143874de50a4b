"""`kimiplan schema`, `kimiplan validate`, `kimiplan examples`, `kimiplan breakdown`."""

from __future__ import annotations

from ._util import print_json, print_table


def cmd_schema(args) -> int:
    from kimiplan.model.scenario import scenario_json_schema

    print_json(scenario_json_schema())
    return 0


def cmd_examples(args) -> int:
    from kimiplan.model.scenario import example_path, list_examples

    for name in list_examples():
        print(f"{name}\t{example_path(name)}")
    return 0


def cmd_validate(args) -> int:
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.workload.checks import verdict_warnings

    s = load_scenario(args.scenario)
    print(f"{args.scenario}: valid ({len(s.routes)} routes, model {s.model} on {s.provider}/{s.resolved_region})")
    # The warnings that change the verdict: the report's first screen shows the same list.
    for w in verdict_warnings(s):
        print(f"warning: {w}")
    return 0


def cmd_breakdown(args) -> int:
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.finance.cost import cost_summary, expected_cost
    from kimiplan.model.scenario import COMPONENTS
    from kimiplan.workload.draws import expected_tokens

    s = load_scenario(args.scenario)
    exp = expected_tokens(s)
    cost = expected_cost(s, expected=exp)
    agents = []
    if any(r.agent is not None for r in s.routes):
        from kimiplan.finance.agents import agent_routes_stats

        agents = agent_routes_stats(s)
    if args.json:
        out = {"tokens": exp, "cost": cost, "summary": cost_summary(cost)}
        if agents:  # per-run distributions of agent routes (their rows above are per run)
            out["agent_runs"] = [a.to_dict() for a in agents]
        print_json(out)
        return 0
    cols = [
        "route",
        "share",
        *COMPONENTS,
        "input_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "output_tokens",
        "truncation_rate",
    ]
    print("Mean tokens per request")
    print_table(exp[cols])
    print("\nExpected cost (an average month: 30.44 days at today's traffic)")
    print_table(cost_summary(cost))
    for a in agents:
        print(f"\nAgent route {a.route!r}: one request is one run ({a.runs:,} sampled runs)")
        print_table(a.table)
        print_table(a.stops)
    return 0


def register(sub) -> None:
    p = sub.add_parser("schema", help="JSON Schema of scenario files")
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("examples", help="list the bundled example scenarios")
    p.set_defaults(func=cmd_examples)
    p = sub.add_parser("validate", help="validate a scenario file against the schema and the catalog")
    p.add_argument("scenario", help="scenario file (YAML/JSON) or the name of a bundled example")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("breakdown", help="tokens per request by component and expected cost per route")
    p.add_argument("scenario")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_breakdown)
