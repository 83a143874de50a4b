"""The client and the sampler against a hostile loopback server (127.0.0.1 only, a fixed script of replies):
every response the client cannot read is a typed KimiAPIError, stored as an error record, and the run goes on;
Retry-After in any form is read and capped; secrets never reach an error; the spend cap holds across kills and
a second run on the same store refuses to start."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, SampleStore, run_sampler
from kimiplan.catalog.cards import load_catalog
from kimiplan.client import (
    KEY_PATTERN,
    AuthenticationError,
    KimiAPIError,
    KimiClient,
    KimiConfig,
    MalformedResponseError,
    RetryPolicy,
    parse_completion,
    parse_retry_after,
    parse_sse,
    parse_stream,
    retry_delay,
    scrub,
)
from kimiplan.emulator import LogNormalTruth, RouteTruth
from kimiplan.errors import ConfigError
from kimiplan.finance.cost import Usage, cost_of_usage
from kimiplan.model.settings import backoff_s

ROOT = Path(__file__).resolve().parent.parent
CARD = load_catalog().price("kimi-k2.6")
MSG = [{"role": "user", "content": "hi"}]
KEY = "sk-" + "Q7w" * 16  # key-shaped, assembled at run time


def _completion(text="ok"):
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


def _sse(*events: str) -> bytes:
    return b"".join(f"data: {e}\n\n".encode() for e in events)


GOOD_STREAM = _sse(
    json.dumps({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]}),
    json.dumps(
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }
    ),
    "[DONE]",
)

# name -> (status, headers, body)
REPLIES = {
    "ok": (200, {"Content-Type": "application/json"}, json.dumps(_completion()).encode()),
    "ok_stream": (200, {"Content-Type": "text/event-stream"}, GOOD_STREAM),
    "empty": (200, {"Content-Type": "application/json"}, b""),
    "html": (200, {"Content-Type": "text/html"}, b"<html><body>502 Bad Gateway</body></html>"),
    "no_choices": (200, {"Content-Type": "application/json"}, b'{"id": "x", "object": "chat.completion"}'),
    "bad_usage": (
        200,
        {"Content-Type": "application/json"},
        json.dumps({**_completion(), "usage": {"prompt_tokens": -3, "completion_tokens": "x"}}).encode(),
    ),
    "sse_not_json": (200, {"Content-Type": "text/event-stream"}, _sse("{not json", "[DONE]")),
    "sse_no_finish": (
        200,
        {"Content-Type": "text/event-stream"},
        _sse(json.dumps({"choices": [{"index": 0, "delta": {"content": "a"}}]}), "[DONE]"),
    ),
    "echo_auth": (
        400,
        {"Content-Type": "application/json"},
        json.dumps(
            {
                "error": {
                    "type": "invalid_request_error",
                    "message": "bad request; headers were Authorization: Bearer {KEY}",
                }
            }
        ).encode(),
    ),
    "unauthorized": (
        401,
        {"Content-Type": "application/json"},
        b'{"error": {"type": "invalid_authentication_error", "message": "Invalid Authentication"}}',
    ),
}


def _overloaded(retry_after: str):
    body = b'{"error": {"type": "engine_overloaded_error", "message": "The engine is currently overloaded"}}'
    return (429, {"Content-Type": "application/json", "Retry-After": retry_after}, body)


class Hostile:
    """A loopback server that answers POSTs from a script (then `default`); it records each request's headers."""

    def __init__(self, script=(), default="ok"):
        self.script, self.default = deque(script), default
        self.seen: list[dict] = []
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                item = owner.script.popleft() if owner.script else owner.default
                status, headers, data = REPLIES[item] if isinstance(item, str) else item
                if body.get("stream") and item == "ok":
                    status, headers, data = REPLIES["ok_stream"]
                data = data.replace(b"{KEY}", self.headers.get("Authorization", "")[7:].encode())
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def client(server, stream=False, **retry):
    sleeps: list[float] = []
    c = KimiClient(
        KimiConfig(
            model="kimi-k2.6",
            base_url=server.base_url,
            api_key=KEY,
            stream=stream,
            timeout_s=10,
            retry=RetryPolicy(**{"base_delay_s": 0.01, **retry}),
        ),
        sleep=sleeps.append,
        seed=0,
    )
    c.sleeps = sleeps
    return c


@pytest.mark.parametrize(
    "reply, stream, needle",
    [
        ("empty", False, "response body is empty"),
        ("html", False, r"not JSON \(starts '<html>"),
        ("no_choices", False, "no choices"),
        ("bad_usage", False, "usage.prompt_tokens must be a whole number"),
        ("sse_not_json", True, "stream event is not JSON"),
    ],
)
def test_unreadable_responses_are_typed_errors(reply, stream, needle):
    with Hostile([reply]) as srv:
        c = client(srv, stream=stream)
        with pytest.raises(MalformedResponseError, match=needle) as err:
            c.chat(MSG)
        assert err.value.kind == "malformed" and err.value.attempts == 1 and not err.value.fatal
        assert c.chat(MSG).completion_tokens == 1  # the client (and the server) go on


