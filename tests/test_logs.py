"""Call-log summaries (DuckDB) against an independent pandas computation of the same figures."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from kimiplan.catalog.cards import PriceCard, load_catalog
from kimiplan.errors import ConfigError
from kimiplan.logs import generate_call_log, load_mapping, summarize_log

START = dt.date(2026, 9, 10)


@pytest.fixture(scope="module")
def catalog():
    """The shipped catalog plus a K2.6 price change on 2026-09-15, inside the generated log's dates."""
    base = load_catalog()
    old = base.price("kimi-k2.6", "moonshot", "intl", START)
    new = PriceCard(**{**old.model_dump(), "effective_from": dt.date(2026, 9, 15), "output": Decimal("3.70")})
    return base.with_rows(cards=[new])


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("logs")
    return generate_call_log(
        d / "calls.csv",
        6000,
        seed=3,
        start=START,
        days=10,
        models=[("kimi-k2.6", 0.85), ("kimi-k2.5", 0.1), ("kimi-k9-unknown", 0.05)],
        batch_share=0.2,
        refusal_rate=0.05,
    )


def pandas_summary(df: pd.DataFrame, catalog) -> pd.DataFrame:
    """Per route and day, computed row by row in pandas with the catalog's own look-up (no DuckDB, no price
    table): the reference the DuckDB summary must equal."""
    df = df.copy()
    df["day"] = pd.to_datetime(df["time"], utc=True).dt.date
    ok = df["error_type"].isna()
    rows = []
    for (route, day), g in df.groupby(["route", "day"]):
        good = g[ok.loc[g.index]]
        cost = Decimal(0)
        unpriced = 0
        for (model, batch), h in good.groupby(["model", "batch"]):
            try:
                card = catalog.price(model, "moonshot", "intl", day)
            except Exception:
                unpriced += len(h)
                continue
            if batch and card.batch_multiplier is None:
                unpriced += len(h)
                continue
            m = card.batch_multiplier if batch else Decimal(1)
            hit = int(h["cached_tokens"].sum())
            miss = int((h["prompt_tokens"] - h["cached_tokens"]).sum())
            out = int(h["completion_tokens"].sum())
            web = int(h["web_search_calls"].sum())
            cost += (hit * card.cache_hit_price + miss * card.input_cache_miss + out * card.output) * m / Decimal(
                1_000_000
            ) + web * card.web_search_per_call
        rows.append(
            {
                "route": route,
                "day": day,
                "requests": len(g),
                "succeeded": len(good),
                "refused": int((~ok.loc[g.index]).sum()),
                "cache_hit_tokens": int(good["cached_tokens"].sum()),
                "cache_miss_tokens": int((good["prompt_tokens"] - good["cached_tokens"]).sum()),
                "output_tokens": int((good["completion_tokens"] - good["reasoning_tokens"]).sum()),
                "reasoning_tokens": int(good["reasoning_tokens"].sum()),
                "unpriced_requests": unpriced,
                "cost_exact": cost,
                "prompt_tokens_p90": float(np.quantile(good["prompt_tokens"], 0.9)),
                "completion_tokens_p50": float(np.quantile(good["completion_tokens"], 0.5)),
                "latency_s_p99": float(np.quantile(good["latency_s"], 0.99)),
                "refused_tpd": int((g["error_type"] == "tpd").sum()),
            }
        )
    return pd.DataFrame(rows)


def test_duckdb_summary_equals_pandas(log_csv, catalog):
    s = summarize_log(log_csv, catalog=catalog)
    ref = pandas_summary(pd.read_csv(log_csv), catalog)
    got = s.table
    assert len(got) == len(ref) == 30  # 3 routes x 10 days
    for col in [
        "requests",
        "succeeded",
        "refused",
        "cache_hit_tokens",
        "cache_miss_tokens",
        "output_tokens",
        "reasoning_tokens",
        "unpriced_requests",
        "refused_tpd",
    ]:
        assert got[col].tolist() == ref[col].tolist(), col
    # Money equal to the last digit, as Decimals (not floats).
    assert [Decimal(v) for v in got["cost_exact"]] == ref["cost_exact"].tolist()
    assert s.cost == sum(ref["cost_exact"], Decimal(0))
    for col in ("prompt_tokens_p90", "completion_tokens_p50", "latency_s_p99"):
        np.testing.assert_allclose(got[col], ref[col], rtol=1e-12, err_msg=col)
    # the unknown model is reported, not priced and not silently dropped
    assert set(s.unpriced) == {"kimi-k9-unknown", "kimi-k9-unknown (batch)"}
    assert sum(s.unpriced.values()) == ref["unpriced_requests"].sum() > 0
    assert s.rejected == {}


