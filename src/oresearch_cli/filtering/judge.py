"""LLM-as-a-judge: a rubric-scored semantic filter run through the `judge` role.

The judge reads the question, a condensed trace (subtasks, tool calls, observations cut to fit)
and the report, and scores six criteria 0-10, each with a short reason, as one JSON object. The
answer is parsed strictly: every criterion present, an integer-like number in 0..10, a string
reason. Malformed output is asked again with a stricter prompt that quotes what was wrong (up to
`max_attempts` in all); if it stays malformed, the failure is recorded and the trace rejected with
`judge-failed` (not cached, so a rerun tries again). A weak model therefore costs retries, never a
crash or a silently made-up score. An endpoint that refuses a call in a way every other trace would
meet too (a rejected key, an unknown model: `llm.discover.is_fatal`) stops the batch with
`JudgeStopped` when the caller asks for that (`ores filter` does).

Results are cached in `cache/judge.sqlite`, keyed by hash(judge model, rubric version, question,
trace text), so a rerun of the filter makes no judge call for a trace it already scored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oresearch_cli.errors import OresError
from oresearch_cli.filtering.config import JudgeSettings
from oresearch_cli.migrations import Migration, migrate_sqlite, run_script
from oresearch_cli.trace import CrawlPage, Observation, WebSearch, has_tags, parse

RUBRIC_VERSION = "rubric-v3"  # part of the cache key: bump when the prompt or the parsing changes
CRITERIA: dict[str, str] = {
    "comprehensiveness": "covers every part of the question and the subtasks with enough breadth",
    "depth": "goes beyond surface facts: mechanisms, comparisons, numbers, implications",
    "faithfulness": "every claim is supported by the observations shown; nothing invented",
    "citation_support": "citations [n] point to references whose pages back the cited claims",
    "instruction_following": "answers the question asked, in its language, in the required report format",
    "readability": "clear structure, coherent prose, no repetition or leftover scaffolding",
}
JUDGE_FAILED = "judge-failed"
CODES = {
    **{f"judge-low-{c}": f"judge score for {c.replace('_', ' ')} below its threshold" for c in CRITERIA},
    "judge-low-overall": "the judge's overall score (mean of the criteria) below --min-overall",
    JUDGE_FAILED: "the judge gave no usable scores (malformed output after retries, or endpoint errors)",
}

# Bounded so an endpoint that enforces it (vLLM, `ores serve`) gets a complete object inside the
# judge's token cap: six short reasons and scores 0..10.
SCHEMA: dict[str, Any] = {
    "title": "judge_scores",
    "type": "object",
    "properties": {
        c: {
            "type": "object",
            "properties": {
                "score": {"type": "integer", "minimum": 0, "maximum": 10},
                "reason": {"type": "string", "minLength": 5, "maxLength": 120},
            },
            "required": ["score", "reason"],
            "additionalProperties": False,
        }
        for c in CRITERIA
    },
    "required": list(CRITERIA),
    "additionalProperties": False,
}

SYSTEM = (
    "You are a strict reviewer of research reports written by an AI agent that searched the web. "
    "Score the report on each criterion from 0 (worst) to 10 (best) and give a one-sentence reason. "
    "Judge faithfulness only against the observations shown."
)
# Placeholders, not values: a small model copies an example's numbers, and a schema-bound one
# cannot write `<...>` at all.
_EXAMPLE = "{" + ", ".join(f'"{c}": {{"score": <0-10>, "reason": "<one sentence>"}}' for c in CRITERIA) + "}"


class JudgeOutputError(ValueError):
    """The judge's object does not fit the rubric."""


class JudgeStopped(OresError):
    """The judge's endpoint refused a call for a reason every other trace would meet too (a
    rejected key, an unknown model): judging stops rather than reject each trace `judge-failed`."""


