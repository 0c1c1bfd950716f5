"""Whitespace and Unicode normalization, and the key two texts share when they are 'the same'."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+", re.UNICODE)
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_whitespace(text: str) -> str:
    """NFC, every run of whitespace (ideographic spaces too) collapsed to one space, trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def dedup_key(text: str) -> str:
    """Case, width and punctuation folded away: 'What is X?' and 'what is x' share a key."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub(" ", folded).strip()