def test_a_stream_without_finish_is_retried_as_broken():
    with Hostile(["sse_no_finish"]) as srv:
        r = client(srv, stream=True).chat(MSG)
    assert r.retries == {"broken_stream": 1} and r.attempts == 2


def test_retry_after_as_date_negative_and_huge_is_read_and_capped():
    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    in_90s = email.utils.format_datetime(now + dt.timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(in_90s, now) == pytest.approx(90)
    assert parse_retry_after(email.utils.format_datetime(now - dt.timedelta(hours=1), usegmt=True), now) == 0
    assert parse_retry_after("-5") == 0 and parse_retry_after("2.5") == 2.5
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after("nan") is None
    pol = RetryPolicy(jitter=False, base_delay_s=1, max_delay_s=60, max_retry_after_s=300)
    assert retry_delay("overloaded", 1, 86_400, policy=pol) == 300  # a day is capped
    assert retry_delay("overloaded", 1, 0, policy=pol) == 1  # no hint: the backoff
    # Over the wire: an HTTP date, a negative number and a day, each one retry with a bounded sleep.
    future = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True)
    script = [_overloaded(future), _overloaded("-3"), _overloaded("86400"), "ok"]
    with Hostile(script) as srv:
        c = client(srv, max_retry_after_s=120)
        r = c.chat(MSG)
    assert r.retries == {"overloaded": 3}
    assert 25 <= c.sleeps[0] <= 31 and c.sleeps[1] <= 0.02 and c.sleeps[2] == 120


def test_one_backoff_model_for_client_and_simulator():
    """The client's retry_delay is the simulator's backoff_s (the kernel compiles that same function), on a grid."""
    from kimiplan.capacity.sim import kernel

    assert kernel._backoff.py_func is backoff_s
    for base in (0.1, 1.0, 7.0):
        for cap in (0.5, 60.0):
            pol = RetryPolicy(base_delay_s=base, max_delay_s=cap)
            for attempt in range(1, 12):
                for u in (0.0, 0.25, 0.999):
                    want = min(cap, base * 2 ** (attempt - 1)) * u
                    assert retry_delay("rpm", attempt, policy=pol, u=u) == pytest.approx(want)
                    assert kernel._backoff(attempt - 1, base, cap, u) == pytest.approx(want)


def test_server_messages_are_scrubbed_of_keys():
    with Hostile(["echo_auth"]) as srv:
        c = client(srv)
        with pytest.raises(KimiAPIError) as err:
            c.chat(MSG)
    assert srv.seen[0]["authorization"] == f"Bearer {KEY}"  # the server did see it ...
    assert KEY not in str(err.value) and "[redacted]" in str(err.value)  # ... the error does not carry it
    for dashed in ("sk-or-v1-" + "ab12" * 16, "sk-proj-" + "Xy_9-" * 10):
        assert KEY_PATTERN.search(f"key={dashed}") and dashed not in scrub(f"key={dashed}")


def test_authentication_failure_is_fatal():
    with Hostile(["unauthorized"]) as srv:
        with pytest.raises(AuthenticationError) as err:
            client(srv).chat(MSG)
    assert err.value.fatal and err.value.status == 401


def test_module_level_parsers():
    assert parse_completion(_completion("hey")).content == "hey"
    reply = parse_stream(parse_sse(GOOD_STREAM.decode().splitlines()))
    assert reply.content == "ok" and reply.usage["prompt_tokens"] == 5
    # Kimi's cached_tokens at the top of usage wins; OpenAI's place is the fallback; never both.
    top = {**_completion(), "usage": {"prompt_tokens": 9, "completion_tokens": 1, "cached_tokens": 4}}
    oai = {
        **_completion(),
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 3}},
    }
    assert parse_completion(top).usage["cached_tokens"] == 4 and parse_completion(oai).usage["cached_tokens"] == 3
    with pytest.raises(MalformedResponseError):
        parse_completion([1, 2])


def _cfg(n=6, cap="1", **kw):
    return SamplerConfig(
        run_id="hostile",
        routes=[RouteSampling(name="answer", n=n, max_completion_tokens=64, thinking=False)],
        spend_cap=Decimal(cap),
        **kw,
    )


PROMPTS = {"answer": [[{"role": "user", "content": f"question {i}"}] for i in range(4)]}


def test_sampler_stores_unreadable_replies_as_errors_and_goes_on(tmp_path):
    script = ["ok", "html", "ok", "no_choices", "sse_not_json", "ok", "empty"]
    with Hostile(script) as srv:
        s = run_sampler(
            client(srv), _cfg(n=8, max_concurrency=1), tmp_path / "s.jsonl", card=CARD, prompts=PROMPTS, progress=False
        )
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    final = {r["id"]: r for r in recs if r["status"] in ("ok", "error")}
    assert s.stopped_reason is None and s.completed + s.failed == 8 and len(final) == 8
    errors = [r for r in final.values() if r["status"] == "error"]
    assert {r["error_type"] for r in errors} == {"MalformedResponseError"} and len(errors) == 4
    # a reply that may have been billed but could not be read is settled at its worst case, not at zero
    assert all(Decimal(r["settled"]) > 0 for r in errors)


