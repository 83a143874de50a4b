import json

import httpx
import pytest

from kimiplan.emulator import (
    CONTENT_WORD,
    EmulatorConfig,
    FaultTruth,
    LimitsTruth,
    LogNormalTruth,
    RouteTruth,
    emulator,
    load_emulator_config,
    render_prompt_ids,
)
from kimiplan.emulator.config import TEST_API_KEY
from kimiplan.errors import ConfigError
from kimiplan.tokens.tokenizer import count_messages, count_text

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
MSG = [{"role": "user", "content": "hi"}]


def post(em, path, body, headers=None):
    return httpx.post(em.base_url + path, json=body, headers={**AUTH, **(headers or {})}, timeout=10)


def stream_events(em, body, headers=None):
    with httpx.stream(
        "POST",
        em.base_url + "/chat/completions",
        json={**body, "stream": True},
        headers={**AUTH, **(headers or {})},
        timeout=10,
    ) as r:
        assert r.headers["x-kimiplan-emulated"] == "1"
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


@pytest.mark.parametrize(
    "messages,tools",
    [
        (MSG, None),
        (
            [
                {"role": "system", "content": "Be brief. 你好世界"},
                {"role": "user", "content": "Hello, world!"},
                {"role": "assistant", "content": "ok", "reasoning_content": "think"},
                {"role": "user", "content": "again"},
            ],
            None,
        ),
        (
            [{"role": "user", "content": "weather?"}],
            [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        ),
    ],
)
def test_rendered_prompt_matches_count_messages(messages, tools):
    assert len(render_prompt_ids(messages, tools)) == count_messages(messages, tools=tools)


def test_non_streaming_shape_and_hidden_overhead(make_emulator):
    with make_emulator(hidden_overhead=11) as em:
        r = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 50})
        assert r.status_code == 200 and r.headers["x-kimiplan-emulated"] == "1"
        body = r.json()
        u = body["usage"]
        assert set(u) == {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"}
        assert u["prompt_tokens"] == count_messages(MSG) + 11
        msg = body["choices"][0]["message"]
        assert count_text(msg["content"]) + count_text(msg.get("reasoning_content") or "") == u["completion_tokens"]
        assert u["completion_tokens"] <= 50


@pytest.mark.parametrize("where", ["top", "choice", "both"])
def test_stream_final_chunk_carries_usage(make_emulator, where):
    with make_emulator(stream_usage_location=where) as em:
        events = stream_events(em, {"model": "kimi-k2.6", "messages": MSG})
        final = events[-1]
        assert final["choices"][0]["finish_reason"] in ("stop", "length")
        usage = final.get("usage") or final["choices"][0].get("usage")
        assert ("usage" in final) == (where in ("top", "both"))
        assert ("usage" in final["choices"][0]) == (where in ("choice", "both"))
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
        reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events)
        assert count_text(text) + count_text(reasoning) == usage["completion_tokens"]
        # reasoning_content always streams before content
        kinds = [k for e in events for k in ("reasoning_content", "content") if e["choices"][0]["delta"].get(k)]
        assert kinds == sorted(kinds, key=lambda k: k != "reasoning_content")


def test_include_usage_adds_a_chunk_with_no_choices(emulated):
    events = stream_events(emulated, {"model": "kimi-k2.6", "messages": MSG, "stream_options": {"include_usage": True}})
    assert events[-1]["choices"] == [] and events[-1]["usage"]["prompt_tokens"] > 0


def test_budget_truncates_reasoning_then_content_and_default_is_32768(make_emulator):
    routes = {
        "default": RouteTruth(
            output=LogNormalTruth(median=40_000, p95=50_000), reasoning=LogNormalTruth(median=100, p95=101)
        )
    }
    with make_emulator(routes=routes) as em:
        u = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG}).json()
        assert u["usage"]["completion_tokens"] == 32_768 and u["choices"][0]["finish_reason"] == "length"
        b = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 60}).json()
        msg = b["choices"][0]["message"]
        assert count_text(msg["reasoning_content"]) == 60 and msg["content"] == ""
        off = post(
            em,
            "/chat/completions",
            {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 60, "thinking": {"type": "disabled"}},
        ).json()
        assert "reasoning_content" not in off["choices"][0]["message"]


