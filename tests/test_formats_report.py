"""Numbers for people: per-column formats (no e-notation, currency symbols, percentages), and a report that leads
with the decision and whose figures agree with the analyses they quote."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from kimiplan.capacity.plan import plan
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.finance.forecast import forecast
from kimiplan.finance.variants import compare, run_variants, standard_variants
from kimiplan.io.formats import ColumnFormat, format_frame, header, infer_formats, money, number, percent
from kimiplan.report.forecast import fitting_variants
from kimiplan.report.html import collect_sections, render_html
from kimiplan.report.summary import decision_summary

E_NOTATION = re.compile(r"\d[eE][+-]?\d")


@pytest.mark.parametrize(
    "value,text",
    [(0.0, "0 %"), (1e-6, "< 0.001 %"), (7.3e-132, "< 0.001 %"), (0.0003, "0.030 %"), (0.15, "15.0 %"), (1.0, "100 %")],
)
def test_percent_never_uses_e_notation(value, text):
    assert percent(value) == text


def test_numbers_over_many_magnitudes_read_without_e_notation():
    for x in np.geomspace(1e-300, 1e15, 400):
        for s in (number(x), number(-x), percent(x), money(x, "USD"), money(x, "CNY")):
            assert not E_NOTATION.search(s), s
            assert "nan" not in s.lower()


def test_money_has_symbol_and_sensible_precision():
    assert money(4075.4939, "USD") == "$4,075.49"
    assert money(0.003566, "USD") == "$0.0036"
    assert money(24660.08, "CNY") == "¥24,660.08"
    assert money(-21004.57, "USD") == "−$21,004.57"
    assert money(68716.84, "USD", 0) == "$68,717"


def test_columns_are_inferred_from_names_and_values():
    df = pd.DataFrame(
        {
            "route": ["a"],
            "share": [0.15],
            "cost_per_month": [4075.49],
            "cost_per_month_CNY": [28936.0],
            "max_completion_tokens": [2048],
            "holds": [True],
            "p_over_budget": [0.969],
            "vs_first_pct": [-30.57],
            "currency": ["USD"],
        }
    )
    out = format_frame(df)
    row = out.iloc[0].to_dict()
    assert row == {
        "Route": "a",
        "Share": "15.0 %",
        "Cost per month ($)": "$4,075.49",
        "Cost per month (¥)": "¥28,936.00",
        "Max completion tokens": "2,048",
        "Holds": "yes",
        "P(over budget)": "96.9 %",
        "Vs first": "−30.6 %",
    }
    assert header("rpm") == "RPM" and header("demand_p99") == "Demand P99"
    assert infer_formats(df)["share"] == ColumnFormat("percent")


@pytest.fixture(scope="module")
def support_chat():
    catalog = load_catalog()
    sc = load_scenario("support_chat", catalog)
    return sc, catalog


def test_summary_quotes_the_plan_and_the_forecast(support_chat):
    sc, catalog = support_chat
    p = plan(sc, catalog)
    fc = forecast(sc, 12, catalog=catalog, paths=400, budget=5000)
    s = decision_summary(sc, catalog, p, fc, balance=20000)
    ladder = p["ladder"].set_index("tier")
    assert s.tier_to_buy == p["smallest_tier"]
    assert s.binding_limit == ladder.loc[s.tier_to_buy, "binding_limit"]
    # The next tier is the first with more room than the one bought.
    assert ladder.loc[s.next_tier, "max_scale"] > ladder.loc[s.tier_to_buy, "max_scale"]
    # The cost card is the next full month: the scenario's date (2026-11-26) is late in its own month.
    assert sc.as_of.isoformat() == "2026-11-26"
    first = fc.monthly.set_index("month").loc["2026-12"]
    assert s.cost_month == money(first["expected"], "USD", 0) and s.cost_month_label == "Dec 2026"
    assert money(first["P10"], "USD", 0) in s.cost_band and money(first["P90"], "USD", 0) in s.cost_band
    assert money(fc.monthly["expected"].mean(), "USD", 0) in s.cost_average
    assert s.p_over_budget == pytest.approx(fc.monthly["p_over_budget"].max())
    assert len(s.risks) == 3
    # The reconciliation's 12-month average is the variants table's per-month figure for the base.
    rec = s.reconciliation.set_index("figure")["amount"]
    base = compare(run_variants({"base": sc}, 12, catalog=catalog, paths=50))
    assert rec.iloc[2] == pytest.approx(base["per_month"].iloc[0], rel=1e-9)


def test_drivers_waterfall_only_proposes_fitting_variants(support_chat):
    sc, catalog = support_chat
    table = compare(run_variants(standard_variants(sc, catalog), 12, catalog=catalog, paths=20))
    fit = fitting_variants(sc, table)
    assert fit, "some variant fits"
    assert not any("Batch" in v for v in fit)  # support chat answers people while they wait
    status = table.set_index("variant")["status"]
    assert all(status[v] == "ok" for v in fit)
    # Providers without Moonshot's $web_search are flagged, not silently cheaper.
    for prov in ("openrouter", "cloudflare", "siliconflow"):
        if prov in status:
            assert "not like for like" in status[prov]


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self._in = [], False

    def handle_starttag(self, tag, attrs):
        self._in = tag in ("td", "th")

    def handle_endtag(self, tag):
        self._in = False

    def handle_data(self, data):
        if self._in and data.strip():
            self.cells.append(data.strip())


def test_report_leads_with_the_decision_and_tables_have_no_e_notation(support_chat):
    sc, catalog = support_chat
    text = render_html(sc, collect_sections(sc, catalog, budget=5000, balance=20000))
    top = text[: text.index('id="capacity"')]
    for needle in (
        "Tier to buy",
        "Headroom on Tier3",
        "Capacity on Tier3 runs out",
        "Prepaid balance runs out",
        "Cost, next full month",
        "P10–P90 $",
        "Check before you rely",
    ):
        assert needle in top
    cells = _Cells()
    cells.feed(text)
    assert len(cells.cells) > 200
    bad = [c for c in cells.cells if E_NOTATION.search(c) or c in ("True", "False", "None", "nan")]
    assert not bad, bad[:10]


def test_columns_named_after_a_money_column_share_its_currency_and_lists_read_as_lists():
    """An upgrade path as a table: `recharge_from` takes `recharge_currency` as `recharge` does (never a bare
    100.00), and the tiers it skips read "Tier4", not "['Tier4']"."""
    import pandas as pd

    from kimiplan.io.tables import table_text

    df = pd.DataFrame(
        [{"to": "Tier5", "skipped": ["Tier4"], "recharge": 3000.0, "recharge_from": 100.0, "recharge_currency": "USD"}]
    )
    text = table_text(df)
    assert "Recharge ($)" in text and "Recharge from ($)" in text and "$100.00" in text and "$3,000.00" in text
    assert "Recharge currency" not in text and "['Tier4']" not in text and "Tier4" in text
    mixed = pd.concat([df, df.assign(recharge_currency="CNY")])  # two currencies: the column stays, as it says
    assert "Recharge currency" in table_text(mixed)


def test_a_count_of_refusals_is_a_count_and_a_latency_quantile_is_in_seconds():
    """A call log's `refused` column counts requests (2,500, not "2,500.0 %"); `latency_s_p99` is seconds and says
    so in its header; a duration of thousands of seconds has no decimals; `share_of_spend` is a share, not money."""
    import pandas as pd

    from kimiplan.io.tables import table_text

    df = pd.DataFrame(
        {
            "refused": [2500, 2000],
            "refused_share": [0.01, 0.2],
            "latency_s_p99": [91.7, 90.1],
            "run_duration_s": [2196.36, 3000.0],
            "share_of_spend": [0.76, 0.24],
        }
    )
    lines = table_text(df, currency="USD").splitlines()
    assert lines[0].split("  ")[0] == "Refused" and "Latency P99 (s)" in lines[0] and "Share of spend" in lines[0]
    assert "Share of spend ($)" not in lines[0]
    row = lines[2]
    assert "2,500 " in row and "1.00 %" in row and "91.7 s" in row and "2,196 s" in row and "76.0 %" in row
    assert "2,500.0" not in row
