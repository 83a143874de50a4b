# %% [markdown]
# # Monthly spend forecast for finance
#
# What will Kimi K2.6 cost each month for the next year, how sure are we, when does the prepaid balance run
# out, and what would change with another model, provider or setting? Everything runs offline and seeded, so
# CI re-runs this notebook with nbval and compares the numbers. Prices come from the dated catalog: check the
# assumptions sheet (source and `verified_on` of every card) before quoting a figure.

# %%
import datetime as dt
import tempfile
from pathlib import Path

import openpyxl
import pandas as pd

import kimiplan as kp

pd.set_option("display.width", 170)
pd.set_option("display.max_columns", 20)
pd.set_option("display.float_format", "{:,.2f}".format)

catalog = kp.load_catalog()
scenario = kp.load_scenario("support_chat", catalog)
print(scenario.name, "|", scenario.model, "on", scenario.provider, scenario.resolved_region, "| as of", scenario.as_of)
print(f"{scenario.traffic.per_day:,.0f} requests/day, growth {scenario.traffic.monthly_growth:.0%} a month")

# %%
# NBVAL_IGNORE_OUTPUT
# Figures: interactive in JupyterLab, and a static PNG beside each (kaleido + Chromium) for nbconvert, GitHub, offline.

kp.viz.setup_notebook()

# %% [markdown]
# ## Twelve months with uncertainty bands
# 10,000 Monte Carlo paths: day-to-day traffic noise (CV 15 %), uncertainty about the growth rate (±2 points a
# month), the request-to-request spread of token sizes, and the uncertainty of token means calibrated from 200
# live calls. `expected` is the closed-form mean; P10/P50/P90 are the bands; `p_over_budget` is the share of
# paths where the month costs more than the budget.

# %%
fc = kp.forecast(scenario, 12, catalog=catalog, paths=10_000, budget=5_000, calibration_samples=200)
kp.table(fc.monthly[["month", "days", "requests", "expected", "P10", "P50", "P90", "p_over_budget", "status", "currency"]])

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.fan_chart(fc)

# %% [markdown]
# ## Where the money goes: by route and by price class

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.route_area_chart(fc)

# %%
kp.table(kp.monthly_by(fc, "price_class").head(3), currency=fc.currency)

# %%
kp.table(kp.monthly_by(fc, "component").head(3), currency=fc.currency)

# %% [markdown]
# ## Prepaid balance
# Moonshot is prepaid: at zero balance every call fails with HTTP 429 `exceeded_current_quota_error`. With
# 10,000 USD on 2026-11-26 and a 5,000 USD top-up on 2027-01-15, when does it run out? `P10` is the early
# (pessimistic) date: one path in ten has run out by then.

# %%
topups = {dt.date(2027, 1, 15): 5_000.0}
kp.table(kp.exhaustion(fc, 10_000.0, topups=topups))

# %%
rw = kp.runway(fc, 10_000.0, topups=topups)
kp.table(rw[rw["date"].isin([dt.date(2027, 1, 1), dt.date(2027, 1, 15), dt.date(2027, 2, 1), dt.date(2027, 3, 1)])], currency=fc.currency)

# %%
need = kp.topup_needed(fc, 10_000.0, until=dt.date(2027, 3, 31), confidence=0.9, topups=topups)
print(f"Top up {need:,.0f} USD now to keep serving until 2027-03-31 with 90 % probability")

# %% [markdown]
# Rate tiers follow cumulative recharge (vouchers don't count). The scenario needs Tier3; with 20 USD
# recharged so far, this is what is missing and when the top-ups above reach each tier.

# %%
kp.table(
    kp.tier_recharge(scenario, catalog, recharged_so_far=20.0, topups={scenario.as_of: need, **topups})[
        [
            "tier",
            "version",
            "cumulative_recharge",
            "currency",
            "still_to_recharge",
            "reached_on",
            "concurrency",
            "rpm",
            "target",
        ]
    ]
)

# %% [markdown]
# ## Variants side by side
# The same routes on kimi-k2.5, on Cloudflare Workers AI (with its 10,000 free neurons a day), OpenRouter and
# SiliconFlow (model IDs from an explicit table, checked against the catalog), through the Batch API, and with
# a lower cache-hit rate. Totals are over the 12 months, in USD.

# %%
variants = kp.standard_variants(scenario, catalog)
fcs = kp.run_variants(variants, 12, catalog=catalog, paths=2000)
kp.table(
    kp.compare(fcs)[
        ["variant", "model", "expected_total", "P10_total", "P90_total", "vs_first_pct", "free_allowance", "status"]
    ],
    currency=fc.currency,
)