def test_partial_mode_continues_the_same_draw(make_emulator):
    routes = {"default": RouteTruth(output=LogNormalTruth(median=500, p95=700))}
    with make_emulator(routes=routes) as em:
        h = {"X-Kimiplan-Call-Id": "call-1"}
        full = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG}, h).json()
        want = full["usage"]["completion_tokens"]
        part = post(
            em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 100}, h
        ).json()
        assert part["choices"][0]["finish_reason"] == "length"
        prefix = part["choices"][0]["message"]["content"]
        cont = post(
            em,
            "/chat/completions",
            {
                "model": "kimi-k2.6",
                "max_completion_tokens": 5000,
                "messages": MSG + [{"role": "assistant", "content": prefix, "partial": True}],
            },
            h,
        ).json()
        assert cont["choices"][0]["finish_reason"] == "stop"
        assert 100 + cont["usage"]["completion_tokens"] == want
        assert cont["usage"]["prompt_tokens"] == count_messages(MSG + [{"role": "assistant", "content": prefix}])


@pytest.mark.parametrize("block", [1, 64, 256])
def test_prefix_cache_follows_the_256_token_rule_in_blocks(make_emulator, block):
    long_sys = {"role": "system", "content": "policy" + CONTENT_WORD * 600}
    short_sys = {"role": "system", "content": "short" + CONTENT_WORD * 100}
    with make_emulator(cache_block_tokens=block) as em:

        def cached(messages):
            return post(
                em, "/chat/completions", {"model": "kimi-k2.6", "messages": messages, "max_completion_tokens": 5}
            ).json()["usage"]["cached_tokens"]

        def blocks(n):  # whole blocks of the common prefix
            return n // block * block

        assert cached([short_sys, {"role": "user", "content": "a"}]) == 0
        # the previous prompt had <= 256 tokens, so it is no cache source
        assert cached([short_sys, {"role": "user", "content": "b"}]) == 0
        first = [long_sys, {"role": "user", "content": "question one"}]
        assert cached(first) == 0
        assert cached(first) == blocks(count_messages(first))  # identical prompt: all of it, in whole blocks
        second = [long_sys, {"role": "user", "content": "another"}]
        # common prefix: system message + the user's start tokens (<|im_user|>user<|im_middle|>)
        assert cached(second) == blocks(count_messages([long_sys], add_reply_primer=False) + 3)
        assert count_messages(first) % 256 != 0  # so the 256 case is a real rounding, not a coincidence


def test_default_cache_block_is_the_measured_256():
    assert EmulatorConfig().cache_block_tokens == 256


def test_concurrency_refusal_has_kimis_exact_body(make_emulator):
    with make_emulator(
        limits=LimitsTruth(concurrency=1),
        # ~2 s in flight: long enough that the second request arrives while the first holds the slot on a loaded
        # machine (at 0.2 s the first one sometimes finished before the second was sent)
        time_scale=0.5,
        routes={"default": RouteTruth(output=LogNormalTruth(median=200, p95=201))},
    ) as em:
        import threading
        import time

        t = threading.Thread(target=post, args=(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG}))
        t.start()
        while em.engine.stats.admitted == 0:
            time.sleep(0.001)  # yield the GIL to the server thread instead of spinning
        r = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG})
        t.join()
        assert r.status_code == 429
        assert r.json() == {
            "error": {
                "type": "rate_limit_reached_error",
                "message": "Your account org-emulated<ak-emulated> request reached organization max concurrency: 1, "
                "please try again after 1 seconds",
            }
        }


def test_admission_counts_input_plus_max_completion_tokens(make_emulator):
    with make_emulator(
        limits=LimitsTruth(tpm=1000, rpm=3, tpd=5000),
        routes={"default": RouteTruth(output=LogNormalTruth(median=20, p95=40))},
    ) as em:
        p = count_messages(MSG)
        ok = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 900 - p})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] < 900 - p
        r = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 101})
        assert r.status_code == 429
        assert r.json()["error"]["message"].endswith(
            "request reached organization TPM rate limit, current:900, limit:1000"
        )
        for _ in range(2):
            assert (
                post(
                    em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 1}
                ).status_code
                == 200
            )
        r = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 1})
        assert "max RPM: 3, please try again after" in r.json()["error"]["message"]


