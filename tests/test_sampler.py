import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from kimiplan.calibration.sampler import (
    Pacer,
    RouteSampling,
    SamplerConfig,
    SampleStore,
    load_sampler_config,
    plan_calls,
    read_call_log,
    run_sampler,
)
from kimiplan.catalog.cards import load_catalog
from kimiplan.emulator import FaultTruth, LimitsTruth, LogNormalTruth, RouteTruth
from kimiplan.errors import ConfigError
from kimiplan.tokens.tokenizer import count_text

ROOT = Path(__file__).resolve().parent.parent
#: the small prompt sets these tests were written against (the shipped ones are built to support_chat's sizes)
FIXTURES = Path(__file__).resolve().parent / "data" / "prompts"
CARD = load_catalog().price("kimi-k2.6")
ROUTES = {
    "answer": RouteTruth(output=LogNormalTruth(median=60, p95=120)),
    "summarize_ticket": RouteTruth(output=LogNormalTruth(median=40, p95=90)),
}


def config(run_id="r1", n=12, **kw):
    return SamplerConfig(
        run_id=run_id,
        routes=[
            RouteSampling(
                name="answer", n=n, max_completion_tokens=512, thinking=False, prompts=FIXTURES / "answer.jsonl"
            ),
            RouteSampling(
                name="summarize_ticket",
                n=n,
                max_completion_tokens=512,
                thinking=False,
                prompts=FIXTURES / "summarize_ticket.jsonl",
            ),
        ],
        **{"spend_cap": Decimal("1"), **kw},
    )


def ok_ids(path):
    recs = [json.loads(x) for x in Path(path).read_text().splitlines()]
    return [r["id"] for r in recs if r["status"] == "ok"]


def test_plan_is_deterministic_and_interleaved():
    a, b = plan_calls(config()), plan_calls(config())
    assert [c.id for c in a] == [c.id for c in b] and len({c.id for c in a}) == 24
    assert [c.route for c in a[:4]] == ["answer", "summarize_ticket"] * 2
    assert {c.id for c in plan_calls(config(run_id="other"))}.isdisjoint({c.id for c in a})


def test_records_keep_no_prompt_text_or_key(make_emulator, make_client, tmp_path):
    with make_emulator(routes=ROUTES, default_route="answer") as em:
        s = run_sampler(make_client(em), config(n=3), tmp_path / "s.jsonl", card=CARD, progress=False)
    assert s.completed == 6 and s.failed == 0
    text = (tmp_path / "s.jsonl").read_text()
    rec = next(r for r in map(json.loads, text.splitlines()) if r["status"] == "ok")
    assert rec["provenance"] == "emulator" and len(rec["prompt_sha256"]) == 64
    assert {"prompt_tokens", "cached_tokens", "finish_reason", "ttft_s", "total_s", "model", "time", "route"} <= set(
        rec
    )
    assert "messages" not in rec and "test-key-not-secret" not in text and "help-centre" not in text


def test_torn_last_line_is_cut_and_redone(make_emulator, make_client, tmp_path):
    path = tmp_path / "s.jsonl"
    with make_emulator(routes=ROUTES, default_route="answer") as em:
        run_sampler(make_client(em), config(n=3), path, card=CARD, progress=False)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-write
        s = run_sampler(make_client(em), config(n=3), path, card=CARD, progress=False)
    assert s.skipped == 5 and s.completed == 1
    ids = ok_ids(path)
    assert len(ids) == len(set(ids)) == 6


class _Crash(Exception):
    pass


class CrashingStore(SampleStore):
    def __init__(self, path, after):
        super().__init__(path)
        self.after = after
        # Worker threads append concurrently: count and crash atomically, or two appends can skip past 0.
        self._count_lock = threading.Lock()

    def append(self, record):
        with self._count_lock:
            if self.after <= 0:
                raise _Crash()
            super().append(record)
            self.after -= record["status"] == "ok"  # write-ahead "sent" records do not count


def test_exception_after_k_records_then_resume(make_emulator, make_client, tmp_path):
    path = tmp_path / "s.jsonl"
    with make_emulator(routes=ROUTES, default_route="answer") as em:
        crashing = CrashingStore(path, 7)
        with pytest.raises(_Crash):
            run_sampler(make_client(em), config(max_concurrency=3), crashing, card=CARD, progress=False)
        crashing.close()  # what the death of the process does: its lock on the store goes with it
        assert len(ok_ids(path)) == 7
        s = run_sampler(make_client(em), config(max_concurrency=3), path, card=CARD, progress=False)
    assert s.skipped == 7 and s.completed == 17
    ids = ok_ids(path)
    assert len(ids) == len(set(ids)) == 24 and set(ids) == {c.id for c in plan_calls(config())}


