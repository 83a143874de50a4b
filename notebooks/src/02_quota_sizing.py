# %% [markdown]
# # Quota sizing for Kimi K2.6
#
# For architects: which Moonshot tier holds the traffic, which limit binds, how many requests get a 429, which `max_completion_tokens` each route should send, and when growth outgrows the tier. Kimi counts **input + max_completion_tokens** against TPM/TPD and refuses (429) rather than queues. Everything is seeded; numbers are reproducible.

# %%
import pandas as pd

import kimiplan as kp

pd.set_option('display.width', 160)
pd.set_option('display.max_columns', 20)
catalog = kp.load_catalog()
sc = kp.load_scenario('support_chat', catalog)
print(sc.name, sc.tier, f'{sc.traffic.per_day:,.0f} requests/day', 'growth', sc.traffic.monthly_growth)

# %%
# NBVAL_IGNORE_OUTPUT
# Figures: interactive in JupyterLab, and a static PNG beside each (kaleido + Chromium) for nbconvert, GitHub, offline.

kp.viz.setup_notebook()

# %% [markdown]
# ## 1. The plan against the current tier
# Peak demand at the busiest minute of a week (hourly profile, weekday factor and the 10:00 burst), the 99.9th percentile and each limit's use; headroom is the one figure the verdict gives: how far traffic can grow before refusals pass the target.

# %%
p = kp.plan(sc, catalog)
print(p.describe())

# %%
p.summary()

# %%
kp.table(p.demand[p.demand.route == 'total'].drop(columns='headroom'))

# %% [markdown]
# ### The verdict under each tier table
# Moonshot published two tier tables in 2026: version A (official, in force until September) and version B (quoted by third parties since; no verbatim official copy). The headline uses the table in force on the scenario's `as_of`; `P.plan(sc, catalog, tier_table='A')` (or `kimiplan plan --tier-table A`) plans with the other one.

# %%
kp.table(p.tier_tables[['version', 'official', 'headline', 'smallest_tier', 'tier', 'refusal_total', 'binding_limit', 'busiest_minute_use', 'max_scale', 'exhausted_on']])

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.tier_tables_figure(p, sc.traffic.mean_rps)

# %% [markdown]
# ## 2. The tier ladder
# The smallest tier that keeps refusals under 0.1 % at the busiest minute, and the largest request rate each tier sustains at this mix.

# %%
ladder = p.ladder
print('smallest tier that holds:', p.smallest_tier)
kp.table(ladder[['tier', 'concurrency', 'rpm', 'tpm', 'refusal_total', 'binding_limit', 'holds', 'max_requests_per_day']])

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.tier_ladder_figure(ladder, sc.traffic.mean_rps)

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.headroom_figure(kp.tier_headroom(sc, catalog))

# %% [markdown]
# ## 3. max_completion_tokens per route
# A smaller budget frees TPM but truncates more answers (`finish_reason=length`). Recommended: the smallest multiple of 256 truncating at most 1 %. A route with `$web_search` rounds reserves its budget once per API call, so `web_lookup` (2.2 calls a request) frees 2.2 times the budget cut per request; its TPM at the busiest minute is the demand table's.

# %%
rec = kp.recommend_budgets(sc, catalog, target_truncation=0.01)
tpm = ['tpm_peak_current', 'tpm_freed_vs_current', 'tpm_freed_vs_default']
kp.table(rec[['route', 'current_budget', 'recommended_budget', 'truncation_current', 'truncation_recommended', *tpm]])

# %%
# NBVAL_IGNORE_OUTPUT
r0 = rec.iloc[0]
kp.viz.budget_tradeoff_figure(kp.budget_curve(sc, r0['route'], catalog), int(r0['current_budget']), int(r0['recommended_budget']))

# %% [markdown]
# ## 4. Simulating a day
# Per request, against all limits at once, on Tier2: a tier that does refuse at the busy hours (on Tier3, the one the plan picks, almost nothing is refused and the clients look alike). First the client sends once and takes the 429; then it retries with exponential backoff and full jitter; then it paces itself to the account's limits and waits instead; last, the OpenAI SDK's own default retries (2 retries after about 0.5 s and 1 s), what production code gets without any setting: `failed` is then the share of requests that raise `RateLimitError` in the application.

