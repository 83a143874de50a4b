"""The CLI for people: formatted tables (plain when piped, rich on a terminal), --version, defaults in --help,
and `kimiplan init` writing a starter scenario that validates."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from kimiplan import __version__
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import _util, build_parser, main

E_NOTATION = re.compile(r"\d[eE][+-]?\d")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"kimiplan {__version__}"


def test_help_shows_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = sub.choices["forecast"].format_help()
    assert "(default: 12)" in text and "(default: 10000)" in text
    assert "(default: moonshot)" in sub.choices["cost"].format_help()


def test_breakdown_plain_when_piped(capsys):
    code, out, _ = run(capsys, "breakdown", "support_chat")
    assert code == 0
    assert "80.0 %" in out and "15.0 %" in out and "5.00 %" in out  # shares, not 0.1/0.1
    assert "$4,075.49" in out and "Cost per month ($)" in out
    assert not E_NOTATION.search(out) and "│" not in out and "━" not in out


def test_cost_headline_is_not_zero_for_a_small_call(capsys):
    _, out, _ = run(capsys, "cost", "--model", "kimi-k2.6", "--prompt-tokens", "1200", "--completion-tokens", "300")
    assert out.startswith("$0.0023")


def test_rich_table_on_a_terminal(monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    monkeypatch.setattr(_util.sys, "stdout", buf)
    monkeypatch.setenv("COLUMNS", "120")
    _util.print_table(pd.DataFrame({"route": ["a"], "share": [0.25], "cost_per_month": [1234.5], "currency": ["USD"]}))
    text = buf.getvalue()
    assert "25.0 %" in text and "$1,234.50" in text and "Cost per month ($)" in text
    assert "─" in text  # rich's rule under the header


@pytest.mark.parametrize("kind", ["chat", "rag", "agent"])
def test_init_writes_a_valid_commented_scenario(tmp_path, capsys, kind):
    out = tmp_path / f"{kind}.yaml"
    code, text, _ = run(capsys, "init", str(out), "--kind", kind, "--requests-per-day", "2500", "--yes")
    assert code == 0 and out.exists()
    body = out.read_text()
    assert body.startswith("# kimiplan scenario") and "kimiplan validate" in body
    sc = load_scenario(out)
    assert sc.traffic.per_day == pytest.approx(2500)
    # An existing file is never replaced without --force, and stays intact.
    code, _, err = run(capsys, "init", str(out), "--kind", kind, "--yes")
    assert code == 2 and "--force" in err and out.read_text() == body


def test_init_and_validate_words_read_right(tmp_path, capsys):
    """init's one chat route validates as "1 route" (not "1 routes"); the growth ceiling prints as a spaced
    percent with its thousands separator."""
    out = tmp_path / "one.yaml"
    assert run(capsys, "init", str(out), "--kind", "chat", "--yes")[0] == 0
    code, text, _ = run(capsys, "validate", str(out))
    assert code == 0 and "valid (1 route, model" in text
    code, text, _ = run(capsys, "validate", "support_chat")
    assert code == 0 and "valid (3 routes, model" in text
    code, _, err = run(capsys, "init", str(tmp_path / "g.yaml"), "--growth", "300", "--yes")
    assert code == 2 and "at most 1,000 %, got '300'" in err and not (tmp_path / "g.yaml").exists()


def test_init_rejects_an_unknown_model(tmp_path, capsys):
    code, _, err = run(capsys, "init", str(tmp_path / "x.yaml"), "--model", "kimi-k9", "--yes")
    assert code == 2 and "kimi-k9" in err and not (tmp_path / "x.yaml").exists()


def test_a_wide_table_on_a_160_column_terminal_keeps_identifiers_whole(monkeypatch):
    """compare's table on a 160-column terminal: model IDs and variant names stay on one line; the long status
    sentences wrap instead."""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    monkeypatch.setattr(_util.sys, "stdout", buf)
    monkeypatch.setenv("COLUMNS", "160")
    models = ["kimi-k2.6", "moonshotai/kimi-k2.6-instruct-0905", "@cf/moonshotai/kimi-k2.6", "kimi-k3.1-pro-highspeed"]
    df = pd.DataFrame(
        {
            "variant": ["base", "openrouter (moonshotai/kimi-k2.6)", "cloudflare workers-ai", "K3.1 Pro highspeed"],
            "provider": ["moonshot", "openrouter", "cloudflare", "moonshot"],
            "model": models,
            "expected_total": [69879.12, 71234.5, 65432.1, 120345.6],
            "P10_total": [60000.0, 61000.0, 56000.0, 100000.0],
            "P90_total": [80000.0, 82000.0, 75000.0, 140000.0],
            "per_month": [5823.26, 5936.2, 5452.7, 10028.8],
            "vs_first_pct": [0.0, 1.9, -6.4, 72.2],
            "status": ["ok", "not like for like: $web_search unpriced on web_lookup"] * 2,
            "currency": ["USD"] * 4,
        }
    )
    _util.print_table(df)
    text = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())  # colours are not width
    assert max(len(line) for line in text.splitlines()) <= 160
    for m in models:
        assert m in text, (m, text)
    assert "$69,879.12" in text


def test_prices_and_tiers_carry_their_currency(capsys):
    """Every money column names its currency: one table per currency, the symbol in each cell and the unit in the
    header ($/1M tokens, $/call), never a bare 0.160 beside a Currency column."""
    code, out, _ = run(capsys, "prices", "--provider", "moonshot")
    assert code == 0 and "Prices in USD" in out and "Prices in CNY" in out
    usd, cny = out.split("Prices in CNY")
    assert "Input cache hit ($/1M)" in usd and "Output ($/1M)" in usd and "Web search ($/call)" in usd
    assert "Input cache hit (¥/1M)" in cny and "Output (¥/1M)" in cny
    k26 = next(line for line in usd.splitlines() if " kimi-k2.6 " in line)
    assert "$0.16" in k26 and "$0.95" in k26 and "$4.00" in k26 and "$0.005" in k26 and "0.60×" in k26
    k26_cn = next(line for line in cny.splitlines() if " kimi-k2.6 " in line)
    assert "¥1.10" in k26_cn and "¥6.50" in k26_cn and "¥27.00" in k26_cn
    code, out, _ = run(capsys, "tiers", "--provider", "moonshot")
    assert code == 0 and "Recharge ($)" in out and "Recharge (¥)" in out and "Recharge currency" not in out
    assert "$3,000.00" in out and "¥20,000.00" in out
    for line in out.splitlines():
        assert not re.search(r"(?<![\d$¥.,])\d+\.\d\d(?!×)\b", line) or "$" in line or "¥" in line, line
