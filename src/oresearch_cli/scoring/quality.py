"""DeepResearchGym-style report quality: six 0-10 judge scores, and key-point recall.

DeepResearchGym (Coelho et al. 2025) has an LLM judge score a report on Clarity, Depth, Balance,
Breadth, Support and Insightfulness, each an integer 0-10 (its normalized score is their sum over
60, as a percentage), and, where a question comes with key points, labels each point Supported,
Omitted or Contradicted by the report: key-point recall is the share supported, the contradiction
rate the share contradicted. DRGym asks one call per dimension and one per key point, each for a
JSON object with a justification; here, to fit small and local judges:

- one call per report scores all six dimensions, in the simplest form a model can write, one
  line each ("Clarity: 7"); endpoints that bind output to a schema get a JSON object with the six
  integer keys instead. The reply is read leniently (JSON, code fences, "7/10", "**Depth**: 7",
  prose around, any case, <think> blocks skipped); one that misses a dimension is asked again
  once, strictly, with what was wrong (`ask_for_scores`);
- one call per report labels all its key points, one line each ("1: supported"), read and re-asked
  the same way; recall = supported / points.

With `weighted`, the judge is also asked for the top log probs of its tokens, and each dimension
gets a probability-weighted score sum(p(s) * s) / sum(p(s)) over the integers 0-10 at the place
the score is written (G-Eval; `llm.logprob_scores`), next to the integer it wrote. An endpoint that
sends no log probs leaves `weighted_score` None (the integer is the score; `source` says which),
and one that refuses the request fields is asked without them for the rest of the run.

Results share the judge cache of `ores filter` (cache/judge.sqlite) under their own rubric
versions, so a rerun makes no call for a report it already judged. A judgement that stays
unusable after the re-ask is a failure (counted, no scores, not cached), never a made-up 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from oresearch_cli.errors import ConfigError, InputError
from oresearch_cli.filtering.judge import JudgeCache, cache_key
from oresearch_cli.llm.client import MAX_TOP_LOGPROBS
from oresearch_cli.llm.logprob_judge import LogprobJudge, LogprobSupport
from oresearch_cli.llm.logprob_scores import weighted_score
from oresearch_cli.llm.structured import Judgement, ask_for_scores

log = logging.getLogger("oresearch_cli.scoring.quality")

QUALITY_VERSION = "drgym-quality-v1"  # part of the cache key: bump when the prompt or parsing changes
KEYPOINT_VERSION = "drgym-keypoints-v1"
WEIGHTED_SUFFIX = "+logprobs"  # a weighted judgement is cached apart: it holds more than the integers

QUALITY_DIMENSIONS: dict[str, str] = {
    "clarity": "a clear structure of distinct sections with a logical flow; every point says something "
    "new; no repetition, filler or ambiguity",
    "depth": "analysis beyond surface facts: explanations, examples, nuance and synthesis (length alone "
    "is not depth)",
    "balance": "fair and objective: the relevant perspectives presented without unjustified bias",
    "breadth": "many distinct, relevant subtopics and angles (for example legal, historical, economic, "
    "ethical) while staying on the question",
    "support": "key claims backed by specific, traceable sources; precise data for numbers; 0 when no "
    "source URL is given at all",
    "insightfulness": "more than common knowledge: original synthesis, non-obvious connections, concrete "
    "and grounded recommendations",
}
LABELS = {d: d.capitalize() for d in QUALITY_DIMENSIONS}
# Other names a judge writes for a dimension (matched whole, any case).
_ALIASES: dict[str, tuple[str, ...]] = {"insightfulness": ("insightfulness", "insightful", "insight")}

SUPPORTED, OMITTED, CONTRADICTED = "supported", "omitted", "contradicted"
VERDICTS = (SUPPORTED, OMITTED, CONTRADICTED)

SCHEMA: dict[str, Any] = {
    "title": "quality_scores",
    "type": "object",
    "properties": {d: {"type": "integer", "minimum": 0, "maximum": 10} for d in QUALITY_DIMENSIONS},
    "required": list(QUALITY_DIMENSIONS),
    "additionalProperties": False,
}


def keypoint_schema(n: int) -> dict[str, Any]:
    """The object a schema-bound judge writes for `n` key points: "1".."n" -> a verdict."""
    keys = [str(i) for i in range(1, n + 1)]
    return {
        "title": "key_point_verdicts",
        "type": "object",
        "properties": {k: {"type": "string", "enum": list(VERDICTS)} for k in keys},
        "required": keys,
        "additionalProperties": False,
    }


# --- settings and items -------------------------------------------------------------------------


@dataclass(frozen=True)
class QualitySettings:
    """How to judge. `max_attempts` counts the first ask and the strict re-asks (2: re-ask once);
    `max_chars` of the report are shown; `weighted` asks for `top_logprobs` alternatives per token."""

    max_attempts: int = 2
    max_chars: int = 24_000
    concurrency: int = 8
    weighted: bool = False
    top_logprobs: int = 5

    def __post_init__(self) -> None:
        for name, low in (("max_attempts", 1), ("max_chars", 200), ("concurrency", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"quality settings: {name} must be an integer of at least {low}, got {value!r}"
                )
        k = self.top_logprobs
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_LOGPROBS:
            raise ConfigError(
                f"quality settings: top_logprobs must be an integer from 1 to {MAX_TOP_LOGPROBS}, got {k!r}"
            )


@dataclass(frozen=True)
class QualityItem:
    """One report to judge; `key_points` (strings) when the question comes with them."""

    id: str
    question: str
    report: str
    key_points: Sequence[str] | None = None


def _check_item(item: QualityItem) -> tuple[str, ...] | None:
    points = item.key_points
    if points is None:
        return None
    if isinstance(points, str) or not isinstance(points, Sequence):
        raise InputError(
            f"quality item {item.id!r}: key_points must be a list of strings, got {type(points).__name__}; "
            "give one string per key point"
        )
    for n, point in enumerate(points, start=1):
        if not isinstance(point, str) or not point.strip():
            raise InputError(
                f"quality item {item.id!r}: key_points[{n}] must be a non-empty string, got {point!r}; "
                "remove it or write the point out"
            )
    return tuple(" ".join(p.split()) for p in points)


# --- the prompts --------------------------------------------------------------------------------

SYSTEM = (
    "You are a strict, impartial reviewer of research reports. You score a report on six dimensions "
    "with an integer from 0 (poor) to 10 (excellent), using the whole scale: 8 or more only for an "
    "outstanding report, low scores for a shallow, generic, unsupported or empty one."
)
_LINES = "\n".join(f"{LABELS[d]}: <0-10>" for d in QUALITY_DIMENSIONS)
_EXAMPLE = "{" + ", ".join(f'"{d}": <0-10>' for d in QUALITY_DIMENSIONS) + "}"
# What the strict re-ask after an unusable reply asks for.
SHAPE = f"with the six keys, each an integer from 0 to 10:\n{_EXAMPLE}"


def build_messages(question: str, report: str, max_chars: int) -> list[dict[str, str]]:
    dimensions = "\n".join(f"- {LABELS[d]}: {text}" for d, text in QUALITY_DIMENSIONS.items())
    user = (
        f"## Question\n{question.strip() or '(not given)'}\n\n"
        f"## Report\n{report[:max_chars].strip() or '(empty)'}\n\n"
        f"## Dimensions\n{dimensions}\n\n"
        "## Answer\nWrite exactly these six lines and nothing else, each with an integer from 0 to 10:\n"
        f"{_LINES}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


KEYPOINT_SYSTEM = (
    "You check which key points a research report covers. For each key point, decide whether the "
    "report supports it (affirms, explains or reinforces it), omits it (does not cover it at all) or "
    "contradicts it (says something that disagrees with it)."
)


def keypoint_shape(n: int) -> str:
    example = "{" + ", ".join(f'"{i}": "<verdict>"' for i in range(1, min(n, 3) + 1))
    return (
        f'with one key per key point, "1" to "{n}", each holding one word: supported, omitted or '
        f"contradicted:\n{example}{', ...' if n > 3 else ''}}}"
    )


def build_keypoint_messages(
    question: str, report: str, points: Sequence[str], max_chars: int
) -> list[dict[str, str]]:
    listed = "\n".join(f"{i}. {p}" for i, p in enumerate(points, start=1))
    lines = "\n".join(f"{i}: <verdict>" for i in range(1, len(points) + 1))
    user = (
        f"## Question\n{question.strip() or '(not given)'}\n\n"
        f"## Report\n{report[:max_chars].strip() or '(empty)'}\n\n"
        f"## Key points\n{listed}\n\n"
        f"## Answer\nWrite exactly {len(points)} line{'s' * (len(points) != 1)} and nothing else, one per "
        "key point, where <verdict> is one word: supported, omitted or contradicted.\n"
        f"{lines}"
    )
    return [{"role": "system", "content": KEYPOINT_SYSTEM}, {"role": "user", "content": user}]


# --- reading the replies ------------------------------------------------------------------------


class QualityReplyError(ValueError):
    """A judge's reply without the scores or verdicts asked for; the message says what is missing."""


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
# What may stand between a name and its score: marks, and a few words ("score", "is", "(0-10)").
_SEP = r"[^\w\n]*(?:(?:score|rating|rated|is|of|\(?\s*0\s*[-\u2013]\s*10\s*\)?)[^\w\n]*){0,3}"
# A score: not part of a range ("0-10"), not negative, "7" of "7/10" or "7.5".
_SCORE = r"(?<![-\u2013\d])(\d{1,3}(?:\.\d+)?)(?!\d)(?!\.\d)(?!\s*[-\u2013]\s*\d)"
_LINE_LEAD = re.compile(r"[\s>*#_\-\u2022\"'`{,]*(?:\d{1,2}[.)]\s*)?[\s>*#_\-\u2022\"'`]*")


