"""Hostile tool payloads: whatever JSON arrives in tools, tool_choice, messages' tool calls, response_format, stop
or thinking, the emulator answers 200 or a Kimi-shaped 4xx, never a 500 or a hang (property-based, bounded)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimiplan.emulator import EmulatorConfig, emulator
from kimiplan.emulator.config import TEST_API_KEY

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
FN = st.fixed_dictionaries(
    {"name": st.sampled_from(["get_x", "$web_search", "a b", "ok_tool"]) | st.text(max_size=8)},
    optional={
        "parameters": JSON | st.just({"type": "object", "properties": {"q": {"type": "string"}}}),
        "description": JSON,
    },
)
TOOL = st.fixed_dictionaries({"type": st.sampled_from(["function", "builtin_function", "x"]), "function": FN | JSON})
CALL = st.fixed_dictionaries(
    {
        "id": st.text(max_size=6) | JSON,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": JSON, "arguments": JSON}),
    }
)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=20)}),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.just("") | JSON},
        optional={"tool_calls": st.lists(CALL, max_size=2) | JSON, "reasoning_content": JSON},
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": JSON | st.text(max_size=30)}, optional={"tool_call_id": JSON}
    ),
)
BODY = st.fixed_dictionaries(
    {"model": st.just("kimi-k2.6"), "messages": st.lists(MESSAGE, min_size=1, max_size=4)},
    optional={
        "tools": st.lists(TOOL, max_size=3) | JSON,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | JSON,
        "response_format": st.just({"type": "json_object"}) | JSON,
        "stop": JSON,
        "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled"])}, optional={"keep": JSON})
        | JSON,
        "n": JSON,
        "temperature": JSON,
        "max_completion_tokens": st.integers(1, 300),
        "stream": st.booleans(),
    },
)


@pytest.fixture(scope="module")
def em():
    with emulator(EmulatorConfig(time_scale=0.0, routes={"default": {"output": {"median": 20, "p95": 40}}})) as e:
        yield e


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY)
def test_hostile_tool_payloads_never_crash_the_emulator(em, body):
    r = httpx.post(
        em.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=10,
    )
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        err = r.json()["error"]
        assert err["type"] and err["message"]
    assert em.engine.stats.internal_errors == 0
