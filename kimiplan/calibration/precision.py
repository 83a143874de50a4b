"""How precisely the sampled calls pin a route's mean cost per request, and how many calls reach a target.

A route's monthly cost is requests x mean cost per request, so its relative error is the mean's. The interval
is a bootstrap percentile one (seeded, so a file re-fitted from the same calls states the same interval); the
calls a target needs follow from the coefficient of variation: n = (z CV / target)^2 (the t interval's large-n
form). A route whose cost barely varies needs few calls, a heavy-tailed one many.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from kimiplan.errors import ConfigError

BOOTSTRAP_RESAMPLES = 2000
#: fewest calls before a coefficient of variation is trusted to size the next batch
MIN_CALLS = 30


def bootstrap_mean(x, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0):
    """(mean, (lo, hi), se) of the mean of `x`: bootstrap percentile interval and bootstrap standard error."""
    a = np.asarray(x, dtype=float)
    n = len(a)
    if n == 0:
        raise ConfigError("a mean needs at least one value")
    m = float(a.mean())
    if n == 1 or float(a.std()) == 0.0:
        return m, (m, m), 0.0
    rng = np.random.default_rng(seed)
    # In chunks: resamples x n indices at once would be 2,000 x 100,000 for a large store.
    chunk = max(1, 2_000_000 // n)
    means = np.concatenate(
        [a[rng.integers(0, n, size=(min(chunk, resamples - i), n))].mean(axis=1) for i in range(0, resamples, chunk)]
    )
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return m, (float(lo), float(hi)), float(means.std(ddof=1))


def calls_for(cv: float, rel_error: float = 0.05, confidence: float = 0.95) -> int | None:
    """Calls that bring the mean within +-rel_error at `confidence`, for a per-call coefficient of variation cv."""
    if not 0 < rel_error < 1:
        raise ConfigError(f"rel_error must be in (0, 1), got {rel_error}")
    if not math.isfinite(cv):
        return None
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return max(2, int(math.ceil((z * cv / rel_error) ** 2)))


def rel_half_width(x, confidence: float = 0.95) -> float:
    """The normal-theory half-width of the mean's interval over the mean (inf for fewer than 2 values)."""
    a = np.asarray(x, dtype=float)
    if len(a) < 2 or a.mean() <= 0:
        return math.inf if len(a) < 2 else 0.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return z * float(a.std(ddof=1)) / math.sqrt(len(a)) / float(a.mean())


def call_costs(df, card):
    """Per-request cost in the card's currency (float; planning precision): continuation input, and the
    further calls of tool rounds with their `$web_search` fees, included (a pandas frame of sample records in, a
    Series out)."""
    import pandas as pd

    def col(name):
        return df.get(name, pd.Series(0, index=df.index)).fillna(0).astype(float)

    hit = float(card.input_cache_miss if card.input_cache_hit is None else card.input_cache_hit)
    miss, out = float(card.input_cache_miss), float(card.output)
    p = df["prompt_tokens"].fillna(df["local_prompt_tokens"]).astype(float) + col("tool_round_prompt_tokens")
    c = df["cached_tokens"].fillna(0).astype(float) + col("tool_round_cached_tokens")
    extra = col("continuation_prompt_tokens")
    completion = df["completion_tokens"].astype(float) + col("tool_round_completion_tokens")
    fees = col("web_search_calls") * float(card.web_search_per_call)
    return ((p - c + extra) * miss + c * hit + completion * out) / 1e6 + fees
