"""Backtest the monthly forecast against a usage log of past months.

A usage log has one row per day and route: `date, route, requests, prompt_tokens, cached_tokens,
completion_tokens, web_search_calls` (Kimi's usage fields summed; `prompt_tokens` includes `cached_tokens`).
For each month with enough history the backtest forecasts it from the months before only (volume trend fitted
on the scenario's weekday/holiday/event calendar, tokens per request of the recent months, the catalog price of
that month) and compares with the exact cost of what the log shows.

`synthetic_usage_log` writes such a log from a scenario (labelled synthetic in its `source` column) so the
machinery can be exercised without real data; `python -m kimiplan.finance.backtest OUT.csv` regenerates the shipped one.
"""

from __future__ import annotations

import datetime as dt
import html
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.resolve import load_scenario, price_card
from kimiplan.errors import ConfigError
from kimiplan.finance.cost import cost_of_records
from kimiplan.finance.forecast import _add_months, _check_range, price_vector, traffic_calendar, unit_stats
from kimiplan.model.scenario import Scenario

LOG_COLUMNS = ("date", "route", "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "web_search_calls")


def synthetic_usage_log(
    scenario: Scenario,
    start: str | dt.date,
    months: int,
    *,
    seed: int = 0,
    daily_cv: float = 0.15,
    month_cv: float = 0.05,
    catalog: Catalog | None = None,
) -> pd.DataFrame:
    """Daily per-route usage drawn from the scenario: Poisson requests around the calendar volume (times a
    Gamma day factor and a log-normal month level), token sums ~ Normal(N*mean, N*cov) of per-request draws."""
    catalog = catalog or load_catalog()
    cal = traffic_calendar(scenario, months, start)
    rng = np.random.default_rng([seed, 41])
    units = unit_stats(scenario, price_card(scenario, catalog), seed=seed)
    shape = 1.0 / daily_cv**2 if daily_cv > 0 else None
    day_f = rng.gamma(shape, 1.0 / shape, len(cal)) if shape else np.ones(len(cal))
    month_names = list(dict.fromkeys(cal["month"]))
    lvl = dict(zip(month_names, np.exp(month_cv * rng.standard_normal(len(month_names)) - 0.5 * month_cv**2)))
    lam = cal["requests"].to_numpy() * day_f * cal["month"].map(lvl).to_numpy()
    rows = []
    for r, name in enumerate(units.routes):
        n = rng.poisson(lam * units.shares[r])
        # Priced quantities summed over n requests: cached, miss, reasoning, output, tools.
        mean, cov = units.mean[r], units.cov[r]
        # Symmetric square root V diag(sqrt w) V^T (not Cholesky): quantities with zero variance, such as absent
        # tool calls, stay 0. It is unique, unlike V diag(sqrt w) alone, whose columns within a repeated eigenvalue
        # (those zero variances) depend on the LAPACK kernel OpenBLAS picks for the CPU (OPENBLAS_CORETYPE): the
        # shipped log must be the same on every machine.
        w, v = np.linalg.eigh(cov)
        root = (v * np.sqrt(np.maximum(w, 0.0))) @ v.T
        z = rng.standard_normal((len(n), len(mean)))
        sums = np.maximum(n[:, None] * mean[None, :] + np.sqrt(n)[:, None] * (z @ root.T), 0.0).round().astype(np.int64)
        rows.append(
            pd.DataFrame(
                {
                    "date": cal["date"],
                    "route": name,
                    "requests": n,
                    "prompt_tokens": sums[:, 0] + sums[:, 1],
                    "cached_tokens": sums[:, 0],
                    "completion_tokens": sums[:, 2] + sums[:, 3],
                    "web_search_calls": sums[:, 4],
                }
            )
        )
    out = pd.concat(rows, ignore_index=True).sort_values(["date", "route"], kind="stable").reset_index(drop=True)
    out["source"] = f"synthetic: kimiplan.finance.backtest.synthetic_usage_log({scenario.name}, seed={seed})"
    return out


def read_daily_usage(
    path: str | Path, scenario: Scenario | None = None, catalog: Catalog | None = None
) -> pd.DataFrame:
    """A daily usage log (CSV: one row per day and route with requests and token sums; see LOG_COLUMNS), or
    actuals in FOCUS shape (CSV or Parquet with FOCUS columns; `kimiplan.finance.focus.usage_from_focus`).
    FOCUS has no request count: without an `x_Requests` column, requests are estimated from the scenario's
    expected prompt tokens per request of each route (pass `scenario`)."""
    try:
        df = pd.read_parquet(path) if str(path).lower().endswith(".parquet") else pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"cannot read usage log {str(path)!r}: {exc}") from None
    if "ChargePeriodStart" in df.columns:
        from kimiplan.finance.focus import usage_from_focus

        df = usage_from_focus(df, str(path))
        if not df.pop("requests_known").all():
            df = _estimate_requests(df, scenario, catalog, str(path))
    return _check_log(df, str(path))


