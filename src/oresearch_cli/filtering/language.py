"""Language tags for a batch of texts at once, equal to `oresearch_cli.textutil.detect_language`
on each, several times faster on report-length texts.

Why: py3langid walks its byte automaton in a Python loop, one byte of one text at a time, and
scores each text with a float16 matrix product (slow in numpy); on 2 KB report samples that was
a third of the hard rules' time. Here the automaton steps every text of the batch together (one
numpy gather per byte position), feature counts come from one sort, and scores use a float32
copy of the model. Same model, same features, same decision rule: only the arithmetic is batched.

The script rules of `detect_language` (kana -> ja, Hangul/Han shares -> ko/zh, nothing to judge
-> und) are applied first, with its own patterns. If py3langid's model arrays are not where this
expects them (another py3langid version), or a check on probe texts at first use disagrees with
`py3langid.classify`, every text goes through `detect_language` instead: slower, never different.

What a report's language is judged on (`report_sample`: its body's prose, links and URLs aside) and
how tags compare (`primary_language`: `zh-CN` is `zh`) live here too, so the filter, the rule
metrics of `ores eval score` and synth's own check of model pieces (`agent.pieces.written_in`)
agree on what a Chinese report is.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from oresearch_cli.textutil import detect_language
from oresearch_cli.textutil import lang as _lang
from oresearch_cli.trace.urls import MARKDOWN_LINK_RE, URL_RE

_ASCII_WORD = re.compile(r"[A-Za-z]")  # `_lang._LETTER` on ASCII text
# Texts stepped together, sorted by length so little of the matrix is padding. Each step costs a
# few numpy calls whatever the batch, so a filter chunk (200 texts) goes in one: a fifth faster
# than 128 at a time; much bigger batches outgrow the caches.
BATCH = 256

_PROBES = (
    "The light-dependent reactions take place on the thylakoid membranes of chloroplasts.",
    "Les réactions photochimiques se déroulent dans les membranes des thylakoïdes du chloroplaste.",
    "Die Lichtreaktionen finden an den Thylakoidmembranen der Chloroplasten statt.",
    "Las reacciones dependientes de la luz ocurren en las membranas de los tilacoides.",
    "Световые реакции фотосинтеза происходят на мембранах тилакоидов хлоропластов.",
    "AN ALL CAPS SENTENCE ABOUT PHOTOSYNTHESIS AND THE CALVIN CYCLE.",
    "12 345 67.8 %",
)


def primary_language(code: str | None) -> str:
    """A language tag's primary subtag, lower-cased: `zh-CN`, `zh_Hans` and `ZH` are all `zh`;
    '' for none. Seeds carry whatever tag their source used; detection gives bare ISO 639-1 codes."""
    return (code or "").strip().lower().replace("_", "-").split("-")[0]


def prose(text: str) -> str:
    """`text` as its language is judged: URLs and Markdown link targets removed.

    A Chinese report that links its English sources (`[Giant Panda Survey](https://...)`) or names
    URLs inline is still Chinese: their Latin letters would otherwise outweigh the Han characters
    that the script rule counts. A link's text stays when it holds Han characters (then it is part
    of the sentence), else it goes too (an English source title)."""
    text = MARKDOWN_LINK_RE.sub(lambda m: m["title"] if _lang._HAN.search(m["title"]) else " ", text)
    return URL_RE.sub(" ", text)


SAMPLE_CHARS = 2000  # of a report body's prose, whose language is compared with the question's


def report_sample(report: str, references_span: tuple[int, int] | None) -> str:
    """What a report's language is judged on: the prose (`prose`) of its body before the reference
    list, its first `SAMPLE_CHARS` characters. The filter's language rule, the rule metrics of
    `ores eval score` and synth's check of a summarizer's report all judge this same text."""
    end = references_span[0] if references_span else len(report)
    # A window of the body, not all of it: links are long, prose rarely a quarter of the text.
    return prose(report[: min(end, 4 * SAMPLE_CHARS)])[:SAMPLE_CHARS]


def script_language(text: str) -> str | None:
    """The answer of `detect_language`'s script rules, or None where its statistical model decides."""
    if text.isascii():  # no kana, Hangul or Han: only "is there a letter at all" is left
        return None if _ASCII_WORD.search(text) else "und"
    letters = len(_lang._LETTER.findall(text))
    if letters == 0:
        return "und"
    if _lang._KANA.search(text):
        return "ja"
    if len(_lang._HANGUL.findall(text)) / letters > 0.2:
        return "ko"
    if len(_lang._HAN.findall(text)) / letters > 0.2:
        return "zh"
    return None


