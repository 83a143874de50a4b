"""Loss-system formulas: what share of requests a limit refuses when Kimi refuses (429) instead of queueing.

Every limit is a loss system, and which one depends on the window:

- concurrency: a request holds one slot for its latency. Poisson arrivals on c slots: M/G/c/c, refusals by
  Erlang B, insensitive to the latency's law beyond its mean.
- RPM/TPM over a **sliding** 60 s window: an admitted request stays in the window for exactly 60 s and a
  refused one never enters it, so the window's content is the occupancy of a loss system with deterministic
  60 s holding times. With one unit per request (RPM, one call each) that is M/D/c/c, Erlang B again with
  load = rate x 60 s. When requests take several units (tokens against TPM, several `$web_search` calls
  against RPM) it is the stochastic knapsack (multi-rate Erlang loss model): product-form and insensitive,
  and the Kaufman (1981) / Roberts (1981) recursion gives its occupancy exactly; a request of size b is
  refused when the occupancy exceeds C - b. Tokens are counted in units of at most C/3,000 of the limit and
  request sizes in at most 64 classes (quantile bins of the sizes), which is the only discretization.
- RPM/TPM over a **fixed** calendar minute (and TPD/RPD over the day between resets): the window admits
  arrivals in order until they no longer fit, then starts empty. For single-call requests the refused
  share is exactly E[(N-K)+]/E[N] with N ~ Poisson. For several calls per request, the count of used units
  after each arrival is a Markov chain, solved exactly (arrival by arrival, weighted by the Poisson law of
  the number of arrivals); when that chain would be long (arrivals x limit over 3 million, large windows where
  the central limit theorem has long taken over) the compound-Poisson overflow below stands in. Token
  windows use E[(S-K)+]/E[S] of the compound Poisson sum S, whose tail is a translated gamma fitted to its
  exact first three moments (an approximation, checked against the simulator: a request that does not fit
  is refused while a smaller later one may still fit, which the token-share formula ignores).

All of these assume a stationary Poisson input at the rate of the minute being evaluated; the rates the
scenario's profile gives change over hours, far slower than the 60 s window and the latencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import stats

from kimiplan.errors import ConfigError

MAX_UNITS = 3000  # knapsack capacity in units (token limits are divided into at most this many)
MAX_CLASSES = 64  # request-size classes of the knapsack


@njit(cache=True)
def _erlang_b(servers, load):
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of M/G/c/c with c=`servers` and offered load `load` (Erlangs).

    Recursion B(0)=1, B(k) = a B(k-1) / (k + a B(k-1)): every step is a ratio in [0, 1], so it never overflows
    (unlike the a^c/c! form) and is exact to rounding for any c."""
    if servers < 0 or load < 0 or not math.isfinite(load):
        raise ConfigError(f"erlang_b: servers and load must be >= 0, got {servers}, {load}")
    return float(_erlang_b(int(servers), float(load)))


def erlang_c(servers: int, load: float) -> float:
    """Probability that a request waits in M/M/c with c=`servers` and offered load `load` < c (Erlang C),
    from Erlang B: C = B / (1 - (a/c)(1 - B)). 1.0 when the load reaches the servers (the queue grows)."""
    if servers <= 0 or load >= servers:
        return 1.0
    b = erlang_b(servers, load)
    return b / (1.0 - (load / servers) * (1.0 - b))


def erlang_b_servers(load: float, target: float) -> int:
    """Smallest c with Erlang B(c, load) <= target."""
    if not 0 < target < 1:
        raise ConfigError(f"target must be in (0, 1), got {target}")
    b, c = 1.0, 0
    while b > target:
        c += 1
        b = load * b / (c + load * b)
    return c


def poisson_overflow_fraction(mean: float, limit: float) -> float:
    """E[(N - K)+] / E[N] for N ~ Poisson(mean): the share of requests a fixed window refuses."""
    if mean <= 0:
        return 0.0
    k = math.floor(limit)
    # E[(N-K)+] = mean * P(N >= K) - K * P(N >= K+1)
    excess = mean * stats.poisson.sf(k - 1, mean) - k * stats.poisson.sf(k, mean)
    return float(max(excess, 0.0) / mean)


