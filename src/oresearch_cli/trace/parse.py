"""Lenient parsing of trace text, as real models write it, into a `Trace`; never raises.

Two passes. The first turns the text into a flat list of elements (a tag and its content, or
stray text), repairing what real output gets wrong and noting each repair. The second arranges
the elements into the preamble, subtasks, report and trailer and parses tool-call arguments.

Repairs, each recorded as a `ParseNote` at the position it concerns:

- an opener whose closer never comes is closed by the next tag (`unclosed-tag`); a closer that
  comes only after an observation, a new subtask or the report does not count, because the
  environment has answered a tool call in between, so the element must have ended earlier;
- a closer with no opener turns the text just before it into that element (`missing-opener`):
  `report...</suggested_answer>` is a report;
- a closer repeated after an element already closed extends that element to it
  (`repeated-closer`): `<subtask_answer>a</subtask_answer>b</subtask_answer>` answers `a b`;
- other stray closers are dropped (`orphan-closer`); tags inside a tag are kept as text
  (`tag-in-think`, `nested-tag`); `<Think >` and `</sub-task>` are read as the tags they mean
  (`tag-spelling`);
- a second report supersedes the first, which is kept in `Trace.superseded_reports`
  (`repeated-report`); steps and subtasks after the report are kept too (`content-after-report`),
  so rendering moves them before it. Nothing is dropped except stray closers, each one noted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import cast

from oresearch_cli.trace import tags
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

# An observation, a new subtask or the report starts something new: an element still open there
# cannot be closed by a closer that comes later.
_BARRIERS = frozenset({tags.OBSERVATION, tags.SUBTASK, tags.SUGGESTED_ANSWER, tags.SUBTASK_LIST})

_COUNT_KEYS = frozenset({"serp_num", "num", "count", "top_k", "topk", "k", "n", "num_results", "max_results"})
_COUNT_PARAM = re.compile(r"&\s*(?P<key>[A-Za-z_]+)\s*=\s*(?P<value>\d{1,9})\s*(?=&|\||$)", re.MULTILINE)
# Search-engine options a model appends (`&hl=en&gl=us`); they are not part of the last query.
_TRAILING_OPTIONS = re.compile(r"(?:&\s*[A-Za-z_]+\s*=[^&|\n]*)+$")
# `[title](url)` written inside a crawl call: the URL is what is meant.
_MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\((\S+?)\)")
_QUERY_PREFIX = re.compile(r"^(?:\s*(?:queries|query|q)\s*[=:]\s*)+", re.IGNORECASE)
_URL_PREFIX = re.compile(r"^(?:\s*(?:urls?|links?)\s*[=:]\s*)+", re.IGNORECASE)
_QUERY_SPLIT = re.compile(r"\s*(?:\||\n)\s*")
_URL_SPLIT = re.compile(r"[|\s]+|,(?=\s*(?:https?|corpus)://)")
_QUOTES = ("\"'", "“”", "‘’", "「」", "『』")
# A query none of these can touch is already clean (no prefix without `=`/`:`, no count or option
# without `&`, no quotes): most queries are, and skip the cleaning loop.
_QUERY_UNPLAIN = frozenset("&=:" + "".join(_QUOTES))
# A URL token is already clean unless it starts like `url=`/`link:` or has quotes or junk at its ends.
_URL_EDGE = frozenset("uUlL<>,;" + "".join(_QUOTES))


@dataclass(slots=True)
class _Element:
    tag: str | None  # None: stray text
    content: str
    start: int
    content_start: int
    end: int
    closed: bool = False


# Canonical spellings map straight to (tag, is_closer): the common case skips the group lookups.
_CANONICAL = {tags.open_tag(t): (t, False) for t in tags.TAGS} | {
    tags.close_tag(t): (t, True) for t in tags.TAGS
}

# A token is (tag, is_closer, start, end): plain tuples, as a trace has dozens and a batch millions.
_Token = tuple[str, bool, int, int]


def _tokens(text: str, notes: list[ParseNote]) -> list[_Token]:
    result: list[_Token] = []
    append = result.append
    canonical = _CANONICAL.get
    for m in tags.TAG_SCAN_RE.finditer(text):
        raw = m.group()
        start, end = m.span()
        known = canonical(raw)
        if known is None:
            # TAG_RE matches exactly where TAG_SCAN_RE does; only it says which tag a spelling is.
            full = tags.TAG_RE.match(text, start)
            assert full is not None and full.end() == end
            tag, close = full.lastgroup or "", full.group("close") is not None
            spelled = tags.close_tag(tag) if close else tags.open_tag(tag)
            notes.append(ParseNote("tag-spelling", f"{raw!r} read as {spelled}", start))
            append((tag, close, start, end))
        else:
            append((known[0], known[1], start, end))
    return result


def _find_closer(tokens: list[_Token], i: int) -> int | None:
    """Index of the closer of the opener at `i`, or None when a barrier or the end comes first."""
    tag = tokens[i][0]
    barriers = _BARRIERS if tag != tags.OBSERVATION else ()
    for k in range(i + 1, len(tokens)):
        other, close, _, _ = tokens[k]
        if other == tag:
            # The element's own closer ends it; a second opener of the same tag means it was never closed.
            return k if close else None
        if not close and other in barriers:
            return None
    return None


def _add_text(elements: list[_Element], text: str, start: int, end: int) -> None:
    if start >= end:
        return
    chunk = text[start:end]
    last = elements[-1] if elements else None
    if last is not None and last.tag is None:
        # Only a dropped orphan closer separates two texts: join them so render/parse agree.
        last.content += chunk
        last.end = end
    elif chunk.strip():
        elements.append(_Element(None, chunk, start, start, end))


def _elements(text: str, notes: list[ParseNote]) -> list[_Element]:
    tokens = _tokens(text, notes)
    elements: list[_Element] = []
    pos = 0
    i = 0
    n = len(tokens)
    while i < n:
        tag, close, start, end = tokens[i]
        if pos < start:  # `_add_text`, inlined: it runs between every two elements
            last = elements[-1] if elements else None
            if last is not None and last.tag is None:
                last.content += text[pos:start]
                last.end = start
            elif not (chunk := text[pos:start]).isspace():  # isspace: what strip() removes, all of it
                elements.append(_Element(None, chunk, pos, pos, start))
        if not close:
            if i + 1 < n and tokens[i + 1][0] == tag:  # the usual case, decided as `_find_closer` would
                j = i + 1 if tokens[i + 1][1] else None
            else:
                j = _find_closer(tokens, i)
            if j is not None:
                closer_start, closer_end = tokens[j][2], tokens[j][3]
                if j > i + 1 and tag != tags.OBSERVATION:
                    inner_start, inner_end = tokens[i + 1][2], tokens[i + 1][3]
                    code = "tag-in-think" if tag == tags.THINK else "nested-tag"
                    notes.append(
                        ParseNote(
                            code,
                            f"<{tag}> contains a tag ({text[inner_start:inner_end]}); kept as text",
                            inner_start,
                        )
                    )
                elements.append(_Element(tag, text[end:closer_start], start, end, closer_end, closed=True))
                pos = closer_end
                i = j + 1
            else:
                stop = tokens[i + 1][2] if i + 1 < n else len(text)
                notes.append(
                    ParseNote(
                        "unclosed-tag",
                        f"<{tag}> is never closed; closed where the next tag starts",
                        start,
                    )
                )
                elements.append(_Element(tag, text[end:stop], start, end, stop))
                pos = stop
                i += 1
            continue
        _orphan_closer(elements, tag, start, end, notes)
        pos = end
        i += 1
    _add_text(elements, text, pos, len(text))
    return elements


def _orphan_closer(elements: list[_Element], tag: str, start: int, end: int, notes: list[ParseNote]) -> None:
    gap = elements[-1] if elements and elements[-1].tag is None else None
    previous = elements[-2] if gap is not None and len(elements) > 1 else None
    if gap is None and elements:
        previous = elements[-1]
    if previous is not None and previous.tag == tag and previous.closed:
        # Closed again after more text: the model went on writing the same element.
        notes.append(
            ParseNote("repeated-closer", f"</{tag}> closes an element already closed; merged", start)
        )
        if gap is not None:
            previous.content += gap.content
            elements.pop()
        previous.end = end
        return
    if gap is not None:
        notes.append(
            ParseNote(
                "missing-opener",
                f"</{tag}> has no opener; the text before it is read as <{tag}>",
                gap.start,
            )
        )
        gap.tag = tag
        gap.end = end
        gap.closed = True
        return
    notes.append(ParseNote("orphan-closer", f"</{tag}> has no opener; dropped", start))


def _strip_quotes(value: str) -> str:
    value = value.strip()
    for pair in _QUOTES:
        if len(value) >= 2 and value[0] in pair and value[-1] in pair:
            return value[1:-1].strip()
    return value


def _clean(value: str, prefix: re.Pattern[str], junk: str = "") -> str:
    # Repeat until stable so that what we return parses back to itself.
    while True:
        cleaned = _strip_quotes(prefix.sub("", value.strip(), count=1)).strip(junk).strip()
        if cleaned == value:
            return cleaned
        value = cleaned


def _as_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def parse_search(content: str, default_count: int = tags.DEFAULT_SERP_NUM) -> tuple[tuple[str, ...], int]:
    """Queries and result count of a `<web_search>`: `a | b&serp_num=10`, `query=a|b&num=5`, JSON."""
    body = content.strip()
    count = default_count
    if body.startswith("{"):
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            obj = None
        keys = ("query", "queries", "q")
        if isinstance(obj, dict) and any(key in obj for key in keys):
            body = "\n".join(s for key in keys for s in _as_strings(obj.get(key)))
            for key in sorted(_COUNT_KEYS):
                value = obj.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
                    count = value

    def take_count(m: re.Match[str]) -> str:
        nonlocal count
        if m.group("key").lower() not in _COUNT_KEYS:
            return m.group(0)
        count = int(m.group("value"))
        return ""

    def clean(query: str) -> str:
        if query == query.strip() and _QUERY_UNPLAIN.isdisjoint(query):
            return query  # what the loop below returns for it
        # Quotes can hide a count (`"a&num=5"`): strip and extract until nothing changes.
        while True:
            cleaned = _COUNT_PARAM.sub(take_count, _clean(query, _QUERY_PREFIX)).strip()
            cleaned = _TRAILING_OPTIONS.sub("", cleaned).strip()
            if cleaned == query:
                return cleaned
            query = cleaned

    body = _COUNT_PARAM.sub(take_count, body)
    # One query needs no split (the pattern needs a `|` or a newline), and splitting scans every position.
    parts = _QUERY_SPLIT.split(body) if "|" in body or "\n" in body else [body]
    queries = (clean(q) for q in parts)
    return tuple(q for q in queries if q), count


def _json_urls(value: str) -> list[str] | None:
    # Only without `|`: rendered multi-URL calls always contain one and must never read as JSON.
    if value[:1] not in ("[", "{") or "|" in value:
        return None
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict):
        obj = obj.get("urls", obj.get("url"))
    strings = _as_strings(obj)
    return [u for s in strings for u in parse_urls(s)] if strings else None


def parse_urls(content: str) -> tuple[str, ...]:
    """URLs of a `<crawl_page>`: separated by `|`, whitespace or newlines (a JSON list works too)."""
    body = content.strip()
    if "[" in body:
        body = _MARKDOWN_LINK.sub(r"\1", body)
    from_json = _json_urls(body)
    if from_json is not None:
        return tuple(from_json)
    urls: list[str] = []
    for token in _URL_SPLIT.split(body):
        if token == token.strip() and token[:1] not in _URL_EDGE and token[-1:] not in _URL_EDGE:
            url = token  # what `_clean` returns for it
        else:
            url = _clean(token, _URL_PREFIX, "<>,;")
        if url:
            expanded = _json_urls(url)
            urls += expanded if expanded is not None else [url]
    return tuple(urls)


def _leading_space(value: str) -> int:
    return len(value) - len(value.lstrip())


# Elements whose step is their stripped text.
_TEXT_STEPS: dict[str, type[Think | Plan | Observation | SubtaskAnswer | SubtaskList]] = {
    tags.THINK: Think,
    tags.PLAN: Plan,
    tags.OBSERVATION: Observation,
    tags.SUBTASK_ANSWER: SubtaskAnswer,
    tags.SUBTASK_LIST: SubtaskList,
}


def _step(element: _Element) -> Step:
    tag = element.tag
    if tag is None:
        return Text(element.content.strip(), offset=element.start + _leading_space(element.content))
    if tag == tags.WEB_SEARCH:
        queries, count = parse_search(element.content)
        return WebSearch(queries, count, offset=element.start)
    if tag == tags.CRAWL_PAGE:
        return CrawlPage(parse_urls(element.content), offset=element.start)
    return _TEXT_STEPS.get(tag, SubtaskList)(element.content.strip(), offset=element.start)


def parse(text: str) -> Trace:
    """Parse trace text leniently. Never raises; what it repaired is in `Trace.notes`."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    notes: list[ParseNote] = []
    trace = Trace(notes=notes, source=text)
    container = trace.preamble
    for element in _elements(text, notes):
        if element.tag == tags.SUBTASK:
            if trace.report is not None:
                notes.append(ParseNote("content-after-report", "a subtask follows the report", element.start))
            subtask = Subtask(element.content.strip(), offset=element.start)
            trace.subtasks.append(subtask)
            container = subtask.steps
        elif element.tag == tags.SUGGESTED_ANSWER:
            if trace.report is not None:
                # The last report is the model's final word; earlier ones are kept beside it.
                notes.append(
                    ParseNote(
                        "repeated-report", "a second report; the earlier one is superseded", element.start
                    )
                )
                trace.superseded_reports.append(trace.report)
            body = element.content
            trace.report = Report(
                body.strip(), offset=element.start, text_offset=element.content_start + _leading_space(body)
            )
            container = trace.trailer
        else:
            step = _step(element)
            if element.tag is None:  # a Text step
                step = cast(Text, step)
                if container and isinstance(container[-1], Text):
                    # Two texts meet only when something between them moved (a report): one text, as render joins them.
                    container[-1] = Text(f"{container[-1].text}\n{step.text}", offset=container[-1].offset)
                    continue
            elif container is trace.trailer:
                notes.append(
                    ParseNote("content-after-report", f"<{step.kind}> follows the report", element.start)
                )
            container.append(step)
    notes.sort(key=lambda n: n.offset)
    return trace
