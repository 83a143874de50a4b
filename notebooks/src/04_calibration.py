# %% [markdown]
# # 04 · Calibration: from live calls to fitted route distributions
#
# The planning notebooks start from *assumed* token sizes. This one replaces assumptions with measurements:
#
# 1. send a small, **bounded** sample of calls per route (spend cap, pacing under the tier, resumable store);
# 2. fit per route: output and reasoning lengths (lognormal with truncated calls treated as censored, and empirical),
#    truncation rate, cache hits, the hidden chat-template overhead, time to first token and decode speed — each with a
#    95 % confidence interval;
# 3. check the fit (KS test, QQ plot, predicted vs observed), ask how many samples a ±5 % monthly-cost estimate needs;
# 4. write a versioned calibration file and apply it to a scenario with the command line's path (`calibrate fit`,
#    `calibrate apply`, `report`), then read what the measurement changed against what the scenario assumed.
#
# **Live or emulated.** With `MOONSHOT_API_KEY` set, the calls go to Kimi (`https://api.moonshot.ai/v1`) and the records are
# labelled provenance `live`. Without it (as in CI) they go to kimiplan's local emulator, which has a *known* ground truth,
# so you can see the fitters recover it. Everything the emulator produces is labelled provenance `emulator`.

# %%
import contextlib
import os
import tempfile
from decimal import Decimal

import pandas as pd

from kimiplan.calibration.fitters import (
    LogNormalFitter,
    fit_calibration,
    plot_predicted_vs_observed,
    predicted_vs_observed,
    samples_frame,
    samples_needed,
)
from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, run_sampler
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
from kimiplan.emulator import EmulatorConfig, LogNormalTruth, RouteTruth, emulator

pd.set_option("display.width", 140)
ROOT_DIR = os.getcwd()
LIVE = bool(os.environ.get("MOONSHOT_API_KEY"))
catalog = load_catalog()
MODEL = "kimi-k2.6"  # an exact ID from the catalog, never guessed
assert MODEL in catalog.models("moonshot", "intl")
card = catalog.price(MODEL, region="intl")
print(
    "mode:",
    "live" if LIVE else "emulator",
    "| model:",
    MODEL,
    "| prices per 1M:",
    card.input_cache_hit,
    card.input_cache_miss,
    card.output,
    card.currency,
)

# %%
# NBVAL_IGNORE_OUTPUT
# Figures: interactive in JupyterLab, and a static PNG beside each (kaleido + Chromium) for nbconvert, GitHub, offline.
from kimiplan.viz.theme import setup_notebook

setup_notebook()

# %% [markdown]
# ## The emulator's ground truth (used only when no key is set)
#
# Output lengths are lognormal by median and p95 per route; the agent route also reasons (thinking on). The emulator adds
# **23 hidden tokens** to every prompt — the kind of server-side overhead calibration must discover — and applies Kimi's
# prefix-cache rule (a prompt longer than 256 tokens can be hit by later prompts sharing its prefix), counting cached
# tokens in whole 256-token blocks as measured on Kimi: a route whose shared prefix is shorter than a block reads none.

# %%
TRUTH = {
    "answer": RouteTruth(output=LogNormalTruth(median=220, p95=650)),
    "summarize_ticket": RouteTruth(output=LogNormalTruth(median=160, p95=400)),
    "agent_step": RouteTruth(
        output=LogNormalTruth(median=300, p95=1500), reasoning=LogNormalTruth(median=800, p95=3000)
    ),
}
stack = contextlib.ExitStack()
if LIVE:
    config = KimiConfig.from_env(MODEL)  # the key stays inside a SecretStr: repr shows **********
    time_scale = 1.0
else:
    em = stack.enter_context(
        emulator(
            EmulatorConfig(
                seed=42,
                time_scale=0.0,
                stream_chunk_tokens=256,
                hidden_overhead=23,
                routes=TRUTH,
                default_route="answer",
            )
        )
    )
    config = KimiConfig(
        model=MODEL, base_url=em.base_url, api_key="kimiplan-emulator-test-key", retry=RetryPolicy(time_scale=0.001)
    )
client = stack.enter_context(KimiClient(config))
print(repr(client).split(", base_url")[0], "| key shown as:", config.api_key)

# %% [markdown]
# ## A bounded, resumable sample
#
# Each planned call has a deterministic id; the JSONL store is fsync'ed per record, so re-running this cell after a crash
# only sends what is missing. The spend cap is checked *before* each call against its worst case (input + its
# `max_completion_tokens`, priced). Concurrency is 1 here so the cache sequence — and this notebook's output — is
# reproducible; real runs use `SamplerConfig.with_tier(catalog.tier("Tier1"))` to run near the tier's limits.

