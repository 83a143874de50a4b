"""The report's first screen never contradicts itself (issue 20): read from the rendered HTML of three reports
(a tier that does not hold; a prepaid balance that runs out before capacity; a budget beyond the context window),
every statement about a tier's headroom, its capacity run-out month, the money run-out date and the next month's
cost agrees with every other and with the plan and forecast behind it. The checker is shown to fail on a
doctored page."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from kimiplan.capacity.plan import growth_exhaustion, plan
from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.io.formats import money
from kimiplan.report.forecast import report_forecast
from kimiplan.report.html import collect_sections, render_html
from kimiplan.report.summary import LIMIT_NAMES
from kimiplan.workload.checks import verdict_warnings

TIER = r"Tier\d+"
MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}"
DAY = r"\d{1,2} " + MONTH


class _Screen(HTMLParser):
    """The first screen: the cards (label, big, small), every other text block, up to the next section."""

    def __init__(self):
        super().__init__()
        self.cards: list[dict] = []
        self.blocks: list[str] = []
        self._cls: list[str] = []
        self._done = False
        self._h3 = 0
        self._buf = ""

    def handle_starttag(self, tag, attrs):
        if self._done:
            return
        cls = dict(attrs).get("class") or ""
        if tag in ("li", "p", "div", "ul", "ol") and self._buf.strip():
            self.blocks.append(" ".join(self._buf.split()))
        if tag in ("li", "p", "div", "ul", "ol"):
            self._buf = ""
        if tag == "h3":
            self._h3 += 1
            if self._h3 > 1:
                self._done = True
        if tag == "div" and cls.startswith("tile"):
            self.cards.append({"label": "", "big": "", "small": ""})
        self._cls.append(cls)

    def handle_endtag(self, tag):
        if self._done:
            return
        if tag in ("li", "p", "div") and self._buf.strip():
            self.blocks.append(" ".join(self._buf.split()))
            self._buf = ""
        if self._cls:
            self._cls.pop()

    def handle_data(self, data):
        if self._done or self._h3 == 0:
            return
        cls = self._cls[-1] if self._cls else ""
        if self.cards and cls in ("label", "big", "small"):
            self.cards[-1][cls] += data
        self._buf += data


def first_screen(page: str) -> _Screen:
    s = _Screen()
    s.feed(page)
    return s


def sentences(screen: _Screen) -> list[str]:
    out = []
    for b in screen.blocks:
        out += [x for x in re.split(r"(?<=[.;])\s+(?=[A-Z$0-9(])|;\s+", b) if x.strip()]
    return out


def contradictions(screen: _Screen, facts: dict) -> list[str]:
    """Every disagreement between two statements of the first screen, or with the plan and forecast."""
    bad = []
    cards = {c["label"].strip(): c for c in screen.cards}
    text = " ".join(screen.blocks)
    # One definition of headroom: a growth multiple, never a "room for x %" or a "headroom x %".
    for phrase in re.findall(r"room for [\d.]+ %|headroom(?: on \w+)? [−-]?[\d.]+ %", text):
        bad.append(f"headroom as a percentage: {phrase!r}")
    # Which tier: the tier you have and the tier to buy.
    have = [lab for lab in cards if lab.startswith("The tier you have")]
    if facts["current"] is not None:
        if have != [f"The tier you have: {facts['current']}"]:
            bad.append(f"the tier-you-have card is {have}, the scenario has {facts['current']}")
    buy = cards.get("Tier to buy", {}).get("big", "").strip()
    if buy != (facts["buy"] or "none holds"):
        bad.append(f"the tier-to-buy card says {buy!r}, the plan {facts['buy']!r}")
    for s in sentences(screen):
        if re.search(r"\btable [A-Z]\b", s):
            continue  # a sentence about another tier table speaks of that table's tiers
        for t in re.findall(rf"\bbuy ({TIER})", s):
            if t != facts["buy"]:
                bad.append(f"{s!r} says buy {t}, the card {facts['buy']}")
    # Headroom figures: one per (table, tier) across the page, and the headline one is the plan's.
    seen: dict[tuple, set] = {}
    for c in screen.cards:
        m = re.match(rf"Headroom on ({TIER})", c["label"].strip())
        if m and re.fullmatch(r"[\d.]+×", c["big"].strip()):
            seen.setdefault((None, m.group(1)), set()).add(c["big"].strip())
    for s in sentences(screen):
        table = re.search(r"\btable ([A-Z])\b", s)
        for t, x in re.findall(rf"(?:On |on |passes )({TIER})(?:'s)?[^.;×]*?([\d.]+×)", s):
            seen.setdefault((table.group(1) if table else None, t), set()).add(x)
    for key, xs in seen.items():
        if len(xs) > 1:
            bad.append(f"headroom of {key}: {sorted(xs)}")
    if facts["buy"] and facts["scale"] is not None:
        want = f"{facts['scale']:.2f}×"
        got = seen.get((None, facts["buy"]), set())
        if got != {want}:
            bad.append(f"headroom of {facts['buy']} reads {sorted(got)}, the plan {want}")
    # Capacity run-out month of the tier to buy: the card, the sentence under it, the verdict.
    cap = [c for lab, c in cards.items() if lab.startswith("Capacity on")]
    months = set()
    for c in cap:
        if "balance" in (c["label"] + c["small"]).lower():
            bad.append(f"the capacity card speaks of money: {c}")
        if re.fullmatch(MONTH, c["big"].strip()):
            months.add(c["big"].strip())
    for s in sentences(screen):
        if re.search(r"\btable [A-Z]\b", s) or facts["buy"] is None:
            continue
        for m in re.findall(rf"{facts['buy']}'s (?:capacity[^;.]*?|[\d.]+× )in ({MONTH})", s):
            months.add(m)
        for m in re.findall(rf"{facts['buy']}'s capacity \(({MONTH})\)", s):
            months.add(m)
    if facts["cap_month"] is not None and months != {facts["cap_month"]}:
        bad.append(f"capacity run-out of {facts['buy']}: {sorted(months)}, the plan {facts['cap_month']}")
    # Money run-out: its own card and words, one date everywhere.
    bal = cards.get("Prepaid balance runs out")
    if facts["balance_day"] is not None:
        days = set(re.findall(rf"runs out around ({DAY})", text))
        if bal is None or bal["big"].strip() != facts["balance_day"] or days != {facts["balance_day"]}:
            bad.append(f"balance run-out: card {bal and bal['big']!r}, sentences {sorted(days)}")
        if bal is not None and re.search(r"capacity|tier", bal["small"], re.I):
            bad.append(f"the balance card speaks of capacity: {bal['small']!r}")
    # The cost card: the next full month, with the 12-month average.
    cost = [c for lab, c in cards.items() if lab.startswith("Cost, next full month")]
    if len(cost) != 1 or facts["next_month"] not in cost[0]["label"] or cost[0]["big"].strip() != facts["cost"]:
        bad.append(f"cost card {cost}, want {facts['next_month']} {facts['cost']}")
    elif f"12-month average {facts['average']}" not in cost[0]["small"]:
        bad.append(f"cost card without the 12-month average {facts['average']}: {cost[0]['small']!r}")
    # Under each tier table, the limit said to bind is that table's tier-to-buy's.
    for b in screen.blocks:
        for v, t, lim in re.findall(rf"table ([A-Z]) \(.*?\): buy ({TIER}); (\w+) binds", b):
            want = facts["table_limits"].get((v, t))
            if want is not None and lim != want:
                bad.append(f"table {v}: {t} binds on {lim}, its plan on {want}")
    # Everything validate warns about that changes the verdict is on the screen.
    for w in facts["warnings"]:
        if w not in text:
            bad.append(f"missing warning: {w}")
    return bad


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _facts(sc, catalog, budget, balance):
    from kimiplan.finance.balance import exhaustion

    p = plan(sc, catalog)
    fc = report_forecast(sc, catalog, budget)
    buy = p.smallest_tier
    h = p.headroom(buy) if buy else None
    ex = growth_exhaustion(sc, h.scale) if h else None
    m = fc.monthly
    nxt = next(r for r in m.itertuples() if f"{r.month}-01" >= sc.as_of.isoformat())
    import datetime as dt

    label = f"{dt.date.fromisoformat(nxt.month + '-01'):%b %Y}"
    mid = exhaustion(fc, balance).set_index("quantile").loc["P50", "runs_out_on"]
    return {
        "current": sc.tier,
        "buy": buy,
        "scale": None if h is None else h.scale,
        "cap_month": None if not ex or not ex.get("date") or ex["months"] == 0 else f"{ex['date']:%b %Y}",
        "balance_day": None if mid is None or mid != mid else f"{mid.day} {mid:%b %Y}",
        "next_month": label,
        "cost": money(nxt.expected, fc.currency, 0),
        "average": money(m["expected"].mean(), fc.currency, 0),
        "warnings": [str(w) for w in verdict_warnings(sc)],
        "table_limits": {
            (t["version"], t["smallest_tier"]): LIMIT_NAMES[p.headroom(t["smallest_tier"], version=t["version"]).limit]
            for t in p.by_tier_table
            if t["smallest_tier"]
        },
    }


def _scenarios(catalog):
    base = load_scenario("support_chat", catalog)
    tier2 = base.model_copy(update={"tier": "Tier2"})
    routes = tuple(
        r.model_copy(update={"max_completion_tokens": 500_000}) if r.name == "answer" else r for r in base.routes
    )
    beyond = base.model_copy(update={"routes": routes})
    # support_chat with $20,000: the money runs out (Apr 2027) before Tier3's capacity (May 2027).
    return {"tier_does_not_hold": tier2, "balance_before_capacity": base, "beyond_context": beyond}


@pytest.fixture(scope="module")
def pages(catalog):
    out = {}
    for name, sc in _scenarios(catalog).items():
        page = render_html(sc, collect_sections(sc, catalog, providers=(), budget=5000, balance=20000))
        out[name] = (sc, page, _facts(sc, catalog, 5000, 20000))
    return out


@pytest.mark.parametrize("name", ["tier_does_not_hold", "balance_before_capacity", "beyond_context"])
def test_no_two_statements_of_the_first_screen_disagree(pages, name):
    sc, page, facts = pages[name]
    screen = first_screen(page)
    assert len(screen.cards) >= 6, screen.cards
    assert contradictions(screen, facts) == []
    verdict = next(b for b in screen.blocks if b.startswith("Verdict:"))
    if name == "tier_does_not_hold":
        assert "Tier2 does not hold" in verdict and "buy Tier3" in verdict
    if name == "balance_before_capacity":
        assert facts["balance_day"] in verdict and f"before Tier3's capacity ({facts['cap_month']})" in verdict
    if name == "beyond_context":
        assert "HTTP 400" in verdict and "answer" in verdict
        assert any("context window" in w for w in facts["warnings"])


def test_the_checker_catches_a_doctored_page(pages):
    sc, page, facts = pages["tier_does_not_hold"]
    want = f"{facts['scale']:.2f}×"
    # The issue's own examples of a contradiction: another tier's headroom, a percentage headroom, a money
    # date in the capacity card, last month's cost.
    doctored = [
        page.replace(f'<div class="big">{want}</div>', '<div class="big">2.13×</div>', 1),
        page.replace("Verdict:</b> ", "Verdict:</b> room for 113.2 % more traffic; ", 1),
        page.replace("Capacity on Tier3 runs out", "Capacity on Tier3 runs out (balance)", 1),
        page.replace(f'<div class="big">{facts["cost"]}</div>', '<div class="big">$1</div>', 1),
        page.replace("Verdict:</b> ", "Verdict:</b> buy Tier5; ", 1),
        page.replace("buy Tier1; RPM binds", "buy Tier1; TPM binds", 1),
    ]
    for d in doctored:
        assert d != page
        assert contradictions(first_screen(d), facts), d[:0]


@pytest.mark.parametrize("scenario", ["support_chat", "coding_assistant"])
def test_one_headroom_whichever_plan_computes_it(catalog, scenario):
    """The headroom of a tier read from another tier's plan (its ladder) is the headroom of that tier's own plan,
    over every tier of the ladder: one definition, two routes to it."""
    base = load_scenario(scenario, catalog)
    p = plan(base, catalog)
    for tier in p.ladder["tier"]:
        own = plan(base.model_copy(update={"tier": tier}), catalog)
        a, b = p.headroom(tier), own.headroom()
        assert a.limit == b.limit and a.scale == pytest.approx(b.scale, rel=1e-9), tier
        if a.utilization is not None or b.utilization is not None:
            assert a.utilization == pytest.approx(b.utilization, rel=1e-9), tier
        assert a.sentence == b.sentence


def test_excel_carries_the_same_headroom_and_a_status_with_its_reasons(tmp_path, catalog):
    import openpyxl

    from kimiplan.finance.balance import with_balance
    from kimiplan.finance.forecast import forecast
    from kimiplan.io.export import export_forecast

    sc = load_scenario("support_chat", catalog).model_copy(update={"tier": "Tier2"})
    fc = with_balance(forecast(sc, 12, catalog=catalog, paths=200, budget=5000), 20000)
    path = export_forecast(fc, xlsx=tmp_path / "f.xlsx")[0]
    wb = openpyxl.load_workbook(path, read_only=True)
    cells = [str(c) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for c in row if c is not None]
    assert plan(sc, catalog).headroom().sentence in cells
    status = [c for c in cells if "over capacity on Tier2" in c and not c.startswith("from ")]  # not the warning
    assert len(status) == 12 and any("balance runs out" in c for c in status)
    assert any("over budget likely" in c for c in status) and "ok" not in status
