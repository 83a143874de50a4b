"""Tool calling as Kimi does it: tool definitions, `tool_choice`, the tool-call history rules, the calls the
"model" makes (arguments drawn to fit each tool's JSON Schema) and the built-in `$web_search`.

Kimi's rules and wordings (sources in docs/KIMI_BEHAVIOUR.md):
- function names match `^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$`, at most 128 tools; `parameters` is a "moonshot
  flavored json schema" (a bad one: "tools.function.parameters is not a valid moonshot flavored json schema,
  details: <At path '...': ...>", MoonshotAI/kimi-cli #1903, command-code #594, jiuwenswarm #3942);
- with thinking on, `tool_choice` may only be auto or none: "tool_choice 'required' is incompatible with thinking
  enabled" (AstrBot #7805, llmgateway #2090), a named function "tool_choice 'specified' is incompatible with
  thinking enabled" (inspect_ai #5152);
- with thinking on, every assistant message with tool calls must carry `reasoning_content`: "thinking is enabled
  but reasoning_content is missing in assistant tool call message at index N" (continue #11600, openclaw
  #82161); an empty string is accepted (llmgateway #2022);
- `$web_search` is `{"type": "builtin_function", "function": {"name": "$web_search"}}`; the model answers with a
  tool call whose arguments the client sends back unchanged in a tool message; `arguments.usage.total_tokens` are
  the result's tokens, counted in the next call's `prompt_tokens`; a per-call fee is charged when a response has
  `finish_reason=tool_calls` with `$web_search` (use-web-search guide and tools pricing page, facts §1c, §8a).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ToolTruth
from .refusal import bad_request

FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{2,63}$")
MAX_TOOLS = 128
WEB_SEARCH = "$web_search"
BUILTINS = frozenset({WEB_SEARCH})
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
_WORD = " hello"  # one token each (engine.CONTENT_WORD), so string arguments have exact lengths


@dataclass(frozen=True)
class Tool:
    name: str
    kind: str  # "function" or "builtin_function"
    parameters: Mapping[str, Any]


def _schema_error(path: str, why: str, what: str = "tools.function.parameters"):
    return bad_request(f"{what} is not a valid moonshot flavored json schema, details: <At path '{path}': {why}>")


def check_schema(schema: Any, what: str) -> None:
    """A whole schema (tool parameters, a response_format json_schema), with Kimi's wording naming `what`."""
    try:
        _check_schema(schema, "", schema if isinstance(schema, Mapping) else {})
    except Exception as exc:
        msg = getattr(exc, "message", None)
        if msg is None:
            raise
        raise bad_request(msg.replace("tools.function.parameters", what, 1)) from None


