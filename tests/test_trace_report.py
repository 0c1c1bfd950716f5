"""Extraction from reports (references, citations, sections) and from traces (calls, URLs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oresearch_cli.trace import (
    analyze_report,
    cited_urls,
    extract_citations,
    extract_references,
    find_urls,
    observed_urls,
    page_key,
    parse,
    tool_calls,
)

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"
DRB = Path(__file__).parent.parent / "data" / "deepresearch_bench" / "sample_reports_claude-3-7-sonnet.jsonl"


@pytest.mark.parametrize(
    ("line", "number", "url", "title"),
    [
        ("[1]. https://a.org/x - Title A", 1, "https://a.org/x", "Title A"),
        ("[2] https://a.org/y - Title B - Site", 2, "https://a.org/y", "Title B - Site"),
        ("3. [Title C](https://a.org/z)", 3, "https://a.org/z", "Title C"),
        ("[4] Title D. https://a.org/w", 4, "https://a.org/w", "Title D"),
        ("- [5] https://a.org/v - Title E", 5, "https://a.org/v", "Title E"),
        (
            "【6】 https://zh.wikipedia.org/zh-hans/中產階級 - 中产阶级 - 维基百科",
            6,
            "https://zh.wikipedia.org/zh-hans/中產階級",
            "中产阶级 - 维基百科",
        ),
        ("[^7]: https://a.org/u", 7, "https://a.org/u", ""),
        (
            "8. [Wiki](https://en.wikipedia.org/wiki/Foo_(bar))",
            8,
            "https://en.wikipedia.org/wiki/Foo_(bar)",
            "Wiki",
        ),
    ],
)
def test_reference_formats(line: str, number: int, url: str, title: str) -> None:
    [ref] = extract_references(f"## Intro\ntext [1]\n\n## References\n{line}\n")
    assert (ref.number, ref.url, ref.title) == (number, url, title)


def test_reference_list_ends_at_the_next_heading() -> None:
    refs = extract_references("## References\n[1] https://a.org - A\n\n## Appendix\n[2] https://b.org - B\n")
    assert [r.number for r in refs] == [1]


def test_reference_list_without_heading_is_found_at_the_end() -> None:
    text = "Body text [1] and [2].\n\n[1] https://a.org - A\n[2] https://b.org - B\n"
    analysis = analyze_report(text)
    assert [r.number for r in analysis.references] == [1, 2]
    assert analysis.cited_numbers == [1, 2]


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("fact [1].", [(1,)]),
        ("fact [1][2].", [(1,), (2,)]),
        ("fact [1, 2].", [(1, 2)]),
        ("fact [1-3].", [(1, 2, 3)]),
        ("fact [1–3, 5].", [(1, 2, 3, 5)]),
        ("事实【1】【2】。", [(1,), (2,)]),
        ("事实[1，2]。", [(1, 2)]),
        ("see [^4]", [(4,)]),
        ("a [link](https://a.org) and ![img](x.png) and [1](https://b.org)", []),
        ("in the year [2030] and id [2505.01781] and [3.63亿美元]", []),
    ],
)
def test_citation_forms(text: str, numbers: list[tuple[int, ...]]) -> None:
    assert [c.numbers for c in extract_citations(text)] == numbers


def test_chunk_ids_are_malformed_citations() -> None:
    [citation] = extract_citations("price [41-28,32-17]")
    assert citation.malformed and citation.numbers == ()


def test_reference_list_is_not_counted_as_citations() -> None:
    analysis = analyze_report(
        "## Intro\nA [1].\n\n## References\n[1] https://a.org - A [2024]\n[2] https://b.org - B\n"
    )
    assert analysis.cited_numbers == [1]
    assert len(analysis.references) == 2


def test_cited_urls_follow_citation_order_then_body_links() -> None:
    text = "## Intro\nB [2] then A [1], see [site](https://c.org/page).\n\n## References\n[1] https://a.org - A\n[2] https://b.org - B\n"
    assert cited_urls(text) == ["https://b.org", "https://a.org", "https://c.org/page"]


def test_find_urls_and_page_keys() -> None:
    text = "see [A](https://a.org/x) and https://b.org/y). Also（https://c.org/z）and https://en.wikipedia.org/wiki/Foo_(bar)."
    assert find_urls(text) == [
        "https://a.org/x",
        "https://b.org/y",
        "https://c.org/z",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
    ]
    assert page_key("HTTP://www.Example.org/a/#top") == page_key("https://example.org/a")
    assert page_key("https://zh.wikipedia.org/wiki/%E4%B8%AD") == page_key("https://zh.wikipedia.org/wiki/中")
    assert page_key("https://a.org/?q=1") != page_key("https://a.org/?q=2")


def test_corpus_urls_are_sources_that_reports_cite() -> None:
    """A local corpus without web addresses names its documents corpus://NAME/ID (the Chinese
    classics corpus does): the agent cites them, and the validator counts them, like web pages."""
    from oresearch_cli.agent.sources import SourceBook
    from oresearch_cli.trace.urls import is_url

    text = "见[山鬼](corpus://zh/%E5%B1%B1%E9%AC%BC)，又见 corpus://zh/楚辞/九歌/东君。和 https://a.org/x"
    assert find_urls(text) == [
        "corpus://zh/%E5%B1%B1%E9%AC%BC",
        "corpus://zh/楚辞/九歌/东君",
        "https://a.org/x",
    ]
    assert page_key("corpus://zh/%E5%B1%B1%E9%AC%BC") == page_key("corpus://zh/山鬼")
    assert is_url("corpus://zh/山鬼") and not is_url("corpus://zh") and not is_url("file:///etc/passwd")
    book = SourceBook()
    assert book.add("corpus://zh/山鬼", "山鬼") == 1 and book.add("corpus://zh/%E5%B1%B1%E9%AC%BC") == 1
    report = (
        "## 引言\n山鬼是山中女神[1]。\n\n## 结论\n见上[1]。\n\n## 参考文献\n[1]. corpus://zh/山鬼 - 山鬼\n"
    )
    analysis = analyze_report(report)
    assert [r.url for r in analysis.references] == ["corpus://zh/山鬼"]


def test_trace_extraction() -> None:
    trace = parse(FIXTURE.read_text(encoding="utf-8"))
    calls = tool_calls(trace)
    assert [(c.kind, c.subtask, c.count) for c in calls] == [
        ("web_search", 1, 4),
        ("crawl_page", 1, None),
        ("web_search", 2, 3),
        ("crawl_page", 2, None),
    ]
    assert calls[0].queries == ("light-dependent reactions products", "thylakoid membrane photosynthesis")
    assert calls[1].urls == ("https://en.wikipedia.org/wiki/Light-dependent_reactions",)
    assert all(c.answered for c in calls)
    assert observed_urls(trace) == [
        "https://en.wikipedia.org/wiki/Light-dependent_reactions",
        "https://en.wikipedia.org/wiki/Photosynthesis",
        "https://en.wikipedia.org/wiki/Thylakoid",
        "https://en.wikipedia.org/wiki/Calvin_cycle",
    ]
    assert cited_urls(trace) == [
        "https://en.wikipedia.org/wiki/Photosynthesis",
        "https://en.wikipedia.org/wiki/Light-dependent_reactions",
        "https://en.wikipedia.org/wiki/Thylakoid",
        "https://en.wikipedia.org/wiki/Calvin_cycle",
    ]


def test_unanswered_call_is_marked() -> None:
    calls = tool_calls(parse("<think>t</think><web_search>a</web_search><think>u</think>"))
    assert [c.answered for c in calls] == [False]


# Checked by eye against the files: reference count and the highest cited number of each article.
DRB_EXPECTED = {
    "1": (16, 16),
    "2": (12, 12),
    "3": (14, 14),
    "4": (12, 32),  # cites chunk ids such as [25-29]: numbers past its 12 references
    "5": (6, 6),
    "51": (17, 17),
    "52": (14, 14),
    "53": (21, 21),
    "54": (21, 21),
    "55": (15, 15),
}


def _drb() -> list[dict]:
    return [json.loads(line) for line in DRB.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("record", _drb(), ids=lambda r: str(r["id"]))
def test_drb_sample_extraction(record: dict) -> None:
    analysis = analyze_report(record["article"])
    n_refs, top_cited = DRB_EXPECTED[str(record["id"])]
    assert [r.number for r in analysis.references] == list(range(1, n_refs + 1))
    assert all(r.url and r.url.startswith("http") and r.title for r in analysis.references)
    assert analysis.citations and max(analysis.cited_numbers) == top_cited
    # Every reference is cited in these reports, and no reference line is mistaken for a citation.
    assert set(range(1, n_refs + 1)) <= set(analysis.cited_numbers)
    span = analysis.references_span
    assert span is not None and all(not span[0] <= c.offset < span[1] for c in analysis.citations)


def test_drb_reference_titles_by_eye() -> None:
    by_id = {str(r["id"]): analyze_report(r["article"]) for r in _drb()}
    first = by_id["1"].references[0]
    assert (first.url, first.title) == (
        "https://www.epochtimes.com/gb/14/8/27/n4234092.htm",
        "中国社会九大阶层最新划分 网络热传 | 大纪元",
    )
    last = by_id["55"].references[-1]
    assert last.url == "https://pineindicators.com/trading-strategy-evaluation-techniques/"
    assert last.title == "Essential Trading Strategy Evaluation Techniques for Success"
    assert by_id["55"].sections[-1].title == "References"
