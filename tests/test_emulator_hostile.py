"""The emulator against bad and hostile requests (127.0.0.1 only): each gets a Kimi-shaped JSON error, nothing
reaches stderr, and the server keeps serving; slow and oversized clients cannot hold it."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from kimiplan.catalog.admission import rate_limit_message
from kimiplan.emulator import LimitsTruth

OK = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}


def _raw(em, data: bytes, timeout: float = 10.0) -> tuple[int | None, dict | None, bytes]:
    """Send raw bytes to the emulator; (status, JSON body or None, raw reply) once it answers or closes."""
    host, port = em.server.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                hdrs = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                n = int(hdrs.get("content-length", -1))
                if n >= 0 and len(rest) >= n:
                    status = int(lines[0].split()[1])
                    body = rest[:n]
                    ctype = hdrs.get("content-type", "")
                    return status, json.loads(body) if "json" in ctype and body else None, buf
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return None, None, buf
            if not chunk:
                return None, None, buf
            buf += chunk


def _post(em, body: bytes, ctype="application/json", extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer kimiplan-emulator-test-key\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _still_serving(em) -> None:
    status, body, _ = _raw(em, _post(em, json.dumps(OK).encode()))
    assert status == 200 and body["choices"][0]["message"]["content"]


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


BAD_BODIES = {
    "content is a number": _json({**OK, "messages": [{"role": "user", "content": 5}]}),
    "content is an object": _json({**OK, "messages": [{"role": "user", "content": {"a": 1}}]}),
    "thinking is a string": _json({**OK, "thinking": "yes"}),
    "metadata is a list": _json({**OK, "metadata": []}),
    "route is unhashable": _json({**OK, "metadata": {"route": ["a"]}}),
    "tools is a number": _json({**OK, "tools": 5}),
    "stream_options is a string": _json({**OK, "stream": True, "stream_options": "x"}),
    "max_completion_tokens is true": _json({**OK, "max_completion_tokens": True}),
    "a lone surrogate": b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "invalid UTF-8": b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "\xff"}]}',
    "deep nesting": b'{"model": "kimi-k2.6", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "not an object": b"[1, 2]",
    "model is a list": _json({**OK, "model": ["kimi-k2.6"]}),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_get_a_kimi_shaped_400_and_the_server_goes_on(make_emulator, capfd, case):
    with make_emulator(max_body_bytes=1_000_000) as em:
        status, body, raw = _raw(em, _post(em, BAD_BODIES[case]))
        assert status == 400, raw[:300]
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
        _still_serving(em)
        assert em.engine.stats.internal_errors == 0
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "request_bytes, status, needle",
    [
        (_post(None, _json(OK), ctype="text/plain"), 400, "Content-Type must be application/json"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", 400, "Content-Length"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}", 400, "Content-Length"),
        # a wrong method is the client's mistake (4xx, never retried as a server fault), not a 501
        (
            b"PUT /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            405,
            "method PUT is not allowed",
        ),
        (b"DELETE /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method DELETE is not allowed"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "URI Too Long"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", 405, "method BREW is not allowed"),
        # bytes that are not HTTP: a TLS ClientHello to the plain port, binary garbage, a garbled request line
        (bytes.fromhex("1603010200010001fc0303") + bytes(range(40)), 400, "a TLS handshake"),
        (b"\x00\xff\x13garbage", 400, "not HTTP"),
        (b"GARBAGE\r\n\r\n", 400, "Bad"),
    ],
)
def test_protocol_errors_are_json_not_html(make_emulator, capfd, request_bytes, status, needle):
    with make_emulator() as em:
        got, body, raw = _raw(em, request_bytes)
        assert got == status and needle in body["error"]["message"], raw[:300]
        assert raw.startswith(b"HTTP/1.") and b"\r\nmsh-request-id: " in raw.lower()  # a status line, headers
        _still_serving(em)
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_shorter_than_its_content_length_times_out_with_408(make_emulator):
    with make_emulator(socket_timeout_s=0.3) as em:
        t0 = time.monotonic()
        status, body, _ = _raw(em, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
        assert status == 408 and "incomplete" in body["error"]["message"]
        assert time.monotonic() - t0 < 5
        _still_serving(em)


def test_an_oversized_body_is_refused_unread_and_the_server_goes_on(make_emulator):
    with make_emulator(max_body_bytes=10_000) as em:
        # Announce 50 MB but send only the start: the answer comes at once, before any more is read.
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        status, body, _ = _raw(em, head + b"Content-Length: 50000000\r\n\r\n" + b"{" + b" " * 20_000)
        assert status == 413 and "over the limit of 10000 bytes" in body["error"]["message"]
        _still_serving(em)
        assert em.engine.stats.requests == 1  # only the good one reached the engine


def test_slow_clients_cannot_hold_the_server(make_emulator):
    """Idle half-requests are dropped after the socket timeout, and others are served meanwhile."""
    with make_emulator(socket_timeout_s=0.5) as em:
        host, port = em.server.server_address[:2]
        slow = [socket.create_connection((host, port), timeout=5) for _ in range(20)]
        for s in slow:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
        t0 = time.monotonic()
        _still_serving(em)
        assert time.monotonic() - t0 < 2  # not blocked behind the idle ones
        closed = 0
        for s in slow:
            try:
                closed += s.recv(1024) == b""
            except (TimeoutError, ConnectionResetError):
                pass
            s.close()
        assert closed == 20 and time.monotonic() - t0 < 5  # each dropped after ~0.5 s


def test_refusal_texts_come_from_the_one_template(make_emulator):
    """The emulator's 429 messages are admission's rate_limit_message, limit by limit."""
    for limit, value in (("concurrency", None), ("rpm", 1), ("tpm", 1500), ("tpd", 1500)):
        lim = {"concurrency": 1} if limit == "concurrency" else {limit: value}
        with make_emulator(limits=LimitsTruth(**lim)) as em:
            body = _json({**OK, "max_completion_tokens": 1000})
            ids = {"org": em.config.organization_id, "ak": em.config.ak_id}
            if limit == "concurrency":  # hold the one slot with a reply that is still being drawn
                em.engine.chat(json.loads(body), {})
                status, err, _ = _raw(em, _post(em, body))
                want = rate_limit_message(limit, 1, **ids)
            else:
                status, first, _ = _raw(em, _post(em, body))
                assert status == 200
                status, err, _ = _raw(em, _post(em, body))
                kw = {"wait_s": 60} if limit == "rpm" else {"current": first["usage"]["prompt_tokens"] + 1000}
                want = rate_limit_message(limit, value, **kw, **ids)
            assert status == 429 and err["error"]["message"] == want


def test_concurrent_garbage_does_not_disturb_good_traffic(make_emulator, capfd):
    with make_emulator() as em:
        errors: list = []

        def garbage():
            for case in BAD_BODIES.values():
                if _raw(em, _post(em, case))[0] != 400:
                    errors.append(case[:40])

        threads = [threading.Thread(target=garbage) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(10):
            _still_serving(em)
        for t in threads:
            t.join(timeout=60)
        assert errors == [] and em.engine.stats.internal_errors == 0
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "text, needle",
    [
        (b"limits: {rpm: 5\n", "not valid YAML"),
        (b"seed: 1\nseed: 2\n", "duplicate key 'seed'"),
        (b"- 1\n- 2\n", "must be a mapping"),
        (b"limits: {rpm: -5}\n", "field limits.rpm"),
        (b"seed: \xff\n", "not UTF-8"),
        (b"time_scale: .nan\n", "field time_scale"),
    ],
)
def test_malformed_emulator_config_is_a_named_error(tmp_path, text, needle):
    from kimiplan.emulator import load_emulator_config
    from kimiplan.errors import ConfigError

    p = tmp_path / "emu.yaml"
    p.write_bytes(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_emulator_config(p)
    assert str(p) in str(err.value)
