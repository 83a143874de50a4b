"""Monthly and daily spend forecast with Monte Carlo uncertainty bands.

The model, per day `d` of the horizon and route `r`:

- expected requests `lam[d] * share[r]`: the scenario's rate, compound monthly growth counted from the month
  of `as_of` (or the explicit `monthly_requests` total of that month), times the weekday factor, the holiday
  factor and every active event's factor. Event `end` dates are inclusive. In an explicit month the factors
  only spread the given total across its days.
- prices: the catalog card in force on `d`. A price change splits a month into segments; a day with no card in
  force (retired model) is never priced: its month's totals are NaN and flagged.

Monte Carlo (seeded, vectorized; cheap because no request is drawn):

- traffic noise: a mean-1 Gamma multiplier per day with coefficient of variation `daily_cv`, shared by routes;
  a mean-1 log-normal level per path whose log-sd grows as `growth_sd * k` for the k-th month after `as_of`
  (uncertainty about the growth rate);
- request-level noise: given a segment's volume `V`, the sum of its request costs (compound Poisson) is
  ~Normal(V*mu, V*E[c^2]) by the central limit theorem; mu and E[c^2] per route come from `workload.draw_route`
  samples (mean vector and covariance of the priced quantities, so any price card reuses them);
- parameter uncertainty: with `calibration_samples=n`, each path scales a route's mean cost by a mean-1
  log-normal with sd = CV(per-request cost)/sqrt(n), the standard error of a mean fitted from n calls.

Common random numbers (`common_random_numbers=True`): every draw comes from a stream keyed by what it drives
(the calendar day for traffic noise, the route's name and the month for request noise, the route's name for
the per-request samples), not by its position in one sequence. Two forecasts with the same seed then share
the draws of everything they have in common, so the band of their difference (`kimiplan.review.diff`) is the
spread of the change itself, not of two independent runs. The default keeps one sequential stream.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import Catalog, PriceCard, load_catalog
from kimiplan.catalog.resolve import price_card
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.finance.cost import (
    expected_cost,
    free_neuron_credit,
    neuron_credit_price,
    neurons_per_token,
    price_multiplier,
)
from kimiplan.io.formats import money, percent
from kimiplan.model.scenario import COMPONENTS, Scenario
from kimiplan.workload.draws import cached_means, draw_route, route_context

if TYPE_CHECKING:
    from kimiplan.capacity.result import CapacityPlan

# Priced quantities per request, in this order: cached input, cache-miss input, reasoning, output, tool calls.
QUANTITIES = ("cached", "miss", "reasoning", "output", "tools")
UNIT_SAMPLES = 20_000
MAX_CELLS = 25_000_000  # paths x days held in memory (float64: 200 MB)
_UNIT_SEED = 404


# ---------------------------------------------------------------- validation helpers


def _check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        kind = "a whole number" if integer else "a number"
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"{name} must be {kind} in {rng}, got {value!r}")


def _month_start(value: dt.date | str | None, default: dt.date) -> dt.date:
    if value is None:
        return default.replace(day=1)
    if isinstance(value, str):
        try:
            return dt.datetime.strptime(value[:7], "%Y-%m").date()
        except ValueError:
            raise ConfigError(f"start must be YYYY-MM or a date, got {value!r}") from None
    if isinstance(value, dt.date):
        return value.replace(day=1)
    raise ConfigError(f"start must be YYYY-MM or a date, got {value!r}")


def _add_months(d: dt.date, k: int) -> dt.date:
    m = d.month - 1 + k
    return dt.date(d.year + m // 12, m % 12 + 1, 1)


def _months_between(a: dt.date, b: dt.date) -> int:
    return (b.year - a.year) * 12 + (b.month - a.month)


# ---------------------------------------------------------------- traffic calendar


def traffic_calendar(scenario: Scenario, months: int = 12, start: dt.date | str | None = None) -> pd.DataFrame:
    """Expected requests per day (all routes) over `months` calendar months, with every factor shown."""
    _check_range("months", months, 1, 120, integer=True)
    t = scenario.traffic
    first = _month_start(start, scenario.as_of)
    end = _add_months(first, int(months))
    dates = pd.date_range(first, end - dt.timedelta(days=1), freq="D")
    wd = np.asarray(t.weekday_multipliers())[dates.day_of_week]
    hol = np.array([t.holidays.get(d.date(), 1.0) for d in dates])
    ev = np.ones(len(dates))
    for e in t.events:
        stop = e.end or dt.date.max
        active = np.array([e.start <= d.date() <= stop for d in dates])
        ev = np.where(active, ev * e.factor, ev)
    month = dates.strftime("%Y-%m")
    k = np.array([_months_between(scenario.as_of, d.date()) for d in dates])
    growth = (1.0 + t.monthly_growth) ** k
    factor = wd * hol * ev
    req = t.per_day * growth * factor
    explicit = np.zeros(len(dates), dtype=bool)
    for key, total in (t.monthly_requests or {}).items():
        sel = np.asarray(month == key)
        if sel.any():
            w = factor[sel]
            # The explicit total is the month's volume; the factors only say how it spreads over the days.
            req[sel] = total * w / w.sum() if w.sum() > 0 else 0.0
            explicit[sel] = True
    return pd.DataFrame(
        {
            "date": dates.date,
            "month": month,
            "months_from_as_of": k,
            "weekday_factor": wd,
            "holiday_factor": hol,
            "event_factor": ev,
            "growth_factor": np.where(explicit, np.nan, growth),
            "explicit_month": explicit,
            "requests": req,
        }
    )


# ---------------------------------------------------------------- per-request cost statistics


@dataclass(frozen=True)
class UnitStats:
    """Per route: mean vector and covariance of the priced quantities of one request (see QUANTITIES),
    estimated from `samples` seeded draws, and the expected-tokens frame that `cost.expected_cost` prices."""

    routes: tuple[str, ...]
    shares: np.ndarray
    mean: np.ndarray  # routes x 5
    cov: np.ndarray  # routes x 5 x 5
    neurons_q: np.ndarray  # routes x 3: cached, miss, completion tokens (Cloudflare bills neurons on these)
    expected: pd.DataFrame
    samples: int


def stream_key(name: str) -> int:
    """A stable integer for a name (sha256, the same on every machine and Python run; `hash()` is salted)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def unit_stats(
    scenario: Scenario, card: PriceCard, samples: int = UNIT_SAMPLES, seed: int | None = None, keyed: bool = False
) -> UnitStats:
    """`keyed`: each route's samples come from a stream keyed by its name instead of its position, so a route
    draws the same requests whatever routes come before it (common random numbers)."""
    _check_range("unit_samples", samples, 2, 10_000_000, integer=True)
    seed = scenario.seed if seed is None else seed
    means, covs, neur, rows = [], [], [], []
    for i, route in enumerate(scenario.routes):
        key = stream_key(route.name) if keyed else i
        d = draw_route(
            route, int(samples), np.random.default_rng([seed, _UNIT_SEED, key]), route_context(scenario, route, card)
        )
        cached = d["cached_tokens"].astype(float)
        q = np.stack(
            [cached, d["input_tokens"] - cached, d["reasoning_tokens"], d["output_tokens"], d["web_search_calls"]]
        ).astype(float)
        means.append(q.mean(axis=1))
        covs.append(np.cov(q))
        neur.append([q[0].mean(), q[1].mean(), (q[2] + q[3]).mean()])
        # Same columns as workload.expected_tokens reads, from the same draws: the breakdown and the bands agree.
        row = {"route": route.name, "share": route.share}
        cached_by = cached_means(route, d)
        for c in COMPONENTS:
            row[c] = float(d[c].mean())
            row[f"{c}_cached"] = cached_by[c]
        row.update(
            reasoning_tokens=float(q[2].mean()), output_tokens=float(q[3].mean()), web_search_calls=float(q[4].mean())
        )
        rows.append(row)
    return UnitStats(
        tuple(r.name for r in scenario.routes),
        np.array([r.share for r in scenario.routes]),
        np.array(means),
        np.array(covs),
        np.array(neur),
        pd.DataFrame(rows),
        int(samples),
    )


