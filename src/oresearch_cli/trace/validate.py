"""Checking a trace (or a bare report) against the O-Researcher format: a list of precise problems.

Every problem has a stable code (see `CODES`), a severity, a message and where it is: the
offset into the parsed text, its line, and the 1-based subtask. A trace is valid when it has no
error; warnings describe what works but should not be learned from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from oresearch_cli.trace.extract import has_tags, observed_urls, report_text
from oresearch_cli.trace.model import (
    CrawlPage,
    LineIndex,
    Observation,
    Plan,
    Step,
    Subtask,
    SubtaskAnswer,
    SubtaskList,
    Text,
    Think,
    Trace,
    WebSearch,
)
from oresearch_cli.trace.parse import parse
from oresearch_cli.trace.report import ReportAnalysis, analyze_report
from oresearch_cli.trace.urls import is_url, page_key

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

# code -> (severity, what it means). Codes are stable: filters, reports and tests key on them.
CODES: dict[str, tuple[Severity, str]] = {
    # repairs the parser made
    "unclosed-tag": (ERROR, "an opening tag is never closed"),
    "missing-opener": (ERROR, "a closing tag has no opening tag"),
    "repeated-closer": (WARNING, "an element is closed more than once"),
    "orphan-closer": (WARNING, "a closing tag matches nothing and was dropped"),
    "tag-in-think": (ERROR, "a tag appears inside <think>"),
    "nested-tag": (WARNING, "a tag appears inside another element"),
    "tag-spelling": (WARNING, "a tag is spelled with other case, spaces or hyphens"),
    "repeated-report": (WARNING, "more than one <suggested_answer>"),
    "content-after-report": (WARNING, "steps or subtasks follow the report"),
    # trace structure and order
    "missing-subtask-list": (ERROR, "no <subtask_list>"),
    "no-subtasks": (ERROR, "no <subtask>"),
    "subtask-count-mismatch": (WARNING, "the subtask list and the subtasks differ in number"),
    "think-before-action": (ERROR, "a plan or tool call without a <think> since the last observation"),
    "tool-call-without-observation": (ERROR, "a tool call not followed by an <observation>"),
    "observation-without-tool-call": (ERROR, "an <observation> that answers no tool call"),
    "tool-calls-below-min": (ERROR, "a subtask makes fewer tool calls than the minimum"),
    "tool-calls-above-max": (ERROR, "a subtask makes more tool calls than the maximum"),
    "empty-tool-call": (ERROR, "a search without queries or a crawl without URLs"),
    "invalid-url": (WARNING, "a crawl target that is not an http(s) URL"),
    "missing-subtask-answer": (ERROR, "a subtask without <subtask_answer>"),
    "empty-step": (WARNING, "an element with no text"),
    "text-outside-tags": (WARNING, "text outside any tag"),
    # the report
    "missing-report": (ERROR, "no <suggested_answer>, or an empty one"),
    "report-missing-section": (ERROR, "the report lacks Introduction, Body, Conclusion or References"),
    "citation-unresolved": (ERROR, "an in-text citation [n] with no reference n"),
    "citation-malformed": (WARNING, "a citation marker that names no usable reference number"),
    "reference-url-not-observed": (ERROR, "a reference URL that no observation showed"),
    "reference-without-url": (WARNING, "a reference entry without a URL"),
    "reference-duplicate": (WARNING, "two reference entries share a number"),
    "reference-uncited": (WARNING, "a reference the text never cites"),
    "report-no-citations": (WARNING, "a report without in-text citations"),
}


@dataclass(frozen=True)
class Bounds:
    """Limits the rules check; defaults follow the paper's tool reward (0 below 2 calls, -1 above 8)."""

    min_tool_calls: int = 2
    max_tool_calls: int = 8


@dataclass(frozen=True)
class Problem:
    code: str
    severity: Severity
    message: str
    offset: int | None = None
    line: int | None = None
    subtask: int | None = None  # 1-based; None outside subtasks

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Collector:
    def __init__(self, source: str | None) -> None:
        self.problems: list[Problem] = []
        self._lines = LineIndex(source) if source is not None else None

    def add(self, code: str, message: str, offset: int | None = None, subtask: int | None = None) -> None:
        severity = CODES[code][0]
        offset = offset if offset is not None and offset >= 0 else None
        line = self._lines.line(offset) if self._lines is not None else None
        self.problems.append(Problem(code, severity, message, offset, line, subtask))


def validate(
    trace: Trace | str,
    bounds: Bounds | None = None,
    *,
    report_only: bool = False,
    analysis: ReportAnalysis | None = None,
) -> list[Problem]:
    """Every problem of `trace` (a Trace or its text), in text order.

    With `report_only` only the report is checked (a bare text is the report itself) and the
    trace-order rules and the observed-URL rule are skipped: for articles such as DRB reports.
    `analysis`: `analyze_report` of the report, when the caller has it (the filter needs it too);
    it is used only if it is of the very text checked here, else the report is analyzed anew.
    """
    bounds = bounds or Bounds()
    if isinstance(trace, str):
        if report_only:
            return validate_report(trace, analysis=analysis)
        trace = parse(trace)
    out = _Collector(trace.source)
    for note in trace.notes:
        if not report_only or note.code in ("missing-opener", "repeated-report"):
            out.add(note.code, note.message, note.offset, _subtask_at(trace, note.offset))
    if report_only:
        _check_report_of(trace, out, observed=None, bare_text_is_report=True, analysis=analysis)
    else:
        _check_structure(trace, bounds, out)
        _check_report_of(
            trace,
            out,
            observed=observed_urls(trace, include_crawled=True),
            bare_text_is_report=False,
            analysis=analysis,
        )
    return _sorted(out.problems)


