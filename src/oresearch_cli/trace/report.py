"""What a report says about its sources: sections, the reference list, in-text citations.

Works on any Markdown report, from a trace's `<suggested_answer>` or a bare article (a
DeepResearch Bench report), English or Chinese. Offsets are indices into the report text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from oresearch_cli.trace.urls import MARKDOWN_LINK_RE, URL_RE, clean_url, find_urls, unique

INTRODUCTION = "introduction"
BODY = "body"
CONCLUSION = "conclusion"
REFERENCES = "references"
REQUIRED_SECTIONS = (INTRODUCTION, BODY, CONCLUSION, REFERENCES)

_ATX = re.compile(r"^[ \t]{0,3}(?P<hashes>#{1,6})[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# A short line on its own, possibly bold, possibly ending in a colon: `参考文献：`, `**References**`.
_LINE = re.compile(r"^[ \t]*(?P<title>[^\n]{1,60}?)[ \t]*$", re.MULTILINE)
_NUMBERING = re.compile(
    r"^(?:第[一二三四五六七八九十百\d]+[章节部分篇][、.．:：\s]*"
    r"|[(（]?[一二三四五六七八九十百]+[)）]?[、.．:：\s]*"
    r"|[(（]?\d+(?:\.\d+)*[)）]?[.、．:：)]?\s*"
    r"|[IVXLC]+[.、．:：)]\s*"
    r"|[A-H][.、．:：)]\s+)"
)
_EMPHASIS = re.compile(r"[*_`]+")

_REFERENCES = re.compile(
    r"^(?:references?|reference list|list of references|sources?|sources (?:and|&) references"
    r"|references (?:and|&) sources|bibliography|works cited|citations?|cited sources|further reading"
    r"|参考文献|参考资料|参考来源|参考链接|参考|引用|引用来源|引用文献|引用资料|文献|资料来源|信息来源|数据来源|来源)$"
)
_INTRO_FIRST = re.compile(r"executive summary|执行摘要")
_CONCLUSION = re.compile(
    r"conclusions?\b|concluding|final thoughts|closing thoughts|summary\b|wrap[- ]up|key takeaways"
    r"|结论|总结|结语|小结|结束语"
)
_INTRO = re.compile(
    r"introduction|\bintro\b|overview|background|preface|abstract|引言|简介|概述|概况|前言|背景|导言|绪论|摘要|导论|序言"
)
# A bare line is a heading only when it is nothing but the keyword.
_INTRO_EXACT = re.compile(
    r"^(?:introduction|intro|overview|background|executive summary|preface|abstract"
    r"|引言|简介|概述|前言|背景|导言|绪论|摘要|导论)$"
)
_CONCLUSION_EXACT = re.compile(
    r"^(?:conclusions?|summary|final thoughts|concluding remarks|conclusion and outlook|结论|总结|结语|小结|结束语|结论与展望)$"
)

_ENTRY = re.compile(
    r"^[ \t]*(?:[-*+•][ \t]+)?(?:\[\^?(?P<a>\d{1,4})\]|【(?P<b>\d{1,4})】|[(（](?P<c>\d{1,4})[)）]|(?P<d>\d{1,4})(?=[.)、:：\s]))"
    r"[ \t]*[.)、:：]?[ \t]*(?P<rest>[^\n]*?)[ \t]*$",
    re.MULTILINE,
)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•][ \t]+)(?P<rest>[^\n]*?)[ \t]*$", re.MULTILINE)
_BULLETS = ("-", "*", "+", "•")  # what a `_BULLET` line starts with after its indent
_CITATION = re.compile(
    r"(?<!!)[\[【]\^?[ \t]*(?P<body>\d{1,4}(?:[ \t]*[-–—~][ \t]*\d{1,4})?"
    r"(?:[ \t]*[,，、;；][ \t]*\^?\d{1,4}(?:[ \t]*[-–—~][ \t]*\d{1,4})?)*)[ \t]*[\]】](?![(:])"
)
_PART = re.compile(r"(\d+)(?:\s*[-–—~]\s*(\d+))?")
_TITLE_JUNK = " \t-–—|:：.,;，；·*\"'“”"
# Four-digit bracketed numbers are years or ids (`Forecast [2030]`), not reference numbers.
MAX_REFERENCE_NUMBER = 999
_MAX_RANGE = 100


@dataclass(frozen=True)
class Section:
    """A heading of the report and what role it plays."""

    title: str
    kind: str  # introduction, body, conclusion, references, or title (the report's own title)
    level: int  # 1-6 for `#` headings, 0 for a bare or bold line
    offset: int


@dataclass(frozen=True)
class Reference:
    """One entry of the reference list. Formats: `[1]. url - Title`, `[1] url - Title`,
    `1. [Title](url)`, `[1] Title. url` (and bullets, `【1】`, `(1)`, `[^1]:`)."""

    number: int | None
    url: str | None
    title: str
    offset: int


@dataclass(frozen=True)
class Citation:
    """An in-text citation marker: `[1]`, `[1, 2]`, `[1-3]`, `【1】`. `malformed` marks markers like
    `[25-13]` whose ranges run backwards or are implausibly long: they resolve to nothing."""

    numbers: tuple[int, ...]
    offset: int
    raw: str
    malformed: bool = False


def _normalize_title(title: str) -> str:
    title = _EMPHASIS.sub("", title).strip()
    title = title.rstrip(":：").strip()
    title = _NUMBERING.sub("", title, count=1).strip()
    return title.casefold()


def classify_heading(title: str, exact: bool = False) -> str:
    """introduction, conclusion, references or body. With `exact` the whole title must be the
    keyword, else "" (bare lines are headings only when they say exactly that)."""
    norm = _normalize_title(title)
    if _REFERENCES.match(norm):
        return REFERENCES
    if exact:
        if _INTRO_EXACT.match(norm):
            return INTRODUCTION
        if _CONCLUSION_EXACT.match(norm):
            return CONCLUSION
        return ""
    if _INTRO_FIRST.search(norm):
        return INTRODUCTION
    if _CONCLUSION.search(norm):
        return CONCLUSION
    if _INTRO.search(norm):
        return INTRODUCTION
    return BODY


_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)


def _code_spans(text: str) -> list[tuple[int, int]]:
    if "```" not in text and "~~~" not in text:  # most reports: skip the scan
        return []
    return [(m.start(), m.end()) for m in _FENCE.finditer(text)]


def _inside(offset: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= offset < end for start, end in spans)


_classify_cached = lru_cache(maxsize=8192)(classify_heading)


def _classify(title: str, exact: bool = False) -> str:
    """`classify_heading`, cached: it is pure and reports share most heading lines (long ones,
    rare and unlike each other, are not kept)."""
    return _classify_cached(title, exact) if len(title) <= 200 else classify_heading(title, exact)


def find_sections(text: str) -> list[Section]:
    """Headings in order: `#` headings (outside code blocks) and bare keyword lines such as `参考文献：`."""
    code = _code_spans(text)
    found: list[Section] = []
    # `_ATX` and `_LINE` match within one line from its start, so matching each at every line
    # start equals their `finditer` (which would try every position of the text); a cheap test
    # of the line first skips lines that cannot match. A line yields at most one section, so
    # `found` is in offset order.
    start = 0
    for line in text.split("\n"):
        offset = start
        start += len(line) + 1
        if line[:4].lstrip(" \t")[:1] == "#":
            m = _ATX.match(text, offset)
            if m is not None:
                if not (code and _inside(offset, code)):
                    title = m.group("title").strip()
                    found.append(Section(title, _classify(title), len(m.group("hashes")), offset))
                continue
        stripped = line.strip(" \t")
        if not stripped or len(stripped) > 60:  # `_LINE` takes at most 60 characters between blanks
            continue
        m = _LINE.match(text, offset)
        if m is None or (code and _inside(offset, code)) or m.group("title").lstrip().startswith("#"):
            continue
        kind = _classify(m.group("title"), True)
        if kind:
            found.append(Section(_EMPHASIS.sub("", m.group("title")).strip(), kind, 0, offset))
    return _mark_titles(found)


def _mark_titles(sections: list[Section]) -> list[Section]:
    # A report opens with `# Title` (sometimes twice) over `##` sections: those are titles, not body.
    levels = [s.level for s in sections if s.level]
    if not levels or min(levels) != 1 or all(level == 1 for level in levels):
        return sections
    h1 = [s for s in sections if s.level == 1]
    if len(h1) > 2:
        return sections
    return [
        Section(s.title, "title", 1, s.offset) if s.level == 1 and s.kind == BODY else s for s in sections
    ]


def _top_level(sections: list[Section]) -> list[Section]:
    levels = [s.level for s in sections if s.level and s.kind != "title"]
    top = min(levels) if levels else 0
    return [s for s in sections if s.kind != "title" and s.level in (top, 0)]


def missing_sections(sections: list[Section], has_reference_entries: bool = False) -> list[str]:
    """Which of Introduction, Body, Conclusion, References the report lacks.

    Body is any content section after the introduction and before the conclusion (a numbered
    `## 一、...` counts); a reference list without a heading still counts as References.
    """
    top = _top_level(sections)
    kinds = [s.kind for s in top]
    missing = []
    intro = kinds.index(INTRODUCTION) if INTRODUCTION in kinds else None
    conclusion = len(kinds) - 1 - kinds[::-1].index(CONCLUSION) if CONCLUSION in kinds else None
    if intro is None or (conclusion is not None and intro > conclusion):
        missing.append(INTRODUCTION)
    start = intro + 1 if intro is not None else 0
    end = conclusion if conclusion is not None else len(kinds)
    if BODY not in kinds[start:end]:
        missing.append(BODY)
    if conclusion is None:
        missing.append(CONCLUSION)
    if REFERENCES not in kinds and not has_reference_entries:
        missing.append(REFERENCES)
    return missing


def _references_span(text: str, sections: list[Section]) -> tuple[int, int] | None:
    """Where the reference list lies: after the last references heading up to the next heading of
    the same or a higher level; else a trailing run of numbered entries with URLs."""
    headings = [s for s in sections if s.kind == REFERENCES]
    start: int | None
    if headings:
        heading = headings[-1]
        start = text.find("\n", heading.offset)
        start = len(text) if start < 0 else start + 1
        end = len(text)
        for s in sections:
            if s.offset > heading.offset and s.level and (heading.level == 0 or s.level <= heading.level):
                end = s.offset
                break
        return start, end
    # No heading: the last lines, if they are reference entries, are the list.
    lines = text.splitlines(keepends=True)
    position = len(text)
    start = None
    for line in reversed(lines):
        position -= len(line)
        if not line.strip():
            continue
        if _ENTRY.match(line.rstrip("\n")) and URL_RE.search(line):
            start = position
        else:
            break
    return (start, len(text)) if start is not None else None


def _parse_entry(rest: str) -> tuple[str | None, str]:
    link = MARKDOWN_LINK_RE.search(rest)
    if link:
        title = link.group("title").strip(_TITLE_JUNK) or rest[link.end() :].strip(_TITLE_JUNK)
        return clean_url(link.group("url")), title
    url_match = URL_RE.search(rest)
    if not url_match:
        return None, rest.strip(_TITLE_JUNK)
    url = clean_url(url_match.group(0))
    before = rest[: url_match.start()].strip(_TITLE_JUNK)
    after = rest[url_match.start() + len(url) :].strip(_TITLE_JUNK)
    # `url - Title` puts the title after the URL, `Title. url` before it; with both, the longer.
    return url, before if len(before) > len(after) else after


def parse_references(text: str, start: int = 0, end: int | None = None) -> list[Reference]:
    """Entries of the reference list between `start` and `end` of `text`."""
    end = len(text) if end is None else end
    block = text[start:end]
    found: list[Reference] = []
    # `_ENTRY` and `_BULLET` match within one line from its start: matching at each line start
    # equals their `finditer`, and a line that is an entry is never also taken as a bullet, so
    # one pass finds the same references in offset order.
    at = 0
    for line in block.split("\n"):
        offset = at
        at += len(line) + 1
        m = _ENTRY.match(block, offset)
        if m is not None:
            number = int(m.group("a") or m.group("b") or m.group("c") or m.group("d"))
            url, title = _parse_entry(m.group("rest") or "")
            if url is None:
                # A URL alone on the next line belongs to this entry.
                following = block[m.end() :].lstrip("\n").split("\n", 1)[0]
                if URL_RE.match(following.strip()):
                    url = clean_url(following.strip())
            found.append(Reference(number, url, title, start + offset))
            continue
        if line.lstrip(" \t")[:1] not in _BULLETS:
            continue
        m = _BULLET.match(block, offset)
        if m is None or _ENTRY.match(m.group(0)):
            continue
        url, title = _parse_entry(m.group("rest"))
        if url:
            found.append(Reference(None, url, title, start + offset))
    return found


def _citation_matches(text: str) -> Iterator[re.Match[str]]:
    """`_CITATION.finditer(text)`, found faster: a match starts at a `[` or `【`, so only those
    (found with str.find) are tried, in order, never inside the previous match."""
    end = 0
    square, lenticular = text.find("["), text.find("【")
    while square >= 0 or lenticular >= 0:
        if lenticular < 0 or 0 <= square < lenticular:
            at, square = square, text.find("[", square + 1)
        else:
            at, lenticular = lenticular, text.find("【", lenticular + 1)
        if at >= end and (m := _CITATION.match(text, at)) is not None:
            yield m
            end = m.end()


def find_citations(text: str, skip: tuple[int, int] | None = None) -> list[Citation]:
    """In-text citation markers, outside the span `skip` (the reference list)."""
    found = []
    for m in _citation_matches(text):
        start = m.start()
        if skip and skip[0] <= start < skip[1]:
            continue
        body = m.group("body")
        if body.isdecimal():  # the common `[n]`: one part, no range (what the loop below finds for it)
            number = int(body)
            if number <= MAX_REFERENCE_NUMBER:
                found.append(Citation((number,), start, m.group(0)))
            continue
        numbers: list[int] = []
        malformed = False
        for part in _PART.finditer(body):
            low = int(part.group(1))
            high = int(part.group(2)) if part.group(2) else low
            if high < low or high - low > _MAX_RANGE:
                malformed = True
                break
            numbers += [n for n in range(low, high + 1) if n <= MAX_REFERENCE_NUMBER]
        if malformed:
            # One impossible part (`[41-29]`) shows the marker is an id, not reference numbers.
            found.append(Citation((), start, m.group(0), malformed=True))
        elif numbers:
            found.append(Citation(tuple(numbers), start, m.group(0)))
    return found


@dataclass
class ReportAnalysis:
    """Everything `report.py` finds in one report, computed once."""

    text: str
    sections: list[Section] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    references_span: tuple[int, int] | None = None

    @cached_property
    def missing_sections(self) -> list[str]:
        return missing_sections(self.sections, has_reference_entries=bool(self.references))

    @cached_property
    def cited_numbers(self) -> list[int]:
        """Distinct cited numbers in order of first citation."""
        return list(dict.fromkeys(n for c in self.citations for n in c.numbers))

    @cached_property
    def inline_urls(self) -> list[str]:
        """URLs written in the body (outside the reference list), e.g. `[Title](url)` links."""
        span = self.references_span
        body = self.text if span is None else self.text[: span[0]] + "\n" + self.text[span[1] :]
        return unique(find_urls(body))

    @cached_property
    def cited_urls(self) -> list[str]:
        """URLs of the cited references, in citation order, then URLs linked in the body."""
        by_number: dict[int, str] = {}
        for ref in self.references:
            if ref.number is not None and ref.url and ref.number not in by_number:
                by_number[ref.number] = ref.url
        cited = [by_number[n] for n in self.cited_numbers if n in by_number]
        return unique(cited + self.inline_urls)


def analyze_report(text: str) -> ReportAnalysis:
    sections = find_sections(text)
    span = _references_span(text, sections)
    references = parse_references(text, *span) if span else []
    citations = find_citations(text, skip=span)
    return ReportAnalysis(text, sections, references, citations, span)


def extract_references(text: str) -> list[Reference]:
    return analyze_report(text).references


def extract_citations(text: str) -> list[Citation]:
    return analyze_report(text).citations


def report_cited_urls(text: str) -> list[str]:
    return analyze_report(text).cited_urls
