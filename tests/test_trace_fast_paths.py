"""The trace module's fast paths find exactly what the straightforward scans they replace find.

Each reference below is the plain implementation (a regex `finditer` over the whole text, a
count per lookup): the fast code must agree with it on reports, traces and random fragments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oresearch_cli.trace import analyze_report, find_urls, parse, validate, validate_report
from oresearch_cli.trace import report as rp
from oresearch_cli.trace.model import LineIndex, SubtaskList
from oresearch_cli.trace.tags import TAG_RE, TAG_SCAN_RE
from oresearch_cli.trace.urls import URL_RE, clean_url

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"
DRB = Path(__file__).parent.parent / "data" / "deepresearch_bench" / "sample_reports_claude-3-7-sonnet.jsonl"

# Fragments that exercise headings, reference entries, citations, code fences, URLs and tags.
_FRAGMENTS = [
    "\n",
    "\n\n",
    " ",
    "  ",
    "\t",
    "\r",
    "x",
    "word ",
    "中文",
    "。",
    ":",
    "：",
    "*",
    "**",
    "_",
    "`",
    "#",
    "## ",
    "### ",
    "####### ",
    "   # ",
    "    # ",
    "Introduction",
    "Conclusion",
    "References",
    "参考文献",
    "结论",
    "Summary",
    "Overview:",
    "**References**",
    "Executive Summary",
    "1. ",
    "一、",
    "(一) ",
    "IV. ",
    "A. ",
    "```",
    "~~~",
    "```python\n",
    "[1]",
    "[2]",
    "[1, 2]",
    "[1-3]",
    "[3-1]",
    "[1–200]",
    "【4】",
    "[^5]",
    "![i](x.png)",
    "[t](https://l.org/a)",
    "[2030]",
    "[12](x)",
    "[7]. ",
    "(3) ",
    "- ",
    "• ",
    "+ ",
    "https://a.org/x",
    "http://b.org/y?q=1",
    "HTTPS://C.ORG",
    "hTTpſ://d.org",
    "://",
    "https:",
    "https://",
    "(https://e.org/p)",
    "<https://f.org>",
    '"',
    "'",
    "，",
    "|",
    "<think>",
    "</think>",
    "<Think >",
    "< think>",
    "</ subtask >",
    "<subtask_list>",
    "<SUGGESTED ANSWER>",
    "<plan>",
    "<observation>",
    "</observation>",
    "<web_search>",
    "<crawl_page>",
    "<|im_end|>",
    "a < b",
]
soup_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=60).map("".join)


def _drb_reports() -> list[str]:
    return [
        json.loads(line)["article"] for line in DRB.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _corpus() -> list[str]:
    example = FIXTURE.read_text(encoding="utf-8")
    report = example[example.index("<suggested_answer>") + len("<suggested_answer>") :]
    return [example, report, *_drb_reports()]


# -- references: the scans as they were before the fast paths ----------------------------------


def _ref_sections(text: str) -> list[rp.Section]:
    code = [
        (m.start(), m.end())
        for m in re.finditer(
            r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", text, re.MULTILINE | re.DOTALL
        )
    ]
    found: list[rp.Section] = []
    for m in rp._ATX.finditer(text):
        if rp._inside(m.start(), code):
            continue
        title = m.group("title").strip()
        found.append(rp.Section(title, rp.classify_heading(title), len(m.group("hashes")), m.start()))
    atx = {s.offset for s in found}
    for m in rp._LINE.finditer(text):
        if m.start() in atx or rp._inside(m.start(), code) or m.group("title").lstrip().startswith("#"):
            continue
        kind = rp.classify_heading(m.group("title"), exact=True)
        if kind:
            found.append(rp.Section(rp._EMPHASIS.sub("", m.group("title")).strip(), kind, 0, m.start()))
    found.sort(key=lambda s: s.offset)
    return rp._mark_titles(found)


def _ref_references(text: str) -> list[rp.Reference]:
    found: list[rp.Reference] = []
    taken = set()
    for m in rp._ENTRY.finditer(text):
        number = next(int(g) for g in m.group("a", "b", "c", "d") if g is not None)
        url, title = rp._parse_entry(m.group("rest") or "")
        if url is None:
            following = text[m.end() :].lstrip("\n").split("\n", 1)[0]
            if URL_RE.match(following.strip()):
                url = clean_url(following.strip())
        found.append(rp.Reference(number, url, title, m.start()))
        taken.add(m.start())
    for m in rp._BULLET.finditer(text):
        if m.start() in taken or rp._ENTRY.match(m.group(0)):
            continue
        url, title = rp._parse_entry(m.group("rest"))
        if url:
            found.append(rp.Reference(None, url, title, m.start()))
    found.sort(key=lambda r: r.offset)
    return found


def _ref_citations(text: str) -> list[tuple[tuple[int, ...], int, str, bool]]:
    found = []
    for m in rp._CITATION.finditer(text):
        numbers: list[int] = []
        malformed = False
        for part in rp._PART.finditer(m.group("body")):
            low = int(part.group(1))
            high = int(part.group(2)) if part.group(2) else low
            if high < low or high - low > rp._MAX_RANGE:
                malformed = True
                break
            numbers += [n for n in range(low, high + 1) if n <= rp.MAX_REFERENCE_NUMBER]
        if malformed:
            found.append(((), m.start(), m.group(0), True))
        elif numbers:
            found.append((tuple(numbers), m.start(), m.group(0), False))
    return found


def _ref_urls(text: str) -> list[str]:
    return [cleaned for m in URL_RE.finditer(text) if (cleaned := clean_url(m.group(0)))]


def _check_report_scans(text: str) -> None:
    assert rp.find_sections(text) == _ref_sections(text)
    assert rp.parse_references(text) == _ref_references(text)
    got = [(c.numbers, c.offset, c.raw, c.malformed) for c in rp.find_citations(text)]
    assert got == _ref_citations(text)
    assert find_urls(text) == _ref_urls(text)


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(_corpus())))
def test_report_scans_agree_on_real_reports(index: int) -> None:
    _check_report_scans(_corpus()[index])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(soup_text)
def test_report_scans_agree_on_fragments(text: str) -> None:
    _check_report_scans(text)


_KEYWORDS = [
    "references",
    "Sources and References",
    "BIBLIOGRAPHY",
    "参考文献",
    "executive summary",
    "Concluding Remarks",
    "conclusion and outlook",
    "结论与展望",
    "Introduction",
    "Background",
    "Body",
]
heading_lines = st.builds(
    lambda lead, hashes, number, emphasis, keyword, tail: (
        lead + hashes + number + emphasis + keyword + emphasis[::-1] + tail
    ),
    st.sampled_from(["", " ", "   ", "    ", "\t"]),
    st.sampled_from(["", "", "# ", "## ", "#### ", "#"]),
    st.sampled_from(["", "1. ", "第一章 ", "（二）", "IV. ", "A. ", "2.3 "]),
    st.one_of(st.sampled_from(["", "**", "_", "`"]), st.integers(1, 25).map(lambda n: "*_" * n)),
    st.sampled_from(_KEYWORDS),
    st.sampled_from(["", ":", "：", " #", "  ", "\t", " " * 40, " x" * 20]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(heading_lines, soup_text), min_size=1, max_size=8).map("\n".join))
def test_heading_lines_of_every_length_agree(text: str) -> None:
    assert rp.find_sections(text) == _ref_sections(text)


@pytest.mark.parametrize("width", [59, 60, 61])
@pytest.mark.parametrize("indent", ["", "   ", "\t "])
def test_bare_heading_line_at_the_length_limit(width: int, indent: str) -> None:
    padding = width - len("References")
    line = "*" * (padding // 2) + "References" + "*" * (padding - padding // 2)
    text = f"## Intro\nText [1].\n{indent}{line}  \n[1] https://a.org/x - A\n"
    assert rp.find_sections(text) == _ref_sections(text)
    assert [s.kind for s in rp.find_sections(text)][-1:] == (
        ["references"] if width <= 60 else ["introduction"]
    )


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("hHtTpPsSſ:/.a <[(\n"), max_size=40))
def test_url_scan_agrees_on_dense_url_alphabet(text: str) -> None:
    assert find_urls(text) == _ref_urls(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(soup_text, st.text(max_size=80)))
def test_tag_scan_pattern_matches_where_tag_pattern_does(text: str) -> None:
    assert [m.span() for m in TAG_SCAN_RE.finditer(text)] == [m.span() for m in TAG_RE.finditer(text)]


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("12٣ \n\t\u3000.)、:：ax-"), max_size=30))
def test_subtask_list_numbering_split_is_unchanged(text: str) -> None:
    old = re.compile(r"(?:^|(?<=\s))\d{1,2}\s*[.)、:：]\s+")
    numbered = [part.strip() for part in old.split(text.strip())[1:] if part.strip()]
    if numbered:
        assert SubtaskList(text).items == numbered


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("ab\n"), max_size=60), st.lists(st.integers(-2, 70), max_size=20))
def test_line_index_counts_lines_like_a_count(text: str, offsets: list[int]) -> None:
    index = LineIndex(text)
    for offset in offsets:
        expected = None if offset < 0 else text.count("\n", 0, offset) + 1
        assert index.line(offset) == expected


def test_validate_reuses_a_given_analysis_only_for_its_own_text() -> None:
    example = FIXTURE.read_text(encoding="utf-8")
    trace = parse(example)
    assert trace.report is not None
    plain = validate(trace)
    assert validate(trace, analysis=analyze_report(trace.report.text)) == plain
    # An analysis of some other text is not used: the report is analyzed anew.
    assert validate(trace, analysis=analyze_report("## Intro\nunrelated [7]\n")) == plain
    report = trace.report.text
    assert validate_report(report, analysis=analyze_report(report)) == validate_report(report)
    assert validate(report, report_only=True, analysis=analyze_report(report)) == validate(
        report, report_only=True
    )