# %%
kp.compare(fcs).set_index("variant")["notes"].to_dict()

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.variants_chart(kp.compare_monthly(fcs))

# %% [markdown]
# ## Why a variant costs less: the drivers
# The change from one variant to another splits into volume, tokens per request (cache share, input size,
# reasoning, output, tool calls), price (model, provider, batch, tax) and free allowances; the parts add up
# exactly. Here: the coding assistant with thinking turned off.

# %%
coding = kp.load_scenario("coding_assistant", catalog)
cv = kp.standard_variants(coding, catalog)
wf = kp.waterfall(cv["base"], cv["thinking off"], months=12, catalog=catalog)
kp.table(wf)

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.waterfall_chart(wf, "thinking on", "thinking off")

# %% [markdown]
# ## A guardrail on a change: `kp.check` as a gate
# A pull request raises `answer`'s `max_completion_tokens` from 2,048 to 16,384 and retrieves two more chunks.
# `kp.diff` plans and forecasts both sides with common random numbers: the figures are the next full month's
# (the month the report's cost card quotes) and headroom is the report's growth multiple. `kp.check` applies the
# team's guardrails and raises on a failed fail-level policy, so a cell like the second one below is a CI gate:
# under nbval the notebook fails with it.

# %%
data = scenario.model_dump(mode="python", by_alias=True)
for r in data["routes"]:
    if r["name"] == "answer":
        r["max_completion_tokens"] = 16_384
        r["rag"]["top_k"] = 7
change = kp.parse_scenario(data)
d = kp.diff(scenario, change, catalog=catalog, paths=2000)
d

# %%
guardrails = {
    "policies": [
        {"name": "monthly-cap", "max_monthly_cost": 6000, "horizon_months": 3},
        {"name": "no-big-jumps", "max_increase_percent": 25},
        {"name": "room-to-grow", "min_growth_headroom": 1.1, "level": "warn"},
    ]
}
kp.check(d, guardrails, catalog=catalog)

# %% [markdown]
# The same gate with a cap the change breaks, `raise_on_fail=False` to show the verdict CI would print instead of
# stopping the notebook here.

# %%
kp.check(d, {"policies": [{"name": "tight-cap", "max_monthly_cost": 4800}]}, catalog=catalog, raise_on_fail=False)

# %% [markdown]
# ## A price change and a retirement inside the horizon
# A hypothetical example (not a real announcement): the K2.6 card ends on 2027-02-15 and the model is retired.
# The forecast splits February on that date, prices nothing after it, and flags the months.

# %%
old = catalog.price("kimi-k2.6", "moonshot", "intl", scenario.as_of)
hypothetical = catalog.with_rows(
    cards=[
        old.model_copy(
            update={
                "effective_to": dt.date(2027, 2, 15),
                "retired_on": dt.date(2027, 2, 15),
                "source": "hypothetical example",
            }
        )
    ]
)
fc_retired = kp.forecast(scenario, 5, catalog=hypothetical, paths=1000)
print("\n".join(fc_retired.warnings))
kp.table(fc_retired.monthly[["month", "expected", "P50", "retired_days", "status", "currency"]])

# %% [markdown]
# ## Backtest on past months
# `data/usage/past_months_synthetic.csv` is a **synthetic** usage log (six months, generated from this scenario
# with month-to-month shocks by `python -m kimiplan.finance.backtest`). Each month is forecast from the months before it
# only and compared with the exact cost of what the log shows; the naive forecast (last month's cost per day)
# gives a scale. Each forecast carries an 80 % prediction band (the volume trend's prediction error and the
# month-to-month spread of cost per request): over many months, about 80 % of actuals should land inside.
# Same from a shell: `kimiplan backtest support_chat data/usage/past_months_synthetic.csv`.

# %%
result = kp.backtest(kp.data_path("usage", "past_months_synthetic.csv"), scenario, catalog=catalog)
print(f"inside the {result.level:.0%} band: {result.coverage:.0%} of {result.months_judged} months")
result.summary()

# %% [markdown]
# ## Spreadsheet export
# One sheet per view plus the assumptions (scenario settings, forecast settings, every price card with its
# source and verified_on date). Written atomically: a failed export never leaves a partial file.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "forecast.xlsx"
    kp.export_forecast(fc, xlsx=path, extra={"balance": kp.exhaustion(fc, 10_000.0, topups=topups)})
    print(openpyxl.load_workbook(path, read_only=True).sheetnames)
