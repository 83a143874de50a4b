"""How precisely the sampled calls pin a route's mean cost per request, and how many calls reach a target.

A route's monthly cost is requests x mean cost per request, so its relative error is the mean's. The interval
is a bootstrap percentile one (seeded, so a file re-fitted from the same calls states the same interval), and
its wider side over the mean is the relative error that both the calibration file states and `calibrate sample
--until-precision` stops on (`mean_precision`, one function for both). The calls a target needs follow from that
figure, which shrinks as 1/sqrt(n): n (rel_error / target)^2 (`calls_for_target`; for a symmetric interval the
normal theory's (z CV / target)^2). A route whose cost barely varies needs few calls, a heavy-tailed one many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class MeanPrecision:
    """A mean with its bootstrap interval, standard error and relative half-width (the wider side over the
    mean): the one figure the calibration file states and `--until-precision` stops on."""

    mean: float
    ci: tuple[float, float]
    se: float
    rel_error: float


def mean_precision(x, confidence: float = 0.95, seed: int = 0) -> MeanPrecision:
    """The precision of the mean of `x`. Sorted first, so the figure depends on the values, not on the order
    they were recorded in; fewer than 2 values have no stated precision (rel_error inf)."""
    a = np.sort(np.asarray(x, dtype=float))
    m, ci, se = bootstrap_mean(a, confidence, seed=seed)
    if len(a) < 2:
        return MeanPrecision(m, ci, se, math.inf)
    rel = max(m - ci[0], ci[1] - m) / m if m > 0 else 0.0
    return MeanPrecision(m, ci, se, rel)


def calls_for_target(p: MeanPrecision, n: int, target: float = 0.05) -> int | None:
    """Calls that bring `p`'s relative error (from `n` calls) to `target`: the error shrinks as 1/sqrt(n), so
    n (rel_error / target)^2. From the stated figure itself, so a route within the target never needs more calls
    than it has, and one outside it always does (None without a stated error)."""
    if not 0 < target < 1:
        raise ConfigError(f"target must be in (0, 1), got {target}")
    if not math.isfinite(p.rel_error):
        return None
    return max(2, int(math.ceil(n * (p.rel_error / target) ** 2 - 1e-9)))


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
