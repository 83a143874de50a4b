"""How a number reads: one format per column, shared by the HTML report, the CLI and the Excel export.

A column's kind (money, percent, count, seconds, date, ...) is inferred from its name and values, or set explicitly;
each kind has a text rendering (sensible precision, thousands separators, a currency symbol, "< 0.001 %" rather than
e-notation) and an Excel number format. Presentation only: values are never changed, only shown.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

CURRENCY_SYMBOLS = {"USD": "$", "CNY": "¥", "EUR": "€", "GBP": "£", "JPY": "¥"}
KINDS = ("text", "money", "percent", "count", "number", "multiple", "seconds", "date", "month", "bool")

# Words that make a column a fraction shown as a percentage (values 0..1).
_PERCENT_WORDS = {
    "share",
    "utilization",
    "truncation",
    "refusal",
    "refused",
    "rate",
    "fraction",
    "probability",
    "headroom",
    "growth",
    "coverage",
    "failed",
    "waited",
    "use",
}
# Words that make a column money whatever the frame (its currency comes from the frame or the name).
_MONEY_WORDS = {
    "cost",
    "spend",
    "price",
    "amount",
    "balance",
    "credit",
    "allowance",
    "recharge",
    "usd",
    "cny",
    "eur",
    "topup",
}
# In a frame that carries a currency these are money too (forecast and variants frames).
_MONEY_IN_CURRENCY_FRAME = {"expected", "mean", "sd", "se", "budget", "per_month", "vs_first", "total", "top_up"}
# Words that make a column a count of things (thousands separators, no decimals when large).
_COUNT_WORDS = {
    "tokens",
    "requests",
    "rpm",
    "tpm",
    "tpd",
    "rpd",
    "concurrency",
    "calls",
    "attempts",
    "budget",
    "peak",
    "busiest",
    "limit",
    "value",
    "window",
    "neurons",
    "days",
    "samples",
    "n",
    "count",
}
_ACRONYMS = {
    "rpm": "RPM",
    "tpm": "TPM",
    "tpd": "TPD",
    "rpd": "RPD",
    "rag": "RAG",
    "api": "API",
    "usd": "USD",
    "cny": "CNY",
    "eur": "EUR",
    "id": "ID",
    "ttft": "TTFT",
    "tps": "TPS",
    "mc": "MC",
    "se": "SE",
    "sd": "SD",
    "cv": "CV",
    "ks": "KS",
    "qq": "QQ",
    "fx": "FX",
    "p": "P",
}
_QUANTILE_COL = re.compile(r"^P\d+(\.\d+)?(_.*)?$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")


@dataclass(frozen=True)
class ColumnFormat:
    """How one column reads. `scale` multiplies a percent column's value first (1 when already 0..1, 0.01 when
    the column holds percentage points); `currency` is an ISO code for money; `decimals` overrides precision."""

    kind: str = "number"
    currency: str | None = None
    decimals: int | None = None
    scale: float = 1.0
    header: str | None = None

    def text(self, value: Any) -> str:
        return format_value(value, self)


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NaT:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def symbol(currency: str | None) -> str:
    return CURRENCY_SYMBOLS.get((currency or "").upper(), "")


def money(v: float, currency: str | None = None, decimals: int | None = None) -> str:
    """$4,075.49; $0.0036 for sub-cent amounts; other currencies without a symbol as a suffix."""
    v = float(v)
    a = abs(v)
    if decimals is None:
        decimals = 2 if a >= 0.01 or a == 0 else 4 if a >= 1e-4 else 6
    if 0 < a < 10 ** (-decimals) / 2:
        body = f"< {10 ** (-decimals):.{decimals}f}"
        return f"{body} {currency}".strip() if not symbol(currency) else f"< {symbol(currency)}{body[2:]}"
    body = f"{a:,.{decimals}f}"
    sign = "−" if v < 0 and float(body.replace(",", "")) != 0 else ""
    sym = symbol(currency)
    if sym:
        return f"{sign}{sym}{body}"
    return f"{sign}{body} {currency}".strip() if currency else f"{sign}{body}"


def percent(v: float, decimals: int | None = None, scale: float = 1.0, trim: bool = False) -> str:
    """12.3 %, 0.25 %, < 0.001 % (never e-notation); 100 % and 0 % exact. `trim` drops trailing zeros (6 %, 0.1 %)
    for a figure in a sentence; table columns keep theirs so the digits line up."""
    p = float(v) * scale * 100.0
    a = abs(p)
    if a == 0:
        return "0 %"
    if decimals is None:
        decimals = 0 if a >= 99.95 and a < 1000 and round(a) == a else 1 if a >= 10 else 2 if a >= 0.1 else 3
    if a < 10 ** (-decimals) / 2:
        return f"< {10 ** (-decimals):.{decimals}f} %" if p > 0 else f"> −{10 ** (-decimals):.{decimals}f} %"
    s = f"{a:,.{decimals}f}"
    if trim and "." in s:
        s = s.rstrip("0").rstrip(".")
    return f"{'−' if p < 0 else ''}{s} %"


def number(v: float, decimals: int | None = None) -> str:
    """Thousands separators and precision by size: 2,380,000; 157.3; 0.0547; < 0.001 (never e-notation)."""
    x = float(v)
    a = abs(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if decimals is None:
        if a == 0 or (a >= 1 and float(x).is_integer()):
            decimals = 0
        elif a >= 100:
            decimals = 0
        elif a >= 10:
            decimals = 1
        elif a >= 1:
            decimals = 2
        else:
            decimals = 3
    if 0 < a < 10 ** (-decimals) / 2:
        return f"< {10 ** (-decimals):.{decimals}f}" if x > 0 else f"> −{10 ** (-decimals):.{decimals}f}"
    s = f"{a:,.{decimals}f}"
    return f"{'−' if x < 0 and float(s.replace(',', '')) != 0 else ''}{s}"


def count(v: float, decimals: int | None = None) -> str:
    """Counts: whole numbers with thousands separators; a fractional mean below 100 keeps one decimal."""
    x = float(v)
    if decimals is None:
        decimals = 0 if abs(x) >= 10 or float(x).is_integer() else 1
    return number(x, decimals)


def seconds(v: float, decimals: int | None = None) -> str:
    x = float(v)
    a = abs(x)
    if x == 0:
        return "0 s"
    if a >= 3600 and decimals is None:
        return f"{x / 3600:,.1f} h"
    places = 0 if a >= 1000 else 1 if a >= 10 else 2 if a >= 0.01 else 3
    return f"{number(x, decimals if decimals is not None else places)} s"


def format_value(v: Any, fmt: ColumnFormat) -> str:
    if _is_missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):  # e.g. the tiers an upgrade skips: "Tier4, Tier5", not "['Tier4', 'Tier5']"
        return ", ".join(format_value(x, fmt) for x in v) if v else ""
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        return (
            f"{v:%Y-%m}"
            if fmt.kind == "month"
            else (f"{v:%Y-%m-%d}" if v.time() == dt.time() else f"{v:%Y-%m-%d %H:%M}")
        )
    if isinstance(v, dt.date):
        return f"{v:%Y-%m}" if fmt.kind == "month" else v.isoformat()
    if isinstance(v, pd.Period):
        return str(v)
    if isinstance(v, Decimal):
        v = float(v)
    if not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    k = fmt.kind
    if k == "money":
        return money(v, fmt.currency, fmt.decimals)
    if k == "percent":
        return percent(v, fmt.decimals, fmt.scale)
    if k == "count":
        return count(v, fmt.decimals)
    if k == "seconds":
        return seconds(v, fmt.decimals)
    if k == "multiple":
        return f"{number(v, 2 if fmt.decimals is None else fmt.decimals)}×"
    if k == "bool":
        return "yes" if v else "no"
    return number(v, fmt.decimals)


def _words(col: str) -> list[str]:
    return [w for w in re.split(r"[_\s]+", str(col).lower()) if w]


def header(col: str, fmt: ColumnFormat | None = None) -> str:
    """`cost_per_month_CNY` -> "Cost per month (¥)"; `rpm` -> "RPM"; `P90_total` -> "P90 total"."""
    if fmt is not None and fmt.header:
        return fmt.header
    name = str(col)
    if name.startswith("set:"):  # a sweep's grid column: the override path as the user wrote it
        return f"Grid: {name[4:]}"
    if _QUANTILE_COL.match(name):
        words = name.split("_")
    else:
        words = [_ACRONYMS.get(w, w.upper() if re.fullmatch(r"p\d+(\.\d+)?", w) else w) for w in _words(name)]
        if len(words) > 1 and words[-1] == "pct":  # the cells carry the % sign
            words = words[:-1]
        # A trailing currency code becomes the unit in brackets.
        if fmt is not None and fmt.kind == "money" and words and words[-1] in CURRENCY_SYMBOLS:
            words = words[:-1]
        if words and words[0] == "P" and len(words) > 1:  # p_over_budget -> P(over budget)
            words = ["P(" + " ".join(words[1:]) + ")"]
    text = " ".join(words)
    text = text[:1].upper() + text[1:] if text and not text[0].isupper() else text
    if fmt is not None and fmt.kind == "money" and fmt.currency:
        text += f" ({symbol(fmt.currency) or fmt.currency})"
    if fmt is not None and fmt.kind == "seconds" and text.endswith(" s"):
        text = text[:-2] + " (s)"
    elif fmt is not None and fmt.kind == "seconds" and " s P" in text:  # "Latency s P99" -> "Latency P99 (s)"
        text = text.replace(" s P", " P") + " (s)"
    return text


def frame_currency(df: pd.DataFrame, currency: str | None = None) -> str | None:
    """The frame's one currency: the given one, or a single-valued `currency` column."""
    if currency:
        return currency
    if "currency" in df.columns:
        vals = pd.Series(df["currency"]).dropna().unique()
        if len(vals) == 1:
            return str(vals[0])
    return None