@dataclass(frozen=True)
class CompoundPoisson:
    """S = sum of N iid X with N ~ Poisson(n); given the raw moments m1, m2, m3 of X."""

    n: float
    m1: float
    m2: float
    m3: float

    @property
    def mean(self) -> float:
        return self.n * self.m1

    @property
    def var(self) -> float:
        return self.n * self.m2

    @property
    def skew(self) -> float:
        # n m3 / (n m2)^1.5 written so that a vanishing n (a route share of 1e-300) does not underflow to 0/0.
        return self.m3 / (self.m2**1.5 * math.sqrt(self.n)) if self.var > 0 and self.m2 > 0 else 0.0

    def _gamma(self):
        # Translated gamma with the same mean, variance and skewness: S ~ x0 + Gamma(alpha, theta).
        g = max(self.skew, 1e-9)
        sd = math.sqrt(self.var)
        alpha = 4.0 / g**2
        theta = sd * g / 2.0
        return self.mean - alpha * theta, alpha, theta

    def quantile(self, q: float) -> float:
        if self.var <= 0:
            return self.mean
        x0, a, th = self._gamma()
        # The translated gamma starts below zero (x0 < 0) when the sum is small and skewed: demand never does.
        x = float(x0 + stats.gamma.ppf(q, a, scale=th))
        # A sum too small for the gamma's arithmetic (alpha underflows) is its mean, ~0.
        return max(x, 0.0) if math.isfinite(x) else self.mean

    def overflow_fraction(self, limit: float) -> float:
        """E[(S - K)+] / E[S]."""
        if self.mean <= 0:
            return 0.0
        if self.var <= 0:
            return max(self.mean - limit, 0.0) / self.mean
        x0, a, th = self._gamma()
        d = max(limit - x0, 0.0)
        excess = a * th * stats.gamma.sf(d, a + 1, scale=th) - d * stats.gamma.sf(d, a, scale=th)
        return float(max(excess, 0.0) / self.mean)


# ---------------------------------------------------------------- request sizes


