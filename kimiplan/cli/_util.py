"""Small helpers shared by the command modules: printing tables and JSON."""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from kimiplan.errors import ConfigError


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return float(o)
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, pd.DataFrame):
        return json.loads(o.to_json(orient="records", date_format="iso"))
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, default=_default, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(df: pd.DataFrame, floatfmt: str = "{:,.6g}") -> None:
    with pd.option_context(
        "display.max_rows",
        500,
        "display.max_columns",
        50,
        "display.width",
        200,
        "display.max_colwidth",
        60,
        "display.float_format",
        floatfmt.format,
    ):
        # Empty cells, not NaN/None: a missing limit or date means "none".
        print(df.astype(object).where(df.notna(), "").to_string(index=False))


def parse_date(value: str | None, field: str = "--on") -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{field} must be a date YYYY-MM-DD, got {value!r}") from None
