"""The pieces the orchestrator asks the models for, their JSON schemas, and lenient parsing.

A piece is what one role writes in one call: the subtask list (planner), a step (worker: a
thought, a plan on the first step, and an action: search queries, URLs to crawl, or answer), a
subtask answer (worker) and the report (summarizer). Parsing never trusts the model to write
trace tags: it takes JSON when there is some and falls back to reading plain text (`Search: ...`
lines, bare URLs, numbered lists), strips any tag the model wrote anyway, and raises `PieceError`
with a reason a stricter prompt can quote when nothing usable is there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oresearch_cli.filtering.language import report_sample, script_language
from oresearch_cli.llm import ReplyError, extract_json
from oresearch_cli.textutil.lang import HAN_CHARS
from oresearch_cli.trace import SubtaskList, analyze_report, find_urls, page_key
from oresearch_cli.trace.tags import TAG_RE
from oresearch_cli.trace.urls import is_url

SEARCH = "search"
CRAWL = "crawl"
ANSWER = "answer"
ACTIONS = (SEARCH, CRAWL, ANSWER)

MAX_QUERIES = 3
MAX_QUERY_CHARS = 200
MAX_CRAWL_URLS = 3
MAX_THOUGHT_CHARS = 1500
MAX_PLAN_CHARS = 1500
MAX_SUBTASK_CHARS = 400
MIN_SUBTASK_LENGTH = 8  # `text_length`: shorter is a fragment ("Facts"), not a question
MIN_ANSWER_LENGTH = 20  # `text_length`, citations included


class PieceError(ReplyError):
    """A reply with nothing usable in it; `reason` says why, for the failure record and the retry."""


# -- language and length ---------------------------------------------------------------------------

_HAN = re.compile(f"[{HAN_CHARS}]")
_CJK_END = re.compile(f"[\u3000-\u303f{HAN_CHARS}\uff00-\uffef]$")
HAN_WEIGHT = 3  # a Han character says about as much as three Latin characters


def written_in(text: str, language: str) -> bool:
    """Whether model text is in `language` (a prompt folder) as the filter judges a report: by the
    script rule of `detect_language` on its prose (links and URLs aside). Only Chinese is checked:
    an English thought, answer or report to a Chinese question is the model ignoring its prompt,
    and an English report is what the filter's language rule rejects. Text with no letters at all
    has nothing to judge and passes."""
    if language != "zh":
        return True
    return script_language(report_sample(text, None)) in ("zh", "und")


def text_length(text: str) -> int:
    """Characters, a Han character counting `HAN_WEIGHT`: the minimum lengths of pieces are set in
    Latin characters, and "大熊猫主要吃竹子" says as much as "Pandas mostly eat bamboo"."""
    return len(text) + (HAN_WEIGHT - 1) * len(_HAN.findall(text))


def cite_after(text: str, markers: str) -> str:
    """`text` with citation `markers` appended: after a space in Latin text, directly after Chinese."""
    text = text.rstrip()
    return f"{text}{markers}" if _CJK_END.search(text) else f"{text} {markers}"


# -- text cleaning ---------------------------------------------------------------------------------

_REASONING = re.compile(r"^.*</\s*think\s*>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?|\n?```\s*$")
_WS = re.compile(r"[ \t]+")
_BLANKS = re.compile(r"\n{3,}")
_INLINE_NUMBER = re.compile(r"(\d{1,2})([.)、:：])(\s)")


def clean_text(text: str | None) -> str:
    """Model text made safe for a trace element: a leading reasoning block (`...</think>`) and every
    trace tag spelling removed, fences and runs of blank lines squeezed."""
    text = text or ""
    if re.search(r"</\s*think\s*>", text, re.IGNORECASE):
        text = _REASONING.sub("", text, count=1)
    text = TAG_RE.sub(" ", text)
    text = _FENCE.sub("", text.strip())
    lines = [_WS.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def one_line(text: str, limit: int) -> str:
    flat = " ".join(clean_text(text).split())
    return flat[:limit].rstrip()


def _json(text: str) -> dict[str, Any] | None:
    try:
        return extract_json(text)
    except ValueError:
        return None


def _first(data: dict[str, Any], *keys: str) -> Any:
    lowered = {str(k).lower(): v for k, v in data.items()}
    for key in keys:
        if key in lowered and lowered[key] not in (None, "", []):
            return lowered[key]
    return None


def _as_list(value: Any, split: str = "|") -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in value.split(split)] if split else [value]
    if isinstance(value, Sequence):
        return [str(v) if not isinstance(v, str) else v for v in value if v is not None]
    return [str(value)]


# -- the subtask list ------------------------------------------------------------------------------


def clean_subtask(text: str) -> str:
    """One line, no tags, no `3. ` inside it (that would read as a new item of the list)."""
    line = one_line(text, MAX_SUBTASK_CHARS)
    line = re.sub(r"^(?:\d{1,2}\s*[.)、:：]|[-*•])\s*", "", line)
    return _INLINE_NUMBER.sub(r"\1\2", line).strip()


def parse_subtasks(text: str, *, min_items: int = 2, max_items: int = 6) -> list[str]:
    """The planner's subtasks: `{"subtasks": [...]}` or a numbered/bulleted list in plain text."""
    data = _json(text)
    items: list[str] = []
    if data is not None:
        value = _first(data, "subtasks", "subtask_list", "tasks", "items", "questions", "子任务")
        items = [
            str(_first(v, "subtask", "question", "task", "text", "title") or "") if isinstance(v, dict) else v
            for v in _as_list(value, split="")
        ]
    if not items:
        body = clean_text(text)
        items = SubtaskList(body).items if body else []
        if len(items) == 1 and "\n" in items[0]:
            items = [line for line in items[0].splitlines() if line.strip()]
    seen: set[str] = set()
    result = []
    for item in items:
        subtask = clean_subtask(item)
        key = subtask.casefold()
        if text_length(subtask) >= MIN_SUBTASK_LENGTH and key not in seen:
            seen.add(key)
            result.append(subtask)
    if len(result) < min_items:
        raise PieceError(
            f"it lists {len(result)} usable subtask{'s' * (len(result) != 1)}, fewer than {min_items}"
        )
    return result[:max_items]


