"""Splitting documents into passages for search (crawl keeps the whole document).

Passages follow the text's own structure: paragraphs are packed together up to `max_words`,
a longer paragraph is cut between sentences, and a sentence longer than that between words.
"""

from __future__ import annotations

import re

DEFAULT_PASSAGE_WORDS = 120

_PARAGRAPHS = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)]|#{1,6})\s)")
_SENTENCES = re.compile(r"(?<=[.!?。])\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")


def _units(text: str, max_words: int) -> list[list[str]]:
    """Word lists no longer than `max_words`: paragraphs, else sentences, else word windows."""
    units: list[list[str]] = []
    for paragraph in _PARAGRAPHS.split(text):
        words = paragraph.split()
        if not words:
            continue
        if len(words) <= max_words:
            units.append(words)
            continue
        for sentence in _SENTENCES.split(paragraph):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                if chunk := words[start : start + max_words]:
                    units.append(chunk)
    return units


def split_passages(text: str, max_words: int = DEFAULT_PASSAGE_WORDS) -> list[str]:
    """Passages of at most `max_words` words (whitespace-separated), covering all of `text`.

    Small neighbouring units are packed together; a final passage shorter than a quarter of
    `max_words` is merged into the previous one when that stays under 1.25x `max_words`."""
    max_words = max(8, max_words)
    passages: list[list[str]] = []
    current: list[str] = []
    for unit in _units(text, max_words):
        if current and len(current) + len(unit) > max_words:
            passages.append(current)
            current = []
        current.extend(unit)
    if current:
        if (
            passages
            and len(current) < max_words // 4
            and len(passages[-1]) + len(current) <= max_words * 1.25
        ):
            passages[-1].extend(current)
        else:
            passages.append(current)
    return [" ".join(words) for words in passages]