def _estimate_requests(df: pd.DataFrame, scenario, catalog, origin: str) -> pd.DataFrame:
    if scenario is None:
        raise ConfigError(f"{origin}: FOCUS rows carry no request count (x_Requests); pass the scenario to estimate it")
    from kimiplan.workload.draws import expected_tokens

    card = price_card(scenario, catalog)
    exp = expected_tokens(scenario, card)
    per_req = dict(zip([r.name for r in scenario.routes], exp["input_tokens"]))
    df = df.copy()
    est = [
        max(1, round(p / per_req[r])) if r in per_req and per_req[r] > 0 else 0
        for r, p in zip(df["route"], df["prompt_tokens"])
    ]
    df["requests"] = [n if n > 0 else e for n, e in zip(df["requests"], est)]
    df["source"] = df["source"] + ": requests estimated from the scenario's prompt tokens per request"
    return df


def _check_log(df: pd.DataFrame, origin: str = "usage log") -> pd.DataFrame:
    missing = [c for c in LOG_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{origin}: missing columns {missing}; a usage log needs {list(LOG_COLUMNS)}")
    df = df.copy()
    df["date"] = pd.to_datetime(df["date"]).dt.date
    for c in LOG_COLUMNS[2:]:
        if df[c].isna().any() or (df[c] < 0).any():
            raise ConfigError(f"{origin}: column {c!r} has a negative or missing value")
    if (df["cached_tokens"] > df["prompt_tokens"]).any():
        raise ConfigError(f"{origin}: cached_tokens exceed prompt_tokens on some rows (prompt_tokens include them)")
    df["month"] = pd.to_datetime(df["date"]).dt.strftime("%Y-%m")
    return df


@dataclass(frozen=True)
class Backtest:
    """How past forecasts fared: `table` (one row per judged month) and how often the actual fell inside the band."""

    table: pd.DataFrame
    level: float  # the prediction band's nominal coverage
    coverage: float  # share of judged months whose actual fell inside the band (NaN when none was judged)
    months_judged: int

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "coverage": self.coverage,
            "months_judged": self.months_judged,
            "months": self.table,
        }

    def describe(self) -> str:
        cur = self.table["currency"].iloc[0]
        mape = float(self.table["pct_error"].abs().mean())
        naive = float(self.table["naive_pct_error"].abs().mean())
        return (
            f"{len(self.table)} months forecast from the months before them: mean absolute error {mape:.1f} % "
            f"(naive last-month forecast {naive:.1f} %); the actual ({cur}) fell inside the {self.level:.0%} band "
            f"in {self.coverage:.0%} of {self.months_judged} months."
        )

    def __repr__(self) -> str:
        return f"<Backtest {self.describe()} summary() for the table>"

    def summary(self):
        from kimiplan.io.formats import ColumnFormat
        from kimiplan.io.tables import SummaryTable

        cols = ["month", "history_months", "forecast", "band_low", "band_high", "actual", "inside", "pct_error"]
        cols += ["naive_pct_error", "currency"]
        t = self.table[[c for c in cols if c in self.table]]
        cur = self.table["currency"].iloc[0] if len(self.table) else None
        facts = [
            ("Months judged", f"{self.months_judged}"),
            ("Band", f"{self.level:.0%} prediction band"),
            ("Coverage", "n/a" if self.coverage != self.coverage else f"{self.coverage:.0%} of months inside"),
        ]
        pct = {c: ColumnFormat("percent", scale=0.01) for c in ("pct_error", "naive_pct_error")}
        notes = [self.describe(), "Percentage errors are (forecast − actual) / actual, in percent."]
        return SummaryTable("Backtest", facts, [("By month", t, cur)], notes, pct)

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.describe())}</p>" + self.summary()._repr_html_()