class _StopOnFatal:
    """An LLM client whose calls raise `JudgeStopped` for a fatal endpoint error (`is_fatal`).
    `JudgeStopped` is no `LLMError`, so `ask_for_scores`, which turns those into a judgement
    without scores, lets it through."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        return await self._stop_on_fatal(self._llm.chat(*args, **kwargs))

    async def chat_json(self, *args: Any, **kwargs: Any) -> Any:
        return await self._stop_on_fatal(self._llm.chat_json(*args, **kwargs))

    @staticmethod
    async def _stop_on_fatal(call: Any) -> Any:
        from oresearch_cli.llm import LLMError
        from oresearch_cli.llm.discover import is_fatal

        try:
            return await call
        except LLMError as exc:
            if is_fatal(exc):
                raise JudgeStopped(str(exc)) from None
            raise


def check_scores(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The scores of a parsed answer, strictly: every criterion, score a number 0..10, reason a string."""
    scores: dict[str, dict[str, Any]] = {}
    for criterion in CRITERIA:
        entry = data.get(criterion)
        if not isinstance(entry, dict):
            raise JudgeOutputError(f"{criterion!r} must be an object with score and reason")
        score = entry.get("score")
        if isinstance(score, str):
            try:
                score = float(score.strip())
            except ValueError:
                raise JudgeOutputError(f"{criterion}.score {score!r} is not a number") from None
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise JudgeOutputError(f"{criterion}.score must be a number from 0 to 10")
        if not 0 <= score <= 10:
            raise JudgeOutputError(f"{criterion}.score {score} is outside 0..10")
        reason = entry.get("reason")
        if not isinstance(reason, str):
            raise JudgeOutputError(f"{criterion}.reason must be a string")
        if not reason.strip(" .…\t\n"):
            # Small models copy the prompt's example ("reason": "...") with its scores: no judgment.
            raise JudgeOutputError(
                f"{criterion}.reason is empty or the example's placeholder; write one sentence"
            )
        scores[criterion] = {"score": float(score), "reason": " ".join(reason.split())[:300]}
    return scores


def overall(scores: dict[str, dict[str, Any]]) -> float:
    return round(sum(s["score"] for s in scores.values()) / len(scores), 2)


def judge_reasons(scores: dict[str, dict[str, Any]] | None, settings: JudgeSettings) -> list[str]:
    """Reason codes for scores under their thresholds (or `judge-failed` when there are none)."""
    if scores is None:
        return [JUDGE_FAILED]
    reasons = [
        f"judge-low-{c}"
        for c, s in scores.items()
        if s["score"] < settings.min_criterion.get(c, settings.min_each)
    ]
    if overall(scores) < settings.min_overall:
        reasons.append("judge-low-overall")
    return reasons


