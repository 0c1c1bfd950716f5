"""Typed records of a trace: the subtask list, subtasks and their steps, the report, stray text.

Offsets point into the text the trace was parsed from (`Trace.source`) so problems can name a
line; they take no part in equality, so a parsed trace equals the same trace built by hand.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import ClassVar

from oresearch_cli.trace import tags

# `1. a 2. b` on one line (as the paper writes it) or one item per line; bullets too. A number at
# the start or after whitespace: the lookbehind follows the first digit (`(?<!\S\d)` is "nothing
# but whitespace before it"), so the engine skips ahead to digits instead of trying every position.
_NUMBER = re.compile(r"\d(?<!\S\d)\d?\s*[.)、:：]\s+")
_BULLET = re.compile(r"^\s*[-*•]\s+(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Step:
    """One element of a trace, in the order the model wrote it."""

    kind: ClassVar[str] = ""
    offset: int = field(default=-1, compare=False, kw_only=True)

    @property
    def is_tool_call(self) -> bool:
        return self.kind in tags.TOOL_TAGS


@dataclass(frozen=True)
class Text(Step):
    """Text outside any tag, or content no tag claims: kept so nothing is silently dropped."""

    kind: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True)
class SubtaskList(Step):
    kind: ClassVar[str] = tags.SUBTASK_LIST
    text: str

    @property
    def items(self) -> list[str]:
        """The numbered (or bulleted) lines; the whole text as one item when it has no numbering."""
        text = self.text.strip()
        numbered = [part.strip() for part in _NUMBER.split(text)[1:] if part.strip()]
        if numbered:
            return numbered
        bullets = _BULLET.findall(text)
        if bullets:
            return bullets
        return [text] if text else []


@dataclass(frozen=True)
class Think(Step):
    kind: ClassVar[str] = tags.THINK
    text: str


@dataclass(frozen=True)
class Plan(Step):
    kind: ClassVar[str] = tags.PLAN
    text: str


@dataclass(frozen=True)
class WebSearch(Step):
    """A search call: one or more queries and how many results to fetch in total."""

    kind: ClassVar[str] = tags.WEB_SEARCH
    queries: tuple[str, ...]
    count: int = tags.DEFAULT_SERP_NUM


@dataclass(frozen=True)
class CrawlPage(Step):
    """A crawl call: the URLs (or whatever tokens the model wrote where URLs belong)."""

    kind: ClassVar[str] = tags.CRAWL_PAGE
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Observation(Step):
    """Tool output. The environment writes it, never the model: SFT masks it."""

    kind: ClassVar[str] = tags.OBSERVATION
    text: str


@dataclass(frozen=True)
class SubtaskAnswer(Step):
    kind: ClassVar[str] = tags.SUBTASK_ANSWER
    text: str


ToolCall = WebSearch | CrawlPage


@dataclass
class Subtask:
    """One `<subtask>` and the steps written under it, up to the next subtask or the report."""

    question: str
    steps: list[Step] = field(default_factory=list)
    offset: int = field(default=-1, compare=False)

    @property
    def tool_calls(self) -> list[WebSearch | CrawlPage]:
        return [s for s in self.steps if isinstance(s, WebSearch | CrawlPage)]

    @property
    def answer(self) -> str | None:
        answers = [s.text for s in self.steps if isinstance(s, SubtaskAnswer)]
        return answers[-1] if answers else None


@dataclass
class Report:
    """The `<suggested_answer>`: the final Markdown report."""

    text: str
    offset: int = field(default=-1, compare=False)
    # Where `text` starts in the source, so a citation's index in `text` maps to a source position.
    text_offset: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class ParseNote:
    """Something the lenient parser had to repair or could not place; the validator reports it."""

    code: str
    message: str
    offset: int


@dataclass
class Trace:
    """A whole trace.

    `preamble` holds what comes before the first `<subtask>` (normally just the subtask list; all
    the steps of a trace written without subtasks). `trailer` holds what follows the report.
    """

    preamble: list[Step] = field(default_factory=list)
    subtasks: list[Subtask] = field(default_factory=list)
    report: Report | None = None
    trailer: list[Step] = field(default_factory=list)
    # Reports the model wrote before its last one (rare; generation normally stops at the first).
    superseded_reports: list[Report] = field(default_factory=list)
    notes: list[ParseNote] = field(default_factory=list, compare=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def subtask_list(self) -> SubtaskList | None:
        for step in self.preamble:
            if isinstance(step, SubtaskList):
                return step
        return None

    def groups(self) -> list[tuple[int | None, list[Step]]]:
        """(1-based subtask number, steps) for each subtask; None for the preamble and trailer."""
        result: list[tuple[int | None, list[Step]]] = [(None, self.preamble)]
        result += [(i, s.steps) for i, s in enumerate(self.subtasks, start=1)]
        result.append((None, self.trailer))
        return result

    def steps(self) -> list[tuple[int | None, Step]]:
        """Every step with its subtask number, in rendering order."""
        return [(number, step) for number, steps in self.groups() for step in steps]

    @property
    def tool_calls(self) -> list[WebSearch | CrawlPage]:
        return [s for _, s in self.steps() if isinstance(s, WebSearch | CrawlPage)]

    @property
    def observations(self) -> list[Observation]:
        return [s for _, s in self.steps() if isinstance(s, Observation)]

    def line_of(self, offset: int | None) -> int | None:
        """1-based line of a source offset, or None when the trace was not parsed from text."""
        if offset is None or offset < 0 or self.source is None:
            return None
        return line_of(self.source, offset)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


class LineIndex:
    """Offset -> line for many lookups in one text (a count per lookup is quadratic on big traces).

    Most texts get only a few lookups (a valid trace: none), so the first few count newlines and
    the index is built only when more come; both give the same line."""

    _COUNTED = 8  # lookups answered by counting before the index is built

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts: list[int] | None = None
        self._lookups = 0

    def line(self, offset: int | None) -> int | None:
        if offset is None or offset < 0:
            return None
        if self._starts is None:
            self._lookups += 1
            if self._lookups <= self._COUNTED:
                return self._text.count("\n", 0, offset) + 1
            self._starts = [0] + [m.end() for m in re.finditer("\n", self._text)]
        return bisect_right(self._starts, offset)
