"""HTTP front of the emulator: Kimi's OpenAI-compatible endpoints on the standard library's threading server.

Every response carries `X-Kimiplan-Emulated: 1` (it never pretends to be the real service) and
`X-Kimiplan-Time-Scale` so a client can turn measured latencies back into emulated seconds.

Hostile or broken clients get a Kimi-shaped JSON error (`{"error": {"type", "message"}}`) and the server keeps
serving: a body that is not UTF-8 JSON, a bad Content-Length or Content-Type, a body over `max_body_bytes`
(413), a body that never arrives (408 after `socket_timeout_s`), unknown methods and over-long request lines
(the standard library's HTML error pages are replaced by JSON). Every socket has a timeout, so idle or
half-sent requests cannot hold a thread for ever.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .config import EmulatorConfig
from .engine import CONTENT_WORD, REASONING_WORD, EmulatorRefusal, Engine, Reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a pool of 50 connections is reused
    server: EmulatorServer

    def log_message(self, format, *args):  # quiet: tests and notebooks must not print ports
        pass

    def setup(self):
        self.timeout = self.server.engine.config.socket_timeout_s  # StreamRequestHandler applies it to the socket
        super().setup()
        # Small SSE writes + Nagle + delayed ACK would stall every chunk by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing -------------------------------------------------------------------------------------
    def handle_one_request(self):
        """Bytes that cannot start an HTTP request (a TLS ClientHello sent to this plain-HTTP port, binary
        garbage) get an HTTP/1.1 400 at once, with status line and headers, instead of waiting for a line end."""
        try:
            first = self.rfile.peek(1)[:1]
        except (OSError, ValueError):
            first = b""
        if first and not (first.isalpha() and first.isupper()):
            self.raw_requestline, self.requestline, self.request_version = b"", "", "HTTP/1.1"
            self.command = self.path = None
            what = "a TLS handshake: this port speaks plain HTTP, use http://" if first == b"\x16" else "not HTTP"
            self.send_error(400, f"request is {what}")
            return
        super().handle_one_request()

    def _request_id(self) -> str:
        return f"emulated-{uuid.uuid4().hex}"

    def _headers(self, status: int, content_type: str, extra: dict | None = None, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header(self.server.engine.config.protocol.request_id_header, self._request_id())
        self.send_header("X-Kimiplan-Emulated", "1")
        self.send_header("X-Kimiplan-Time-Scale", repr(self.server.engine.config.time_scale))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _json(self, status: int, payload: dict, extra: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self._headers(status, "application/json", extra, len(data))
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def send_error(self, code, message=None, explain=None):
        """The standard library's error pages (unknown method, over-long request line, bad syntax) as Kimi's
        JSON, not HTML."""
        self.close_connection = True
        extra = {}
        if code == 501:  # an unknown method is the client's mistake (405), not a server fault to retry (5xx)
            code, message, extra = 405, f"method {self.command!s:.20} is not allowed", {"Allow": "GET, POST"}
        if self.request_version == "HTTP/0.9":  # a garbled request line: still answer with a status line
            self.request_version = "HTTP/1.1"
        etype = "resource_not_found_error" if code == 404 else "invalid_request_error"
        text = message or self.responses.get(code, ("error",))[0]
        data = json.dumps({"error": {"type": etype, "message": text}}).encode()
        self.send_response(code, text.encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Content-Type", "application/json")
        self.send_header(self.server.engine.config.protocol.request_id_header, self._request_id())
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("X-Kimiplan-Emulated", "1")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(data)

    def _refuse_body(self, status: int, message: str) -> EmulatorRefusal:
        # The rest of the body is unread (or never came): the connection cannot be reused.
        self.close_connection = True
        return EmulatorRefusal(status, "invalid_request_error", message)

    def _read_body(self) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json":
            raise self._refuse_body(400, f"Content-Type must be application/json, got {ctype!r}")
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit():
            raise self._refuse_body(400, f"Content-Length must be a whole number of bytes, got {length!r:.40}")
        n, limit = int(length), self.server.engine.config.max_body_bytes
        if n > limit:
            raise self._refuse_body(413, f"request body of {n} bytes is over the limit of {limit} bytes")
        try:
            raw = self.rfile.read(n) if n else b""
        except TimeoutError:
            raise self._refuse_body(408, f"request body incomplete after {self.timeout:g} s") from None
        if len(raw) < n:
            raise self._refuse_body(400, f"request body ended after {len(raw)} of {n} bytes")
        try:
            body = json.loads(raw.decode("utf-8") or "{}")
        except UnicodeDecodeError as exc:
            raise EmulatorRefusal(
                400, "invalid_request_error", f"request body is not UTF-8 (byte {exc.start})"
            ) from None
        except json.JSONDecodeError as exc:
            raise EmulatorRefusal(400, "invalid_request_error", f"request body is not JSON: {exc.msg}") from None
        except RecursionError:
            raise EmulatorRefusal(400, "invalid_request_error", "request body is nested too deeply") from None
        if not isinstance(body, dict):
            raise EmulatorRefusal(400, "invalid_request_error", "request body must be a JSON object")
        return body

    def _authorised(self) -> bool:
        """Kimi's 401 unless the Bearer key is one of `api_keys` (or, when none are set, the test key)."""
        cfg = self.server.engine.config
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip() in cfg.accepted_keys:
            return True
        body = {"error": {"message": cfg.protocol.auth_error_message, "type": "invalid_authentication_error"}}
        self._json(401, body)
        return False

    # -- routes ---------------------------------------------------------------------------------------
    def do_GET(self):
        path = self.path.rstrip("/")
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if not self._authorised():
                return
            models = self.server.engine.models()
            if path == "/v1/models":
                self._json(200, models)
                return
            mid = urllib.parse.unquote(path[len("/v1/models/") :])
            found = [m for m in models["data"] if m["id"] == mid]
            if found:
                self._json(200, found[0])
            else:
                body = {
                    "message": f"Not found the model {mid} or Permission denied",
                    "type": "resource_not_found_error",
                }
                self._json(404, {"error": body})
        else:
            self._json(404, {"error": {"type": "resource_not_found_error", "message": f"no route {self.path}"}})

    def do_POST(self):
        try:
            body = self._read_body()
            if not self._authorised():
                return
            path = self.path.rstrip("/")
            if path == "/v1/tokenizers/estimate-token-count":
                self._json(200, self.server.engine.estimate(body))
            elif path == "/v1/chat/completions":
                self._chat(body)
            else:
                self._json(404, {"error": {"type": "resource_not_found_error", "message": f"no route {self.path}"}})
        except EmulatorRefusal as exc:
            extra = {**exc.headers, **({"Connection": "close"} if self.close_connection else {})}
            if exc.status == 429:
                extra.update(self.server.engine.rate_headers())
            self._json(exc.status, exc.body(), extra)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away, or stopped reading
        except Exception as exc:  # a bug must not kill the connection with a traceback: answer, keep serving
            self.close_connection = True
            self.server.engine.stats.internal_errors += 1
            with contextlib.suppress(OSError):
                self._json(500, {"error": {"type": "server_error", "message": f"emulator error: {type(exc).__name__}"}})

    def _chat(self, body: dict) -> None:
        engine = self.server.engine
        lower = {k.lower(): v for k, v in self.headers.items()}
        reply = engine.chat(body, lower)  # raises EmulatorRefusal before admission
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                engine.release()

        try:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(reply, include_usage, release)
            else:
                self._whole(reply, release)
        finally:
            release()

    def _whole(self, r: Reply, release) -> None:
        engine = self.server.engine
        engine.sleep(r.ttft_s + r.completion_tokens / r.decode_tokens_per_s)
        text = CONTENT_WORD * r.content_tokens if r.content_text is None else r.content_text
        message = {"role": "assistant", "content": text}
        if r.reasoning_tokens:
            message["reasoning_content"] = REASONING_WORD * r.reasoning_tokens
        if r.tool_calls:
            message["tool_calls"] = r.tool_calls
        payload = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": r.model,
            "choices": [{"index": 0, "message": message, "finish_reason": r.finish_reason}],
        }
        if r.fault != "no_usage":
            payload["usage"] = r.usage()
        data = json.dumps(payload).encode()
        # Free the concurrency slot before the last byte goes out: the client may send its next call at once.
        release()
        if r.fault == "stream_cut":
            self._headers(200, "application/json", engine.rate_headers(), len(data))
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self._headers(200, "application/json", engine.rate_headers(), len(data))
        self.wfile.write(data)

    def _stream(self, r: Reply, include_usage: bool, release) -> None:
        engine, cfg = self.server.engine, self.server.engine.config
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def event(choices, usage=None, top_usage=False):
            d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": r.model, "choices": choices}
            if top_usage:
                d["usage"] = usage
            self._chunk(b"data: " + json.dumps(d).encode() + b"\n\n")
            self.wfile.flush()

        self._headers(200, "text/event-stream", {"Cache-Control": "no-cache", **engine.rate_headers()})
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        engine.sleep(r.ttft_s)
        k = cfg.stream_chunk_tokens
        pieces = [
            ("reasoning_content", REASONING_WORD, r.reasoning_tokens, None),
            ("content", CONTENT_WORD, r.content_tokens, r.content_text),
        ]
        total, sent = r.completion_tokens, 0
        for fieldname, word, n, text in pieces:
            if text is not None:  # a text that is not filler goes out in chunks of characters, ~k tokens each
                step = max(1, len(text) * k // max(n, 1))
                chunks = [
                    (text[i : i + step], max(1, n * step // max(len(text), 1))) for i in range(0, len(text), step)
                ]
            else:
                chunks = [(word * min(k, n - start), min(k, n - start)) for start in range(0, n, k)]
            for piece, m in chunks:
                if r.fault == "stream_cut" and sent >= total // 2:
                    release()
                    self.close_connection = True  # end mid-body: the chunked encoding is left unterminated
                    return
                event([{"index": 0, "delta": {fieldname: piece}, "finish_reason": None}])
                sent += m
                engine.sleep(m / r.decode_tokens_per_s)
        for j, call in enumerate(r.tool_calls):
            # As OpenAI streams them: the first delta of a call carries id, type and name, later ones arguments.
            head = {"index": j, "id": call["id"], "type": call["type"]}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            event([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}])
            text = call["function"]["arguments"]
            step = max(16, 4 * k)
            for start in range(0, len(text), step):
                piece = {"index": j, "function": {"arguments": text[start : start + step]}}
                event([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
        if r.tool_calls:
            engine.sleep(r.tool_tokens / r.decode_tokens_per_s)
        if r.fault == "stream_cut":  # nothing to cut (empty reply): cut before the final chunk
            release()
            self.close_connection = True
            return
        release()
        usage = None if r.fault == "no_usage" else r.usage()
        final = {"index": 0, "delta": {}, "finish_reason": r.finish_reason}
        where = cfg.stream_usage_location
        if usage is not None and where in ("choice", "both"):
            final["usage"] = usage
        event([final], usage, top_usage=usage is not None and where in ("top", "both") and not include_usage)
        if include_usage:
            event([], usage, top_usage=True)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0):
        self.engine = Engine(config)
        super().__init__((host, port), _Handler)

    def handle_error(self, request, client_address):
        # A client that drops a keep-alive connection is normal; anything else is reported.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class RunningEmulator:
    """Handle returned by `emulator()`: base_url, engine (stats) and config."""

    def __init__(self, server: EmulatorServer, thread: threading.Thread):
        self.server, self.thread = server, thread

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def engine(self) -> Engine:
        return self.server.engine

    @property
    def config(self) -> EmulatorConfig:
        return self.server.engine.config

    def __repr__(self) -> str:
        return f"RunningEmulator(models={self.config.models}, time_scale={self.config.time_scale})"


@contextlib.contextmanager
def emulator(config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningEmulator]:
    """Run the emulator in a background thread on a free port of 127.0.0.1; shuts down on exit."""
    server = EmulatorServer(config or EmulatorConfig(), host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kimiplan-emulator", daemon=True
    )
    thread.start()
    try:
        yield RunningEmulator(server, thread)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_forever(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8765, on_ready: Callable[[str], None] | None = None
) -> None:
    """Blocking server for `kimiplan emulator serve`; `on_ready(base_url)` runs once the socket listens
    (port 0 binds a free port, and base_url names the one bound)."""
    server = EmulatorServer(config, host, port)
    try:
        if on_ready is not None:
            on_ready(server.base_url)
        server.serve_forever()
    finally:
        server.server_close()
