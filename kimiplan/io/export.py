"""Spreadsheet exports: an assumptions sheet then one Excel sheet per view, formatted for finance, or CSV.

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
from kimiplan.io.formats import ColumnFormat, display_frame, excel_number_format, header

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


def _excel_view(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[ColumnFormat]]:
    """The frame as finance reads it: months and dates as real dates, one number format per column, human headers
    (the currency of a single-currency frame moves into the money headers)."""
    shown, fmts = display_frame(df)
    shown = _excel_safe(shown.reset_index(drop=True))
    cols = [str(c) for c in shown.columns]
    shown.columns = cols
    for c in cols:
        f = fmts[c]
        if f.kind == "month":
            shown[c] = pd.to_datetime(shown[c].astype(str), format="%Y-%m", errors="coerce").where(shown[c].notna())
        elif f.kind == "date":
            shown[c] = pd.to_datetime(shown[c], errors="coerce")
        elif f.kind == "bool":
            shown[c] = shown[c].map(lambda v: None if v is None or v != v else ("yes" if v else "no"))
    return shown, [header(c, fmts[c]) for c in cols], [fmts[c] for c in cols]


def to_excel(views: Mapping[str, pd.DataFrame], path: str | Path, assumptions: pd.DataFrame | None = None) -> Path:
    """An `assumptions` sheet first (what the numbers rest on), then one sheet per view (name -> DataFrame), each
    with a frozen, bold header row, a filter, column widths, and a number format per column (currency, percent,
    integers, dates; months as real dates shown "Nov 2026")."""
    sheets = {"assumptions": assumptions} if assumptions is not None else {}
    sheets.update(views)
    if not sheets:
        raise ConfigError("nothing to export: views is empty")
    for name, df in sheets.items():
        _sheet_name(name)
        if not isinstance(df, pd.DataFrame):
            raise ConfigError(f"view {name!r} must be a DataFrame, got {type(df).__name__}")

    def write(tmp: Path) -> None:
        from openpyxl.styles import Alignment, Font
        from openpyxl.utils import get_column_letter

        with pd.ExcelWriter(tmp, engine="openpyxl") as xl:
            for name, df in sheets.items():
                shown, heads, fmts = _excel_view(df)
                out = shown.copy()
                out.columns = heads
                out.to_excel(xl, sheet_name=name, index=False)
                ws = xl.sheets[name]
                ws.freeze_panes = "A2"
                if len(out.columns):
                    ws.auto_filter.ref = ws.dimensions
                for j, (h, f) in enumerate(zip(heads, fmts), start=1):
                    letter = get_column_letter(j)
                    cell = ws.cell(row=1, column=j)
                    cell.font = Font(bold=True)
                    cell.alignment = Alignment(wrap_text=True, vertical="bottom")
                    number_format = excel_number_format(f)
                    texts = [f.text(v) for v in df.iloc[:200][df.columns[j - 1]]] if len(df) else []
                    for row in ws.iter_rows(min_row=2, min_col=j, max_col=j):
                        if number_format:
                            row[0].number_format = number_format
                        if f.kind == "text":
                            row[0].alignment = Alignment(wrap_text=True, vertical="top")
                    width = max([len(h) * 0.9, *(len(t) for t in texts), 8])
                    ws.column_dimensions[letter].width = min(width + 2, 70)

    return atomic_write(path, write, ".xlsx")


def to_csv(df: pd.DataFrame, path: str | Path) -> Path:
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"to_csv needs a DataFrame, got {type(df).__name__}")
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False), ".csv")


def to_focus(df: pd.DataFrame, path: str | Path) -> Path:
    """FOCUS-shaped rows (`kimiplan.finance.focus.focus_frame`) as CSV or Parquet, by the file's extension.
    Times are ISO 8601 UTC strings (FOCUS DateTimeFormat); numbers are written in full, never in e-notation."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".parquet"):
        raise ConfigError(f"FOCUS file {str(path)!r}: use a .csv or .parquet name")
    if kind == ".csv":
        nums = df.select_dtypes("number").columns
        shown = df.copy()
        for c in nums:  # fixed notation: 1.2e-05 would not read back as a FOCUS decimal everywhere
            shown[c] = [None if v != v else format(float(v), ".12f").rstrip("0").rstrip(".") for v in df[c]]
        shown["x_Forecast"] = shown["x_Forecast"].map({True: "true", False: "false"})
        return atomic_write(path, lambda tmp: shown.to_csv(tmp, index=False), ".csv", what="FOCUS file")
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False), ".parquet", what="FOCUS file")


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
                f"max_completion_tokens {r.max_completion_tokens or 'model default'}, "
                f"cache hit rate {r.cache.hit_rate}",
            )
        )
    for k, v in fc.settings.items():
        rows.append(("forecast", k, str(v)))
    for c in fc.cards:
        rows.append(
            (
                "price card",
                f"{c.provider}/{c.region}/{c.model}",
                f"{c.currency} per 1M: cache hit {c.cache_hit_price}, cache miss {c.input_cache_miss}, "
                f"output {c.output}; web_search {c.web_search_per_call}/call; batch x{c.batch_multiplier}; "
                f"effective {c.effective_from or '-'} "
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
