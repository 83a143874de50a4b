"""Tables for people, in HTML and in plain text, from the per-column formats of `kimiplan.io.formats` (the
report, the CLI, the notebook objects and the Excel export read numbers the same way), and `SummaryTable`: what
each result object's `summary()` returns, a compact statsmodels-like block (key figures with units, the tables,
the caveats) that prints as text and renders as HTML in a notebook."""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from kimiplan.io.formats import ColumnFormat, display_frame, header, is_numeric_kind

_ids = itertools.count()


def table_html(
    df: pd.DataFrame,
    currency: str | None = None,
    overrides: Mapping[str, ColumnFormat | str] | None = None,
    note: str = "",
    uid: str | None = None,
) -> str:
    """A frame as an HTML table: one format per column, human headers, numbers right-aligned."""
    shown, fmts = display_frame(df, currency, overrides)
    # A column with no value in any row says nothing (e.g. RPD on a provider without daily request limits).
    shown = shown.loc[:, [c for c in shown.columns if shown[c].notna().any()]].reset_index(drop=True)
    cols = [str(c) for c in shown.columns]
    shown.columns = cols
    sty = shown.style.format({c: fmts[c].text for c in cols}, na_rep="")
    sty = sty.hide(axis="index").relabel_index([header(c, fmts[c]) for c in cols], axis=1)
    styles = {}
    for c in cols:
        if is_numeric_kind(fmts[c]):
            styles[c] = [
                {"selector": "td", "props": "text-align: right; white-space: nowrap;"},
                {"selector": "th", "props": "text-align: right;"},
            ]
        elif fmts[c].kind == "text" and shown[c].astype(str).str.len().max() > 40:
            styles[c] = [{"selector": "td", "props": "min-width: 10rem; white-space: normal;"}]
    wide = " wider" if len(cols) > 15 else " wide" if len(cols) > 10 else ""
    sty = sty.set_table_styles(styles, overwrite=False).set_table_attributes(f'class="table{wide}"')
    sty = sty.set_uuid(uid or f"k{next(_ids)}")
    out = f'<div class="table-wrap">{sty.to_html()}</div>'
    if note:
        out += f'<p class="note">{html.escape(note)}</p>'
    return out


def table_cells(
    df: pd.DataFrame, currency: str | None = None, overrides: Mapping[str, ColumnFormat | str] | None = None
) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, columns of cell texts, numeric?) of a frame under its formats."""
    shown, fmts = display_frame(df, currency, overrides)
    cols = [str(c) for c in shown.columns]
    heads = [header(c, fmts[c]) for c in cols]
    cells = [[fmts[c].text(v) for v in shown[col]] for c, col in zip(cols, shown.columns)]
    return heads, cells, [is_numeric_kind(fmts[c]) for c in cols]


def table_text(
    df: pd.DataFrame, currency: str | None = None, overrides: Mapping[str, ColumnFormat | str] | None = None
) -> str:
    """A frame as aligned plain text under its formats (numbers right-aligned)."""
    heads, cells, numeric = table_cells(df, currency, overrides)
    widths = [max([len(h)] + [len(v) for v in col]) for h, col in zip(heads, cells)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    rows = [line(heads), line(["-" * w for w in widths])]
    rows += [line(r) for r in zip(*cells)] if cells else []
    return "\n".join(rows)


@dataclass
class Table:
    """A frame plus how to read it (the currency of its money columns, per-column format overrides, a note):
    formatted text as its repr, a formatted HTML table in a notebook. `kp.table(df)` in a notebook."""

    frame: pd.DataFrame
    currency: str | None = None
    formats: Mapping[str, ColumnFormat | str] = field(default_factory=dict)
    note: str = ""

    def to_html(self) -> str:
        return table_html(_flat(self.frame), self.currency, self.formats, self.note)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        text = table_text(_flat(self.frame), self.currency, self.formats)
        return text + (f"\n{self.note}" if self.note else "")


def table(
    df: pd.DataFrame,
    currency: str | None = None,
    formats: Mapping[str, ColumnFormat | str] | None = None,
    note: str = "",
) -> Table:
    """A frame shown with the report's per-column formats (currency, percentages, thousands separators, no
    e-notation); the values stay in `.frame`."""
    return Table(df, currency, dict(formats or {}), note)


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """A named index (route, month) shown as the first column."""
    return df.reset_index() if df.index.name is not None else df


@dataclass(frozen=True)
class SummaryTable:
    """A result at a glance: `facts` (label, value with its unit), `tables` (title, frame, currency) and
    `notes` (the caveats). `str()` is aligned text, `_repr_html_` the same in a notebook. Attributes it does
    not have come from its first table, so code that treated an older `summary()` as a DataFrame still works."""

    title: str
    facts: Sequence[tuple[str, str]] = ()
    tables: Sequence[tuple[str, pd.DataFrame, str | None]] = ()
    notes: Sequence[str] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def frame(self) -> pd.DataFrame:
        return self.tables[0][1] if self.tables else pd.DataFrame()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.frame, name)

    def __getitem__(self, key):
        return self.frame[key]

    def __len__(self) -> int:
        return len(self.frame)

    def __str__(self) -> str:
        width = max([len(self.title), *(len(t) + 2 + len(v) for t, v in self.facts)], default=40)
        width = min(max(width, 60), 118)
        out = [self.title, "=" * width]
        lab = max((len(t) for t, _ in self.facts), default=0)
        out += [f"{t + ':':<{lab + 1}} {v}" for t, v in self.facts]
        for title, df, cur in self.tables:
            out += ["", title, table_text(_flat(df), cur, self.overrides)]
        if self.notes:
            out += ["", "Notes:"] + [f"[{i}] {n}" for i, n in enumerate(self.notes, 1)]
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def to_html(self) -> str:
        e = html.escape
        facts = "".join(f"<tr><th style='text-align:left'>{e(t)}</th><td>{e(v)}</td></tr>" for t, v in self.facts)
        parts = [f"<div><h4>{e(self.title)}</h4>"]
        if facts:
            parts.append(f'<table class="table">{facts}</table>')
        for title, df, cur in self.tables:
            parts.append(f"<p><b>{e(title)}</b></p>{table_html(_flat(df), cur, self.overrides)}")
        if self.notes:
            parts.append("<ol>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ol>")
        return "".join(parts) + "</div>"

    def _repr_html_(self) -> str:
        return self.to_html()
