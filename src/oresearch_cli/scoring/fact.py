"""DeepResearch Bench's FACT: are a report's citations backed by the pages they cite?

DRB's pipeline, step for step, with the judge role of an open `LLMClient` (every call logged,
costed, and cached in `cache/judge.sqlite` under `FACT_VERSION`):

1. extract (statement, url) pairs from the report: by the judge (DRB's way), or by rule (ores's
   cheap way: each `[n]` marker's sentence paired with reference n's URL, and each Markdown link's
   sentence with its URL, from `trace.analyze_report`); `FactTaskResult.extractor` says which;
2. deduplicate per URL: a statement once per page, pages grouped so each is fetched once and its
   statements judged together;
3. fetch each page through `crawl` (a `Toolbox`, which caches; local corpus URLs resolve offline);
4. judge each page's statements: supported, unsupported or unknown;
5. count, as DRB's `utils/stat.py` does:
   - a task's citations are its supported + unsupported pairs; unknown ones are not citations;
   - accuracy (DRB's `valid_rate`) is POOLED over tasks: all supported pairs / all citations, not
     a mean of per-task rates;
   - per-task averages (`total_citations`, `total_valid_citations`: the average effective
     citations) divide by the tasks with at least one extracted pair; tasks without any are
     left out of them (DRB's `if not d['citations']: continue`).

Where this differs from DRB, and why:

- DRB asks an LLM which statements of one URL are duplicates; here a statement is a duplicate
  when its text matches another's for the same page (`page_key`) up to spacing and case:
  reproducible, and no extra call a weak judge could get wrong;
- a page DRB cannot scrape still goes to its judge as the text "scrape failed: ...", to be called
  unknown; here it is unknown without a call;
- DRB's extractor may return any URL; here a URL the report does not contain is dropped (counted
  in `dropped`): it was invented, and fetching it would judge a page nobody cited;
- a judge failure (endpoint error, or an unusable reply after the strict re-ask) is counted,
  never a verdict: an extraction failure leaves the task out, as DRB drops it; a failed verdict
  call leaves its pairs out of every count (as DRB skips a URL with `validate_error`), and its
  task out of the per-task averages (DRB would count the task's partial sums, a silent undercount).

Weak judges rarely write JSON unless the endpoint enforces a schema, so the judge is asked in
the simplest form its endpoint can hold it to: JSON fitting a schema (sent as the response
format) where the judge role's `json_mode` enforces one, else plain lines (`statement ||| url`,
`1. supported`). Either form, JSON in prose or code fences, and DRB's own `[{"idx", "result"}]`
are read from any reply; a reply with nothing usable is asked again strictly, once by default.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, TypeVar

from oresearch_cli.errors import ConfigError
from oresearch_cli.filtering.judge import JudgeCache, cache_key
from oresearch_cli.llm.client import ChatResult
from oresearch_cli.llm.errors import LLMError
from oresearch_cli.llm.jsonout import JSONExtractError, extract_json
from oresearch_cli.llm.structured import FailedReply, Judgement, Messages, ReplyError, ask_structured
from oresearch_cli.tools.base import Page
from oresearch_cli.tools.errors import BackendConfigError, ToolError
from oresearch_cli.trace import analyze_report, has_tags, page_key, parse, report_text
from oresearch_cli.trace.report import find_citations
from oresearch_cli.trace.urls import MARKDOWN_LINK_RE, URL_RE, clean_url, find_urls

FACT_VERSION = "fact-v1"  # part of the cache keys: bump when a prompt or the parsing changes
Verdict = Literal["supported", "unsupported", "unknown"]
LABELS: tuple[Verdict, ...] = ("supported", "unsupported", "unknown")
Extractor = Literal["judge", "rules"]
EXTRACTORS: tuple[Extractor, ...] = ("judge", "rules")
T = TypeVar("T")


# --- settings and the crawl it needs -----------------------------------------------------------


@dataclass(frozen=True)
class FactSettings:
    """How FACT runs. Limits keep a weak judge's context and output bounded."""

    extractor: Extractor = "judge"
    max_attempts: int = 2  # the first ask plus one strict re-ask
    max_report_chars: int = 60_000  # of the report the extracting judge reads
    max_page_chars: int = 20_000  # of each cited page the verdict judge reads
    max_pairs: int = 100  # pairs one extraction may list (the schema's bound)
    max_statements: int = 20  # statements of one page per verdict call
    max_statement_chars: int = 500
    concurrency: int = 4  # pages fetched and judged at once, per task

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ConfigError(
                f"fact settings: extractor {self.extractor!r} is not one of {', '.join(EXTRACTORS)}; "
                "use judge (DRB's LLM extraction) or rules (citation markers, no judge call)"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extractor" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"fact settings: {f.name} must be a whole number >= 1, got {value!r}")


def fact_settings(data: Mapping[str, Any], where: str = "fact settings") -> FactSettings:
    """Settings from a recipe section or flags; an unknown key or a bad value is one clear line."""
    from oresearch_cli.config import apply

    return apply(FactSettings(), data, where, "fact.")


class Crawler(Protocol):
    """What fetches a cited page: a `Toolbox` (cached, local corpus URLs offline) or a test's fake.
    `crawl` raises `ToolError` for a page it cannot read. A toolbox with a summarizer would also
    summarize each page: pass one without."""

    async def crawl(self, url: str) -> Page: ...


# --- results -----------------------------------------------------------------------------------


@dataclass
class FactPair:
    """One cited statement and its source. `verdict` None: its judge call failed (`note` says
    why); "unknown" from a page that could not be read has `note` "page: ..."."""

    statement: str
    url: str
    verdict: Verdict | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"statement": self.statement, "url": self.url, "verdict": self.verdict, "note": self.note}