def price_vector(card: PriceCard, batch: bool) -> np.ndarray:
    """Price per unit of each of QUANTITIES on `card` (card currency, before tax)."""
    m = float(price_multiplier(card, batch))
    per_tok = np.array(
        [float(card.cache_hit_price), float(card.input_cache_miss), float(card.output), float(card.output)]
    )
    return np.concatenate([per_tok * m / 1e6, [float(card.web_search_per_call)]])  # tool fees are not discounted


# ---------------------------------------------------------------- currency


def fx_rate(scenario: Scenario, from_cur: str, to_cur: str, base: str) -> float:
    """Units of `to_cur` per unit of `from_cur`. `scenario.exchange_rate[X]` is X per unit of `base`."""
    if from_cur == to_cur:
        return 1.0
    rates = {base: 1.0, **scenario.exchange_rate}
    for cur in (from_cur, to_cur):
        if cur not in rates:
            raise ConfigError(
                f"exchange_rate[{cur!r}] is needed to convert {from_cur} to {to_cur} (rates are per 1 {base}); "
                f"the scenario gives {dict(scenario.exchange_rate) or 'none'}"
            )
    return rates[to_cur] / rates[from_cur]


# ---------------------------------------------------------------- price segments


def _day_cards(scenario: Scenario, catalog: Catalog, dates: Sequence[dt.date]):
    cards, status, notes = [], [], []
    for d in dates:
        try:
            c = catalog.price(scenario.model, scenario.provider, scenario.resolved_region, d)
        except CatalogError as exc:
            cards.append(None)
            status.append("retired")
            notes.append(str(exc))
            continue
        cards.append(c)
        if c.reported_retired_on is not None and d >= c.reported_retired_on:
            status.append("reported retired, unconfirmed")
            notes.append(
                f"{c.model} reported retired on {c.reported_retired_on} by a third party (not confirmed officially)"
            )
        else:
            status.append("ok")
            notes.append("")
    return cards, status, notes


def _card_label(c: PriceCard | None) -> str:
    if c is None:
        return "(no price: retired)"
    return f"{c.provider}/{c.region}/{c.model} from {c.effective_from or 'start'}"


# ---------------------------------------------------------------- the result


