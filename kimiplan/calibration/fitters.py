"""Fit route token/latency models to sampled calls, and write a versioned calibration file.

Fitters follow lifelines' style: `fit(...)` returns self and fitted attributes end in `_`. Every estimate has
a 95 % confidence interval from the sample size. Output lengths of truncated calls (`finish_reason=length`)
are right-censored, and the lognormal fit treats them so (maximum likelihood with censoring).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats

from kimiplan.calibration.precision import (  # call_costs: its home is precision; imported from here too
    call_costs,  # noqa: F401
    calls_for_target,
    mean_precision,
)
from kimiplan.catalog.providers import K26_DEFAULT_MAX_COMPLETION, truncate_completion
from kimiplan.errors import ConfigError, ConvergenceError
from kimiplan.model.calibration import (  # noqa: F401  (the file format; re-exported for older imports)
    SCHEMA_VERSION,
    Calibration,
    CappedMean,
    ComponentFit,
    EmpiricalFit,
    Estimate,
    FixedFit,
    Law,
    LawTest,
    LogNormalFit,
    MixtureFit,
    Precision,
    RouteCalibration,
    load_calibration,
)
from kimiplan.model.dists import MAX_SIGMA, Z95


# --- loading samples ---------------------------------------------------------------------------------------
def samples_frame(*sources: str | Path | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Successful samples from sampler stores (paths) and/or record lists, one row per call id (last wins)."""
    rows: list[Mapping[str, Any]] = []
    for src in sources:
        if isinstance(src, (str, Path)):
            p = Path(src)
            if not p.exists():
                raise ConfigError(f"samples file {str(p)!r} does not exist")
            if p.suffix.lower() == ".csv" or not _looks_like_store(p):
                from kimiplan.calibration.sampler import read_call_log

                rows += read_call_log(p)
                continue
            for line in p.read_bytes().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line
        else:
            rows += list(src)
    df = pd.DataFrame([r for r in rows if r.get("status", "ok") == "ok"])
    if df.empty:
        raise ConfigError("no successful samples to calibrate from")
    if "id" in df:
        df = df.drop_duplicates("id", keep="last")
    for col, default in (
        ("cached_tokens", 0),
        ("continuations", 0),
        ("reasoning_tokens", np.nan),
        ("output_tokens", np.nan),
        ("local_prompt_tokens", np.nan),
        ("ttft_s", np.nan),
        ("total_s", np.nan),
        ("max_completion_tokens", np.nan),
        ("first_finish_reason", None),
        ("provenance", "unknown"),
        ("time", None),
        ("model", None),
        ("thinking", np.nan),
        ("prompt_source", None),
    ):
        if col not in df:
            df[col] = default
    df["first_finish_reason"] = df["first_finish_reason"].fillna(df["finish_reason"])
    return df.reset_index(drop=True)


def _looks_like_store(p: Path) -> bool:
    with open(p, "rb") as fh:
        head = fh.readline()
    try:
        return "run_id" in json.loads(head)
    except (json.JSONDecodeError, TypeError):
        return False


