"""Exact Kimi K2.x token counts, offline.

Kimi K2, K2.5, K2.6 (and K2.7/K3) share one tiktoken-format BPE: 163,584 ranks plus 256 special tokens
(163,840 ids) and a pre-tokenizer pattern of its own. `splintr-rs` ships Moonshot's vocabulary inside its
wheel, so counting needs no network. Chat requests add the chat template's per-message tokens
(`<|im_system|>system<|im_middle|> ... <|im_end|>`), modelled by `ChatTemplate`, whose constant part is a
parameter that calibration fits against the `prompt_tokens` the API reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from kimiplan.errors import ConfigError

VOCAB_SIZE = 163_840
#: sha256 of Moonshot's `tiktoken.model` rank file (kimi-platform-facts.md §6); splintr-rs 0.22.0 embeds these ranks.
RANK_FILE_SHA256 = "b6c497a7469b33ced9c38afb1ad6e47f03f5e5dc05f15930799210ec050c5103"

SPECIAL_IDS = {
    "[BOS]": 163584,
    "[EOS]": 163585,
    "<|im_end|>": 163586,
    "<|im_user|>": 163587,
    "<|im_assistant|>": 163588,
    "[EOT]": 163593,
    "<|im_system|>": 163594,
    "<|im_middle|>": 163601,
}

# Role -> (start special token, role name as rendered by Kimi's chat template).
_ROLE_HEADERS = {
    "system": ("<|im_system|>", "system"),
    "user": ("<|im_user|>", "user"),
    "assistant": ("<|im_assistant|>", "assistant"),
    "tool": ("<|im_system|>", "tool"),
}
# Tokens of each role name in Kimi's vocabulary (one each), so that the template's markers (all a plan needs from
# the tokenizer) are known without loading its 163,840-token vocabulary; tests/test_tokens.py counts them again.
ROLE_NAME_TOKENS = {"system": 1, "user": 1, "assistant": 1, "tool": 1}


@lru_cache(maxsize=1)
def _splintr():
    try:
        import splintr
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise ConfigError("the exact Kimi tokenizer needs the package splintr-rs (pip install splintr-rs)") from exc
    return splintr.Tokenizer.from_pretrained("kimi")


class KimiTokenizer:
    """Thin wrapper over splintr's Kimi tokenizer: encode, decode and count ordinary text."""

    name = "kimi"

    def __init__(self) -> None:
        self._tok = _splintr()

    @property
    def vocab_size(self) -> int:
        # Kimi's own vocabulary; splintr appends extra agent tokens above it, which Kimi never emits.
        import splintr

        return int(splintr.base_vocab_size("kimi"))

    def encode(self, text: str) -> list[int]:
        # Ordinary text only: special-token strings in user text must not become control tokens.
        return list(
            self._tok.encode_ordinary(text) if hasattr(self._tok, "encode_ordinary") else self._tok.encode(text)
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids))

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_many(self, texts: Iterable[str]) -> list[int]:
        texts = list(texts)
        if not texts:
            return []
        return [len(ids) for ids in self._tok.encode_batch(texts)]


@lru_cache(maxsize=1)
def get_tokenizer() -> KimiTokenizer:
    return KimiTokenizer()


def count_text(text: str) -> int:
    """Tokens of plain text (no chat template)."""
    if not isinstance(text, str):
        raise ConfigError(f"text must be a string, got {type(text).__name__}")
    return get_tokenizer().count(text)


def count_tokens(text_or_messages: str | Sequence[Mapping[str, Any]], **kwargs: Any) -> int:
    """Tokens of a text, or prompt tokens of a list of chat messages (template included; see `count_messages`)."""
    if isinstance(text_or_messages, str):
        if kwargs:
            raise ConfigError(f"count_tokens of a text takes no options, got {sorted(kwargs)}")
        return count_text(text_or_messages)
    return count_messages(text_or_messages, **kwargs)


@dataclass(frozen=True)
class ChatTemplate:
    """Tokens the chat template adds around messages.

    Each message is rendered `<role-start>role<|im_middle|>content<|im_end|>`: the role start, the role
    name, `<|im_middle|>` and `<|im_end|>` (4 tokens for system/user/tool, 4 for assistant). The reply
    primer `<|im_assistant|>assistant<|im_middle|>` adds 3. `request_overhead` is what the server adds that
    we cannot see (an injected default system prompt, thinking markers); it starts at 0 and calibration
    fits it as `prompt_tokens - local count`.
    """

    reply_primer: int = 3
    request_overhead: int = 0
    per_tool_overhead: int = 0
    role_tokens: Mapping[str, int] = field(default_factory=dict)

    def message_overhead(self, role: str) -> int:
        if role in self.role_tokens:
            return int(self.role_tokens[role])
        if role not in _ROLE_HEADERS:
            raise ConfigError(f"messages[].role must be one of {sorted(_ROLE_HEADERS)}, got {role!r}")
        _, name = _ROLE_HEADERS[role]
        # start special + role name + <|im_middle|> + <|im_end|>
        return 1 + ROLE_NAME_TOKENS[name] + 1 + 1

    def with_overhead(self, request_overhead: int) -> ChatTemplate:
        return ChatTemplate(self.reply_primer, int(request_overhead), self.per_tool_overhead, dict(self.role_tokens))


