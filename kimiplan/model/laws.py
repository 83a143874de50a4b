"""The Poisson, gamma and normal laws the planner evaluates, on `scipy.special` exactly as `scipy.stats`
computes them (the same special function on the same arguments, the same edge cases: q = 0 or 1, a value off
the support, a bad parameter gives nan), so every value is the same to the last bit, without importing
scipy.stats: that takes about a second, which `kimiplan plan` would pay on every run.
`tests/test_laws.py` holds each function to its scipy.stats counterpart over a grid, bit for bit.

Scalars in give numpy scalars out and arrays in give arrays out, as scipy.stats does."""

from __future__ import annotations

import numpy as np
from scipy import special

_NORM_PDF_C = np.sqrt(2 * np.pi)


def _eval(out: np.ndarray, cond: np.ndarray, fn, *args) -> None:
    """out[cond] = fn(args[cond]): the special function only where the arguments are valid (as scipy.stats'
    argsreduce), on contiguous 1-d arrays."""
    if np.any(cond):
        *parts, c = np.broadcast_arrays(*(np.atleast_1d(a) for a in args), np.atleast_1d(cond))
        np.place(out, cond, fn(*(p[c] for p in parts)))


def _done(out: np.ndarray):
    return out[()] if out.ndim == 0 else out


# ---------------------------------------------------------------- Poisson (support 0, 1, 2, ...; mu >= 0)


def poisson_pmf(k, mu):
    k, mu = np.asarray(k), np.asarray(mu)
    cond0 = mu >= 0
    cond = cond0 & (k >= 0) & (k <= np.inf) & (np.floor(k) == k)
    out = np.zeros(np.shape(cond), "d")
    np.place(out, (1 - cond0) + np.isnan(k), np.nan)
    _eval(out, cond, lambda k, mu: np.clip(np.exp(special.xlogy(k, mu) - special.gammaln(k + 1) - mu), 0, 1), k, mu)
    return _done(out)


def poisson_logpmf(k, mu):
    k, mu = np.asarray(k), np.asarray(mu)
    cond0 = mu >= 0
    cond = cond0 & (k >= 0) & (k <= np.inf) & (np.floor(k) == k)
    out = np.full(np.shape(cond), -np.inf)
    np.place(out, (1 - cond0) + np.isnan(k), np.nan)
    _eval(out, cond, lambda k, mu: special.xlogy(k, mu) - special.gammaln(k + 1) - mu, k, mu)
    return _done(out)


def poisson_logcdf(k, mu):
    k, mu = np.asarray(k), np.asarray(mu)
    cond0 = mu >= 0
    cond = cond0 & (k >= 0) & (k < np.inf)
    out = np.full(np.shape(cond), -np.inf)
    np.place(out, (1 - cond0) + np.isnan(k), np.nan)
    np.place(out, (k >= np.inf) * (cond0 == cond0), 0.0)

    def f(k, mu):
        with np.errstate(divide="ignore"):
            return np.log(special.pdtr(np.floor(k), mu))

    _eval(out, cond, f, k, mu)
    return _done(out)


def poisson_sf(k, mu):
    """P(N > k)."""
    k, mu = np.asarray(k), np.asarray(mu)
    cond0 = mu >= 0
    cond = cond0 & (k >= 0) & (k < np.inf) & np.isfinite(k)
    out = np.zeros(np.shape(cond), "d")
    np.place(out, (1 - cond0) + np.isnan(k), np.nan)
    np.place(out, ((k < 0) | np.isneginf(k)) & cond0, 1.0)
    _eval(out, cond, lambda k, mu: np.clip(special.pdtrc(np.floor(k), mu), 0, 1), k, mu)
    return _done(out)


