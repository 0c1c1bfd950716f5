"""A trace as training data: text segments marked trainable or not, and chat messages.

Convention. The model writes everything except observations. The environment writes each
observation block *including* the newline before `<observation>` and both observation tags:
`"\\n<observation>\\n...\\n</observation>"` (`tags.observation_block`). So a model turn ends at
`</web_search>` / `</crawl_page>`, where generation stops, and the next one starts with the
newline before its `<think>`. These spans carry no loss in SFT and form `env_mask` in RL.

`to_segments(t)` concatenates to exactly `render(t)`, so token labels can be cut from offsets.
`to_messages` groups the same segments into chat turns: model text as `assistant`, each
observation block as a `tool` message whose content is the block verbatim. Nothing is dropped
or added, so the contents after the prompt concatenate to `render(t)` too; train on assistant
turns only (e.g. TRL `assistant_only_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

from oresearch_cli.trace.model import Observation, Trace
from oresearch_cli.trace.render import blocks


@dataclass(frozen=True)
class Segment:
    text: str
    trainable: bool


def to_segments(trace: Trace) -> list[Segment]:
    """Maximal runs of model text (trainable) and observation blocks (not), in order."""
    segments: list[Segment] = []
    for text, item in blocks(trace):
        trainable = not isinstance(item, Observation)
        if segments and segments[-1].trainable == trainable:
            segments[-1] = Segment(segments[-1].text + text, trainable)
        else:
            segments.append(Segment(text, trainable))
    return segments


def to_messages(trace: Trace, question: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """Chat messages: optional system, the question as user, then assistant and tool turns."""
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": question})
    for segment in to_segments(trace):
        messages.append({"role": "assistant" if segment.trainable else "tool", "content": segment.text})
    return messages


def trainable_spans(trace: Trace) -> list[tuple[int, int]]:
    """Character spans of `render(trace)` the model wrote: the complement of the observations."""
    spans = []
    position = 0
    for segment in to_segments(trace):
        end = position + len(segment.text)
        if segment.trainable:
            spans.append((position, end))
        position = end
    return spans