def validate_report(
    text: str, observed: list[str] | None = None, *, analysis: ReportAnalysis | None = None
) -> list[Problem]:
    """Problems of a report text. `observed`: URLs its references must come from (None: not checked).
    `analysis`: as for `validate`."""
    out = _Collector(text)
    _check_report(text, 0, observed, out, analysis)
    return _sorted(out.problems)


def is_valid(problems: list[Problem]) -> bool:
    return not any(p.severity == ERROR for p in problems)


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.offset is None, p.offset or 0, p.code))


def _subtask_at(trace: Trace, offset: int) -> int | None:
    number = None
    for index, subtask in enumerate(trace.subtasks, start=1):
        if 0 <= subtask.offset <= offset:
            number = index
    if trace.report is not None and trace.report.offset >= 0 and offset >= trace.report.offset:
        return None
    return number


def _check_structure(trace: Trace, bounds: Bounds, out: _Collector) -> None:
    subtask_list = trace.subtask_list
    if subtask_list is None:
        out.add("missing-subtask-list", "the trace has no <subtask_list>; start with the list of subtasks", 0)
    if not trace.subtasks:
        out.add(
            "no-subtasks",
            "the trace has no <subtask>; work through each subtask under its own <subtask> tag",
            0,
        )
    elif subtask_list is not None and (items := subtask_list.items) and len(items) != len(trace.subtasks):
        out.add(
            "subtask-count-mismatch",
            f"the subtask list names {len(items)} subtasks but the trace has {len(trace.subtasks)}",
            subtask_list.offset,
        )
    for step in trace.preamble:
        _check_empty(step, None, out)
    # A trace without subtasks is checked as one group, so a flat rollout still gets the tool rules.
    groups: list[tuple[int | None, list[Step], Subtask | None]] = []
    if trace.subtasks:
        groups += [(i, s.steps, s) for i, s in enumerate(trace.subtasks, start=1)]
        _check_order(trace.preamble, None, out)
    else:
        groups.append((None, trace.preamble, None))
    for number, steps, subtask in groups:
        _check_order(steps, number, out)
        calls = [s for s in steps if isinstance(s, _TOOL_CALLS)]
        where = f"subtask {number}" if number is not None else "the trace"
        offset = subtask.offset if subtask is not None else (calls[0].offset if calls else 0)
        if len(calls) < bounds.min_tool_calls:
            out.add(
                "tool-calls-below-min",
                f"{where} makes {len(calls)} tool calls, fewer than {bounds.min_tool_calls}; search or read more",
                offset,
                number,
            )
        if len(calls) > bounds.max_tool_calls:
            out.add(
                "tool-calls-above-max",
                f"{where} makes {len(calls)} tool calls, more than {bounds.max_tool_calls}; split the subtask",
                calls[bounds.max_tool_calls].offset,
                number,
            )
        if subtask is not None:
            if not subtask.question.strip():
                out.add("empty-step", f"<subtask> {number} has no question", subtask.offset, number)
            if subtask.answer is None:
                out.add(
                    "missing-subtask-answer",
                    f"subtask {number} ends without <subtask_answer>",
                    subtask.offset,
                    number,
                )
            for step in steps:
                _check_empty(step, number, out)
    for step in trace.trailer:
        if isinstance(step, Text):
            out.add("text-outside-tags", f"text after the report: {_snippet(step.text)}", step.offset)
    if trace.report is None or not trace.report.text.strip():
        out.add(
            "missing-report",
            "the trace has no report; end with <suggested_answer>...</suggested_answer>",
            trace.report.offset if trace.report is not None else None,
        )


# Tuples, not `A | B`: isinstance is faster with them, and these run for every step of every trace.
_WRITTEN = (Think, Plan, SubtaskAnswer, SubtaskList)
_TOOL_CALLS = (WebSearch, CrawlPage)
_ACTIONS = (Plan, WebSearch, CrawlPage)


def _check_empty(step: Step, number: int | None, out: _Collector) -> None:
    if isinstance(step, _WRITTEN) and not step.text.strip():
        out.add("empty-step", f"<{step.kind}> is empty", step.offset, number)