def test_sigkill_mid_run_then_resume(make_emulator, make_client, tmp_path):
    path, cfg_path = tmp_path / "s.jsonl", tmp_path / "sample.yaml"
    cfg_path.write_text(config(n=40, max_concurrency=2).model_dump_json())
    with make_emulator(routes=ROUTES, default_route="answer", time_scale=0.02) as em:
        env = {**os.environ, "MOONSHOT_API_KEY": "dummy-emulator-key", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kimiplan",
                "calibrate",
                "sample",
                str(cfg_path),
                "--store",
                str(path),
                "--model",
                "kimi-k2.6",
                "--base-url",
                em.base_url,
                "--time-scale",
                "0.02",
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while (not path.exists() or path.read_bytes().count(b'"status": "ok"') < 10) and proc.poll() is None:
                assert time.monotonic() < deadline, "sampler subprocess made no progress"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-500:]
        before = set(ok_ids(path))
        assert 10 <= len(before) < 80
        s = run_sampler(make_client(em), load_sampler_config(cfg_path), path, card=CARD, progress=False)
    ids = ok_ids(path)
    assert len(ids) == len(set(ids)) == 80 and before <= set(ids)
    assert s.skipped == len(before) and s.completed == 80 - len(before)


def test_429_storm_and_faults_end_in_retries_not_lost_records(make_emulator, make_client, tmp_path):
    faults = FaultTruth(p_server_error=0.1, p_stream_cut=0.1, p_overloaded=0.1, p_no_usage=0.05, retry_after_s=1)
    with make_emulator(
        routes=ROUTES,
        default_route="answer",
        limits=LimitsTruth(concurrency=2),
        faults=faults,
        time_scale=0.002,
        stream_chunk_tokens=16,
    ) as em:
        s = run_sampler(make_client(em), config(max_concurrency=6), tmp_path / "s.jsonl", card=CARD, progress=False)
    assert s.completed + s.failed == 24 and s.stopped_reason is None
    assert s.retries.get("concurrency", 0) > 0 and s.retries.get("overloaded", 0) > 0
    assert s.attempts == s.completed + sum(s.retries.values()) or s.failed > 0
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in recs}) == 24  # every planned call has a record (ok or error)


def test_quota_stops_the_run_cleanly(make_emulator, make_client, tmp_path):
    with make_emulator(
        routes=ROUTES, default_route="answer", faults=FaultTruth(script=["ok"] * 5 + ["quota"] * 100)
    ) as em:
        s = run_sampler(make_client(em), config(max_concurrency=1), tmp_path / "s.jsonl", card=CARD, progress=False)
    assert "quota" in s.stopped_reason and s.completed == 5 and s.failed == 1 and s.not_sent == 18


def test_spend_cap_is_checked_before_sending(make_emulator, make_client, tmp_path):
    # worst case of one call: ~350 input at $0.95/M + 512 output at $4/M ~= $0.0024
    cap = Decimal("0.006")
    with make_emulator(routes=ROUTES, default_route="answer") as em:
        s = run_sampler(
            make_client(em), config(spend_cap=cap, max_concurrency=4), tmp_path / "s.jsonl", card=CARD, progress=False
        )
    assert s.stopped_reason and "spend cap" in s.stopped_reason
    assert 0 < s.spent <= cap and s.completed < 24
    assert em.engine.stats.requests == s.completed


def test_local_pacing_avoids_rpm_refusals(make_emulator, make_client, tmp_path):
    # 60 s windows at time_scale 0.005 last 0.3 s: 24 calls at rpm 10 need ~3 windows
    with make_emulator(routes=ROUTES, default_route="answer", limits=LimitsTruth(rpm=10), time_scale=0.005) as em:
        c = make_client(em, retry=__import__("kimiplan.client", fromlist=["RetryPolicy"]).RetryPolicy(time_scale=0.005))
        s = run_sampler(c, config(rpm=10, max_concurrency=8), tmp_path / "s.jsonl", card=CARD, progress=False)
        assert s.completed == 24 and em.engine.stats.refusals == {}