# --- fitters -----------------------------------------------------------------------------------------------
class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its tolerance; the estimate is usable but may be off."""


class DegenerateSampleError(ConfigError):
    """Every value is the same: no law with spread can be fitted; `value` is the constant (a Fixed law)."""

    def __init__(self, value: float, n: int, what: str = "values"):
        self.value, self.n = value, n
        super().__init__(f"all {n:,} {what} equal {value:g}: no spread to fit a lognormal to (the law is Fixed)")


class BaseFitter:
    """lifelines-style fitter: options in the constructor, `fit()` returns self, fitted values end in `_`,
    `summary` is a table of the estimates with their (1 - alpha) confidence intervals."""

    def __init__(self, alpha: float = 0.05):
        if not (isinstance(alpha, float | int) and 0 < alpha < 1):
            raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = float(alpha)

    @property
    def _z(self) -> float:
        return float(stats.norm.ppf(1 - self.alpha / 2))

    def _t(self, df: int) -> float:
        return float(stats.t.ppf(1 - self.alpha / 2, df))

    def _estimates(self) -> list[tuple[str, float, tuple[float, float]]]:
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        return hasattr(self, "n_")

    @property
    def summary(self) -> pd.DataFrame:
        if not self.fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted yet: call fit() first")
        level = f"{1 - self.alpha:.0%}"
        return pd.DataFrame(
            [
                {"estimate": name, "value": v, f"lower {level}": lo, f"upper {level}": hi}
                for name, v, (lo, hi) in self._estimates()
            ]
        ).set_index("estimate")

    def __repr__(self) -> str:
        name = type(self).__name__
        if not self.fitted:
            return f"<kimiplan.{name}: not fitted>"
        parts = ", ".join(f"{k}={v:.4g}" for k, v, _ in self._estimates())
        return f"<kimiplan.{name}: fitted with {self.n_} observations, {parts}>"


class LogNormalFitter(BaseFitter):
    """Lognormal by maximum likelihood with right-censoring; median/p95 with delta-method CIs."""

    def fit(self, values, censored=None, censor_at=None) -> LogNormalFitter:
        """`censor_at`: each call's cut-off (what its budget left for this component), for the goodness-of-fit
        test; default: the largest censored value for every call (one budget), or none."""
        x = np.asarray(values, dtype=float)
        c = np.zeros(len(x), bool) if censored is None else np.asarray(censored, bool)
        if censor_at is None:
            cut = np.full(len(x), x[c].max() if c.any() else np.inf)
        else:
            cut = np.asarray(censor_at, dtype=float)
        keep = x > 0  # log(0) is undefined; a censored 0 carries no information anyway
        x, c, cut = x[keep], c[keep], cut[keep]
        if (~c).sum() < 2:
            raise ConfigError(f"a lognormal fit needs at least 2 uncensored positive values, got {(~c).sum()}")
        lx = np.log(x)
        obs, cen = lx[~c], lx[c]
        if obs.max() - obs.min() <= 1e-9 and not (cen > obs.max() + 1e-9).any():
            # No spread and nothing cut above it: the law is the constant itself (Fixed), not a lognormal whose
            # sigma the optimizer would drive to zero.
            raise DegenerateSampleError(float(x[~c].mean()), int((~c).sum()))

        def nll(theta):
            mu, log_s = theta
            s = math.exp(log_s)
            ll = stats.norm.logpdf(obs, mu, s).sum() - obs.sum()
            if len(cen):
                ll += stats.norm.logsf(cen, mu, s).sum()
            return -ll

        start = np.array([obs.mean(), math.log(max(obs.std(ddof=1), 1e-3))])
        res = optimize.minimize(
            nll, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000}
        )
        if not np.all(np.isfinite(res.x)):
            raise ConvergenceError(f"lognormal fit did not converge: {res.message} (start {start.tolist()})")
        if not res.success:
            warnings.warn(f"lognormal fit: {res.message}", ConvergenceWarning, stacklevel=2)
        self.converged_ = bool(res.success)
        try:
            mu, log_s = res.x
            sigma = math.exp(log_s)
            # The curvature in (mu, log sigma), where every step stays a valid sigma (a step in sigma itself can
            # cross zero when sigma is tiny), then the delta method back to sigma.
            cov = _inverse_hessian(nll, np.array([mu, log_s]))
            var_mu, var_s, cov_ms = cov[0, 0], sigma**2 * cov[1, 1], sigma * cov[0, 1]
            self.n_, self.n_censored_ = int(len(x)), int(c.sum())
            self.mu_, self.sigma_ = float(mu), float(sigma)
            self.median_ = math.exp(mu)
            self.p95_ = math.exp(mu + Z95 * sigma)
            se_mu = math.sqrt(max(var_mu, 0.0))
            se_q = math.sqrt(max(var_mu + Z95**2 * var_s + 2 * Z95 * cov_ms, 0.0))
            z = self._z
            self.median_ci_ = (math.exp(mu - z * se_mu), math.exp(mu + z * se_mu))
            self.p95_ci_ = (math.exp(mu + Z95 * sigma - z * se_q), math.exp(mu + Z95 * sigma + z * se_q))
            self.mean_ = math.exp(mu + sigma**2 / 2)
        except OverflowError:
            # a spread of log values so wide that exp() leaves floating point: no usable lognormal
            raise ConvergenceError(
                f"lognormal fit overflowed (log sigma {res.x[1]:.3g}): the values span too wide a range"
            ) from None
        # Goodness of fit that holds with the censoring (see _sub_ks).
        self.ks_stat_, self.ks_pvalue_ = _sub_ks(x, c, cut, self.cdf)
        self._obs = np.sort(np.exp(obs))
        return self

    def _estimates(self):
        return [("median", self.median_, self.median_ci_), ("p95", self.p95_, self.p95_ci_)]

    def cdf(self, t):
        return stats.norm.cdf((np.log(np.maximum(np.asarray(t, float), 1e-300)) - self.mu_) / self.sigma_)

    def capped_mean(self, b: float) -> float:
        return _lognormal_capped_mean(self.mu_, self.sigma_, b)

    def to_dist(self):
        from kimiplan.model.dists import LogNormal

        return LogNormal(median=self.median_, p95=self.p95_)

    def qq_plot(self, title: str = "QQ plot"):
        import plotly.graph_objects as go

        n = len(self._obs)
        q = (np.arange(1, n + 1) - 0.5) / n
        theo = np.exp(self.mu_ + self.sigma_ * stats.norm.ppf(q))
        fig = go.Figure(
            [
                go.Scatter(x=theo, y=self._obs, mode="markers", name="samples"),
                go.Scatter(x=[theo.min(), theo.max()], y=[theo.min(), theo.max()], mode="lines", name="y = x"),
            ]
        )
        fig.update_layout(
            title=title, xaxis_title="fitted lognormal quantile (tokens)", yaxis_title="observed (tokens)"
        )
        return fig


def _inverse_hessian(f, x, rel=1e-4) -> np.ndarray:
    """Observed-information covariance by central finite differences."""
    k = len(x)
    h = np.maximum(np.abs(x) * rel, 1e-6)
    H = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.full((k, k), np.nan)


class EmpiricalFitter(BaseFitter):
    """Sample quantiles with distribution-free (order statistic) CIs, and the mean with a t interval."""

    QUANTILES = (0.5, 0.9, 0.95, 0.99)

    def fit(self, values) -> EmpiricalFitter:
        x = np.sort(np.asarray(values, dtype=float))
        n = len(x)
        if n == 0:
            raise ConfigError("an empirical fit needs at least one value")
        self.n_ = n
        self.samples_ = x
        self.mean_ = float(x.mean())
        se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        t = self._t(n - 1) if n > 1 else float("nan")
        self.mean_ci_ = (self.mean_ - t * se, self.mean_ + t * se)
        self.quantiles_, self.quantile_ci_ = {}, {}
        for q in self.QUANTILES:
            self.quantiles_[q] = float(np.quantile(x, q))
            lo = int(stats.binom.ppf(self.alpha / 2, n, q))
            hi = int(stats.binom.ppf(1 - self.alpha / 2, n, q))
            self.quantile_ci_[q] = (float(x[max(lo - 1, 0)]), float(x[min(hi, n - 1)]))
        return self

    def to_dist(self):
        from kimiplan.model.dists import Empirical

        return Empirical(samples=tuple(float(v) for v in self.samples_))

    def _estimates(self):
        return [("mean", self.mean_, self.mean_ci_)] + [
            (f"p{q * 100:g}", self.quantiles_[q], self.quantile_ci_[q]) for q in self.QUANTILES
        ]


class ProportionFitter(BaseFitter):
    """A rate with a Wilson score interval."""

    def fit(self, successes) -> ProportionFitter:
        s = np.asarray(successes, bool)
        n, k = len(s), int(s.sum())
        if n == 0:
            raise ConfigError("a proportion needs at least one observation")
        p = k / n
        z = self._z
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n * n)) / denom
        self.n_, self.k_, self.rate_ = n, k, p
        self.ci_ = (max(0.0, centre - half), min(1.0, centre + half))
        return self

    def _estimates(self):
        return [("rate", self.rate_, self.ci_)]


class MeanFitter(BaseFitter):
    """A mean with a t interval (degenerate when every value is equal, e.g. a constant template overhead)."""

    def fit(self, values) -> MeanFitter:
        x = np.asarray(values, dtype=float)
        if len(x) == 0:
            raise ConfigError("a mean needs at least one value")
        self.n_, self.mean_ = len(x), float(x.mean())
        self.sd_ = float(x.std(ddof=1)) if len(x) > 1 else 0.0
        half = self._t(len(x) - 1) * self.sd_ / math.sqrt(len(x)) if len(x) > 1 else float("nan")
        self.ci_ = (self.mean_ - half, self.mean_ + half)
        return self

    def _estimates(self):
        return [("mean", self.mean_, self.ci_)]


class RatioFitter(BaseFitter):
    """sum(num)/sum(den) (e.g. cached share of prompt tokens) with a delta-method interval."""

    def fit(self, num, den) -> RatioFitter:
        a, b = np.asarray(num, float), np.asarray(den, float)
        n = len(a)
        if n == 0 or b.sum() <= 0:
            raise ConfigError("a ratio needs at least one observation with a positive denominator")
        r = a.sum() / b.sum()
        resid = a - r * b
        se = math.sqrt((resid**2).sum() / max(n - 1, 1) / n) / b.mean() if n > 1 else float("nan")
        self.n_, self.ratio_ = n, float(r)
        self.ci_ = (max(0.0, r - self._z * se), min(1.0, r + self._z * se))
        return self

    def _estimates(self):
        return [("ratio", self.ratio_, self.ci_)]


def restricted_mean(values, censored=None, budget: float = math.inf) -> tuple[float, float]:
    """E[min(X, budget)] and its standard error from right-censored values, distribution-free: the area under
    the Kaplan-Meier survival curve up to `budget` (the restricted mean), with its Greenwood-type variance
    (Klein & Moeschberger, eq. 4.5.2). Without censoring below the budget it is the sample mean of min(x, budget)."""
    y = np.asarray(values, dtype=float)
    c = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
    if len(y) == 0:
        raise ConfigError("a restricted mean needs at least one value")
    b = float(budget)
    # What reaches the budget is known to be >= budget: for the capped mean that is as good as observed at it.
    c = c & (y < b)
    y = np.minimum(y, b)
    ev = ~c & (y < b)
    t, d = np.unique(y[ev], return_counts=True)
    if len(t) == 0:
        return b if math.isfinite(b) else float(y.max()), 0.0
    at_risk = len(y) - np.searchsorted(np.sort(y), t, side="left")
    surv = np.cumprod(1.0 - d / at_risk)
    edges = np.concatenate([[0.0], t, [b if math.isfinite(b) else t[-1]]])
    s_before = np.concatenate([[1.0], surv])  # S on [edges[i], edges[i+1])
    area = s_before * np.diff(edges)
    mean = float(area.sum())
    tail = np.cumsum(area[::-1])[::-1][1:]  # A_j: area from t_j to the budget
    ok = at_risk > d
    var = float(np.sum(tail[ok] ** 2 * d[ok] / (at_risk[ok] * (at_risk[ok] - d[ok]))))
    return mean, math.sqrt(var)


def _lognormal_capped_mean(mu: float, sigma: float, b: float) -> float:
    """E[min(X, b)] for X lognormal(mu, sigma), exactly."""
    if not math.isfinite(b):
        return math.exp(mu + sigma**2 / 2)
    if sigma <= 0:
        return min(math.exp(mu), b)
    lb = math.log(b)
    return math.exp(mu + sigma**2 / 2) * stats.norm.cdf((lb - mu - sigma**2) / sigma) + b * stats.norm.sf(
        (lb - mu) / sigma
    )


def _sub_ks(values, censored, censor_at, cdf) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance between the observed and the fitted sub-distribution of uncensored values,
    P(X <= t and not cut) = mean over calls of F(min(t, cut-off)): a goodness-of-fit test that holds
    with right-censoring at known (per-call) points. The p-value is the asymptotic KS one: with fitted
    parameters it is conservative (it rejects less often than stated)."""
    y = np.asarray(values, float)
    c = np.asarray(censored, bool)
    n = len(y)
    cut = np.where(c, y, np.asarray(censor_at, float))
    ev = np.sort(y[~c])
    if len(ev) == 0:
        return 0.0, 1.0
    # G(t) = P(X <= t, X < C) = mean over calls of F(min(t, C_i)): cut-offs above t contribute F(t), the others
    # F(C_i) (every C_i is known: the budget left, or the value itself for a cut call).
    cut_sorted = np.sort(cut)
    fin = np.isfinite(cut_sorted)
    f_cut = np.zeros(len(cut_sorted))
    f_cut[fin] = cdf(cut_sorted[fin])
    below = np.searchsorted(cut_sorted, ev, side="right")
    g = (np.concatenate([[0.0], np.cumsum(f_cut)])[below] + (n - below) * cdf(ev)) / n
    k = np.arange(1, len(ev) + 1) / n
    d = float(max(np.max(np.abs(k - g)), np.max(np.abs(k - 1.0 / n - g))))
    return d, float(stats.kstwo.sf(d, n))


