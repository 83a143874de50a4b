"""`kimiplan emulator serve` end to end: a real subprocess on 127.0.0.1 (never the internet), one chat completion
through the openai SDK, then a clean stop on SIGINT or SIGTERM. Every wait has a timeout; the process is killed
in `finally` whatever happens."""

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from kimiplan.cli import main
from kimiplan.tokens.tokenizer import count_messages

openai = pytest.importorskip("openai")

MSG = [{"role": "user", "content": "Say hello."}]
READY_TIMEOUT_S = 30.0  # interpreter start + imports; generous for a loaded CI machine
STOP_TIMEOUT_S = 5.0
URL_RE = re.compile(r"^http://127\.0\.0\.1:(\d+)/v1$")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(config_path, stderr_file, *extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # the CLI itself must flush the URL line when stdout is a pipe
    return subprocess.Popen(
        [sys.executable, "-m", "kimiplan", "emulator", "serve", "--port", "0", "--config", str(config_path), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        env=env,
    )


def _stdout_lines(proc: subprocess.Popen) -> queue.Queue:
    """Lines of the child's stdout, read on a daemon thread so waiting for one can time out; None at EOF."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.mark.parametrize(
    "signum, keys", [(signal.SIGINT, False), (signal.SIGTERM, True)], ids=["SIGINT-test-key", "SIGTERM-api-keys"]
)
def test_serve_answers_the_openai_sdk_and_stops_cleanly(tmp_path, signum, keys):
    config = tmp_path / "emulator.yaml"
    # time_scale 0: no emulated latency, so the one call returns at once
    config.write_text(
        "time_scale: 0\nhidden_overhead: 7\nroutes:\n  default:\n    output: {median: 20, p95: 40}\n"
        + ("api_keys: [key-from-config]\n" if keys else "")
    )
    stderr_path = tmp_path / "stderr.txt"
    extra = ("--api-key", "key-one", "--api-key", "key-two") if keys else ()
    accepted = ["key-from-config", "key-one", "key-two"] if keys else ["kimiplan-emulator-test-key"]
    refused = ["kimiplan-emulator-test-key", "key-three"] if keys else ["any-other-key"]
    with open(stderr_path, "w") as stderr_file:
        proc = _start(config, stderr_file, *extra)
    try:
        lines = _stdout_lines(proc)
        try:
            url = lines.get(timeout=READY_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"no URL on stdout within {READY_TIMEOUT_S}s; stderr: {stderr_path.read_text()!r}")
        assert url is not None, f"exited early with {proc.poll()}; stderr: {stderr_path.read_text()!r}"
        m = URL_RE.match(url)
        assert m and int(m.group(1)) > 0, f"stdout line is not the bound base URL: {url!r}"

        # trust_env=False: no proxy from the environment may see (or reroute) this local call
        with httpx.Client(trust_env=False, timeout=10.0) as http:
            for key in refused:  # Kimi's 401 for a key it does not know
                bad = openai.OpenAI(base_url=url, api_key=key, http_client=http, max_retries=0)
                with pytest.raises(openai.AuthenticationError) as e:
                    bad.chat.completions.create(model="kimi-k2.6", messages=MSG, max_completion_tokens=50)
                assert e.value.body == {"message": "Invalid Authentication", "type": "invalid_authentication_error"}
            for key in accepted:
                client = openai.OpenAI(base_url=url, api_key=key, http_client=http, max_retries=0)
                resp = client.chat.completions.create(model="kimi-k2.6", messages=MSG, max_completion_tokens=50)
        usage = resp.usage.model_dump()
        assert usage["prompt_tokens"] == count_messages(MSG) + 7
        assert 0 < usage["completion_tokens"] <= 50
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["cached_tokens"] == 0  # Kimi's field, top level of usage (not prompt_tokens_details)
        assert resp.choices[0].message.content

        proc.send_signal(signum)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
        assert lines.get(timeout=STOP_TIMEOUT_S) is None  # stdout held the URL line and nothing else
    finally:
        _stop(proc)
    err = stderr_path.read_text()
    assert "not the real service" in err and url in err
    assert "Traceback" not in err


def test_serve_rejects_a_bad_port(capsys):
    assert main(["emulator", "serve", "--port", "70000"]) == 2
    assert "--port must be 0-65535 (0 picks a free port), got 70000" in capsys.readouterr().err


def test_serve_reports_a_busy_port_and_leaves_signal_handlers_as_they_were(capsys):
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "serve", "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_terminal_reads_the_url_once_and_a_pipe_gets_it_alone(monkeypatch, capsys):
    """`kimiplan emulator serve` at a terminal prints one line naming the URL (not the URL, then a banner with it
    again); piped, stdout carries the URL alone for the script that reads the port, the banner goes to stderr."""
    import io

    from kimiplan.cli import calibration_cmds

    url = "http://127.0.0.1:8765/v1"
    calibration_cmds._announce(url)  # capsys: both streams are pipes
    out, err = capsys.readouterr()
    assert out == url + "\n" and url in err and "not the real service" in err

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out_tty, err_tty = Tty(), Tty()
    monkeypatch.setattr(calibration_cmds.sys, "stdout", out_tty)
    monkeypatch.setattr(calibration_cmds.sys, "stderr", err_tty)
    calibration_cmds._announce(url)
    both = out_tty.getvalue() + err_tty.getvalue()
    assert both.count(url) == 1 and "not the real service" in both and "Ctrl-C" in both