def _check_schema(node: Any, path: str, root: Mapping[str, Any], depth: int = 0) -> None:
    """The parts of a JSON Schema the emulator draws from, checked as Kimi checks them."""
    if depth > 32:
        raise _schema_error(path, "schema is nested too deeply")
    if not isinstance(node, Mapping):
        raise _schema_error(path, f"a schema must be an object, got {type(node).__name__}")
    t = node.get("type")
    types = t if isinstance(t, list) else [t] if t is not None else []
    for x in types:
        if x not in _TYPES:
            raise _schema_error(path, f"unknown type {x!r}")
    ref = node.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise _schema_error(f"{path}.$ref", "references must start with #/$defs or #/definitions")
        if _resolve(root, ref) is None:
            raise _schema_error(f"{path}.$ref", f"reference {ref} does not resolve")
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            alts = node[key]
            if not isinstance(alts, list) or not alts:
                raise _schema_error(f"{path}.{key}", f"{key} must be a non-empty list")
            if key == "anyOf" and t is not None:
                raise _schema_error(
                    path, "when using anyOf, type should be defined in anyOf items instead of the parent schema"
                )
            for i, alt in enumerate(alts):
                _check_schema(alt, f"{path}.{key}[{i}]", root, depth + 1)
    props = node.get("properties")
    if props is not None:
        if not isinstance(props, Mapping):
            raise _schema_error(f"{path}.properties", "properties must be an object")
        for name, sub in props.items():
            _check_schema(sub, f"{path}.properties.{name}" if path else f"properties.{name}", root, depth + 1)
    req = node.get("required")
    if req is not None:
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise _schema_error(f"{path}.required", "required must be a list of property names")
        missing = [r for r in req if r not in (props or {})]
        if missing:
            raise _schema_error(f"{path}.required", f"required names {missing} that are not among properties")
    items = node.get("items")
    if items is not None:
        _check_schema(items, f"{path}.items", root, depth + 1)
    enum = node.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        raise _schema_error(f"{path}.enum", "enum must be a non-empty list")
    for defs in ("$defs", "definitions"):
        if isinstance(node.get(defs), Mapping):
            for name, sub in node[defs].items():
                _check_schema(sub, f"{path}.{defs}.{name}", root, depth + 1)


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def parse_tools(body: Mapping[str, Any]) -> list[Tool]:
    """The request's `tools`, each checked; a bad one is a 400 naming `tools[i]` and the field."""
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request(f"tools must be a list of tool objects, got {type(raw).__name__}")
    if len(raw) > MAX_TOOLS:
        raise bad_request(f"tools: at most {MAX_TOOLS} tools are allowed, got {len(raw)}")
    out: list[Tool] = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        if not isinstance(t, Mapping):
            raise bad_request(f"tools[{i}] must be an object, got {type(t).__name__}")
        kind = t.get("type")
        if kind not in ("function", "builtin_function"):
            raise bad_request(f'tools[{i}].type must be "function" or "builtin_function", got {kind!r:.40}')
        fn = t.get("function")
        if not isinstance(fn, Mapping):
            raise bad_request(f"tools[{i}].function must be an object with a name")
        name = fn.get("name")
        if not isinstance(name, str):
            raise bad_request(f"tools[{i}].function.name must be a string, got {type(name).__name__}")
        if kind == "builtin_function":
            if name not in BUILTINS:
                raise bad_request(
                    f"tools[{i}].function.name {name!r:.70} is not a builtin_function (known: {sorted(BUILTINS)})"
                )
        elif not FUNCTION_NAME.match(name):
            raise bad_request(f"tools[{i}].function.name {name!r:.70} must match {FUNCTION_NAME.pattern}")
        if name in seen:
            raise bad_request(f"tools[{i}].function.name {name!r} is declared twice")
        seen.add(name)
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise bad_request(f"tools[{i}].function.description must be a string, got {type(desc).__name__}")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif kind == "function":
            if not isinstance(params, Mapping) or params.get("type") != "object":
                raise _schema_error("", 'parameters must be an object schema ({"type": "object", ...})')
            _check_schema(params, "", params)
        out.append(Tool(name, kind, params))
    return out


def resolve_tool_choice(body: Mapping[str, Any], tools: Sequence[Tool], thinking: bool) -> str:
    """ "none", "auto", "required" or "fn:<name>" for a named function; a bad value is a 400 naming tool_choice."""
    tc = body.get("tool_choice")
    if tc is None:
        return "auto" if tools else "none"
    if isinstance(tc, str):
        if tc not in ("auto", "none", "required"):
            raise bad_request(
                'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}, '
                f"got {tc!r:.40}"
            )
        if tc != "none" and not tools:
            raise bad_request(f"tool_choice {tc!r} is only allowed when tools are specified")
        if tc == "required" and thinking:
            raise bad_request("tool_choice 'required' is incompatible with thinking enabled")
        return tc
    if not isinstance(tc, Mapping) or tc.get("type") != "function" or not isinstance(tc.get("function"), Mapping):
        raise bad_request(
            f'tool_choice must be a string or {{"type": "function", "function": {{"name": ...}}}}, got {tc!r:.60}'
        )
    name = tc["function"].get("name")
    if not isinstance(name, str) or name not in {t.name for t in tools}:
        raise bad_request(f"tool_choice.function.name {name!r:.70} is not among tools {[t.name for t in tools]}")
    if thinking:
        raise bad_request("tool_choice 'specified' is incompatible with thinking enabled")
    return f"fn:{name}"