def infer_format(col: str, s: pd.Series, currency: str | None = None) -> ColumnFormat:
    """A column's format from its name and values (see the word lists above)."""
    name = str(col)
    words = _words(name)
    vals = s.dropna()
    if pd.api.types.is_bool_dtype(s.dtype) or (len(vals) and vals.map(lambda v: isinstance(v, (bool, np.bool_))).all()):
        return ColumnFormat("bool")
    if pd.api.types.is_datetime64_any_dtype(s.dtype) or (
        len(vals) and vals.map(lambda v: isinstance(v, (dt.date, pd.Timestamp))).all()
    ):
        return ColumnFormat("month" if "month" in words else "date")
    if name == "month" and len(vals) and vals.map(lambda v: isinstance(v, str) and bool(_MONTH.match(v))).all():
        return ColumnFormat("month")
    numeric = pd.api.types.is_numeric_dtype(s.dtype) or (
        len(vals) and vals.map(lambda v: isinstance(v, (int, float, Decimal, np.number))).all()
    )
    if not numeric:
        return ColumnFormat("text")
    cur_in_name = next((w.upper() for w in words if w.upper() in CURRENCY_SYMBOLS), None)
    if words and words[-1] == "pct":
        return ColumnFormat("percent", scale=0.01)
    if words and (words[0] == "p" and len(words) > 1 and name[:2] in ("p_", "P_")):
        return ColumnFormat("percent")
    if words and words[0] == "share" and len(words) > 1:  # share_of_spend, share_of_cost: a share, not money
        return ColumnFormat("percent")
    if set(words) & _MONEY_WORDS or cur_in_name:
        # A token count next to a price word ("cost_tokens") stays a count.
        if "tokens" not in words:
            return ColumnFormat("money", currency=cur_in_name or currency)
    if currency and (
        _QUANTILE_COL.match(name) or set(words) & _MONEY_IN_CURRENCY_FRAME or name in _MONEY_IN_CURRENCY_FRAME
    ):
        # "refusal_total" in a frame with a currency is still a share; "P90_total" and "expected" are money.
        if not set(words) & ({"tokens", "requests", "neurons", "days"} | (_PERCENT_WORDS - {"use"})):
            return ColumnFormat("money", currency=currency)
    if name in ("quantile", "percentile", "level", "confidence"):
        return ColumnFormat("percent")
    if len(words) > 1 and (words[-1] == "s" or (words[-2] == "s" and re.fullmatch(r"p\d+", words[-1]))):
        return ColumnFormat("seconds")  # latency_s, latency_s_p99
    if "scale" in words:
        return ColumnFormat("multiple")
    if "second" in words or "rps" in words:
        return ColumnFormat("number")
    whole_counts = pd.api.types.is_integer_dtype(s.dtype) and len(vals) and float(vals.max()) > 1
    if set(words) & _PERCENT_WORDS and not set(words) & {"tokens", "requests", "rps"} and not whole_counts:
        return ColumnFormat("percent")  # a "refused" column of whole numbers above 1 is a count, not a share
    if set(words) & _COUNT_WORDS or pd.api.types.is_integer_dtype(s.dtype):
        return ColumnFormat("count")
    return ColumnFormat("number")