def _check_order(steps: list[Step], number: int | None, out: _Collector) -> None:
    thought = False
    previous: Step | None = None  # the previous non-text step
    for index, step in enumerate(steps):
        if isinstance(step, Text):
            out.add("text-outside-tags", f"text outside any tag: {_snippet(step.text)}", step.offset, number)
            continue
        if isinstance(step, Think):
            thought = True
        elif isinstance(step, Observation):
            if not (previous is not None and previous.is_tool_call):
                out.add(
                    "observation-without-tool-call",
                    "an <observation> follows no tool call; observations come only from the environment",
                    step.offset,
                    number,
                )
            thought = False
        elif isinstance(step, _ACTIONS) and not thought:
            what = "<plan>" if isinstance(step, Plan) else f"<{step.kind}>"
            out.add(
                "think-before-action", f"{what} has no <think> before it; reason first", step.offset, number
            )
            thought = True  # one missing think is one problem, not one per action it precedes
        if isinstance(step, _TOOL_CALLS):
            _check_call(step, number, out)
            following = None
            for k in range(index + 1, len(steps)):
                if not isinstance(steps[k], Text):
                    following = steps[k]
                    break
            if not isinstance(following, Observation):
                out.add(
                    "tool-call-without-observation",
                    f"<{step.kind}> is not followed by an <observation>; run the tool and insert its output",
                    step.offset,
                    number,
                )
        previous = step


def _check_call(step: WebSearch | CrawlPage, number: int | None, out: _Collector) -> None:
    if isinstance(step, WebSearch):
        if not step.queries:
            out.add(
                "empty-tool-call",
                "<web_search> has no query; write `query one | query two&serp_num=10`",
                step.offset,
                number,
            )
        return
    if not step.urls:
        out.add(
            "empty-tool-call", "<crawl_page> has no URL; write `https://a | https://b`", step.offset, number
        )
    for url in step.urls:
        if not is_url(url):
            out.add("invalid-url", f"<crawl_page> target {url!r} is not an http(s) URL", step.offset, number)


def _snippet(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def _check_report_of(
    trace: Trace,
    out: _Collector,
    observed: list[str] | None,
    bare_text_is_report: bool,
    analysis: ReportAnalysis | None,
) -> None:
    if trace.report is not None:
        if trace.report.text.strip():
            _check_report(trace.report.text, max(trace.report.text_offset, 0), observed, out, analysis)
        return
    text = report_text(trace, bare_text_is_report=bare_text_is_report)
    if text is None or not text.strip():
        if bare_text_is_report:
            out.add("missing-report", "no report found: the text is empty or holds only trace steps", None)
        return
    # A bare article: its text starts at the first stray text's offset.
    first = trace.preamble[0].offset if trace.preamble and not has_tags(trace) else 0
    _check_report(text, max(first, 0), observed, out, analysis)


def _check_report(
    text: str, base: int, observed: list[str] | None, out: _Collector, analysis: ReportAnalysis | None
) -> None:
    if analysis is None or analysis.text != text:
        analysis = analyze_report(text)
    for section in analysis.missing_sections:
        hint = {
            "introduction": '"## Introduction" (or 引言/概述)',
            "body": "content sections between the introduction and the conclusion",
            "conclusion": '"## Conclusion" (or 结论/总结)',
            "references": '"## References" (or 参考文献) with entries like `[1]. https://url - Title`',
        }[section]
        out.add(
            "report-missing-section", f"the report has no {section.capitalize()} section; add {hint}", base
        )
    numbers: dict[int, int] = {}
    for ref in analysis.references:
        if ref.number is not None:
            if ref.number in numbers:
                out.add("reference-duplicate", f"reference [{ref.number}] is listed twice", base + ref.offset)
            numbers.setdefault(ref.number, ref.offset)
        if not ref.url:
            label = f"[{ref.number}]" if ref.number is not None else repr(ref.title)
            out.add("reference-without-url", f"reference {label} has no URL", base + ref.offset)
    unresolved: dict[int, list[int]] = {}
    for citation in analysis.citations:
        if citation.malformed:
            out.add(
                "citation-malformed",
                f"citation {citation.raw} names no usable reference number (a range runs backwards or too far)",
                base + citation.offset,
            )
        for n in citation.numbers:
            if n not in numbers:
                unresolved.setdefault(n, []).append(citation.offset)
    for n, offsets in unresolved.items():
        times = f" ({len(offsets)} times)" if len(offsets) > 1 else ""
        out.add(
            "citation-unresolved",
            f"citation [{n}]{times} has no reference [{n}]; add it to the references or fix the number",
            base + offsets[0],
        )
    if not analysis.citations:
        out.add(
            "report-no-citations", "the report cites nothing in its text; back each key fact with [n]", base
        )
    cited = set(analysis.cited_numbers)
    for ref in analysis.references:
        if ref.number is not None and ref.number not in cited and numbers.get(ref.number) == ref.offset:
            out.add(
                "reference-uncited", f"reference [{ref.number}] is never cited in the text", base + ref.offset
            )
    if observed is not None:
        seen = {page_key(u) for u in observed}
        for ref in analysis.references:
            if ref.url and page_key(ref.url) not in seen:
                label = f"[{ref.number}] " if ref.number is not None else ""
                out.add(
                    "reference-url-not-observed",
                    f"reference {label}{ref.url} appeared in no observation; cite only pages the tools returned",
                    base + ref.offset,
                )
