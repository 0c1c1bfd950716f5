"""Counts that describe a trace or a bare report, and their totals over many."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from oresearch_cli.trace import tags
from oresearch_cli.trace.extract import has_tags, observed_urls, report_text, tool_calls
from oresearch_cli.trace.model import Text, Trace
from oresearch_cli.trace.parse import parse
from oresearch_cli.trace.report import analyze_report


@dataclass
class TraceStats:
    mode: str = "trace"  # trace, or report for a bare report
    subtasks: int = 0
    steps: int = 0  # tagged steps, observations included
    tool_calls: int = 0
    searches: int = 0
    crawls: int = 0
    search_queries: int = 0
    observations: int = 0
    observed_urls: int = 0
    citations: int = 0  # cited numbers in the text, repeats counted ([1][2] and [1, 2] are 2)
    distinct_citations: int = 0
    references: int = 0
    report_chars: int = 0
    parse_notes: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def __add__(self, other: TraceStats) -> TraceStats:
        total = TraceStats(mode="total")
        for f in fields(self):
            if f.name != "mode":
                setattr(total, f.name, getattr(self, f.name) + getattr(other, f.name))
        return total


NUMERIC_FIELDS = tuple(f.name for f in fields(TraceStats) if f.name != "mode")


def trace_stats(source: Trace | str, report_only: bool | None = None) -> TraceStats:
    """Stats of a trace. `report_only`: True treats the text as a bare report; None (default)
    does so when the text has no trace tags at all, as with a DRB article."""
    trace = parse(source) if isinstance(source, str) else source
    if report_only is None:
        report_only = not has_tags(trace)
    stats = TraceStats(mode="report" if report_only else "trace")
    stats.parse_notes = len(trace.notes)
    if not report_only:
        calls = tool_calls(trace)
        stats.subtasks = len(trace.subtasks)
        stats.steps = sum(1 for _, s in trace.steps() if not isinstance(s, Text)) + (trace.report is not None)
        stats.tool_calls = len(calls)
        stats.searches = sum(c.kind == tags.WEB_SEARCH for c in calls)
        stats.crawls = sum(c.kind == tags.CRAWL_PAGE for c in calls)
        stats.search_queries = sum(len(c.queries) for c in calls)
        stats.observations = len(trace.observations)
        stats.observed_urls = len(observed_urls(trace))
    text = report_text(trace, bare_text_is_report=report_only)
    if text:
        analysis = analyze_report(text)
        stats.citations = sum(len(c.numbers) for c in analysis.citations)
        stats.distinct_citations = len(analysis.cited_numbers)
        stats.references = len(analysis.references)
        stats.report_chars = len(text)
    return stats


def total_stats(all_stats: list[TraceStats]) -> TraceStats:
    total = TraceStats(mode="total")
    for stats in all_stats:
        total = total + stats
    return total