def _mixture_em(obs, cen, th, s_lo, s_hi, max_iter: int = 1000, tol: float = 1e-7):
    """EM for two normals (on log values) with right-censored points: a censored point's responsibilities use
    each component's survival, and its moments the truncated normal's (E[Y | Y > c] = mu + sigma lambda,
    E[Y^2 | Y > c] = mu^2 + sigma^2 + sigma (c + mu) lambda). Returns (w, mu1, s1, mu2, s2), log-likelihood
    (of the log values), converged."""
    from scipy.special import log_ndtr

    w, m1, s1, m2, s2 = th
    n = len(obs) + len(cen)
    prev = -np.inf
    c0 = 0.5 * math.log(2 * math.pi)
    for _ in range(max_iter):
        lw = np.log([max(w, 1e-300), max(1 - w, 1e-300)])
        ms, ss = (m1, m2), (s1, s2)
        lo = np.stack([lw[k] - 0.5 * ((obs - ms[k]) / ss[k]) ** 2 - math.log(ss[k]) - c0 for k in range(2)])
        alpha = np.stack([(cen - ms[k]) / ss[k] for k in range(2)])
        lsurv = log_ndtr(-alpha)
        lc = lw[:, None] + lsurv
        lo_tot, lc_tot = np.logaddexp(lo[0], lo[1]), np.logaddexp(lc[0], lc[1])
        ll = float(lo_tot.sum() + lc_tot.sum())
        if ll - prev < tol * n:
            return (w, m1, s1, m2, s2), ll, True
        prev = ll
        ro, rc = np.exp(lo - lo_tot), np.exp(lc - lc_tot)
        lam = np.exp(-0.5 * alpha**2 - c0 - lsurv)  # phi(alpha) / S(alpha)
        new = []
        for k in range(2):
            ey = ms[k] + ss[k] * lam[k]
            ey2 = ms[k] ** 2 + ss[k] ** 2 + ss[k] * (cen + ms[k]) * lam[k]
            r = ro[k].sum() + rc[k].sum()
            mu = (ro[k] @ obs + rc[k] @ ey) / r
            var = (ro[k] @ (obs - mu) ** 2 + rc[k] @ (ey2 - 2 * mu * ey + mu * mu)) / r
            new.append((r, mu, float(np.clip(math.sqrt(max(var, 0.0)), s_lo, s_hi))))
        w = new[0][0] / n
        (_, m1, s1), (_, m2, s2) = new
        if not 1e-6 < w < 1 - 1e-6:
            break
    return (w, m1, s1, m2, s2), prev, False