@dataclass
class Forecast:
    """Forecast frames (tidy) and the Monte Carlo paths behind the bands."""

    scenario: Scenario
    currency: str
    months: list[str]
    quantiles: tuple[float, ...]
    budget: float | None
    daily: pd.DataFrame  # one row per day: expected requests and cost, card, status
    expected: pd.DataFrame  # month x route x component x price_class (expected value)
    monthly: pd.DataFrame  # one row per month: expected, MC mean/sd/quantiles, P(> budget), flags
    by_route: pd.DataFrame  # month x route: MC mean and quantiles
    paths: np.ndarray  # paths x months: total spend per month
    cards: list[PriceCard]
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    units: UnitStats | None = None
    avg_prices: np.ndarray | None = None  # routes x QUANTITIES, reporting currency, tax included
    free_credit: float = 0.0  # expected value of free allowances over the horizon (Cloudflare neurons)
    neurons_per_day: float = 0.0  # Cloudflare: mean neurons billed per day (0 for token-priced cards)
    _daily: _DailyParts | None = field(default=None, repr=False)

    @cached_property
    def daily_paths(self) -> np.ndarray:
        """paths x days: total spend per day of each Monte Carlo path (NaN on unpriced days)."""
        return self._daily.build()

    @property
    def dates(self) -> list[dt.date]:
        return list(self.daily["date"])

    def quantile_columns(self) -> list[str]:
        return [qlabel(q) for q in self.quantiles]

    @property
    def parameter_note(self) -> str:
        """ "bands include the calibration's sampling uncertainty ...: ±x % on route R (...)", or "" without."""
        return self.settings.get("parameter_uncertainty_note") or ""

    def next_full_month(self) -> int:
        """The row of `monthly` (and column of `paths`) of the first month that starts on or after the
        scenario's `as_of`: a month already under way on that date is partly history. The month the report's
        cost card quotes and `kimiplan diff` / `check` compare; the first row when no later month is forecast."""
        as_of = self.scenario.as_of
        for i, m in enumerate(self.monthly["month"]):
            if dt.date.fromisoformat(f"{m}-01") >= as_of:
                return i
        return 0

    def frames(self) -> dict[str, pd.DataFrame]:
        """The views an export writes, one per sheet."""
        return {"monthly": self.monthly, "by_route": self.by_route, "expected": self.expected, "daily": self.daily}

    # -- how it presents itself
    def _verdict(self) -> str:
        bad = self.monthly[self.monthly["status"] != "ok"]
        return "every month ok" if bad.empty else f"from {bad['month'].iloc[0]}: {bad['status'].iloc[0]}"

    def __repr__(self) -> str:
        m = self.monthly
        return (
            f"<Forecast {self.scenario.name}: {len(self.months)} months from {self.months[0]}, "
            f"{money(m['expected'].mean(), self.currency, 0)} a month on average; {self._verdict()}; "
            "summary() for the table>"
        )

    def summary(self):
        """The forecast at a glance: totals and the monthly table (expected, band, budget, status)."""
        from kimiplan.io.tables import SummaryTable

        m = self.monthly
        cur = self.currency
        facts = [
            ("Scenario", f"{self.scenario.name} ({self.scenario.model} on {self.scenario.provider})"),
            ("Months", f"{len(self.months)}, {self.months[0]} to {self.months[-1]}"),
            ("Total, expected", money(m["expected"].sum(), cur, 0)),
            ("Average month", money(m["expected"].mean(), cur, 0)),
            ("Budget", "none" if self.budget is None else f"{money(self.budget, cur, 0)} a month"),
            ("Verdict", self._verdict()),
            ("Paths, seed", f"{self.settings.get('paths', 0):,} Monte Carlo paths, seed {self.settings.get('seed')}"),
        ]
        cols = ["month", "requests", "expected", *self.quantile_columns()]
        cols += ["p_over_budget"] if "p_over_budget" in m else []
        cols += ["status", "currency"]
        notes = [
            f"Expected: the exact mean of each month's bill; {', '.join(self.quantile_columns())}: quantiles of the "
            "simulated months (daily traffic, growth and token sizes vary).",
            *([f"The {self.parameter_note}."] if self.parameter_note else []),
            *self.warnings,
        ]
        return SummaryTable(f"Spend forecast: {self.scenario.name} ({cur})", facts, [("By month", m[cols], cur)], notes)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


@dataclass(frozen=True)
class _DailyParts:
    g: np.ndarray | None  # paths x days traffic multipliers (None: no daily noise)
    lam: np.ndarray
    seg_of_day: np.ndarray
    cost_per_vol: np.ndarray  # paths x segs: segment cost per unit of (unlevelled) volume
    credit_days: np.ndarray | None

    def build(self) -> np.ndarray:
        vol = self.lam[None, :] if self.g is None else self.g * self.lam[None, :]
        with np.errstate(invalid="ignore"):
            out = self.cost_per_vol[:, self.seg_of_day] * vol
        if self.credit_days is not None:
            out = out - self.credit_days
        return out


def qlabel(q: float) -> str:
    return f"P{q * 100:g}"


# ---------------------------------------------------------------- stage 1: time segments


@dataclass(frozen=True)
class _Segments:
    """Runs of days in the same month with the same price card and status, as arrays over days and months."""

    segs: list[dict]  # key, month, card, status, first day, note
    seg_of_day: np.ndarray  # days -> segment index
    lam: np.ndarray  # expected requests per day (all routes)
    volume: np.ndarray  # expected requests per segment
    months: list[str]  # calendar months, in order
    seg_month: np.ndarray  # segment -> month index
    m_first: np.ndarray  # first segment of each month (segments are contiguous within a month)
    seg_first: np.ndarray  # first day of each segment (segments are runs of consecutive days)
    month_k: np.ndarray  # per segment: months from as_of (how far the growth uncertainty has spread)

    def day_sum(self, x: np.ndarray) -> np.ndarray:
        """Sum the last axis (days) within each segment, in float64 and in a fixed order: a matrix product with an
        indicator did this before, but a threaded BLAS sums in an order that depends on the thread count, and the
        last digits moved (a notebook's P50 flipped between $5,896.91 and $5,896.92 under load)."""
        return np.add.reduceat(np.asarray(x, dtype=np.float64), self.seg_first, axis=-1)

    @property
    def n(self) -> int:
        return len(self.segs)

    def month_ind(self) -> np.ndarray:
        out = np.zeros((self.n, len(self.months)))
        out[np.arange(self.n), self.seg_month] = 1.0
        return out


def _segments(scenario: Scenario, cal: pd.DataFrame, cards, status, notes) -> _Segments:
    dates, month_of = list(cal["date"]), list(cal["month"])
    seg_of_day = np.zeros(len(dates), dtype=np.int64)
    segs: list[dict] = []
    for i, d in enumerate(dates):
        key = (month_of[i], None if cards[i] is None else cards[i].price_key, status[i])
        if not segs or segs[-1]["key"] != key:
            segs.append(
                {"key": key, "month": month_of[i], "card": cards[i], "status": status[i], "first": d, "note": notes[i]}
            )
        seg_of_day[i] = len(segs) - 1
    lam = cal["requests"].to_numpy()
    months = list(dict.fromkeys(month_of))
    seg_month = np.array([months.index(s["month"]) for s in segs])
    return _Segments(
        segs=segs,
        seg_of_day=seg_of_day,
        lam=lam,
        volume=np.bincount(seg_of_day, weights=lam, minlength=len(segs)),
        months=months,
        seg_month=seg_month,
        m_first=np.flatnonzero(np.r_[True, seg_month[1:] != seg_month[:-1]]),
        seg_first=np.flatnonzero(np.r_[True, seg_of_day[1:] != seg_of_day[:-1]]),
        month_k=np.array([abs(_months_between(scenario.as_of, s["first"])) for s in segs], dtype=float),
    )


