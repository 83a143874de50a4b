"""Small helpers shared by the command modules: printing tables (formatted per column) and JSON."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kimiplan.errors import ConfigError

if TYPE_CHECKING:  # numpy, pandas and the formats load with the first table, not with `kimiplan --help`
    import pandas as pd

    from kimiplan.io.formats import ColumnFormat


def _default(o: Any) -> Any:
    import numpy as np
    import pandas as pd

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


def print_table(
    df: pd.DataFrame,
    floatfmt: str | None = None,
    *,
    currency: str | None = None,
    formats: Mapping[str, ColumnFormat | str] | None = None,
    title: str | None = None,
) -> None:
    """A frame for people, with the report's per-column formats (currency, percentages, thousands separators,
    human headers): a rich table on a terminal, aligned plain text when piped. `floatfmt` is accepted for old
    callers and ignored: each column's kind decides its precision."""
    from kimiplan.io.formats import display_frame, header, is_numeric_kind

    shown, fmts = display_frame(df, currency, formats)
    cols = [str(c) for c in shown.columns]
    heads = [header(c, fmts[c]) for c in cols]
    cells = [[fmts[c].text(v) for v in shown[col]] for c, col in zip(cols, shown.columns)]
    numeric = [is_numeric_kind(fmts[c]) for c in cols]
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", header_style="bold")
        for h, num, col in zip(heads, numeric, cells):
            # An identifier (model ID, route, tier: no spaces) is never broken across lines; sentences wrap.
            ident = not num and all(" " not in v for v in col) and max((len(v) for v in col), default=0) <= 48
            table.add_column(h, justify="right" if num else "left", overflow="fold", no_wrap=num or ident)
        for row in zip(*cells) if cells else []:
            table.add_row(*row)
        Console().print(table)
        return
    if title:
        print(title)
    widths = [max([len(h)] + [len(v) for v in col]) for h, col in zip(heads, cells)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    print(line(heads))
    for row in zip(*cells) if cells else []:
        print(line(row))


def parse_date(value: str | None, field: str = "--on") -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{field} must be a date YYYY-MM-DD, got {value!r}") from None


def calibration_json(scenario) -> list[dict]:
    """Per route: calibrated from what (or assumed), what it changed, and its warnings, for --json output."""
    out = []
    for r in scenario.routes:
        c = r.calibrated
        out.append(
            {
                "route": r.name,
                "status": c.describe() if c else "assumed",
                "calibrated": c.model_dump(mode="json") if c else None,
            }
        )
    return out


def print_calibration(scenario, file=None) -> None:
    """One line per route ("calibrated from N calls on DATE" or "assumed") and the calibration's warnings,
    measured against assumed side by side; nothing for a scenario no calibration touched."""
    from kimiplan.model.calibration import calibration_status, calibration_warnings

    if all(r.calibrated is None for r in scenario.routes):
        return
    file = file or sys.stdout
    for name, status in calibration_status(scenario):
        print(f"route {name!r}: {status}", file=file)
    for w in calibration_warnings(scenario):
        print(f"calibration: {w}", file=file)