@dataclass
class FactTaskResult:
    """One task's FACT numbers. `accuracy` = supported / (supported + unsupported), None when no
    pair got either; `effective` = supported (DRB's valid citations). `error` set: the extraction
    failed, the task has no pairs and is left out of the summary."""

    id: str | int
    pairs: list[FactPair] = field(default_factory=list)
    supported: int = 0
    unsupported: int = 0
    unknown: int = 0
    failed: int = 0  # pairs without a verdict: their judge call failed
    failed_calls: int = 0  # judge calls (extraction or verdict) that gave nothing usable
    accuracy: float | None = None
    effective: int = 0
    extractor: str = "judge"
    error: str | None = None
    calls: int = 0  # judge requests made (re-asks included)
    cached: int = 0  # judgements taken from the cache
    duplicates: int = 0  # pairs dropped as repeats of a statement for the same page
    dropped: int = 0  # extracted pairs with no statement or a URL the report does not contain
    unresolved: int = 0  # rules: cited numbers with no URL in the reference list
    pages: int = 0  # distinct pages cited
    unreadable: int = 0  # of them, pages that could not be fetched (their pairs: unknown)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def citations(self) -> int:
        """DRB's citations of the task: pairs judged supported or unsupported."""
        return self.supported + self.unsupported

    @property
    def complete(self) -> bool:
        """Every judge call of the task gave a usable answer."""
        return self.error is None and self.failed_calls == 0

    def tally(self) -> FactTaskResult:
        """Counts and accuracy from the pairs' verdicts (call after setting them)."""
        verdicts = [p.verdict for p in self.pairs]
        self.supported, self.unsupported = verdicts.count("supported"), verdicts.count("unsupported")
        self.unknown, self.failed = verdicts.count("unknown"), verdicts.count(None)
        self.effective = self.supported
        self.accuracy = self.supported / self.citations if self.citations else None
        return self

    def to_row(self) -> dict[str, Any]:
        """A JSON-able row: the counts, and each pair with its verdict."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pairs"}
        return {**row, "n_pairs": self.n_pairs, "pairs": [p.to_dict() for p in self.pairs]}


@dataclass(frozen=True)
class FactSummary:
    """FACT over a set of tasks, by DRB's `stat.py` (see the module notes):

    `accuracy` pooled over every judged pair of every task with pairs (DRB's valid_rate);
    `avg_citations` and `effective` per task over the `counted` tasks: those with at least one
    pair and no failed judge call (DRB's total_citations and total_valid_citations)."""

    tasks: int
    counted: int
    citations: int  # pooled supported + unsupported
    supported: int
    unknown: int
    accuracy: float | None
    avg_citations: float | None
    effective: float | None
    no_citations: int  # tasks with no pair: not in the per-task averages
    failed_tasks: int  # extraction failed: the task is left out
    incomplete: int  # tasks with a failed verdict call: in accuracy, not in the per-task averages
    failed_calls: int
    extractors: tuple[str, ...]

    def lines(self) -> list[str]:
        """DRB's fact_result.txt lines, then what was left out and why."""

        def number(value: float | None, digits: int) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        return [
            f"total_citations: {number(self.avg_citations, 2)}",
            f"total_valid_citations: {number(self.effective, 2)}",
            f"valid_rate: {number(self.accuracy, 4)}",
            f"tasks: {self.tasks} ({self.counted} counted, {self.no_citations} without citations, "
            f"{self.failed_tasks} extraction failed, {self.incomplete} with failed verdicts); "
            f"pooled: {self.supported}/{self.citations} supported, {self.unknown} unknown; "
            f"failed judge calls: {self.failed_calls}; extractor: {', '.join(self.extractors) or 'none'}",
        ]


def summarize_fact(results: Iterable[FactTaskResult]) -> FactSummary:
    """DRB's statistics over the tasks' results (see `FactSummary` for which tasks count where)."""
    results = list(results)
    scored = [r for r in results if r.error is None and r.pairs]
    counted = [r for r in scored if r.failed_calls == 0]
    citations = sum(r.citations for r in scored)
    supported = sum(r.supported for r in scored)
    n = len(counted)
    return FactSummary(
        tasks=len(results),
        counted=n,
        citations=citations,
        supported=supported,
        unknown=sum(r.unknown for r in scored),
        accuracy=supported / citations if citations else None,
        avg_citations=sum(r.citations for r in counted) / n if n else None,
        effective=sum(r.supported for r in counted) / n if n else None,
        no_citations=sum(1 for r in results if r.error is None and not r.pairs),
        failed_tasks=sum(1 for r in results if r.error is not None),
        incomplete=sum(1 for r in scored if r.failed_calls),
        failed_calls=sum(r.failed_calls for r in results),
        extractors=tuple(dict.fromkeys(r.extractor for r in results)),
    )


# --- statements --------------------------------------------------------------------------------

_ENDERS = ".!?。！？"
# A sentence ends at an ASCII stop before a space, a CJK stop, a line end, or after the markers
# that follow its stop (`claim.[1][2] Next`).
_BOUNDARY = re.compile(r"[.!?](?:\[[^\[\]\n]{1,24}\]|【[^【】\n]{1,24}】)+(?=\s)|[.!?](?=\s)|[。！？]|\n")
_TRAILING_MARKER = re.compile(r"(?:\[[^\[\]\n]{1,24}\]|【[^【】\n]{1,24}】)$")
_LINE_START = re.compile(r"^(?:[#>*+\-•]+|\d{1,3}[.)])\s+")
_MAX_SENTENCE = 600


def clean_statement(text: str, max_chars: int = 500) -> str:
    """A statement as the judge reads it: citation markers cut, Markdown links reduced to their
    titles (DRB's `remove_urls`), list and heading marks and extra spacing dropped."""
    text = MARKDOWN_LINK_RE.sub(lambda m: m.group("title"), text)
    for citation in reversed(find_citations(text)):
        text = text[: citation.offset] + text[citation.offset + len(citation.raw) :]
    text = " ".join(text.split())
    text = _LINE_START.sub("", text).strip()
    text = re.sub(r"\s+([.,;:!?。，；：！？])", r"\1", text)
    return text[:max_chars].strip()


class _Sentences:
    """Sentence spans of one text, found once: where the sentence around a citation starts and ends."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.stops = [m.end() - 1 for m in _BOUNDARY.finditer(text)]  # each sentence's last character

    def around(self, start: int, end: int) -> str:
        """The sentence that the marker or link at [start, end) belongs to. A marker after the
        sentence's stop (`claim.[1]`) and markers right before it (`[1][2]`) belong to it too."""
        probe = start
        while True:
            window = max(0, probe - 64)
            before = self.text[window:probe].rstrip(" \t")
            m = _TRAILING_MARKER.search(before)
            if m is None:
                break
            probe = window + m.start()
        stop_before = bool(before) and before[-1] in _ENDERS
        if stop_before:
            probe = window + len(before) - 1
        i = bisect.bisect_left(self.stops, probe)
        left = self.stops[i - 1] + 1 if i else 0
        if stop_before:
            right = end
        else:
            j = bisect.bisect_left(self.stops, end)
            right = self.stops[j] + 1 if j < len(self.stops) else len(self.text)
        left = max(left, start - _MAX_SENTENCE)
        return self.text[left:right]


@dataclass
class Extraction:
    """What an extractor found: (statement, url) pairs in report order, and what it could not use."""

    pairs: list[tuple[str, str]]
    dropped: int = 0
    unresolved: int = 0
    attempts: int = 0
    cached: bool = False
    error: str | None = None


def rule_pairs(report: str, max_statement_chars: int = 500) -> Extraction:
    """(statement, url) pairs without a judge: each `[n]` marker's sentence with reference n's URL
    (one pair per number), and each Markdown link's sentence with the link's URL, as DRB's
    extraction prompt asks for. Markers, references and links come from `trace.analyze_report`."""
    analysis = analyze_report(report)
    urls: dict[int, str] = {}
    for ref in analysis.references:
        if ref.number is not None and ref.url and ref.number not in urls:
            urls[ref.number] = ref.url
    sentences = _Sentences(report)
    found: list[tuple[int, str, str]] = []  # (offset, statement, url)
    unresolved = 0
    for citation in analysis.citations:
        numbers = citation.numbers
        if not numbers:  # a malformed marker (`[41-29]`): an id, not a citation
            continue
        statement = clean_statement(
            sentences.around(citation.offset, citation.offset + len(citation.raw)), max_statement_chars
        )
        for number in numbers:
            if number not in urls:
                unresolved += 1
            elif statement:
                found.append((citation.offset, statement, urls[number]))
    span = analysis.references_span
    for link in MARKDOWN_LINK_RE.finditer(report):
        if span is not None and span[0] <= link.start() < span[1]:
            continue
        statement = clean_statement(sentences.around(link.start(), link.end()), max_statement_chars)
        if statement:
            found.append((link.start(), statement, clean_url(link.group("url"))))
    found.sort(key=lambda item: item[0])
    return Extraction([(s, u) for _, s, u in found], unresolved=unresolved)


@dataclass
class UrlGroup:
    """One cited page and its distinct statements, in first-cited order."""

    url: str
    statements: list[str] = field(default_factory=list)


def group_by_url(pairs: Iterable[tuple[str, str]]) -> tuple[list[UrlGroup], int]:
    """DRB's per-URL grouping with duplicates dropped: the same page (`page_key`) is one group, the
    same statement (up to spacing and case) is kept once in it. Returns the groups and the number
    of pairs dropped as duplicates."""
    groups: dict[str, UrlGroup] = {}
    seen: dict[str, set[str]] = {}
    duplicates = 0
    for statement, url in pairs:
        key = page_key(url)
        group = groups.setdefault(key, UrlGroup(url))
        norm = " ".join(statement.split()).casefold()
        if norm in seen.setdefault(key, set()):
            duplicates += 1
            continue
        seen[key].add(norm)
        group.statements.append(statement)
    return list(groups.values()), duplicates


def report_of(text: str) -> str:
    """The report of an ores trace (its `<suggested_answer>`), or the text itself when it is a bare
    report such as a DRB article."""
    trace = parse(text)
    if has_tags(trace):
        return report_text(trace) or ""
    return text


# --- reading replies leniently -----------------------------------------------------------------

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_NUMBERED = re.compile(
    r"^[\s*#>-]*(?:statement\s*)?[\[(]?(\d{1,3})[\]).:：、*]*\s*[-–—:=：]?\s*(.*)$", re.IGNORECASE
)
_LABEL = re.compile(
    r"^[\s\"'*`_\[(]*(not[\s_-]+supported|unsupported|partially[\s_-]+supported|supported|unknown)\b",
    re.IGNORECASE,
)
_SEPARATOR = "|||"
_NONE_ANSWERS = {"none", "none.", "[]", "no citations", "no citations.", "无", "无。"}
_STATEMENT_KEYS = ("statement", "fact", "claim", "text", "sentence")
_URL_KEYS = ("url", "link", "source", "href")
_REF_KEYS = ("ref_idx", "ref", "reference", "number", "citation")
_LIST_KEYS = ("citations", "pairs", "facts", "items", "statements", "results", "verdicts", "labels")


def _json_values(text: str) -> list[Any]:
    """JSON values in a reply, most likely first: the first object (fenced, bare or amid prose),
    then a top-level array (DRB's own answer shape)."""
    cleaned = _THINK.sub("", text or "").strip()
    values: list[Any] = []
    with contextlib.suppress(JSONExtractError):
        values.append(extract_json(cleaned))
    for candidate in [m.group(1).strip() for m in _FENCE.finditer(cleaned)] + [cleaned]:
        start, end = candidate.find("["), candidate.rfind("]")
        for span in (candidate, candidate[start : end + 1] if 0 <= start < end else ""):
            try:
                value = json.loads(span)
            except ValueError:
                continue
            if isinstance(value, list):
                values.append(value)
                break
    return values


def _items(value: Any) -> list[Any] | None:
    """The list of entries in a parsed reply: the value itself, or the list under a known key (or
    the only list) of an object."""
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in _LIST_KEYS:
            if isinstance(lowered.get(key), list):
                return list(lowered[key])
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return None


def _field(item: Mapping[str, Any], keys: Sequence[str]) -> Any:
    lowered = {str(k).lower(): v for k, v in item.items()}
    return next((lowered[k] for k in keys if lowered.get(k) not in (None, "")), None)


@dataclass(frozen=True)
class Cited:
    """One entry of an extraction reply, before it is checked against the report."""

    statement: str
    url: str | None = None
    ref: int | None = None


def parse_extraction(text: str) -> list[Cited]:
    """The citations a judge listed: JSON (`{"citations": [{"statement", "url"}]}`, DRB's
    `[{"fact", "ref_idx", "url"}]`, pairs as 2-lists) or lines (`statement ||| url`, numbered or
    not, or a statement followed by its URL). An empty list or "NONE" is a valid "no citations".
    Raises `ReplyError` when the reply holds no citation in any of these forms."""
    for value in _json_values(text):
        items = _items(value)
        if items is None and isinstance(value, Mapping) and _field(value, _STATEMENT_KEYS) is not None:
            items = [value]  # one citation written as a bare object
        if items is None:
            continue
        cited = [c for c in map(_cited_from_json, items) if c is not None]
        if cited or not items:
            return cited
    stripped = _THINK.sub("", text or "").strip()
    if stripped.strip("`").strip().lower() in _NONE_ANSWERS:
        return []
    cited = [c for c in map(_cited_from_line, stripped.splitlines()) if c is not None]
    if cited:
        return cited
    if not stripped:
        raise ReplyError("the answer is empty")
    raise ReplyError("the answer lists no citation (no 'statement ||| url' line and no JSON list)")


def _cited_from_json(item: Any) -> Cited | None:
    if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, str) for v in item):
        return Cited(item[0], item[1])
    if not isinstance(item, Mapping):
        return None
    statement = _field(item, _STATEMENT_KEYS)
    if not isinstance(statement, str):
        return None
    url = _field(item, _URL_KEYS)
    url = url if isinstance(url, str) else None
    ref = _number(_field(item, _REF_KEYS))
    if ref is None and url is not None and "://" not in url:  # `"url": "[2]"`: a reference number
        ref, url = _number(url), None
    return Cited(statement, url, ref)


