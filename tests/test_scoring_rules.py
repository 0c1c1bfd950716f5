"""Rule metrics of reports (no judge) on the ten real DeepResearch Bench sample reports, an ores
trace with observed and unobserved cited URLs, and edge cases.

Expected counts come from deliberately simple regexes written here (these reports list references
as `[n] https://url - Title` under one heading and cite with `[n]`), or are counted by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.scoring.rules import ReportMetrics, report_metrics, row_metrics, summarize_metrics

from filter_support import good_trace

DRB = Path(__file__).resolve().parents[1] / "data" / "deepresearch_bench"
ROWS = [
    json.loads(line) for line in (DRB / "sample_reports_claude-3-7-sonnet.jsonl").read_text().splitlines()
]
LANGUAGE = {row["prompt"]: row["language"] for row in map(json.loads, (DRB / "query.jsonl").open())}

_REFERENCE = re.compile(r"^\[(\d+)\] (https?://\S+)", re.MULTILINE)
_MARKER = re.compile(r"\[[\d,\-\s]+\]")
_SINGLE = re.compile(r"\[(\d+)\]")


def _body(article: str) -> str:
    """The article before its reference heading (`参考文献：` or `References`, the last one)."""
    return article[: max(article.rfind("参考文献"), article.rfind("\nReferences"))]


def _row(report_id: int) -> dict:
    return next(row for row in ROWS if row["id"] == report_id)


def test_the_sample_holds_five_zh_and_five_en_reports():
    assert [row["id"] for row in ROWS] == [1, 2, 3, 4, 5, 51, 52, 53, 54, 55]
    assert [LANGUAGE[row["prompt"]] for row in ROWS] == ["zh"] * 5 + ["en"] * 5


@pytest.mark.parametrize("row", ROWS, ids=lambda row: str(row["id"]))
def test_drb_report_counts(row):
    article = row["article"]
    m = row_metrics(row)
    references = _REFERENCE.findall(article)
    body = _body(article)
    markers = _MARKER.findall(body)
    prose = _MARKER.sub(" ", body)

    assert m.references == len(references)
    assert m.citation_markers == len(markers)
    # Every listed URL is cited in these reports, and no two entries share a page.
    assert m.reference_urls == m.sources == len({url for _, url in references})
    assert m.domains == len({urlsplit(url).hostname.removeprefix("www.") for _, url in references})
    assert m.cjk_chars == len(re.findall(r"[\u4e00-\u9fff]", prose))
    # Latin-1 and Greek letters too: `Chávez` (report 53), `τ` (report 54).
    assert m.words == len(re.findall(r"[A-Za-zÀ-ÿα-ω0-9]+", prose))
    assert m.uncited_references == ()
    assert m.headings >= 10
    # Bare articles: no trace, no usage.
    assert m.steps is None and m.tool_calls is None and m.cited_observed is None and m.tokens is None
    # The row has no language; its prompt's language is expected, and DRB's query file agrees.
    assert m.expected_language == LANGUAGE[row["prompt"]]
    assert m.language == LANGUAGE[row["prompt"]] and m.language_match is True
    if row["id"] != 4:  # report 4 alone cites ranges such as [25-32]: see its own test
        assert m.cited_numbers == len(set(_SINGLE.findall(body))) == m.references
        assert m.malformed_citations == 0 and m.unresolved_citations == ()


def test_zh_report_is_measured_in_characters():
    m = row_metrics(_row(1))
    # Counted by hand from its 参考文献 list: 16 entries, and 14 hosts (epochtimes.com and
    # ndrc.gov.cn twice each; 163.com and c.m.163.com are different hosts).
    assert (m.references, m.sources, m.domains) == (16, 16, 14)
    assert m.cjk_chars > 3000 > m.words
    assert m.length == m.cjk_chars + m.words
    assert m.missing_sections == () and m.structure_complete


def test_en_report_is_measured_in_words():
    m = row_metrics(_row(55))
    assert m.references == 15 and m.cited_numbers == 15
    assert m.cjk_chars == 0 and m.words > 3000
    assert m.language == "en"


def test_report_4_cites_ranges_past_its_references():
    article = _row(4)["article"]
    body = _body(article)
    m = row_metrics(_row(4))
    assert m.references == 12
    # `[25-32]` (a range) and `[25-31,25-32]` name 25..32, which the 12-entry list lacks.
    assert "[25-32]" in body
    assert m.unresolved_citations == tuple(range(25, 33))
    assert m.cited_numbers == 12 + 8
    # Markers such as `[41-23]` run backwards: they name no reference at all.
    backwards = [
        marker
        for marker in _MARKER.findall(body)
        if any(int(low) > int(high) for low, high in re.findall(r"(\d+)\s*-\s*(\d+)", marker))
    ]
    assert m.malformed_citations == len(backwards) > 0


def test_summary_of_the_ten_reports():
    metrics = [row_metrics(row) for row in ROWS]
    summary = summarize_metrics(metrics)
    references = [len(_REFERENCE.findall(row["article"])) for row in ROWS]
    assert summary["reports"] == 10 and summary["traced"] == 0
    assert summary["references_total"] == sum(references)
    assert summary["references_mean"] == pytest.approx(sum(references) / 10)
    assert summary["citation_markers_total"] == sum(len(_MARKER.findall(_body(r["article"]))) for r in ROWS)
    assert summary["unresolved_citations_total"] == 8  # report 4's 25..32
    assert summary["language_match_share"] == 1.0
    assert summary["structure_complete_share"] == sum(m.structure_complete for m in metrics) / 10
    assert summary["tool_calls_mean"] is None and summary["cited_observed_share"] is None
    assert summary["tokens_total"] is None
    json.dumps(summary)  # printable as --json


# --- an ores trace -------------------------------------------------------------------------------


def _trace_with_unobserved_and_crawled() -> str:
    trace = good_trace()
    # [4] now points at a page no observation showed.
    trace = trace.replace(
        "[4]. https://en.wikipedia.org/wiki/Thylakoid", "[4]. https://example.org/never-seen"
    )
    # [3] is a page the trace only crawled: its text never shows the address, the crawl read it.
    trace = trace.replace(
        "<crawl_page>https://en.wikipedia.org/wiki/Calvin_cycle</crawl_page>",
        "<crawl_page>https://example.org/calvin</crawl_page>",
    )
    return trace.replace("[3]. https://en.wikipedia.org/wiki/Calvin_cycle", "[3]. https://example.org/calvin")


def test_trace_cited_urls_observed_and_not():
    row = {
        "id": "t1",
        "question": "What do the light reactions and the Calvin cycle produce?",
        "language": "en",
        "trace": _trace_with_unobserved_and_crawled(),
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "cost_usd": 0.002,
    }
    m = row_metrics(row)
    # By hand from tests/fixtures/trace_example.txt: two subtasks, each one search and one crawl.
    assert (m.subtasks, m.tool_calls, m.searches, m.crawls) == (2, 4, 2, 2)
    assert m.steps is not None and m.steps > m.tool_calls
    assert (m.references, m.sources, m.cited_numbers) == (4, 4, 4)
    # [1] and [2] appear in search results, [3] was crawled, [4] was never seen.
    assert m.cited_observed == 3
    assert m.cited_observed_share == pytest.approx(0.75)
    assert m.domains == 2  # en.wikipedia.org, example.org
    assert (m.prompt_tokens, m.completion_tokens, m.tokens, m.cost_usd) == (1200, 300, 1500, 0.002)
    assert m.language == m.expected_language == "en" and m.language_match is True

    good = row_metrics({"trace": good_trace()})
    assert good.cited_observed == good.sources == 4
    summary = summarize_metrics([m, good, row_metrics(_row(51))])
    assert summary["traced"] == 2
    assert summary["cited_observed_share"] == pytest.approx(7 / 8)  # pooled over traced reports
    assert summary["tool_calls_mean"] == 4 and summary["tokens_total"] == 1500


def test_trace_rows_of_learn_sft_eval_carry_model_tokens():
    m = row_metrics({"text": good_trace(), "model_tokens": 900})
    assert m.tokens == 900 and m.prompt_tokens is None and m.tool_calls == 4


def test_the_report_of_a_trace_is_its_suggested_answer():
    trace = good_trace()
    report = trace[
        trace.index("<suggested_answer>") + len("<suggested_answer>") : trace.index("</suggested_answer>")
    ]
    from_row = row_metrics({"trace": trace})
    from_report = report_metrics(report)
    assert from_row.citation_markers == from_report.citation_markers == 6  # [2] [1][4] [3] [1][3]
    assert from_row.words == from_report.words and from_report.steps is None


# --- edge cases ----------------------------------------------------------------------------------


def test_words_and_characters_counted_by_hand():
    m = report_metrics("## Intro\nOne two three [1]. 中文字\n\n## References\n[1] https://a.org/x - A page\n")
    assert (m.words, m.cjk_chars) == (4, 3)  # Intro One two three; 中文字; the list is not prose
    assert (m.citation_markers, m.references, m.sources) == (1, 1, 1)


def test_no_references_section():
    m = report_metrics(
        "## Introduction\nIt rains [1].\n\n## Findings\nMore [2][1].\n\n## Conclusion\nDone.\n"
    )
    assert m.references == 0 and m.reference_urls == 0 and m.sources == 0 and m.domains == 0
    assert m.citation_markers == 3 and m.cited_numbers == 2
    assert m.unresolved_citations == (1, 2)
    assert m.missing_sections == ("references",) and not m.structure_complete


def test_citation_to_a_missing_reference_and_an_uncited_reference():
    report = (
        "## Introduction\nA [1] and [3].\n\n## Body\nB.\n\n## Conclusion\nC.\n\n## References\n"
        "[1] https://a.org/1 - One\n[2] https://www.b.org/2 - Two\n"
    )
    m = report_metrics(report)
    assert m.unresolved_citations == (3,)
    assert m.uncited_references == (2,)
    assert (m.references, m.reference_urls, m.sources) == (2, 2, 1)  # [2] is listed, not cited


def test_links_in_the_text_are_sources():
    m = report_metrics(
        "## Introduction\nSee [the site](https://www.example.com/a) and [x](http://example.com/a/)."
    )
    assert m.sources == 1 and m.domains == 1  # one page, two spellings
    assert m.citation_markers == 0


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_report(text):
    m = report_metrics(text)
    assert m.headings == m.words == m.cjk_chars == m.citation_markers == m.references == m.sources == 0
    assert m.missing_sections == ("introduction", "body", "conclusion", "references")
    assert m.language == "und" and m.language_match is None
    assert m.cited_observed_share is None
    summary = summarize_metrics([m])
    assert summary["language_match_share"] is None and summary["length_mean"] == 0


def test_failed_synth_row_has_an_empty_report():
    m = row_metrics({"id": "f", "question": "Why?", "trace": None, "status": "failed", "prompt_tokens": 0})
    assert m.references == 0 and m.language == "und" and m.steps is None
    assert m.prompt_tokens == 0 and m.tokens == 0


def test_trace_without_a_report():
    trace = good_trace()
    cut = trace[: trace.index("<suggested_answer>")]
    m = row_metrics({"trace": cut})
    assert m.tool_calls == 4 and m.references == 0 and m.sources == 0
    assert m.cited_observed == 0 and m.cited_observed_share is None


def test_language_mismatch_and_unknown():
    en = "## Introduction\nThe quick brown fox jumps over the lazy dog near the river bank today.\n"
    assert report_metrics(en, expected_language="zh").language_match is False
    assert report_metrics(en, question="这是什么？").expected_language == "zh"
    assert report_metrics(en, expected_language="und").language_match is None
    assert report_metrics(en).language_match is None


def test_summary_of_nothing():
    summary = summarize_metrics([])
    assert summary["reports"] == 0 and summary["words_mean"] is None and summary["length_mean"] is None


def test_field_choice():
    m = row_metrics({"answer": "## Introduction\nText [1].", "article": ""}, field="answer")
    assert m.citation_markers == 1
    with pytest.raises(InputError):
        row_metrics({"id": 1, "body": "x"})
    with pytest.raises(InputError):
        row_metrics({"answer": 3}, field="answer")
    with pytest.raises(InputError):
        row_metrics({"article": "x"}, field="answer")


def test_metrics_are_plain_data():
    m = row_metrics(_row(4))
    data = m.to_dict()
    assert isinstance(m, ReportMetrics)
    assert data["unresolved_citations"] == list(range(25, 33))
    assert data["length"] == m.words + m.cjk_chars
    json.dumps(data, ensure_ascii=False)