def _prediction_band(y: np.ndarray, slope: float, icpt: float, cpr: np.ndarray, level: float) -> float:
    """Half-width, in log space, of the prediction interval for next month's cost (NaN below 3 months), given
    the volume trend `icpt + slope * month` fitted to the log volumes `y`.

    Two independent parts: the log-linear volume trend's prediction error (residual variance, leverage of the
    next point) and the month-to-month spread of cost per request over the token window (the forecast uses
    their pooled mean, hence the 1 + 1/k). Student t on the trend's degrees of freedom, n - 2."""
    from scipy import stats

    n = y.size
    if n < 3:
        return float("nan")
    x = np.arange(n, dtype=float)
    s2 = float(np.sum((y - (icpt + slope * x)) ** 2) / (n - 2))
    var_vol = s2 * (1 + 1 / n + (n - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    k = cpr.size
    var_cpr = float(np.var(np.log(cpr), ddof=1)) * (1 + 1 / k) if k > 1 else 0.0
    t = stats.t.ppf(0.5 + level / 2, n - 2)
    return float(t * np.sqrt(var_vol + var_cpr))


def backtest(
    usage_log: pd.DataFrame | str | Path,
    scenario: Scenario,
    *,
    catalog: Catalog | None = None,
    min_history: int = 3,
    token_window: int = 3,
    level: float = 0.8,
) -> Backtest:
    """A `Backtest`: one row per month that has `min_history` earlier months, forecast from the earlier months
    only, the actual cost from the log (exact) and the error; plus a naive forecast (last month's cost per
    day) for scale.

    Each forecast carries a `level` prediction band (`band_low`, `band_high`; NaN with fewer than 3 months of
    history) and whether the actual fell `inside` it; `coverage` is the share of months inside, which should
    come out near `level` when the band is honest."""
    _check_range("min_history", min_history, 1, 120, integer=True)
    _check_range("token_window", token_window, 1, 120, integer=True)
    _check_range("level", level, 0.01, 0.999)
    catalog = catalog or load_catalog()
    log = (
        read_daily_usage(usage_log, scenario, catalog) if isinstance(usage_log, (str, Path)) else _check_log(usage_log)
    )
    routes = {r.name: r for r in scenario.routes}
    unknown = sorted(set(log["route"]) - set(routes))
    if unknown:
        raise ConfigError(f"usage log routes {unknown} are not in scenario {scenario.name!r}; routes: {sorted(routes)}")
    months = sorted(log["month"].unique())
    first_day = dt.date.fromisoformat(months[0] + "-01")
    cal = traffic_calendar(scenario, len(months) + 1, first_day)
    cal = cal.assign(shape=cal["weekday_factor"] * cal["holiday_factor"] * cal["event_factor"])
    shape_m = cal.groupby("month")["shape"].sum()
    days_m = cal.groupby("month").size()
    tax = 1.0 + scenario.tax_rate

    actual_cost = {}
    for m in months:
        cur = log[log["month"] == m]
        total = 0.0
        for name, g in cur.groupby("route"):
            card = catalog.price(
                scenario.model, scenario.provider, scenario.resolved_region, dt.date.fromisoformat(m + "-01")
            )
            total += float(cost_of_records(g, card, batch=routes[name].batch, tax_rate=scenario.tax_rate).total)
        actual_cost[m] = total

    rows = []
    for i in range(min_history, len(months)):
        target, hist = months[i], months[:i]
        h = log[log["month"].isin(hist)]
        # Volume: log-linear trend of requests per unit of calendar shape (removes weekday/holiday/event mix).
        y = np.log([h.loc[h["month"] == m, "requests"].sum() / shape_m[m] for m in hist])
        x = np.arange(len(hist), dtype=float)
        slope, icpt = np.polyfit(x, y, 1) if len(hist) > 1 else (0.0, y[0])
        volume = float(np.exp(icpt + slope * len(hist)) * shape_m[target])
        # Tokens per request and route mix from the last `token_window` months.
        recent = h[h["month"].isin(hist[-token_window:])]
        window = recent.groupby(["month", "route"])[list(LOG_COLUMNS[2:])].sum()
        per_route = window.groupby(level="route").sum()
        card = catalog.price(
            scenario.model, scenario.provider, scenario.resolved_region, dt.date.fromisoformat(target + "-01")
        )
        fc_cost = volume * _cost_per_request(per_route, card, routes, tax)
        # Cost per request of each window month alone, at the target month's prices: its spread widens the band.
        cpr = np.array([_cost_per_request(window.loc[m], card, routes, tax) for m in hist[-token_window:]])
        half = _prediction_band(y, slope, icpt, cpr[cpr > 0], level)
        prev = hist[-1]
        naive = actual_cost[prev] / days_m[prev] * days_m[target]
        act = actual_cost[target]
        low, high = fc_cost * np.exp(-half), fc_cost * np.exp(half)
        rows.append(
            {
                "month": target,
                "history_months": len(hist),
                "forecast_requests": volume,
                "actual_requests": float(log.loc[log["month"] == target, "requests"].sum()),
                "forecast": fc_cost,
                "actual": act,
                "error": fc_cost - act,
                "pct_error": (fc_cost - act) / act * 100,
                "band_low": low,
                "band_high": high,
                "inside": bool(low <= act <= high) if half == half else None,
                "naive_forecast": naive,
                "naive_pct_error": (naive - act) / act * 100,
                "currency": card.currency,
            }
        )
    if not rows:
        raise ConfigError(
            f"the usage log has {len(months)} month(s); min_history={min_history} needs at least {min_history + 1}"
        )
    out = pd.DataFrame(rows)
    judged = out["inside"].dropna()
    return Backtest(
        table=out,
        level=level,
        coverage=float(judged.astype(bool).mean()) if len(judged) else float("nan"),
        months_judged=int(len(judged)),
    )


def _cost_per_request(per_route: pd.DataFrame, card, routes: dict, tax: float) -> float:
    """Mean cost of one request of the route mix in `per_route` (summed log columns by route) on `card`."""
    total = per_route["requests"].sum()
    cost = 0.0
    for name, row in per_route.iterrows():
        n = row["requests"]
        if n == 0:
            continue
        q = (
            np.array(
                [
                    row["cached_tokens"],
                    row["prompt_tokens"] - row["cached_tokens"],
                    0.0,
                    row["completion_tokens"],
                    row["web_search_calls"],
                ]
            )
            / n
        )
        cost += (n / total) * float(price_vector(card, routes[name].batch) @ q) * tax
    return cost


def _main(argv: list[str]) -> int:  # pragma: no cover - regenerates the shipped example log
    from kimiplan.model.scenario import example_path

    out = Path(argv[0]) if argv else Path("data/usage/past_months_synthetic.csv")
    sc = load_scenario(example_path("support_chat"))
    start = _add_months(sc.as_of.replace(day=1), -6)
    log = synthetic_usage_log(sc, start, 6, seed=2026)
    from kimiplan.io.export import to_csv

    to_csv(log, out)
    print(f"wrote {out} ({len(log)} rows, {start} to {log['date'].max()})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
