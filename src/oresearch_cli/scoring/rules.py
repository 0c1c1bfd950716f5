"""Rule metrics of research reports, no judge: structure, length, citations, sources, language,
and (for an ores trace) tool use and how many cited pages the trace actually observed.

Everything a report is read for comes from `oresearch_cli.trace` (`analyze_report` for sections,
references and citation markers; `observed_urls`, `tool_calls`/`trace_stats` for the trace;
`page_key` for "the same page"), and its language from `detect_language` on the sample the
filter's language rule reads, so a metric here means what the filter and validator mean.

Two row shapes are read (`row_metrics`): DeepResearch Bench's `{id, prompt, article}` (a bare
Markdown article) and ores trace rows (`trace`, whose report is its `<suggested_answer>`), or any
JSONL row with the text in a named field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from oresearch_cli.errors import InputError
from oresearch_cli.filtering.language import primary_language, report_sample
from oresearch_cli.textutil import detect_language
from oresearch_cli.trace import (
    ReportAnalysis,
    Trace,
    analyze_report,
    has_tags,
    observed_urls,
    page_key,
    parse,
    report_text,
    trace_stats,
)
from oresearch_cli.trace.report import REFERENCES

# CJK scripts (Han, kana, Hangul) are measured in characters, other scripts in words, as DRB's
# length limits are; the same ranges as `textutil.tokens`.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+")  # a run of letters or digits (CJK ones are blanked before)
UND = "und"  # detect_language's "nothing to judge"
# Where the text of a row is, when no field is named: ores trace rows, DRB articles, synth's
# report column, learn_sft_eval's episode text.
TEXT_FIELDS = ("trace", "article", "report", "text")
QUESTION_FIELDS = ("question", "prompt")


@dataclass(frozen=True)
class Usage:
    """What producing the report cost, when the row says: synth rows carry prompt/completion
    tokens and `cost_usd`, learn_sft_eval rows `model_tokens`."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens: int | None = None  # prompt + completion, or the row's own total
    cost_usd: float | None = None

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> Usage | None:
        prompt, completion = _int(row.get("prompt_tokens")), _int(row.get("completion_tokens"))
        total = _int(row.get("model_tokens"))
        if total is None and (prompt is not None or completion is not None):
            total = (prompt or 0) + (completion or 0)
        cost = row.get("cost_usd")
        cost = float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None
        if prompt is None and completion is None and total is None and cost is None:
            return None
        return cls(prompt, completion, total, cost)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ReportMetrics:
    """Rule metrics of one report. Trace fields are None for a bare report, usage fields when the
    row carries none. Counts of pages are by `page_key` (scheme, `www.`, trailing slash... ignored)."""

    # structure
    headings: int  # `#` headings and bare keyword lines (`参考文献：`), as `analyze_report` finds them
    missing_sections: tuple[str, ...]  # of introduction, body, conclusion, references
    # length of the prose: the report without its reference list and citation markers
    words: int  # runs of letters/digits outside CJK text
    cjk_chars: int  # Han, kana and Hangul characters
    # citations
    citation_markers: int  # `[1]`, `[1, 2]`, `[1-3]`, `【1】` in the text, each marker once
    malformed_citations: int  # markers naming no usable number (`[41-23]`)
    cited_numbers: int  # distinct reference numbers the markers name
    references: int  # entries of the reference list
    reference_urls: int  # distinct pages listed in the reference list
    sources: int  # distinct cited pages: cited entries' URLs and links in the text
    domains: int  # distinct hosts of those pages
    unresolved_citations: tuple[int, ...]  # cited numbers no reference entry has
    uncited_references: tuple[int, ...]  # numbers of reference entries never cited
    # language
    language: str  # detected on the report body's prose (`report_sample`); und: nothing to judge
    expected_language: str | None
    language_match: bool | None  # None when either side is unknown or und
    # the trace
    steps: int | None = None  # tagged steps, observations and the report included (`trace_stats`)
    subtasks: int | None = None
    tool_calls: int | None = None  # web_search and crawl_page calls, answered or not
    searches: int | None = None
    crawls: int | None = None
    observed_urls: int | None = None  # distinct pages in observations or answered crawls
    cited_observed: int | None = None  # of `sources`, how many the trace observed
    # usage
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens: int | None = None
    cost_usd: float | None = None

    @property
    def structure_complete(self) -> bool:
        return not self.missing_sections

    @property
    def length(self) -> int:
        """Words plus CJK characters: one number for reports in either script."""
        return self.words + self.cjk_chars

    @property
    def cited_observed_share(self) -> float | None:
        """Effective citations without a judge: the share of cited pages the trace observed."""
        if self.cited_observed is None or not self.sources:
            return None
        return self.cited_observed / self.sources

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing_sections"] = list(self.missing_sections)
        out["unresolved_citations"] = list(self.unresolved_citations)
        out["uncited_references"] = list(self.uncited_references)
        out["structure_complete"] = self.structure_complete
        out["length"] = self.length
        out["cited_observed_share"] = self.cited_observed_share
        return out


