"""Exact moments of what a request puts on each limit: reserved tokens, API calls and latency.

The plan needs per route the first three raw moments of the tokens a request reserves (input +
max_completion_tokens, over all its calls), of its API calls, and the mean latency. Every distribution in
`kimiplan.model.dists` has exact raw moments (fixed, normal clipped at 0, lognormal, exponential, Poisson,
uniform, empirical, texts and mixtures of the simple ones), so the reserved tokens, being sums and products
of independent draws, have exact moments too (cumulants of independent parts add). Two things have no closed
form for arbitrary specs and are estimated from fixed-seed draws, with their standard error carried into the plan:

- budget truncation: completion = min(reasoning + output, budget), which sets the decode time, so the
  mean latency (unless the route gives `latency.total_s`);
- the number of tool round trips (`$web_search`, function tools) when it is neither fixed nor Poisson (the
  exact path needs its probability mass function), a route mixing searches and function rounds, and function
  rounds with thinking on (each tool-call reply's reasoning is cut by the budget); and 1/decode speed when its
  law has no closed-form reciprocal mean.

Token draws are whole numbers (`rint`), the spec moments are of the continuous law: the difference is under
half a token per component (and 1/12 token^2 of variance), far below every limit. The chat template's
system-message markers count only when the drawn system prompt is non-empty; for a random system prompt
that probability comes from the draws (it is 1 for any realistic spec).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kimiplan.model.dists import Empirical, Exponential, Fixed, LogNormal, Mixture, Normal, Poisson, Texts, Uniform
from kimiplan.model.laws import norm_pdf, norm_sf, poisson_pmf, poisson_ppf

SAMPLES = 50_000  # draws per route for the truncated completion (and the fallbacks above)


# ---------------------------------------------------------------- raw moments of one spec


def raw_moments(dist, k: int = 3) -> tuple[float, ...] | None:
    """(E[X], E[X^2], ..., E[X^k]) of a spec, exactly; None when the law has no closed form here."""
    if isinstance(dist, Fixed):
        return tuple(float(dist.value) ** j for j in range(1, k + 1))
    if isinstance(dist, LogNormal):
        return tuple(math.exp(j * dist.mu + (j * dist.sigma) ** 2 / 2) for j in range(1, k + 1))
    if isinstance(dist, Exponential):
        return tuple(math.factorial(j) * dist.mean_**j for j in range(1, k + 1))
    if isinstance(dist, Poisson):
        lam = dist.mean_
        # Touchard polynomials: raw moments of a Poisson law.
        t = (lam, lam + lam**2, lam + 3 * lam**2 + lam**3, lam + 7 * lam**2 + 6 * lam**3 + lam**4)
        return t[:k]
    if isinstance(dist, Uniform):
        a, b = dist.low, dist.high
        if b == a:
            return tuple(a**j for j in range(1, k + 1))
        return tuple((b ** (j + 1) - a ** (j + 1)) / ((j + 1) * (b - a)) for j in range(1, k + 1))
    if isinstance(dist, Normal):
        return _clipped_normal_moments(dist.mean_, dist.sd_, k)
    if isinstance(dist, (Empirical, Texts)):
        arr = np.asarray(dist.samples if isinstance(dist, Empirical) else dist._counts.samples, dtype=float)
        return tuple(float(np.mean(arr**j)) for j in range(1, k + 1))
    if isinstance(dist, Mixture):
        # E[X^j] of a mixture is the weighted sum of its components' E[X^j].
        parts = [raw_moments(c.dist, k) for c in dist.components]
        if any(p is None for p in parts):
            return None
        return tuple(float(sum(w * p[j] for w, p in zip(dist._w, parts))) for j in range(k))
    return None


def _clipped_normal_moments(m: float, s: float, k: int) -> tuple[float, ...]:
    """E[max(X, 0)^j] for X ~ N(m, s^2): binomial expansion of (m + sZ)^j over Z > -m/s, with the partial
    moments E[Z^i; Z > c] = c^(i-1) phi(c) + (i-1) E[Z^(i-2); Z > c]."""
    if s == 0:
        return tuple(max(m, 0.0) ** j for j in range(1, k + 1))
    c = -m / s
    phi, tail = float(norm_pdf(c)), float(norm_sf(c))
    part = [tail, phi]  # E[Z^0; Z>c], E[Z^1; Z>c]
    for i in range(2, k + 1):
        # phi(c) underflows to 0 far from the mean (|c| > 38, e.g. sd 1e-300): the c^(i-1) term is 0 then, and
        # computing c^(i-1) first would overflow.
        part.append((c ** (i - 1) * phi if phi > 0 else 0.0) + (i - 1) * part[i - 2])
    return tuple(sum(math.comb(j, i) * m ** (j - i) * s**i * part[i] for i in range(j + 1)) for j in range(1, k + 1))


# ---------------------------------------------------------------- cumulant arithmetic


def _cumulants(m: tuple) -> np.ndarray:
    m1, m2, m3 = m
    return np.array([m1, m2 - m1 * m1, m3 - 3 * m1 * m2 + 2 * m1**3])


def _raw(k: np.ndarray) -> tuple[float, float, float]:
    k1, k2, k3 = (float(x) for x in k)
    return (k1, k2 + k1 * k1, k3 + 3 * k1 * k2 + k1**3)


def _product(a: tuple, b: tuple) -> tuple:
    """Raw moments of XY for independent X, Y."""
    return tuple(x * y for x, y in zip(a, b))


def _shift(m: tuple, c: float) -> tuple:
    """Raw moments of X + c."""
    m1, m2, m3 = m
    return (m1 + c, m2 + 2 * c * m1 + c * c, m3 + 3 * c * m2 + 3 * c * c * m1 + c**3)


@dataclass(frozen=True)
class Moments:
    """Raw moments of one quantity and how they were obtained ("exact" or "sampled", with a standard error
    of the mean when sampled)."""

    m1: float
    m2: float
    m3: float
    method: str = "exact"
    se: float = 0.0


# ---------------------------------------------------------------- per route


def _sample_moments(x: np.ndarray, method: str = "sampled") -> Moments:
    x = np.asarray(x, dtype=np.float64)
    return Moments(
        float(x.mean()), float(np.mean(x**2)), float(np.mean(x**3)), method, float(x.std(ddof=1) / math.sqrt(x.size))
    )


def count_pmf(dist) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, probabilities) of a count spec (searches per request) when it has a closed-form law."""
    if isinstance(dist, Fixed):
        return np.array([float(round(max(dist.value, 0.0)))]), np.array([1.0])
    if isinstance(dist, Poisson):
        hi = int(poisson_ppf(1 - 1e-15, dist.mean_)) + 2 if dist.mean_ > 0 else 0
        k = np.arange(hi + 1)
        return k.astype(float), poisson_pmf(k, dist.mean_)
    if isinstance(dist, Empirical):  # a measured law of counts (calibration): its values as drawn, whole
        k, c = np.unique(np.rint(np.maximum(np.asarray(dist.samples, dtype=float), 0.0)), return_counts=True)
        return k, c / c.sum()
    return None


