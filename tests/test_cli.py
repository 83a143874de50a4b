import json
import subprocess
import sys

import pytest

from kimiplan.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cost_json_reference_values(capsys):
    code, out, _ = run(
        capsys, "cost", "--model", "kimi-k2.6", "--prompt-tokens", "1000000", "--completion-tokens", "1000000", "--json"
    )
    d = json.loads(out)
    assert code == 0 and d["total"] == 4.95 and d["currency"] == "USD"
    code, out, _ = run(
        capsys,
        "cost",
        "--model",
        "kimi-k2.6",
        "--region",
        "cn",
        "--prompt-tokens",
        "1000000",
        "--completion-tokens",
        "1000000",
        "--json",
    )
    d = json.loads(out)
    assert d["total"] == 33.5 and d["currency"] == "CNY"


def test_cost_cached_tools_batch(capsys):
    _, out, _ = run(
        capsys,
        "cost",
        "--model",
        "kimi-k2.6",
        "--prompt-tokens",
        "1000000",
        "--cached-tokens",
        "1000000",
        "--completion-tokens",
        "0",
        "--web-search-calls",
        "5",
        "--on",
        "2026-11-26",
        "--json",
    )
    d = json.loads(out)
    assert d["total"] == pytest.approx(0.16 + 5 * 0.004)  # the Help Center's $0.004 before the tools page's $0.005
    _, out, _ = run(
        capsys,
        "cost",
        "--model",
        "kimi-k2.6",
        "--prompt-tokens",
        "1000000",
        "--completion-tokens",
        "1000000",
        "--batch",
        "--json",
    )
    assert json.loads(out)["total"] == pytest.approx(2.97)


def test_cost_errors_are_clear(capsys):
    code, _, err = run(
        capsys, "cost", "--model", "kimi-k9", "--prompt-tokens", "1", "--completion-tokens", "1", "--json"
    )
    assert code == 2 and "unknown model 'kimi-k9'" in err and "kimi-k2.6" in err
    code, _, err = run(
        capsys,
        "cost",
        "--model",
        "kimi-k2.6",
        "--prompt-tokens",
        "5",
        "--cached-tokens",
        "9",
        "--completion-tokens",
        "1",
    )
    assert code == 2 and "cached_tokens (9)" in err
    with pytest.raises(SystemExit):
        main(["cost", "--model", "kimi-k2.6", "--prompt-tokens", "-3", "--completion-tokens", "1"])
    assert "must be >= 0" in capsys.readouterr().err


def test_prices_and_tiers(capsys):
    _, out, _ = run(capsys, "prices", "--provider", "moonshot", "--region", "cn", "--on", "2026-11-26", "--json")
    rows = json.loads(out)
    assert {r["model"] for r in rows} >= {"kimi-k2.6", "kimi-k2.5"}
    assert all(r["source"] and r["verified_on"] for r in rows)
    assert not any(r["model"] == "kimi-k2-thinking" for r in rows)  # retired 2026-05-25
    _, out, _ = run(capsys, "tiers", "--provider", "moonshot", "--region", "intl", "--on", "2026-08-01", "--json")
    rows = json.loads(out)
    assert [r["concurrency"] for r in rows] == [1, 50, 100, 200, 400, 1000]
    code, out, _ = run(capsys, "tiers")
    assert code == 0 and "Tier5" in out


def test_tokens_count(capsys, tmp_path):
    _, out, _ = run(capsys, "tokens", "count", "Hello, world!", "--json", "--ids")
    d = json.loads(out)
    assert d["tokens"] == 4 and d["ids"] == [19180, 11, 2695, 0]
    f = tmp_path / "req.json"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello world"}]}))
    _, out, _ = run(capsys, "tokens", "count", "--file", str(f), "--messages")
    assert int(out.strip()) == 2 + 4 + 3  # text + user header/footer + reply primer
    code, _, err = run(capsys, "tokens", "count", "--file", str(tmp_path / "missing.txt"))
    assert code == 2 and "missing.txt" in err


def test_schema_validate_breakdown(capsys, tmp_path):
    _, out, _ = run(capsys, "schema")
    assert json.loads(out)["title"] == "kimiplan scenario"
    code, out, _ = run(capsys, "validate", "support_chat")
    assert code == 0 and "valid" in out
    _, out, _ = run(capsys, "breakdown", "document_report", "--json")
    d = json.loads(out)
    assert {r["route"] for r in d["summary"]} == {"analyze", "follow_up", "all routes"}


def test_console_script_entry_point():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kimiplan",
            "cost",
            "--model",
            "kimi-k2.6",
            "--prompt-tokens",
            "2000",
            "--completion-tokens",
            "500",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(r.stdout)["total"] == pytest.approx((2000 * 0.95 + 500 * 4.0) / 1e6)