# -- a worker step ---------------------------------------------------------------------------------


@dataclass
class StepPiece:
    thought: str
    action: str
    plan: str = ""
    queries: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what parsing had to drop or repair


_LINE_ACTION = re.compile(
    r"^\s*[-*]?\s*\**(?P<key>thought|think|plan|action|search|queries|query|crawl|read|urls?|answer"
    r"|思考|想法|计划|行动|动作|搜索|查询|阅读|抓取|网址|链接|回答|作答)\**\s*[:：]\s*(?P<value>.*)$",
    re.IGNORECASE | re.MULTILINE,
)
# The Chinese keys of a plain-text step (the zh prompts label history lines 思考/计划/搜索/阅读).
_ZH_KEYS = {"思考": "thought", "想法": "thought", "计划": "plan", "行动": "action", "动作": "action",
            "搜索": "search", "查询": "queries", "阅读": "crawl", "抓取": "crawl", "网址": "urls",
            "链接": "urls", "回答": "answer", "作答": "answer"}  # fmt: skip
# Action names as a model may write them in the step's JSON.
_ACTION_NAMES = {"web_search": SEARCH, "crawl_page": CRAWL, "read": CRAWL, "final": ANSWER,
                 "搜索": SEARCH, "阅读": CRAWL, "抓取": CRAWL, "回答": ANSWER, "作答": ANSWER}  # fmt: skip


