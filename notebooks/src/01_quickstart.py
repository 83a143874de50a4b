# %% [markdown]
# # kimiplan quick start: tokens and cost per route
#
# Load a bundled example scenario (a support chat with RAG on Moonshot's international platform), look at
# what each route sends and receives, and what it costs. Everything here runs offline and is seeded, so CI
# re-runs this notebook with nbval and compares the numbers.

# %%
import pandas as pd

import kimiplan as kp

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
pd.set_option("display.float_format", "{:,.4f}".format)

catalog = kp.load_catalog()
scenario = kp.load_scenario("support_chat")
print(scenario.name, "|", scenario.model, "on", scenario.provider, scenario.resolved_region, "| tier", scenario.tier)
print(f"{scenario.traffic.per_day:,.0f} requests/day over {len(scenario.routes)} routes")

# %%
# NBVAL_IGNORE_OUTPUT
# Figures: interactive in JupyterLab, and a static PNG beside each (kaleido + Chromium) for nbconvert, GitHub, offline.

kp.viz.setup_notebook()

# %% [markdown]
# ## The price card and the tier, with their sources
# Prices are per 1M tokens. Every row carries where it came from and when it was verified.

# %%
card = kp.price_card(scenario, catalog)
tier = kp.rate_tier(scenario, catalog)
kp.table(
    pd.DataFrame(
        [
            {"what": "cache-hit input", "price": float(card.cache_hit_price)},
            {"what": "cache-miss input", "price": float(card.input_cache_miss)},
            {"what": "output (visible + reasoning)", "price": float(card.output)},
            {"what": "$web_search per call", "price": float(card.web_search_per_call)},
        ]
    ),
    currency=card.currency,
    note="Per 1M tokens ($web_search: per call).",
)

# %%
print("price source:", card.source[:90], "... verified", card.verified_on)
print(f"tier {tier.name} (version {tier.version}):", {k: v for k, v in tier.limits().items() if v})

# %% [markdown]
# ## Tokens per request, by component
# Input components are system prompt, conversation history, RAG context, documents and the user's message,
# plus the overhead the chat template adds (4 tokens per message and 3 for the reply with K2.6);
# the hatched part of each bar is served from Kimi's prefix cache.

# %%
exp = kp.expected_tokens(scenario, card)
kp.table(
    exp[
        [
            "route",
            "share",
            "system",
            "history",
            "rag",
            "user",
            "overhead",
            "input_tokens",
            "cached_tokens",
            "output_tokens",
            "truncation_rate",
        ]
    ]
)

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.token_breakdown_figure(exp)

# %% [markdown]
# ## Expected cost per request, per day and per month

# %%
cost = kp.expected_cost(scenario, catalog, card, expected=exp)
kp.table(kp.cost_summary(cost))

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.cost_breakdown_figure(cost, "price_class")

# %% [markdown]
# ## One response, priced exactly
# Kimi's `usage.prompt_tokens` includes `usage.cached_tokens` (top level of `usage`); reasoning is inside
# `completion_tokens`. The cost engine sums in Decimal, so millions of records add up to the cent.

# %%
usage = kp.Usage.from_response({"usage": {"prompt_tokens": 5200, "completion_tokens": 410, "cached_tokens": 3800}})
c = kp.cost_of_usage(usage, card)
print(c.to_dict()["by_price_class"], "total", c.total, card.currency)

# %%
messages = [
    {"role": "system", "content": "You are a helpful support assistant for ACME."},
    {"role": "user", "content": "How do I reset my password?"},
]
print("text tokens:", kp.count_text(messages[1]["content"]), "| chat request tokens:", kp.count_messages(messages))

# %% [markdown]
# ## Will any request overflow the 262,144-token context window?

# %%
kp.table(kp.context_check(scenario, card))

# %% [markdown]
# ## What `kimiplan validate` warns about, and the scenario at a glance
# The warnings that change the verdict (requests beyond the context window, budgets that truncate most answers,
# `$web_search` results of unknown size) are the ones the report puts on its first screen.

# %%
for w in kp.verdict_warnings(scenario):
    print("warning:", w)
scenario.summary()