def test_tpd_refusal(make_emulator):
    with make_emulator(limits=LimitsTruth(tpd=100)) as em:
        r = post(em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 200})
        assert r.status_code == 429
        assert r.json()["error"]["message"].endswith("TPD rate limit,current:0, limit:100")


def test_faults_overloaded_quota_and_5xx(make_emulator):
    with make_emulator(faults=FaultTruth(script=["overloaded", "server_error", "quota"], retry_after_s=3)) as em:
        body = {"model": "kimi-k2.6", "messages": MSG}
        r = post(em, "/chat/completions", body)
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["type"] == "engine_overloaded_error"
        assert post(em, "/chat/completions", body).status_code == 500
        q = post(em, "/chat/completions", body)
        assert q.status_code == 429 and q.json()["error"]["type"] == "exceeded_current_quota_error"
        assert post(em, "/chat/completions", body).status_code == 200


def test_stream_cut_and_missing_usage(make_emulator):
    with make_emulator(
        faults=FaultTruth(script=["no_usage", "stream_cut"]),
        routes={"default": RouteTruth(output=LogNormalTruth(median=500, p95=501))},
        stream_chunk_tokens=16,
    ) as em:
        events = stream_events(em, {"model": "kimi-k2.6", "messages": MSG})
        assert events[-1]["choices"][0]["finish_reason"] == "stop"
        assert all("usage" not in e and "usage" not in e["choices"][0] for e in events)
        with pytest.raises(httpx.RemoteProtocolError):
            stream_events(em, {"model": "kimi-k2.6", "messages": MSG})


def test_other_endpoints_and_errors(emulated):
    models = httpx.get(emulated.base_url + "/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["kimi-k2.6"]
    est = post(emulated, "/tokenizers/estimate-token-count", {"model": "kimi-k2.6", "messages": MSG}).json()
    assert est == {"data": {"total_tokens": count_messages(MSG)}}
    assert (
        httpx.post(emulated.base_url + "/chat/completions", json={"model": "kimi-k2.6", "messages": MSG}).status_code
        == 401
    )
    nf = post(emulated, "/chat/completions", {"model": "kimi-k9", "messages": MSG})
    assert nf.status_code == 404 and nf.json()["error"]["message"] == "Not found the model kimi-k9 or Permission denied"
    big = post(emulated, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": 262_144})
    requested = count_messages(MSG) + 262_144
    assert big.status_code == 400 and big.json()["error"]["message"] == (
        f"Invalid request: Your request exceeded model token limit: 262144 (requested: {requested})"
    )


def test_route_selection_order(make_emulator):
    routes = {
        "default": RouteTruth(output=LogNormalTruth(median=10, p95=11)),
        "long": RouteTruth(match="LONGROUTE", output=LogNormalTruth(median=1000, p95=1001)),
    }
    with make_emulator(routes=routes) as em:

        def n(body, headers=None):
            return post(em, "/chat/completions", {"model": "kimi-k2.6", **body}, headers).json()["usage"][
                "completion_tokens"
            ]

        sys_long = [{"role": "system", "content": "LONGROUTE"}, *MSG]
        assert n({"messages": sys_long}) > 500
        assert n({"messages": sys_long}, {"X-Kimiplan-Route": "default"}) < 50
        assert n({"messages": MSG, "metadata": {"route": "long"}}) > 500
        assert n({"messages": MSG, "user": "route:long"}) > 500
        assert (
            post(
                em, "/chat/completions", {"model": "kimi-k2.6", "messages": MSG}, {"X-Kimiplan-Route": "nope"}
            ).status_code
            == 400
        )


def test_config_errors(tmp_path):
    with pytest.raises(ValueError):
        EmulatorConfig(default_route="missing")
    p = tmp_path / "em.yaml"
    p.write_text("hidden_overhead: -3\n")
    with pytest.raises(ConfigError, match="hidden_overhead"):
        load_emulator_config(p)


def test_context_manager_shuts_down():
    with emulator(EmulatorConfig(time_scale=0)) as em:
        url = em.base_url
    assert not em.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", headers=AUTH, timeout=2)
