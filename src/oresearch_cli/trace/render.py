"""Canonical trace text, in the layout of tests/fixtures/trace_example.txt.

A trace renders as blocks, each preceded by a separator (none for the first, a blank line before
a subtask or the report, a newline otherwise) and the whole followed by one newline. Keeping the
separator at the front of each block is what lets `convert` cut the text into model-written and
environment-written spans whose concatenation is exactly `render(trace)`.
"""

from __future__ import annotations

from collections.abc import Iterator

from oresearch_cli.trace import tags
from oresearch_cli.trace.model import (
    CrawlPage,
    Observation,
    Plan,
    Report,
    Step,
    Subtask,
    SubtaskAnswer,
    SubtaskList,
    Text,
    Think,
    Trace,
    WebSearch,
)


def _block(tag: str, text: str) -> str:
    return f"<{tag}>\n{text}\n</{tag}>"


def render_search(queries: tuple[str, ...] | list[str], count: int = tags.DEFAULT_SERP_NUM) -> str:
    """The canonical `<web_search>` call: `q1 | q2&serp_num=N`."""
    return f"<{tags.WEB_SEARCH}>{' | '.join(queries)}&serp_num={count}</{tags.WEB_SEARCH}>"


def render_crawl(urls: tuple[str, ...] | list[str]) -> str:
    return f"<{tags.CRAWL_PAGE}>{' | '.join(urls)}</{tags.CRAWL_PAGE}>"


def render_step(step: Step) -> str:
    """One step's text, without separators."""
    if isinstance(step, Text):
        return step.text
    if isinstance(step, WebSearch):
        return render_search(step.queries, step.count)
    if isinstance(step, CrawlPage):
        return render_crawl(step.urls)
    if isinstance(step, Think | Plan | Observation | SubtaskAnswer | SubtaskList):
        return _block(step.kind, step.text)
    raise TypeError(f"not a trace step: {step!r}")


def render_subtask_header(subtask: Subtask) -> str:
    return _block(tags.SUBTASK, subtask.question)


def render_report(report: Report) -> str:
    return _block(tags.SUGGESTED_ANSWER, report.text)


def blocks(trace: Trace) -> Iterator[tuple[str, Step | Subtask | Report]]:
    """(text with its leading separator, what it renders) in order; the last text ends with a newline."""
    items: list[tuple[str, str, Step | Subtask | Report]] = []
    for step in trace.preamble:
        items.append(("\n", render_step(step), step))
    for subtask in trace.subtasks:
        items.append(("\n\n", render_subtask_header(subtask), subtask))
        items += [("\n", render_step(step), step) for step in subtask.steps]
    if trace.report is not None:
        items += [("\n\n", render_report(report), report) for report in trace.superseded_reports]
        items.append(("\n\n", render_report(trace.report), trace.report))
        items += [("\n", render_step(step), step) for step in trace.trailer]
    for index, (separator, text, item) in enumerate(items):
        prefix = "" if index == 0 else separator
        suffix = "\n" if index == len(items) - 1 else ""
        yield prefix + text + suffix, item


def render(trace: Trace) -> str:
    """Canonical text of `trace`; `parse(render(t)) == t` for every trace the parser can produce."""
    return "".join(text for text, _ in blocks(trace))
