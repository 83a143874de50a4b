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

import kimiplan as kp

pd.set_option("display.width", 140)
ROOT_DIR = os.getcwd()
LIVE = bool(os.environ.get("MOONSHOT_API_KEY"))
catalog = kp.load_catalog()
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
kp.viz.setup_notebook()

# %% [markdown]
# ## The emulator's ground truth (used only when no key is set)
#
# Output lengths are lognormal by median and p95 per route; the agent route also reasons (thinking on). The emulator adds
# **23 hidden tokens** to every prompt — the kind of server-side overhead calibration must discover — and applies Kimi's
# prefix-cache rule (a prompt longer than 256 tokens can be hit by later prompts sharing its prefix), counting cached
# tokens in whole 256-token blocks as measured on Kimi: a route whose shared prefix is shorter than a block reads none.

# %%
em_ = kp.emulator  # the local emulator's namespace: its config and the laws it draws from
TRUTH = {
    "answer": em_.RouteTruth(output=em_.LogNormalTruth(median=220, p95=650)),
    "summarize_ticket": em_.RouteTruth(output=em_.LogNormalTruth(median=160, p95=400)),
    "agent_step": em_.RouteTruth(
        output=em_.LogNormalTruth(median=300, p95=1500), reasoning=em_.LogNormalTruth(median=800, p95=3000)
    ),
}
stack = contextlib.ExitStack()
if LIVE:
    config = kp.KimiConfig.from_env(MODEL)  # the key stays inside a SecretStr: repr shows **********
    time_scale = 1.0
else:
    em = stack.enter_context(
        em_.emulator(
            em_.EmulatorConfig(
                seed=42,
                time_scale=0.0,
                stream_chunk_tokens=256,
                hidden_overhead=23,
                routes=TRUTH,
                default_route="answer",
            )
        )
    )
    config = kp.KimiConfig(
        model=MODEL, base_url=em.base_url, api_key="kimiplan-emulator-test-key", retry=kp.RetryPolicy(time_scale=0.001)
    )
client = stack.enter_context(kp.KimiClient(config))
print(repr(client).split(", base_url")[0], "| key shown as:", config.api_key)

# %% [markdown]
# ## A bounded, resumable sample
#
# Each planned call has a deterministic id; the JSONL store is fsync'ed per record, so re-running this cell after a crash
# only sends what is missing. The spend cap is checked *before* each call against its worst case (input + its
# `max_completion_tokens`, priced). Concurrency is 1 here so the cache sequence — and this notebook's output — is
# reproducible; real runs use `kp.SamplerConfig.with_tier(catalog.tier("Tier1"))` to run near the tier's limits.

# %%
sampler_config = kp.SamplerConfig(
    run_id="nb04-demo",
    max_concurrency=1,
    spend_cap=Decimal("1.00"),
    routes=[
        kp.RouteSampling(name="answer", n=80, max_completion_tokens=1024, thinking=False),
        kp.RouteSampling(name="summarize_ticket", n=80, max_completion_tokens=1024, thinking=False),
        kp.RouteSampling(name="agent_step", n=80, max_completion_tokens=4096, thinking=True),
    ],
)
workdir = stack.enter_context(tempfile.TemporaryDirectory())
store = os.path.join(workdir, "samples.jsonl")

# %%
# NBVAL_IGNORE_OUTPUT
summary = kp.run_sampler(client, sampler_config, store, card=card, progress=False)

# %%
print(summary)
df = kp.samples_frame(store)
cols = ["route", "prompt_tokens", "local_prompt_tokens", "cached_tokens", "reasoning_tokens", "output_tokens"]
kp.table(df[cols + ["finish_reason", "provenance"]].head())