def condensed_trace(text: str, max_chars: int) -> str:
    """What the judge reads of a trace: subtasks, tool calls, observations cut so the whole fits."""
    trace = parse(text)
    if not has_tags(trace):
        return ""
    observations = [s for _, s in trace.steps() if isinstance(s, Observation)]
    budget = max(300, max_chars // max(1, len(observations))) if observations else 0
    lines: list[str] = []
    for number, subtask in enumerate(trace.subtasks, start=1):
        lines.append(f"### Subtask {number}: {subtask.question.strip()}")
        for step in subtask.steps:
            if isinstance(step, WebSearch):
                lines.append(f"- search: {' | '.join(step.queries)}")
            elif isinstance(step, CrawlPage):
                lines.append(f"- crawl: {' | '.join(step.urls)}")
            elif isinstance(step, Observation):
                body = step.text.strip()
                cut = body[:budget] + (" [...]" if len(body) > budget else "")
                lines.append("  observation:\n  " + cut.replace("\n", "\n  "))
        if subtask.answer:
            lines.append(f"- subtask answer: {subtask.answer.strip()}")
    return "\n".join(lines)[: max_chars + 2000]


def build_messages(question: str, text: str, report: str, max_chars: int) -> list[dict[str, str]]:
    rubric = "\n".join(f"- {c}: {d}" for c, d in CRITERIA.items())
    evidence = condensed_trace(text, max_chars)
    parts = [f"## Question\n{question.strip() or '(not given)'}"]
    if evidence:
        parts.append(f"## Research trace (subtasks, tool calls, observations)\n{evidence}")
    parts.append(f"## Report\n{report[:max_chars]}")
    parts.append(
        f"## Rubric (score each 0-10)\n{rubric}\n\n"
        f"Answer with one JSON object and nothing else, exactly these keys:\n{_EXAMPLE}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


# What the strict re-ask after an unusable reply asks for.
SHAPE = f"with all six keys, each score an integer 0-10 and each reason one sentence of your own:\n{_EXAMPLE}"


def cache_key(model: str, question: str, text: str, rubric: str = RUBRIC_VERSION) -> str:
    """The cache key of one judgement; another rubric is another key, so a changed rubric re-judges."""
    payload = "\x00".join((model, rubric, question, text))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# The judge cache's schema, one step per change (`oresearch_cli.migrations`; version in
# PRAGMA user_version). Step 1 is the table as the first filter wrote it: a cache of that ores
# (version 0) is adopted as is.
CACHE_MIGRATIONS = (
    Migration(
        1,
        "scores by key",
        run_script(
            "CREATE TABLE IF NOT EXISTS judge (key TEXT PRIMARY KEY, model TEXT, rubric TEXT, "
            "scores TEXT NOT NULL, created_at REAL NOT NULL)"
        ),
    ),
)


class JudgeCache:
    """Judge results in a SQLite file (WAL): key -> scores JSON. Only successes are stored."""

    FILE = "judge.sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        migrate_sqlite(self._db, CACHE_MIGRATIONS, where=path)

    @classmethod
    def for_workspace(cls, ws: Any) -> JudgeCache:
        return cls(Path(ws.cache_dir) / cls.FILE)

    def get(self, key: str) -> dict[str, dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute("SELECT scores FROM judge WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(
        self, key: str, model: str, scores: dict[str, dict[str, Any]], rubric: str = RUBRIC_VERSION
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judge VALUES (?, ?, ?, ?, ?)",
                (key, model, rubric, json.dumps(scores, ensure_ascii=False), time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class JudgeTask:
    id: str
    question: str
    text: str  # the trace (or bare report)
    report: str


@dataclass
class JudgeResult:
    id: str
    scores: dict[str, dict[str, Any]] | None
    overall: float | None
    cached: bool = False
    attempts: int = 0
    error: str | None = None
    raw: list[str] = field(default_factory=list)  # malformed answers, for the record


async def _judge_one(llm: Any, task: JudgeTask, settings: JudgeSettings) -> JudgeResult:
    """Ask for the scores up to `max_attempts` times, re-asking strictly; an endpoint failure ends
    the asking with `error` set rather than raising, so the batch goes on."""
    from oresearch_cli.llm import ask_for_scores

    judged = await ask_for_scores(
        llm,
        build_messages(task.question, task.text, task.report, settings.max_chars),
        check_scores,
        schema=SCHEMA,
        shape=SHAPE,
        max_attempts=settings.max_attempts,
        trace_id=task.id,
    )
    result = JudgeResult(
        task.id, judged.value, None, attempts=judged.attempts, error=judged.error, raw=judged.raw
    )
    if judged.value is not None:
        result.overall = overall(judged.value)
    return result


async def judge_all(
    tasks: Sequence[JudgeTask],
    llm: Any,
    settings: JudgeSettings,
    cache: JudgeCache,
    progress: Callable[[JudgeResult], None] | None = None,
    *,
    stop_on_fatal: bool = False,
) -> list[JudgeResult]:
    """Judge every task through `llm` (an open `LLMClient`), in input order; a task cached for
    the judge's model makes no call, a new score is cached. With `stop_on_fatal`, an endpoint
    error every task would meet (`is_fatal`) raises `JudgeStopped` and cancels the rest; scores
    given before it stay cached."""
    model = llm.config.role("judge").model
    if stop_on_fatal:
        llm = _StopOnFatal(llm)
    results: dict[str, JudgeResult] = {}
    todo: list[tuple[JudgeTask, str]] = []
    for task in tasks:
        key = cache_key(model, task.question, task.text)
        hit = cache.get(key)
        if hit is not None:
            results[task.id] = JudgeResult(task.id, hit, overall(hit), cached=True)
            if progress:
                progress(results[task.id])
        else:
            todo.append((task, key))
    gate = asyncio.Semaphore(max(1, settings.concurrency))

    async def one(task: JudgeTask, key: str) -> None:
        async with gate:
            result = await _judge_one(llm, task, settings)
        if result.scores is not None:
            cache.put(key, model, result.scores)
        results[task.id] = result
        if progress:
            progress(result)

    running = [asyncio.ensure_future(one(t, k)) for t, k in todo]
    try:
        await asyncio.gather(*running)
    finally:
        for future in running:
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return [results[t.id] for t in tasks]
