"""Exact Kimi token counts offline: the K2.x tokenizer and the chat template's per-message tokens."""

from kimiplan.tokens.tokenizer import (  # noqa: F401
    DEFAULT_TEMPLATE,
    SPECIAL_IDS,
    ChatTemplate,
    count_messages,
    count_text,
    count_tokens,
    get_tokenizer,
    template_tokens,
)
