# %% [markdown]
# # Agent runs and evaluation campaigns
#
# Where the money goes now: an agent run is tens to hundreds of model calls, and every call re-sends the whole
# context, so almost all of its tokens are input read back from the prompt cache. This notebook follows one
# agent route step by step (context growth, cost per step, cached against uncached input), compares K2.6 with
# the K3 family (whose prompt cache has a **paid write**), and prices an evaluation campaign per model with its
# duration at a tier.
#
# Prices come from the dated catalog (`kimiplan prices`): the K3-family rows are third-party (`official = false`);
# the workload figures of the example and of the campaign presets are assumptions written down next to them.
# Everything is seeded.

# %%
import pandas as pd

import kimiplan as kp

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
catalog = kp.load_catalog()
sc = kp.load_scenario("coding_agent", catalog)
route = sc.route("fix_issue")
print(sc.name, sc.model, sc.tier, "| agent:", route.agent.steps.describe(), "steps, cap", route.agent.max_steps)

# %%
# NBVAL_IGNORE_OUTPUT
# Figures: interactive in JupyterLab, and a static PNG beside each (kaleido + Chromium) for nbconvert, GitHub, offline.

kp.viz.setup_notebook()

# %% [markdown]
# ## 1. One run, by hand
# Three steps with fixed sizes on K2.6: the head (system 1,000 + task 200) is 1,200 tokens; each step appends its
# output (100) and the tool result (500). Step k reads step k-1's prompt from the cache (K2.6: the previous prompt
# exceeded 256 tokens). On K3.1 Pro each step also **writes** what it did not read, at the input price for a
# 5-minute retention (2x for one hour).

# %%
k26 = catalog.price("kimi-k2.6", on=sc.as_of)
k31 = catalog.price("kimi-k3.1-pro", on=sc.as_of)
prompts = [1200, 1800, 2400]
reads = [1000, 1200, 1800]  # step 1 reads the system prompt other runs wrote
run = kp.Usage(sum(prompts), 300, cached_tokens=sum(reads))
print("K2.6:", kp.cost_of_usage(run, k26).total, "USD")
writes = [p - r for p, r in zip(prompts, reads)]
run31 = kp.Usage(sum(prompts), 300 + 150, cached_tokens=sum(reads), cache_write_tokens=sum(writes))
print(
    "K3.1 Pro, 5 min:",
    kp.cost_of_usage(run31, k31).total,
    "USD;  1 h:",
    kp.cost_of_usage(run31, k31, cache_retention="1h").total,
    "USD",
)

# %% [markdown]
# ## 2. The example's agent route: distributions per run and per step

# %%
st = kp.agent_stats(sc, "fix_issue", catalog, runs=2000)
st.summary()

# %%
kp.table(st.stops, currency=st.currency)

# %% [markdown]
# ### Context growth over steps
# The prompt grows with every step until the harness truncates the oldest steps (here at 256k minus the 32k step
# budget); each truncation breaks the cached prefix once.

# %%
steps = kp.steps_frame(st.draw)
by_step = steps.groupby("step").agg(runs=("run", "size"), prompt_p50=("prompt", "median"), cost_p50=("cost", "median"))
kp.table(by_step.loc[[1, 2, 5, 10, 20, 40, 80]], currency=st.currency, formats={"prompt_p50": "count"})

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.context_growth_figure(steps)

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.cost_per_step_figure(steps, st.currency)

# %% [markdown]
# ### Cached against uncached input

# %%
share = steps[["prompt", "cached", "written"]].sum()
print(
    f"read from cache {share['cached'] / share['prompt']:.1%}, written {share['written'] / share['prompt']:.1%}, "
    f"uncached {(share['prompt'] - share['cached'] - share['written']) / share['prompt']:.1%} of all input tokens"
)

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.cached_input_figure(steps)

# %% [markdown]
# ## 3. K2.6 against the K3 family, same runs
# The same route on each model (reasoning is always on in the K3 family). Cache writes appear as their own price
# class. The example stops a run at $5 (`run_budget_cost`), so on the dearer models more runs stop unresolved and
# the upper percentiles sit at the budget.

# %%
rows = []
for model in ("kimi-k2.6", "kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed"):
    v = sc if model == sc.model else kp.model_variant(sc, model, catalog)
    s = kp.agent_stats(v, "fix_issue", catalog, runs=1000)
    t = s.table.set_index("metric")
    rows.append(
        {
            "model": model,
            "cost per run P50": t.loc["cost per run", "p50"],
            "P90": t.loc["cost per run", "p90"],
            "P99": t.loc["cost per run", "p99"],
            "cache writes per run (mean)": t.loc["cost per run: input_cache_write", "mean"],
            "unresolved": 1 - s.stops.set_index("stop_reason").loc["done", "share"],
            "price source": "official" if kp.price_card(v, catalog).official else "third party",
        }
    )
kp.table(pd.DataFrame(rows), currency="USD", formats={"unresolved": "percent", "cache writes per run (mean)": "count"})

# %% [markdown]
# ## 4. Agent runs against the limits
# Every call reserves its prompt plus `max_completion_tokens` against TPM; runs are sessions of calls with think
# time between them.

# %%
kp.table(kp.agent_capacity(sc, catalog))

# %% [markdown]
# ## 5. An evaluation campaign: 500 SWE-Bench-style tasks at Tier3
# Budgets from Kimi's benchmark table (32k per step, 256k context, up to 300 steps, 5 runs per task); the rest are
# the preset's assumptions, printed below. The band: P05-P95 of the sum of runs; the rows "half/twice the steps"
# show how much the assumptions matter.

# %%
est = kp.estimate_campaign("swe-bench", 500, tier="Tier3", catalog=catalog, as_of=sc.as_of, samples=1000)
cols = [
    "variant",
    "provider",
    "model",
    "currency",
    "cost_p05",
    "cost_expected",
    "cost_p95",
    "cache_write_share",
    "duration_h",
    "binding",
]
kp.table(est.costs[cols].rename(columns={"duration_h": "duration (hours)"}))

# %%
for k, v in est.assumptions.items():
    print(f"- {k}: {v}")

# %% [markdown]
# ### Math (single turn, 96k, 32 runs per problem) and the Batch API

# %%
math = kp.estimate_campaign("math", 30, tier="Tier3", catalog=catalog, as_of=sc.as_of, samples=1000)
kp.table(math.costs[cols].rename(columns={"duration_h": "duration (hours)"}))