def report_metrics(
    report: str,
    *,
    trace: Trace | str | None = None,
    expected_language: str | None = None,
    question: str | None = None,
    usage: Usage | None = None,
) -> ReportMetrics:
    """Metrics of `report` (Markdown). `trace`: the trace that wrote it, for the trace metrics.
    The expected language is `expected_language`, else the language of `question`, else unknown."""
    analysis = analyze_report(report)
    prose = _prose(report, analysis)
    cjk = len(_CJK.findall(prose))
    words = len(_WORD.findall(_CJK.sub(" ", prose)))

    listed = {ref.number for ref in analysis.references if ref.number is not None}
    cited = analysis.cited_numbers
    sources = analysis.cited_urls  # one spelling per page already
    language = _report_language(report, analysis)
    expected = expected_language or None
    if expected is None and question and question.strip():
        expected = detect_language(question)
    # As the filter's language rule: `und` on either side never counts as a mismatch; tags compare
    # by their primary subtag (`zh-CN` is `zh`).
    match = (
        None
        if expected in (None, UND) or language == UND
        else primary_language(expected) == primary_language(language)
    )

    trace_fields: dict[str, Any] = {}  # Any: they fill fields of several types
    if trace is not None:
        trace_fields = _trace_fields(parse(trace) if isinstance(trace, str) else trace, sources)
    return ReportMetrics(
        headings=len(analysis.sections),
        missing_sections=tuple(analysis.missing_sections),
        words=words,
        cjk_chars=cjk,
        citation_markers=len(analysis.citations),
        malformed_citations=sum(c.malformed for c in analysis.citations),
        cited_numbers=len(cited),
        references=len(analysis.references),
        reference_urls=len({page_key(ref.url) for ref in analysis.references if ref.url}),
        sources=len(sources),
        domains=len({_host(url) for url in sources}),
        unresolved_citations=tuple(sorted(n for n in set(cited) if n not in listed)),
        uncited_references=tuple(sorted(listed - set(cited))),
        language=language,
        expected_language=expected,
        language_match=match,
        **trace_fields,
        **(asdict(usage) if usage is not None else {}),
    )


def _prose(text: str, analysis: ReportAnalysis) -> str:
    """The report without its reference list and citation markers (URLs and `[3]` are no prose)."""
    cuts = [(c.offset, c.offset + len(c.raw)) for c in analysis.citations]
    span = analysis.references_span
    if span is not None:
        # From the list's heading (`参考文献：`), which the span itself starts after.
        headings = [s.offset for s in analysis.sections if s.kind == REFERENCES and s.offset < span[0]]
        cuts.append((max(headings, default=span[0]), span[1]))
    pieces, at = [], 0
    for start, end in sorted(cuts):
        pieces.append(text[at : max(start, at)])
        at = max(at, end)
    pieces.append(text[at:])
    return " ".join(pieces)