def infer_formats(
    df: pd.DataFrame, currency: str | None = None, overrides: Mapping[str, ColumnFormat | str] | None = None
) -> dict[str, ColumnFormat]:
    cur = frame_currency(df, currency)
    out = {str(c): infer_format(c, df[c], cur) for c in df.columns}
    for c, f in out.items():
        if f.kind == "money" and f.decimals is None:
            # One precision per column, so the digits line up: cents, or 4 decimals for sub-cent amounts.
            vals = pd.to_numeric(df[c], errors="coerce").abs()
            big = vals[vals > 0]
            out[c] = replace(f, decimals=4 if len(big) and big.max() < 0.1 else 2)
    for c, f in (overrides or {}).items():
        base = out.get(str(c), ColumnFormat())
        out[str(c)] = f if isinstance(f, ColumnFormat) else replace(base, kind=f, currency=base.currency or cur)
    return out


def display_frame(
    df: pd.DataFrame,
    currency: str | None = None,
    overrides: Mapping[str, ColumnFormat | str] | None = None,
    drop_currency: bool = True,
) -> tuple[pd.DataFrame, dict[str, ColumnFormat]]:
    """The frame to show: the single-valued `currency` column moves into the money headers."""
    cur = frame_currency(df, currency)
    if drop_currency and "currency" in df.columns and cur is not None and frame_currency(df) == cur:
        df = df.drop(columns="currency")
    fmts = infer_formats(df, cur, overrides)

    # "recharge" + "recharge_currency": a single-valued companion column becomes the money column's unit, and
    # that of the columns named after it ("recharge_from").
    def companion(c) -> str | None:
        parts = str(c).split("_")
        names = [f"{'_'.join(parts[:i])}_currency" for i in range(len(parts), 0, -1)]
        return next((n for n in names if n in df.columns), None)

    comps = set()
    for c in list(df.columns):
        comp = companion(c)
        if comp is not None and str(c) in fmts and fmts[str(c)].kind == "money":
            comps.add(comp)
            vals = pd.Series(df[comp]).dropna().unique()
            if len(vals) == 1 and (overrides is None or c not in overrides):
                fmts[str(c)] = replace(fmts[str(c)], currency=str(vals[0]))
    if drop_currency:
        for comp in comps:
            if len(pd.Series(df[comp]).dropna().unique()) == 1:
                df = df.drop(columns=comp)
                fmts.pop(comp, None)
    return df, fmts


