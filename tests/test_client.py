import os
import subprocess
from pathlib import Path

import pytest

from kimiplan.client import (
    KEY_PATTERN,
    DailyLimitError,
    KimiAPIError,
    KimiClient,
    KimiConfig,
    QuotaExceededError,
    RetryPolicy,
    classify_error,
)
from kimiplan.emulator import FaultTruth, LimitsTruth, LogNormalTruth, RouteTruth
from kimiplan.errors import ConfigError, KimiplanError
from kimiplan.model.settings import WindowSettings
from kimiplan.tokens.tokenizer import count_messages

MSG = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parent.parent
KEY_SHAPE = KEY_PATTERN  # the client's own scrubber pattern: Moonshot's sk-<alnum> and dashed sk-proj-/sk-or-v1-


def test_key_is_masked_everywhere(monkeypatch):
    secret = "sk-" + "A1b2C3d4" * 4
    monkeypatch.setenv("MOONSHOT_API_KEY", secret)
    cfg = KimiConfig.from_env("kimi-k2.6")
    client = KimiClient(cfg)
    for text in (repr(cfg), str(cfg), repr(client), cfg.model_dump_json()):
        assert secret not in text
    assert client._sdk.max_retries == 0  # every attempt is counted by our policy


def test_config_validation(monkeypatch):
    monkeypatch.delenv("MOONSHOT_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="MOONSHOT_API_KEY"):
        KimiConfig.from_env("kimi-k2.6")
    with pytest.raises(ValueError, match="base_url 'https://example.com/v1'"):
        KimiConfig(model="kimi-k2.6", base_url="https://example.com/v1", api_key="k")
    with pytest.raises(ValueError):
        KimiConfig(base_url="https://api.moonshot.cn/v1", api_key="k")  # the model is never guessed
    assert (
        KimiConfig(model="kimi-k2.6", base_url="https://api.moonshot.cn/v1/", api_key="k").base_url
        == "https://api.moonshot.cn/v1"
    )


@pytest.mark.parametrize(
    "status,body,kind",
    [
        (
            429,
            {
                "type": "rate_limit_reached_error",
                "message": "Your account o<a> request reached organization max concurrency: 50, "
                "please try again after 1 seconds",
            },
            "concurrency",
        ),
        (
            429,
            {
                "type": "rate_limit_reached_error",
                "message": "Your account o<a> request reached organization max RPM: 200, "
                "please try again after 3 seconds",
            },
            "rpm",
        ),
        (
            429,
            {
                "type": "rate_limit_reached_error",
                "message": "Your account o<a> request reached organization TPM rate limit, current:1, limit:2",
            },
            "tpm",
        ),
        (
            429,
            {
                "type": "rate_limit_reached_error",
                "message": "Your account o<a> request reached organization TPD rate limit,current:1, limit:2",
            },
            "tpd",
        ),
        (
            429,
            {
                "type": "engine_overloaded_error",
                "message": "The engine is currently overloaded, please try again later",
            },
            "overloaded",
        ),
        (
            429,
            {
                "error": {
                    "type": "exceeded_current_quota_error",
                    "message": "You exceeded your current token quota: <o> 0",
                }
            },
            "quota",
        ),
        (500, {"type": "server_error", "message": "x"}, "server"),
        (400, {"type": "invalid_request_error", "message": "Input token length too long"}, "bad_request"),
    ],
)
def test_classify_error(status, body, kind):
    assert classify_error(status, body) == kind


@pytest.mark.parametrize("where", ["top", "choice", "both"])
@pytest.mark.parametrize("stream", [True, False])
def test_usage_is_read_wherever_it_sits(make_emulator, make_client, where, stream):
    with make_emulator(
        stream_usage_location=where,
        hidden_overhead=5,
        routes={"default": RouteTruth(reasoning=LogNormalTruth(median=40, p95=80))},
    ) as em:
        c = make_client(em, stream=stream)
        r = c.chat(MSG, max_completion_tokens=2000)
        assert r.provenance == "emulator" and not r.usage_missing
        assert r.prompt_tokens == count_messages(MSG) + 5
        assert r.reasoning_tokens > 0 and r.output_tokens + r.reasoning_tokens == r.completion_tokens
        assert r.attempts == 1 and r.retries == {}
        if stream:
            assert 0 <= r.ttft_s <= r.total_s


def test_faults_end_in_counted_retries(make_emulator, make_client):
    with make_emulator(
        faults=FaultTruth(script=["overloaded", "server_error", "stream_cut", "unavailable"], retry_after_s=2),
        routes={"default": RouteTruth(output=LogNormalTruth(median=300, p95=301))},
        stream_chunk_tokens=16,
    ) as em:
        c = make_client(em)
        r = c.chat(MSG)
        assert r.attempts == 5 and r.retries == {"overloaded": 1, "server": 2, "connection": 1}
        assert c.sleeps[0] == pytest.approx(2 * 0.001)  # Retry-After honoured (scaled)
        assert em.engine.stats.completed == 2  # the cut stream and the success


def test_rate_limit_backoff_uses_server_hint(make_emulator, make_client):
    with make_emulator(limits=LimitsTruth(rpm=1)) as em:
        c = make_client(em, retry=RetryPolicy(time_scale=0.001, max_attempts=3, base_delay_s=0.1))
        c.chat(MSG, max_completion_tokens=5)
        with pytest.raises(KimiAPIError) as exc:
            c.chat(MSG, max_completion_tokens=5)
        assert exc.value.kind == "rpm" and exc.value.attempts == 3 and exc.value.retries == {"rpm": 2}
        # "please try again after N seconds" is a floor under the exponential backoff
        assert all(s >= 1 * 0.001 for s in c.sleeps)


def test_quota_stops_at_once(make_emulator, make_client):
    with make_emulator(faults=FaultTruth(quota_exceeded=True)) as em:
        c = make_client(em)
        with pytest.raises(QuotaExceededError, match="quota exceeded") as exc:
            c.chat(MSG)
        assert exc.value.attempts == 1 and c.sleeps == []
        assert isinstance(exc.value, KimiplanError)


def test_tpd_stops_or_waits(make_emulator, make_client):
    with make_emulator(limits=LimitsTruth(tpd=50)) as em:
        c = make_client(em)
        with pytest.raises(DailyLimitError, match="resets the next day"):
            c.chat(MSG, max_completion_tokens=100)
        waiting = make_client(em, retry=RetryPolicy(on_tpd="wait", time_scale=0.0, max_attempts=2))
        with pytest.raises(KimiAPIError) as exc:
            waiting.chat(MSG, max_completion_tokens=100)
        assert exc.value.retries == {"tpd": 1} and len(waiting.sleeps) == 1


def test_missing_usage_is_counted_locally_and_flagged(make_emulator, make_client):
    with make_emulator(
        faults=FaultTruth(script=["no_usage"]), routes={"default": RouteTruth(output=LogNormalTruth(median=77, p95=78))}
    ) as em:
        r = make_client(em).chat(MSG, call_id="same")
        again = make_client(em).chat(MSG, call_id="same")
        assert r.usage_missing and r.prompt_tokens is None
        assert r.completion_tokens == again.completion_tokens  # local count of the text is exact


def test_partial_mode_continuation_is_accounted(make_emulator, make_client):
    routes = {
        "default": RouteTruth(output=LogNormalTruth(median=250, p95=260), reasoning=LogNormalTruth(median=100, p95=110))
    }
    with make_emulator(routes=routes) as em:
        c = make_client(em)
        whole = c.chat(MSG, call_id="x", max_completion_tokens=5000)
        cut = c.chat(MSG, call_id="x", max_completion_tokens=150, continue_on_length=True)
        assert cut.first_finish_reason == "length" and cut.finish_reason == "stop"
        assert cut.continuations == 2 and cut.completion_tokens == whole.completion_tokens
        assert cut.reasoning_tokens == whole.reasoning_tokens
        # each continuation resends the prompt plus the partial assistant text
        assert cut.continuation_prompt_tokens > 2 * whole.prompt_tokens + 150


def test_estimate_and_models(emulated, make_client):
    c = make_client(emulated)
    assert c.estimate_tokens(MSG) == count_messages(MSG)
    assert c.list_models() == ["kimi-k2.6"]


@pytest.mark.skipif(not os.environ.get("MOONSHOT_API_KEY"), reason="needs MOONSHOT_API_KEY (live call)")
def test_live_smoke():  # pragma: no cover - needs a real key
    model = os.environ.get("KIMIPLAN_LIVE_MODEL", "kimi-k2.6")
    with KimiClient(KimiConfig.from_env(model, thinking=False)) as c:
        r = c.chat(MSG, max_completion_tokens=16)
    assert r.provenance == "live" and r.prompt_tokens and r.completion_tokens <= 16


def _repo_text_files():
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for rel in filter(None, out):
        p = ROOT / rel
        if p.is_file() and p.stat().st_size < 5_000_000:
            try:
                yield rel, p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def test_no_api_key_anywhere_in_the_repo():
    """Every tracked (or to-be-tracked) text file, notebooks' outputs included, is free of key-shaped strings."""
    leaks = [rel for rel, text in _repo_text_files() if KEY_SHAPE.search(text)]
    assert leaks == []


def test_key_pattern_catches_a_key_shaped_string():
    fake = "s" + "k-" + "Z9" * 12  # assembled at run time so this file itself stays clean
    assert KEY_SHAPE.search(f"api_key = '{fake}'") and not KEY_SHAPE.search("sk-short")
    for dashed in ("s" + "k-or-v1-" + "0f" * 32, "s" + "k-proj-" + "Ab_9-" * 8):
        assert KEY_SHAPE.search(f"key: {dashed}")


def test_tpd_wait_runs_to_midnight_at_the_reset_offset():
    import datetime as dt

    from kimiplan.client import _seconds_to_daily_reset

    utc = dt.UTC
    # Midnight in Beijing (UTC+8) is 16:00 UTC, the simulator's default reset.
    assert _seconds_to_daily_reset(8, dt.datetime(2026, 11, 26, 15, 0, tzinfo=utc)) == 3600
    assert _seconds_to_daily_reset(8, dt.datetime(2026, 11, 26, 16, 30, tzinfo=utc)) == 23.5 * 3600
    assert _seconds_to_daily_reset(0, dt.datetime(2026, 11, 26, 23, 0, tzinfo=utc)) == 3600
    assert RetryPolicy().tpd_reset_utc_offset_hours == WindowSettings().tpd_reset_utc_offset_hours