# ---------------------------------------------------------------- stage 2: segment prices


@dataclass(frozen=True)
class _SegmentPrices:
    """Per segment and route, one request's cost moments in the reporting currency, tax included."""

    mu: np.ndarray  # segs x routes: mean cost of one request
    m2: np.ndarray  # segs x routes: second moment
    prices: np.ndarray  # segs x routes x QUANTITIES: unit prices
    neuron_rate: np.ndarray  # segs: reporting currency per neuron (0 where the card bills tokens)
    free_neurons: np.ndarray  # segs: free neurons per day
    neurons_per_req: np.ndarray  # segs: mean neurons per request of the route mix


def _segment_prices(
    scenario: Scenario, seg: _Segments, units: UnitStats, currency: str, base_cur: str
) -> _SegmentPrices:
    n_segs, n_routes = seg.n, len(units.routes)
    tax = 1.0 + scenario.tax_rate
    mu = np.full((n_segs, n_routes), np.nan)
    m2 = np.full((n_segs, n_routes), np.nan)
    prices = np.full((n_segs, n_routes, len(QUANTITIES)), np.nan)
    neuron_rate, free_neurons, neurons_per_req = np.zeros(n_segs), np.zeros(n_segs), np.zeros(n_segs)
    for s, sg in enumerate(seg.segs):
        c = sg["card"]
        if c is None:
            continue
        rate = fx_rate(scenario, c.currency, currency, base_cur) * tax
        for r, route in enumerate(scenario.routes):
            p = price_vector(c, route.batch) * rate
            prices[s, r] = p
            mu[s, r] = p @ units.mean[r]
            m2[s, r] = p @ units.cov[r] @ p + mu[s, r] ** 2
        per_neuron = neuron_credit_price(c)
        if per_neuron:
            neuron_rate[s] = per_neuron * fx_rate(scenario, "USD", currency, base_cur) * tax
            free_neurons[s] = c.free_neurons_per_day
            neurons_per_req[s] = float(units.shares @ (units.neurons_q @ neurons_per_token(c)))
    return _SegmentPrices(mu, m2, prices, neuron_rate, free_neurons, neurons_per_req)


# ---------------------------------------------------------------- stage 3: Monte Carlo paths


