"""The report as a reader sees it at 1,280 px in headless Chromium: the page never scrolls sideways and no table
overflows its box. Skipped where no Chromium is installed (README, "Static figures", says how)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.report.html import collect_sections, render_html

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

MEASURE = """<script>window.addEventListener("load", () => setTimeout(() => {
  const d = document.documentElement;
  const over = [...document.querySelectorAll(".table-wrap")].filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => (e.previousElementSibling || {}).textContent);
  document.body.setAttribute("data-measure", d.scrollWidth + "x" + d.clientWidth + "|" + over.join(";"));
}, 300));</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to render the report")
@pytest.mark.parametrize("width", [1280, 1024])
def test_report_fits_the_window(tmp_path, width):
    catalog = load_catalog()
    sc = load_scenario("support_chat", catalog)
    html = render_html(sc, collect_sections(sc, catalog, budget=5000, balance=20000))
    page = tmp_path / "r.html"
    page.write_text(html.replace("</body>", MEASURE), encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},2000",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    m = re.search(r'data-measure="(\d+)x(\d+)\|([^"]*)"', dom)
    assert m, "the page did not finish loading"
    scroll, client, overflowing = int(m.group(1)), int(m.group(2)), m.group(3)
    assert scroll <= client, f"the page scrolls sideways at {width} px"
    if width == 1280:
        assert overflowing == "", f"tables wider than the page at 1,280 px: {overflowing}"