class LogNormalMixtureFitter(BaseFitter):
    """Two lognormals mixed (weight w on the first), by maximum likelihood with right-censoring: the law that
    calibration falls back to when one lognormal is rejected (a body of short answers and a long tail)."""

    def fit(self, values, censored=None, starts=(0.5, 0.75, 0.9)) -> LogNormalMixtureFitter:

        x = np.asarray(values, dtype=float)
        c = np.zeros(len(x), bool) if censored is None else np.asarray(censored, bool)
        keep = x > 0
        x, c = x[keep], c[keep]
        if (~c).sum() < 10:
            raise ConfigError(f"a mixture fit needs at least 10 uncensored positive values, got {(~c).sum()}")
        lx = np.log(x)
        obs, cen = lx[~c], lx[c]
        so = np.sort(obs)
        s_lo, s_hi = 0.02, MAX_SIGMA
        best = None
        for q in starts:
            k = min(max(int(len(so) * q), 3), len(so) - 3)
            lo, hi = so[:k], so[k:]
            th = (q, lo.mean(), max(lo.std(), 0.05), hi.mean(), max(hi.std(), 0.05))
            th, ll, ok = _mixture_em(obs, cen, th, s_lo, s_hi)
            if np.all(np.isfinite(th)) and (best is None or ll > best[1]):
                best = (th, ll, ok)
        if best is None:
            raise ConvergenceError("mixture fit did not converge from any start")
        (w, m1, s1, m2, s2), ll, ok = best
        comps = sorted([(w, m1, s1), (1 - w, m2, s2)], key=lambda t: t[1])
        self.converged_ = bool(ok)
        self.n_, self.n_censored_ = int(len(x)), int(c.sum())
        self.weights_ = (comps[0][0], comps[1][0])
        self.mus_ = (comps[0][1], comps[1][1])
        self.sigmas_ = (comps[0][2], comps[1][2])
        self.loglik_ = float(ll)
        return self

    def cdf(self, t):
        t = np.maximum(np.asarray(t, float), 1e-300)
        return sum(w * stats.norm.cdf((np.log(t) - m) / s) for w, m, s in zip(self.weights_, self.mus_, self.sigmas_))

    def capped_mean(self, b: float) -> float:
        return float(
            sum(w * _lognormal_capped_mean(m, s, b) for w, m, s in zip(self.weights_, self.mus_, self.sigmas_))
        )

    def _estimates(self):
        return [
            (f"{k}{i + 1}", float(v), (float("nan"), float("nan")))
            for i in range(2)
            for k, v in (("weight", self.weights_[i]), ("median", math.exp(self.mus_[i])))
        ]

    def to_dist(self):
        from kimiplan.model.dists import LogNormal, Mixture

        return Mixture(
            components=tuple(
                {"weight": w, "dist": LogNormal.from_mu_sigma(m, s)}
                for w, m, s in zip(self.weights_, self.mus_, self.sigmas_)
            )
        )


def _lognormal_fit(f: LogNormalFitter) -> LogNormalFit:
    return LogNormalFit(
        median=f.median_,
        p95=f.p95_,
        median_ci=f.median_ci_,
        p95_ci=f.p95_ci_,
        n=f.n_,
        n_censored=f.n_censored_,
        ks_stat=f.ks_stat_,
        ks_pvalue=f.ks_pvalue_,
    )


def fit_component(
    values,
    censored=None,
    *,
    budget: float | None = None,
    censor_at=None,
    alpha: float = 0.05,
    max_samples: int = 2000,
) -> ComponentFit:
    """Fit one token component (output or reasoning) and choose its law by goodness of fit.

    Candidates in order: one lognormal, two lognormals mixed, the empirical law. A parametric law is accepted
    when its censoring-aware KS test has p >= alpha and its capped mean E[min(X, budget)] lies within the
    sample's own (1 - alpha) interval; the first accepted one is chosen, and every test is kept in the file.
    The empirical law is always acceptable (it is the sample), so a rejected law is never used silently."""
    x = np.asarray(values, dtype=float)
    c = np.zeros(len(x), bool) if censored is None else np.asarray(censored, bool)
    b = float(budget) if budget is not None and budget > 0 else math.inf
    cut = np.asarray(censor_at, float) if censor_at is not None else np.full(len(x), x[c].max() if c.any() else b)
    z = float(stats.norm.ppf(1 - alpha / 2))
    emp = EmpiricalFitter(alpha).fit(x)
    m_np, se_np = restricted_mean(x, c, b)
    tests: list[LawTest] = []

    def judge(law, ks_stat, ks_p, m_law) -> bool:
        zz = abs(m_law - m_np) / se_np if se_np > 0 else (0.0 if math.isclose(m_law, m_np, rel_tol=1e-9) else math.inf)
        why = []
        if ks_p < alpha:
            why.append(f"KS p = {ks_p:.3f} < {alpha:g}")
        if zz > z:
            why.append(f"capped mean {m_law:,.1f} is {zz:.1f} standard errors from the sample's {m_np:,.1f}")
        tests.append(
            LawTest(
                law=law,
                ks_stat=ks_stat,
                ks_pvalue=ks_p,
                capped_mean=m_law,
                capped_mean_z=min(zz, 1e9),
                accepted=not why,
                reason="; ".join(why),
            )
        )
        return not why

    ln = mix = None
    chosen: Law | None = None
    m_chosen = m_np
    try:
        lf = LogNormalFitter(alpha).fit(x, c, censor_at=cut)
        ln = _lognormal_fit(lf)
        if _within_limits(lf.to_dist) and judge("lognormal", lf.ks_stat_, lf.ks_pvalue_, lf.capped_mean(b)):
            chosen, m_chosen = "lognormal", lf.capped_mean(b)
    except (ConfigError, ConvergenceError, ValueError):
        pass
    if chosen is None:
        try:
            mf = LogNormalMixtureFitter(alpha).fit(x, c)
            keep = x > 0
            ks_d, ks_p = _sub_ks(x[keep], c[keep], cut[keep], mf.cdf)
            mix = MixtureFit(
                weights=list(mf.weights_),
                medians=[math.exp(m) for m in mf.mus_],
                p95s=[math.exp(m + Z95 * sg) for m, sg in zip(mf.mus_, mf.sigmas_)],
                n=mf.n_,
                n_censored=mf.n_censored_,
                ks_stat=ks_d,
                ks_pvalue=ks_p,
            )
            if _within_limits(mf.to_dist) and judge("mixture", ks_d, ks_p, mf.capped_mean(b)):
                chosen, m_chosen = "mixture", mf.capped_mean(b)
        except (ConfigError, ConvergenceError, ValueError):
            pass
    reason = ""
    if chosen is None:
        chosen = "empirical"
        m_chosen = float(np.mean(np.minimum(x, b)))
        rejected = "; ".join(f"{t.law} rejected ({t.reason})" for t in tests if not t.accepted)
        reason = rejected or "no parametric law could be fitted"
        tests.append(
            LawTest(
                law="empirical",
                ks_stat=0.0,
                ks_pvalue=1.0,
                capped_mean=m_chosen,
                capped_mean_z=abs(m_chosen - m_np) / se_np if se_np > 0 else 0.0,
                accepted=True,
                reason="the sample itself",
            )
        )
    else:
        reason = "; ".join([f"{t.law} rejected ({t.reason})" for t in tests if not t.accepted] + [f"{chosen} accepted"])
    lo, hi = min(m_chosen, m_np) - z * se_np, max(m_chosen, m_np) + z * se_np
    rng = np.random.default_rng(0)  # thin deterministically if there are too many samples to store
    vals = x if len(x) <= max_samples else rng.choice(x, max_samples, replace=False)
    return ComponentFit(
        lognormal=ln,
        mixture=mix,
        law=chosen,
        law_reason=reason,
        tests=tests,
        capped_mean=CappedMean(
            value=float(m_chosen),
            ci=(max(0.0, float(lo)), float(hi)),
            confidence=1 - alpha,
            budget=b if math.isfinite(b) else None,
            sample_value=float(m_np),
            sample_se=float(se_np),
            n=int(len(x)),
        ),
        empirical=EmpiricalFit(
            mean=emp.mean_,
            quantiles={f"p{int(q * 100)}": v for q, v in emp.quantiles_.items()},
            samples=sorted(int(round(v)) for v in vals),
        ),
    )