# %%
sampler_config = SamplerConfig(
    run_id="nb04-demo",
    max_concurrency=1,
    spend_cap=Decimal("1.00"),
    routes=[
        RouteSampling(name="answer", n=80, max_completion_tokens=1024, thinking=False),
        RouteSampling(name="summarize_ticket", n=80, max_completion_tokens=1024, thinking=False),
        RouteSampling(name="agent_step", n=80, max_completion_tokens=4096, thinking=True),
    ],
)
workdir = stack.enter_context(tempfile.TemporaryDirectory())
store = os.path.join(workdir, "samples.jsonl")

# %%
# NBVAL_IGNORE_OUTPUT
summary = run_sampler(client, sampler_config, store, card=card, progress=False)

# %%
print(summary)
df = samples_frame(store)
df[
    [
        "route",
        "prompt_tokens",
        "local_prompt_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "output_tokens",
        "finish_reason",
        "provenance",
    ]
].head()

# %% [markdown]
# ## Fit
#
# `fit_calibration` fits every route. Truncated calls (`finish_reason=length`) are right-censored in the fits —
# ignoring that would shrink the tail exactly where the budget bites. Each component's law is chosen by goodness of
# fit (a lognormal where it fits, else a mixture of two lognormals, else the empirical law), and each route states how
# precisely its mean cost per request is known and how many more calls would pin it to ±5 % at 95 %.

# %%
cal = fit_calibration(df, notes="notebook 04 demo")
print("provenance:", cal.provenance, "| samples:", cal.n_samples, "| schema:", cal.schema_version)
cal.summary().round(3)

# %%
pd.DataFrame(
    {
        route: {
            "output law": rc.output.law,
            "why": rc.output.law_reason,
            "capped mean output (tokens)": round(rc.output.capped_mean.value, 1),
            "95% interval": tuple(round(v, 1) for v in rc.output.capped_mean.ci),
            "mean cost per request (USD)": round(rc.precision.cost_per_request.value, 6),
            "± at 95%": f"{rc.precision.cost_rel_error:.1%}",
            "more calls for ±5%": rc.precision.more_calls_for_target,
        }
        for route, rc in cal.routes.items()
    }
).T

# %%
rows = []
for route, rc in cal.routes.items():
    for comp in ("output", "reasoning"):
        fit = getattr(rc, comp)
        if fit is None or fit.lognormal is None:
            continue
        ln = fit.lognormal
        truth = getattr(TRUTH[route], comp) if not LIVE else None
        rows.append(
            {
                "route": route,
                "component": comp,
                "n": ln.n,
                "censored": ln.n_censored,
                "median": round(ln.median, 1),
                "median 95% CI": tuple(round(v, 1) for v in ln.median_ci),
                "p95": round(ln.p95, 1),
                "p95 95% CI": tuple(round(v, 1) for v in ln.p95_ci),
                "true median": truth.median if truth else None,
                "true p95": truth.p95 if truth else None,
                "KS p-value": round(ln.ks_pvalue, 3),
            }
        )
pd.DataFrame(rows)

# %%
pd.DataFrame(
    {
        route: {
            "template overhead (tokens)": rc.template_overhead.value,
            "overhead 95% CI": rc.template_overhead.ci,
            "truncation rate": round(rc.truncation_rate.value, 3),
            "truncation 95% CI": tuple(round(v, 3) for v in rc.truncation_rate.ci),
            "cache-hit rate": round(rc.cache_hit_rate.value, 3),
            "cached share of input": round(rc.cached_fraction.value, 3),
        }
        for route, rc in cal.routes.items()
    }
).T

# %% [markdown]
# The overhead is `prompt_tokens` (what the API bills) minus kimiplan's exact local count of the same messages; the
# emulator's hidden 23 tokens come back exactly. Feed it to `kimiplan.tokens.tokenizer.ChatTemplate(request_overhead=...)`.
#
# ## Goodness of fit

# %%
# NBVAL_IGNORE_OUTPUT
sub = df[df.route == "agent_step"]
LogNormalFitter().fit(sub.output_tokens, sub.finish_reason == "length").qq_plot("agent_step output tokens: QQ plot")

# %%
table = predicted_vs_observed(cal, df, seed=0)
table.round(3)

# %%
# NBVAL_IGNORE_OUTPUT
plot_predicted_vs_observed(table)

# %% [markdown]
# ## How many samples for ±5 % on monthly cost?
#
# Monthly cost is requests × mean cost per call, so its relative error is that of the mean: z·CV/√n per route, and for the
# traffic mix (shares from the support-chat scenario) combined over routes.