def poisson_ppf(q, mu):
    """The smallest k with P(N <= k) >= q."""
    q, mu = np.asarray(q), np.asarray(mu)
    cond0 = mu >= 0
    cond = cond0 & (q > 0) & (q < 1)
    out = np.full(np.shape(cond), np.nan)
    np.place(out, (q == 0) & cond0, -1.0)
    np.place(out, (q == 1) & cond0, np.inf)

    def f(q, mu):
        vals = np.ceil(special.pdtrik(q, mu))
        vals1 = np.maximum(vals - 1, 0)
        return np.where(special.pdtr(vals1, mu) >= q, vals1, vals) + 0  # + loc: -0.0 becomes 0.0

    _eval(out, cond, f, q, mu)
    return _done(out)


# ---------------------------------------------------------------- gamma (shape a > 0, scale > 0)


def gamma_sf(x, a, scale=1.0):
    a, scale = np.asarray(a), np.asarray(scale)
    x = np.asarray((np.asarray(x) - 0) / scale, dtype=np.float64)
    cond0 = (a > 0) & (scale > 0)
    cond = cond0 & (0 < x) & (x < np.inf) & (scale > 0)
    out = np.zeros(np.shape(cond), np.float64)
    np.place(out, (1 - cond0) + np.isnan(x), np.nan)
    np.place(out, cond0 & (x <= 0), 1.0)
    _eval(out, cond, special.gammaincc, a, x)
    return _done(out)


def gamma_ppf(q, a, scale=1.0):
    q, a, scale = np.asarray(q), np.asarray(a), np.asarray(scale)
    cond0 = (a > 0) & (scale > 0)
    cond = cond0 & (0 < q) & (q < 1)
    out = np.full(np.shape(cond), np.nan)
    np.place(out, cond0 & (q == 0), np.broadcast_to(0.0 * scale + 0, np.shape(cond))[cond0 & (q == 0)])
    np.place(out, cond0 & (q == 1), np.inf)
    _eval(out, cond, lambda q, a, s: special.gammaincinv(a, q) * s + 0, q, a, scale)
    return _done(out)


# ---------------------------------------------------------------- normal


def norm_pdf(x):
    x = np.asarray(np.asarray(x) - 0, dtype=np.float64)
    out = np.zeros(np.shape(x), np.float64)
    np.putmask(out, np.isnan(x), np.nan)
    _eval(out, (-np.inf <= x) & (x <= np.inf), lambda x: np.exp(-(x**2) / 2.0) / _NORM_PDF_C / 1.0, x)
    return _done(out)


def norm_sf(x):
    x = np.asarray(np.asarray(x) - 0, dtype=np.float64)
    out = np.zeros(np.shape(x), np.float64)
    np.place(out, np.isnan(x), np.nan)
    np.place(out, x <= -np.inf, 1.0)
    _eval(out, (-np.inf < x) & (x < np.inf), lambda x: special.ndtr(-x), x)
    return _done(out)


def norm_cdf(x, loc=0.0, scale=1.0):
    loc, scale = np.asarray(loc), np.asarray(scale)
    x = np.asarray((np.asarray(x) - loc) / scale, dtype=np.float64)
    cond0 = scale > 0
    cond = cond0 & (-np.inf < x) & (x < np.inf)
    out = np.zeros(np.shape(cond), np.float64)
    np.place(out, (1 - cond0) + np.isnan(x), np.nan)
    np.place(out, (x >= np.inf) & cond0, 1.0)
    _eval(out, cond, special.ndtr, x)
    return _done(out)


def norm_ppf(q, loc=0.0, scale=1.0):
    q, loc, scale = np.asarray(q), np.asarray(loc), np.asarray(scale)
    cond0 = (scale > 0) & (loc == loc)
    cond = cond0 & (0 < q) & (q < 1)
    out = np.full(np.shape(cond), np.nan)
    lo = np.broadcast_to(-np.inf * scale + loc, np.shape(cond))
    hi = np.broadcast_to(np.inf * scale + loc, np.shape(cond))
    np.place(out, cond0 & (q == 0), lo[cond0 & (q == 0)])
    np.place(out, cond0 & (q == 1), hi[cond0 & (q == 1)])
    _eval(out, cond, lambda q, s, m: special.ndtri(q) * s + m, q, scale, loc)
    return _done(out)