def _within_limits(make_dist) -> bool:
    """Whether the law can be written into a scenario (no more than a millionth of its mass past the limit a
    token field allows); a law with such a tail is not a candidate (the empirical law is)."""
    from kimiplan.model.scenario import MAX_TOKENS

    try:
        return float(make_dist().upper()) <= MAX_TOKENS
    except (ValueError, OverflowError):
        return False


def _component(values, censored, max_samples: int, alpha: float = 0.05, *, budget=None, censor_at=None):
    return fit_component(values, censored, budget=budget, censor_at=censor_at, alpha=alpha, max_samples=max_samples)


def _est(value, ci, n) -> Estimate:
    return Estimate(value=float(value), ci=(float(ci[0]), float(ci[1])), n=int(n))


class CalibrationFitter(BaseFitter):
    """Fit every route of a samples frame; `calibration_` is the file-ready result, `summary` one row per route."""

    def __init__(self, alpha: float = 0.05, max_stored_samples: int = 2000):
        super().__init__(alpha)
        if not (isinstance(max_stored_samples, int) and max_stored_samples >= 1):
            raise ConfigError(f"max_stored_samples must be a whole number >= 1, got {max_stored_samples!r}")
        self.max_stored_samples = max_stored_samples

    @property
    def fitted(self) -> bool:
        return hasattr(self, "calibration_")

    @property
    def summary(self) -> pd.DataFrame:
        if not self.fitted:
            raise ConfigError("CalibrationFitter is not fitted yet: call fit() first")
        rows = []
        for name, rc in self.calibration_.routes.items():
            ln = rc.output.lognormal
            rows.append(
                {
                    "route": name,
                    "n": rc.n,
                    "output median": ln.median if ln else None,
                    "output p95": ln.p95 if ln else None,
                    "output mean": rc.output.empirical.mean,
                    "truncation rate": rc.truncation_rate.value,
                    "cache hit rate": rc.cache_hit_rate.value,
                    "template overhead": rc.template_overhead.value if rc.template_overhead else None,
                }
            )
        return pd.DataFrame(rows).set_index("route")

    def __repr__(self) -> str:
        if not self.fitted:
            return "<kimiplan.CalibrationFitter: not fitted>"
        c = self.calibration_
        return f"<kimiplan.CalibrationFitter: {c.model}, {c.n_samples} samples, routes {sorted(c.routes)}>"

    def fit(
        self, df: pd.DataFrame, *, model: str | None = None, notes: str = "", card=None, answers_only=()
    ) -> CalibrationFitter:
        """`card`: the price card for the precision of the cost per request (default: the catalog's card for the
        model; without one, the routes carry no `precision`). `answers_only`: routes whose calls include their
        tool rounds as calls of their own (a log's tool routes): their output laws are fitted on the answers."""
        if df.empty:
            raise ConfigError("no samples to fit")
        models = sorted(m for m in df["model"].dropna().unique())
        if model is None:
            if len(models) != 1:
                raise ConfigError(f"samples come from models {models}; pass model= to choose one")
            model = models[0]
        elif models and model not in models:
            raise ConfigError(f"model {model!r} is not among the sampled models {models}")
        df = df[df["model"].isna() | (df["model"] == model)]
        if card is None:
            from kimiplan.catalog.cards import load_catalog
            from kimiplan.errors import CatalogError

            try:
                card = load_catalog().price(model)
            except CatalogError:
                card = None
        routes = {}
        for name, g in df.groupby("route", sort=True):
            src = sorted(str(x) for x in g["prompt_source"].dropna().unique()) if "prompt_source" in g else []
            try:
                fitted = self._route(g, str(name) in answers_only)
            except ConfigError as exc:
                raise ConfigError(f"route {name!r}: {exc}") from None
            routes[str(name)] = fitted.model_copy(
                update={"precision": route_precision(g, card, self.alpha), "prompt_source": "; ".join(src) or None}
            )
        synthetic = sorted(n for n, rc in routes.items() if rc.prompt_source and "synthetic" in rc.prompt_source)
        if synthetic:
            note = f"input of routes {', '.join(synthetic)} was synthetic (prompts built from a scenario's sizes)"
            notes = f"{notes}; {note}" if notes else note
        prov = sorted(df["provenance"].dropna().unique())
        provenance = prov[0] if len(prov) == 1 else ("mixed" if prov else "unknown")
        times = pd.to_datetime(df["time"], utc=True, errors="coerce").dropna()
        self.calibration_ = Calibration(
            model=model,
            provenance=provenance if provenance in ("live", "emulator", "usage-log", "mixed") else "unknown",
            created=dt.datetime.now(dt.UTC).replace(microsecond=0),
            samples_from=times.min().to_pydatetime() if len(times) else None,
            samples_to=times.max().to_pydatetime() if len(times) else None,
            n_samples=int(len(df)),
            notes=notes,
            routes=routes,
            base_url=_one_base_url(df),
        )
        return self

    def _latency_fit(self, x: np.ndarray) -> LogNormalFit | FixedFit | None:
        """A lognormal where the values spread, a Fixed law where they are all one value (a server that decodes
        at one speed), None where neither holds (zeros, too few): the latency then stays assumed."""
        x = x[np.isfinite(x)]
        # One value up to rounding (a speed computed as tokens over seconds is never exactly constant).
        if len(x) and x.min() >= 0 and x.max() - x.min() <= 1e-9 * max(abs(x.max()), 1.0):
            return FixedFit(value=float(x.mean()), n=int(len(x)))
        try:
            return _lognormal_fit(LogNormalFitter(self.alpha).fit(x))
        except DegenerateSampleError as exc:
            return FixedFit(value=exc.value, n=exc.n)
        except (ConfigError, ConvergenceError):
            return None

    def _route(self, g: pd.DataFrame, answers_only: bool = False) -> RouteCalibration:
        """`answers_only`: the route's calls include tool rounds as calls of their own (a log's), so its output
        law is fitted on the replies that answered."""
        g = _final_answers(g)
        censored = (g["finish_reason"] == "length").to_numpy()
        out = g["output_tokens"].astype(float)
        if out.isna().all():  # usage logs without reasoning detail: completion is all we have
            out = g["completion_tokens"].astype(float)
        if answers_only:  # a log's tool round is not an answer: its output is a call message
            out = out.mask(g["finish_reason"] == "tool_calls")
        ok = out.notna().to_numpy()
        r = g["reasoning_tokens"].astype(float)
        # Each call's budget (unknown in usage logs: no cut-off then), and what it left for the visible output.
        mct_i = g["max_completion_tokens"].astype(float).fillna(np.inf).to_numpy()
        budget = float(np.nanmax(mct_i)) if np.isfinite(mct_i).any() else None
        out_cut = mct_i - r.fillna(0).to_numpy()
        output = _component(
            out[ok], censored[ok], self.max_stored_samples, self.alpha, budget=budget, censor_at=out_cut[ok]
        )
        reasoning = None
        if r.notna().any() and (r.fillna(0) > 0).any():
            # reasoning is cut only when it used the whole budget (no visible output at all)
            r_cens = censored & (out.fillna(0).to_numpy() == 0)
            mask = r.notna().to_numpy()
            reasoning = _component(
                r[mask], r_cens[mask], self.max_stored_samples, self.alpha, budget=budget, censor_at=mct_i[mask]
            )
        trunc = ProportionFitter(self.alpha).fit((g["first_finish_reason"] == "length").to_numpy())
        hits = ProportionFitter(self.alpha).fit((g["cached_tokens"].fillna(0) > 0).to_numpy())
        has_p = g["prompt_tokens"].notna()
        if "follows_tool_call" in g:  # a log's tool rounds resend the prompt: the input is the first calls'
            has_p &= ~g["follows_tool_call"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        cached = None
        if has_p.any():
            rf = RatioFitter(self.alpha).fit(g.loc[has_p, "cached_tokens"].fillna(0), g.loc[has_p, "prompt_tokens"])
            cached = _est(rf.ratio_, rf.ci_, rf.n_)
        prompt = None
        if has_p.any():
            pf = MeanFitter(self.alpha).fit(g.loc[has_p, "prompt_tokens"].astype(float))
            prompt = _est(pf.mean_, pf.ci_ if pf.n_ > 1 else (pf.mean_, pf.mean_), pf.n_)
        both = has_p & g["local_prompt_tokens"].notna()
        overhead = None
        if both.any():
            mf = MeanFitter(self.alpha).fit(g.loc[both, "prompt_tokens"] - g.loc[both, "local_prompt_tokens"])
            ci = mf.ci_ if mf.n_ > 1 else (mf.mean_, mf.mean_)
            overhead = _est(mf.mean_, ci, mf.n_)
        ttft = decode = None
        lat = g[g["ttft_s"].notna() & g["total_s"].notna()]
        if len(lat) >= 3:
            ttft = self._latency_fit(lat["ttft_s"].to_numpy(dtype=float))
            gen_s = (lat["total_s"] - lat["ttft_s"]).to_numpy()
            tps = lat["completion_tokens"].to_numpy() / np.where(gen_s > 0, gen_s, np.nan)
            tps = tps[np.isfinite(tps) & (lat["completion_tokens"].to_numpy() >= 16)]
            if len(tps) >= 3:
                decode = self._latency_fit(tps)
        th = g["thinking"].dropna()
        mct = g["max_completion_tokens"].dropna()
        return RouteCalibration(
            n=int(len(g)),
            thinking=bool(th.iloc[0]) if len(th) else None,
            max_completion_tokens=int(mct.max()) if len(mct) else None,
            output=output,
            reasoning=reasoning,
            truncation_rate=_est(trunc.rate_, trunc.ci_, trunc.n_),
            cache_hit_rate=_est(hits.rate_, hits.ci_, hits.n_),
            cached_fraction=cached,
            template_overhead=overhead,
            ttft_s=ttft,
            decode_tps=decode,
            prompt_tokens=prompt,
            calls_per_minute=_pace(g),
            # Tool routes: a sampler that sends tools records per request `tool_rounds` (further API calls) and
            # `tool_result_tokens` (tokens one result adds to the next call); a log may carry them too.
            tool_rounds=_mean_of(g, "tool_rounds", self.alpha),
            tool_result_tokens=_mean_of(
                g.assign(tool_result_tokens=_search_result_tokens(g)), "tool_result_tokens", self.alpha
            ),
            **self._function_rounds(g),
            # Agent runs, when a log groups its calls into runs: steps per run, context tokens added per step.
            agent_steps=_mean_of(g, "agent_steps", self.alpha),
            context_growth_tokens=_mean_of(g, "context_growth_tokens", self.alpha),
        )

    def _function_rounds(self, g: pd.DataFrame) -> dict:
        """Function-tool rounds from the sampler's per-call `rounds`: rounds per request (mean and law), and per
        answered round the tool-call message's tokens and the results' tokens; {} without function calls."""
        if "rounds" not in g:
            return {}
        per_request, calls, results, cut = [], [], [], 0
        for rounds in g["rounds"]:
            if not isinstance(rounds, list) or not rounds or not all(isinstance(r, dict) for r in rounds):
                continue
            answered = [r for r in rounds[:-1] if int(r.get("function_calls") or 0) > 0]
            per_request.append(len(answered))
            calls += [float(r.get("output_tokens") or 0) for r in answered]
            results += [float(r.get("function_result_tokens") or 0) for r in answered]
            cut += rounds[-1].get("finish_reason") == "tool_calls"
        if not calls:
            return {}
        k = np.asarray(per_request, dtype=float)
        mf = MeanFitter(self.alpha).fit(k)
        values, counts = np.unique(k.astype(int), return_counts=True)
        n = self.max_stored_samples
        return {
            "function_rounds": _est(mf.mean_, mf.ci_ if mf.n_ > 1 else (mf.mean_, mf.mean_), mf.n_),
            "function_round_counts": {int(v): int(c) for v, c in zip(values, counts)},
            "function_call_tokens": _component(calls, None, n, self.alpha),
            "function_result_tokens": _component(results, None, n, self.alpha),
            "tool_rounds_cut": cut,
        }


def _final_answers(g: pd.DataFrame) -> pd.DataFrame:
    """Requests with tool rounds (the sampler's per-call `rounds`): their answer is the last call's, so the output
    and reasoning laws, the finish reason and the truncation are read from it (the first call's output is a tool
    call). A request whose last call still called tools has no answer: its output is left out."""
    if "rounds" not in g:
        return g

    def last(r):
        return r[-1] if isinstance(r, list) and len(r) > 1 and isinstance(r[-1], dict) else None

    final = g["rounds"].map(last)
    has = final.map(lambda x: x is not None and "output_tokens" in x)
    if not has.any():
        return g
    g = g.copy()
    g["output_tokens"] = g["output_tokens"].astype(float)
    g["reasoning_tokens"] = g["reasoning_tokens"].astype(float)
    f = final[has]
    answered = f.map(lambda x: x.get("finish_reason") != "tool_calls")
    g.loc[has, "output_tokens"] = [float(x["output_tokens"]) if a else np.nan for x, a in zip(f, answered)]
    g.loc[has, "reasoning_tokens"] = [float(x.get("reasoning_tokens") or 0) for x in f]
    g.loc[has, "finish_reason"] = [x.get("finish_reason") for x in f]
    g.loc[has, "first_finish_reason"] = [x.get("finish_reason") for x in f]
    return g


def _mean_of(g: pd.DataFrame, col: str, alpha: float) -> Estimate | None:
    if col not in g:
        return None
    x = pd.to_numeric(g[col], errors="coerce").dropna()
    if x.empty:
        return None
    mf = MeanFitter(alpha).fit(x.to_numpy(dtype=float))
    return _est(mf.mean_, mf.ci_ if mf.n_ > 1 else (mf.mean_, mf.mean_), mf.n_)


def _search_result_tokens(g: pd.DataFrame) -> pd.Series:
    """Tokens one $web_search result adds to the next call, per request that searched: from the sampler's
    per-call `rounds` (or a `tool_result_tokens` column a log carries); NaN where a request did not search."""
    if "tool_result_tokens" in g:
        return pd.to_numeric(g["tool_result_tokens"], errors="coerce")
    if "rounds" not in g:
        return pd.Series(np.nan, index=g.index)

    def one(rounds) -> float:
        if not isinstance(rounds, list):
            return np.nan
        n = sum(int(r.get("web_search_calls") or 0) for r in rounds if isinstance(r, dict))
        tok = sum(int(r.get("web_search_result_tokens") or 0) for r in rounds if isinstance(r, dict))
        return tok / n if n else np.nan

    return g["rounds"].map(one)


def _one_base_url(df: pd.DataFrame) -> str | None:
    urls = sorted(df["base_url"].dropna().unique()) if "base_url" in df else []
    return urls[0] if len(urls) == 1 else (", ".join(urls) if urls else None)


def _pace(g: pd.DataFrame) -> float | None:
    """Calls per minute the sampler sent on a route: (n - 1) over its first-to-last call time, so a burst of
    calls shows as the warm cache it met. None without two distinct times (a log without times)."""
    t = pd.to_datetime(g["time"], utc=True, errors="coerce").dropna()
    if len(t) < 2:
        return None
    span = (t.max() - t.min()).total_seconds()
    # Times are whole seconds: a burst inside one second counts as one second.
    return float((len(t) - 1) / max(span, 1.0) * 60.0)


def fit_calibration(
    df: pd.DataFrame,
    *,
    model: str | None = None,
    notes: str = "",
    card=None,
    sessions: pd.DataFrame | None = None,
    tool_rounds: pd.DataFrame | None = None,
) -> Calibration:
    """Fit every route of `df` (samples). `sessions` (`LogSummary.sessions`: per route runs, steps per run,
    conversations, turns, growth per turn) adds steps per run and history growth to the routes it names;
    `tool_rounds` (`LogSummary.tool_rounds`) the function rounds per request and each round's call and result
    tokens. A log without conversation or run ids gives the mean rounds, not their law: its interval then takes
    the count as Poisson (and apply uses a Poisson law)."""
    tool_rows = [] if tool_rounds is None else tool_rounds.to_dict(orient="records")
    answers = {str(r["route"]) for r in tool_rows}
    cal = CalibrationFitter().fit(df, model=model, notes=notes, card=card, answers_only=answers).calibration_
    routes = dict(cal.routes)
    for r in tool_rows:
        name = str(r["route"])
        k = r["function_rounds_per_request"]
        if name not in routes or not r["requests"] or not k > 0:
            continue
        counts = r.get("round_counts") or None
        if counts:  # the log's ids told the requests apart: the law of rounds, and their mean's own interval
            x = np.repeat(np.array(list(counts), dtype=float), list(counts.values()))
            extra = {
                "function_rounds": _mean_estimate(float(x.mean()), float(x.std(ddof=1)), len(x)),
                "function_round_counts": {int(v): int(n) for v, n in counts.items()},
            }
        else:
            extra = {"function_rounds": _mean_estimate(k, math.sqrt(k), int(r["requests"]))}
        if r["pairs"]:
            extra["function_call_tokens"] = _component(r["call_tokens"], None, 2000)
            extra["function_result_tokens"] = _component(r["result_tokens"], None, 2000)
        routes[name] = routes[name].model_copy(update=extra)
    if sessions is None or sessions.empty:
        return cal.model_copy(update={"routes": routes})
    for r in sessions.to_dict(orient="records"):
        name = str(r["route"])
        if name not in routes:
            continue
        extra = {}
        if r["runs"]:
            extra["steps_per_run"] = _mean_estimate(r["steps_per_run"], r["steps_sd"], int(r["runs"]))
        if r["conversations"]:
            extra["turns_per_conversation"] = _mean_estimate(
                r["turns_per_conversation"], r["turns_sd"], int(r["conversations"])
            )
        if r["growth_n"]:
            extra["history_growth_tokens"] = _mean_estimate(r["growth_per_turn"], r["growth_sd"], int(r["growth_n"]))
        routes[name] = routes[name].model_copy(update=extra)
    return cal.model_copy(update={"routes": routes})


def _mean_estimate(mean: float, sd: float | None, n: int) -> Estimate:
    """A mean with its 95 % normal confidence interval (a single value: the interval is the point)."""
    half = 0.0 if n < 2 or sd is None or sd != sd else Z95 * float(sd) / math.sqrt(n)
    return Estimate(value=float(mean), ci=(float(mean) - half, float(mean) + half), n=n)


def cost_uncertainty(calibration: Calibration) -> dict[str, float]:
    """Route -> relative standard error of its measured mean cost per request (for `forecast`'s
    `parameter_uncertainty`: each path draws the route's mean from it)."""
    return {
        name: rc.precision.cost_se / rc.precision.cost_per_request.value
        for name, rc in calibration.routes.items()
        if rc.precision is not None and rc.precision.cost_per_request.value > 0
    }


def reservation_tokens(df: pd.DataFrame) -> pd.Series:
    """Tokens each sampled request put on TPM by Kimi's rule: prompt + max_completion_tokens, per call made
    (a Partial Mode continuation is another call that resends the prefix; a tool round another call)."""

    def col(name):
        return df.get(name, pd.Series(0, index=df.index)).fillna(0).astype(float)

    p = df["prompt_tokens"].fillna(df["local_prompt_tokens"]).astype(float) + col("tool_round_prompt_tokens")
    mct = df["max_completion_tokens"].astype(float).fillna(float(K26_DEFAULT_MAX_COMPLETION))
    calls = 1 + col("continuations") + col("tool_rounds")
    return p + col("continuation_prompt_tokens") + calls * mct


def route_precision(g: pd.DataFrame, card, alpha: float = 0.05, target: float = 0.05) -> Precision | None:
    """The Precision of one route's samples on `card` (None without a card or with fewer than 2 calls)."""
    from kimiplan.calibration.precision import BOOTSTRAP_RESAMPLES

    if card is None or len(g) < 2:
        return None
    conf = 1 - alpha
    cost = call_costs(g, card).to_numpy(dtype=float)
    res = reservation_tokens(g).to_numpy(dtype=float)
    if not (np.isfinite(cost).all() and np.isfinite(res).all()):
        return None
    # The same function `--until-precision` stops on: the file states the figure the sampler stopped at.
    cp, rp = mean_precision(cost, conf), mean_precision(res, conf, seed=1)
    m, ci, se = cp.mean, cp.ci, cp.se
    rm, rci, rse = rp.mean, rp.ci, rp.se
    sd = float(cost.std(ddof=1))
    cv = sd / m if m > 0 else 0.0
    need = calls_for_target(cp, len(g), target) or len(g)
    return Precision(
        confidence=conf,
        target_rel_error=target,
        currency=card.currency,
        method=f"bootstrap percentile, {BOOTSTRAP_RESAMPLES:,} resamples",
        cost_per_request=_est(m, ci, len(g)),
        cost_se=se,
        cost_cv=cv,
        cost_rel_error=cp.rel_error,
        reservation_tokens=_est(rm, rci, len(g)),
        reservation_se=rse,
        reservation_rel_error=rp.rel_error,
        calls_for_target=need,
        more_calls_for_target=max(0, need - len(g)),
    )


# --- using a calibration -----------------------------------------------------------------------------------
def apply_calibration(
    scenario,
    calibration: Calibration | str | Path | None = None,
    *,
    kind: Literal["auto", "lognormal", "mixture", "empirical"] = "auto",
    latency: bool = True,
):
    """A new scenario with what the calibration measured (input size, cache, output, reasoning, server overhead,
    latency; see `kimiplan.catalog.calibrated`). With `calibration=None`, each route uses the file its own
    `calibration:` field (or the scenario's) names. `load_scenario` does this for every file it reads."""
    from kimiplan.catalog.calibrated import apply_calibration as _apply

    return _apply(scenario, calibration, kind=kind, latency=latency)


def predicted_vs_observed(
    calibration: Calibration,
    df: pd.DataFrame,
    *,
    n_sim: int = 20_000,
    seed: int = 0,
    kind: Literal["auto", "lognormal", "mixture", "empirical"] = "auto",
) -> pd.DataFrame:
    """Posterior-predictive check: simulate the fitted laws (`auto`: the ones goodness of fit chose) through each
    route's budget (reasoning first, content with what is left, as Kimi does) and compare with what was observed."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, rc in calibration.routes.items():
        g = df[df["route"] == name]
        if g.empty or (kind == "lognormal" and rc.output.lognormal is None):
            continue
        budget = rc.max_completion_tokens or K26_DEFAULT_MAX_COMPLETION
        o = np.round(rc.output.to_dist(kind).sample(rng, n_sim))
        r = np.zeros(n_sim)
        if rc.reasoning is not None and (kind != "lognormal" or rc.reasoning.lognormal is not None):
            r = np.round(rc.reasoning.to_dist(kind).sample(rng, n_sim))
        r_seen, o_seen, _ = truncate_completion(r, o, budget)
        sims = {"output_tokens": o_seen, "reasoning_tokens": r_seen}
        for col, sim in sims.items():
            obs = g[col].dropna().to_numpy(dtype=float)
            if len(obs) == 0 or (col == "reasoning_tokens" and rc.reasoning is None):
                continue
            for stat, f in (
                ("mean", np.mean),
                ("p50", lambda a: np.quantile(a, 0.5)),
                ("p95", lambda a: np.quantile(a, 0.95)),
            ):
                rows.append(
                    {"route": name, "metric": f"{col} {stat}", "predicted": float(f(sim)), "observed": float(f(obs))}
                )
        rows.append(
            {
                "route": name,
                "metric": "truncation rate",
                "predicted": float(np.mean(r + o > budget)),
                "observed": float((g["first_finish_reason"] == "length").mean()),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty:
        out["ratio"] = out["observed"] / out["predicted"].replace(0, np.nan)
    return out


def samples_needed(
    df: pd.DataFrame,
    card,
    *,
    rel_error: float = 0.05,
    confidence: float = 0.95,
    shares: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """How many calls per route pin the mean cost per call (hence monthly cost) to ±rel_error.

    Monthly cost = requests x mean cost per call, so its relative error is the mean's: z * CV / sqrt(n)
    (CV from the sampled per-call costs: delta method for a mean). With `shares` (route -> traffic share),
    a last row does the same for the traffic-weighted mix."""
    if not 0 < rel_error < 1:
        raise ConfigError(f"rel_error must be in (0, 1), got {rel_error}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    cost = call_costs(df, card)
    rows = []
    parts = {}
    for name, c in cost.groupby(df["route"]):
        n, m, s = len(c), float(c.mean()), float(c.std(ddof=1)) if len(c) > 1 else float("nan")
        cv = s / m if m > 0 else float("nan")
        parts[name] = (n, m, s)
        # The calibration file's own figure and calls (route_precision), not a second formula beside it.
        p = mean_precision(c.to_numpy(dtype=float), confidence)
        rows.append(
            {
                "route": name,
                "n": n,
                "mean_cost": m,
                "cv": cv,
                "current_rel_error": p.rel_error if n > 1 else float("nan"),
                "n_needed": calls_for_target(p, n, rel_error),
            }
        )
    if shares:
        missing = set(shares) - set(parts)
        if missing:
            raise ConfigError(f"shares name routes without samples: {sorted(missing)}")
        mean = sum(w * parts[r][1] for r, w in shares.items())
        var_of_mean = sum((w * parts[r][2]) ** 2 / parts[r][0] for r, w in shares.items())
        rel = z * math.sqrt(var_of_mean) / mean
        # Scale every route's n by the same factor to reach the target.
        factor = (rel / rel_error) ** 2
        rows.append(
            {
                "route": "(mix)",
                "n": sum(parts[r][0] for r in shares),
                "mean_cost": mean,
                "cv": float("nan"),
                "current_rel_error": rel,
                "n_needed": int(math.ceil(sum(parts[r][0] for r in shares) * factor)),
            }
        )
    return pd.DataFrame(rows).set_index("route")
