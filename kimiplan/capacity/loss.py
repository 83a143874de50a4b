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

from kimiplan.errors import ConfigError
from kimiplan.model.laws import gamma_ppf, gamma_sf, poisson_logcdf, poisson_logpmf, poisson_ppf, poisson_sf

MAX_UNITS = 3000  # knapsack capacity in units (token limits are divided into at most this many)
MAX_CLASSES = 64  # request-size classes of the knapsack


@njit(cache=True)
def _erlang_b(servers, load, start=0, b0=1.0):
    b = b0
    for k in range(start + 1, servers + 1):
        b = load * b / (k + load * b)
    return b


RECURSION_SERVERS = 100_000  # beyond this many servers Erlang B is taken from the Poisson law (constant cost)


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of M/G/c/c with c=`servers` and offered load `load` (Erlangs).

    Recursion B(0)=1, B(k) = a B(k-1) / (k + a B(k-1)): every step is a ratio in [0, 1], so it never overflows
    (unlike the a^c/c! form) and is exact to rounding. Its cost grows with c, so for c over
    `RECURSION_SERVERS` the identity B = P(N = c) / P(N <= c), N ~ Poisson(a), is used (log-space, constant
    cost); where P(N <= c) underflows (a far above c) the recursion runs its last 20,000 steps from B = 1,
    a contraction by c/a per step, so the start's error is gone (below (c/a)^20000)."""
    if servers < 0 or load < 0 or not math.isfinite(load):
        raise ConfigError(f"erlang_b: servers and load must be >= 0, got {servers}, {load}")
    c, a = int(servers), float(load)
    if a == 0.0:
        return 1.0 if c == 0 else 0.0
    if c <= RECURSION_SERVERS:
        return float(_erlang_b(c, a))
    if a < c and c - a > 40.0 * math.sqrt(c) + 40.0:
        return 0.0  # over 40 standard deviations above the load: below 1e-300
    log_cdf = float(poisson_logcdf(c, a))
    if math.isfinite(log_cdf) and log_cdf > -600.0:
        return float(min(math.exp(float(poisson_logpmf(c, a)) - log_cdf), 1.0))
    return float(_erlang_b(c, a, c - 20_000, 1.0))


def erlang_c(servers: int, load: float) -> float:
    """Probability that a request waits in M/M/c with c=`servers` and offered load `load` < c (Erlang C),
    from Erlang B: C = B / (1 - (a/c)(1 - B)). 1.0 when the load reaches the servers (the queue grows)."""
    if servers <= 0 or load >= servers:
        return 1.0
    b = erlang_b(servers, load)
    return b / (1.0 - (load / servers) * (1.0 - b))


def erlang_b_servers(load: float, target: float) -> int:
    """Smallest c with Erlang B(c, load) <= target (the recursion up to 10^6 servers, then bisection on c)."""
    if not 0 < target < 1:
        raise ConfigError(f"target must be in (0, 1), got {target}")
    if load < 0 or not math.isfinite(load):
        raise ConfigError(f"erlang_b_servers: load must be a finite number >= 0, got {load}")
    b, c = 1.0, 0
    while b > target and c < 1_000_000:
        c += 1
        b = load * b / (c + load * b)
    if b <= target:
        return c
    lo, hi = c, max(2 * c, int(load + 50 * math.sqrt(load) + 50))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if erlang_b(mid, load) <= target else (mid, hi)
    return hi


def poisson_overflow_fraction(mean: float, limit: float) -> float:
    """E[(N - K)+] / E[N] for N ~ Poisson(mean): the share of requests a fixed window refuses."""
    if mean <= 0:
        return 0.0
    k = math.floor(limit)
    # E[(N-K)+] = mean * P(N >= K) - K * P(N >= K+1)
    excess = mean * poisson_sf(k - 1, mean) - k * poisson_sf(k, mean)
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
        x = float(x0 + gamma_ppf(q, a, scale=th))
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
        excess = a * th * gamma_sf(d, a + 1, scale=th) - d * gamma_sf(d, a, scale=th)
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
    if not whole and all(float(v).is_integer() and v >= 1 for v in sizes.values):
        # Whole sizes with a common divisor that keeps the grid small: that divisor is the unit, exactly.
        g = int(np.gcd.reduce(np.asarray(sizes.values, dtype=np.int64)))
        if limit / g <= MAX_UNITS:
            return np.asarray(sizes.values, dtype=np.int64) // g, int(math.floor(limit / g + 1e-9)), float(g)
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
    if limit > GIANT * float(v.max()):
        return float(np.dot(p, _hayward(load, v.astype(np.float64), p.astype(np.float64), limit)))
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
    hi = int(poisson_ppf(1 - 1e-12, mean_requests)) + 1
    if hi * cap > 3e6:  # too long a chain for an interactive plan: the compound Poisson overflow instead
        m = [float(np.dot(sizes.probs, np.asarray(sizes.values) ** k)) for k in (1, 2, 3)]
        return CompoundPoisson(mean_requests, *m).overflow_fraction(limit)
    gt = poisson_sf(np.arange(hi), mean_requests)
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