def rounds_pmf(route) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, probabilities) of a request's tool rounds (searches plus function rounds, independent): the
    API calls beyond the first; None when either count has no closed-form law."""
    a, b = count_pmf(route.tools.web_search_calls), count_pmf(route.tools.function_calls)
    if a is None or b is None:
        return None
    if b[0].size == 1 and b[0][0] == 0:
        return a
    if a[0].size == 1 and a[0][0] == 0:
        return b
    # Both counts are whole numbers from 0: the law of the sum is the convolution of the two mass functions.
    pa = np.zeros(int(a[0].max()) + 1)
    pa[a[0].astype(int)] = a[1]
    pb = np.zeros(int(b[0].max()) + 1)
    pb[b[0].astype(int)] = b[1]
    p = np.convolve(pa, pb)
    k = np.flatnonzero(p > 0)
    return k.astype(float), p[k]


def first_call_input(route, overhead_system: int, overhead_turn: int, overhead_fixed: int, p_system: float):
    """Raw moments of the first call's input tokens (None when a part has no closed form)."""
    parts = []
    sys_m = raw_moments(route.system)
    if sys_m is None:
        return None
    parts.append(sys_m)
    turns, tpt = raw_moments(route.history.turns), raw_moments(route.history.tokens_per_turn)
    if turns is None or tpt is None:
        return None
    parts.append(_product(turns, _shift(tpt, overhead_turn)))
    k, chunk = raw_moments(route.rag.top_k), raw_moments(route.rag.chunk_tokens)
    if k is None or chunk is None:
        return None
    parts.append(_product(k, chunk))
    p = route.documents.probability
    if p > 0:
        pages, tpp = raw_moments(route.documents.pages), raw_moments(route.documents.tokens_per_page)
        if pages is None or tpp is None:
            return None
        parts.append(_product((p, p, p), _product(pages, tpp)))
    user = raw_moments(route.user)
    if user is None:
        return None
    parts.append(user)
    kappa = sum(_cumulants(m) for m in parts)
    kappa[0] += overhead_fixed + overhead_system * p_system
    return _raw(kappa)


