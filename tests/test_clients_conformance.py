"""LiteLLM and LangChain (langchain-openai) against the emulator on 127.0.0.1, asserting what a user relies on:
usage with cached tokens, reasoning content, tool calls, JSON mode, typed errors; and where each mishandles Kimi
(LiteLLM prices cached prompt tokens at the cache-miss rate; langchain-openai drops reasoning_content, so a
thinking tool loop gets Kimi's 400, and does not see Kimi's top-level cached_tokens). Both are in the test
extras; the module skips cleanly when they are not installed. Also the OpenAI SDK's own retries on a 429."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import openai
import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.emulator import EmulatorConfig, LimitsTruth, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY, ProtocolTruth, ToolTruth
from kimiplan.finance.cost import Usage, cost_of_usage
from kimiplan.tokens.tokenizer import count_text

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM fetches its price map online otherwise

LONG = [{"role": "system", "content": "policy" + " hello" * 1500}, {"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def config(**tools) -> EmulatorConfig:
    truth = RouteTruth(
        output={"median": 100, "p95": 101}, reasoning={"median": 30, "p95": 60}, tools=ToolTruth(**tools)
    )
    return EmulatorConfig(time_scale=0.0, routes={"default": truth})


# ---- LiteLLM -------------------------------------------------------------------------------------------------
def _litellm():
    return pytest.importorskip("litellm")


def test_litellm_reads_usage_reasoning_and_tool_calls():
    litellm = _litellm()
    with emulator(config(p_call=1.0)) as em:
        kw = {"model": "moonshot/kimi-k2.6", "api_base": em.base_url, "api_key": TEST_API_KEY}
        litellm.completion(messages=LONG, max_tokens=200, **kw)
        r = litellm.completion(messages=LONG, max_tokens=200, **kw)
        # Kimi's usage: cached_tokens at the top level (256-token blocks), reasoning in completion_tokens
        assert r.usage.prompt_tokens == 1513 and r.usage.cached_tokens == 1280
        reasoning = r.choices[0].message.reasoning_content
        assert reasoning and r.usage.completion_tokens == count_text(reasoning) + count_text(
            r.choices[0].message.content
        )
        t = litellm.completion(messages=[{"role": "user", "content": "weather?"}], tools=[TOOL], **kw)
        assert t.choices[0].finish_reason == "tool_calls"
        assert t.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_litellm_raises_typed_errors():
    litellm = _litellm()
    cfg = config().model_copy(update={"limits": LimitsTruth(rpm=1)})
    with emulator(cfg) as em:
        kw = {"model": "moonshot/kimi-k2.6", "api_base": em.base_url, "num_retries": 0}
        with pytest.raises(litellm.AuthenticationError, match="Invalid Authentication"):
            litellm.completion(messages=LONG, api_key="sk-wrong", **kw)
        bad = {"type": "function", "function": {"name": "get weather", "parameters": {"type": "object"}}}
        with pytest.raises(litellm.BadRequestError, match=r"tools\[0\].function.name 'get weather' must match"):
            litellm.completion(messages=LONG, api_key=TEST_API_KEY, tools=[bad], **kw)
        # LiteLLM's Moonshot adapter rewrites tool_choice "required" (which Kimi refuses with thinking on) into an
        # instruction message, so that call is not refused: the emulator sees no tool_choice at all
        ok = litellm.completion(messages=LONG, api_key=TEST_API_KEY, tools=[TOOL], tool_choice="required", **kw)
        assert ok.choices[0].finish_reason in ("tool_calls", "stop", "length")  # it used the RPM of 1
        with pytest.raises(litellm.RateLimitError, match="max RPM: 1, please try again after"):
            litellm.completion(messages=LONG, api_key=TEST_API_KEY, **kw)


def test_litellm_prices_kimis_cached_tokens_at_the_miss_rate_kimiplan_does_not():
    """The README's claim: LiteLLM's cost of a Kimi response ignores `usage.cached_tokens` (top level, where Kimi
    puts it), so a cached prompt costs the cache-miss price; kimiplan prices it at the cache-hit price."""
    litellm = _litellm()
    card = load_catalog().price("kimi-k2.6", "moonshot", region="intl")
    with emulator(config()) as em:
        kw = {"model": "moonshot/kimi-k2.6", "api_base": em.base_url, "api_key": TEST_API_KEY}
        litellm.completion(messages=LONG, max_tokens=200, **kw)
        r = litellm.completion(messages=LONG, max_tokens=200, **kw)
    p, c, cached = r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.cached_tokens
    assert cached == 1280
    ours = cost_of_usage(Usage(p, c, cached), card).total
    million = Decimal(1_000_000)
    kimi = (cached * card.input_cache_hit + (p - cached) * card.input_cache_miss + c * card.output) / million
    assert ours == kimi
    theirs = Decimal(str(litellm.completion_cost(r)))
    at_miss_rate = (p * card.input_cache_miss + c * card.output) / million
    # If this fails, LiteLLM now prices Kimi's cached tokens: update the README's note.
    assert abs(theirs - at_miss_rate) < Decimal("1e-9"), (theirs, at_miss_rate)
    assert theirs - ours == cached * (card.input_cache_miss - card.input_cache_hit) / million
    # A fully cached 1,513-token prompt and 100 output tokens, in Kimi's usage shape.
    kimi_reply = litellm.ModelResponse(
        id="cmpl-x",
        model="kimi-k2.6",
        object="chat.completion",
        created=0,
        choices=[{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        usage={"prompt_tokens": 1513, "completion_tokens": 100, "total_tokens": 1613, "cached_tokens": 1513},
    )
    assert round(Decimal(str(litellm.completion_cost(kimi_reply, model="moonshot/kimi-k2.6"))), 5) == Decimal("0.00184")
    assert round(cost_of_usage(Usage(1513, 100, 1513), card).total, 5) == Decimal("0.00064")


# ---- LangChain (langchain-openai) ------------------------------------------------------------------------------
def _chat(em, **kw):
    lc = pytest.importorskip("langchain_openai")
    return lc.ChatOpenAI(model="kimi-k2.6", base_url=em.base_url, api_key=TEST_API_KEY, max_retries=0, **kw)


def test_langchain_bind_tools_returns_tool_calls_and_a_thinking_loop_needs_reasoning_content():
    from langchain_core.messages import HumanMessage, ToolMessage

    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    with emulator(config(p_call=1.0, max_rounds=1)) as em:
        llm = _chat(em).bind_tools([get_weather])
        q = [HumanMessage("weather in Paris?")]
        ai = llm.invoke(q)
        assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather" and "city" in ai.tool_calls[0]["args"]
        assert ai.response_metadata["finish_reason"] == "tool_calls"
        q += [ai, ToolMessage("sunny", tool_call_id=ai.tool_calls[0]["id"])]
        # langchain-openai does not send reasoning_content back: with thinking on, Kimi refuses the next round
        with pytest.raises(openai.BadRequestError, match="reasoning_content is missing in assistant tool call message"):
            llm.invoke(q)
        off = _chat(em, extra_body={"thinking": {"type": "disabled"}}).bind_tools([get_weather])
        q = [HumanMessage("weather in Paris?")]
        ai = off.invoke(q)
        final = off.invoke([*q, ai, ToolMessage("sunny", tool_call_id=ai.tool_calls[0]["id"])])
        assert final.content and not final.tool_calls


def test_langchain_usage_json_mode_and_errors():
    with emulator(config()) as em:
        llm = _chat(em)
        llm.invoke(LONG)
        r = llm.invoke(LONG)
        assert r.usage_metadata["input_tokens"] == 1513
        # Kimi's cached_tokens reach response_metadata but not usage_metadata's cache_read (a gap users meet)
        assert r.response_metadata["token_usage"]["cached_tokens"] == 1280
        assert r.usage_metadata.get("input_token_details", {}).get("cache_read") in (None, 0)
        off = _chat(em, extra_body={"thinking": {"type": "disabled"}})
        data = off.with_structured_output(None, method="json_mode").invoke("Answer in JSON.")
        assert isinstance(data, dict) and data
        from pydantic import BaseModel

        class City(BaseModel):
            name: str
            population: int

        # LangChain's default structured output: response_format json_schema (Kimi honours it)
        city = off.with_structured_output(City).invoke("A city, please.")
        assert isinstance(city, City)
        wrong = pytest.importorskip("langchain_openai").ChatOpenAI(
            model="kimi-k2.6", base_url=em.base_url, api_key="sk-wrong", max_retries=0
        )
        with pytest.raises(openai.AuthenticationError, match="Invalid Authentication"):
            wrong.invoke("hi")


# ---- The OpenAI SDK's own retries --------------------------------------------------------------------------------
@pytest.mark.parametrize("retry_after", [False, True])
def test_openai_sdk_retries_a_429_twice_then_raises(retry_after):
    proto = ProtocolTruth(rate_limit_retry_after_header=retry_after)
    cfg = config().model_copy(update={"limits": LimitsTruth(rpm=1), "protocol": proto})
    with emulator(cfg) as em:
        c = openai.OpenAI(base_url=em.base_url, api_key=TEST_API_KEY)  # the SDK's defaults: max_retries=2
        c.chat.completions.create(model="kimi-k2.6", messages=LONG, extra_body={"thinking": {"type": "disabled"}})
        if retry_after:  # jump the emulated clock to 1 s before the RPM slot frees: Retry-After says "1"
            t0 = time.monotonic()
            em.engine._clock = lambda: 59.5 + (time.monotonic() - t0)
            r = c.chat.completions.create(
                model="kimi-k2.6", messages=LONG, extra_body={"thinking": {"type": "disabled"}}
            )
            # the SDK waited as told (not its own 0.5-8 s backoff guesses) and the retry got through
            assert r.choices and em.engine.stats.refusals["rpm"] == 1 and time.monotonic() - t0 >= 0.9
            return
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="kimi-k2.6", messages=LONG, extra_body={"thinking": {"type": "disabled"}})
    assert em.engine.stats.refusals["rpm"] == 3  # one call and the SDK's two retries, all refused
