"""Exports: sheets and assumptions are written, and a failing export leaves no partial file and does not touch
an existing one."""

from __future__ import annotations

import os

import openpyxl
import pandas as pd
import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import ConfigError
from kimiplan.finance.forecast import forecast
from kimiplan.io.export import assumptions_frame, export_forecast, to_csv, to_excel
from kimiplan.model.scenario import example_path


@pytest.fixture(scope="module")
def fc():
    cat = load_catalog()
    return forecast(load_scenario(example_path("document_report"), cat), 2, catalog=cat, paths=100)


def test_workbook_has_views_and_assumptions(fc, tmp_path):
    out = tmp_path / "f.xlsx"
    export_forecast(fc, xlsx=out)
    wb = openpyxl.load_workbook(out, read_only=True)
    assert wb.sheetnames == ["assumptions", "monthly", "by_route", "expected", "daily"]
    sym = {"USD": "$", "CNY": "¥"}[fc.currency]
    monthly = pd.read_excel(out, sheet_name="monthly")
    assert monthly[f"Expected ({sym})"].tolist() == pytest.approx(fc.monthly["expected"].tolist())
    a = pd.read_excel(out, sheet_name="assumptions")
    cards = a[a["Group"] == "price card"]["Value"]
    assert cards.str.contains("verified_on 2026-08-04").any() and cards.str.contains("source:").any()
    assert (a["Item"] == "tax_rate").any()
    assert os.listdir(tmp_path) == ["f.xlsx"]


def test_workbook_is_formatted_for_finance(fc, tmp_path):
    out = tmp_path / "f.xlsx"
    export_forecast(fc, xlsx=out)
    ws = openpyxl.load_workbook(out)["monthly"]
    heads = {c.value: c.column_letter for c in ws[1]}
    assert ws.freeze_panes == "A2" and ws[1][0].font.bold
    month = ws[f"{heads['Month']}2"]
    assert month.is_date and month.value.day == 1 and month.number_format == "mmm yyyy"
    sym = {"USD": "$", "CNY": "¥"}[fc.currency]
    money = ws[f"{heads[f'Expected ({sym})']}2"]
    assert isinstance(money.value, float) and sym in money.number_format and "#,##0.00" in money.number_format
    assert ws[f"{heads['Requests']}2"].number_format == "#,##0"
    assert all(ws.column_dimensions[c].width >= 8 for c in heads.values())
    small = pd.DataFrame({"route": ["a"], "share": [0.15], "p_over_budget": [0.5], "cost_per_month_CNY": [12.5]})
    to_excel({"s": small}, tmp_path / "s.xlsx")
    ws = openpyxl.load_workbook(tmp_path / "s.xlsx")["s"]
    assert [c.value for c in ws[1]] == ["Route", "Share", "P(over budget)", "Cost per month (¥)"]
    assert ws["B2"].number_format == "0.00%" and ws["B2"].value == 0.15 and ws["C2"].number_format == "0.00%"
    assert "¥" in ws["D2"].number_format


def test_failing_excel_keeps_old_file(fc, tmp_path):
    out = tmp_path / "f.xlsx"
    out.write_bytes(b"previous workbook")
    bad = pd.DataFrame({"x": ["fine", "bad \x01 control character"]})  # openpyxl refuses control characters
    from openpyxl.utils.exceptions import IllegalCharacterError

    with pytest.raises(IllegalCharacterError):
        to_excel({"monthly": fc.monthly, "bad": bad}, out)
    assert out.read_bytes() == b"previous workbook"
    assert os.listdir(tmp_path) == ["f.xlsx"]


def test_failing_csv_keeps_old_file(tmp_path, monkeypatch):
    out = tmp_path / "m.csv"
    out.write_text("old\n")

    def half_then_fail(self, path, **kw):
        with open(path, "w") as f:
            f.write("month,exp")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        to_csv(pd.DataFrame({"a": [1]}), out)
    assert out.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["m.csv"]


def test_bad_targets(fc, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        to_csv(fc.monthly, tmp_path / "missing" / "m.csv")
    with pytest.raises(ConfigError, match="sheet name"):
        to_excel({"a/b": fc.monthly}, tmp_path / "x.xlsx")
    assert list(assumptions_frame(fc).columns) == ["group", "item", "value"]