def format_frame(
    df: pd.DataFrame, currency: str | None = None, overrides: Mapping[str, ColumnFormat | str] | None = None
) -> pd.DataFrame:
    """Every cell as text, with human headers: for terminals and plain-text output."""
    shown, fmts = display_frame(df, currency, overrides)
    out = pd.DataFrame({header(c, fmts[str(c)]): [fmts[str(c)].text(v) for v in shown[c]] for c in shown.columns})
    return out


def is_numeric_kind(fmt: ColumnFormat) -> bool:
    return fmt.kind in ("money", "percent", "count", "number", "multiple", "seconds")


def excel_number_format(fmt: ColumnFormat) -> str | None:
    """The Excel number format of a column kind (None: leave General)."""
    if fmt.kind == "money":
        sym = symbol(fmt.currency)
        d = 2 if fmt.decimals is None else fmt.decimals
        body = "#,##0" + ("." + "0" * d if d else "")
        if sym:
            return f'"{sym}"{body};-"{sym}"{body}'
        return f'{body} "{fmt.currency}"' if fmt.currency else body
    if fmt.kind == "percent":
        return "0.00%" if fmt.decimals is None else "0" + ("." + "0" * fmt.decimals if fmt.decimals else "") + "%"
    if fmt.kind == "count":
        return "#,##0"
    if fmt.kind == "number":
        return "#,##0.00"
    if fmt.kind == "seconds":
        return '#,##0.00" s"'
    if fmt.kind == "multiple":
        return '0.00"×"'
    if fmt.kind == "date":
        return "yyyy-mm-dd"
    if fmt.kind == "month":
        return "mmm yyyy"
    return None
