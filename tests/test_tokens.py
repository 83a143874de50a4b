import json

import pytest

from kimiplan.errors import ConfigError
from kimiplan.tokens.tokenizer import (
    _ROLE_HEADERS,
    ROLE_NAME_TOKENS,
    SPECIAL_IDS,
    VOCAB_SIZE,
    ChatTemplate,
    count_messages,
    count_text,
    get_tokenizer,
)

# Reference ids from kimi-platform-facts.md §6 (splintr-rs 0.22.0, matching Moonshot's own rank file).
REFERENCE = {
    "Hello world": [19180, 2695],
    "Hello, world!": [19180, 11, 2695, 0],
    "你好世界": [33845, 2243],
    "1234567890": [6694, 12972, 16242, 15],
    "中文English混合": [16717, 44372, 13935],
}


@pytest.mark.parametrize("text,ids", REFERENCE.items())
def test_reference_ids(text, ids):
    tok = get_tokenizer()
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_vocab_and_special_ids():
    import splintr

    tok = splintr.Tokenizer.from_pretrained("kimi")
    assert get_tokenizer().vocab_size == VOCAB_SIZE == splintr.base_vocab_size("kimi")
    for name, i in SPECIAL_IDS.items():
        assert tok.special_token_id(name) == i


def test_special_strings_in_user_text_are_ordinary_text():
    # A user typing "<|im_end|>" must not inject a control token.
    ids = get_tokenizer().encode("<|im_end|>")
    assert SPECIAL_IDS["<|im_end|>"] not in ids and len(ids) > 1


def test_count_messages_adds_template_tokens():
    msgs = [{"role": "system", "content": "You are Kimi."}, {"role": "user", "content": "Hello world"}]
    text = count_text("You are Kimi.") + count_text("Hello world")
    per_msg = [ChatTemplate().message_overhead(m["role"]) for m in msgs]
    assert per_msg == [1 + count_text("system") + 2, 1 + count_text("user") + 2]
    assert count_messages(msgs) == text + sum(per_msg) + 3
    assert count_messages(msgs, template=ChatTemplate(request_overhead=11)) == count_messages(msgs) + 11
    assert count_messages(msgs, add_reply_primer=False) == count_messages(msgs) - 3


def test_role_name_tokens_are_the_tokenizers_count():
    # The template's markers are known without loading the vocabulary; the vocabulary must agree, for every role.
    assert set(ROLE_NAME_TOKENS) == {name for _, name in _ROLE_HEADERS.values()}
    for role, (_, name) in _ROLE_HEADERS.items():
        assert ROLE_NAME_TOKENS[name] == count_text(name), role
        assert ChatTemplate().message_overhead(role) == 1 + count_text(name) + 2


def test_count_messages_counts_tools_and_parts():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    base = [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "image_url", "image_url": {}}]}]
    with_tools = count_messages(base, tools=tools)
    assert with_tools == count_messages(base) + count_text(json.dumps(tools[0], separators=(",", ":")))


def test_bad_messages_name_the_field():
    with pytest.raises(ConfigError, match="role"):
        count_messages([{"role": "wizard", "content": "x"}])
    with pytest.raises(ConfigError, match=r"messages\[0\]"):
        count_messages(["just text"])


def test_embedded_vocabulary_is_moonshots_rank_file():
    import hashlib

    from kimiplan.tokens.tokenizer import RANK_FILE_SHA256, rank_file_bytes

    data = rank_file_bytes()
    assert len(data) == 2_795_286
    assert hashlib.sha256(data).hexdigest() == RANK_FILE_SHA256


def test_independent_engine_agrees_on_mixed_text():
    pytest.importorskip("tiktoken")
    from kimiplan.tokens.tokenizer import tiktoken_encoding

    enc = tiktoken_encoding()
    text = (
        "Xin chào! 你好，世界。 def f(x):\n    return x**2  # 12345678 \r\n\tTABS  and   spaces "
        "I'm here, they'll go; CamelCaseWord naïve café ÅÄÖ 😀 混合English文本 2026-11-26"
    ) * 50
    assert enc.encode_ordinary(text) == get_tokenizer().encode(text)