# %%
tight = sc.with_changes(tier='Tier2')
rows = []
for kind in ('none', 'retry', 'pace', 'openai-sdk'):
    s = kp.simulate(tight, catalog, kp.SimSettings(hours=24, client=kp.ClientPolicy(kind=kind))).summary
    rows.append({'client': kind, 'requests': s['requests'], 'attempts': s['attempts'],
                 **{f'429_{k}': round(v, 5) for k, v in s['rejected_fraction'].items() if k in ('concurrency', 'rpm', 'total')},
                 'failed': round(s['failed_fraction'], 5), 'wait_p99_s': round(s['wait_s']['p99'], 1)})
pd.DataFrame(rows)

# %%
# NBVAL_IGNORE_OUTPUT
day = kp.simulate(tight, catalog, kp.SimSettings(hours=24))
kp.viz.utilization_figure(day)

# %% [markdown]
# Reading: with no retry, the refused share is lost. Retrying recovers only part of it: the retries land in the same busy minutes, so the share of attempts that get a 429 rises. Pacing refuses nothing and pays in waiting time instead (`wait_p99_s`). The SDK's two retries come within about 1.5 s, while a full 60 s window is still full: they recover only a small part of the refusals.

# %% [markdown]
# ### Refusals per route
# The routes share one account but not one fate: a route whose requests reserve more tokens (or make several `$web_search` calls, each counted against RPM) is refused more often when the window is nearly full. The simulator counts every route's attempts and refusals by limit (`by_route`); the table is sorted worst first.

# %%
s = day.summary  # the day simulated above, client none
name, share = s.worst_route()
print(f'route refused most: {name} ({share * 100:.2f} % of its attempts)')
kp.table(s.route_table()[['route', 'requests', 'refused_share', 'refused_concurrency', 'refused_rpm', 'refused_tpm', 'failed_share']])

# %% [markdown]
# The plan gives the same view in closed form, at the busiest minute (where the day's refusals concentrate): each route's share of its requests refused (`refusal_by_route`), and the route refused most in its verdict.

# %%
pt = kp.plan(tight, catalog)
name, share = pt.worst_route()
print(f'route refused most at the busiest minute: {name} ({share * 100:.1f} % of its requests)')
kp.table(pd.DataFrame({'route': list(pt.refusal_by_route), 'refusal_busiest_minute': list(pt.refusal_by_route.values())}))

# %% [markdown]
# ## 5. Growth and the upgrade date
# With compound monthly growth, the month traffic outgrows each tier, and the tier to move to: the cheapest one whose binding limit is higher (a tier that raises only other limits changes nothing), with the cumulative recharge that unlocks it.

# %%
print(p.upgrade_path())
kp.table(pd.DataFrame([p.upgrade]))

# %%
g = []
for _, row in ladder.iterrows():
    ex = kp.growth_exhaustion(sc, row['max_scale'])
    g.append({'tier': row['tier'], 'max_scale': round(row['max_scale'], 3), 'months_left': ex['months'], 'exhausted_on': ex['date']})
pd.DataFrame(g)

# %% [markdown]
# Reading: when the current tier is already exhausted (months_left 0), move up the ladder or cut the peak: smaller budgets free TPM, and a pacing client turns refusals into waits.

# %% [markdown]
# ## 6. Why trust the simulator: a check against queueing theory
# A scenario can state a textbook system by itself: Poisson arrivals at 10 requests/s, a custom tier with only 50 concurrent requests, fixed tokens, a lognormal latency with a 5 s mean, no retries, a horizon and a seed (the `simulation:` section). Refusal then has a closed form, Erlang B, whatever the latency's shape. The same file runs with `kimiplan simulate FILE --json`.

# %%
theory = kp.parse_scenario({
    'name': 'M/G/50/50', 'model': 'kimi-k2.6', 'as_of': '2026-11-26', 'seed': 3,
    'tier': {'name': 'only-concurrency', 'concurrency': 50},
    'traffic': {'requests_per_second': 10},
    'routes': [{'name': 'r', 'share': 1.0, 'system': 1000, 'output': 200, 'max_completion_tokens': 1024,
                'latency': {'total_s': {'kind': 'lognormal', 'mean': 5.0, 'sigma': 1.0}}}],
    'simulation': {'hours': 24, 'client': {'kind': 'none'}},
})
runs = [kp.simulate(theory, catalog, kp.SimSettings.for_scenario(theory, seed=s)).summary for s in range(4)]
pd.DataFrame({'seed': range(4), 'requests': [r['requests'] for r in runs],
              'refused (simulated)': [round(r['rejected_fraction']['concurrency'], 4) for r in runs],
              'Erlang B(50, 50)': round(kp.erlang_b(50, 50.0), 4),
              "Little's law: in flight - rate x latency": [round(r['mean_in_flight'] - r['throughput_rps'] * r['mean_latency_s'], 3) for r in runs]})