# %% [markdown]
# ## Fit
#
# `kp.fit_calibration` fits every route. Truncated calls (`finish_reason=length`) are right-censored in the fits —
# ignoring that would shrink the tail exactly where the budget bites. Each component's law is chosen by goodness of
# fit (a lognormal where it fits, else a mixture of two lognormals, else the empirical law), and each route states how
# precisely its mean cost per request is known and how many more calls would pin it to ±5 % at 95 %. The
# calibration's `summary()` says it at once, as statsmodels prints a fit: where and when the calls were made, sizes
# in tokens per call, the cost per request with its ± at 95 %, and the caveats.

# %%
# NBVAL_IGNORE_OUTPUT
# (it names the sampling time and the emulator's port, which differ from run to run; the tables below are checked)
cal = kp.fit_calibration(df, notes="notebook 04 demo")
print(repr(cal), "| schema:", cal.schema_version)
cal.summary()

# %% [markdown]
# Why each route's output law was chosen, and the mean output it implies under the route's budget (the capped mean,
# with an interval that covers both the sample's error and the law's distance from it):

# %%
kp.table(
    pd.DataFrame(
        [
            {
                "route": route,
                "output law": rc.output.law,
                "why": rc.output.law_reason,
                "capped mean output (tokens)": rc.output.capped_mean.value,
                "95 % low": rc.output.capped_mean.ci[0],
                "95 % high": rc.output.capped_mean.ci[1],
            }
            for route, rc in cal.routes.items()
        ]
    ),
    formats={"capped mean output (tokens)": "count", "95 % low": "count", "95 % high": "count"},
)

# %% [markdown]
# The lognormal fits against the emulator's hidden truth (median and p95 in tokens, each with its 95 % interval):

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
                "calls": ln.n,
                "censored": ln.n_censored,
                "median": ln.median,
                "median 95 %": f"{ln.median_ci[0]:,.0f}–{ln.median_ci[1]:,.0f}",
                "true median": truth.median if truth else None,
                "p95": ln.p95,
                "p95 95 %": f"{ln.p95_ci[0]:,.0f}–{ln.p95_ci[1]:,.0f}",
                "true p95": truth.p95 if truth else None,
                "KS p-value": ln.ks_pvalue,
            }
        )
kp.table(
    pd.DataFrame(rows),
    formats={c: "count" for c in ("median", "p95", "true median", "true p95")} | {"KS p-value": "number"},
)

# %% [markdown]
# The hidden chat-template overhead is `prompt_tokens` (what the API bills) minus kimiplan's exact local count of the
# same messages; the emulator's hidden 23 tokens come back exactly, and applying the calibration carries them into
# each route's input. Truncation and cache, with their 95 % intervals:

# %%
kp.table(
    pd.DataFrame(
        [
            {
                "route": route,
                "template overhead (tokens)": rc.template_overhead.value,
                "truncated share": rc.truncation_rate.value,
                "truncated 95 % high": rc.truncation_rate.ci[1],
                "calls with a cache hit (share)": rc.cache_hit_rate.value,
                "cached share of input": rc.cached_fraction.value,
            }
            for route, rc in cal.routes.items()
        ]
    ),
    formats={"template overhead (tokens)": "count", "truncated 95 % high": "percent"},
)

# %% [markdown]
# ## Goodness of fit

# %%
# NBVAL_IGNORE_OUTPUT
sub = df[df.route == "agent_step"]
kp.LogNormalFitter().fit(sub.output_tokens, sub.finish_reason == "length").qq_plot("agent_step output tokens: QQ plot")

# %% [markdown]
# What the fitted laws predict (drawn through each route's budget, reasoning first) against what the calls showed:
# tokens for the means and quantiles, a share for the truncation rate.

# %%
table = kp.predicted_vs_observed(cal, df, seed=0)
kp.table(table, formats={"predicted": "number", "observed": "number", "ratio": "multiple"})

# %%
# NBVAL_IGNORE_OUTPUT
kp.viz.predicted_vs_observed_figure(table)

# %% [markdown]
# ## How many samples for ±5 % on monthly cost?
#
# Monthly cost is requests × mean cost per call, so its relative error is that of the mean: z·CV/√n per route, and for the
# traffic mix (shares from the support-chat scenario) combined over routes.

