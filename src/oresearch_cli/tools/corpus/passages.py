"""Splitting documents into passages for search (crawl keeps the whole document).

Passages follow the text's own structure: paragraphs are packed together up to `max_words`,
a longer paragraph is cut between sentences, and a sentence longer than that between words.

Chinese and Japanese write no spaces between words, so a whitespace "word" there may be a whole
paragraph. Such text is measured in characters instead: each Han or kana character weighs
`DENSE_CHAR_WEIGHT` of a word (a 120-word passage holds about 240 of them, roughly what an
English passage of 120 words says), its sentences end at 。！？； (no space needed after them), and a
sentence still too long is cut at ，、： then between characters. Pieces that had no space between
them are joined without one, so a passage is always the original text, whitespace runs aside.
Text without Han or kana is split exactly as before this existed (one whitespace word = one word).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from oresearch_cli.textutil.cjk import DENSE_CHAR

DEFAULT_PASSAGE_WORDS = 120
DENSE_CHAR_WEIGHT = 0.5

_PARAGRAPHS = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)]|#{1,6})\s)")
_SENTENCES = re.compile(r"(?<=[.!?。])\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")
# Between two whitespace words: the previous ends a sentence and the next starts one.
_SENTENCE_END = re.compile(r"[.!?。]$")
_SENTENCE_START = re.compile(r"^[\"'(\[]?[A-Z0-9À-Ý]")
# Inside a run of Chinese/Japanese: after a sentence end (and any closing quotes/brackets) ...
_DENSE_SENTENCE = re.compile(r"(?<=[。！？；!?;])(?![。！？；!?;」』”’）)\]])|(?<=[。！？；][」』”’）)\]])")
# ... and, for an over-long sentence, after a clause mark.
_DENSE_CLAUSE = re.compile(r"(?<=[，、：,:])")
_NON_DENSE_WORD = re.compile(r"[^\W_]+")


class _Piece(NamedTuple):
    text: str
    weight: float
    spaced: bool  # whitespace came before it in the text


def _weight(text: str) -> float:
    dense = len(DENSE_CHAR.findall(text))
    if not dense:
        return 1.0
    # Latin words and digits mixed in count as words.
    return dense * DENSE_CHAR_WEIGHT + len(_NON_DENSE_WORD.findall(DENSE_CHAR.sub(" ", text)))


def _hard_cut(text: str, max_words: int) -> list[str]:
    """Consecutive slices of `text` weighing at most `max_words` each."""
    parts: list[str] = []
    start, total = 0, 0.0
    for i, ch in enumerate(text):
        w = DENSE_CHAR_WEIGHT if DENSE_CHAR.match(ch) else 0.25
        if total + w > max_words and i > start:
            parts.append(text[start:i])
            start, total = i, 0.0
        total += w
    parts.append(text[start:])
    return parts


def _pieces(word: str, max_words: int) -> list[_Piece]:
    """A whitespace word as pieces: itself, or its sentences (then clauses, then slices) when it
    holds Chinese/Japanese text."""
    if not DENSE_CHAR.search(word):
        return [_Piece(word, 1.0, True)]
    out: list[_Piece] = []
    for sentence in filter(None, _DENSE_SENTENCE.split(word)):
        if _weight(sentence) <= max_words:
            parts = [sentence]
        else:
            parts = [
                cut
                for clause in filter(None, _DENSE_CLAUSE.split(sentence))
                for cut in (_hard_cut(clause, max_words) if _weight(clause) > max_words else [clause])
            ]
        out += [_Piece(part, _weight(part), False) for part in parts]
    return [out[0]._replace(spaced=True), *out[1:]]


def _chunks(pieces: list[_Piece], max_words: int) -> list[list[_Piece]]:
    """Consecutive runs of `pieces` weighing at most `max_words` (a heavier piece alone)."""
    chunks: list[list[_Piece]] = []
    current: list[_Piece] = []
    total = 0.0
    for piece in pieces:
        if current and total + piece.weight > max_words:
            chunks.append(current)
            current, total = [], 0.0
        current.append(piece)
        total += piece.weight
    if current:
        chunks.append(current)
    return chunks


def _dense_units(paragraph: str, max_words: int) -> list[list[_Piece]]:
    pieces = [p for word in paragraph.split() for p in _pieces(word, max_words)]
    if not pieces:
        return []
    if sum(p.weight for p in pieces) <= max_words:
        return [pieces]
    sentences: list[list[_Piece]] = [[pieces[0]]]
    for prev, piece in zip(pieces, pieces[1:], strict=False):
        ends = not piece.spaced or (
            _SENTENCE_END.search(prev.text) is not None and _SENTENCE_START.match(piece.text) is not None
        )
        if ends:
            sentences.append([piece])
        else:
            sentences[-1].append(piece)
    return [chunk for sentence in sentences for chunk in _chunks(sentence, max_words)]


def _units(text: str, max_words: int) -> list[list[_Piece]]:
    """Piece lists no heavier than `max_words`: paragraphs, else sentences, else word windows."""
    units: list[list[_Piece]] = []
    for paragraph in _PARAGRAPHS.split(text):
        if DENSE_CHAR.search(paragraph):
            units += _dense_units(paragraph, max_words)
            continue
        words = paragraph.split()
        if not words:
            continue
        if len(words) <= max_words:
            units.append([_Piece(w, 1.0, True) for w in words])
            continue
        for sentence in _SENTENCES.split(paragraph):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                if chunk := words[start : start + max_words]:
                    units.append([_Piece(w, 1.0, True) for w in chunk])
    return units


def _join(pieces: list[_Piece]) -> str:
    return "".join((" " if p.spaced and i else "") + p.text for i, p in enumerate(pieces))


def split_passages(text: str, max_words: int = DEFAULT_PASSAGE_WORDS) -> list[str]:
    """Passages of at most `max_words` words (whitespace-separated; Han and kana characters
    weigh `DENSE_CHAR_WEIGHT` each), covering all of `text`.

    Small neighbouring units are packed together; a final passage lighter than a quarter of
    `max_words` is merged into the previous one when that stays under 1.25x `max_words`."""
    max_words = max(8, max_words)
    passages: list[list[_Piece]] = []
    weights: list[float] = []
    current: list[_Piece] = []
    weight = 0.0
    for unit in _units(text, max_words):
        unit_weight = sum(p.weight for p in unit)
        if current and weight + unit_weight > max_words:
            passages.append(current)
            weights.append(weight)
            current, weight = [], 0.0
        current.extend(unit)
        weight += unit_weight
    if current:
        if passages and weight < max_words // 4 and weights[-1] + weight <= max_words * 1.25:
            passages[-1].extend(current)
        else:
            passages.append(current)
    return [_join(pieces) for pieces in passages]