@dataclass(frozen=True)
class Sizes:
    """The law of what one request takes from a limit (tokens, or API calls), as classes: `values` with
    probabilities `probs`. One class of size 1 is the single-call request."""

    values: tuple
    probs: tuple

    @classmethod
    def unit(cls) -> Sizes:
        return cls((1.0,), (1.0,))

    @classmethod
    def from_sample(cls, x: np.ndarray, classes: int = MAX_CLASSES) -> Sizes:
        """At most `classes` size classes from draws: exact when the draws take few values, else quantile bins,
        each standing for the mean of its draws (so the mean size is kept exactly)."""
        vals, counts = np.unique(np.asarray(x, dtype=np.float64), return_counts=True)
        return cls.from_weighted(vals, counts.astype(np.float64), classes)

    @classmethod
    def from_weighted(cls, values, weights, classes: int = MAX_CLASSES) -> Sizes:
        """Classes from values with weights (normalized here); equal-probability bins beyond `classes`."""
        v = np.asarray(values, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        keep = w > 0
        v, inv = np.unique(v[keep], return_inverse=True)  # sorted, equal sizes merged
        w = np.bincount(inv, weights=w[keep])
        w = w / w.sum()
        if v.size <= classes:
            return cls(tuple(v.tolist()), tuple(w.tolist()))
        # Bin by cumulative probability; each bin keeps its probability and its mean size.
        mid = np.cumsum(w) - w / 2
        idx = np.minimum((mid * classes).astype(np.int64), classes - 1)
        p = np.bincount(idx, weights=w, minlength=classes)
        m = np.bincount(idx, weights=w * v, minlength=classes)
        ok = p > 0
        return cls(tuple((m[ok] / p[ok]).tolist()), tuple(p[ok].tolist()))

    @classmethod
    def mix(cls, parts: list[tuple[Sizes, float]], classes: int = MAX_CLASSES) -> Sizes:
        """The law of a request drawn from several routes with weights (shares)."""
        vals = np.concatenate([np.asarray(s.values) for s, _ in parts])
        wts = np.concatenate([np.asarray(s.probs) * w for s, w in parts])
        return cls.from_weighted(vals, wts, classes)

    @property
    def is_unit(self) -> bool:
        return self.values == (1.0,)

    @property
    def mean(self) -> float:
        return float(np.dot(self.values, self.probs))


@njit(cache=True, _nrt=True)
def _kaufman_roberts(ab, bands, cap):
    """Occupancy distribution of a stochastic knapsack of `cap` units: j q(j) = sum_b a_b b q(j - b)."""
    q = np.zeros(cap + 1)
    q[0] = 1.0
    for j in range(1, cap + 1):
        s = 0.0
        for i in range(bands.shape[0]):
            b = bands[i]
            if b <= j:
                s += ab[i] * q[j - b]
        q[j] = s / j
        if q[j] > 1e250:  # rescale: only ratios matter
            for i in range(j + 1):
                q[i] *= 1e-250
    return q / q.sum()


def _far_below(n: float, v: np.ndarray, p: np.ndarray, room: float) -> bool:
    """True when a compound Poisson sum (Poisson(n) terms of law (v, p)) stays under `room` with probability
    above 1 - 1e-15 by a wide margin: its translated gamma quantile, by the Wilson-Hilferty cube-root normal
    approximation at z = 10 (the exact quantile at 1 - 1e-15 is z = 8), so a near call is never skipped."""
    m1, m2, m3 = (float(np.dot(p, v**k)) for k in (1, 2, 3))
    mean, var = n * m1, n * m2
    if var <= 0:
        return mean <= room
    g = max(n * m3 / var**1.5, 1e-9)
    alpha, theta = 4.0 / g**2, math.sqrt(var) * g / 2.0
    x0 = mean - alpha * theta
    c = 1.0 / (9.0 * alpha)
    q = alpha * theta * max(1.0 - c + 10.0 * math.sqrt(c), 0.0) ** 3
    return x0 + q <= room


def _units(sizes: Sizes, limit: float) -> tuple[np.ndarray, int, float]:
    # Whole-unit sizes (API calls) are counted one by one; tokens in units of at most limit / MAX_UNITS.
    whole = all(float(v).is_integer() for v in sizes.values) and limit <= 20 * MAX_UNITS
    unit = 1.0 if whole else max(1.0, limit / MAX_UNITS)
    bands = np.maximum(np.rint(np.asarray(sizes.values) / unit), 1).astype(np.int64)
    if not whole:
        # Rounding sizes to units must not shift the mean size (with one fixed size it would shift the number
        # of requests the limit holds): the unit is re-scaled so the classes keep the exact mean size.
        unit = sizes.mean / float(np.dot(sizes.probs, bands))
    cap = int(math.floor(limit / unit + 1e-9))
    return bands, cap, unit


def sliding_window_refusal(rate_per_s: float, sizes: Sizes, limit: float, window_s: float = 60.0) -> float:
    """Share of requests refused by a sliding window of `window_s` holding at most `limit` units, for Poisson
    arrivals at `rate_per_s` whose sizes follow `sizes` (exact product form; Erlang B for unit sizes)."""
    load = rate_per_s * window_s
    if load <= 0:
        return 0.0
    if sizes.is_unit:
        return erlang_b(int(limit), load)
    v = np.asarray(sizes.values)
    p = np.asarray(sizes.probs)
    if v.max() <= limit:
        # Far below the limit the knapsack cannot refuse measurably: skip it when even the 1 - 1e-15 quantile
        # of the window's content without any limit (compound Poisson) leaves room for the largest request.
        if _far_below(load, v, p, limit - v.max()):
            return 0.0
    bands, cap, _ = _units(sizes, limit)
    p = p.astype(np.float64)
    too_big = float(p[bands > cap].sum())  # can never fit: always refused
    ok = bands <= cap
    if not ok.any():
        return 1.0
    # Requests too big to ever fit never enter, so they add no load.
    q = _kaufman_roberts(load * p[ok] * bands[ok], bands[ok], cap)
    tail = np.concatenate([np.cumsum(q[::-1])[::-1], [0.0]])  # tail[j] = P(occupancy >= j)
    blocked = tail[cap - bands[ok] + 1]  # occupancy > cap - b
    return float(too_big + np.dot(p[ok], np.minimum(blocked, 1.0)))


@njit(cache=True, _nrt=True)
def _fixed_chain(p_arrivals_gt, probs, bands, cap):
    """Expected refusals in a fixed window: after i arrivals the used units have law `u`; arrival i+1 (which
    happens with probability P(N > i)) is refused when it does not fit."""
    u = np.zeros(cap + 1)
    u[0] = 1.0
    nxt = np.zeros(cap + 1)
    refused = 0.0
    for i in range(p_arrivals_gt.shape[0]):
        w = p_arrivals_gt[i]
        nxt[:] = 0.0
        for s in range(cap + 1):
            m = u[s]
            if m == 0.0:
                continue
            for c in range(bands.shape[0]):
                b = bands[c]
                if s + b <= cap:
                    nxt[s + b] += m * probs[c]
                else:
                    nxt[s] += m * probs[c]
                    refused += w * m * probs[c]
        u[:] = nxt
    return refused


def fixed_window_count_refusal(mean_requests: float, sizes: Sizes, limit: float) -> float:
    """Share of requests a fixed window of `limit` units refuses when Poisson(`mean_requests`) requests
    arrive in it, each taking whole units from `sizes` (API calls): exact."""
    if mean_requests <= 0:
        return 0.0
    if sizes.is_unit:
        return poisson_overflow_fraction(mean_requests, limit)
    bands = np.maximum(np.rint(np.asarray(sizes.values)), 1).astype(np.int64)
    cap = int(math.floor(limit))
    # Arrivals beyond the point where P(N > i) is negligible change nothing.
    hi = int(stats.poisson.ppf(1 - 1e-12, mean_requests)) + 1
    if hi * cap > 3e6:  # too long a chain for an interactive plan: the compound Poisson overflow instead
        m = [float(np.dot(sizes.probs, np.asarray(sizes.values) ** k)) for k in (1, 2, 3)]
        return CompoundPoisson(mean_requests, *m).overflow_fraction(limit)
    gt = stats.poisson.sf(np.arange(hi), mean_requests)
    refused = _fixed_chain(gt, np.asarray(sizes.probs, dtype=np.float64), bands, cap)
    return float(refused / mean_requests)


def pacing_wait(servers: int, load: float, latency_s: float) -> dict:
    """A client that waits for a free slot instead of taking a 429 turns the concurrency limit into an M/M/c
    queue: P(wait) = Erlang C and mean wait C * latency / (c - a) (exact for exponential latency, an
    approximation otherwise). When the load reaches the limit the queue grows without bound: `stable` is False
    and the mean wait None."""
    c = erlang_c(servers, load)
    stable = load < servers
    return {"stable": stable, "p_wait": c, "mean_wait_s": c * latency_s / (servers - load) if stable else None}