def _overheads(route) -> tuple[int, int, int]:
    """(per system message, per history turn, fixed per request) template tokens, as `draw_route` adds them."""
    from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE as T

    if route.overhead_tokens is not None:
        return 0, 0, route.overhead_tokens + route.server_overhead_tokens
    return (
        T.message_overhead("system"),
        T.message_overhead("user") + T.message_overhead("assistant"),
        T.message_overhead("user") + T.reply_primer + route.server_overhead_tokens,
    )


def reserved_and_calls(route, budget: int, sample: dict) -> tuple[Moments, Moments]:
    """Raw moments of the tokens a request reserves (all its calls) and of its API calls.

    With k searches, call j (j = 0..k) reserves its prompt P_j plus the budget, and P_j = P_(j-1) + D_j with
    D_j = tool-call tokens + result tokens + template markers, all independent: given k, the reserved total
    is (k+1)(P_0 + budget) + sum_j (k-j+1) D_j, whose cumulants follow from those of P_0 and D; the law of k
    then mixes them. `sample` (draws of the route) stands in where a part has no closed form."""
    from kimiplan.tokens.tokenizer import DEFAULT_TEMPLATE as T

    o_sys, o_turn, o_fix = _overheads(route)
    p_system = (
        float(np.mean(sample["system"] > 0))
        if not isinstance(route.system, Fixed)
        else float(round(route.system.value) > 0)
    )
    p0 = first_call_input(route, o_sys, o_turn, o_fix, p_system)
    t = route.tools
    pmf = count_pmf(t.web_search_calls)
    fn_pmf = count_pmf(t.function_calls)
    no_fn = fn_pmf is not None and fn_pmf[0].size == 1 and fn_pmf[0][0] == 0
    no_search = pmf is not None and pmf[0].size == 1 and pmf[0][0] == 0
    if p0 is None or pmf is None or fn_pmf is None:
        return _sample_moments(sample["reserved_tokens"], "sampled"), _sample_moments(sample["api_calls"], "sampled")
    if no_search and no_fn:
        return Moments(*_shift(p0, budget)), Moments(1.0, 1.0, 1.0)
    markers = 0 if route.overhead_tokens is not None else T.message_overhead("assistant") + T.message_overhead("tool")
    if no_fn:
        call, res = raw_moments(t.tool_call_tokens), raw_moments(t.result_tokens)
    elif no_search and not route.thinking:
        # Function rounds alone, without reasoning: the same sum with the function laws.
        pmf = fn_pmf
        call, res = raw_moments(t.function_call_tokens), raw_moments(t.function_result_tokens)
    else:  # two kinds of rounds, or reasoning cut by the budget in every round: no closed form here
        call = res = None
    if call is None or res is None:
        return _sample_moments(sample["reserved_tokens"], "sampled"), _sample_moments(sample["api_calls"], "sampled")
    kp = _cumulants(_shift(p0, budget))
    kd = sum(_cumulants(m) for m in (call, res))
    kd[0] += markers
    powers = np.arange(1, 4)
    r = np.zeros(3)
    c = np.zeros(3)
    for k, w in zip(pmf[0].astype(int), pmf[1]):
        weights = (k - np.arange(1, k + 1) + 1).astype(float)  # (k - j + 1) for j = 1..k
        kappa = (k + 1.0) ** powers * kp + (weights[:, None] ** powers).sum(axis=0) * kd if k else kp.copy()
        r += w * np.array(_raw(kappa))
        c += w * (k + 1.0) ** powers
    total = pmf[1].sum()
    return Moments(*(r / total)), Moments(*(c / total))