def _text_step(text: str) -> dict[str, Any]:
    """Key lines of a plain-text step (`Thought: ...`, `Search: a | b`, `Crawl: url`)."""
    data: dict[str, Any] = {}
    body = clean_text(text)
    for m in _LINE_ACTION.finditer(body):
        key, value = m.group("key").lower(), m.group("value").strip()
        key = _ZH_KEYS.get(key, key)
        key = {"think": "thought", "query": "queries", "read": "crawl", "url": "urls"}.get(key, key)
        if key == "search":
            data.setdefault("action", SEARCH)
            data.setdefault("queries", value)
        elif key == "crawl":
            data.setdefault("action", CRAWL)
            data.setdefault("urls", value)
        elif key == "answer":
            data.setdefault("action", ANSWER)
        else:
            data.setdefault(key, value)
    if "thought" not in data and data.get("action"):
        first = _LINE_ACTION.search(body)
        before = body[: first.start()].strip() if first else ""
        if before:
            data["thought"] = before
    return data


def _resolve_urls(raw: list[str], sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """(URLs to crawl, notes): numbers pick from `sources`; URLs must be among them."""
    known = {page_key(u): u for u in sources}
    urls: list[str] = []
    notes: list[str] = []
    for item in raw:
        item = str(item).strip().strip("[]()<>")
        if re.fullmatch(r"\d{1,3}", item):
            index = int(item) - 1
            if 0 <= index < len(sources):
                urls.append(sources[index])
            else:
                notes.append(f"source number {item} does not exist")
            continue
        found = find_urls(item) or ([item] if is_url(item) else [])
        for url in found:
            if page_key(url) in known:
                urls.append(known[page_key(url)])
            else:
                notes.append(f"{url} is not among the sources seen")
    unique = list(dict.fromkeys(urls))
    return unique[:MAX_CRAWL_URLS], notes


def clean_query(query: str) -> str:
    query = one_line(query, MAX_QUERY_CHARS)
    query = re.sub(r"&\s*(?:serp_num|num)\s*=\s*\d*", " ", query)
    return " ".join(query.replace("|", " ").replace("&", " ").split()).strip(" \"'")


def parse_step(text: str, *, sources: Sequence[str], need_plan: bool = False) -> StepPiece:
    """A worker step. `sources` are the URLs seen so far (numbered from 1), the only ones it may crawl.
    Raises `PieceError` without a usable action or thought; a missing plan is noted, not fatal."""
    data = _json(text)
    if data is None:
        data = _text_step(text)
        if not data:
            raise PieceError("it is neither JSON nor `Thought: ...` / `Search: ...` lines")
    thought = one_line(
        str(_first(data, "thought", "think", "reasoning", "reason", "思考") or ""), MAX_THOUGHT_CHARS
    )
    plan_value = _first(data, "plan", "plans", "计划")
    if isinstance(plan_value, list):
        plan_value = "\n".join(f"{i}. {one_line(str(p), 300)}" for i, p in enumerate(plan_value, 1))
    plan = clean_text(str(plan_value or ""))[:MAX_PLAN_CHARS].strip()
    action = str(_first(data, "action", "tool", "next", "行动") or "").strip().lower()
    raw_queries = _as_list(_first(data, "queries", "query", "search", "查询"))
    raw_urls = _as_list(_first(data, "urls", "url", "crawl", "links", "网址"))
    action = _ACTION_NAMES.get(action, action)
    if action not in ACTIONS:
        action = SEARCH if raw_queries else CRAWL if raw_urls else action
    if action not in ACTIONS:
        raise PieceError(f"its action {action or '(none)'!r} is not one of search, crawl, answer")
    piece = StepPiece(thought=thought, action=action, plan=plan)
    if action == SEARCH:
        queries = [q for q in (clean_query(q) for q in raw_queries) if q]
        piece.queries = list(dict.fromkeys(queries))[:MAX_QUERIES]
        if not piece.queries:
            raise PieceError("it chooses search but gives no query")
    elif action == CRAWL:
        piece.urls, piece.notes = _resolve_urls(raw_urls, sources)
        if not piece.urls:
            why = "; ".join(piece.notes[:2]) or "it gives no URL"
            raise PieceError(f"it chooses crawl but names no URL from the sources list ({why})")
    if not thought:
        raise PieceError("it has no thought")
    if need_plan and not plan:
        piece.notes.append("no plan")
    return piece


# -- answers and the report ------------------------------------------------------------------------


def rewrite_citations(text: str, mapping: dict[int, int] | None, valid: set[int]) -> tuple[str, list[int]]:
    """`text` with each citation marker's numbers mapped (`mapping`, when given) and kept only if in
    `valid`; a marker left with no number is removed. Returns (text, cited numbers in order)."""
    analysis = analyze_report(text)
    cited: list[int] = []
    out = text
    for citation in sorted(analysis.citations, key=lambda c: c.offset, reverse=True):
        numbers = [mapping.get(n, -1) if mapping is not None else n for n in citation.numbers]
        kept = [n for n in dict.fromkeys(numbers) if n in valid]
        replacement = "".join(f"[{n}]" for n in kept)
        if not kept and out[citation.offset - 1 : citation.offset] == " ":
            start = citation.offset - 1
        else:
            start = citation.offset
        out = out[:start] + replacement + out[citation.offset + len(citation.raw) :]
    for citation in analysis.citations:
        numbers = [mapping.get(n, -1) if mapping is not None else n for n in citation.numbers]
        cited += [n for n in numbers if n in valid]
    return out, list(dict.fromkeys(cited))


# The end of a complete sentence, with the citations that may follow its stop: `... sugar. [2]`.
_SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+\])*(?=\s|$)|[。！？](?:\[\d+\])*")