def current_turn_rounds(messages: Sequence[Mapping[str, Any]]) -> int:
    """Assistant messages with tool calls after the last user message: the tool rounds of this turn."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant" and m.get("tool_calls"))


def check_tool_messages(messages: Sequence[Mapping[str, Any]], thinking: bool) -> None:
    """Tool calls in the history have ids, names and string arguments; each tool message answers a call of an
    earlier assistant message; with thinking on, assistant tool-call messages carry reasoning_content."""
    known: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            for j, c in enumerate(m["tool_calls"]):
                if not isinstance(c.get("id"), str) or not c["id"]:
                    raise bad_request(f"messages[{i}].tool_calls[{j}].id must be a non-empty string")
                fn = c.get("function") or {}
                if not isinstance(fn.get("name"), str):
                    raise bad_request(f"messages[{i}].tool_calls[{j}].function.name must be a string")
                if not isinstance(fn.get("arguments", ""), str):
                    raise bad_request(f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON string")
                known.add(c["id"])
            if thinking and m.get("reasoning_content") is None:
                raise bad_request(
                    f"thinking is enabled but reasoning_content is missing in assistant tool call message at index {i}"
                )
        elif role == "tool":
            tid = m.get("tool_call_id")
            if not isinstance(tid, str) or not tid:
                raise bad_request(
                    f"messages[{i}].tool_call_id must be a non-empty string (role 'tool' answers a tool call)"
                )
            if tid not in known:
                raise bad_request(
                    f"messages[{i}].tool_call_id {tid!r:.80} does not match a tool call of an earlier assistant message"
                )


def check_empty_assistant(messages: Sequence[Mapping[str, Any]]) -> None:
    """The reported refusals of an assistant message with empty content (protocol.empty_assistant_content)."""
    for i, m in enumerate(messages):
        if m.get("role") == "assistant" and not m.get("partial") and m.get("content") in ("", None, []):
            if m.get("tool_calls"):
                raise bad_request("text content is empty")
            raise bad_request(f"the message at position {i} with role 'assistant' must not be empty")


def schema_instance(schema: Any, rng: np.random.Generator, words: int, root: Any = None, depth: int = 0) -> Any:
    """A JSON value valid against `schema` (the subset `_check_schema` admits), strings of `words` tokens."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > 12:
        return None if depth > 12 else "x"
    if "$ref" in schema:
        return schema_instance(_resolve(root, schema["$ref"]), rng, words, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][int(rng.integers(len(schema["enum"])))]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return schema_instance(schema[key][0], rng, words, root, depth + 1)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, Mapping):
                merged.update(part)
        return schema_instance(merged, rng, words, root, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "string"
    if t == "object":
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        return {
            k: schema_instance(v, rng, words, root, depth + 1)
            for k, v in props.items()
            if k in required or rng.random() < 0.5
        }
    if t == "array":
        lo = int(schema.get("minItems", 1))
        hi = int(schema.get("maxItems", max(lo, 2)))
        n = int(rng.integers(lo, max(lo, hi) + 1))
        return [schema_instance(schema.get("items", {}), rng, words, root, depth + 1) for _ in range(n)]
    if t == "string":
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = (_WORD * max(words, 1)).strip()
        if hi is not None:
            text = text[: int(hi)]
        return text + "x" * max(0, lo - len(text))
    if t in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        hi = schema.get("maximum", schema.get("exclusiveMaximum", lo + 100))
        lo_i, hi_i = int(np.ceil(lo)), int(np.floor(hi))
        if "exclusiveMinimum" in schema and lo_i == lo:
            lo_i += 1
        if "exclusiveMaximum" in schema and hi_i == hi:
            hi_i -= 1
        return int(rng.integers(lo_i, max(lo_i, hi_i) + 1))
    if t == "boolean":
        return bool(rng.random() < 0.5)
    return None


def plan_tool_calls(
    tools: Sequence[Tool],
    choice: str,
    truth: ToolTruth,
    messages: Sequence[Mapping[str, Any]],
    rng: np.random.Generator,
) -> list[Tool]:
    """Which tools this call invokes (empty: the model answers in text), under the route's ToolTruth."""
    if not tools or choice == "none":
        return []
    if choice.startswith("fn:"):
        named = next(t for t in tools if t.name == choice[3:])
        return [named]
    if choice == "auto" and (current_turn_rounds(messages) >= truth.max_rounds or rng.random() >= truth.p_call):
        return []
    k = int(rng.integers(1, truth.max_parallel_calls + 1))
    return [tools[int(rng.integers(len(tools)))] for _ in range(k)]


def echoed_search_ids(messages: Sequence[Mapping[str, Any]]) -> dict[int, tuple[str | None, int | None]]:
    """Tool messages that send a `$web_search` call's arguments back: message index -> (search_id, the
    arguments' usage.total_tokens), the call found by tool_call_id among earlier assistant messages."""
    names: dict[str, str] = {}
    out: dict[int, tuple[str | None, int | None]] = {}
    for i, m in enumerate(messages):
        if m.get("role") == "assistant":
            for c in m.get("tool_calls") or []:
                names[c.get("id")] = (c.get("function") or {}).get("name")
        elif m.get("role") == "tool" and names.get(m.get("tool_call_id")) == WEB_SEARCH:
            try:
                args = json.loads(m.get("content") or "")
            except (TypeError, ValueError):
                args = None
            if not isinstance(args, Mapping):
                out[i] = (None, None)
                continue
            sid = (
                (args.get("search_result") or {}).get("search_id")
                if isinstance(args.get("search_result"), Mapping)
                else None
            )
            total = (args.get("usage") or {}).get("total_tokens") if isinstance(args.get("usage"), Mapping) else None
            ok = isinstance(total, int) and not isinstance(total, bool) and 0 <= total <= 10_000_000
            out[i] = (sid if isinstance(sid, str) else None, total if ok else None)
    return out
