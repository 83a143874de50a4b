"""Objects that present themselves (issue 20): each result object a notebook meets has a short text `repr`, a
`summary()` (key figures with units, the tables, the caveats) and a `_repr_html_` from the report's per-column
formats; nothing a person reads shows e-notation or float noise (more than 4 significant digits after a point)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

import kimiplan as kp
from kimiplan.calibration.fitters import load_calibration
from kimiplan.capacity.sim.simulate import SimSettings
from kimiplan.io.paths import data_path

E_NOTATION = re.compile(r"\d(?:\.\d+)?[eE][-+]?\d+")
DECIMAL = re.compile(r"(?<![\w.])([$¥€£]?)(\d[\d,]*\.\d+)(?![\deE])")


def noise(text: str) -> list[str]:
    """Numbers nobody wants to read: e-notation, or a decimal with more than 4 significant digits (17286.2932,
    1.372130, 1,195,072.46 requests); money keeps its cents ($4,004.20) and small figures their places (0.0036)."""
    bad = E_NOTATION.findall(text)
    for sym, m in DECIMAL.findall(text):
        whole, frac = m.replace(",", "").split(".")
        sig = (whole + frac).lstrip("0")
        if len(sig) > 4 and not (sym and len(frac) <= 2):
            bad.append(m)
    return bad


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible(html: str) -> str:
    t = _Text()
    t.feed(html)
    return " ".join(t.parts)


@pytest.fixture(scope="module")
def objects():
    catalog = kp.load_catalog()
    sc = kp.load_scenario("support_chat", catalog)
    tier2 = sc.model_copy(update={"tier": "Tier2"})
    return {
        "Scenario": sc,
        "CapacityPlan": kp.plan(sc, catalog),
        "CapacityPlan (tier does not hold)": kp.plan(tier2, catalog),
        "Forecast": kp.forecast(sc, 12, catalog=catalog, paths=300, budget=5000),
        "SimResult": kp.simulate(sc, catalog, SimSettings.for_scenario(sc, hours=0.5)),
        "Calibration": load_calibration(data_path("calibrations", "support_chat_emulator.json")),
        "Backtest": kp.backtest(data_path("usage", "past_months_synthetic.csv"), sc, catalog=catalog),
        "ComparisonTable": kp.compare(
            {"base": sc, "cache hit rate 50 %": sc.with_route_changes(cache={"mode": "prefix_rule", "hit_rate": 0.5})},
            12,
            catalog=catalog,
            paths=100,
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "Scenario",
        "CapacityPlan",
        "CapacityPlan (tier does not hold)",
        "Forecast",
        "SimResult",
        "Calibration",
        "Backtest",
        "ComparisonTable",
    ],
)
def test_each_object_presents_itself_without_noise(objects, name):
    obj = objects[name]
    r = repr(obj)
    assert r.startswith("<") and len(r) < 400 and "\n" not in r, r
    assert "DataFrame" not in r and "dtype" not in r
    s = obj.summary()
    text = str(s)
    assert len(text.splitlines()) >= 5 and s.facts and s.tables, text
    page = visible(obj._repr_html_())
    assert len(page) > 100
    for where, t in (("repr", r), ("summary", text), ("html", page)):
        assert not noise(t), (name, where, noise(t)[:5])


def test_the_checker_sees_noise():
    assert noise("max_requests_per_day 17286.2932") == ["17286.2932"]
    assert noise("requests 1,195,072.46 and 3.492500e+00") == ["3.492500e+00", "1,195,072.46"]
    assert noise("$4,004.20, 0.0036, 78.7 %, 1.37×") == []


def test_summary_reads_like_the_frame_it_replaced(objects):
    cal = objects["Calibration"]
    # Older code treated Calibration.summary() as a DataFrame indexed by route.
    assert cal.summary().index.name == "route" and list(cal.summary().round(3).index) == list(cal.routes)
    assert objects["SimResult"].summary["requests"] > 0  # the mapping still reads a figure
    table = objects["ComparisonTable"]
    assert list(table["variant"]) == ["base", "cache hit rate 50 %"]
    assert type(table.sort_values("expected_total")).__name__ == "DataFrame"  # derived frames are plain


def test_the_plan_summary_carries_the_one_headroom(objects):
    p = objects["CapacityPlan (tier does not hold)"]
    text = str(p.summary())
    assert "over capacity" in text and "buy Tier3" in text
    h = p.headroom("Tier3")
    assert h.sentence in kp.plan(kp.load_scenario("support_chat")).describe()
