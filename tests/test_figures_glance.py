"""Figures read at a glance (issue 20): every axis is titled, a log axis labels its ticks with their magnitude
("20k", "0.1 %", never a bare "2" or "5"), every line has a legend entry, today's traffic is a labelled line,
and each figure still renders to a static PNG where kaleido has a Chromium."""

from __future__ import annotations

import re

import pytest

import kimiplan as kp
from kimiplan.viz.theme import static_images_available, styled


@pytest.fixture(scope="module")
def figures():
    catalog = kp.load_catalog()
    sc = kp.load_scenario("support_chat", catalog)
    p = kp.plan(sc, catalog)
    rec = kp.recommend_budgets(sc, catalog)
    r0 = rec.iloc[0]
    curve = kp.budget_curve(sc, r0["route"], catalog)
    sim = kp.simulate(sc.model_copy(update={"tier": "Tier2"}), catalog, kp.SimSettings(hours=1.0))
    return {
        "tier ladder": kp.viz.tier_ladder_figure(p.ladder, sc.traffic.mean_rps),
        "tier tables": kp.viz.tier_tables_figure(p, sc.traffic.mean_rps),
        "headroom": kp.viz.headroom_figure(kp.tier_headroom(sc, catalog)),
        "budget": kp.viz.budget_tradeoff_figure(curve, int(r0["current_budget"]), int(r0["recommended_budget"])),
        "utilization": kp.viz.utilization_figure(sim),
    }


def _axes(fig):
    lay = fig.layout
    return {k: lay[k] for k in lay if re.fullmatch(r"[xy]axis\d*", k) and lay[k] is not None}


@pytest.mark.parametrize("name", ["tier ladder", "tier tables", "headroom", "budget", "utilization"])
def test_a_figure_reads_at_a_glance(figures, name):
    fig = figures[name]
    for key, ax in _axes(fig).items():
        if ax.type == "log":
            assert ax.title.text and "log" in ax.title.text, (name, key)
            assert ax.tickvals and len(ax.ticktext) == len(ax.tickvals), (name, key, "ticks left to plotly")
            for t in ax.ticktext:
                assert not re.fullmatch(r"\d", t), (name, key, t)  # a bare digit between two decades
                assert not re.search(r"\d[eE][-+]?\d", t), (name, key, t)
    titled = [ax.title.text for ax in _axes(fig).values() if ax.title.text]
    assert len(titled) >= 2 or name == "utilization", (name, titled)
    lines = [t for t in fig.data if t.type == "scatter" and (t.mode or "lines").startswith("lines")]
    for t in lines:
        assert t.name, (name, "a line without a name")
    groups = {t.legendgroup or t.name for t in lines}
    shown = {t.legendgroup or t.name for t in lines if t.showlegend is not False}
    assert groups == shown, (name, "a line missing from the legend", groups - shown)
    assert fig.layout.showlegend is not False, name


@pytest.mark.parametrize("name", ["tier ladder", "tier tables"])
def test_today_is_a_labelled_line(figures, name):
    fig = figures[name]
    today = [t for t in fig.data if t.name and t.name.startswith("today: ")]
    assert len(today) == 1 and "40,000 requests/day" in today[0].name
    assert any(a.text == today[0].name for a in fig.layout.annotations)


@pytest.mark.skipif(not static_images_available(), reason="kaleido has no Chromium here (README, Static figures)")
def test_each_figure_keeps_its_static_png(figures):
    # Two figures stand for all (each PNG is a headless-Chromium render, seconds apiece).
    for name in ("tier ladder", "budget"):
        png = styled(figures[name]).to_image(format="png", width=700, height=420)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