def test_price_change_applies_on_its_day(log_csv, catalog):
    """The same tokens cost less after the card change: output priced 4.00 before 2026-09-15, 3.70 from it."""
    df = pd.read_csv(log_csv)
    df["day"] = pd.to_datetime(df["time"], utc=True).dt.date
    one = df[df["error_type"].isna() & (df["model"] == "kimi-k2.6") & ~df["batch"]]
    tmp = log_csv.parent / "k26_only.csv"
    one.drop(columns="day").to_csv(tmp, index=False)
    s2 = summarize_log(tmp, catalog=catalog, by=["day"])
    for day, price in ((dt.date(2026, 9, 14), Decimal("4.00")), (dt.date(2026, 9, 15), Decimal("3.70"))):
        g = one[one["day"] == day]
        expect = int(g["completion_tokens"].sum()) * price / Decimal(1_000_000)
        row = s2.table.set_index("day").loc[day]
        assert Decimal(str(row["cost_output"] + row["cost_reasoning"])).quantize(Decimal("1e-9")) == expect.quantize(
            Decimal("1e-9")
        )


def test_formats_agree(log_csv, catalog, tmp_path):
    """The same log as Parquet, gzipped CSV, JSONL, a folder and a glob gives the same summary."""
    import duckdb

    ref = summarize_log(log_csv, catalog=catalog).table
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    rel = f"read_csv('{log_csv}')"
    con.execute(f"COPY (SELECT * FROM {rel}) TO '{tmp_path / 'a.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY (SELECT * FROM {rel}) TO '{tmp_path / 'a.jsonl'}' (FORMAT json)")
    with open(log_csv, "rb") as src, gzip.open(tmp_path / "a.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    # a folder of two halves
    (tmp_path / "parts").mkdir()
    con.execute(
        f"COPY (SELECT * FROM {rel} WHERE time < TIMESTAMPTZ '2026-09-15') TO '{tmp_path / 'parts' / '1.parquet'}'"
    )
    con.execute(
        f"COPY (SELECT * FROM {rel} WHERE time >= TIMESTAMPTZ '2026-09-15') TO '{tmp_path / 'parts' / '2.parquet'}'"
    )
    cols = ["route", "day", "requests", "succeeded", "cache_hit_tokens", "output_tokens", "cost_exact"]
    for path in (
        tmp_path / "a.parquet",
        tmp_path / "a.jsonl",
        tmp_path / "a.csv.gz",
        tmp_path / "parts",
        str(tmp_path / "parts" / "*.parquet"),
    ):
        got = summarize_log(path, "kimiplan-calls", catalog=catalog).table
        pd.testing.assert_frame_equal(got[cols], ref[cols], check_dtype=False, obj=str(path))


BAD = """time,route,model,prompt_tokens,cached_tokens,completion_tokens,error_type
2026-09-01T10:00:00Z,a,kimi-k2.6,100,20,10,
2026-09-01T10:00:01Z,a,kimi-k2.6,abc,0,10,
2026-09-01T10:00:02Z,a,kimi-k2.6,100,200,10,
not-a-time,a,kimi-k2.6,100,0,10,
2026-09-01T10:00:04Z,a,kimi-k2.6,,,,rate_limit
2026-09-01T10:00:05Z,a,kimi-k2.6,100,0,-5,
2026-09-01T10:00:06Z,a,kimi-k2.6,100.5,0,5,
"""


def test_bad_rows_are_counted_and_the_first_named(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text(BAD)
    s = summarize_log(p, "kimiplan-calls")
    assert s.rows == 7
    assert s.requests == 2 and s.refusals == {"rate_limit": 1}
    assert s.rejected == {
        "prompt_tokens: missing, negative or not a whole number": 2,
        "cached_tokens: above prompt_tokens (which include them)": 1,
        "time: missing or not a date/time": 1,
        "completion_tokens: missing, negative or not a whole number": 1,
    }
    assert s.first_rejected["row"] == 2 and s.first_rejected["reason"].startswith("prompt_tokens")
    assert "rejected 5 rows" in str(s) and "row 2" in str(s)
    with pytest.raises(ConfigError, match=r"bad.csv row 2: prompt_tokens"):
        summarize_log(p, "kimiplan-calls", on_bad_rows="raise")


def test_bad_json_line_is_a_rejected_row_with_its_line_number(tmp_path):
    p = tmp_path / "o.jsonl"
    good = {"created": 1788000000, "model": "kimi-k2.6", "usage": {"prompt_tokens": 50, "completion_tokens": 5}}
    p.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n{not json\n")
    s = summarize_log(p, "openai")
    assert s.requests == 2 and s.rejected == {"not valid JSON": 1}
    assert s.first_rejected["row"] == 4  # line numbers, the blank line counted


def test_missing_column_names_it(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("time,route,prompt_tokens\n2026-09-01,a,5\n")
    with pytest.raises(ConfigError, match=r"'completion_tokens' \(field completion_tokens of mapping 'kimiplan-calls'"):
        summarize_log(p, "kimiplan-calls")
    # JSON lines have no schema: a key absent from every line is named too
    j = tmp_path / "m.jsonl"
    j.write_text(json.dumps({"created": 1788000000, "usage": {"prompt_tokens": 5}}) + "\n")
    with pytest.raises(ConfigError, match=r"completion_tokens.*every one of 1 rows.*row 1"):
        summarize_log(j, "openai")


def test_openai_usage_lines(tmp_path):
    """Kimi's top-level cached_tokens and OpenAI's prompt_tokens_details both read; errors are refusals."""
    lines = [
        {
            "created": 1788000000,
            "model": "kimi-k2.6",
            "route": "chat",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "cached_tokens": 600},
            "choices": [{"finish_reason": "stop"}],
        },
        {
            "response": {
                "created": 1788000100,
                "model": "kimi-k2.6",
                "usage": {
                    "prompt_tokens": 2000,
                    "completion_tokens": 300,
                    "prompt_tokens_details": {"cached_tokens": 1000},
                    "completion_tokens_details": {"reasoning_tokens": 200},
                },
            },
            "route": "chat",
        },
        {"time": "2026-08-29T12:00:00Z", "route": "chat", "error": {"type": "rate_limit_reached_error"}},
    ]
    p = tmp_path / "o.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(json.dumps(x) for x in lines) + "\n")
    s = summarize_log(p, "openai")
    t = s.table.iloc[0]
    assert (t["route"], t["requests"], t["refused"]) == ("chat", 3, 1)
    assert (t["cache_hit_tokens"], t["cache_miss_tokens"], t["output_tokens"], t["reasoning_tokens"]) == (
        1600,
        1400,
        200,
        200,
    )
    card = load_catalog().price("kimi-k2.6", "moonshot", "intl", dt.date(2026, 8, 29))
    expect = (1600 * card.cache_hit_price + 1400 * card.input_cache_miss + 400 * card.output) / Decimal(1_000_000)
    assert s.cost == expect


def test_litellm_spend_log_export(tmp_path):
    meta_ok = json.dumps({"usage_object": {"prompt_tokens_details": {"cached_tokens": 300}}})
    meta_err = json.dumps({"error_information": {"error_class": "RateLimitError"}})
    df = pd.DataFrame(
        {
            "request_id": ["a", "b"],
            "startTime": ["2026-09-01 10:00:00", "2026-09-01 10:00:05"],
            "endTime": ["2026-09-01 10:00:03.5", "2026-09-01 10:00:05.2"],
            "completionStartTime": ["2026-09-01 10:00:00.5", None],
            "model": ["moonshot/kimi-k2.6", "moonshot/kimi-k2.6"],
            "prompt_tokens": [1000, 0],
            "completion_tokens": [50, 0],
            "spend": [0.001, 0.0],
            "metadata": [meta_ok, meta_err],
            "request_tags": ['["support"]', '["support"]'],
            "status": ["success", "failure"],
        }
    )
    p = tmp_path / "spend.csv"
    df.to_csv(p, index=False)
    s = summarize_log(p)  # guessed from the columns
    assert s.mapping == "litellm"
    t = s.table.iloc[0]
    assert (t["route"], t["requests"], t["refused"], t["cache_hit_tokens"]) == ("support", 2, 1, 300)
    assert s.refusals == {"RateLimitError": 1}
    assert t["latency_s_p50"] == pytest.approx(3.5) and t["ttft_s_p50"] == pytest.approx(0.5)


def test_daily_usage_log_round_trips_to_the_backtest(catalog):
    """kimiplan's own daily usage log, summarized and turned back into the backtest's frame, is the same log;
    the backtest's monthly actuals from it equal those from the CSV."""
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.finance.backtest import backtest
    from kimiplan.io.paths import data_path

    path = data_path("usage", "past_months_synthetic.csv")
    s = summarize_log(path, model="kimi-k2.6")
    assert s.mapping == "kimiplan-usage" and s.rejected == {}
    uf = s.usage_frame()
    orig = pd.read_csv(path)
    orig["date"] = pd.to_datetime(orig["date"]).dt.date
    cols = ["date", "route", "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "web_search_calls"]
    pd.testing.assert_frame_equal(
        uf[cols].reset_index(drop=True),
        orig[cols].sort_values(["date", "route"]).reset_index(drop=True),
        check_dtype=False,
    )
    sc = load_scenario("support_chat")
    a = backtest(uf, sc)
    b = backtest(path, sc)
    np.testing.assert_allclose(a.table["actual"], b.table["actual"], rtol=1e-12)


def test_calibration_fits_from_a_summarized_log(tmp_path):
    from kimiplan.calibration.fitters import fit_calibration

    p = generate_call_log(tmp_path / "c.parquet", 20000, seed=5, days=3)
    s = summarize_log(p, samples_per_route=400)
    assert s.samples.groupby("route").size().to_dict() == {"agent_step": 400, "answer": 400, "summarize_ticket": 400}
    again = summarize_log(p, samples_per_route=400)
    pd.testing.assert_frame_equal(s.samples, again.samples)  # the same rows every run
    cal = fit_calibration(s.samples)
    # The generator draws completions as lognormal with median 220 on `answer` (sigma 0.7): the fit finds it.
    ans = cal.routes["answer"]
    assert ans.output.lognormal.median == pytest.approx(220, rel=0.12)
    assert ans.ttft_s.median == pytest.approx(0.6, rel=0.1)


def test_shipped_mappings_load():
    for name in ("openai", "litellm", "kimiplan-calls", "kimiplan-samples", "kimiplan-usage"):
        assert load_mapping(name).name == name
    with pytest.raises(ConfigError, match="field columns: .*unknown field 'tokens'"):
        load_mapping({"name": "x", "columns": {"tokens": "a"}})


def test_a_bad_value_past_the_type_sniffing_is_a_counted_row(tmp_path):
    """DuckDB types CSV columns from a sample of the first rows; a malformed value far past it is set aside by
    the reader, and still counted and named (data row numbers, 1-based)."""
    p = generate_call_log(tmp_path / "big.csv", 40000, seed=2, refusal_rate=0.0)
    lines = p.read_text().splitlines()
    parts = lines[30001].split(",")  # data row 30001
    parts[3] = "abc"  # prompt_tokens
    lines[30001] = ",".join(parts)
    parts = lines[35000].split(",")
    parts[5] = "-7"  # completion_tokens, a valid BIGINT that fails the check
    lines[35000] = ",".join(parts)
    p.write_text("\n".join(lines) + "\n")
    s = summarize_log(p, "kimiplan-calls")
    assert s.rows == 40000 and s.requests == 39998
    assert s.rejected == {
        "prompt_tokens: not of the column's type": 1,
        "completion_tokens: missing, negative or not a whole number": 1,
    }
    assert s.first_rejected["row"] == 30001 and s.first_rejected["reason"].startswith("prompt_tokens")


def test_cli_summarize_json_and_usage_out(tmp_path, capsys):
    from kimiplan.cli import main

    p = generate_call_log(tmp_path / "c.csv", 3000, seed=1, days=2)
    out = tmp_path / "daily.csv"
    assert main(["logs", "summarize", str(p), "--by", "route,day", "--json", "--usage-out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = summarize_log(p)
    assert doc["requests"] == s.requests == 3000 and Decimal(doc["cost"]) == s.cost
    assert len(doc["groups"]) == len(s.table) == 6
    assert pd.read_csv(out)["requests"].sum() == s.table["succeeded"].sum()
    assert main(["logs", "summarize", str(tmp_path / "nope.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sampler_store_is_read_as_is(tmp_path):
    """The calibration sampler's JSONL store: ok records are calls, error records refusals by the client's kind."""
    ok = {
        "v": 1,
        "id": "r:answer:0:abc",
        "run_id": "r",
        "status": "ok",
        "route": "answer",
        "index": 0,
        "time": "2026-11-20T10:00:00+00:00",
        "model": "kimi-k2.6",
        "provenance": "emulator",
        "prompt_tokens": 900,
        "completion_tokens": 120,
        "cached_tokens": 512,
        "reasoning_tokens": 40,
        "output_tokens": 80,
        "finish_reason": "stop",
        "ttft_s": 0.5,
        "total_s": 2.5,
        "max_completion_tokens": 1024,
    }
    err = {
        "v": 1,
        "id": "r:answer:1:def",
        "run_id": "r",
        "status": "error",
        "route": "answer",
        "index": 1,
        "error_kind": "tpd",
        "error": "daily limit",
        "attempts": 3,
        "time": "2026-11-20T10:00:05+00:00",
    }
    p = tmp_path / "store.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in (ok, {**ok, "id": "x", "ttft_s": 1.5, "total_s": 3.5}, err)) + "\n")
    s = summarize_log(p)
    assert s.mapping == "kimiplan-samples"
    t = s.table.iloc[0]
    assert (t["requests"], t["refused"], t["refused_tpd"]) == (3, 1, 1)
    assert (t["cache_hit_tokens"], t["cache_miss_tokens"], t["output_tokens"], t["reasoning_tokens"]) == (
        1024,
        776,
        160,
        80,
    )
    assert t["ttft_s_p50"] == pytest.approx(1.0) and t["latency_s_p50"] == pytest.approx(3.0)