def _pattern(names: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-]){_SEP}{_SCORE}", re.I)


_PATTERNS = {d: _pattern(_ALIASES.get(d, (d,))) for d in QUALITY_DIMENSIONS}


def _visible(text: str) -> str:
    """The text with <think> blocks blanked out, same length (offsets stay the reply's)."""
    return _THINK.sub(lambda m: " " * len(m.group(0)), text)


def _at_line_start(text: str, start: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    return _LINE_LEAD.fullmatch(text[line_start:start]) is not None


def _pick(text: str, matches: list[re.Match[str]]) -> re.Match[str] | None:
    """The match a reply means: the last that starts a line (a final list after reasoning), else
    the first anywhere (a one-line JSON object)."""
    leading = [m for m in matches if _at_line_start(text, m.start())]
    if leading:
        return leading[-1]
    return matches[0] if matches else None


@dataclass(frozen=True)
class ScoreMatch:
    """A score as written in the reply: its value, and where (`start`, the offset of its first
    digit in the reply text) and how (`number`, the digits) it was written."""

    value: float
    start: int
    number: str


def parse_scores(text: str) -> dict[str, ScoreMatch]:
    """The six scores of a judge's reply, leniently (lines, JSON, fences, "7/10", any case).
    Raises QualityReplyError naming what is missing or out of range."""
    visible = _visible(text or "")
    found: dict[str, ScoreMatch] = {}
    missing, bad = [], []
    for dim, pattern in _PATTERNS.items():
        chosen = _pick(visible, list(pattern.finditer(visible)))
        if chosen is None:
            missing.append(LABELS[dim])
            continue
        number = chosen.group(1)
        value = float(number)
        if not 0 <= value <= 10:
            bad.append(f"{LABELS[dim]} {number} is outside 0-10")
            continue
        found[dim] = ScoreMatch(value, chosen.start(1), number)
    problems = []
    if missing:
        problems.append(f"no score for {', '.join(missing)}")
    problems.extend(bad)
    if problems:
        raise QualityReplyError(
            "; ".join(problems) + " (write one line per dimension, like 'Clarity: 7', integers 0-10)"
        )
    return found


_VERDICT_WORDS = {
    "not supported": OMITTED,
    "not covered": OMITTED,
    "not mentioned": OMITTED,
    "not addressed": OMITTED,
    "supported": SUPPORTED,
    "supports": SUPPORTED,
    "support": SUPPORTED,
    "covered": SUPPORTED,
    "yes": SUPPORTED,
    "omitted": OMITTED,
    "omits": OMITTED,
    "omit": OMITTED,
    "missing": OMITTED,
    "absent": OMITTED,
    "no": OMITTED,
    "contradicted": CONTRADICTED,
    "contradicts": CONTRADICTED,
    "contradict": CONTRADICTED,
    "contradiction": CONTRADICTED,
}
_VERDICT = re.compile(
    r"(?<![\w.])(?:key\s*point|point|kp)?\s*#?\s*\"?(\d{1,3})\"?\s*[:.)=\-\u2013]+[^\w\n]*("
    + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(_VERDICT_WORDS, key=len, reverse=True))
    + r")\b",
    re.I,
)


