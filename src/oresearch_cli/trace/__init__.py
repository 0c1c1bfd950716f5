"""The trace format: the one place that knows the O-Researcher tags.

parse (lenient, never raises) -> Trace -> render (canonical text), validate (problems),
convert (training segments and chat messages), report/extract (references, citations, tool
calls, URLs), stats. See DESIGN.md, "The trace".
"""

from oresearch_cli.trace.convert import Segment, to_messages, to_segments, trainable_spans
from oresearch_cli.trace.extract import (
    ToolCall,
    cited_urls,
    has_tags,
    observed_urls,
    pending_tool_call,
    report_text,
    tool_calls,
)
from oresearch_cli.trace.model import (
    CrawlPage,
    Observation,
    ParseNote,
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
from oresearch_cli.trace.parse import parse, parse_search, parse_urls
from oresearch_cli.trace.render import render, render_crawl, render_search, render_step
from oresearch_cli.trace.report import (
    Citation,
    Reference,
    ReportAnalysis,
    Section,
    analyze_report,
    extract_citations,
    extract_references,
    report_cited_urls,
)
from oresearch_cli.trace.stats import TraceStats, total_stats, trace_stats
from oresearch_cli.trace.tags import DEFAULT_SERP_NUM, STOP_STRINGS, TAGS, escape_tags, observation_block
from oresearch_cli.trace.urls import find_urls, page_key
from oresearch_cli.trace.validate import CODES, Bounds, Problem, is_valid, validate, validate_report

__all__ = [
    "CODES",
    "DEFAULT_SERP_NUM",
    "STOP_STRINGS",
    "TAGS",
    "Bounds",
    "Citation",
    "CrawlPage",
    "Observation",
    "ParseNote",
    "Plan",
    "Problem",
    "Reference",
    "Report",
    "ReportAnalysis",
    "Section",
    "Segment",
    "Step",
    "Subtask",
    "SubtaskAnswer",
    "SubtaskList",
    "Text",
    "Think",
    "ToolCall",
    "Trace",
    "TraceStats",
    "WebSearch",
    "analyze_report",
    "cited_urls",
    "escape_tags",
    "extract_citations",
    "extract_references",
    "find_urls",
    "has_tags",
    "is_valid",
    "observation_block",
    "observed_urls",
    "page_key",
    "parse",
    "parse_search",
    "parse_urls",
    "pending_tool_call",
    "render",
    "render_crawl",
    "render_search",
    "render_step",
    "report_cited_urls",
    "report_text",
    "to_messages",
    "to_segments",
    "tool_calls",
    "total_stats",
    "trace_stats",
    "trainable_spans",
    "validate",
    "validate_report",
]