def _number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := re.search(r"\d{1,4}", value)):
        return int(m.group(0))
    return None


def _cited_from_line(line: str) -> Cited | None:
    line = _LINE_START.sub("", line.strip()).strip()
    if _SEPARATOR in line:
        statement, _, url = line.partition(_SEPARATOR)
        urls = find_urls(url)
        return Cited(statement.strip(), urls[0] if urls else url.strip() or None)
    matches = list(URL_RE.finditer(line))
    if not matches:
        return None
    match = matches[-1]  # the last URL on the line is its source
    statement = (line[: match.start()] + line[match.end() :]).strip(" \t-–—|:;,()[]<>\"'")
    return Cited(statement, clean_url(match.group(0))) if statement else None


def check_extraction(
    cited: Sequence[Cited], report_urls: Sequence[str], references: Mapping[int, str], max_chars: int = 500
) -> tuple[list[tuple[str, str]], int]:
    """The usable (statement, url) pairs of an extraction and how many entries were dropped: a URL
    must be one the report contains (a reference number resolves through its list when the URL is
    missing or foreign), the statement must be non-empty. Raises `ReplyError` when entries were
    listed but none is usable, so a weak judge's invented URLs are asked again."""
    known = {page_key(u): u for u in report_urls}
    pairs: list[tuple[str, str]] = []
    for item in cited:
        statement = clean_statement(item.statement, max_chars)
        url = known.get(page_key(item.url)) if item.url else None
        if url is None and item.ref is not None:
            url = references.get(item.ref)
        if statement and url:
            pairs.append((statement, url))
    if cited and not pairs:
        raise ReplyError(
            f"none of the {len(cited)} citation(s) listed pairs a statement with a URL from the report; "
            "copy each URL from the report's reference list"
        )
    return pairs, len(cited) - len(pairs)


