"""RACE-style relative scoring: a report judged side by side with a reference report.

DeepResearch Bench's RACE scores a target article and a reference article together on four
dimensions (comprehensiveness, insight, instruction following, readability) and reports the target's
share, T / (T + R): 0.5 means as good as the reference, above it better. Judging both at once
makes the score relative, which is steadier than a pointwise 0-10 from a weak judge.

This is the compact form `ores rl` uses as R_base when a question comes with a reference report:
one judge call per pair, a 0-10 score for each article on each dimension (JSON, schema-bound
where the endpoint enforces schemas), dimension weights equal unless given. It is not DRB's full
protocol: DRB scores per-task criteria under each dimension and cleans citations from both
articles with an LLM; here citation markers and the references section are cut by a rule.

Results share the judge cache of `ores filter` (cache/judge.sqlite), under their own rubric
version, so a rerun makes no call for a pair it already judged. A judgement that stays
unusable after the re-asks is a failure (score None), never a made-up number.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oresearch_cli.filtering.config import JudgeSettings
from oresearch_cli.filtering.judge import JudgeCache, cache_key

RACE_VERSION = "race-v1"  # part of the cache key: bump when the prompt or the parsing changes
DIMENSIONS: dict[str, str] = {
    "comprehensiveness": "covers every part of the question with breadth and the needed detail",
    "insight": "depth of analysis: causes, comparisons, numbers, implications, not a list of facts",
    "instruction_following": "answers exactly what was asked, in the question's language and scope",
    "readability": "clear structure, coherent prose, no repetition or leftover scaffolding",
}
ARTICLES = ("target", "reference")

SCHEMA: dict[str, Any] = {
    "title": "race_scores",
    "type": "object",
    "properties": {
        d: {
            "type": "object",
            "properties": {a: {"type": "integer", "minimum": 0, "maximum": 10} for a in ARTICLES},
            "required": list(ARTICLES),
            "additionalProperties": False,
        }
        for d in DIMENSIONS
    },
    "required": list(DIMENSIONS),
    "additionalProperties": False,
}

SYSTEM = (
    "You are a strict reviewer comparing two research reports that answer the same question. "
    "Score each report on each dimension from 0 (worst) to 10 (best), judging them against each "
    "other: a better report gets the higher score."
)
_EXAMPLE = "{" + ", ".join(f'"{d}": {{"target": <0-10>, "reference": <0-10>}}' for d in DIMENSIONS) + "}"

_CITATION = re.compile(r"\s?\[\d+(?:\s*[,\u2013-]\s*\d+)*\]")
_REFERENCES = re.compile(
    r"\n#*\s*(?:references|sources|bibliography|参考文献|参考资料)\s*:?\s*\n.*\Z", re.I | re.S
)


class RaceOutputError(ValueError):
    """The judge's object does not fit the dimensions."""


def clean_article(text: str) -> str:
    """The article as the judge reads it: citation markers and the references section cut, so the
    comparison is on content, as DRB's cleaned articles are (by a rule here, not an LLM)."""
    return _CITATION.sub("", _REFERENCES.sub("", text.strip())).strip()


def check_pair_scores(data: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Each dimension's {target, reference} scores, strictly: all present, numbers in 0..10."""
    scores: dict[str, dict[str, float]] = {}
    for dimension in DIMENSIONS:
        entry = data.get(dimension)
        if not isinstance(entry, Mapping):
            raise RaceOutputError(f"{dimension!r} must be an object with target and reference scores")
        pair: dict[str, float] = {}
        for article in ARTICLES:
            value = entry.get(article)
            if isinstance(value, str):
                try:
                    value = float(value.strip())
                except ValueError:
                    raise RaceOutputError(f"{dimension}.{article} {value!r} is not a number") from None
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
                raise RaceOutputError(f"{dimension}.{article} must be a number from 0 to 10")
            pair[article] = float(value)
        scores[dimension] = pair
    return scores


def relative_score(
    scores: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None
) -> float | None:
    """T / (T + R) over the weighted dimension scores (equal weights by default); None when both
    articles scored 0 everywhere, a judgement that says nothing about which is better."""
    w = {d: float((weights or {}).get(d, 1.0)) for d in DIMENSIONS}
    target = sum(w[d] * scores[d]["target"] for d in DIMENSIONS)
    reference = sum(w[d] * scores[d]["reference"] for d in DIMENSIONS)
    if target + reference <= 0:
        return None
    return round(target / (target + reference), 4)


def build_messages(question: str, target: str, reference: str, max_chars: int) -> list[dict[str, str]]:
    half = max(1000, max_chars // 2)
    dimensions = "\n".join(f"- {d}: {text}" for d, text in DIMENSIONS.items())
    user = (
        f"## Question\n{question.strip() or '(not given)'}\n\n"
        f"## Target report\n{clean_article(target)[:half]}\n\n"
        f"## Reference report\n{clean_article(reference)[:half]}\n\n"
        f"## Dimensions (score both reports on each, 0-10)\n{dimensions}\n\n"
        f"Answer with one JSON object and nothing else, exactly these keys:\n{_EXAMPLE}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# What the strict re-ask after an unusable reply asks for.
SHAPE = f"with all four keys, each holding an integer 0-10 for target and reference:\n{_EXAMPLE}"


@dataclass(frozen=True)
class RaceTask:
    id: str
    question: str
    target: str  # the report judged
    reference: str  # the report it is judged against
    weights: Mapping[str, float] | None = None


@dataclass
class RaceResult:
    id: str
    scores: dict[str, dict[str, float]] | None
    score: float | None  # T / (T + R)
    cached: bool = False
    attempts: int = 0
    error: str | None = None


async def _race_one(llm: Any, task: RaceTask, settings: JudgeSettings) -> RaceResult:
    from oresearch_cli.llm import ask_for_scores

    judged = await ask_for_scores(
        llm,
        build_messages(task.question, task.target, task.reference, settings.max_chars),
        check_pair_scores,
        schema=SCHEMA,
        shape=SHAPE,
        max_attempts=settings.max_attempts,
        trace_id=task.id,
    )
    return RaceResult(task.id, judged.value, None, attempts=judged.attempts, error=judged.error)


async def race_all(
    tasks: Sequence[RaceTask], llm: Any, settings: JudgeSettings, cache: JudgeCache
) -> list[RaceResult]:
    """Judge every pair through `llm` (an open `LLMClient` with a `judge` role), in input order;
    a pair cached for the judge's model makes no call, a new judgement is cached."""
    model = llm.config.role("judge").model
    results: dict[str, RaceResult] = {}
    todo: list[tuple[RaceTask, str]] = []
    for task in tasks:
        key = cache_key(model, task.question, task.target + "\x00" + task.reference, RACE_VERSION)
        hit = cache.get(key)
        if hit is not None:
            results[task.id] = RaceResult(task.id, hit, None, cached=True)
        else:
            todo.append((task, key))
    gate = asyncio.Semaphore(max(1, settings.concurrency))

    async def one(task: RaceTask, key: str) -> None:
        async with gate:
            result = await _race_one(llm, task, settings)
        if result.scores is not None:
            cache.put(key, model, result.scores, rubric=RACE_VERSION)
        results[task.id] = result

    await asyncio.gather(*(one(t, k) for t, k in todo))
    ordered = [results[t.id] for t in tasks]
    for task, result in zip(tasks, ordered, strict=True):
        if result.scores is not None:
            result.score = relative_score(result.scores, task.weights)
            if result.score is None and result.error is None:
                result.error = "both reports scored 0 on every dimension"
    return ordered