# %%
samples_needed(df, card, rel_error=0.05, shares={"answer": 0.5, "summarize_ticket": 0.3, "agent_step": 0.2}).round(4)

# %% [markdown]
# ## The same path from the command line: fit → apply → report
#
# The README's path is four commands: `calibrate sample`, `calibrate fit`, `calibrate apply`, `report`. The sample above
# is what `calibrate sample` sends (the same `run_sampler`); the next three run here as the command line runs them.
# `calibrate apply` writes the scenario with the fitted laws inline and each route's provenance (calls, dates, model,
# base URL) as comments, and it never overwrites a file without `--force`.

# %%
from kimiplan.cli import main

os.chdir(workdir)  # the commands print the paths they write: relative ones read the same on every machine
main(["calibrate", "fit", "samples.jsonl", "-o", "support_chat_calibration.json"])

# %%
# NBVAL_IGNORE_OUTPUT
main(["calibrate", "apply", "support_chat", "support_chat_calibration.json", "-o", "support_chat_calibrated.yaml"])

# %% [markdown]
# Above each route of the written file, its provenance and what the measurement changed (here the `answer` route's lines
# that set an assumption against a measurement):

# %%
with open("support_chat_calibrated.yaml") as fh:
    print("".join(line for line in fh if line.startswith("  #   assumed")))

# %% [markdown]
# ## Measured against assumed
#
# The scenario guessed its routes' sizes; the calls measured them. Where the assumption lies outside the measurement's
# 95 % interval, both are kept side by side, and the forecast uses the measurement unless the route pins the assumption
# (`pin: [input]`). Any command that reads the calibrated file (or a scenario whose `calibration:` names the JSON) sees
# the same figures: plan, simulate, forecast, report, compare, sweep.

# %%
scenario = load_scenario("support_chat")
calibrated = load_scenario("support_chat_calibrated.yaml")
pd.DataFrame(
    [
        {
            "route": r.name,
            "what": d.what,
            "assumed": round(d.assumed, 3),
            "measured": round(d.measured, 3),
            "95% CI": tuple(round(v, 3) for v in d.ci),
            "calls": d.n,
            "forecast uses": d.used,
        }
        for r in calibrated.routes
        if r.calibrated
        for d in r.calibrated.differences
    ]
)

# %%
from kimiplan.finance.cost import cost_summary, expected_cost

before = cost_summary(expected_cost(scenario, catalog)).set_index("route")
after = cost_summary(expected_cost(calibrated, catalog)).set_index("route")
pd.DataFrame(
    {
        "token sizes": {
            r.name: f"{r.calibrated.calls} calls" if r.calibrated else "assumed" for r in calibrated.routes
        },
        "cost/month assumed": before["cost_per_month"].round(0),
        "cost/month calibrated": after["cost_per_month"].round(0),
    }
).fillna("")

# %% [markdown]
# ## The calibration's precision reaches the forecast
#
# Each calibrated route carries the sampling error of its measured mean cost per request (`calibrated.cost_rel_se`),
# and every forecast of it (`forecast()`, `kimiplan forecast`, the report, Excel and FOCUS exports) widens its P10–P90
# bands by it, on top of the traffic noise, and says so. `parameter_uncertainty=False` (or `--no-parameter-uncertainty`)
# gives the bands from traffic noise alone.

# %%
from kimiplan.finance.forecast import forecast

kw = dict(months=3, paths=4000, capacity=False)
with_error = forecast(calibrated, **kw)
traffic_only = forecast(calibrated, parameter_uncertainty=False, **kw)
print(with_error.parameter_note)
pd.DataFrame(
    {
        "expected": with_error.monthly.set_index("month")["expected"].round(0),
        "P10–P90, traffic only": (traffic_only.monthly["P90"] - traffic_only.monthly["P10"]).round(0).to_numpy(),
        "P10–P90, with the calibration's error": (with_error.monthly["P90"] - with_error.monthly["P10"])
        .round(0)
        .to_numpy(),
    }
)

# %% [markdown]
# The report's Calibration table says the same per route, with the warnings: measured on the emulator (not Kimi), a
# sampler far faster than the route's traffic (Kimi's prefix cache is warm only for prefixes seen recently), routes the
# scenario lacks (`agent_step`). `kimiplan report support_chat_calibrated.yaml -o report.html` writes it.

# %%
# NBVAL_IGNORE_OUTPUT
# (it names the sampling date and the sampler's pace, which differ from run to run)
from kimiplan.report.html import calibration_table

table, note = calibration_table(calibrated)
print(note)
table

# %%
os.chdir(ROOT_DIR)
stack.close()  # stops the emulator and removes the temporary store
