"""Tables for people in the report: `Table` (a frame, its currency, per-column format overrides and a note) and
`table_html`, both from `kimiplan.io.tables` (shared with the notebook objects); the formats are
`kimiplan.io.formats`, shared with the CLI and the Excel export."""

from __future__ import annotations

from kimiplan.io.tables import Table, table_html

__all__ = ["Table", "table_html"]