def _recip_mean(dist) -> float | None:
    """E[1 / max(X, 1e-3)] (decode speed -> seconds per token) when it has a closed form."""
    if isinstance(dist, Fixed):
        return 1.0 / max(dist.value, 1e-3)
    if isinstance(dist, LogNormal):
        return math.exp(-dist.mu + dist.sigma**2 / 2)  # the clip at 1e-3 tokens/s is far below any real speed
    if isinstance(dist, Uniform) and dist.low >= 1e-3:
        return 1.0 / dist.low if dist.high == dist.low else math.log(dist.high / dist.low) / (dist.high - dist.low)
    if isinstance(dist, (Empirical, Texts)):
        arr = np.asarray(dist.samples if isinstance(dist, Empirical) else dist._counts.samples, dtype=float)
        return float(np.mean(1.0 / np.maximum(arr, 1e-3)))
    if isinstance(dist, Mixture):
        parts = [_recip_mean(c.dist) for c in dist.components]
        return None if any(p is None for p in parts) else float(sum(w * p for w, p in zip(dist._w, parts)))
    return None


def latency_mean(route, budget: int, rng: np.random.Generator, n: int = SAMPLES) -> tuple[float, float, str]:
    """(mean latency in s, its standard error, method) of one request including its tool round trips.

    latency = TTFT (1 + k + m) + (completion + tool-call tokens of k searches and of m function rounds, with
    their reasoning) / decode speed, or `total_s` when given (the client's own tool time is not modelled).
    Only the truncated completion (and a reciprocal speed without closed form) is sampled."""
    searches = route.tools.web_search_calls
    k_mean = searches.mean() if count_pmf(searches) is not None else None
    functions = route.tools.function_calls
    f_mean = functions.mean() if count_pmf(functions) is not None else None
    if route.latency.total_s is not None:
        return float(route.latency.total_s.mean()), 0.0, "exact"
    lat = route.latency
    ttft = lat.ttft_s.mean()
    recip = _recip_mean(lat.decode_tps)
    method = "exact"
    se_recip = 0.0
    if recip is None:
        x = 1.0 / np.maximum(lat.decode_tps.sample(rng, n), 1e-3)
        recip, se_recip, method = float(x.mean()), float(x.std(ddof=1) / math.sqrt(n)), "sampled"
    want = _rounded(route.output, rng, n)
    if route.thinking:
        want = want + _rounded(route.reasoning, rng, n)
    if (
        np.all(want <= budget)
        and isinstance(route.output, Fixed)
        and (not route.thinking or isinstance(route.reasoning, Fixed))
    ):
        comp, se_comp = float(want[0]) if want.size else 0.0, 0.0
    else:
        c = np.minimum(want, budget)
        comp, se_comp = float(c.mean()), float(c.std(ddof=1) / math.sqrt(n))
        method = "sampled"  # truncation at the budget
    if k_mean is None:
        k = _rounded(searches, rng, n)
        k_mean = float(k.mean())
        method = "sampled"
    call = route.tools.tool_call_tokens.mean()
    f_comp, se_f = 0.0, 0.0
    if f_mean is None:
        f_mean = float(_rounded(functions, rng, n).mean())
        method = "sampled"
    if f_mean > 0:
        # A function round decodes its tool-call message, after its reasoning with thinking on; the two share the
        # budget (reasoning + call <= budget).
        fc = _rounded(route.tools.function_call_tokens, rng, n)
        if route.thinking:
            fc = np.minimum(fc + _rounded(route.reasoning, rng, n), budget)
        if isinstance(route.tools.function_call_tokens, Fixed) and not route.thinking:
            f_comp = float(fc[0]) if fc.size else 0.0
        else:
            f_comp, se_f, method = float(fc.mean()), float(fc.std(ddof=1) / math.sqrt(n)), "sampled"
    decoded = comp + k_mean * call + f_mean * f_comp
    mean = ttft * (1 + k_mean + f_mean) + decoded * recip
    se = math.hypot(math.hypot(se_comp, f_mean * se_f) * recip, decoded * se_recip)
    return float(mean), float(se), method


def _rounded(dist, rng, n):
    if isinstance(dist, Fixed):
        return np.full(n, float(round(max(dist.value, 0.0))))
    return np.rint(np.maximum(dist.sample(rng, n), 0.0))
