"""Token estimates without a tokenizer: what the filter's length rule counts when no tokenizer is
named, and what the LLM client budgets tokens-per-minute with before a reply says the real count."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # the chat template's role markers around each message
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """About what a BPE tokenizer gives: 4 Latin characters per token, about 1 token per CJK character."""
    if not text:
        return 0
    if text.isascii():
        return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_message_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    """A chat prompt's size: its text (string contents and text parts) plus a few per message."""
    texts: list[str] = []
    count = 0
    for message in messages:
        count += 1
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):  # content parts
            texts += [p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
    return estimate_tokens("".join(texts)) + TOKENS_PER_MESSAGE * count
