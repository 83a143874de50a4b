"""Distribution specs for token counts, counts and latencies.

Each spec is a small frozen pydantic model (so scenario files can write it) with `mean()`, `var()`,
`quantile(q)` and a vectorized `sample(rng, n)`. A bare number in a scenario file means `fixed`.

Bounds: every parameter is finite, and no spec may put more than a millionth of its mass above `MAX_VALUE`
(so sums and products of two draws stay far inside int64 and float precision). Fields add a plausible limit of
their own (`bounded`: tokens, counts, seconds); draws are clipped at that limit, which only changes a draw that
the check says is rarer than one in a million.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from kimiplan.errors import ScenarioError

Z95 = 1.6448536269514722  # standard normal 95th percentile
Z_UPPER = 4.753424308822899  # standard normal quantile at 1 - 1e-6: the "upper" value every check uses
MAX_VALUE = 1e9  # no distribution may go past this (a billion tokens or seconds); 1e9 * 1e9 < int64 max
MAX_SIGMA = 6.0  # lognormal sd of log x: p95 at most ~19,000x the median, already a wild spread
MAX_SAMPLES = 1_000_000  # empirical samples given inline


def _laws():
    # The normal and Poisson laws load scipy.special (scipy.stats' own formulas, without its second of import);
    # only quantiles and clipped moments need them, so the CLI's light commands (prices, tiers, tokens, cost)
    # do not pay for it.
    from kimiplan.model import laws

    return laws


class _Dist(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    # The field's plausible limit (see `bounded`); draws are clipped there. Not part of the file format.
    _cap: float = PrivateAttr(default=MAX_VALUE)

    @model_validator(mode="after")
    def _representable(self):
        _check_limit(self, MAX_VALUE, "")
        return self

    def upper(self) -> float:
        """A value that draws exceed with probability below one in a million (the maximum when bounded)."""
        raise NotImplementedError

    def _clip(self, x: np.ndarray) -> np.ndarray:
        return np.minimum(x, self._cap, out=x)

    def sd(self) -> float:
        return math.sqrt(self.var())

    def describe(self) -> str:
        return self.kind


class Fixed(_Dist):
    kind: Literal["fixed"] = "fixed"
    value: float = Field(ge=0)

    def mean(self) -> float:
        return float(self.value)

    def var(self) -> float:
        return 0.0

    def quantile(self, q):
        return np.full_like(np.asarray(q, dtype=float), self.value) if np.ndim(q) else float(self.value)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, float(self.value))

    def upper(self) -> float:
        return float(self.value)

    def describe(self) -> str:
        return f"fixed {self.value:g}"


class Normal(_Dist):
    """Normal, clipped at 0 (token counts and seconds are never negative); moments are the clipped ones."""

    kind: Literal["normal"] = "normal"
    mean_: float = Field(alias="mean", ge=0)
    sd_: float = Field(alias="sd", ge=0)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def mean(self) -> float:
        if self.sd_ == 0:
            return self.mean_
        a = self.mean_ / self.sd_
        return self.mean_ * _laws().norm_cdf(a) + self.sd_ * _laws().norm_pdf(a)

    def var(self) -> float:
        if self.sd_ == 0:
            return 0.0
        m, s = self.mean_, self.sd_
        a = m / s
        second = (m * m + s * s) * _laws().norm_cdf(a) + m * s * _laws().norm_pdf(a)
        return max(second - self.mean() ** 2, 0.0)

    def quantile(self, q):
        return np.maximum(_laws().norm_ppf(q, self.mean_, self.sd_), 0.0)

    def sample(self, rng, n):
        return self._clip(np.maximum(rng.normal(self.mean_, self.sd_, n), 0.0))

    def upper(self) -> float:
        return self.mean_ + Z_UPPER * self.sd_

    def describe(self) -> str:
        return f"normal {self.mean_:g}±{self.sd_:g}"


_LOGNORMAL_FORMS = ("median", "p95", "mean", "sigma")


def _lognormal_median_p95(d: dict) -> dict:
    """Any two of median, p95, mean and sigma (of log x) -> the stored median and p95."""
    given = [k for k in _LOGNORMAL_FORMS if d.get(k) is not None]
    if set(given) == {"median", "p95"}:
        return d
    if len(given) != 2:
        raise ValueError(f"lognormal: give exactly two of median, p95, mean, sigma (got {', '.join(given) or 'none'})")
    d = dict(d)
    for k in given:
        x = d[k]
        if isinstance(x, str):
            try:
                x = d[k] = float(x)
            except ValueError:
                raise ValueError(f"lognormal: {k} must be a number, got {x!r}") from None
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ValueError(f"lognormal: {k} must be a number, got {x!r}")
        if not math.isfinite(x):
            raise ValueError(f"lognormal: {k} must be finite, got {x!r}")
        if not x > 0 and not (k == "sigma" and x == 0):
            raise ValueError(f"lognormal: {k} must be > 0, got {x!r}")
    if "sigma" in given and d["sigma"] > MAX_SIGMA:
        raise ValueError(f"lognormal: sigma must be <= {MAX_SIGMA:g}, got {d['sigma']!r}")
    try:
        return _median_p95(d, given)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("lognormal:"):
            raise
        raise ValueError(f"lognormal: {', '.join(f'{k}={d[k]!r}' for k in given)} is out of range ({exc})") from None


def _median_p95(d: dict, given: list[str]) -> dict:
    v = {k: float(d[k]) for k in given}
    if "sigma" in v:
        s = v["sigma"]
        mu = (
            math.log(v["median"])
            if "median" in v
            else (math.log(v["mean"]) - s * s / 2 if "mean" in v else math.log(v["p95"]) - Z95 * s)
        )
    elif "median" in v:  # median and mean: mean = median * exp(sigma^2 / 2)
        if v["mean"] < v["median"]:
            raise ValueError(f"lognormal: mean ({v['mean']:g}) is below the median ({v['median']:g})")
        mu, s = math.log(v["median"]), math.sqrt(2 * math.log(v["mean"] / v["median"]))
    else:  # mean and p95: sigma^2 / 2 - Z95 sigma + ln(p95 / mean) = 0, the smaller root
        disc = Z95 * Z95 - 2 * math.log(v["p95"] / v["mean"])
        if v["p95"] < v["mean"] or disc < 0:
            raise ValueError(f"lognormal: no lognormal has mean {v['mean']:g} and p95 {v['p95']:g}")
        s = Z95 - math.sqrt(disc)
        mu = math.log(v["mean"]) - s * s / 2
    out = {k: x for k, x in d.items() if k not in _LOGNORMAL_FORMS}
    return {**out, "median": math.exp(mu), "p95": math.exp(mu + Z95 * s)}


class LogNormal(_Dist):
    """Lognormal given by its median and 95th percentile (how people state lengths); a file may instead give
    any two of median, p95, mean and sigma (the sd of log x), which are turned into the median and p95."""

    kind: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    p95: float = Field(gt=0)
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra=lambda s: (
            s.pop("required", None),
            s["properties"].update(
                mean={"type": "number", "exclusiveMinimum": 0, "description": "mean (with one of median, p95, sigma)"},
                sigma={"type": "number", "minimum": 0, "description": "sd of log x (with one of median, p95, mean)"},
            ),
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, d):
        return _lognormal_median_p95(d) if isinstance(d, dict) else d

    @model_validator(mode="after")
    def _order(self):
        if self.p95 < self.median:
            raise ValueError(f"p95 ({self.p95:g}) is below the median ({self.median:g})")
        if self.sigma > MAX_SIGMA:
            raise ValueError(
                f"p95/median = {self.p95 / self.median:.3g} is too wide: sigma (sd of log x) = {self.sigma:.3g} "
                f"must be <= {MAX_SIGMA:g} (p95 at most {math.exp(Z95 * MAX_SIGMA):,.0f}x the median)"
            )
        return self

    @classmethod
    def from_mu_sigma(cls, mu: float, sigma: float) -> LogNormal:
        return cls(median=math.exp(mu), p95=math.exp(mu + Z95 * sigma))

    @cached_property
    def mu(self) -> float:
        return math.log(self.median)

    @cached_property
    def sigma(self) -> float:
        return (math.log(self.p95) - math.log(self.median)) / Z95

    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def var(self) -> float:
        s2 = self.sigma**2
        return (math.exp(s2) - 1) * math.exp(2 * self.mu + s2)

    def quantile(self, q):
        return np.exp(self.mu + self.sigma * _laws().norm_ppf(q))

    def sample(self, rng, n):
        return self._clip(rng.lognormal(self.mu, self.sigma, n))

    def upper(self) -> float:
        return math.exp(min(self.mu + Z_UPPER * self.sigma, 700.0))

    def describe(self) -> str:
        return f"lognormal median {self.median:g}, p95 {self.p95:g}"


class Exponential(_Dist):
    kind: Literal["exponential"] = "exponential"
    mean_: float = Field(alias="mean", gt=0)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def mean(self) -> float:
        return self.mean_

    def var(self) -> float:
        return self.mean_**2

    def quantile(self, q):
        return -self.mean_ * np.log1p(-np.asarray(q, dtype=float))

    def sample(self, rng, n):
        return self._clip(rng.exponential(self.mean_, n))

    def upper(self) -> float:
        return self.mean_ * math.log(1e6)

    def describe(self) -> str:
        return f"exponential mean {self.mean_:g}"


class Poisson(_Dist):
    """Counts (tool calls per request, turns)."""

    kind: Literal["poisson"] = "poisson"
    mean_: float = Field(alias="mean", ge=0)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def mean(self) -> float:
        return self.mean_

    def var(self) -> float:
        return self.mean_

    def quantile(self, q):
        return _laws().poisson_ppf(q, self.mean_)

    def sample(self, rng, n):
        return self._clip(rng.poisson(self.mean_, n).astype(float))

    def upper(self) -> float:
        # A safe bound on the 1 - 1e-6 quantile (normal approximation plus a margin for the skew).
        return self.mean_ + Z_UPPER * math.sqrt(self.mean_) + Z_UPPER**2

    def describe(self) -> str:
        return f"poisson mean {self.mean_:g}"


class Uniform(_Dist):
    kind: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _order(self):
        if self.high < self.low:
            raise ValueError(f"high ({self.high:g}) is below low ({self.low:g})")
        return self

    def mean(self) -> float:
        return (self.low + self.high) / 2

    def var(self) -> float:
        return (self.high - self.low) ** 2 / 12

    def quantile(self, q):
        return self.low + (self.high - self.low) * np.asarray(q, dtype=float)

    def sample(self, rng, n):
        return rng.uniform(self.low, self.high, n)

    def upper(self) -> float:
        return self.high

    def describe(self) -> str:
        return f"uniform {self.low:g}-{self.high:g}"


class Empirical(_Dist):
    """Resamples observed values (token counts from a usage log, or calibration samples)."""

    kind: Literal["empirical"] = "empirical"
    samples: tuple[float, ...] = Field(min_length=1, max_length=MAX_SAMPLES)

    @model_validator(mode="after")
    def _non_negative(self):
        bad = [s for s in self.samples if not (s >= 0)]
        if bad:
            raise ValueError(f"samples must be >= 0, got {bad[0]!r}")
        return self

    @cached_property
    def _arr(self) -> np.ndarray:
        return np.asarray(self.samples, dtype=float)

    def mean(self) -> float:
        return float(self._arr.mean())

    def var(self) -> float:
        return float(self._arr.var())

    def quantile(self, q):
        return np.quantile(self._arr, q)

    def sample(self, rng, n):
        return rng.choice(self._arr, size=n, replace=True)

    def upper(self) -> float:
        return float(self._arr.max())

    def describe(self) -> str:
        return f"empirical n={len(self.samples)}"


class Texts(_Dist):
    """Token counts of sample texts, counted with the exact Kimi tokenizer, resampled like `empirical`.

    `files` are read relative to the scenario file's folder (set by `load_scenario`)."""

    kind: Literal["texts"] = "texts"
    texts: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    base_dir: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _some(self):
        if not self.texts and not self.files:
            raise ValueError("give at least one of texts or files")
        return self

    @cached_property
    def _counts(self) -> Empirical:
        from kimiplan.tokens.tokenizer import get_tokenizer

        bodies = list(self.texts)
        for f in self.files:
            p = Path(f)
            if not p.is_absolute() and self.base_dir:
                p = Path(self.base_dir) / p
            try:
                bodies.append(p.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ScenarioError(f"texts: cannot read text file {str(p)!r}: {exc.strerror}") from None
            except UnicodeDecodeError as exc:
                raise ScenarioError(f"texts: file {str(p)!r} is not UTF-8 text (offset {exc.start})") from None
        return Empirical(samples=tuple(float(c) for c in get_tokenizer().count_many(bodies)))

    def mean(self) -> float:
        return self._counts.mean()

    def var(self) -> float:
        return self._counts.var()

    def quantile(self, q):
        return self._counts.quantile(q)

    def sample(self, rng, n):
        return self._clip(self._counts.sample(rng, n))

    def upper(self) -> float:
        return 0.0  # counted only when first drawn (the files are read then); the draws are clipped

    def describe(self) -> str:
        return f"{len(self.texts) + len(self.files)} sample texts"


def _component_cdf(d: _Dist, x: np.ndarray) -> np.ndarray:
    """P(X <= x) of a mixture component (the kinds a Mixture allows)."""
    st = _laws()
    if isinstance(d, LogNormal):
        with np.errstate(divide="ignore"):
            return st.norm_cdf((np.log(np.maximum(x, 0.0)) - d.mu) / d.sigma) if d.sigma > 0 else (x >= d.median) * 1.0
    if isinstance(d, Exponential):
        return 1.0 - np.exp(-np.maximum(x, 0.0) / d.mean_)
    if isinstance(d, Normal):
        return np.where(x < 0, 0.0, st.norm_cdf(x, d.mean_, d.sd_) if d.sd_ > 0 else (x >= d.mean_) * 1.0)
    if isinstance(d, Uniform):
        return np.clip((x - d.low) / (d.high - d.low), 0.0, 1.0) if d.high > d.low else (x >= d.low) * 1.0
    return (x >= d.value) * 1.0  # Fixed


class MixtureComponent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    weight: float = Field(gt=0, le=1)
    dist: Annotated[Fixed | Normal | LogNormal | Exponential | Uniform, Field(discriminator="kind")]


class Mixture(_Dist):
    """A weighted mixture of simple laws (fixed, normal, lognormal, exponential, uniform): a draw takes component
    i with probability `weight` i. Calibration fits one (two lognormals) where a single lognormal is rejected,
    e.g. mostly short answers with a long tail. Weights must sum to 1."""

    kind: Literal["mixture"] = "mixture"
    components: tuple[MixtureComponent, ...] = Field(min_length=1, max_length=8)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, d):
        # A component's law may be written as a bare number (fixed), like every other distribution field.
        if isinstance(d, dict) and isinstance(d.get("components"), (list, tuple)):
            comps = []
            for c in d["components"]:
                if isinstance(c, dict) and "dist" in c:
                    c = {**c, "dist": _coerce(c["dist"])}
                comps.append(c)
            d = {**d, "components": comps}
        return d

    @model_validator(mode="after")
    def _weights(self):
        total = sum(c.weight for c in self.components)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"mixture weights must sum to 1, got {total:.9g}")
        return self

    @cached_property
    def _w(self) -> np.ndarray:
        w = np.array([c.weight for c in self.components], dtype=float)
        return w / w.sum()

    def mean(self) -> float:
        return float(sum(w * c.dist.mean() for w, c in zip(self._w, self.components)))

    def var(self) -> float:
        second = sum(w * (c.dist.var() + c.dist.mean() ** 2) for w, c in zip(self._w, self.components))
        return max(float(second) - self.mean() ** 2, 0.0)

    def cdf(self, x):
        x = np.asarray(x, dtype=float)
        return sum(w * _component_cdf(c.dist, x) for w, c in zip(self._w, self.components))

    def quantile(self, q):
        # Bisection on the CDF (monotone), vectorized over q; 200 halvings of [0, upper] reach float precision.
        qa = np.atleast_1d(np.asarray(q, dtype=float))
        lo, hi = np.zeros_like(qa), np.full_like(qa, max(self.upper(), 1e-12))
        for _ in range(200):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < qa
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        out = (lo + hi) / 2
        return out if np.ndim(q) else float(out[0])

    def sample(self, rng, n):
        which = rng.choice(len(self.components), size=n, p=self._w)
        out = np.empty(n)
        for i, c in enumerate(self.components):
            m = which == i
            k = int(m.sum())
            if k:
                out[m] = c.dist.sample(rng, k)
        return self._clip(out)

    def upper(self) -> float:
        return max(float(c.dist.upper()) for c in self.components)

    def describe(self) -> str:
        return "mixture of " + ", ".join(f"{c.weight:.3g} x {c.dist.describe()}" for c in self.components)


