"""Probability-weighted judge scores from token log probs (G-Eval style): pure arithmetic.

A judge that writes "Clarity: 7" also had a distribution over what it could have written there:
maybe 7 with p=0.6, 8 with 0.3, 6 with 0.1. The weighted score sum(p(s) * s) / sum(p(s)) over the
integers s in 0..10 (6.8 here) ties less often and varies less between runs than the 7 alone
(Liu et al. 2023, G-Eval). It needs the endpoint's top log probs at the position where the score
is written; many endpoints send none, and then the caller keeps the plain integer.

    tokens = parse_logprobs(choice["logprobs"])          # the reply's tokens, with alternatives
    weighted_score(tokens, reply_text, offset_of_the_7)  # 6.8, or None when it cannot be read

Finding the score's token: the tokens' texts (or bytes, where the endpoint sends them) are laid
end to end and the character offset of the score's first digit in the reply text is looked up in
them. They usually spell the reply exactly (or run on past it, when a stop string cut the text);
when they do not (a multi-byte character split over tokens, a special token's text), the text is
aligned to them by longest matching blocks, and a score outside the aligned parts has no token.

Tokenizers differ in how they write a number. One whose tokens hold whole numbers (OpenAI's: "10"
is one token) gives each alternative's value directly. One that splits digits (Llama, SmolLM2:
"10" is "1", "0") leaves "1" ambiguous between 1 and 10; when the judge wrote a "1" there, the
next position's distribution settles it: p(10) = p("1") * p("0" next) and p(1) = p("1") * p(no
digit next) (a "1" followed by another digit would be 11-19, not a score, and drops out). When
it wrote another digit, what would have followed a "1" is unknown and the "1" counts as 1.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOW, HIGH = 0, 10
_INTEGER = re.compile(r"\s*(\d{1,2})\s*")


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log probability, its bytes (None when the endpoint sent
    none or they are not a whole character), and the most likely tokens at its position as
    (text, log probability), best first (the token itself may or may not be among them)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    bytes: bytes | None = None


def _bytes(value: Any) -> bytes | None:
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if not math.isnan(value) else None


def parse_logprobs(data: Any) -> tuple[TokenLogprob, ...] | None:
    """The tokens of an OpenAI chat completion's `choices[0].logprobs` ({"content": [{"token",
    "logprob", "bytes", "top_logprobs": [...]}, ...]}); None when it holds none (the endpoint sent
    no log probs). An entry without a readable token or log prob ends the list there: positions
    after a gap could not be trusted."""
    if not isinstance(data, Mapping):
        return None
    content = data.get("content")
    if not isinstance(content, list) or not content:
        return None
    tokens: list[TokenLogprob] = []
    for entry in content:
        if not isinstance(entry, Mapping):
            break
        token, logprob = entry.get("token"), _number(entry.get("logprob"))
        if not isinstance(token, str) or logprob is None:
            break
        top: list[tuple[str, float]] = []
        for alt in entry.get("top_logprobs") or ():
            if isinstance(alt, Mapping) and isinstance(alt.get("token"), str):
                alt_logprob = _number(alt.get("logprob"))
                if alt_logprob is not None:
                    top.append((alt["token"], alt_logprob))
        tokens.append(TokenLogprob(token, logprob, tuple(top), _bytes(entry.get("bytes"))))
    return tuple(tokens) or None


# --- finding the token at a place in the text ---------------------------------------------------


def _spans(pieces: Sequence[str | bytes]) -> list[tuple[int, int]]:
    spans, at = [], 0
    for piece in pieces:
        spans.append((at, at + len(piece)))
        at += len(piece)
    return spans


def _find(spans: list[tuple[int, int]], at: int) -> int | None:
    for i, (start, end) in enumerate(spans):
        if start <= at < end:
            return i
    return None


def token_at(tokens: Sequence[TokenLogprob], text: str, offset: int) -> tuple[int, int] | None:
    """(index of the token holding character `offset` of `text`, where in that token's text the
    character is), or None when no token can be said to hold it."""
    if not 0 <= offset < len(text) or not tokens:
        return None
    if all(t.bytes is not None for t in tokens):
        pieces = [t.bytes or b"" for t in tokens]
        joined_bytes, text_bytes = b"".join(pieces), text.encode("utf-8")
        if joined_bytes.startswith(text_bytes):
            at = len(text[:offset].encode("utf-8"))
            spans = _spans(pieces)
            index = _find(spans, at)
            if index is None:
                return None
            # the offset inside the token's text: its bytes before `at`, as characters
            inside = pieces[index][: at - spans[index][0]].decode("utf-8", errors="replace")
            return index, len(inside)
    strings = [t.token for t in tokens]
    joined = "".join(strings)
    spans = _spans(strings)
    if joined.startswith(text):
        index = _find(spans, offset)
        return None if index is None else (index, offset - spans[index][0])
    # the tokens' texts differ from the reply here and there: align them
    matcher = difflib.SequenceMatcher(None, text, joined, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        if a <= offset < a + size:
            mapped = b + offset - a
            index = _find(spans, mapped)
            return None if index is None else (index, mapped - spans[index][0])
    return None


# --- the weighted score -------------------------------------------------------------------------


def _alternatives(token: TokenLogprob) -> dict[str, float]:
    """Probability of each token text at this position, the chosen token's included when the
    top list left it out (sampled from the tail); two tokens with one text are two ways of
    writing it, so their probabilities add up."""
    found: dict[str, float] = {}
    for text, logprob in token.top:
        found[text] = found.get(text, 0.0) + math.exp(logprob)
    if token.token not in found:
        found[token.token] = math.exp(token.logprob)
    return found


def _digit_after_one(next_token: TokenLogprob | None) -> tuple[float, float] | None:
    """(p of "0" next, p of no digit next) at the position after a written "1"; None if unknown."""
    if next_token is None:
        return None
    zero = other_digits = 0.0
    for text, p in _alternatives(next_token).items():
        if text == "0":
            zero += p
        elif text[:1].isdigit():
            other_digits += p
    return zero, max(0.0, 1.0 - zero - other_digits)


def score_distribution(
    tokens: Sequence[TokenLogprob], index: int, *, low: int = LOW, high: int = HIGH
) -> dict[int, float]:
    """The judge's probabilities of the integer scores low..high at `tokens[index]`, the token
    where a score's first digit was written, renormalized over those scores (empty when none of
    the alternatives is one). See the module notes for digit-split tokenizers."""
    token = tokens[index]
    written = token.token.strip()
    next_token = tokens[index + 1] if index + 1 < len(tokens) else None
    after_one = _digit_after_one(next_token) if written == "1" else None
    mass: dict[int, float] = {}
    for text, p in _alternatives(token).items():
        match = _INTEGER.fullmatch(text)
        if match is None:
            continue
        value = int(match.group(1))
        if match.group(1) == "1" and after_one is not None:
            p_ten, p_one = after_one
            if low <= 10 <= high:
                mass[10] = mass.get(10, 0.0) + p * p_ten
            if low <= 1 <= high:
                mass[1] = mass.get(1, 0.0) + p * p_one
        elif low <= value <= high:
            mass[value] = mass.get(value, 0.0) + p
    total = sum(mass.values())
    if total <= 0:
        return {}
    return {value: p / total for value, p in sorted(mass.items())}


def expected_score(distribution: Mapping[int, float]) -> float | None:
    """sum(p(s) * s) / sum(p(s)); None for an empty distribution."""
    total = sum(distribution.values())
    if total <= 0:
        return None
    return sum(s * p for s, p in distribution.items()) / total


def weighted_score(
    tokens: Sequence[TokenLogprob] | None,
    text: str,
    offset: int,
    number: str | None = None,
    *,
    low: int = LOW,
    high: int = HIGH,
) -> float | None:
    """The probability-weighted score written at character `offset` of `text` (the reply), or
    None when it cannot be read from `tokens`: no log probs, no token found there, a token that
    does not start the number (`number`, the score as written, default: the digits at `offset`),
    or no integer low..high among the alternatives."""
    if not tokens:
        return None
    if number is None:
        digits = re.match(r"\d+", text[offset:])
        if digits is None:
            return None
        number = digits.group(0)
    found = token_at(tokens, text, offset)
    if found is None:
        return None
    index, inside = found
    token = tokens[index].token
    before, written = token[:inside], token[inside:].rstrip()
    # the token may carry leading space (" 7"); the number must start in it and not be run into
    # by other characters ("x7"), and what it holds of the number must be the number's start
    if before.strip() or not written or not number.startswith(written):
        return None
    return expected_score(score_distribution(tokens, index, low=low, high=high))
