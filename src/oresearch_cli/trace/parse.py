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
_URL_SPLIT = re.compile(r"[|\s]+|,(?=\s*https?://)")
_QUOTES = ("\"'", "“”", "‘’", "「」", "『』")


@dataclass(slots=True)
class _Token:
    tag: str
    close: bool
    start: int
    end: int


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


def _tokens(text: str, notes: list[ParseNote]) -> list[_Token]:
    result = []
    for m in tags.TAG_RE.finditer(text):
        raw = m.group(0)
        known = _CANONICAL.get(raw)
        if known is None:
            tag, close = m.lastgroup or "", m.group("close") is not None
            canonical = tags.close_tag(tag) if close else tags.open_tag(tag)
            notes.append(ParseNote("tag-spelling", f"{raw!r} read as {canonical}", m.start()))
        else:
            tag, close = known
        result.append(_Token(tag, close, m.start(), m.end()))
    return result


def _find_closer(tokens: list[_Token], i: int) -> int | None:
    """Index of the closer of the opener at `i`, or None when a barrier or the end comes first."""
    tag = tokens[i].tag
    for k in range(i + 1, len(tokens)):
        token = tokens[k]
        if token.tag == tag:
            # The element's own closer ends it; a second opener of the same tag means it was never closed.
            return k if token.close else None
        if tag != tags.OBSERVATION and not token.close and token.tag in _BARRIERS:
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
    while i < len(tokens):
        token = tokens[i]
        _add_text(elements, text, pos, token.start)
        if not token.close:
            j = _find_closer(tokens, i)
            if j is not None:
                closer = tokens[j]
                if j > i + 1 and token.tag != tags.OBSERVATION:
                    inner = tokens[i + 1]
                    code = "tag-in-think" if token.tag == tags.THINK else "nested-tag"
                    notes.append(
                        ParseNote(
                            code,
                            f"<{token.tag}> contains a tag ({text[inner.start : inner.end]}); kept as text",
                            inner.start,
                        )
                    )
                elements.append(
                    _Element(
                        token.tag,
                        text[token.end : closer.start],
                        token.start,
                        token.end,
                        closer.end,
                        closed=True,
                    )
                )
                pos = closer.end
                i = j + 1
            else:
                end = tokens[i + 1].start if i + 1 < len(tokens) else len(text)
                notes.append(
                    ParseNote(
                        "unclosed-tag",
                        f"<{token.tag}> is never closed; closed where the next tag starts",
                        token.start,
                    )
                )
                elements.append(_Element(token.tag, text[token.end : end], token.start, token.end, end))
                pos = end
                i += 1
            continue
        _orphan_closer(elements, token, notes)
        pos = token.end
        i += 1
    _add_text(elements, text, pos, len(text))
    return elements


def _orphan_closer(elements: list[_Element], token: _Token, notes: list[ParseNote]) -> None:
    gap = elements[-1] if elements and elements[-1].tag is None else None
    previous = elements[-2] if gap is not None and len(elements) > 1 else None
    if gap is None and elements:
        previous = elements[-1]
    if previous is not None and previous.tag == token.tag and previous.closed:
        # Closed again after more text: the model went on writing the same element.
        notes.append(
            ParseNote(
                "repeated-closer", f"</{token.tag}> closes an element already closed; merged", token.start
            )
        )
        if gap is not None:
            previous.content += gap.content
            elements.pop()
        previous.end = token.end
        return
    if gap is not None:
        notes.append(
            ParseNote(
                "missing-opener",
                f"</{token.tag}> has no opener; the text before it is read as <{token.tag}>",
                gap.start,
            )
        )
        gap.tag = token.tag
        gap.end = token.end
        gap.closed = True
        return
    notes.append(ParseNote("orphan-closer", f"</{token.tag}> has no opener; dropped", token.start))


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
        # Quotes can hide a count (`"a&num=5"`): strip and extract until nothing changes.
        while True:
            cleaned = _COUNT_PARAM.sub(take_count, _clean(query, _QUERY_PREFIX)).strip()
            cleaned = _TRAILING_OPTIONS.sub("", cleaned).strip()
            if cleaned == query:
                return cleaned
            query = cleaned

    body = _COUNT_PARAM.sub(take_count, body)
    queries = (clean(q) for q in _QUERY_SPLIT.split(body))
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
    body = _MARKDOWN_LINK.sub(r"\1", content.strip())
    from_json = _json_urls(body)
    if from_json is not None:
        return tuple(from_json)
    urls: list[str] = []
    for token in _URL_SPLIT.split(body):
        url = _clean(token, _URL_PREFIX, "<>,;")
        if url:
            expanded = _json_urls(url)
            urls += expanded if expanded is not None else [url]
    return tuple(urls)


def _leading_space(value: str) -> int:
    return len(value) - len(value.lstrip())


def _step(element: _Element) -> Step:
    text = element.content.strip()
    offset = element.start
    tag = element.tag
    if tag is None:
        return Text(text, offset=element.start + _leading_space(element.content))
    if tag == tags.THINK:
        return Think(text, offset=offset)
    if tag == tags.PLAN:
        return Plan(text, offset=offset)
    if tag == tags.WEB_SEARCH:
        queries, count = parse_search(element.content)
        return WebSearch(queries, count, offset=offset)
    if tag == tags.CRAWL_PAGE:
        return CrawlPage(parse_urls(element.content), offset=offset)
    if tag == tags.OBSERVATION:
        return Observation(text, offset=offset)
    if tag == tags.SUBTASK_ANSWER:
        return SubtaskAnswer(text, offset=offset)
    return SubtaskList(text, offset=offset)


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
            if container is trace.trailer and not isinstance(step, Text):
                notes.append(
                    ParseNote("content-after-report", f"<{step.kind}> follows the report", element.start)
                )
            if isinstance(step, Text) and container and isinstance(container[-1], Text):
                # Two texts meet only when something between them moved (a report): one text, as render joins them.
                container[-1] = Text(f"{container[-1].text}\n{step.text}", offset=container[-1].offset)
            else:
                container.append(step)
    notes.sort(key=lambda n: n.offset)
    return trace