def parse_verdicts(text: str, n: int) -> list[str]:
    """The verdict on each of `n` key points, in order, from lines like "1: supported" (or JSON,
    "Point 2 - Omitted", synonyms such as "covered", "missing", "contradicts"). Raises
    QualityReplyError naming the points without one."""
    visible = _visible(text or "")
    by_point: dict[int, list[re.Match[str]]] = {}
    for match in _VERDICT.finditer(visible):
        number = int(match.group(1))
        if 1 <= number <= n:
            by_point.setdefault(number, []).append(match)
    verdicts: list[str] = []
    missing: list[str] = []
    for number in range(1, n + 1):
        matches = by_point.get(number, [])
        leading = [m for m in matches if _at_line_start(visible, m.start())]
        chosen = (leading or matches)[0] if matches else None
        if chosen is None:
            missing.append(str(number))
            continue
        word = " ".join(chosen.group(2).lower().split())
        verdicts.append(_VERDICT_WORDS[word])
    if missing:
        raise QualityReplyError(
            f"no verdict for key point{'s' * (len(missing) != 1)} {', '.join(missing)} of {n} "
            "(write one line per key point, like '1: supported', with supported, omitted or contradicted)"
        )
    return verdicts


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DimensionScore:
    """One dimension's judgement: the integer the judge wrote, and the probability-weighted score
    when the endpoint sent log probs for it (None otherwise)."""

    score: float
    weighted_score: float | None = None

    @property
    def source(self) -> Literal["logprobs", "text"]:
        return "logprobs" if self.weighted_score is not None else "text"

    @property
    def value(self) -> float:
        """The weighted score where there is one, else the written one."""
        return self.weighted_score if self.weighted_score is not None else self.score


