"""The emulator's HTTP face against the real OpenAI SDK: keys, typed errors, headers, /v1/models/{id}, JSON
mode, stop sequences and Kimi's fixed sampling parameters; and the one table of sourced behaviours
(data/catalog/behaviour.toml) held to the emulator's defaults, the client and docs/KIMI_BEHAVIOUR.md."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import openai
import pytest

from kimiplan.catalog.behaviour import behaviour_table_markdown, kimi_behaviour
from kimiplan.client import _request_id
from kimiplan.emulator import EmulatorConfig, LimitsTruth, LogNormalTruth, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY, ProtocolTruth
from kimiplan.tokens.tokenizer import count_text

MSG = [{"role": "user", "content": "hi"}]
OFF = {"thinking": {"type": "disabled"}}
ROOT = Path(__file__).resolve().parent.parent


def sdk(em, key=TEST_API_KEY, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=em.base_url, api_key=key, max_retries=0, **kw)


def cfg(**fields) -> EmulatorConfig:
    fields.setdefault("time_scale", 0.0)
    return EmulatorConfig(**fields)


def test_keys_are_checked_with_kimis_401():
    with emulator(cfg()) as em:
        with pytest.raises(openai.AuthenticationError) as e:
            sdk(em, key="sk-not-known").chat.completions.create(model="kimi-k2.6", messages=MSG)
        assert e.value.status_code == 401
        assert e.value.body == {"message": "Invalid Authentication", "type": "invalid_authentication_error"}
        assert sdk(em).chat.completions.create(model="kimi-k2.6", messages=MSG).choices[0].message.content
        r = httpx.get(em.base_url + "/models", timeout=5)  # no Authorization header at all
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_authentication_error"
    with emulator(cfg(api_keys=["team-key-1", "team-key-2"])) as em:
        for key in ("team-key-1", "team-key-2"):
            assert sdk(em, key=key).models.list().data[0].id == "kimi-k2.6"
        with pytest.raises(openai.AuthenticationError):  # configured keys replace the test key
            sdk(em).models.list()


def test_models_by_id_and_a_request_id_on_every_response():
    header = kimi_behaviour()["request_id_header"]
    with emulator(cfg(limits=LimitsTruth(rpm=1))) as em:
        client = sdk(em)
        m = client.models.retrieve("kimi-k2.6")
        assert m.id == "kimi-k2.6" and m.object == "model"
        with pytest.raises(openai.NotFoundError) as e:
            client.models.retrieve("kimi-k9")
        assert e.value.body["message"] == "Not found the model kimi-k9 or Permission denied"
        ids = set()
        raw = client.chat.completions.with_raw_response.create(model="kimi-k2.6", messages=MSG)
        ids.add(raw.headers[header])
        assert raw.parse().id.startswith("cmpl-")
        for call in (
            lambda: client.chat.completions.create(model="kimi-k2.6", messages=MSG),  # 429: the RPM of 1 is used
            lambda: client.chat.completions.create(model="kimi-k9", messages=MSG),
            lambda: sdk(em, key="x").models.list(),
            lambda: client.chat.completions.create(model="kimi-k2.6", messages=[]),
        ):
            with pytest.raises(openai.APIStatusError) as e:
                call()
            ids.add(e.value.response.headers[header])
        r = httpx.put(em.base_url + "/chat/completions", timeout=5)
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
        ids.add(r.headers[header])
        assert len(ids) == 6 and all(ids)
        assert _request_id(raw.headers) == raw.headers[header]  # the client reads the same header


@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("header", [False, True])
def test_a_rate_limit_refusal_states_its_wait_once_in_emulated_seconds(scale, header):
    proto = ProtocolTruth(rate_limit_retry_after_header=header, rate_limit_headers=header)
    t = [0.0]
    fast = {"ttft": {"median": 0.001, "p95": 0.002}, "decode_tokens_per_s": 1e6}  # little real sleeping at scale 1
    config = cfg(limits=LimitsTruth(rpm=2), protocol=proto, time_scale=scale, latency=fast)
    with emulator(config) as em:
        em.engine._clock = lambda: t[0]  # emulated time stands still at 0, then 13 s
        client = sdk(em)
        first = client.chat.completions.with_raw_response.create(model="kimi-k2.6", messages=MSG, extra_body=OFF)
        t[0] = 13.0
        client.chat.completions.create(model="kimi-k2.6", messages=MSG, extra_body=OFF)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="kimi-k2.6", messages=MSG, extra_body=OFF)
    wait = int(re.search(r"try again after (\d+) seconds", e.value.body["message"]).group(1))
    assert wait == 47  # the first admission (t=0) slides out of the 60 s window at t=60
    h = e.value.response.headers
    if header:
        assert h["retry-after"] == str(wait)  # header and message agree, whatever the time scale
        assert h["x-ratelimit-limit"] == "2" and h["x-ratelimit-remaining"] == "0"
        assert first.headers["x-ratelimit-remaining"] == "1"
    else:  # Kimi's documented behaviour: the hint is only in the message
        assert "retry-after" not in h and "x-ratelimit-limit" not in h


@pytest.mark.parametrize("status,exc", [(429, openai.RateLimitError), (403, openai.PermissionDeniedError)])
def test_an_empty_balance_is_configurable_between_the_two_sources(status, exc):
    with emulator(cfg(faults={"quota_exceeded": True}, protocol=ProtocolTruth(empty_balance_status=status))) as em:
        with pytest.raises(exc) as e:
            sdk(em).chat.completions.create(model="kimi-k2.6", messages=MSG)
    assert e.value.body["type"] == "exceeded_current_quota_error"


def test_kimis_fixed_sampling_parameters_are_enforced_not_ignored():
    with emulator(cfg()) as em:
        c = sdk(em)
        ok = c.chat.completions.create(model="kimi-k2.6", messages=MSG, temperature=1.0, top_p=0.95, n=1)
        assert len(ok.choices) == 1
        assert c.chat.completions.create(model="kimi-k2.6", messages=MSG, temperature=0.6, extra_body=OFF).choices
        for kw, needle in (
            ({"temperature": 0.7}, "invalid temperature: only 1 is allowed for this model"),
            ({"temperature": 1.0, "extra_body": OFF}, "invalid temperature: only 0.6 is allowed for this model"),
            ({"n": 2}, "invalid n: only 1 is allowed for this model"),
            ({"top_p": 0.5}, "invalid top_p: only 0.95 is allowed"),
            ({"presence_penalty": 0.5}, "invalid presence_penalty"),
            ({"logprobs": True}, "logprobs"),
            ({"response_format": {"type": "xml"}}, "response_format.type must be one of 'text', 'json_object'"),
            ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema must be"),
            (
                {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "blob"}}}},
                "response_format.json_schema.schema is not a valid moonshot flavored json schema",
            ),
            ({"stop": ["a"] * 6}, "at most 5 sequences"),
            ({"reasoning_effort": "high"}, "reasoning_effort"),
        ):
            with pytest.raises(openai.BadRequestError) as e:
                c.chat.completions.create(model="kimi-k2.6", messages=MSG, **kw)
            assert needle in e.value.body["message"], kw
    with emulator(cfg(protocol=ProtocolTruth(sampling_parameters="ignore"))) as em:
        assert sdk(em).chat.completions.create(model="kimi-k2.6", messages=MSG, temperature=0.7).choices


@pytest.mark.parametrize("median,budget", [(20, 4096), (300, 4096), (2000, 4096), (50, 60), (5000, 300)])
def test_json_mode_returns_valid_json_that_fits_the_budget(median, budget):
    routes = {"default": RouteTruth(output=LogNormalTruth(median=median, p95=median * 2))}
    with emulator(cfg(routes=routes)) as em:
        c = sdk(em)
        for i in range(8):
            r = c.chat.completions.create(
                model="kimi-k2.6",
                messages=MSG,
                max_completion_tokens=budget,
                response_format={"type": "json_object"},
                extra_body=OFF,
                extra_headers={"X-Kimiplan-Call-Id": f"j{i}"},
            )
            ch = r.choices[0]
            assert r.usage.completion_tokens == count_text(ch.message.content) <= budget
            if ch.finish_reason == "stop":
                assert isinstance(json.loads(ch.message.content), dict)
            else:  # only when the drawn length did not fit: Kimi's JSON Mode is cut off by the budget too
                assert ch.finish_reason == "length" and r.usage.completion_tokens == budget
        # the SDK's .stream() helper (which raises LengthFinishReasonError on a cut) reads a JSON answer
        if median * 2 < budget:
            with c.chat.completions.stream(
                model="kimi-k2.6",
                messages=MSG,
                max_completion_tokens=budget,
                response_format={"type": "json_object"},
                extra_body=OFF,
            ) as s:
                done = s.get_final_completion()
            assert json.loads(done.choices[0].message.content) is not None
            assert done.choices[0].finish_reason == "stop"


def test_a_stop_sequence_ends_the_answer_with_finish_reason_stop():
    routes = {"default": RouteTruth(output=LogNormalTruth(median=200, p95=210))}
    with emulator(cfg(routes=routes)) as em:
        r = sdk(em).chat.completions.create(model="kimi-k2.6", messages=MSG, stop=["o hel"], extra_body=OFF)
    ch = r.choices[0]  # " hello hello ..." ends before the first "o hel", which is not sent
    assert ch.finish_reason == "stop" and ch.message.content == " hell"
    assert r.usage.completion_tokens == count_text(" hell")


def test_async_client_and_streaming_usage_with_include_usage():
    async def run(base_url):
        async with openai.AsyncOpenAI(base_url=base_url, api_key=TEST_API_KEY, max_retries=0) as c:
            r = await c.chat.completions.create(model="kimi-k2.6", messages=MSG, extra_body=OFF)
            stream = await c.chat.completions.create(
                model="kimi-k2.6", messages=MSG, stream=True, stream_options={"include_usage": True}, extra_body=OFF
            )
            chunks = [ch async for ch in stream]
            return r, chunks

    with emulator(cfg()) as em:
        r, chunks = asyncio.run(run(em.base_url))
    assert r.usage.prompt_tokens > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == sum(
        count_text(c.choices[0].delta.content or "") for c in chunks if c.choices
    )


def test_emulator_defaults_come_from_the_behaviour_table():
    kb = kimi_behaviour()
    p = ProtocolTruth()
    c = EmulatorConfig()
    pairs = {
        "request_id_header": p.request_id_header,
        "rate_limit_headers": p.rate_limit_headers,
        "rate_limit_retry_after_header": p.rate_limit_retry_after_header,
        "overloaded_retry_after_header": p.overloaded_retry_after_header,
        "empty_balance_status": p.empty_balance_status,
        "over_context_message": p.over_context_message,
        "auth_error": p.auth_error_message,
        "sampling_parameters": p.sampling_parameters,
        "web_search_with_thinking": p.web_search_with_thinking,
        "empty_assistant_content": p.empty_assistant_content,
        "stream_usage_location": c.stream_usage_location,
        "cache_block_tokens": c.cache_block_tokens,
        "cache_min_prompt_tokens": c.cache_min_prompt_tokens,
    }
    assert set(pairs) == {r.key for r in kb.rows}  # every row is used, every default has a row
    for key, value in pairs.items():
        assert value == kb[key], key
        row = kb.row(key)
        assert row.source and row.verified_on.year >= 2026
        assert type(value) not in {type(a) for a in row.alternatives} or value not in row.alternatives


def test_docs_table_is_the_behaviour_file():
    doc = (ROOT / "docs" / "KIMI_BEHAVIOUR.md").read_text(encoding="utf-8")
    assert behaviour_table_markdown() in doc, "regenerate the table: python -m kimiplan.catalog.behaviour"


def test_reasoning_effort_is_k3s_and_refused_on_k26():
    with emulator(cfg(models=["kimi-k2.6", "kimi-k3"])) as em:
        c = sdk(em)
        assert c.chat.completions.create(model="kimi-k3", messages=MSG, reasoning_effort="high").choices
        for model, effort, needle in (
            ("kimi-k3", "medium", 'reasoning_effort must be "low", "high" or "max"'),
            ("kimi-k2.6", "high", "reasoning_effort is not supported by kimi-k2.6"),
        ):
            with pytest.raises(openai.BadRequestError) as e:
                c.chat.completions.create(model=model, messages=MSG, reasoning_effort=effort)
            assert needle in e.value.body["message"]
        with pytest.raises(openai.BadRequestError, match="cannot specify both 'thinking' and 'reasoning_effort'"):
            c.chat.completions.create(model="kimi-k3", messages=MSG, reasoning_effort="max", extra_body=OFF)


@pytest.mark.parametrize("median,budget", [(10, 4096), (400, 4096), (3000, 300)])
def test_structured_output_json_schema_fits_the_schema_through_the_sdks_parse_helper(median, budget):
    import jsonschema
    from pydantic import BaseModel

    class Holiday(BaseModel):
        holiday: str
        traditions: list[str]
        days: int

    routes = {"default": RouteTruth(output=LogNormalTruth(median=median, p95=median * 2))}
    with emulator(cfg(routes=routes)) as em:
        c = sdk(em)
        kw = dict(model="kimi-k2.6", messages=MSG, max_completion_tokens=budget, extra_body=OFF)
        if median * 2 < budget:
            done = c.chat.completions.parse(response_format=Holiday, **kw)  # the SDK sends a strict json_schema
            parsed = done.choices[0].message.parsed
            assert isinstance(parsed, Holiday) and done.choices[0].finish_reason == "stop"
        schema = Holiday.model_json_schema()
        rf = {"type": "json_schema", "json_schema": {"name": "holiday", "schema": schema}}
        r = c.chat.completions.create(response_format=rf, **kw)
    ch = r.choices[0]
    assert r.usage.completion_tokens == count_text(ch.message.content) <= budget
    if ch.finish_reason == "stop":
        jsonschema.validate(json.loads(ch.message.content), schema)
    else:
        assert ch.finish_reason == "length" and r.usage.completion_tokens == budget


def test_empty_assistant_content_is_accepted_or_refused_as_configured():
    call = {"id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [
        *MSG,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "functions.f:0", "content": "1"},
    ]
    plain = [*MSG, {"role": "assistant", "content": ""}, {"role": "user", "content": "again"}]
    with emulator(cfg()) as em:
        for messages in (history, plain):
            assert sdk(em).chat.completions.create(model="kimi-k2.6", messages=messages, extra_body=OFF).choices
    with emulator(cfg(protocol=ProtocolTruth(empty_assistant_content="refuse"))) as em:
        for messages, needle in (
            (history, "text content is empty"),
            (plain, "position 1 with role 'assistant' must not be empty"),
        ):
            with pytest.raises(openai.BadRequestError, match=needle):
                sdk(em).chat.completions.create(model="kimi-k2.6", messages=messages, extra_body=OFF)