def parse_label(text: Any) -> Verdict | None:
    """A verdict word, leniently: any case, quoted or bold, "not supported" and "partially
    supported" (DRB counts partial support as supported); None when it is none of them."""
    if not isinstance(text, str):
        return None
    m = _LABEL.match(text)
    if m is None:
        return None
    word = re.sub(r"[\s_-]+", " ", m.group(1).lower())
    if word in ("not supported", "unsupported"):
        return "unsupported"
    if word in ("supported", "partially supported"):
        return "supported"
    return "unknown"


def parse_verdicts(text: str, n: int) -> list[Verdict]:
    """One verdict per statement, in order, from a judge's reply: JSON (`{"verdicts": [...]}`,
    labels or DRB's `{"idx", "result"}` items, or a bare list) or lines (`1. supported`, or one
    label a line). Raises `ReplyError` unless exactly the `n` statements get a readable label."""
    problems: list[str] = []
    for value in _json_values(text):
        items = _items(value)
        if items is None:
            continue
        try:
            return _verdicts_from_items(items, n)
        except ReplyError as exc:
            problems.append(exc.reason)
    stripped = _THINK.sub("", text or "").strip()
    lines = [
        line for line in (s.strip() for s in stripped.splitlines()) if line and not line.startswith("```")
    ]
    numbered: dict[int, Verdict] = {}
    plain: list[Verdict] = []
    for line in lines:
        m = _NUMBERED.match(line)
        if m is not None and (label := parse_label(m.group(2))) is not None:
            numbered.setdefault(int(m.group(1)), label)
        elif (label := parse_label(line)) is not None:
            plain.append(label)
    if numbered:
        return _in_order(numbered, n)
    if len(plain) == n:
        return plain
    if plain:
        raise ReplyError(f"{len(plain)} verdict(s) for {n} statement(s); give exactly one per statement")
    if problems:
        raise ReplyError(problems[0])
    if not stripped:
        raise ReplyError("the answer is empty")
    raise ReplyError("the answer holds no verdict; write supported, unsupported or unknown per statement")


