"""Spreadsheet exports: one Excel sheet per view plus an assumptions sheet, or CSV.

Every write goes to a temporary file in the target folder and is moved into place with `os.replace`, so a
failed export never leaves a half-written file and never damages the file that was there before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from kimiplan.errors import ConfigError
from kimiplan.io.atomic import atomic_write  # noqa: F401  (the one atomic writer; re-exported)

_BAD_SHEET_CHARS = set("[]:*?/\\")


def _excel_safe(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        s = out[c]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            out[c] = s.dt.tz_localize(None)
        elif s.dtype == object:
            # Decimal, lists and dicts are not cell values; dates are.
            out[c] = s.map(
                lambda v: v if v is None or isinstance(v, (str, int, float, bool, dt.date, pd.Timestamp)) else str(v)
            )
    return out


def _sheet_name(name: str) -> str:
    bad = _BAD_SHEET_CHARS & set(name)
    if bad or not name or len(name) > 31:
        raise ConfigError(f"sheet name {name!r} must be 1-31 characters without {''.join(sorted(_BAD_SHEET_CHARS))}")
    return name


def to_excel(views: Mapping[str, pd.DataFrame], path: str | Path, assumptions: pd.DataFrame | None = None) -> Path:
    """One sheet per view (name -> DataFrame), then an `assumptions` sheet."""
    sheets = dict(views)
    if assumptions is not None:
        sheets["assumptions"] = assumptions
    if not sheets:
        raise ConfigError("nothing to export: views is empty")
    for name, df in sheets.items():
        _sheet_name(name)
        if not isinstance(df, pd.DataFrame):
            raise ConfigError(f"view {name!r} must be a DataFrame, got {type(df).__name__}")

    def write(tmp: Path) -> None:
        with pd.ExcelWriter(tmp, engine="openpyxl") as xl:
            for name, df in sheets.items():
                _excel_safe(df).to_excel(xl, sheet_name=name, index=False)
                ws = xl.sheets[name]
                ws.freeze_panes = "A2"
                for col in ws.columns:
                    width = max(len(str(c.value)) if c.value is not None else 0 for c in col[:200])
                    ws.column_dimensions[col[0].column_letter].width = min(max(10, width + 2), 60)

    return atomic_write(path, write, ".xlsx")


def to_csv(df: pd.DataFrame, path: str | Path) -> Path:
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"to_csv needs a DataFrame, got {type(df).__name__}")
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False), ".csv")


def assumptions_frame(fc) -> pd.DataFrame:
    """Scenario settings, forecast settings and every price card used, with its source and verified_on date."""
    sc = fc.scenario
    t = sc.traffic
    rows = [
        ("scenario", "name", sc.name),
        ("scenario", "provider", sc.provider),
        ("scenario", "region", sc.resolved_region),
        ("scenario", "model", sc.model),
        ("scenario", "tier", str(sc.tier)),
        ("scenario", "as_of", sc.as_of.isoformat()),
        ("scenario", "tax_rate", sc.tax_rate),
        ("scenario", "exchange_rate", ", ".join(f"{k}={v}" for k, v in sc.exchange_rate.items()) or "none"),
        ("traffic", "requests_per_day", t.per_day),
        ("traffic", "monthly_growth", t.monthly_growth),
        ("traffic", "weekday_factors", str(list(t.weekday_factors)) if t.weekday_factors else "none"),
        ("traffic", "monthly_requests", str(t.monthly_requests or "none")),
        ("traffic", "holidays", ", ".join(f"{d}={f}" for d, f in t.holidays.items()) or "none"),
        (
            "traffic",
            "events",
            "; ".join(f"{e.name} from {e.start} to {e.end or 'open'} x{e.factor}" for e in t.events) or "none",
        ),
    ]
    for r in sc.routes:
        rows.append(
            (
                "route",
                r.name,
                f"share {r.share}, thinking {r.thinking}, batch {r.batch}, "
                f"max_completion_tokens {r.max_completion_tokens or 'model default'}, cache hit rate {r.cache.hit_rate}",
            )
        )
    for k, v in fc.settings.items():
        rows.append(("forecast", k, str(v)))
    for c in fc.cards:
        rows.append(
            (
                "price card",
                f"{c.provider}/{c.region}/{c.model}",
                f"{c.currency} per 1M: cache hit {c.cache_hit_price}, cache miss {c.input_cache_miss}, output {c.output}; "
                f"web_search {c.web_search_per_call}/call; batch x{c.batch_multiplier}; effective {c.effective_from or '-'} "
                f"to {c.effective_to or '-'}; retired_on {c.retired_on or '-'}; reported_retired_on "
                f"{c.reported_retired_on or '-'}; verified_on {c.verified_on}; "
                f"{'official' if c.official else 'third-party'}; source: {c.source}",
            )
        )
    for w in fc.warnings:
        rows.append(("warning", "", w))
    return pd.DataFrame(rows, columns=["group", "item", "value"]).astype({"value": str})


def export_forecast(
    fc, xlsx: str | Path | None = None, csv: str | Path | None = None, extra: Mapping[str, pd.DataFrame] | None = None
) -> list[Path]:
    """Write a forecast's views: Excel (every view + assumptions) and/or CSV (the monthly view)."""
    written = []
    if xlsx is not None:
        written.append(to_excel({**fc.frames(), **(extra or {})}, xlsx, assumptions_frame(fc)))
    if csv is not None:
        written.append(to_csv(fc.monthly, csv))
    return written
