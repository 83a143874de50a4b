"""kimiplan.model.laws against scipy.stats, bit for bit: each law is scipy.stats' own computation on
scipy.special (kept out of scipy.stats for start-up time), so over a grid of values, parameters and edge cases
(q = 0 and 1, values off the support, infinities, nan, bad parameters) every result, its type and its shape
must be identical, nan where scipy.stats gives nan."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from kimiplan.model import laws

MU = [0.0, 1e-300, 1e-12, 0.3, 1.0, 2.5, 17.0, 119.4, 1e3, 3.3e4, 1e5 + 0.5, 2.4e6, -1.0, np.nan]
K_INT = [-3, -1, 0, 1, 2, 5, 17, 120, 999, 33_000, 100_001, 2_400_000]
K_FLOAT = [-np.inf, -1.5, -0.0, 0.0, 0.5, 1.0, 2.999, 7.0, 1e6, np.inf, np.nan]
Q = [0.0, 1e-15, 1e-6, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-12, 1 - 1e-15, 1.0, -0.1, 1.1, np.nan]
SHAPE = [1e-18, 1e-6, 0.04, 0.5, 1.0, 3.7, 81.0, 4e4, 4e18, 0.0, -2.0]
SCALE = [1e-9, 0.2, 1.0, 3_100.0, 2.5e7, 0.0, -1.0]
X = [-np.inf, -40.0, -8.5, -1.0, -0.0, 0.0, 1e-300, 0.3, 1.0, 4.75, 38.6, 1e4, 1e300, np.inf, np.nan]


def _same(got, want):
    assert type(got) is type(want), (type(got), type(want))
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    # Bit for bit: equal bytes, so 0.0 and -0.0 differ and nan matches only nan.
    assert got.tobytes() == want.tobytes(), (got, want)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


@pytest.mark.parametrize("mu", MU)
def test_poisson_pointwise(mu):
    for k in K_INT + K_FLOAT:
        for mine, ref in [
            (laws.poisson_pmf, stats.poisson.pmf),
            (laws.poisson_logpmf, stats.poisson.logpmf),
            (laws.poisson_logcdf, stats.poisson.logcdf),
            (laws.poisson_sf, stats.poisson.sf),
        ]:
            _same(_quiet(mine, k, mu), _quiet(ref, k, mu))
    for q in Q:
        _same(_quiet(laws.poisson_ppf, q, mu), _quiet(stats.poisson.ppf, q, mu))


@pytest.mark.parametrize("mu", [0.0, 0.7, 40.0, 2.4e4, 1e-300])
def test_poisson_arrays(mu):
    k = np.arange(-2, 400)
    for mine, ref in [(laws.poisson_pmf, stats.poisson.pmf), (laws.poisson_sf, stats.poisson.sf)]:
        _same(_quiet(mine, k, mu), _quiet(ref, k, mu))
        _same(_quiet(mine, k.astype(float) / 3, mu), _quiet(ref, k.astype(float) / 3, mu))
    q = np.array(Q)
    _same(_quiet(laws.poisson_ppf, q, mu), _quiet(stats.poisson.ppf, q, mu))
    mus = np.array(MU)
    _same(_quiet(laws.poisson_ppf, 0.999, mus), _quiet(stats.poisson.ppf, 0.999, mus))


@pytest.mark.parametrize("a", SHAPE)
def test_gamma(a):
    for scale in SCALE:
        for x in X + [a * scale, (a + 1) * scale * 1.7]:
            _same(_quiet(laws.gamma_sf, x, a, scale=scale), _quiet(stats.gamma.sf, x, a, scale=scale))
        for q in Q:
            _same(_quiet(laws.gamma_ppf, q, a, scale=scale), _quiet(stats.gamma.ppf, q, a, scale=scale))
    xs = np.array(X)
    _same(_quiet(laws.gamma_sf, xs, a, scale=3.0), _quiet(stats.gamma.sf, xs, a, scale=3.0))
    qs = np.array(Q)
    _same(_quiet(laws.gamma_ppf, qs, a, scale=3.0), _quiet(stats.gamma.ppf, qs, a, scale=3.0))


def test_normal():
    for x in X + [3.1, -2.2, 1e-8]:
        _same(_quiet(laws.norm_pdf, x), _quiet(stats.norm.pdf, x))
        _same(_quiet(laws.norm_sf, x), _quiet(stats.norm.sf, x))
        _same(_quiet(laws.norm_cdf, x), _quiet(stats.norm.cdf, x))
        for loc, scale in [(0.0, 1.0), (300.0, 40.0), (5.0, 0.0), (-2.0, 1e-9), (1e6, -1.0), (np.nan, 1.0)]:
            _same(_quiet(laws.norm_cdf, x, loc, scale), _quiet(stats.norm.cdf, x, loc, scale))
    for q in Q:
        _same(_quiet(laws.norm_ppf, q), _quiet(stats.norm.ppf, q))
        for loc, scale in [(300.0, 40.0), (5.0, 0.0), (0.0, 1e-9), (1e6, -1.0), (np.nan, 1.0)]:
            _same(_quiet(laws.norm_ppf, q, loc, scale), _quiet(stats.norm.ppf, q, loc, scale))
    xs, qs = np.array(X), np.array(Q)
    for mine, ref in [(laws.norm_pdf, stats.norm.pdf), (laws.norm_sf, stats.norm.sf), (laws.norm_cdf, stats.norm.cdf)]:
        _same(_quiet(mine, xs), _quiet(ref, xs))
        _same(_quiet(mine, xs.reshape(3, 5)), _quiet(ref, xs.reshape(3, 5)))
    _same(_quiet(laws.norm_cdf, xs, 2.0, 3.0), _quiet(stats.norm.cdf, xs, 2.0, 3.0))
    _same(_quiet(laws.norm_ppf, qs), _quiet(stats.norm.ppf, qs))
    _same(_quiet(laws.norm_ppf, qs, 10.0, 2.0), _quiet(stats.norm.ppf, qs, 10.0, 2.0))
    rng = np.random.default_rng(7)
    x = rng.normal(0, 6, 5000)
    _same(laws.norm_pdf(x), stats.norm.pdf(x))
    _same(laws.norm_sf(x), stats.norm.sf(x))
    _same(laws.norm_cdf(x, 1.0, 2.0), stats.norm.cdf(x, 1.0, 2.0))
    u = rng.uniform(0, 1, 5000)
    _same(laws.norm_ppf(u), stats.norm.ppf(u))
