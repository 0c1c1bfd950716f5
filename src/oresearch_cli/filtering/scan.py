"""The one pass over a trace that every filter rule reads: parsed once, validated once, its report
analyzed once. Rules (`oresearch_cli.filtering.rules`) never parse; they read a `Scan`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.trace import (
    Bounds,
    Observation,
    Problem,
    ReportAnalysis,
    Trace,
    analyze_report,
    has_tags,
    page_key,
    parse,
    report_text,
    validate,
)


@dataclass
class Item:
    """One trace to check. `text` is the trace (or a bare report); `tokens` (report, trace) are
    filled in when a tokenizer counted them for the whole batch. `authorship` is who wrote its
    pieces (`Authorship.to_dict()` of synth's steps log, `oresearch_cli.agent.authorship`; plain
    data, so worker processes need not import the agent); None when the trace has no log."""

    id: str
    text: str
    question: str = ""
    language: str | None = None
    status: str | None = None
    error: str | None = None
    tokens: tuple[int, int] | None = None
    authorship: dict[str, Any] | None = None


@dataclass
class Scan:
    """What the rules read of one item."""

    item: Item
    trace: Trace
    report_only: bool  # no trace tags: a bare report, checked without the trace rules
    report: str
    steps: list[Any]  # every step in order (trace.steps() without the numbers)
    analysis: ReportAnalysis | None  # None when there is no report
    errors: list[Problem]  # the validator's errors
    warnings: Counter[str] = field(default_factory=Counter)  # the validator's warnings by code

    @cached_property
    def distinct_sources(self) -> int:
        """Distinct cited pages (by page identity); read by the sources rule and the quality score."""
        if self.analysis is None:
            return 0
        return len({page_key(u) for u in self.analysis.cited_urls})

    @cached_property
    def n_observations(self) -> int:
        return sum(isinstance(s, Observation) for s in self.steps)


def scan(item: Item, cfg: FilterConfig) -> Scan:
    """Parse, validate and analyze `item` once."""
    trace = parse(item.text)
    report_only = not has_tags(trace)
    report = report_text(trace, bare_text_is_report=report_only) or ""
    steps = [s for _, group in trace.groups() for s in group]
    # Analyzed once: validate checks the report with this analysis, and the rules read it.
    analysis = analyze_report(report) if report else None
    bounds = Bounds(cfg.min_tool_calls, cfg.max_tool_calls)
    problems = validate(trace, bounds, report_only=report_only, analysis=analysis)
    return Scan(
        item=item,
        trace=trace,
        report_only=report_only,
        report=report,
        steps=steps,
        analysis=analysis,
        errors=[p for p in problems if p.severity == "error"],
        warnings=Counter(p.code for p in problems if p.severity == "warning"),
    )