def _verdicts_from_items(items: list[Any], n: int) -> list[Verdict]:
    if items and all(isinstance(i, Mapping) for i in items):
        numbered: dict[int, Verdict] = {}
        for position, item in enumerate(items, start=1):
            label = parse_label(
                _field(item, ("result", "verdict", "label", "judgement", "judgment", "status"))
            )
            if label is None:
                raise ReplyError(f"entry {position} has no result of supported, unsupported or unknown")
            index = _number(_field(item, ("idx", "index", "id", "statement", "number")))
            numbered.setdefault(index if index is not None else position, label)
        return _in_order(numbered, n)
    labels = [parse_label(i) for i in items]
    if any(label is None for label in labels):
        bad = next(i for i, label in zip(items, labels, strict=True) if label is None)
        raise ReplyError(f"{str(bad)[:40]!r} is not supported, unsupported or unknown")
    if len(labels) != n:
        raise ReplyError(f"{len(labels)} verdict(s) for {n} statement(s); give exactly one per statement")
    return [label for label in labels if label is not None]


def _in_order(numbered: Mapping[int, Verdict], n: int) -> list[Verdict]:
    missing = [i for i in range(1, n + 1) if i not in numbered]
    extra = sorted(i for i in numbered if not 1 <= i <= n)
    if missing:
        raise ReplyError(f"no verdict for statement(s) {', '.join(map(str, missing[:10]))} of {n}")
    if extra:
        raise ReplyError(f"verdict(s) for statement(s) {', '.join(map(str, extra[:10]))}, but there are {n}")
    return [numbered[i] for i in range(1, n + 1)]


# --- prompts and schemas -----------------------------------------------------------------------