class _SequentialDraws:
    """One generator, drawn in a fixed order (gamma, level, calibration, cost): the default, seeded runs repeat."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def gamma(self, shape: float, n_paths: int, seg: _Segments) -> np.ndarray:
        return self.rng.standard_gamma(shape, size=(n_paths, len(seg.lam)), dtype=np.float32)

    def level(self, n_paths: int) -> np.ndarray:
        return self.rng.standard_normal(n_paths)

    def theta(self, n_paths: int, routes: tuple[str, ...]) -> np.ndarray:
        return self.rng.standard_normal((n_paths, len(routes)))

    def cost(self, n_paths: int, seg: _Segments, routes: tuple[str, ...]) -> np.ndarray:
        return self.rng.standard_normal((n_paths, seg.n, len(routes)))


class _KeyedDraws:
    """Common random numbers: each draw from a stream named by what it drives (the day, the route, the month),
    so two forecasts with the same seed draw the same numbers for the days and routes they share."""

    def __init__(self, seed: int, dates: Sequence[dt.date]):
        self.seed = seed
        self.dates = list(dates)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 4, *key])

    def gamma(self, shape: float, n_paths: int, seg: _Segments) -> np.ndarray:
        out = np.empty((n_paths, len(self.dates)), dtype=np.float32)
        for j, d in enumerate(self.dates):
            out[:, j] = self._rng(1, d.toordinal()).standard_gamma(shape, size=n_paths, dtype=np.float32)
        return out

    def level(self, n_paths: int) -> np.ndarray:
        return self._rng(2).standard_normal(n_paths)

    def theta(self, n_paths: int, routes: tuple[str, ...]) -> np.ndarray:
        return np.stack([self._rng(3, stream_key(r)).standard_normal(n_paths) for r in routes], axis=1)

    def cost(self, n_paths: int, seg: _Segments, routes: tuple[str, ...]) -> np.ndarray:
        out = np.empty((n_paths, seg.n, len(routes)))
        for j, month in enumerate(seg.months):
            ids = np.flatnonzero(seg.seg_month == j)
            y, m = (int(x) for x in month.split("-"))
            for r, name in enumerate(routes):
                out[:, ids, r] = self._rng(4, stream_key(name), y * 12 + m).standard_normal((n_paths, len(ids)))
        return out


@dataclass(frozen=True)
class _Paths:
    cost_prs: np.ndarray  # paths x segs x routes: spend (reporting currency)
    credit_seg: np.ndarray  # paths x segs: free-allowance credit
    vol_raw: np.ndarray  # paths x segs: volume before the growth level
    g: np.ndarray | None  # paths x days: daily traffic multipliers (None without daily noise)
    credit_days: np.ndarray | None  # paths x days: free-allowance credit per day


def _simulate_paths(
    draws: _SequentialDraws | _KeyedDraws,
    seg: _Segments,
    sp: _SegmentPrices,
    units: UnitStats,
    n_paths: int,
    daily_cv: float,
    growth_sd: float,
    calibration_samples,
    param_rel_sd: np.ndarray | None = None,
) -> _Paths:
    """Traffic noise per day, a growth level per path, parameter noise per route, then each segment's cost by the
    central limit theorem. `draws` supplies the random numbers (one sequence, or keyed streams)."""
    n_routes = len(units.routes)
    if daily_cv > 0:
        shape = 1.0 / daily_cv**2
        # float32 halves the time of the largest draw; a month sums ~30 of them, far inside float32 precision.
        g = draws.gamma(shape, n_paths, seg)
        g *= np.float32(1.0 / shape)
        gl = g * seg.lam.astype(np.float32)[None, :]  # paths x days: that day's volume before the level
        vol_raw = seg.day_sum(gl)  # paths x segs
    else:
        g = gl = None
        vol_raw = np.broadcast_to(seg.volume, (n_paths, seg.n)).copy()
    if growth_sd > 0:
        z = draws.level(n_paths)[:, None]
        sig = growth_sd * seg.month_k[None, :]
        level = np.exp(sig * z - 0.5 * sig**2)  # mean 1: the uncertainty does not move the expectation
    else:
        level = np.ones((1, seg.n))
    vol_seg = vol_raw * level  # paths x segs, all routes

    theta = np.ones((n_paths, n_routes))
    s_mean = np.zeros(n_routes)
    if calibration_samples is not None:
        ns = _calibration_n(calibration_samples, units.routes)
        ref = next((s for s in range(seg.n) if seg.segs[s]["card"] is not None), 0)
        mu, m2 = sp.mu[ref], sp.m2[ref]
        cv = np.sqrt(np.maximum(m2 - mu**2, 0.0)) / np.where(mu > 0, mu, np.inf)
        s_mean = np.where(np.isfinite(ns), cv / np.sqrt(ns), 0.0)
    if param_rel_sd is not None:
        # A measured route: its mean cost per request is known to its calibration's sampling error, drawn
        # once per path (parameter uncertainty, on top of the traffic noise below); it replaces the guess above.
        s_mean = np.where(np.isfinite(param_rel_sd), param_rel_sd, s_mean)
    if calibration_samples is not None or param_rel_sd is not None:
        theta = np.exp(s_mean[None, :] * draws.theta(n_paths, units.routes) - 0.5 * s_mean[None, :] ** 2)

    # Segment cost per path and route: Normal(V*mu*theta, V*E[c^2]*theta^2) (CLT over the segment's requests).
    v_rs = vol_seg[:, :, None] * units.shares[None, None, :]  # paths x segs x routes
    mean_prs = v_rs * sp.mu[None, :, :] * theta[:, None, :]
    sd_prs = np.sqrt(v_rs * sp.m2[None, :, :]) * theta[:, None, :]
    cost_prs = mean_prs + sd_prs * draws.cost(n_paths, seg, units.routes)
    credit_days = None
    credit_seg = np.zeros((n_paths, seg.n))
    if sp.neuron_rate.any():
        day_vol = (gl if gl is not None else seg.lam[None, :]) * level[:, seg.seg_of_day]
        d = seg.seg_of_day
        credit_days = free_neuron_credit(
            day_vol * sp.neurons_per_req[d][None, :], sp.free_neurons[d][None, :], sp.neuron_rate[d][None, :]
        )
        credit_seg = seg.day_sum(credit_days)
    return _Paths(cost_prs, credit_seg, vol_raw, g, credit_days)


# ---------------------------------------------------------------- stage 4: output tables


def _warnings(seg: _Segments) -> list[str]:
    out, seen = [], set()
    for sg in seg.segs:
        # One warning per status and card: a retirement is reported once, from its first day.
        key = (sg["status"], sg["key"][1])
        if sg["status"] != "ok" and key not in seen:
            seen.add(key)
            out.append(f"from {sg['first']}: {sg['status']}: {sg['note']}")
    return out


def _expected_frame(
    scenario: Scenario,
    seg: _Segments,
    sp: _SegmentPrices,
    units: UnitStats,
    free_credit_day: np.ndarray,
    currency: str,
    base_cur: str,
) -> pd.DataFrame:
    """Expected spend by month, route, component and price class: `cost.expected_cost` prices the same per-route
    means the bands use (one source of arithmetic)."""
    rows = []
    cost_cache: dict[tuple, pd.DataFrame] = {}

    def row(sg, route, component, price_class, requests, tokens, calls, cost, card):
        return {
            "month": sg["month"],
            "segment_start": sg["first"],
            "route": route,
            "component": component,
            "price_class": price_class,
            "requests": requests,
            "tokens": tokens,
            "calls": calls,
            "cost": cost,
            "card": _card_label(card),
            "status": sg["status"],
        }

    for s, sg in enumerate(seg.segs):
        c = sg["card"]
        if c is None:
            rows += [
                row(sg, name, "(all)", "(unpriced)", seg.volume[s] * units.shares[r], np.nan, np.nan, np.nan, None)
                for r, name in enumerate(units.routes)
            ]
            continue
        if c.price_key not in cost_cache:
            cost_cache[c.price_key] = expected_cost(scenario, card=c, expected=units.expected, requests_per_day=1.0)
        ec = cost_cache[c.price_key]
        rate = fx_rate(scenario, c.currency, currency, base_cur)
        reqs = ec["requests_per_day"].to_numpy() * seg.volume[s]
        for r, n_req in zip(ec.to_dict("records"), reqs):
            rows.append(
                row(
                    sg,
                    r["route"],
                    r["component"],
                    r["price_class"],
                    n_req,
                    r["tokens_per_request"] * n_req,
                    r["calls_per_request"] * n_req,
                    r["cost_per_request"] * n_req * rate,
                    c,
                )
            )
        if sp.neuron_rate[s] > 0:
            credit = -float(free_credit_day[seg.seg_of_day == s].sum())
            rows.append(row(sg, "(account)", "free_allowance", "free_neurons", 0.0, 0.0, 0.0, credit, c))
    out = pd.DataFrame(rows)
    out["currency"] = currency
    return out


def _monthly_frame(
    seg: _Segments,
    sp: _SegmentPrices,
    units: UnitStats,
    month_paths: np.ndarray,
    free_credit_day: np.ndarray,
    quantiles: tuple[float, ...],
    budget: float | None,
    currency: str,
) -> pd.DataFrame:
    # Expected cost per month (closed form) and the standard error of that expectation from the finite unit
    # samples (per-request cost sd / sqrt(unit_samples), times the month's volume, routes independent).
    with np.errstate(invalid="ignore"):
        vol_sr = seg.volume[:, None] * units.shares[None, :]
        exp_month = np.add.reduceat((vol_sr * sp.mu).sum(axis=1) - seg.day_sum(free_credit_day), seg.m_first)
        unit_var = np.maximum(sp.m2 - sp.mu**2, 0.0) / units.samples
        exp_se_month = np.sqrt(np.add.reduceat((vol_sr**2 * unit_var).sum(axis=1), seg.m_first))
    month_ind = seg.month_ind()
    vol_month = seg.volume @ month_ind
    days_month = np.bincount(seg.seg_of_day, minlength=seg.n) @ month_ind
    n_paths = month_paths.shape[0]
    rows = []
    for j, m in enumerate(seg.months):
        seg_ids = [s for s in range(seg.n) if seg.seg_month[s] == j]
        st = [seg.segs[s]["status"] for s in seg_ids]
        col = month_paths[:, j]
        r = {
            "month": m,
            "days": int(days_month[j]),
            "requests": vol_month[j],
            "expected": exp_month[j],
            "expected_se": exp_se_month[j],
            "mean": float(col.mean()),
            "sd": float(col.std(ddof=1)) if n_paths > 1 else 0.0,
            "mc_se": float(col.std(ddof=1) / np.sqrt(n_paths)) if n_paths > 1 else np.nan,
        }
        for q in quantiles:
            r[qlabel(q)] = float(np.quantile(col, q)) if np.isfinite(col).all() else np.nan
        if budget is not None:
            r["budget"] = float(budget)
            r["p_over_budget"] = float((col > budget).mean()) if np.isfinite(col).all() else np.nan
        r["price_change"] = len({seg.segs[s]["card"].price_key for s in seg_ids if seg.segs[s]["card"] is not None}) > 1
        r["retired_days"] = int(sum((seg.seg_of_day == s).sum() for s in seg_ids if seg.segs[s]["status"] == "retired"))
        r["price_status"] = (
            "retired (not priced)"
            if "retired" in st
            else ("reported retired, unconfirmed" if "reported retired, unconfirmed" in st else "ok")
        )
        r["currency"] = currency
        rows.append(r)
    return pd.DataFrame(rows)


def _by_route_frame(
    months: list[str], routes: tuple[str, ...], route_month: np.ndarray, quantiles: tuple[float, ...], currency: str
) -> pd.DataFrame:
    rows = []
    for j, m in enumerate(months):
        for r, name in enumerate(routes):
            col = route_month[:, j, r]
            finite = np.isfinite(col).all()
            rows.append(
                {
                    "month": m,
                    "route": name,
                    "mean": float(col.mean()),
                    **{qlabel(q): float(np.quantile(col, q)) if finite else np.nan for q in quantiles},
                    "currency": currency,
                }
            )
    return pd.DataFrame(rows)


def _daily_frame(cal, seg: _Segments, sp: _SegmentPrices, units: UnitStats, free_credit_day, cards, status, currency):
    daily = cal[["date", "month", "weekday_factor", "holiday_factor", "event_factor", "requests"]].copy()
    with np.errstate(invalid="ignore"):
        day_mu = (sp.mu[seg.seg_of_day] * units.shares[None, :]).sum(axis=1)
    daily["expected_cost"] = seg.lam * day_mu - free_credit_day
    daily["card"] = [_card_label(c) for c in cards]
    daily["status"] = status
    daily["currency"] = currency
    return daily


# ---------------------------------------------------------------- main entry point


def _check_forecast_args(paths, daily_cv, growth_sd, budget, quantiles) -> tuple[float, ...]:
    _check_range("paths", paths, 1, 1_000_000, integer=True)
    _check_range("daily_cv", daily_cv, 0, 5)
    _check_range("growth_sd", growth_sd, 0, 1)
    if budget is not None:
        _check_range("budget", budget, 0, 1e15, lo_open=True)
    quantiles = tuple(float(q) for q in quantiles)
    if not quantiles:
        raise ConfigError("quantiles must list at least one value in (0, 1), got none")
    for q in quantiles:
        _check_range("quantiles", q, 0, 1, lo_open=True)
        if q >= 1:
            raise ConfigError(f"quantiles must be in (0, 1), got {q}")
    return quantiles


def forecast(
    scenario: Scenario,
    months: int = 12,
    *,
    start: dt.date | str | None = None,
    catalog: Catalog | None = None,
    paths: int = 10_000,
    seed: int | None = None,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    budget: float | None = None,
    daily_cv: float = 0.15,
    growth_sd: float = 0.02,
    calibration_samples: int | Mapping[str, int] | None = None,
    parameter_uncertainty: Mapping[str, float] | bool | None = True,
    currency: str | None = None,
    fx_base: str | None = None,
    unit_samples: int = UNIT_SAMPLES,
    units: UnitStats | None = None,
    capacity: bool | CapacityPlan = True,
    common_random_numbers: bool = False,
) -> Forecast:
    """Spend per day and per calendar month over `months` months from the month of `scenario.as_of`.

    `capacity`: each month's `capacity_status` (ok / near_limit / over_capacity) from the capacity plan of the
    scenario's tier (computed here when True; pass a `CapacityPlan` to reuse one, False to skip).

    `parameter_uncertainty` (default True): each calibrated route's mean cost per request is known only to its
    calibration's sampling error (`route.calibrated.cost_rel_se`); each path draws the route's mean from it, so
    the bands carry the calibration's precision as well as the traffic noise, and `parameter_note` says so. A
    mapping route -> relative standard error sets it for those routes (e.g.
    `kimiplan.calibration.fitters.cost_uncertainty(cal)`; 0 turns one off), the others keep their calibration's;
    False (or None) turns it off everywhere. `calibration_samples` instead guesses it from the scenario's own
    spread and a number of calls (for routes with neither).

    `budget` is per month in the reporting `currency` (default: the card currency on `as_of`). `fx_base` is the
    currency `scenario.exchange_rate` is quoted against (default: the card currency on `as_of`)."""
    quantiles = _check_forecast_args(paths, daily_cv, growth_sd, budget, quantiles)
    catalog = catalog or load_catalog()
    seed = scenario.seed if seed is None else seed
    _check_range("seed", seed, 0, 2**63 - 1, integer=True)

    cal = traffic_calendar(scenario, months, start)
    dates = list(cal["date"])
    n_paths = int(paths)
    if len(dates) * n_paths > MAX_CELLS:
        raise ConfigError(f"paths x days = {n_paths:,} x {len(dates):,} exceeds {MAX_CELLS:,}; lower paths or months")
    cards, status, notes = _day_cards(scenario, catalog, dates)
    priced = [c for c in cards if c is not None]
    try:
        ref_card = price_card(scenario, catalog)
    except CatalogError:
        if not priced:
            raise CatalogError(
                f"model {scenario.model!r} ({scenario.provider}) has no price on any day from "
                f"{dates[0]} to {dates[-1]}: {notes[0]}"
            ) from None
        ref_card = priced[0]
    base_cur = fx_base or ref_card.currency
    currency = currency or ref_card.currency
    units = units or unit_stats(scenario, ref_card, unit_samples, seed, keyed=common_random_numbers)
    if units.routes != tuple(r.name for r in scenario.routes):
        raise ConfigError(f"units are for routes {units.routes}, the scenario has {[r.name for r in scenario.routes]}")

    param, param_note = parameter_spread(scenario, parameter_uncertainty)
    seg = _segments(scenario, cal, cards, status, notes)
    sp = _segment_prices(scenario, seg, units, currency, base_cur)
    draws = _KeyedDraws(seed, dates) if common_random_numbers else _SequentialDraws(np.random.default_rng([seed, 4]))
    mc = _simulate_paths(
        draws,
        seg,
        sp,
        units,
        n_paths,
        daily_cv,
        growth_sd,
        calibration_samples,
        _param_rel_sd(param, units.routes),
    )
    d = seg.seg_of_day
    free_credit_day = (
        free_neuron_credit(seg.lam * sp.neurons_per_req[d], sp.free_neurons[d], sp.neuron_rate[d])
        if sp.neuron_rate.any()
        else np.zeros(len(dates))
    )
    # Segments are contiguous within a month: reduceat sums them and keeps a NaN (unpriced) inside its month,
    # where a matrix product would spread NaN * 0 to every month.
    with np.errstate(invalid="ignore"):
        month_paths = np.add.reduceat(mc.cost_prs.sum(axis=2) - mc.credit_seg, seg.m_first, axis=1)
        route_month = np.add.reduceat(mc.cost_prs, seg.m_first, axis=1)  # paths x months x routes
        # Spend per day (built on demand): a segment's cost spread over its days by each day's volume share.
        cost_per_vol = mc.cost_prs.sum(axis=2) / np.where(mc.vol_raw > 0, mc.vol_raw, 1.0)
        # Volume-weighted unit prices over the horizon (for the drivers of a difference between variants).
        avg_prices = np.einsum("s,srk->rk", seg.volume, sp.prices) / seg.volume.sum()

    warnings_ = _warnings(seg)  # the capacity columns may add one
    capacity_notes: dict = {}
    monthly = month_status(
        _with_capacity(
            _monthly_frame(seg, sp, units, month_paths, free_credit_day, quantiles, budget, currency),
            cal,
            scenario,
            catalog,
            capacity,
            warnings_,
            capacity_notes,
        ),
        scenario.tier,
    )
    return Forecast(
        scenario=scenario,
        currency=currency,
        months=seg.months,
        quantiles=quantiles,
        budget=None if budget is None else float(budget),
        daily=_daily_frame(cal, seg, sp, units, free_credit_day, cards, status, currency),
        expected=_expected_frame(scenario, seg, sp, units, free_credit_day, currency, base_cur),
        monthly=monthly,
        by_route=_by_route_frame(seg.months, units.routes, route_month, quantiles, currency),
        paths=month_paths,
        _daily=_DailyParts(mc.g, seg.lam, d, cost_per_vol, mc.credit_days),
        cards=list({c.price_key: c for c in priced}.values()),
        warnings=warnings_,
        units=units,
        avg_prices=avg_prices,
        free_credit=float(free_credit_day.sum()),
        neurons_per_day=float((seg.lam * sp.neurons_per_req[d]).mean()),
        settings={
            "months": int(months),
            "start": dates[0],
            "paths": n_paths,
            "seed": seed,
            "quantiles": list(quantiles),
            "budget": budget,
            "daily_cv": daily_cv,
            "growth_sd": growth_sd,
            "calibration_samples": calibration_samples
            if not isinstance(calibration_samples, Mapping)
            else dict(calibration_samples),
            "parameter_uncertainty": param or None,
            "parameter_uncertainty_note": param_note,
            "currency": currency,
            "fx_base": base_cur,
            "unit_samples": units.samples,
            "tax_rate": scenario.tax_rate,
            "common_random_numbers": bool(common_random_numbers),
            **capacity_notes,
        },
    )


def _with_capacity(
    monthly, cal, scenario, catalog, capacity, warnings_: list[str], notes: dict | None = None
) -> pd.DataFrame:
    """Adds, per month, the traffic multiple against today at its busiest day (growth x events x holidays,
    or the explicit volume; the weekday profile is already in the plan's busiest minute), the plan's
    `capacity_status` at that multiple, and on over-capacity months the tier to move to and the cumulative
    recharge that unlocks it."""
    from kimiplan.capacity.plan import plan as capacity_plan

    out = monthly.copy()
    out["traffic_scale"] = np.nan
    out["capacity_status"] = None
    out["upgrade_to"] = None
    out["upgrade_recharge"] = np.nan
    if capacity is False or (capacity is True and scenario.tier is None):
        return out
    try:
        cap = capacity_plan(scenario, catalog) if capacity is True else capacity
    except (ConfigError, CatalogError) as exc:
        warnings_.append(f"capacity status unavailable: {exc}")
        return out
    if cap.tier is None:
        return out
    h = cap.headroom()
    if notes is not None and h is not None:
        # The one headroom sentence (CapacityPlan.headroom), for the export's assumptions sheet.
        notes["capacity_headroom"] = h.sentence
    base = scenario.traffic.per_day * cal["weekday_factor"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        day_scale = np.where(base > 0, cal["requests"].to_numpy() / base, 0.0)
    scale = pd.Series(day_scale).groupby(cal["month"].to_numpy()).max()
    out["traffic_scale"] = out["month"].map(scale).astype(float)
    out["capacity_status"] = [cap.capacity_status(float(x)) for x in out["traffic_scale"]]
    over = out["capacity_status"] == "over_capacity"
    up = cap.upgrade
    if up is not None and up.get("to") is not None:
        out.loc[over, "upgrade_to"] = up["to"]
        out.loc[over, "upgrade_recharge"] = up["recharge"]
    if over.any():
        first = out.loc[over, "month"].iloc[0]
        move = (
            f"; move to {up['to']} (cumulative recharge {money(up['recharge'], up['recharge_currency'], 0)})"
            if (up is not None and up.get("to") is not None and up.get("recharge") is not None)
            else ""
        )
        target = percent(cap.target, trim=True)
        warnings_.append(
            f"from {first}: over capacity on {cap.tier} (refusals above {target} at the busiest minute){move}"
        )
    return out


def parameter_spread(scenario: Scenario, u: Mapping[str, float] | bool | None = True) -> tuple[dict[str, float], str]:
    """(route -> relative standard error of its mean cost per request that the forecast draws, the sentence that
    says so) for `forecast`'s `parameter_uncertainty` (see there); an empty dict and "" when none applies."""
    routes = [r.name for r in scenario.routes]
    if u is None or u is False:
        return {}, ""
    given: Mapping[str, float] = {}
    if u is not True:
        if not isinstance(u, Mapping):
            raise ConfigError(
                f"parameter_uncertainty must be True, False or map route names to relative errors, got {u!r}"
            )
        unknown = set(u) - set(routes)
        if unknown:
            raise ConfigError(f"parameter_uncertainty names unknown routes {sorted(unknown)}; routes: {routes}")
        for r, v in u.items():
            _check_range(f"parameter_uncertainty[{r!r}]", v, 0, 1)
        given = u
    out: dict[str, float] = {}
    parts: list[str] = []
    for r in scenario.routes:
        c = r.calibrated
        if r.name in given:
            v = float(given[r.name])
            if v > 0:
                out[r.name] = v
                parts.append(f"±{percent(Z95_TWO_SIDED * v, 1)} on route {r.name} (given)")
            elif c is not None:
                out[r.name] = 0.0  # explicitly off for this route: not its calibration's either
        elif c is not None and c.cost_rel_se is not None and c.cost_rel_se > 0:
            out[r.name] = float(c.cost_rel_se)
            half = c.cost_rel_error if c.cost_rel_error is not None else Z95_TWO_SIDED * c.cost_rel_se
            conf = percent(c.confidence if c.confidence is not None else 0.95, trim=True)
            parts.append(f"±{percent(half, 1)} on route {r.name} ({c.calls:,} calls, {conf})")
    if not parts:
        return out, ""
    return out, (
        "bands include the calibration's sampling uncertainty of the mean cost per request: " + ", ".join(parts)
    )


Z95_TWO_SIDED = 1.959963984540054


def _param_rel_sd(u: Mapping[str, float] | None, routes: Sequence[str]) -> np.ndarray | None:
    if not u:
        return None
    return np.array([float(u[r]) if r in u else np.nan for r in routes])


def month_status(monthly: pd.DataFrame, tier: str | None, runs_out: dt.date | None = None) -> pd.DataFrame:
    """The `status` of each month from everything that can stop the bill or the traffic: the price card
    (`price_status`), capacity on the scenario's tier (`capacity_status`), the budget (more likely over than
    not) and the prepaid balance (`runs_out`, its median run-out date). "ok" only when none of them bites;
    otherwise the reasons, most severe first, separated by "; "."""
    out = monthly.copy()
    on = f" on {tier}" if tier else ""
    reasons = []
    for r in out.itertuples(index=False):
        why = []
        price = getattr(r, "price_status", "ok")
        if price != "ok":
            why.append(price)
        if runs_out is not None:
            start = dt.date.fromisoformat(f"{r.month}-01")
            if runs_out < start:
                why.append("balance spent")
            elif runs_out.strftime("%Y-%m") == r.month:
                why.append(f"balance runs out {runs_out:%Y-%m-%d}")
        cap = getattr(r, "capacity_status", None)
        if cap == "over_capacity":
            why.append(f"over capacity{on}")
        elif cap == "near_limit":
            why.append(f"near the limit{on}")
        p = getattr(r, "p_over_budget", None)
        if p is not None and not pd.isna(p) and p > 0.5:
            why.append(f"over budget likely ({percent(p, trim=True)})")
        reasons.append("; ".join(why) if why else "ok")
    out["status"] = reasons
    return out


def _calibration_n(n: int | Mapping[str, int], routes: Sequence[str]) -> np.ndarray:
    if isinstance(n, Mapping):
        unknown = set(n) - set(routes)
        if unknown:
            raise ConfigError(f"calibration_samples names unknown routes {sorted(unknown)}; routes: {list(routes)}")
        vals = [n.get(r, np.inf) for r in routes]
        for r, v in zip(routes, vals):
            if v != np.inf:
                _check_range(f"calibration_samples[{r!r}]", v, 2, 1e12, integer=True)
        return np.array(vals, dtype=float)
    _check_range("calibration_samples", n, 2, 1e12, integer=True)
    return np.full(len(routes), float(n))


# ---------------------------------------------------------------- summaries


def monthly_by(fc: Forecast, by: str = "route") -> pd.DataFrame:
    """Expected spend per month by `route`, `component` or `price_class` (wide: one column per group)."""
    if by not in ("route", "component", "price_class"):
        raise ConfigError(f"by must be route, component or price_class, got {by!r}")
    out = fc.expected.pivot_table(
        index="month", columns=by, values="cost", aggfunc=lambda s: s.sum(min_count=1), sort=False
    )
    return out.reset_index()
