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
    assert wb.sheetnames == ["monthly", "by_route", "expected", "daily", "assumptions"]
    monthly = pd.read_excel(out, sheet_name="monthly")
    assert monthly["expected"].tolist() == pytest.approx(fc.monthly["expected"].tolist())
    a = pd.read_excel(out, sheet_name="assumptions")
    cards = a[a["group"] == "price card"]["value"]
    assert cards.str.contains("verified_on 2026-08-04").any() and cards.str.contains("source:").any()
    assert (a["item"] == "tax_rate").any()
    assert os.listdir(tmp_path) == ["f.xlsx"]


def test_failing_excel_keeps_old_file(fc, tmp_path):
    out = tmp_path / "f.xlsx"
    out.write_bytes(b"previous workbook")
    bad = pd.DataFrame({"x": ["fine", "bad \x01 control character"]})  # openpyxl refuses control characters
    with pytest.raises(Exception):
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