def extraction_schema(urls: Sequence[str], settings: FactSettings) -> dict[str, Any]:
    """What an enforcing endpoint holds the extracting judge to: a bounded list of pairs whose URL
    is one of the report's own (so a weak judge cannot invent one)."""
    url: dict[str, Any] = (
        {"type": "string", "enum": list(urls)} if 0 < len(urls) <= 300 else {"type": "string"}
    )
    return {
        "title": "fact_citations",
        "type": "object",
        "properties": {
            "citations": {
                "type": "array",
                "maxItems": settings.max_pairs,
                "items": {
                    "type": "object",
                    "properties": {
                        "statement": {
                            "type": "string",
                            "minLength": 10,
                            "maxLength": settings.max_statement_chars,
                        },
                        "url": url,
                    },
                    "required": ["statement", "url"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["citations"],
        "additionalProperties": False,
    }


def verdict_schema(n: int) -> dict[str, Any]:
    """Exactly one label per statement, in order."""
    return {
        "title": "fact_verdicts",
        "type": "object",
        "properties": {
            "verdicts": {
                "type": "array",
                "items": {"type": "string", "enum": list(LABELS)},
                "minItems": n,
                "maxItems": n,
            }
        },
        "required": ["verdicts"],
        "additionalProperties": False,
    }


_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "extract_system": "You read research reports and list each statement that cites a source, with the source's URL.",
        "extract": """<report>
{report}
</report>

The report above cites sources in its text with markers such as [3] or [1, 2], which point to the \
numbered reference list at its end, or with Markdown links [title](url).
Find every place where the text cites a source. For each, give:
- the statement: the cited sentence, complete enough to be checked on its own, without the markers;
- the URL of the cited source, copied from the reference list or the link.
A statement that cites two sources is listed twice, once with each URL.
{form}""",
        "extract_lines": "Answer with one line per citation and nothing else: the statement, then |||, then the URL:\n"
        "<statement> ||| <url>\nIf the text cites no source, answer NONE.",
        "extract_json": 'Answer with one JSON object and nothing else:\n{"citations": [{"statement": "<the cited '
        'statement>", "url": "<its source URL>"}]}\nIf the text cites no source, answer {"citations": []}.',
        "extract_again": "one line per citation, <statement> ||| <url>, with URLs copied from the report's reference list.",
        "extract_again_json": 'one JSON object, {"citations": [{"statement": "...", "url": "..."}]}, with URLs '
        "copied from the report's reference list.",
        "verdict_system": "You check statements against a source page and say whether the page supports each one.",
        "verdict": """<reference>
{page}
</reference>

Statements that cite this page:
{statements}

Judge each statement against the reference page above:
- unknown: the page has no real content (an error, "page not found", a login wall); then every statement is unknown;
- supported: the page states some or all of the statement's facts or figures (rounded numbers count);
- unsupported: none of the statement's facts or figures are in the page.
{form}""",
        "verdict_lines": "Answer with one line per statement, in order, and nothing else:\n{lines}",
        "verdict_json": "Answer with one JSON object and nothing else, one label per statement in order ({n} in all):\n"
        '{{"verdicts": ["<supported, unsupported or unknown>", ...]}}',
        "verdict_again": "exactly {n} line(s), '<number>. <supported, unsupported or unknown>', one per statement in order.",
        "verdict_again_json": 'one JSON object with exactly {n} label(s) in order: {{"verdicts": ["supported", ...]}}.',
        "label": "<supported, unsupported or unknown>",
        "not_usable": "That answer was not usable: {problem}. Answer again with nothing but {form}",
    },
    "zh": {
        "extract_system": "你阅读调研报告，列出其中每一条引用了来源的陈述及其来源链接。",
        "extract": """<report>
{report}
</report>

上面的报告在正文中用 [3]、[1, 2] 这样的标记引用文末编号的参考文献，或用 Markdown 链接 [标题](链接) 引用来源。
请找出正文中每一处引用，逐条给出：
- 陈述：被引用的句子，须完整到可以单独核对，不含引用标记；
- 被引来源的链接：从参考文献列表或链接中照抄。
一条陈述引用了两个来源时列两次，每次一个链接。
{form}""",
        "extract_lines": "每条引用写一行，不要写别的：陈述，然后 |||，然后链接：\n<陈述> ||| <链接>\n如果正文没有引用任何来源，回答 NONE。",
        "extract_json": '只输出一个 JSON 对象：\n{"citations": [{"statement": "<被引用的陈述>", "url": "<来源链接>"}]}\n'
        '如果正文没有引用任何来源，输出 {"citations": []}。',
        "extract_again": "每条引用一行，<陈述> ||| <链接>，链接从报告的参考文献列表照抄。",
        "extract_again_json": '一个 JSON 对象 {"citations": [{"statement": "...", "url": "..."}]}，链接从报告的参考文献列表照抄。',
        "verdict_system": "你对照来源网页核查陈述，判断网页是否支持每一条陈述。",
        "verdict": """<reference>
{page}
</reference>

引用该网页的陈述：
{statements}

请对照上面的参考网页判断每条陈述：
- unknown：网页没有有效内容（报错、"page not found"、需要登录），此时所有陈述都是 unknown；
- supported：网页中能找到该陈述的全部或部分事实或数据（数据允许四舍五入）；
- unsupported：该陈述的事实和数据在网页中都找不到。
{form}""",
        "verdict_lines": "按顺序每条陈述写一行，不要写别的：\n{lines}",
        "verdict_json": "只输出一个 JSON 对象，按顺序每条陈述一个判断（共 {n} 个）：\n"
        '{{"verdicts": ["<supported、unsupported 或 unknown>", ...]}}',
        "verdict_again": "恰好 {n} 行，'<序号>. <supported、unsupported 或 unknown>'，按陈述顺序。",
        "verdict_again_json": '一个 JSON 对象，恰好 {n} 个按顺序的判断：{{"verdicts": ["supported", ...]}}。',
        "label": "<supported、unsupported 或 unknown>",
        "not_usable": "这个回答无法使用：{problem}。请重新回答，只输出 {form}",
    },
}


def _language(language: str | None, question: str, report: str) -> str:
    """zh or en: the caller's (a DRB task's language), else the question's (the report's if none)."""
    if language:
        return "zh" if language == "zh" else "en"
    from oresearch_cli.textutil import detect_language

    return "zh" if detect_language(question.strip() or report[:2000]) == "zh" else "en"


def _wants_json(llm: Any) -> bool:
    """Whether the judge's endpoint enforces JSON: then ask for JSON, else for plain lines."""
    try:
        mode = getattr(llm.config.role("judge"), "json_mode", "none")
    except (AttributeError, LookupError, ConfigError):  # a stand-in without a role table
        return False
    return mode in ("json_object", "json_schema")


def extraction_messages(report: str, language: str, as_json: bool, max_chars: int) -> Messages:
    text = _TEXT[language]
    form = text["extract_json"] if as_json else text["extract_lines"]
    user = text["extract"].format(report=report[:max_chars], form=form)
    return [{"role": "system", "content": text["extract_system"]}, {"role": "user", "content": user}]


def verdict_messages(page: str, statements: Sequence[str], language: str, as_json: bool) -> Messages:
    text = _TEXT[language]
    n = len(statements)
    if as_json:
        form = text["verdict_json"].format(n=n)
    else:
        form = text["verdict_lines"].format(lines="\n".join(f"{i}. {text['label']}" for i in range(1, n + 1)))
    listed = "\n".join(f"{i}. {s}" for i, s in enumerate(statements, start=1))
    user = text["verdict"].format(page=page, statements=listed, form=form)
    return [{"role": "system", "content": text["verdict_system"]}, {"role": "user", "content": user}]


def _restate(language: str, form: str) -> Callable[[Messages, str, str], Messages]:
    """The strict re-ask: the unusable answer, what was wrong, and the one form wanted."""

    def restate(messages: Messages, raw: str, problem: str) -> Messages:
        again = _TEXT[language]["not_usable"].format(problem=problem, form=form)
        return [*messages, {"role": "assistant", "content": raw[:2000]}, {"role": "user", "content": again}]

    return restate


# --- asking the judge --------------------------------------------------------------------------


async def _ask(
    llm: Any,
    messages: Messages,
    parse: Callable[[str], T],
    *,
    schema: Mapping[str, Any],
    restate: Callable[[Messages, str, str], Messages],
    max_attempts: int,
    trace_id: str,
) -> Judgement[T]:
    """Ask the judge role until `parse` takes a reply (it raises `ReplyError`); never raises for
    the endpoint or the model: a judgement without a value says why ("endpoint: ..." or
    "malformed output: ...")."""

    def read(result: ChatResult) -> T:
        return parse(result.text or "")

    failed: list[FailedReply] = []
    try:
        asked = await ask_structured(
            llm, "judge", messages, read, restate=restate, max_attempts=max_attempts, schema=schema,
            trace_id=trace_id, failed=failed,
        )  # fmt: skip
    except LLMError as exc:
        return Judgement(None, len(failed) + 1, f"endpoint: {exc}", [f.raw[:500] for f in failed])
    error = f"malformed output: {failed[-1].reason}" if asked.value is None and failed else None
    return Judgement(asked.value, asked.attempts, error, [f.raw[:500] for f in failed])


def _model(llm: Any) -> str:
    return str(llm.config.role("judge").model)


async def judge_pairs(
    llm: Any, report: str, *, language: str, settings: FactSettings, cache: JudgeCache, trace_id: str
) -> Extraction:
    """DRB's extraction: the judge lists (statement, url) pairs, checked against the report's own
    URLs. Cached per (judge model, report); a report without any URL needs no call."""
    analysis = analyze_report(report)
    report_urls = list(dict.fromkeys([ref.url for ref in analysis.references if ref.url] + find_urls(report)))
    if not report_urls:
        return Extraction([])
    references = {r.number: r.url for r in reversed(analysis.references) if r.number is not None and r.url}
    as_json = _wants_json(llm)
    shown = report[: settings.max_report_chars]
    key = cache_key(
        _model(llm),
        language,
        f"{as_json}\x00{settings.max_statement_chars}\x00{shown}",
        f"{FACT_VERSION}/extract",
    )
    hit = cache.get(key)
    if hit is not None:
        stored = hit["extraction"]
        return Extraction([(s, u) for s, u in stored["pairs"]], stored.get("dropped", 0), cached=True)

    def parse(text: str) -> tuple[list[tuple[str, str]], int]:
        return check_extraction(parse_extraction(text), report_urls, references, settings.max_statement_chars)

    form = _TEXT[language]["extract_again_json" if as_json else "extract_again"]
    judged = await _ask(
        llm,
        extraction_messages(report, language, as_json, settings.max_report_chars),
        parse,
        schema=extraction_schema(report_urls, settings),
        restate=_restate(language, form),
        max_attempts=settings.max_attempts,
        trace_id=trace_id,
    )
    if judged.value is None:
        return Extraction([], attempts=judged.attempts, error=judged.error or "no usable answer")
    pairs, dropped = judged.value
    cache.put(key, _model(llm), {"extraction": {"pairs": pairs, "dropped": dropped}}, rubric=FACT_VERSION)
    return Extraction(pairs, dropped, attempts=judged.attempts)


@dataclass
class _Verdicts:
    labels: list[Verdict] | None
    attempts: int = 0
    cached: bool = False
    error: str | None = None


async def judge_statements(
    llm: Any,
    url: str,
    page: str,
    statements: Sequence[str],
    *,
    language: str,
    settings: FactSettings,
    cache: JudgeCache,
    trace_id: str,
) -> _Verdicts:
    """DRB's validate step for one page: a label per statement, cached per (judge model, page
    text, statements); an unusable answer is a failure, never a label."""
    as_json = _wants_json(llm)
    n = len(statements)
    key = cache_key(
        _model(llm), page_key(url), f"{language}\x00{as_json}\x00" + "\x00".join(statements) + "\x00\x00" + page,
        f"{FACT_VERSION}/verdict",
    )  # fmt: skip
    hit = cache.get(key)
    if hit is not None:
        return _Verdicts(list(hit["verdicts"]["labels"]), cached=True)
    form = _TEXT[language]["verdict_again_json" if as_json else "verdict_again"].format(n=n)
    judged = await _ask(
        llm,
        verdict_messages(page, statements, language, as_json),
        lambda text: parse_verdicts(text, n),
        schema=verdict_schema(n),
        restate=_restate(language, form),
        max_attempts=settings.max_attempts,
        trace_id=trace_id,
    )
    if judged.value is None:
        return _Verdicts(None, judged.attempts, error=judged.error or "no usable answer")
    cache.put(key, _model(llm), {"verdicts": {"labels": list(judged.value)}}, rubric=FACT_VERSION)
    return _Verdicts(list(judged.value), judged.attempts)


async def fetch_page(crawl: Crawler, url: str, max_chars: int) -> tuple[str | None, str | None]:
    """(text, None) for a readable page, cut to `max_chars`; (None, why) for one that cannot be
    read, whose statements are then unknown. A crawl backend left unconfigured is the user's to
    fix, so `BackendConfigError` propagates."""
    try:
        page = await crawl.crawl(url)
    except BackendConfigError:
        raise
    except (ToolError, OSError, asyncio.TimeoutError) as exc:
        return None, " ".join(str(exc).split())[:300] or type(exc).__name__
    if page.error:
        return None, page.error[:300]
    if not page.text.strip():
        return None, "the page has no text"
    text = "\n\n".join(part for part in (page.title.strip(), page.text.strip()) if part)
    return text[:max_chars], None


# --- one task ----------------------------------------------------------------------------------


async def fact_task(
    llm: Any,
    crawl: Crawler,
    task_id: str | int,
    question: str,
    report: str,
    *,
    settings: FactSettings | None = None,
    cache: JudgeCache,
    language: str | None = None,
) -> FactTaskResult:
    """FACT for one report (a bare report or an ores trace): extract, deduplicate per URL, fetch
    each page once, judge its statements, count. `llm` is an open `LLMClient` with a judge role;
    `crawl` a `Crawler` (a `Toolbox`); `language` a DRB task's ("zh"/"en"), else detected."""
    settings = settings or FactSettings()
    text = report_of(report)
    lang = _language(language, question, text)
    trace_id = str(task_id)
    result = FactTaskResult(task_id, extractor=settings.extractor)
    if settings.extractor == "rules":
        extraction = rule_pairs(text, settings.max_statement_chars)
    else:
        extraction = await judge_pairs(
            llm, text, language=lang, settings=settings, cache=cache, trace_id=trace_id
        )
    result.calls, result.cached = extraction.attempts, int(extraction.cached)
    result.dropped, result.unresolved = extraction.dropped, extraction.unresolved
    if extraction.error is not None:
        result.error, result.failed_calls = f"extraction failed: {extraction.error}", 1
        return result
    groups, result.duplicates = group_by_url(extraction.pairs)
    result.pages = len(groups)
    gate = asyncio.Semaphore(settings.concurrency)

    async def one(group: UrlGroup) -> list[FactPair]:
        async with gate:
            page, why = await fetch_page(crawl, group.url, settings.max_page_chars)
            if page is None:
                result.unreadable += 1
                return [FactPair(s, group.url, "unknown", f"page: {why}") for s in group.statements]
            pairs: list[FactPair] = []
            for start in range(0, len(group.statements), settings.max_statements):
                chunk = group.statements[start : start + settings.max_statements]
                judged = await judge_statements(
                    llm, group.url, page, chunk, language=lang, settings=settings, cache=cache,
                    trace_id=trace_id,
                )  # fmt: skip
                result.calls += judged.attempts
                result.cached += judged.cached
                if judged.labels is None:
                    result.failed_calls += 1
                    pairs += [FactPair(s, group.url, None, f"judge: {judged.error}") for s in chunk]
                else:
                    pairs += [FactPair(s, group.url, v) for s, v in zip(chunk, judged.labels, strict=True)]
            return pairs

    for pairs in await asyncio.gather(*(one(g) for g in groups)):
        result.pairs += pairs
    return result.tally()