def test_pacer_refuses_impossible_call():
    import threading

    with pytest.raises(ConfigError, match="tpm=100"):
        Pacer(None, 100).acquire(101, threading.Event())


def test_with_tier_clamps_to_limits():
    tier = load_catalog().tiers()[1]
    c = config(max_concurrency=500).with_tier(tier)
    assert c.max_concurrency == tier.concurrency and c.rpm == int(tier.rpm * 0.9)


def test_usage_logs_jsonl_and_csv(tmp_path):
    j = tmp_path / "u.jsonl"
    j.write_text(
        json.dumps(
            {
                "route": "answer",
                "messages": [{"role": "user", "content": "hi"}],
                "response": {
                    "model": "kimi-k2.6",
                    "choices": [{"message": {"content": "yo", "reasoning_content": "hmm ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29, "cached_tokens": 4},
                },
            }
        )
        + "\n"
    )
    rec = read_call_log(j)[0]
    assert rec["cached_tokens"] == 4 and rec["reasoning_tokens"] == count_text("hmm ok")
    assert rec["output_tokens"] == 9 - count_text("hmm ok")
    assert rec["local_prompt_tokens"] == 8 and rec["provenance"] == "usage-log"
    c = tmp_path / "u.csv"
    c.write_text("route,prompt_tokens,completion_tokens,cached_tokens,finish_reason\nanswer,100,50,0,length\n")
    assert read_call_log(c)[0]["finish_reason"] == "length"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"usage": {}}\n')
    with pytest.raises(ConfigError, match="usage.prompt_tokens"):
        read_call_log(bad)


@pytest.mark.parametrize("thinking", [False, True])
def test_tool_routes_are_sampled_round_by_round(make_emulator, make_client, tmp_path, thinking):
    """A route's tools are sent, tool calls answered (a function with tool_result, $web_search with its own
    arguments) and every call of a request recorded; the records add up to what the emulator billed."""
    from kimiplan.emulator.config import ToolTruth

    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
            },
        },
        {"type": "builtin_function", "function": {"name": "$web_search"}},
    ]
    truth = RouteTruth(
        output=LogNormalTruth(median=60, p95=120),
        reasoning=LogNormalTruth(median=30, p95=60) if thinking else None,
        tools=ToolTruth(p_call=1.0, max_rounds=2, web_search_result_tokens={"median": 3000, "p95": 6000}),
    )
    cfg = SamplerConfig(
        run_id="tools",
        routes=[RouteSampling(name="agent", n=6, thinking=thinking, tools=tools, max_tool_rounds=5, tool_result="42")],
        spend_cap=Decimal("1"),
    )
    prompts = {"agent": [[{"role": "user", "content": "Where is order 7?"}]]}
    store = tmp_path / "s.jsonl"
    with make_emulator(routes={"agent": truth}, default_route="agent") as em:
        with make_client(em) as client:
            summary = run_sampler(client, cfg, store, card=CARD, progress=False, prompts=prompts)
        stats = em.engine.stats
    assert summary.completed == 6 and summary.failed == 0
    recs = [r for r in map(json.loads, store.read_text().splitlines()) if r["status"] == "ok"]
    # the hidden truth: two rounds of tool calls, then an answer
    assert all(r["tool_rounds"] == 2 and len(r["rounds"]) == 3 for r in recs)
    assert all([x["finish_reason"] for x in r["rounds"]] == ["tool_calls", "tool_calls", "stop"] for r in recs)
    assert stats.admitted == 18
    billed_prompt = sum(r["prompt_tokens"] + r["tool_round_prompt_tokens"] for r in recs)
    billed_completion = sum(r["completion_tokens"] + r["tool_round_completion_tokens"] for r in recs)
    assert (billed_prompt, billed_completion) == (stats.billed_prompt_tokens, stats.billed_completion_tokens)
    assert sum(r["web_search_calls"] for r in recs) == stats.billed_web_search_calls
    # a round after a search carries the results as input: its prompt grew by at least the result tokens
    for r in recs:
        for prev, nxt in zip(r["rounds"], r["rounds"][1:], strict=False):
            assert nxt["prompt_tokens"] >= prev["prompt_tokens"] + prev["web_search_result_tokens"]
    assert "Where is order" not in store.read_text() and "arguments" not in store.read_text()
    spent = sum(Decimal(r["settled"]) for r in recs)
    assert spent == summary.spent