class _BatchModel:
    """py3langid's model as numpy arrays, for stepping many texts at once."""

    def __init__(self) -> None:
        import numpy as np
        import py3langid.langid as langid

        ident = _lang.identifier()
        self.np = np
        self.identifier = ident
        self.floor = float(langid.RAW_FLOOR)
        self.nextmove = np.asarray(ident.tk_nextmove)  # a view of py3langid's array: no copy
        self.rowbase = np.asarray(ident._rowbase, dtype=np.intp)
        self.output = np.asarray(ident.tk_output, dtype=np.intp)
        self.n_features = int(self.output.max()) + 1
        self.ptc = np.ascontiguousarray(ident.nb_ptc, dtype=np.float32)
        self.pc = np.asarray(ident.nb_pc)
        self.classes = list(ident.nb_classes)
        self.aliases = list(ident._alias_pairs)
        if getattr(ident, "_norm_probs", False) or getattr(ident, "min_confidence", None) is not None:
            raise AttributeError("a normalized identifier is not supported")

    def classify(self, texts: Sequence[str]) -> list[str]:
        data = [self.identifier._encode(t) for t in texts]
        order = sorted(range(len(data)), key=lambda i: len(data[i]))
        labels: list[str] = [""] * len(data)
        for start in range(0, len(order), BATCH):
            part = order[start : start + BATCH]
            for index, label in zip(part, self._classify([data[i] for i in part]), strict=True):
                labels[index] = label
        return labels

    def _classify(self, data: list[bytes]) -> list[str]:
        np = self.np
        n = len(data)
        lengths = np.fromiter(map(len, data), dtype=np.intp, count=n)
        width = int(lengths.max()) if n else 0
        padded = np.zeros((n, width), dtype=np.uint8)
        for i, raw in enumerate(data):
            padded[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        columns = np.ascontiguousarray(padded.T).astype(np.intp)  # one contiguous row per position
        states = np.empty((width, n), dtype=np.intp)
        state = np.zeros(n, dtype=np.intp)
        nextmove, rowbase = self.nextmove, self.rowbase
        for position in range(width):
            state = nextmove[rowbase[state] + columns[position]]
            states[position] = state
        features = self.output[states.T]  # (n, width): feature of each visited state, -1 for none
        features[np.arange(width)[None, :] >= lengths[:, None]] = -1  # padding past each text
        found = features >= 0
        rows = np.nonzero(found)[0]  # row-major, as features[found] lists them
        # (text, feature) keys, counted by a sort: int32 where they fit, as that sorts about twice
        # as fast; the same keys and counts as np.unique would give.
        key_type = np.int32 if n * self.n_features < 2**31 else np.int64
        keys = rows.astype(key_type) * key_type(self.n_features) + features[found].astype(key_type)
        keys.sort()
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else rows[:0]
        counts = np.diff(np.append(starts, len(keys)))
        text_of, feature = np.divmod(keys[starts], self.n_features)
        bounds = np.searchsorted(text_of, np.arange(n + 1))
        weights = np.log1p(counts.astype(np.float32))
        scores = np.empty((n, len(self.classes)), dtype=np.float32)
        for i in range(n):
            a, b = bounds[i], bounds[i + 1]
            if a == b:  # no features: py3langid fills every score with its floor; argmax is 0
                scores[i] = self.floor
            else:
                # take() gathers the same rows as fancy indexing, faster; the product is unchanged.
                scores[i] = weights[a:b] @ self.ptc.take(feature[a:b], axis=0) + self.pc
        for first, dupe in self.aliases:  # per column for all texts: what max() did per text
            np.maximum(scores[:, first], scores[:, dupe], out=scores[:, first])
            scores[:, dupe] = self.floor
        return [str(self.classes[i]) for i in scores.argmax(axis=1)]


_MODEL: _BatchModel | None | bool = None  # False: unavailable, use the per-text function
_LOCK = threading.Lock()


def _model() -> _BatchModel | None:
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            try:
                import py3langid

                model = _BatchModel()
                if model.classify(_PROBES) != [str(py3langid.classify(p)[0]) for p in _PROBES]:
                    raise ValueError("batched scores disagree with py3langid")
                _MODEL = model
            except (ImportError, AttributeError, ValueError, TypeError):
                _MODEL = False
        return _MODEL if isinstance(_MODEL, _BatchModel) else None


def detect_languages(texts: Sequence[str]) -> list[str]:
    """`[detect_language(t) for t in texts]`, the statistical part batched."""
    labels: list[str | None] = [script_language(t) for t in texts]
    todo = [i for i, label in enumerate(labels) if label is None]
    if todo:
        model = _model() if len(todo) > 1 else None
        if model is None:
            for i in todo:
                labels[i] = detect_language(texts[i])
        else:
            for i, label in zip(todo, model.classify([texts[i] for i in todo]), strict=True):
                labels[i] = label
    return [str(label) for label in labels]


def batch_available() -> bool:
    """Whether the batched path is in use (False: py3langid's internals differ; per-text fallback)."""
    return _model() is not None