# %%
needed = kp.samples_needed(df, card, rel_error=0.05, shares={"answer": 0.5, "summarize_ticket": 0.3, "agent_step": 0.2})
kp.table(needed, currency=card.currency, formats={"cv": "number", "current_rel_error": "percent"})

# %% [markdown]
# ## The same path from the command line: fit → apply → report
#
# The README's path is four commands: `calibrate sample`, `calibrate fit`, `calibrate apply`, `report`. The sample above
# is what `calibrate sample` sends (the same `kp.run_sampler`); the next three run here as the command line runs them
# (`kp.cli.main` takes the same arguments as the `kimiplan` command). `calibrate apply` writes the scenario with the
# fitted laws inline and each route's provenance (calls, dates, model, base URL) as comments, and it never overwrites a
# file without `--force`.

# %%
# NBVAL_IGNORE_OUTPUT
# (the summary it prints names the sampling time and the emulator's port, which differ from run to run)
os.chdir(workdir)  # the commands print the paths they write: relative ones read the same on every machine
kp.cli.main(["calibrate", "fit", "samples.jsonl", "-o", "support_chat_calibration.json"])

# %%
# NBVAL_IGNORE_OUTPUT
kp.cli.main(
    ["calibrate", "apply", "support_chat", "support_chat_calibration.json", "-o", "support_chat_calibrated.yaml"]
)

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
scenario = kp.load_scenario("support_chat")
calibrated = kp.load_scenario("support_chat_calibrated.yaml")
kp.table(
    pd.DataFrame(
        [
            {
                "route": r.name,
                "quantity": d.what,
                "assumed": d.assumed,
                "measured": d.measured,
                "95 % low": d.ci[0],
                "95 % high": d.ci[1],
                "calls": d.n,
                "forecast uses": d.used,
            }
            for r in calibrated.routes
            if r.calibrated
            for d in r.calibrated.differences
        ]
    ),
    formats={"assumed": "number", "measured": "number", "95 % low": "number", "95 % high": "number"},
)

# %%
before = kp.cost_summary(kp.expected_cost(scenario, catalog)).set_index("route")
after = kp.cost_summary(kp.expected_cost(calibrated, catalog)).set_index("route")
costs = pd.DataFrame(
    {
        "token sizes": {
            r.name: f"{r.calibrated.calls} calls" if r.calibrated else "assumed" for r in calibrated.routes
        },
        "cost per month assumed": before["cost_per_month"],
        "cost per month calibrated": after["cost_per_month"],
    }
).fillna({"token sizes": ""})
costs.index.name = "route"
kp.table(costs, currency=card.currency)

# %% [markdown]
# ## The calibration's precision reaches the forecast
#
# Each calibrated route carries the sampling error of its measured mean cost per request (`calibrated.cost_rel_se`),
# and every forecast of it (`forecast()`, `kimiplan forecast`, the report, Excel and FOCUS exports) widens its P10–P90
# bands by it, on top of the traffic noise, and says so. `parameter_uncertainty=False` (or `--no-parameter-uncertainty`)
# gives the bands from traffic noise alone.

# %%
kw = dict(months=3, paths=4000, capacity=False)
with_error = kp.forecast(calibrated, **kw)
traffic_only = kp.forecast(calibrated, parameter_uncertainty=False, **kw)
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
# The calibrated scenario presents itself with the same facts, route by route: which token sizes are measured (calls,
# date, where) and which still assumed, what the measurement changed, and the calibration's warnings (measured on the
# emulator, not Kimi; a sampler far faster than the route's traffic, where Kimi's prefix cache is warm only for
# prefixes seen recently). The report's Calibration table says the same;
# `kimiplan report support_chat_calibrated.yaml -o report.html` writes it.

# %%
# NBVAL_IGNORE_OUTPUT
# (it names the sampling date and the emulator's port, which differ from run to run)
calibrated.summary()

# %%
os.chdir(ROOT_DIR)
stack.close()  # stops the emulator and removes the temporary store