DEFAULT_TEMPLATE = ChatTemplate()


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts; only text parts are counted here
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    raise ConfigError(f"messages[].content must be a string or a list of parts, got {type(content).__name__}")


def count_message_text(
    messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None
) -> int:
    """Tokens of the messages' text alone (content, reasoning, tool calls, tool schemas): no template markers,
    no reply primer. A route's components are counted this way; `prompt_tokens` minus this is the overhead."""
    bare = ChatTemplate(reply_primer=0, role_tokens={r: 0 for r in _ROLE_HEADERS})
    return count_messages(messages, tools=tools, template=bare)


def template_tokens(n_system, n_turns, n_user: int = 1, template: ChatTemplate = DEFAULT_TEMPLATE):
    """Markers the chat template adds to a request of `n_system` system messages, `n_turns` earlier
    user/assistant exchanges and `n_user` new user messages, plus the reply primer (numpy arrays broadcast)."""
    return (
        n_system * template.message_overhead("system")
        + n_turns * (template.message_overhead("user") + template.message_overhead("assistant"))
        + n_user * template.message_overhead("user")
        + template.reply_primer
    )


def reasoning_read(messages: Sequence[Mapping[str, Any]], keep: str | None = None) -> list[bool]:
    """Which messages' `reasoning_content` Kimi reads (and bills as input): Kimi's `thinking.keep` rule.

    `keep=None` (K2.6's default): "the server ignores reasoning_content from historical turns", i.e. from
    assistant messages before the last user message; within the current turn (the assistant -> tool ->
    assistant steps after it) reasoning must be sent back and is read. `keep="all"` (Preserved Thinking): every
    message's reasoning is read and "billed as input". Sources: the OpenAPI `thinking.keep` field and the K2.6
    quickstart (kimi-platform-facts.md §3); forum.moonshot.ai thread #602 quoting the field reference."""
    msgs = [m if isinstance(m, Mapping) else {} for m in messages]
    if keep == "all":
        return [bool(m.get("reasoning_content")) for m in msgs]
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
    return [i > last_user and bool(m.get("reasoning_content")) for i, m in enumerate(msgs)]


def count_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    template: ChatTemplate = DEFAULT_TEMPLATE,
    add_reply_primer: bool = True,
    keep: str | None = None,
) -> int:
    """Prompt tokens of a chat request as Kimi counts them (text + template), up to `template.request_overhead`.

    Reasoning sent back counts as `reasoning_read` says for the request's `thinking.keep`."""
    tok = get_tokenizer()
    total = template.request_overhead
    read = reasoning_read(messages, keep)
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg:
            raise ConfigError(f"messages[{i}] must be an object with a 'role', got {msg!r:.80}")
        role = msg["role"]
        total += template.message_overhead(role)
        total += tok.count(_content_text(msg.get("content")))
        if read[i]:
            total += tok.count(str(msg["reasoning_content"]))
        for call in msg.get("tool_calls") or []:
            fn = call.get("function", {})
            total += tok.count(str(fn.get("name", ""))) + tok.count(str(fn.get("arguments", "")))
    if tools:
        for t in tools:
            total += tok.count(json.dumps(t, ensure_ascii=False, separators=(",", ":"))) + template.per_tool_overhead
    if add_reply_primer:
        total += template.reply_primer
    return total


def rank_file_bytes() -> bytes:
    """Moonshot's `tiktoken.model` rebuilt from the ranks embedded in splintr (base64 token, space, rank).

    Its sha256 must equal RANK_FILE_SHA256: that is how we know the offline vocabulary is Moonshot's."""
    import base64

    tok = _splintr()
    n = VOCAB_SIZE - 256  # 163,584 mergeable ranks; the last 256 ids are special tokens
    return b"".join(base64.b64encode(tok.decode_token_bytes(i)) + b" " + str(i).encode() + b"\n" for i in range(n))


def tiktoken_encoding():
    """The same tokenizer as a `tiktoken.Encoding` (Kimi's pattern and ranks): an independent engine, used to
    cross-check ids and as the benchmark's reference. Needs the optional package tiktoken."""
    import splintr
    import tiktoken

    tok = _splintr()
    ranks = {tok.decode_token_bytes(i): i for i in range(VOCAB_SIZE - 256)}
    return tiktoken.Encoding("kimi-k2", pat_str=splintr.KIMI_PATTERN, mergeable_ranks=ranks, special_tokens={})
