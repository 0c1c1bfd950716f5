"""DeepResearch Bench's tasks and RACE criteria, read into typed records.

The benchmark ships two JSONL files (see data/deepresearch_bench/NOTICE.md):

- query.jsonl: `{id, topic, language, prompt}`, the 100 tasks (ids 1-50 zh, 51-100 en);
- criteria.jsonl: `{id, prompt, dimension_weight, criterions}`, per task the weight of each of
  RACE's four dimensions and, under each dimension, weighted criteria `{criterion, explanation,
  weight}` (some rows carry extra notes, `comment`, `aspect`, `rationale_for_weight`: ignored).

DRB joins a task to its criteria by the prompt text, not by id; `load_benchmark` does the same.
A row that cannot be used stops the load with one `InputError` line naming the file and line:
a silently skipped task would shift a benchmark average without anyone noticing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oresearch_cli.errors import InputError

DIMENSIONS = ("comprehensiveness", "insight", "instruction_following", "readability")
LANGUAGES = ("en", "zh")
QUERY_FILE = "query.jsonl"
CRITERIA_FILE = "criteria.jsonl"


def default_data_dir() -> Path:
    """The copy shipped with the repository: <repo>/data/deepresearch_bench."""
    return Path(__file__).resolve().parents[3] / "data" / "deepresearch_bench"


@dataclass(frozen=True)
class DrbTask:
    id: int
    prompt: str
    language: str  # "en" or "zh": picks the judge prompt's language
    topic: str = ""


@dataclass(frozen=True)
class Criterion:
    text: str  # the criterion as the judge sees it and must echo back
    explanation: str
    weight: float


@dataclass(frozen=True)
class TaskCriteria:
    id: int
    prompt: str
    dimension_weights: Mapping[str, float]  # one per DIMENSIONS entry
    criteria: Mapping[str, tuple[Criterion, ...]]  # dimension -> its criteria, in file order


class _RowError(ValueError):
    """What is wrong with one row; the loader adds the file and line."""


def _number(value: Any, what: str) -> float:
    # bool is an int to Python but never a weight
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _RowError(f"{what} must be a non-negative number, got {value!r}")
    return float(value)


def _text(row: Mapping[str, Any], key: str, *, empty_ok: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise _RowError(f"{key!r} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}")
    return value


def _id(row: Mapping[str, Any]) -> int:
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _RowError(f"'id' must be an integer, got {value!r}")
    return value


def _four(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _RowError(f"{key!r} must be an object keyed by dimension")
    missing = [d for d in DIMENSIONS if d not in value]
    unknown = [d for d in value if d not in DIMENSIONS]
    if missing or unknown:
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)}" if unknown else "",
        ]
        raise _RowError(
            f"{key!r} must have exactly the dimensions {', '.join(DIMENSIONS)}: {'; '.join(p for p in parts if p)}"
        )
    return value


def _task(row: Mapping[str, Any]) -> DrbTask:
    language = row.get("language")
    if language not in LANGUAGES:
        raise _RowError(f"'language' must be one of {', '.join(LANGUAGES)}, got {language!r}")
    topic = row.get("topic", "")
    return DrbTask(_id(row), _text(row, "prompt"), str(language), topic if isinstance(topic, str) else "")


def _criteria(row: Mapping[str, Any]) -> TaskCriteria:
    weights = _four(row.get("dimension_weight"), "dimension_weight")
    lists = _four(row.get("criterions"), "criterions")
    criteria: dict[str, tuple[Criterion, ...]] = {}
    for dim in DIMENSIONS:
        items = lists[dim]
        if not isinstance(items, list) or not items:
            raise _RowError(f"criterions.{dim} must be a non-empty list")
        parsed = []
        for n, item in enumerate(items, start=1):
            where = f"criterions.{dim}[{n}]"
            if not isinstance(item, Mapping):
                raise _RowError(f"{where} must be an object")
            try:
                parsed.append(
                    Criterion(
                        _text(item, "criterion"),
                        _text(item, "explanation", empty_ok=True),
                        _number(item.get("weight"), "'weight'"),
                    )
                )
            except _RowError as exc:
                raise _RowError(f"{where}: {exc}") from None
        criteria[dim] = tuple(parsed)
    dimension_weights = {d: _number(weights[d], f"dimension_weight.{d}") for d in DIMENSIONS}
    return TaskCriteria(_id(row), _text(row, "prompt"), dimension_weights, criteria)


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InputError(
            f"{path}: no such file; point at a folder holding DRB's {QUERY_FILE} and {CRITERIA_FILE}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8; re-encode the file as UTF-8") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix that line"
            ) from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: a row must be a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    if not rows:
        raise InputError(f"{path}: empty; expected one JSON object per line")
    return rows


def _load(path: Path, read: Any) -> list[Any]:
    records = []
    seen: dict[int, int] = {}
    for lineno, row in _rows(path):
        try:
            record = read(row)
        except _RowError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        if record.id in seen:
            raise InputError(f"{path}:{lineno}: id {record.id} repeats line {seen[record.id]}")
        seen[record.id] = lineno
        records.append(record)
    return records


def load_tasks(folder: str | Path | None = None) -> list[DrbTask]:
    """The tasks of `folder`/query.jsonl (default: the shipped copy), in file order."""
    return _load(Path(folder or default_data_dir()) / QUERY_FILE, _task)


def load_criteria(folder: str | Path | None = None) -> dict[int, TaskCriteria]:
    """The criteria of `folder`/criteria.jsonl (default: the shipped copy), by task id."""
    return {c.id: c for c in _load(Path(folder or default_data_dir()) / CRITERIA_FILE, _criteria)}


def load_benchmark(folder: str | Path | None = None) -> list[tuple[DrbTask, TaskCriteria]]:
    """Every task with its criteria, joined by prompt text as DRB joins them; a task without
    criteria is an error here (DRB logs it and leaves the task out of its average)."""
    folder = Path(folder or default_data_dir())
    by_prompt = {c.prompt: c for c in load_criteria(folder).values()}
    pairs = []
    for task in load_tasks(folder):
        found = by_prompt.get(task.prompt)
        if found is None:
            raise InputError(
                f"{folder / QUERY_FILE}: task {task.id} has no row with the same prompt in {CRITERIA_FILE}"
            )
        pairs.append((task, found))
    return pairs