@dataclass
class KeyPointResult:
    """The verdict on each key point (None when the judgement failed: `error` says why)."""

    points: tuple[str, ...]
    verdicts: list[str] | None
    cached: bool = False
    attempts: int = 0
    error: str | None = None
    raw: list[str] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(v == verdict for v in self.verdicts or ())

    @property
    def recall(self) -> float | None:
        """Supported / key points; None when the judgement failed (never 0 for a failure)."""
        if self.verdicts is None or not self.points:
            return None
        return self.count(SUPPORTED) / len(self.points)

    @property
    def contradiction(self) -> float | None:
        if self.verdicts is None or not self.points:
            return None
        return self.count(CONTRADICTED) / len(self.points)


@dataclass
class QualityResult:
    """One report's quality: the six dimensions (None when the judgement failed: `error` says
    why) and, when it had key points, their verdicts."""

    id: str
    dimensions: dict[str, DimensionScore] | None
    key_points: KeyPointResult | None = None
    cached: bool = False
    attempts: int = 0
    error: str | None = None
    raw: list[str] = field(default_factory=list)  # unusable replies, for the record

    @property
    def overall(self) -> float | None:
        """The mean of the six written scores, 0-10 (DRGym's normalized score is this times 10)."""
        if self.dimensions is None:
            return None
        return sum(s.score for s in self.dimensions.values()) / len(self.dimensions)

    @property
    def weighted_overall(self) -> float | None:
        """The mean of the six weighted scores; None unless every dimension has one."""
        if self.dimensions is None or any(s.weighted_score is None for s in self.dimensions.values()):
            return None
        return sum(s.value for s in self.dimensions.values()) / len(self.dimensions)

    @property
    def score_source(self) -> Literal["logprobs", "text", "mixed"] | None:
        """Where the scores come from: all weighted by log probs, all as written, or some of each."""
        if self.dimensions is None:
            return None
        sources = {s.source for s in self.dimensions.values()}
        if len(sources) > 1:
            return "mixed"
        return "logprobs" if sources == {"logprobs"} else "text"

    @property
    def recall(self) -> float | None:
        return self.key_points.recall if self.key_points is not None else None


# --- judging ------------------------------------------------------------------------------------

T = TypeVar("T")


async def _ask(
    judge: LogprobJudge,
    messages: list[dict[str, str]],
    read: Callable[[str], Mapping[str, Any]],
    check: Callable[[Mapping[str, Any]], T],
    schema: Mapping[str, Any],
    shape: str,
    settings: QualitySettings,
    trace_id: str,
) -> Judgement[T]:
    return await ask_for_scores(
        judge,
        messages,
        check,
        schema=schema,
        shape=shape,
        max_attempts=settings.max_attempts,
        trace_id=trace_id,
        from_text=read,
    )