def _report_language(report: str, analysis: ReportAnalysis) -> str:
    # The filter's language rule's sample, so both judge a report alike.
    return detect_language(report_sample(report, analysis.references_span))


def _host(url: str) -> str:
    """The host part of `page_key` (lowercased, `www.`, user info and default port dropped)."""
    return re.split(r"[/?]", page_key(url), maxsplit=1)[0]


def _trace_fields(trace: Trace, sources: list[str]) -> dict[str, Any]:
    stats = trace_stats(trace, report_only=False)
    # The validator's notion of observed: observation text plus the pages answered crawls read.
    observed = {page_key(url) for url in observed_urls(trace, include_crawled=True)}
    return {
        "steps": stats.steps,
        "subtasks": stats.subtasks,
        "tool_calls": stats.tool_calls,
        "searches": stats.searches,
        "crawls": stats.crawls,
        "observed_urls": len(observed),
        "cited_observed": sum(page_key(url) in observed for url in sources),
    }


def row_metrics(
    row: Mapping[str, Any], field: str | None = None, expected_language: str | None = None
) -> ReportMetrics:
    """Metrics of one JSONL row. The text is `row[field]`, else the first of `TEXT_FIELDS` the row
    has; text with trace tags is a trace (its report is the `<suggested_answer>`), else the report.
    The expected language: `expected_language`, else the row's `language`, else its question's."""
    name = field or next((f for f in TEXT_FIELDS if f in row), None)
    if name is None:
        raise InputError(f"row has none of the fields {', '.join(TEXT_FIELDS)}; name one with --field")
    if name not in row:
        raise InputError(f"row has no field {name!r}; name the report's field with --field")
    text = row[name]
    if text is None:
        text = ""  # a failed synth row has `trace: null`: an empty report, not a bad input
    if not isinstance(text, str):
        raise InputError(f"row field {name!r} is {type(text).__name__}, not text; name another with --field")
    trace = parse(text)
    traced = has_tags(trace)
    report = report_text(trace, bare_text_is_report=not traced) or ""
    given = row.get("language")
    question = next((row[f] for f in QUESTION_FIELDS if isinstance(row.get(f), str)), None)
    return report_metrics(
        report,
        trace=trace if traced else None,
        expected_language=expected_language or (given if isinstance(given, str) and given else None),
        question=question,
        usage=Usage.of_row(row),
    )


# Fields summed and averaged by `summarize_metrics`; tuples count their items.
_COUNTED = tuple(
    f.name
    for f in fields(ReportMetrics)
    if f.name not in ("language", "expected_language", "language_match", "missing_sections")
)


def summarize_metrics(metrics: Sequence[ReportMetrics]) -> dict[str, Any]:
    """Totals and means over reports, for a table: `<field>_total` and `<field>_mean` for each count
    (means over the reports that have the field: trace and usage fields over traced/metered rows;
    None when none has it), plus shares. `cited_observed_share` is pooled: all cited pages the
    traces observed over all cited pages of traced reports, so long reports weigh more."""
    out: dict[str, Any] = {"reports": len(metrics), "traced": sum(m.steps is not None for m in metrics)}
    for name in _COUNTED:
        values = [_count(getattr(m, name)) for m in metrics if getattr(m, name) is not None]
        out[f"{name}_total"] = sum(values) if values else None
        out[f"{name}_mean"] = sum(values) / len(values) if values else None
    lengths = [m.length for m in metrics]
    out["length_total"] = sum(lengths)
    out["length_mean"] = sum(lengths) / len(lengths) if lengths else None
    out["structure_complete_share"] = _share([m.structure_complete for m in metrics])
    out["language_match_share"] = _share([m.language_match for m in metrics if m.language_match is not None])
    traced = [m for m in metrics if m.cited_observed is not None]
    cited = sum(m.sources for m in traced)
    out["cited_observed_share"] = sum(m.cited_observed or 0 for m in traced) / cited if cited else None
    return out


def _count(value: int | float | tuple[int, ...]) -> int | float:
    return len(value) if isinstance(value, tuple) else value


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None