def _coerce(v: Any) -> Any:
    # A bare number is a fixed value; {kind: ...} is passed through to the discriminated union.
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return {"kind": "fixed", "value": v}
    if isinstance(v, str):  # YAML 1.1 reads 1e5 (no dot, no sign) as a string: take it as the number it says
        try:
            return {"kind": "fixed", "value": float(v)}
        except ValueError:
            raise ValueError(f"a distribution is a number or a mapping with a kind, got {v!r}") from None
    return v


Dist = Annotated[
    Fixed | Normal | LogNormal | Exponential | Poisson | Uniform | Empirical | Texts | Mixture,
    Field(discriminator="kind"),
    BeforeValidator(_coerce),
]


def _check_limit(d: _Dist, limit: float, unit: str) -> None:
    """The spec's one-in-a-million upper value must be within `limit` (it bounds the mean too: lognormal
    spreads are capped by MAX_SIGMA, so the mean never lies beyond it). No scipy here: loading stays light."""
    try:
        up = float(d.upper())
    except (OverflowError, ZeroDivisionError):
        up = math.inf
    if up > limit:
        u = f" {unit}" if unit else ""
        raise ValueError(
            f"{d.describe()}: draws would exceed the limit of {limit:,.10g}{u} (one in a million goes above "
            f"{up:.4g}{u})"
        )


def bounded(limit: float, unit: str = ""):
    """A `Dist` field whose draws must stay within `limit` (mean and one-in-a-million upper value checked;
    draws clipped there)."""

    def check(d: _Dist) -> _Dist:
        _check_limit(d, limit, unit)
        if limit < d._cap:
            d = d.model_copy()
            d._cap = float(limit)
        return d

    return Annotated[Dist, AfterValidator(check)]


def fixed(v: float) -> Fixed:
    return Fixed(value=v)