def test_sampler_stops_cleanly_on_a_fatal_error(tmp_path):
    with Hostile(["ok", "unauthorized"], default="unauthorized") as srv:
        s = run_sampler(
            client(srv), _cfg(n=6, max_concurrency=1), tmp_path / "s.jsonl", card=CARD, prompts=PROMPTS, progress=False
        )
    assert s.completed == 1 and s.failed == 1 and s.not_sent == 4 and "check the API key" in s.stopped_reason
    assert KEY not in (tmp_path / "s.jsonl").read_text()


def test_a_second_run_on_the_same_store_refuses_to_start(tmp_path):
    path = tmp_path / "s.jsonl"
    holder = SampleStore(path)  # a run in progress holds the lock
    with Hostile() as srv:
        with pytest.raises(ConfigError, match="in use by another run"):
            run_sampler(client(srv), _cfg(), path, card=CARD, prompts=PROMPTS, progress=False)
        holder.close()
        s = run_sampler(client(srv), _cfg(), path, card=CARD, prompts=PROMPTS, progress=False)
    assert s.completed == 6


def test_two_concurrent_runs_do_not_duplicate_samples(make_emulator, make_client, tmp_path):
    path = tmp_path / "s.jsonl"
    routes = {"answer": RouteTruth(output=LogNormalTruth(median=30, p95=60))}
    outcomes: list = []
    with make_emulator(routes=routes, default_route="answer", time_scale=0.01) as em:

        def run():
            try:
                outcomes.append(
                    run_sampler(
                        make_client(em), _cfg(n=12, max_concurrency=2), path, card=CARD, prompts=PROMPTS, progress=False
                    )
                )
            except ConfigError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    refused = [o for o in outcomes if isinstance(o, ConfigError)]
    done = [o for o in outcomes if not isinstance(o, ConfigError)]
    assert len(refused) == 1 and len(done) == 1 and done[0].completed == 12
    ok = [json.loads(x)["id"] for x in path.read_text().splitlines() if '"status": "ok"' in x]
    assert len(ok) == len(set(ok)) == 12
    assert em.engine.stats.requests == 12  # the refused run sent nothing


def test_kill_and_resume_never_spends_over_the_cap(make_emulator, tmp_path):
    """A sampler killed (SIGKILL) with calls in flight, again and again, then resumed to the end: the spend the
    server billed (the emulator counts every admitted call in full) stays under the cap."""
    path, cfg_path = tmp_path / "s.jsonl", tmp_path / "sample.yaml"
    cap = Decimal("0.04")  # ~30 calls' worst case ($0.0013 each): the cap, not the plan, ends the run
    cfg = SamplerConfig(
        run_id="kills",
        # the small prompt set this test was sized for (the shipped ones are built to support_chat's sizes)
        routes=[
            RouteSampling(
                name="answer",
                n=60,
                max_completion_tokens=256,
                thinking=False,
                prompts=ROOT / "tests" / "data" / "prompts" / "answer.jsonl",
            )
        ],
        spend_cap=cap,
        max_concurrency=4,
    )
    cfg_path.write_text(cfg.model_dump_json())
    routes = {"answer": RouteTruth(output=LogNormalTruth(median=200, p95=255))}
    env = {**os.environ, "MOONSHOT_API_KEY": "dummy-emulator-key", "PYTHONPATH": str(ROOT)}
    kills = 0
    with make_emulator(routes=routes, default_route="answer", time_scale=0.02) as em:
        argv = [sys.executable, "-m", "kimiplan", "calibrate", "sample", str(cfg_path), "--store", str(path)]
        argv += ["--model", "kimi-k2.6", "--base-url", em.base_url, "--time-scale", "0.02", "--no-progress"]
        for round_ in range(5):
            sent_before = path.read_bytes().count(b'"status": "sent"') if path.exists() else 0
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    sent = path.read_bytes().count(b'"status": "sent"') if path.exists() else 0
                    if round_ < 4 and sent >= sent_before + 4:  # calls in flight: kill now
                        proc.send_signal(signal.SIGKILL)
                        kills += 1
                        break
                    time.sleep(0.005)
            finally:
                proc.wait(timeout=60)
            if proc.returncode != -signal.SIGKILL:
                break
        billed = Usage(
            em.engine.stats.billed_prompt_tokens,
            em.engine.stats.billed_completion_tokens,
            em.engine.stats.billed_cached_tokens,
        )
    server_spend = cost_of_usage(billed, CARD).subtotal
    assert kills >= 3 and proc.returncode == 2  # the last run ends at the cap and says so
    print(f"server-side spend {server_spend} of cap {cap} after {kills} kills")
    assert 0 < server_spend <= cap, (server_spend, cap)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert any(r["status"] == "lost" for r in recs)  # in-flight calls of killed runs were counted on resume
    # The store's own account is an upper bound of what the server billed, and it is within the cap.
    ledger = sum(Decimal(r["settled"]) for r in recs if r["status"] in ("ok", "error", "lost"))
    assert server_spend <= ledger <= cap
    ok = [r["id"] for r in recs if r["status"] == "ok"]
    assert len(ok) == len(set(ok))