def _scores_only(data: Mapping[str, Any]) -> dict[str, ScoreMatch]:
    return {d: data[d] for d in QUALITY_DIMENSIONS}


async def judge_quality(
    llm: Any, item: QualityItem, settings: QualitySettings, support: LogprobSupport | None = None
) -> QualityResult:
    """The six dimensions of one report through `llm`'s judge role (no cache)."""
    judge = LogprobJudge(
        llm, settings.top_logprobs if settings.weighted else None, support or LogprobSupport()
    )
    judged = await _ask(
        judge,
        build_messages(item.question, item.report, settings.max_chars),
        parse_scores,
        _scores_only,
        SCHEMA,
        SHAPE,
        settings,
        item.id,
    )
    result = QualityResult(item.id, None, attempts=judged.attempts, error=judged.error, raw=judged.raw)
    if judged.value is None:
        return result
    reply = judge.last
    tokens = reply.logprobs if reply is not None and settings.weighted else None
    text = reply.text if reply is not None else ""
    dims: dict[str, DimensionScore] = {}
    for dim, match in judged.value.items():
        weighted = None
        if tokens and match.number.isdigit():
            weighted = weighted_score(tokens, text, match.start, match.number)
        dims[dim] = DimensionScore(match.value, None if weighted is None else round(weighted, 4))
    result.dimensions = dims
    return result


async def judge_key_points(
    llm: Any, item: QualityItem, points: Sequence[str], settings: QualitySettings
) -> KeyPointResult:
    """The verdict on each key point of one report through `llm`'s judge role (no cache)."""
    n = len(points)

    def check(data: Mapping[str, Any]) -> list[str]:
        return list(data["verdicts"])

    judged = await _ask(
        LogprobJudge(llm, None, LogprobSupport()),
        build_keypoint_messages(item.question, item.report, points, settings.max_chars),
        lambda text: {"verdicts": parse_verdicts(text, n)},
        check,
        keypoint_schema(n),
        keypoint_shape(n),
        settings,
        item.id,
    )
    return KeyPointResult(
        tuple(points), judged.value, attempts=judged.attempts, error=judged.error, raw=judged.raw
    )


def _dims_to_cache(dims: Mapping[str, DimensionScore]) -> dict[str, dict[str, Any]]:
    return {d: {"score": s.score, "weighted_score": s.weighted_score} for d, s in dims.items()}


