"""Arrival rates and arrival times.

`rate_per_minute` turns a scenario's traffic (mean rate, hourly profile and weekday factors in its time zone,
daily bursts) into a rate per simulated minute; the planner reads it for week averages and the simulator for
arrivals. `poisson_arrivals` draws a Poisson process with those rates by time-rescaling a unit-rate process
(exponential gaps, cumulative sum, inverse of the cumulative intensity): exact for piecewise-constant rates,
and it needs no sort.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from kimiplan.errors import ConfigError, ScenarioError
from kimiplan.model.settings import CHUNK


def _tz_offset_s(tz: str, on: dt.date) -> float:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError(f"traffic.timezone: unknown time zone {tz!r}") from None
    # One offset for the whole run: a DST switch inside the horizon shifts the profile by an hour at most.
    return dt.datetime(on.year, on.month, on.day, tzinfo=dt.UTC).astimezone(zone).utcoffset().total_seconds()


def rate_per_minute(traffic, horizon_s: float, start: dt.date) -> np.ndarray:
    """Arrival rate (requests/s) in each simulated minute; time 0 is 00:00 UTC on `start`.

    The mean rate times the hourly profile and weekday factor of the local (traffic.timezone) time, times
    every daily burst that covers the minute."""
    n = int(math.ceil(horizon_s / 60.0))
    off_min = _tz_offset_s(traffic.timezone, start) / 60.0
    local = np.arange(n) + off_min  # local minutes since 00:00 of `start` in the local calendar
    day = np.floor(local / 1440.0).astype(np.int64)
    mod = local - day * 1440.0
    hour = np.floor(mod / 60.0).astype(np.int64)
    hourly = np.asarray(traffic.hourly_factors())
    weekday = np.asarray(traffic.weekday_multipliers())
    rate = traffic.mean_rps * hourly[hour] * weekday[(start.weekday() + day) % 7]
    for b in traffic.bursts:
        b0 = b.start.hour * 60 + b.start.minute
        inside = ((mod - b0) % 1440.0) < b.minutes
        rate = np.where(inside, rate * b.factor, rate)
    return rate


def poisson_arrivals(
    rate_min: np.ndarray, horizon_s: float, rng: np.random.Generator, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
    """Sorted arrival times of a Poisson process with per-minute rates, in chunks of about `chunk`."""
    if np.any(rate_min < 0) or not np.all(np.isfinite(rate_min)):
        raise ConfigError("rate: arrival rates must be finite and >= 0")
    knots_t = np.minimum(np.arange(rate_min.size + 1) * 60.0, horizon_s)
    knots_L = np.concatenate([[0.0], np.cumsum(rate_min * np.diff(knots_t))])
    total = knots_L[-1]
    constant = bool(np.all(rate_min == rate_min[0]))
    u0 = 0.0
    while u0 < total:
        u = rng.standard_exponential(chunk)
        np.cumsum(u, out=u)
        u += u0
        u0 = float(u[-1])
        if u0 >= total:
            u = u[: np.searchsorted(u, total, side="left")]
        # Time-rescaling: t = L^{-1}(u); L is piecewise linear, so its inverse is too.
        t = u / rate_min[0] if constant else np.interp(u, knots_L, knots_t)
        yield t


def growth_factors(monthly_growth: float, as_of: dt.date, horizon_s: float, start: dt.date) -> np.ndarray:
    """Traffic multiplier of each simulated minute from `start` (00:00 UTC): compound monthly growth in
    calendar-month steps counted from the `as_of` month, which runs at today's volume (the way
    `kimiplan.capacity.plan.growth_exhaustion` counts months)."""
    n = int(math.ceil(horizon_s / 60.0))
    if monthly_growth == 0:
        return np.ones(n)
    day = np.arange(n) // 1440
    months = (np.datetime64(start, "D") + day).astype("datetime64[M]").astype(np.int64)
    months = months - np.datetime64(as_of, "M").astype(np.int64)
    return (1.0 + monthly_growth) ** months.astype(np.float64)