def complete_sentences(text: str) -> str:
    """`text` up to the end of its last complete sentence ('' when it has none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else ""


def source_numbers(value: Any, n_sources: int) -> list[int]:
    """The valid source numbers in a JSON `sources` value (`[1, 3]`, `["2"]`), in order, once each."""
    numbers = []
    for item in _as_list(value, split=","):
        item = str(item).strip().strip("[]")
        if item.isdigit() and 1 <= int(item) <= n_sources:
            numbers.append(int(item))
    return list(dict.fromkeys(numbers))


def with_citations(text: str, numbers: list[int], n_sources: int) -> str:
    """`text`, given citation markers for `numbers` at its end when it cites none of the sources
    itself: a schema-bound reply lists the sources it used beside the prose."""
    if not numbers or rewrite_citations(text, None, set(range(1, n_sources + 1)))[1]:
        return text
    return cite_after(text, "".join(f"[{n}]" for n in numbers))


def json_text(text: str, key: str) -> tuple[str, dict[str, Any]] | None:
    """(the string under `key`, the object) when `text` is a JSON object holding one; None when it
    is not JSON; `PieceError` when it looks like JSON but does not parse (a reply cut off mid-object)."""
    data = _json(text)
    if data is None:
        if clean_text(text).startswith("{"):
            raise PieceError("it starts a JSON object but is not valid JSON")
        return None
    value = _first(data, key)
    return (value, data) if isinstance(value, str) else None


def parse_answer(text: str, n_sources: int, *, truncated: bool = False) -> str:
    """A subtask answer: prose citing at least one of the `n_sources` numbered sources, as JSON
    (`{"answer": ..., "sources": [..]}`) or as plain text.

    A reply cut off at max_tokens keeps its complete sentences: asking again costs a whole
    second reply (minutes on a CPU) and a small model rambles into the cap the same way again."""
    found = json_text(text, "answer")
    if found is not None:
        answer, data = found
        text = with_citations(
            clean_text(answer), source_numbers(_first(data, "sources"), n_sources), n_sources
        )
    body = clean_text(text)
    if truncated:
        body = complete_sentences(body)
        if text_length(body) < MIN_ANSWER_LENGTH:
            raise PieceError("the reply was cut off at max_tokens; write a shorter answer")
    if text_length(body) < MIN_ANSWER_LENGTH:
        raise PieceError("it is empty or too short")
    body, cited = rewrite_citations(body, None, set(range(1, n_sources + 1)))
    if not cited:
        raise PieceError(f"it cites none of the sources [1]..[{n_sources}]")
    return body.strip()