# ---------------------------------------------------------------- RPM and TPM together (sliding window)


@dataclass(frozen=True)
class JointSizes:
    """The joint law of what one request takes from RPM (API calls, whole) and TPM (reserved tokens) in the
    same 60 s window, as classes: a request with more `$web_search` rounds reserves more tokens too, so the
    two are not independent. Classes are exact call counts, each split into token-size bins (quantile bins
    keeping each bin's mean, as `Sizes`)."""

    calls: tuple
    tokens: tuple
    probs: tuple

    @classmethod
    def from_sample(cls, calls, tokens, classes: int = MAX_CLASSES) -> JointSizes:
        t = np.asarray(tokens, dtype=np.float64)
        return cls.from_weighted(calls, t, np.ones(t.size), classes)

    @classmethod
    def from_weighted(cls, calls, tokens, weights, classes: int = MAX_CLASSES) -> JointSizes:
        """At most about `classes` classes: every call count keeps its own classes (at least one), in
        proportion to its probability; token sizes within it in quantile bins keeping their means."""
        c = np.maximum(np.rint(np.asarray(calls, dtype=np.float64)), 1.0)
        t = np.asarray(tokens, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        vals = np.unique(c)
        total = w.sum()
        out_c, out_t, out_p = [], [], []
        for v in vals:
            m = c == v
            pv = w[m].sum() / total
            if pv <= 0:
                continue
            sz = Sizes.from_weighted(t[m], w[m], max(1, int(round(classes * pv))))
            out_c += [float(v)] * len(sz.values)
            out_t += list(sz.values)
            out_p += [pv * q for q in sz.probs]
        return cls(tuple(out_c), tuple(out_t), tuple(out_p))

    @property
    def size(self) -> int:
        return len(self.probs)

    @classmethod
    def from_marginals(cls, calls: Sizes, tokens: Sizes) -> JointSizes:
        """Independent calls and tokens (for moments tables written without the joint law)."""
        cc, tt = np.meshgrid(calls.values, tokens.values, indexing="ij")
        pp = np.outer(calls.probs, tokens.probs)
        return cls(tuple(cc.ravel().tolist()), tuple(tt.ravel().tolist()), tuple(pp.ravel().tolist()))


KNAPSACK_WORK = 1e7  # grid cells x classes of one two-dimensional knapsack (about 10 ms)
MAX_CALL_UNITS = 2000  # RPM places counted one by one up to this limit
OCCUPANCY_CLASSES = 16  # request classes of the two-dimensional recursion (each class's refusal is read at its size)


@njit(cache=True, _nrt=True)
def _kaufman_roberts_2d(a, r, t, cap_r, cap_t):
    """Unnormalized cumulative occupancy law (mass of {j' <= j, k' <= k}) of a two-resource stochastic
    knapsack (classes with load a_i taking r_i >= 1 units of the first resource and t_i of the second), from
    j q(j, k) = sum_i a_i r_i q(j - r_i, k - t_i), the Kaufman-Roberts recursion along the first resource
    (each class's Poisson count satisfies n P(n) = a P(n - 1)). Rows are rescaled together when they grow
    large: only ratios matter."""
    q = np.zeros((cap_r + 1, cap_t + 1))
    q[0, 0] = 1.0
    for j in range(1, cap_r + 1):
        for i in range(a.shape[0]):
            ri, ti = r[i], t[i]
            if ri > j or ti > cap_t:
                continue
            coef = a[i] * ri / j
            src = j - ri
            for k in range(ti, cap_t + 1):
                q[j, k] += coef * q[src, k - ti]
        m = q[j].max()
        if m > 1e250:
            for jj in range(j + 1):
                for k in range(cap_t + 1):
                    q[jj, k] *= 1e-250
    # In place: q[x, y] becomes the mass of {calls <= x, tokens <= y}.
    for j in range(cap_r + 1):
        for k in range(1, cap_t + 1):
            q[j, k] += q[j, k - 1]
    for j in range(1, cap_r + 1):
        for k in range(cap_t + 1):
            q[j, k] += q[j - 1, k]
    return q


def _scaled_units(values: np.ndarray, probs: np.ndarray, limit: float, max_units: int, whole: bool):
    """Integer sizes and capacity of one resource on a grid of at most `max_units` units; a coarser unit than
    one is re-scaled so the mean size stays exact (as `_units`)."""
    if whole and limit <= max_units:
        return np.maximum(np.rint(values), 1).astype(np.int64), int(math.floor(limit + 1e-9)), 1.0
    if np.all(values == np.rint(values)) and values.min() >= 1:
        # Whole sizes with a common divisor that makes a grid small enough: that divisor is the unit, exactly
        # (no rounding, so states exactly at the limit stay admitted, as they are).
        g = int(np.gcd.reduce(values.astype(np.int64)))
        if limit / g <= max_units:
            return (values / g).astype(np.int64), int(math.floor(limit / g + 1e-9)), float(g)
    unit = max(1.0, limit / max_units)
    bands = np.maximum(np.rint(values / unit), 1).astype(np.int64)
    unit = float(np.dot(probs, values) / np.dot(probs, bands))
    return bands, int(math.floor(limit / unit + 1e-9)), unit


def window_knapsack(
    rate_per_s: float,
    sizes: JointSizes,
    rpm: float | None,
    tpm: float | None,
    window_s: float = 60.0,
) -> dict:
    """RPM and TPM over one sliding window, together: an admitted request holds its calls in RPM and its
    reservation in TPM for the same `window_s`, so the window's content is a two-dimensional stochastic
    knapsack with product form (Poisson arrivals; exact, insensitive). Returns per class (arrays in the order
    of `sizes`): `blocked` (refused by either), `rpm` (charged to RPM: the calls do not fit, checked first as
    the admission rule does) and `tpm` (the calls fit, the tokens do not), with `method`.

    A limit that cannot refuse given the other (TPM >= RPM x the largest tokens per call, or the reverse) or
    whose content stays below it with probability 1 - 1e-15 drops out, and the other is the one-dimensional
    knapsack, exactly; only when both can refuse is the two-dimensional recursion run, on a grid of at most
    `KNAPSACK_WORK` cells x classes (calls counted one by one up to `MAX_CALL_UNITS`, tokens in units of
    at most TPM/3,000, coarser when RPM is large; the unit keeps every class's mean size)."""
    calls = np.asarray(sizes.calls, dtype=np.float64)
    tokens = np.asarray(sizes.tokens, dtype=np.float64)
    p = np.asarray(sizes.probs, dtype=np.float64)
    p = p / p.sum()
    n = calls.size
    out = {"blocked": np.zeros(n), "rpm": np.zeros(n), "tpm": np.zeros(n), "method": "none binds"}
    load = rate_per_s * window_s
    if not load > 0 or (rpm is None and tpm is None):
        return out
    big_r = calls > rpm if rpm is not None else np.zeros(n, bool)
    big_t = (tokens > tpm) & ~big_r if tpm is not None else np.zeros(n, bool)
    out["rpm"][big_r] = 1.0
    out["tpm"][big_t] = 1.0
    ok = ~(big_r | big_t)
    if not ok.any():
        out["blocked"][:] = 1.0
        out["method"] = "nothing fits"
        return out
    c, t, q = calls[ok], tokens[ok], p[ok]
    a_fit = load * q.sum()  # requests that never fit add no load
    qn = q / q.sum()
    # Can a limit refuse at all, given the other and the load?
    r_on = rpm is not None and not _far_below(a_fit, c, qn, rpm - c.max())
    t_on = tpm is not None and not _far_below(a_fit, t, qn, tpm - t.max())
    if r_on and t_on:
        # The window never holds more requests than RPM (or TPM) admits: if even that many of them, at a
        # Poisson count (a heavier tail than a fixed one), stay far below the other limit, it cannot refuse.
        if _far_below(float(rpm / c.min()), t, qn, tpm - t.max()):
            t_on = False
        elif _far_below(float(tpm / t.min()), c, qn, rpm - c.max()):
            r_on = False
    if r_on and t_on:  # one limit implied by the other (on a tie both are, and RPM, checked first, stays)
        if rpm * float((t / c).max()) <= tpm:
            t_on = False  # every state RPM admits fits in TPM
        elif tpm * float((c / t).max()) <= rpm:
            r_on = False
    blocked_ok = np.zeros(c.size)
    rpm_ok = np.zeros(c.size)
    if r_on and t_on and (rpm > GIANT * c.max() or tpm > GIANT * t.max()):
        # Both near a limit thousands of times the largest request (only at a traffic far above any tier's):
        # each limit on its own, as if independent (the safe side), at a cost that does not grow with them.
        b_r = _knapsack_1d(a_fit, c, qn, rpm)
        b_t = _knapsack_1d(a_fit, t, qn, tpm)
        blocked_ok = 1.0 - (1.0 - b_r) * (1.0 - b_t)
        rpm_ok = b_r
        out["method"] = "RPM and TPM knapsacks taken as independent (limits over 60,000 requests)"
    elif r_on and t_on:
        # The occupancy is computed with at most OCCUPANCY_CLASSES classes (re-binned, each keeping its mean
        # size); every original class then reads its own refusal off it at its own size.
        occ = JointSizes.from_weighted(c, t, qn, OCCUPANCY_CLASSES) if c.size > OCCUPANCY_CLASSES else None
        oc, ot, op = (c, t, qn) if occ is None else (np.array(occ.calls), np.array(occ.tokens), np.array(occ.probs))
        ob_r, cap_r, unit_r = _scaled_units(oc, op, rpm, MAX_CALL_UNITS, True)
        tu = int(min(MAX_UNITS, max(64, KNAPSACK_WORK / op.size / (cap_r + 1))))
        ob_t, cap_t, unit_t = _scaled_units(ot, op, tpm, tu, False)
        cum = _kaufman_roberts_2d(a_fit * op, ob_r, ob_t, cap_r, cap_t)  # mass of {calls <= x, tokens <= y}
        br = np.maximum(np.rint(c / unit_r), 1).astype(np.int64)
        bt = np.maximum(np.rint(t / unit_t), 1).astype(np.int64)
        tot = cum[cap_r, cap_t]
        fit_r = (cap_r - br) >= 0
        fit_t = (cap_t - bt) >= 0
        both = fit_r & fit_t
        adm = np.zeros(c.size)
        adm[both] = cum[cap_r - br[both], cap_t - bt[both]] / tot
        rows = np.zeros(c.size)
        rows[fit_r] = cum[cap_r - br[fit_r], cap_t] / tot
        blocked_ok = np.clip(1.0 - adm, 0.0, 1.0)
        rpm_ok = np.clip(1.0 - rows, 0.0, 1.0)
        out["method"] = f"two-dimensional knapsack ({cap_r + 1} x {cap_t + 1} grid)"
    elif r_on or t_on:
        vals, lim = (c, rpm) if r_on else (t, tpm)
        blocked_ok = _knapsack_1d(a_fit, vals, qn, lim)
        if r_on:
            rpm_ok = blocked_ok
        out["method"] = "RPM knapsack (TPM cannot refuse)" if r_on else "TPM knapsack (RPM cannot refuse)"
    out["blocked"][ok] = blocked_ok
    out["rpm"][ok] = rpm_ok
    out["tpm"][ok] = blocked_ok - rpm_ok
    out["blocked"][~ok] = 1.0
    return out


def _knapsack_1d(load: float, values: np.ndarray, probs: np.ndarray, limit: float) -> np.ndarray:
    """Per-class refusal of a one-dimensional stochastic knapsack (Erlang B for unit sizes)."""
    if np.all(values == 1.0):
        return np.full(values.size, erlang_b(int(limit), load))
    sizes = Sizes(tuple(values.tolist()), tuple(probs.tolist()))
    if limit > GIANT * float(values.max()):
        return _hayward(load, values, probs, limit)
    bands, cap, _ = _units(sizes, limit)
    qd = _kaufman_roberts(load * probs * bands, bands, cap)
    tail = np.concatenate([np.cumsum(qd[::-1])[::-1], [0.0]])
    return np.minimum(tail[np.clip(cap - bands + 1, 0, cap + 1)], 1.0)


GIANT = 20 * MAX_UNITS  # a limit this many times the largest request: Hayward's equivalent system


def _hayward(load: float, values: np.ndarray, probs: np.ndarray, limit: float) -> np.ndarray:
    """Per-class refusal of a knapsack whose every request is tiny against the limit (over `GIANT` times
    smaller; reached only at a traffic far above any tier's, e.g. in the search for the largest sustainable
    traffic under a limit of 10^9): Hayward's approximation, Erlang B on the system scaled by the sizes'
    peakedness z = E[X^2]/E[X], B(C/z, A/z), a class of size b refused with 1 - (1 - B)^(b/z). Its cost does
    not grow with the limit (Erlang B at large c is constant-cost), where the exact recursion's would."""
    m1 = float(np.dot(probs, values))
    z = float(np.dot(probs, values**2)) / m1
    b = erlang_b(int(limit / z), load * m1 / z)
    return 1.0 - (1.0 - b) ** (values / z)
