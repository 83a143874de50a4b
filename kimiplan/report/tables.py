"""Tables for people: a DataFrame rendered with one format per column (pandas Styler), human headers, numbers
right-aligned, and a note under the table when it needs one. The formats are `kimiplan.io.formats`, shared with
the CLI and the Excel export."""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from kimiplan.io.formats import ColumnFormat, display_frame, header, is_numeric_kind

_ids = itertools.count()


@dataclass
class Table:
    """A frame plus how to read it: the currency of its money columns, per-column format overrides, a note."""

    frame: pd.DataFrame
    currency: str | None = None
    formats: Mapping[str, ColumnFormat | str] = field(default_factory=dict)
    note: str = ""

    def to_html(self) -> str:
        return table_html(self.frame, self.currency, self.formats, self.note)

    def _repr_html_(self) -> str:
        return self.to_html()


def table_html(
    df: pd.DataFrame,
    currency: str | None = None,
    overrides: Mapping[str, ColumnFormat | str] | None = None,
    note: str = "",
    uid: str | None = None,
) -> str:
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
