"""The summarizer: subtask answers + the numbered sources -> the cited report.

The model writes Introduction, body sections and Conclusion with [n] citations, as JSON (the
report schema: `report_from_json` lays it out in Markdown) or as Markdown; the orchestrator
then enforces what the format promises: prose with no heading at all gets the sections by its
paragraphs (small models rarely write headings), any reference list the model wrote is cut off, citation
numbers that name no observed source are removed, and the References section is written from the
sources actually cited (`[n]. URL - Title`, every URL observed by a tool). A reply without the
sections, without a single valid citation, or (to a Chinese question) not in Chinese as the filter's
language rule judges it, is retried once, then replaced by a report assembled from the subtask
answers under the language's headings (recorded as a failure).
"""

from __future__ import annotations

from typing import Any

from oresearch_cli.agent.context import Context, Failure
from oresearch_cli.agent.pieces import (
    PieceError,
    clean_text,
    json_text,
    one_line,
    rewrite_citations,
    source_numbers,
    with_citations,
    written_in,
)
from oresearch_cli.agent.prompts import phrase
from oresearch_cli.agent.schemas import schema
from oresearch_cli.agent.sources import SourceBook
from oresearch_cli.agent.steps import REPORT, StepRecord
from oresearch_cli.llm import ChatResult
from oresearch_cli.trace import analyze_report
from oresearch_cli.trace.report import BODY, classify_heading


def references_section(cited: list[int], book: SourceBook, language: str, level: int = 2) -> str:
    lines = []
    for number in sorted(cited):
        source = book.get(number)
        title = " ".join(source.title.split()) or source.url
        lines.append(f"[{number}]. {source.url} - {title}")
    return f"{'#' * level} {phrase(language, 'heading_references')}\n" + "\n".join(lines)


def sectioned(prose: str, language: str) -> str:
    """Report prose written without any heading, given the sections by its paragraphs: the first
    introduces, the last concludes, the rest is the body. Fewer than three paragraphs stay as they
    are (and fail the section check): there is no honest way to split them."""
    paragraphs = [p.strip() for p in prose.split("\n\n") if p.strip()]
    if len(paragraphs) < 3:
        return prose
    heading = {k: phrase(language, f"heading_{k}") for k in ("introduction", "body", "conclusion")}
    middle = "\n\n".join(paragraphs[1:-1])
    return (
        f"## {heading['introduction']}\n{paragraphs[0]}\n\n## {heading['body']}\n{middle}\n\n"
        f"## {heading['conclusion']}\n{paragraphs[-1]}"
    )


def report_from_json(data: dict[str, Any], n_sources: int, language: str) -> str:
    """The report schema's object as Markdown under the language's headings; each section's listed
    sources become its citations when its text cites none."""
    parts = [
        f"## {phrase(language, 'heading_introduction')}\n{clean_text(str(data.get('introduction') or ''))}"
    ]
    sections = data.get("sections")
    for section in sections if isinstance(sections, list) else []:
        if not isinstance(section, dict):
            continue
        heading = one_line(str(section.get("heading") or ""), 80)
        if not heading or classify_heading(heading) != BODY:  # one named "Introduction" would hide the body
            heading = phrase(language, "heading_body")
        text = with_citations(
            clean_text(str(section.get("text") or "")),
            source_numbers(section.get("sources"), n_sources),
            n_sources,
        )
        if text:
            parts.append(f"## {heading}\n{text}")
    parts.append(
        f"## {phrase(language, 'heading_conclusion')}\n{clean_text(str(data.get('conclusion') or ''))}"
    )
    return "\n\n".join(parts)


def finalize_report(text: str, book: SourceBook, language: str, *, truncated: bool = False) -> str:
    """The model's report (JSON or Markdown) made to keep the format's promises, or `PieceError`."""
    if truncated:
        raise PieceError("the reply was cut off at max_tokens; write a shorter report")
    found = json_text(text, "introduction")
    if found is not None:
        text = report_from_json(found[1], len(book), language)
    body = clean_text(text)
    analysis = analyze_report(body)
    headings = [s for s in analysis.sections if s.kind == "references"]
    if headings:
        body = body[: headings[0].offset]
    elif analysis.references_span is not None:
        body = body[: analysis.references_span[0]]
    body = body.rstrip()
    analysis = analyze_report(body)
    if not analysis.sections:
        body = sectioned(body, language)
        analysis = analyze_report(body)
    missing = [m for m in analysis.missing_sections if m != "references"]
    if missing:
        raise PieceError(f"it lacks the {', '.join(missing)} section{'s' * (len(missing) > 1)}")
    body, cited = rewrite_citations(body, None, set(range(1, len(book) + 1)))
    if not cited:
        raise PieceError(f"it cites none of the sources [1]..[{len(book)}]")
    levels = [s.level for s in analysis.sections if s.kind == "conclusion" and s.level]
    return f"{body}\n\n{references_section(cited, book, language, levels[-1] if levels else 2)}"


def fallback_report(ctx: Context, answers: list[tuple[str, str]], book: SourceBook) -> str:
    """A report assembled from the subtask answers (their citations already use `book`'s numbers)."""
    cited: list[int] = []
    body = []
    for subtask, answer in answers:
        answer, numbers = rewrite_citations(answer, None, set(range(1, len(book) + 1)))
        cited += numbers
        body.append(f"### {subtask}\n{answer}")
    cited = list(dict.fromkeys(cited))
    citations = "".join(f"[{n}]" for n in cited[:5])
    # With nothing cited, "the findings above answer it with the cited sources" would be untrue.
    conclusion = ctx.phrase(
        "fallback_conclusion" if cited else "fallback_conclusion_none", citations=citations
    )
    parts = [
        f"## {ctx.phrase('heading_introduction')}\n{ctx.phrase('fallback_intro', question=' '.join(ctx.question.split()))}",
        f"## {ctx.phrase('heading_body')}\n" + "\n\n".join(body),
        f"## {ctx.phrase('heading_conclusion')}\n{conclusion.strip()}",
    ]
    if cited:
        parts.append(references_section(cited, book, ctx.language))
    return "\n\n".join(parts)


async def write_report(
    ctx: Context, answers: list[tuple[str, str]], book: SourceBook
) -> tuple[str, StepRecord]:
    """(report text, the record of this step: its log entry, failures included)."""
    listed = "\n\n".join(f"{i}. {subtask}\n{answer}" for i, (subtask, answer) in enumerate(answers, 1))

    def parse(result: ChatResult) -> str:
        report = finalize_report(result.text, book, ctx.language, truncated=result.truncated)
        # Judged as the filter judges it: the prose of the body, the reference list aside.
        span = analyze_report(report).references_span
        if not written_in(report[: span[0]] if span else report, ctx.language):
            raise PieceError(ctx.phrase("not_in_language"))
        return report

    report: str | None = None
    failures: list[Failure] = []
    if len(book):
        report, failures = await ctx.ask(
            "summarizer",
            "report",
            {
                "question": ctx.question,
                "answers": listed,
                "sources": book.render(limit=ctx.options.max_sources),
            },
            parse,
            schema=schema("report", n_sources=len(book)),
            expected=ctx.phrase("expected_report"),
        )
    if report is None:
        report = fallback_report(ctx, answers, book)
        reason = "no usable report in two replies" if len(book) else "no sources were observed"
        failures.append(Failure("report", reason, fallback="report assembled from the subtask answers"))
    return report, StepRecord(REPORT, None, failures)
