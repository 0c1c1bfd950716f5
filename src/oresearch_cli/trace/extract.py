"""What a trace did and used: its tool calls, the URLs it observed, the URLs its report cites."""

from __future__ import annotations

from dataclasses import dataclass

from oresearch_cli.trace import tags
from oresearch_cli.trace.model import CrawlPage, Observation, Step, Text, Trace, WebSearch
from oresearch_cli.trace.parse import parse
from oresearch_cli.trace.report import analyze_report
from oresearch_cli.trace.urls import find_urls, unique


@dataclass(frozen=True)
class ToolCall:
    """A tool call with where it happened and whether the environment answered it."""

    kind: str  # web_search or crawl_page
    queries: tuple[str, ...]
    urls: tuple[str, ...]
    count: int | None  # results requested (web_search only)
    subtask: int | None  # 1-based subtask number; None outside subtasks
    offset: int
    answered: bool  # an observation follows it

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "queries": list(self.queries),
            "urls": list(self.urls),
            "count": self.count,
            "subtask": self.subtask,
            "offset": self.offset,
            "answered": self.answered,
        }


def _next_step(steps: list[Step], index: int) -> Step | None:
    for step in steps[index + 1 :]:
        if not isinstance(step, Text):
            return step
    return None


def tool_calls(trace: Trace) -> list[ToolCall]:
    result = []
    for number, steps in trace.groups():
        for index, step in enumerate(steps):
            answered = isinstance(_next_step(steps, index), Observation)
            if isinstance(step, WebSearch):
                result.append(
                    ToolCall(tags.WEB_SEARCH, step.queries, (), step.count, number, step.offset, answered)
                )
            elif isinstance(step, CrawlPage):
                result.append(ToolCall(tags.CRAWL_PAGE, (), step.urls, None, number, step.offset, answered))
    return result


def observed_urls(trace: Trace, include_crawled: bool = False) -> list[str]:
    """URLs that appeared in observations (bare or as Markdown links), first spelling of each.

    With `include_crawled`, also the URLs of answered crawl calls: a page the agent read is a
    source even when its text does not repeat its own address.
    """
    # One walk over the steps (validate calls this for every trace): observation URLs in step
    # order, then the URLs of answered crawl calls in call order, as `tool_calls` lists them.
    urls: list[str] = []
    crawled: list[str] = []
    for _, steps in trace.groups():
        for index, step in enumerate(steps):
            if isinstance(step, Observation):
                urls += find_urls(step.text)
            elif (
                include_crawled
                and isinstance(step, CrawlPage)
                and isinstance(_next_step(steps, index), Observation)
            ):
                crawled += step.urls
    return unique(urls + crawled)


def has_tags(trace: Trace) -> bool:
    """False for text with no trace tag at all (a bare report or article)."""
    return bool(trace.subtasks or trace.report or any(not isinstance(s, Text) for s in trace.preamble))


def report_text(trace: Trace, bare_text_is_report: bool = False) -> str | None:
    """The report; with `bare_text_is_report`, the whole text of a trace that has no tags."""
    if trace.report is not None:
        return trace.report.text
    if bare_text_is_report and not has_tags(trace):
        text = "\n".join(s.text for s in trace.preamble if isinstance(s, Text))
        return text or None
    return None


def cited_urls(source: Trace | str) -> list[str]:
    """URLs the report cites (cited reference entries, then links in its body). A string is a report."""
    if isinstance(source, Trace):
        text = report_text(source, bare_text_is_report=True)
        if text is None:
            return []
    else:
        text = source
    return analyze_report(text).cited_urls


def pending_tool_call(source: Trace | str) -> WebSearch | CrawlPage | None:
    """The tool call that ends a partial rollout and awaits its observation, if any.

    The agent loop calls this on the text generated so far (stopped at `</web_search>` or
    `</crawl_page>`) to learn what to run.
    """
    trace = parse(source) if isinstance(source, str) else source
    steps = [step for _, step in trace.steps() if not isinstance(step, Text)]
    if trace.report is None and steps and isinstance(steps[-1], WebSearch | CrawlPage):
        return steps[-1]
    return None
