"""Tool calling against the emulator, driven through the real OpenAI SDK: function tools, tool_choice, the
tool-call history rules, thinking with tools and the built-in $web_search, each held to Kimi's documented
behaviour; arguments are checked against each tool's schema by jsonschema (not by the emulator's own code)."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from kimiplan.emulator import EmulatorConfig, RouteTruth, emulator
from kimiplan.emulator.config import TEST_API_KEY as API_KEY
from kimiplan.emulator.config import ToolTruth
from kimiplan.tokens.tokenizer import count_messages

OFF = {"thinking": {"type": "disabled"}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "hourly": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 2, "maxItems": 3},
        },
        "required": ["unit", "days", "ratio", "hourly", "tags"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "$defs": {"point": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}},
        "properties": {
            "where": {"$ref": "#/$defs/point"},
            "either": {"anyOf": [{"type": "string", "minLength": 3}, {"type": "null"}]},
            "nested": {
                "type": "object",
                "properties": {"deep": {"type": "array", "items": {"$ref": "#/$defs/point"}}},
                "required": ["deep"],
            },
        },
        "required": ["where", "either", "nested"],
    },
    {"type": "object", "properties": {}},
]


def tool(name="get_weather", params=None):
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": params or SCHEMAS[0]}}


WEB = {"type": "builtin_function", "function": {"name": "$web_search"}}


@pytest.fixture
def em_tools():
    def make(**tools):
        truth = RouteTruth(reasoning={"median": 40, "p95": 120}, tools=ToolTruth(**tools))
        cfg = EmulatorConfig(time_scale=0.0, routes={"default": truth})
        return emulator(cfg)

    return make


def sdk(em) -> openai.OpenAI:
    return openai.OpenAI(base_url=em.base_url, api_key=API_KEY, max_retries=0)


@pytest.mark.parametrize("schema", SCHEMAS, ids=["simple", "scalars", "refs", "empty"])
@pytest.mark.parametrize("stream", [False, True])
def test_required_calls_a_tool_with_arguments_valid_against_its_schema(em_tools, schema, stream):
    with em_tools() as em:
        client = sdk(em)
        for k in range(6):  # several draws per schema: optional properties come and go
            kw = dict(model="kimi-k2.6", messages=ASK, tools=[tool(params=schema)], tool_choice="required")
            if stream:
                with client.chat.completions.stream(
                    **kw, extra_body=OFF, extra_headers={"X-Kimiplan-Call-Id": str(k)}
                ) as s:
                    for _ in s:
                        pass
                    done = s.get_final_completion()
            else:
                done = client.chat.completions.create(
                    **kw, extra_body=OFF, extra_headers={"X-Kimiplan-Call-Id": str(k)}
                )
            ch = done.choices[0]
            assert ch.finish_reason == "tool_calls"
            (call,) = ch.message.tool_calls
            assert call.type == "function" and call.function.name == "get_weather" and call.id
            jsonschema.validate(json.loads(call.function.arguments), schema)


def test_tool_choice_none_named_and_auto_frequency(em_tools):
    tools = [tool("get_weather"), tool("get_time")]
    with em_tools(p_call=0.3, max_parallel_calls=1) as em:
        client = sdk(em)
        r = client.chat.completions.create(
            model="kimi-k2.6", messages=ASK, tools=tools, tool_choice="none", extra_body=OFF
        )
        assert r.choices[0].finish_reason in ("stop", "length") and not r.choices[0].message.tool_calls
        named = {"type": "function", "function": {"name": "get_time"}}
        r = client.chat.completions.create(
            model="kimi-k2.6", messages=ASK, tools=tools, tool_choice=named, extra_body=OFF
        )
        assert [c.function.name for c in r.choices[0].message.tool_calls] == ["get_time"]
        # auto: the share of calls that call a tool is the hidden p_call (a 4.5-sigma binomial band over 400 calls)
        n = 400
        hits = sum(
            client.chat.completions.create(
                model="kimi-k2.6",
                messages=ASK,
                tools=tools,
                extra_body=OFF,
                extra_headers={"X-Kimiplan-Call-Id": f"a{i}"},
            )
            .choices[0]
            .finish_reason
            == "tool_calls"
            for i in range(n)
        )
        assert abs(hits / n - 0.3) < 4.5 * (0.3 * 0.7 / n) ** 0.5


def test_a_tool_round_trip_bills_the_tool_message_and_stops_after_max_rounds(em_tools):
    tools = [tool()]
    with em_tools(p_call=1.0, max_rounds=2) as em:
        client = sdk(em)
        messages = list(ASK)
        finishes = []
        for _ in range(4):
            r = client.chat.completions.create(model="kimi-k2.6", messages=messages, tools=tools, extra_body=OFF)
            # every call's prompt is the whole history, tool results included, under the chat template
            assert r.usage.prompt_tokens == count_messages(messages, tools=tools)
            ch = r.choices[0]
            finishes.append(ch.finish_reason)
            if ch.finish_reason != "tool_calls":
                break
            messages.append(ch.message.model_dump(exclude_none=True))
            for c in ch.message.tool_calls:
                messages.append(
                    {"role": "tool", "tool_call_id": c.id, "name": c.function.name, "content": "18 C, sunny"}
                )
            # the completion tokens of a tool-call reply are what the next prompt counts for that message
            assert r.usage.completion_tokens == count_messages(
                messages[-2:-1], add_reply_primer=False
            ) - count_messages([{"role": "assistant", "content": ""}], add_reply_primer=False)
        assert finishes == ["tool_calls", "tool_calls", "stop"]


def test_thinking_with_tools_follows_kimis_rules(em_tools):
    with em_tools(p_call=1.0) as em:
        client = sdk(em)
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="kimi-k2.6", messages=ASK, tools=[tool()], tool_choice="required")
        assert "tool_choice 'required' is incompatible with thinking enabled" in str(e.value)
        named = {"type": "function", "function": {"name": "get_weather"}}
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="kimi-k2.6", messages=ASK, tools=[tool()], tool_choice=named)
        assert "tool_choice 'specified' is incompatible with thinking enabled" in str(e.value)
        # auto with thinking on: reasoning, then the call; the reasoning must go back with the call
        r = client.chat.completions.create(model="kimi-k2.6", messages=ASK, tools=[tool()])
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls"
        msg = ch.message.model_dump(exclude_none=True)
        call = ch.message.tool_calls[0]
        result = {"role": "tool", "tool_call_id": call.id, "content": "18 C"}
        stripped = {k: v for k, v in msg.items() if k != "reasoning_content"}
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="kimi-k2.6", messages=[*ASK, stripped, result], tools=[tool()])
        assert "thinking is enabled but reasoning_content is missing in assistant tool call message at index 1" in str(
            e.value
        )
        good = [*ASK, msg, result]
        r2 = client.chat.completions.create(model="kimi-k2.6", messages=good, tools=[tool()])
        # within the turn, the reasoning sent back is read and billed (keep=null still reads the current turn)
        assert r2.usage.prompt_tokens == count_messages(good, tools=[tool()])
        assert count_messages(good, tools=[tool()]) > count_messages([*ASK, stripped, result], tools=[tool()])
        # a later turn: the earlier turn's reasoning is ignored under keep=null and billed under keep="all"
        later = [*good, {"role": "assistant", "content": "It is 18 C."}, {"role": "user", "content": "And tomorrow?"}]
        r3 = client.chat.completions.create(model="kimi-k2.6", messages=later, tools=[tool()])
        r4 = client.chat.completions.create(
            model="kimi-k2.6",
            messages=later,
            tools=[tool()],
            extra_body={"thinking": {"type": "enabled", "keep": "all"}},
        )
        reasoning_tokens = count_messages(good, tools=[tool()]) - count_messages(
            [*ASK, stripped, result], tools=[tool()]
        )
        assert r4.usage.prompt_tokens - r3.usage.prompt_tokens == reasoning_tokens
        assert r3.usage.prompt_tokens == count_messages(later, tools=[tool()])
        assert r4.usage.prompt_tokens == count_messages(later, tools=[tool()], keep="all")


def test_web_search_round_trip_bills_the_results_as_input_and_counts_the_fee(em_tools):
    with em_tools(p_call=1.0, max_rounds=1) as em:
        client = sdk(em)
        messages = [{"role": "user", "content": "Search the news about Kimi."}]
        r = client.chat.completions.create(model="kimi-k2.6", messages=messages, tools=[WEB], extra_body=OFF)
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls"
        (call,) = ch.message.tool_calls
        assert call.function.name == "$web_search"
        args = json.loads(call.function.arguments)
        total = args["usage"]["total_tokens"]
        assert total > 0 and args["search_result"]["search_id"]
        assert em.engine.stats.billed_web_search_calls == 1
        # the documented client: send the arguments back unchanged as the tool message
        messages.append(ch.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "name": "$web_search", "content": json.dumps(args)})
        r2 = client.chat.completions.create(model="kimi-k2.6", messages=messages, tools=[WEB], extra_body=OFF)
        assert r2.choices[0].finish_reason == "stop"
        assert r2.usage.prompt_tokens == count_messages(messages, tools=[WEB]) + total
        assert em.engine.stats.billed_web_search_calls == 1  # the answer after the search carries no fee


@pytest.mark.parametrize(
    "tools,choice,needle",
    [
        ([{"type": "retrieval"}], None, 'tools[0].type must be "function" or "builtin_function"'),
        ([{"type": "function"}], None, "tools[0].function must be an object"),
        ([tool("a b")], None, "tools[0].function.name 'a b' must match"),
        ([tool("$x")], None, "tools[0].function.name '$x' must match"),
        ([{"type": "builtin_function", "function": {"name": "$search"}}], None, "is not a builtin_function"),
        ([tool(), tool()], None, "tools[1].function.name 'get_weather' is declared twice"),
        ([tool(params={"type": "string"})], None, "is not a valid moonshot flavored json schema"),
        (
            [tool(params={"type": "object", "properties": {"x": {"type": "string", "anyOf": [{"type": "string"}]}}})],
            None,
            "At path 'properties.x': when using anyOf, type should be defined in anyOf items",
        ),
        (
            [tool(params={"type": "object", "properties": {"x": {"$ref": "http://x"}}})],
            None,
            "references must start with #/",
        ),
        ([tool(params={"type": "object", "properties": {}, "required": ["q"]})], None, "required names ['q']"),
        ([tool(params={"type": "object", "properties": {"q": {"type": "text"}}})], None, "unknown type 'text'"),
        ([tool(f"tool_{i}") for i in range(129)], None, "at most 128 tools"),
        ([tool()], "sometimes", "tool_choice must be"),
        ([tool()], {"type": "function", "function": {"name": "nope"}}, "tool_choice.function.name 'nope' is not among"),
        (None, "required", "tool_choice 'required' is only allowed when tools are specified"),
    ],
)
def test_bad_tool_definitions_get_kimis_400_naming_the_field(emulated, tools, choice, needle):
    kw = {"tools": tools} if tools is not None else {}
    if choice is not None:
        kw["tool_choice"] = choice
    with pytest.raises(openai.BadRequestError) as e:
        sdk(emulated).chat.completions.create(model="kimi-k2.6", messages=ASK, extra_body=OFF, **kw)
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"
    assert e.value.body["message"].startswith("Invalid request: ") and needle in e.value.body["message"]


@pytest.mark.parametrize(
    "messages,needle",
    [
        ([*ASK, {"role": "tool", "tool_call_id": "functions.x:0", "content": "r"}], "messages[1].tool_call_id"),
        ([*ASK, {"role": "tool", "content": "r"}], "messages[1].tool_call_id must be a non-empty string"),
        (
            [
                *ASK,
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
            ],
            "messages[1].tool_calls[0].id",
        ),
        (
            [
                *ASK,
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
                },
            ],
            "messages[1].tool_calls[0].function.arguments must be a JSON string",
        ),
    ],
)
def test_tool_messages_without_a_matching_call_are_refused(emulated, messages, needle):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(emulated).chat.completions.create(model="kimi-k2.6", messages=messages, extra_body=OFF)
    assert needle in e.value.body["message"]
