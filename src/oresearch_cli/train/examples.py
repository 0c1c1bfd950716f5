"""Traces as SFT examples: (system prompt + question) -> `render(trace)`, loss only on the model's text.

The target is cut into the spans of `trace.convert.trainable_spans` (what the model wrote) and
the observation blocks between them (what the environment wrote), and each span is tokenized on
its own: token boundaries then never straddle the model/environment boundary, so the trained
tokens are exactly the model's text, and the token layout is the one the single-model research
loop (`agent/single.py`) produces at inference, where generation stops at the closing tool tag
and the observation is tokenized alone. Labels are the ids on model spans and -100 on the prompt
and the observations. After the report comes the chat template's end of turn, trained too, so the
model learns to stop.

An example longer than `max_length` is dropped, or (`overlong="truncate"`) cut after the last
model span that fits: a step boundary, the end of a think->tool call turn. A cut example has no
end of turn (the model should not learn to stop there). Both outcomes are counted, never silent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from oresearch_cli.agent.generators import ChatTokenizer
from oresearch_cli.agent.protocol import messages as protocol_messages
from oresearch_cli.trace import parse, render, to_segments

IGNORE = -100
Overlong = Literal["drop", "truncate"]
_SENTINEL = "\u2063ores-end-of-turn\u2063"


@dataclass(frozen=True)
class TraceItem:
    """One trace to train on: its seed id, question, language and the trace text."""

    id: str
    question: str
    language: str | None
    trace: str


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]
    n_prompt: int
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass(frozen=True)
class Dropped:
    id: str
    reason: str  # "overlong", "prompt-overlong", "empty-trace"
    n_tokens: int = 0


class ChatFormat(ChatTokenizer):
    """A tokenizer used as the research loop uses it (`agent.generators.ChatTokenizer`: the chat
    template rendered as text, every segment encoded without special tokens), plus what training
    needs: the protocol prompt of a question and the text that ends an assistant turn
    (`<|im_end|>` for SmolLM2 and Qwen2)."""

    def __init__(self, tokenizer: Any, *, name: str = "tokenizer") -> None:
        super().__init__(tokenizer, name=name)
        self.end_of_turn = self._end_of_turn()
        self.end_ids = self.encode(self.end_of_turn) if self.end_of_turn else []

    def _end_of_turn(self) -> str:
        chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False)
        _, found, after = text.partition(_SENTINEL)
        # The end-of-turn marker without the newline templates add between turns.
        return after.rstrip() if found else ""

    def question_ids(self, question: str, language: str | None) -> list[int]:
        """The prompt of one episode: the protocol's system prompt and the question."""
        return self.prompt_ids(protocol_messages(question, language))

    def min_prompt_tokens(self, language: str | None = None) -> int:
        """The prompt of an empty question: what `max_length` must exceed before anything fits."""
        return len(self.question_ids("", language))


def segment_spans(trace_text: str) -> list[tuple[str, bool]]:
    """`render(parse(trace_text))` as (text, written by the model) spans, from `trainable_spans`'
    definition (`to_segments`): the one place that says what the model wrote."""
    return [(s.text, s.trainable) for s in to_segments(parse(trace_text))]


def build_example(
    fmt: ChatFormat, item: TraceItem, max_length: int, overlong: Overlong = "truncate"
) -> Example | Dropped:
    """The tokenized example of `item`, or why it was left out."""
    prompt = fmt.question_ids(item.question, item.language)
    if len(prompt) >= max_length:
        return Dropped(item.id, "prompt-overlong", len(prompt))
    spans = segment_spans(item.trace)
    if not any(trainable and text.strip() for text, trainable in spans):
        return Dropped(item.id, "empty-trace")
    input_ids = list(prompt)
    labels = [IGNORE] * len(prompt)
    fits_until = len(input_ids)  # the end of the last model span that fits
    for text, trainable in spans:
        ids = fmt.encode(text)
        input_ids += ids
        labels += ids if trainable else [IGNORE] * len(ids)
        if trainable and len(input_ids) <= max_length:
            fits_until = len(input_ids)
    input_ids += fmt.end_ids
    labels += fmt.end_ids
    if len(input_ids) <= max_length:
        return Example(item.id, input_ids, labels, len(prompt))
    if overlong == "drop" or fits_until == len(prompt):
        return Dropped(item.id, "overlong", len(input_ids))
    return Example(item.id, input_ids[:fits_until], labels[:fits_until], len(prompt), truncated=True)


def target_text(item: TraceItem) -> str:
    """The text the example trains toward: `render(trace)`, which its tokens decode back to."""
    return render(parse(item.trace))


# -- splitting ------------------------------------------------------------------------------------


def _question_key(item: TraceItem) -> str:
    from oresearch_cli.stages.seed import content_id

    return content_id(item.question)


@dataclass
class Split:
    train: list[TraceItem] = field(default_factory=list)
    eval: list[TraceItem] = field(default_factory=list)


def split_items(items: Sequence[TraceItem], eval_fraction: float) -> Split:
    """A held-out split by seed: every trace of one question (same seed id, or the same question
    under another id) goes to the same side, so no question leaks into training. Deterministic:
    the groups whose hash is smallest are held out, ceil(fraction x groups) of them, at least one
    when the fraction is above 0 and there are two groups or more."""
    groups: dict[str, list[TraceItem]] = {}
    union: dict[str, str] = {}  # seed id or question key -> group
    for item in items:
        keys = (f"id:{item.id}", f"q:{_question_key(item)}")
        group = next((union[k] for k in keys if k in union), keys[0])
        for key in keys:
            union.setdefault(key, group)
        groups.setdefault(group, []).append(item)
    if eval_fraction <= 0 or len(groups) < 2:
        return Split(train=list(items))
    n_eval = min(len(groups) - 1, max(1, math.ceil(eval_fraction * len(groups))))
    order = sorted(groups, key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
    held = set(order[:n_eval])
    split = Split()
    for group, members in groups.items():
        (split.eval if group in held else split.train).extend(members)
    return split