def _dims_from_cache(data: Mapping[str, Any]) -> dict[str, DimensionScore] | None:
    try:
        return {
            d: DimensionScore(float(data[d]["score"]), data[d].get("weighted_score"))
            for d in QUALITY_DIMENSIONS
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # not ours or from another layout: judge again


def _verdicts_from_cache(data: Mapping[str, Any], n: int) -> list[str] | None:
    try:
        verdicts = [data[str(i)]["verdict"] for i in range(1, n + 1)]
    except (KeyError, TypeError):
        return None
    return verdicts if all(v in VERDICTS for v in verdicts) else None


async def quality_all(
    llm: Any, items: Sequence[QualityItem], settings: QualitySettings, cache: JudgeCache
) -> list[QualityResult]:
    """Judge every report through `llm` (an open `LLMClient` with a `judge` role), in input order:
    the six dimensions, and the key points where an item has them. A judgement cached for the
    judge's model makes no call; a new one is cached; a failed one is not (a rerun tries again).
    Raises InputError for an item whose key points are not a list of strings."""
    points = [_check_item(item) for item in items]
    model = llm.config.role("judge").model
    rubric = QUALITY_VERSION + (WEIGHTED_SUFFIX if settings.weighted else "")
    gate = asyncio.Semaphore(settings.concurrency)
    support = LogprobSupport()
    results: list[QualityResult | None] = [None] * len(items)
    tasks = []

    async def dimensions(i: int, item: QualityItem, key: str) -> None:
        async with gate:
            result = await judge_quality(llm, item, settings, support)
        if result.dimensions is not None:
            cache.put(key, model, _dims_to_cache(result.dimensions), rubric=rubric)
        kept = results[i]
        result.key_points = kept.key_points if kept is not None else None
        results[i] = result

    async def key_points(i: int, item: QualityItem, pts: tuple[str, ...], key: str) -> None:
        async with gate:
            verdicts = await judge_key_points(llm, item, pts, settings)
        if verdicts.verdicts is not None:
            stored = {str(n): {"verdict": v} for n, v in enumerate(verdicts.verdicts, start=1)}
            cache.put(key, model, stored, rubric=KEYPOINT_VERSION)
        kept = results[i]
        assert kept is not None  # every item has its result before any call starts
        kept.key_points = verdicts

    for i, (item, pts) in enumerate(zip(items, points, strict=True)):
        report = item.report[: settings.max_chars]
        key = cache_key(model, item.question, report, rubric)
        hit = cache.get(key)
        dims = _dims_from_cache(hit) if hit is not None else None
        if dims is not None:
            results[i] = QualityResult(item.id, dims, cached=True)
        else:
            results[i] = QualityResult(item.id, None)
            tasks.append(dimensions(i, item, key))
        if pts:
            kp_key = cache_key(model, item.question, report + "\x00" + json.dumps(pts), KEYPOINT_VERSION)
            kp_hit = cache.get(kp_key)
            verdicts = _verdicts_from_cache(kp_hit, len(pts)) if kp_hit is not None else None
            if verdicts is not None:
                kept = results[i]
                assert kept is not None
                kept.key_points = KeyPointResult(pts, verdicts, cached=True)
            else:
                tasks.append(key_points(i, item, pts, kp_key))
    await asyncio.gather(*tasks)
    return [r for r in results if r is not None]


# --- the summary --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualitySummary:
    """Means over the reports that got scores; failed judgements are counted, not averaged in.
    `weighted_dimensions` average the weighted scores of the reports that have them (`weighted`
    of them have all six); key-point means are over the reports whose key points were judged."""

    dimensions: dict[str, float]
    overall: float | None
    scored: int
    failed: int
    weighted_dimensions: dict[str, float] = field(default_factory=dict)
    weighted_overall: float | None = None
    weighted: int = 0
    key_point_recall: float | None = None
    key_point_contradiction: float | None = None
    key_points_scored: int = 0
    key_points_failed: int = 0

    @property
    def normalized(self) -> float | None:
        """DRGym's quality score: the six scores' sum over 60, as a percentage."""
        return None if self.overall is None else self.overall * 10

    def lines(self) -> list[str]:
        out = [f"{LABELS[d]}: {v:.2f}" for d, v in self.dimensions.items()]
        if self.overall is not None:
            out.append(f"Overall: {self.overall:.2f} (normalized {self.normalized:.1f}/100)")
        if self.weighted_overall is not None:
            out.append(f"Weighted overall: {self.weighted_overall:.2f} ({self.weighted} reports)")
        out.append(f"Scored: {self.scored}, failed: {self.failed}")
        if self.key_points_scored or self.key_points_failed:
            if self.key_point_recall is not None:
                out.append(f"Key-point recall: {self.key_point_recall:.4f}")
            if self.key_point_contradiction is not None:
                out.append(f"Key-point contradiction: {self.key_point_contradiction:.4f}")
            out.append(f"Key points scored: {self.key_points_scored}, failed: {self.key_points_failed}")
        return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_quality(results: Sequence[QualityResult]) -> QualitySummary:
    """Means over the scored reports (failures counted apart), and over judged key points."""
    scored = [(r, r.dimensions) for r in results if r.dimensions is not None]
    dims: dict[str, float] = {}
    weighted_dims: dict[str, float] = {}
    for d in QUALITY_DIMENSIONS:
        if (mean := _mean([s[d].score for _, s in scored])) is not None:
            dims[d] = mean
        if (mean := _mean([w for _, s in scored if (w := s[d].weighted_score) is not None])) is not None:
            weighted_dims[d] = mean
    weighted_overalls = [w for r, _ in scored if (w := r.weighted_overall) is not None]
    judged_points = [r.key_points for r in results if r.key_points is not None]
    recalls = [k.recall for k in judged_points if k.recall is not None]
    contradictions = [k.contradiction for k in judged_points if k.contradiction is not None]
    return QualitySummary(
        dimensions=dims,
        overall=_mean([o for r, _ in scored if (o := r.overall) is not None]),
        scored=len(scored),
        failed=len(results) - len(scored),
        weighted_dimensions=weighted_dims,
        weighted_overall=_mean(weighted_overalls),
        weighted=len(weighted_overalls),
        key_point_recall=_mean(recalls),
        key_point_contradiction=_mean(contradictions),
        key_points_scored=len(recalls),
        key_points_failed=sum(k.verdicts is None for k in judged_points),
    )
