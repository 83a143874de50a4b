"""Builds notebooks/02_quota_sizing.ipynb (unexecuted); `make notebooks` then executes it in place with
`jupyter nbconvert --to notebook --execute --inplace notebooks/02_quota_sizing.ipynb`."""

from pathlib import Path

import nbformat as nbf

nb = nbf.v4.new_notebook()
md = lambda s: nbf.v4.new_markdown_cell(s)
code = lambda s: nbf.v4.new_code_cell(s)
nb.cells = [
    md(
        "# Quota sizing for Kimi K2.6\n\nFor architects: which Moonshot tier holds the traffic, which limit binds, "
        "how many requests get a 429, which `max_completion_tokens` each route should send, and when growth "
        "outgrows the tier. Kimi counts **input + max_completion_tokens** against TPM/TPD and refuses (429) "
        "rather than queues. Everything is seeded; numbers are reproducible."
    ),
    code(
        "import pandas as pd\nfrom kimiplan.catalog.cards import load_catalog\nfrom kimiplan.model.scenario import example_path\nfrom kimiplan.catalog.resolve import load_scenario\n"
        "from kimiplan.capacity import plan as P, budgets as B\nfrom kimiplan.viz import capacity as PC\n"
        "from kimiplan.capacity.sim.simulate import simulate, SimSettings, ClientPolicy\n"
        "pd.set_option('display.width', 160); pd.set_option('display.max_columns', 20)\n"
        "catalog = load_catalog()\nsc = load_scenario(example_path('support_chat'), catalog)\n"
        "print(sc.name, sc.tier, f'{sc.traffic.per_day:,.0f} requests/day', 'growth', sc.traffic.monthly_growth)"
    ),
    md(
        "## 1. The plan against the current tier\nPeak demand at the busiest minute of a week (hourly profile, "
        "weekday factor and the 10:00 burst), the 99.9th percentile, utilization and headroom per limit."
    ),
    code("p = P.plan(sc, catalog)\nprint(p.describe())"),
    code("p.demand[p.demand.route == 'total'].round(3)"),
    md(
        "### The verdict under each tier table\nMoonshot published two tier tables in 2026: version A (official, "
        "in force until September) and version B (quoted by third parties since; no verbatim official copy). "
        "The headline uses the table in force on the scenario's `as_of`; `plan(sc, tier_table='A')` (or "
        "`kimiplan plan --tier-table A`) plans with the other one."
    ),
    code(
        "p.tier_tables[['version', 'official', 'headline', 'smallest_tier', 'tier', 'refusal_total', "
        "'binding_limit', 'headroom', 'exhausted_on']].round(4)"
    ),
    md(
        "## 2. The tier ladder\nThe smallest tier that keeps refusals under 0.1 % at the busiest minute, and the "
        "largest request rate each tier sustains at this mix."
    ),
    code(
        "ladder = p['ladder']\nprint('smallest tier that holds:', p['smallest_tier'])\n"
        "ladder[['tier', 'concurrency', 'rpm', 'tpm', 'refusal_total', 'binding_limit', 'holds', 'max_requests_per_day']].round(4)"
    ),
    code("# NBVAL_IGNORE_OUTPUT\nPC.tier_ladder_figure(ladder, sc.traffic.mean_rps)"),
    code("# NBVAL_IGNORE_OUTPUT\nPC.headroom_figure(P.tier_headroom(sc, catalog))"),
    md(
        "## 3. max_completion_tokens per route\nA smaller budget frees TPM but truncates more answers "
        "(`finish_reason=length`). Recommended: the smallest multiple of 256 truncating at most 1 %."
    ),
    code(
        "rec = B.recommend_budgets(sc, catalog, target_truncation=0.01)\n"
        "rec[['route', 'current_budget', 'recommended_budget', 'truncation_current', 'truncation_recommended', 'tpm_freed_vs_default']].round(4)"
    ),
    code(
        "# NBVAL_IGNORE_OUTPUT\nr0 = rec.iloc[0]\nPC.budget_tradeoff_figure(B.budget_curve(sc, r0['route'], catalog), int(r0['current_budget']), int(r0['recommended_budget']))"
    ),
    md(
        "## 4. Simulating a day\nPer request, against all limits at once. First the client sends once; then it "
        "retries with exponential backoff and jitter; then it paces itself to the account's limits."
    ),
    code(
        "rows = []\nfor kind in ('none', 'retry', 'pace'):\n"
        "    s = simulate(sc, catalog, SimSettings(hours=24, client=ClientPolicy(kind=kind))).summary\n"
        "    rows.append({'client': kind, 'requests': s['requests'], 'attempts': s['attempts'],\n"
        "                 **{f'429_{k}': round(v, 5) for k, v in s['rejected_fraction'].items() if k in ('concurrency', 'rpm', 'total')},\n"
        "                 'failed': round(s['failed_fraction'], 5), 'wait_p99_s': round(s['wait_s']['p99'], 1)})\n"
        "pd.DataFrame(rows)"
    ),
    code("# NBVAL_IGNORE_OUTPUT\nday = simulate(sc, catalog, SimSettings(hours=24))\nPC.utilization_figure(day)"),
    md(
        "## 5. Growth and the upgrade date\nWith compound monthly growth, the month traffic outgrows each tier, "
        "and the tier to move to: the cheapest one whose binding limit is higher (a tier that raises only other "
        "limits changes nothing)."
    ),
    code("{k: v for k, v in p.upgrade.items()}"),
    code(
        "g = []\nfor _, row in ladder.iterrows():\n    ex = P.growth_exhaustion(sc, row['max_scale'])\n"
        "    g.append({'tier': row['tier'], 'max_scale': round(row['max_scale'], 3), 'months_left': ex['months'], 'exhausted_on': ex['date']})\n"
        "pd.DataFrame(g)"
    ),
    md(
        "Reading: when the current tier is already exhausted (months_left 0), move up the ladder or cut the peak: "
        "smaller budgets free TPM, and a pacing client turns refusals into waits."
    ),
    md(
        "## 6. Why trust the simulator: a check against queueing theory\nA scenario can state a textbook system "
        "by itself: Poisson arrivals at 10 requests/s, a custom tier with only 50 concurrent requests, fixed "
        "tokens, a lognormal latency with a 5 s mean, no retries, a horizon and a seed (the `simulation:` "
        "section). Refusal then has a closed form, Erlang B, whatever the latency's shape. The same file runs "
        "with `kimiplan simulate FILE --json`."
    ),
    code(
        "from kimiplan.model.scenario import parse_scenario\nfrom kimiplan.capacity.plan import erlang_b\n"
        "theory = parse_scenario({\n"
        "    'name': 'M/G/50/50', 'model': 'kimi-k2.6', 'as_of': '2026-11-26', 'seed': 3,\n"
        "    'tier': {'name': 'only-concurrency', 'concurrency': 50},\n"
        "    'traffic': {'requests_per_second': 10},\n"
        "    'routes': [{'name': 'r', 'share': 1.0, 'system': 1000, 'output': 200, 'max_completion_tokens': 1024,\n"
        "                'latency': {'total_s': {'kind': 'lognormal', 'mean': 5.0, 'sigma': 1.0}}}],\n"
        "    'simulation': {'hours': 24, 'client': {'kind': 'none'}},\n"
        "})\n"
        "runs = [simulate(theory, catalog, SimSettings.for_scenario(theory, seed=s)).summary for s in range(4)]\n"
        "pd.DataFrame({'seed': range(4), 'requests': [r['requests'] for r in runs],\n"
        "              'refused (simulated)': [round(r['rejected_fraction']['concurrency'], 4) for r in runs],\n"
        "              'Erlang B(50, 50)': round(erlang_b(50, 50.0), 4),\n"
        "              \"Little's law: in flight - rate x latency\": [round(r['mean_in_flight'] - r['throughput_rps'] * r['mean_latency_s'], 3) for r in runs]})"
    ),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).resolve().parents[1] / "02_quota_sizing.ipynb")
