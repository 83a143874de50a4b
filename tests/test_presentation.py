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
def fitted(tmp_path_factory):
    """A calibration with every field a fit now writes (cost precision per route), fitted from a small synthetic call
    log; the base URL is set as the sampler records it for calls to an emulator."""
    log = kp.generate_call_log(tmp_path_factory.mktemp("log") / "calls.parquet", 3000, seed=6, days=2)
    cal = kp.fit_calibration(kp.summarize_log(log, samples_per_route=300).samples)
    return cal.model_copy(update={"base_url": "http://127.0.0.1:8765/v1"})


@pytest.fixture(scope="module")
def objects(fitted):
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
        "Calibration (fitted now)": fitted,
        "AgentStats": kp.agent_stats(kp.load_scenario("coding_agent", catalog), "fix_issue", catalog, runs=300),
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
        "Calibration (fitted now)",
        "AgentStats",
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


def test_the_calibration_summary_states_units_precision_and_provenance(objects):
    from kimiplan.io.formats import money, percent

    cal = objects["Calibration (fitted now)"]
    s = cal.summary()
    facts = dict(s.facts)
    assert facts["Model"] == cal.model and facts["Base URL"] == "http://127.0.0.1:8765/v1"
    assert facts["Calls"] == f"{cal.n_samples:,} on {len(cal.routes)} routes"
    assert cal.samples_from.strftime("%Y-%m-%d") in facts["Sampled"]
    assert "± at 95 % confidence" in facts["Precision"] and "target ± 5 %" in facts["Precision"]
    text, page = str(s), visible(cal._repr_html_())
    for where in (text, page):
        # the units, in the tables' titles and headers
        assert "Tokens per call" in where and "Cost (USD/request)" in where and "± at 95 %" in where
        assert "Truncated (of calls)" in where and "Cached (of input)" in where
        for name, r in cal.routes.items():
            p = r.precision
            # each cell in the report's per-column format: money with its symbol, a spaced percent
            assert money(p.cost_per_request.value, "USD", 4) in where, name
            assert percent(p.cost_rel_error) in where, name
            assert f"{r.n:,}" in where
    assert any("chosen law" in n for n in s.notes)
    # the file shipped as an example predates precision and base URL: the summary says so rather than show blanks
    old = objects["Calibration"].summary()
    assert dict(old.facts)["Base URL"] == "not recorded in this file"
    assert any("predates the cost precision" in n for n in old.notes)
    assert any("emulator, not on Kimi" in n for n in old.notes)
    assert "Cost (USD/request)" not in str(old)  # no empty money column


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
