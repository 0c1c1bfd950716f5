"""Traces for the filter and spotcheck tests: the fixture trace and variations that break one rule each."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "trace_example.txt"
QUESTION = "What do the light-dependent reactions and the Calvin cycle of photosynthesis produce and do?"


def good_trace() -> str:
    return FIXTURE.read_text(encoding="utf-8")


def variant(topic: int) -> tuple[str, str]:
    """A distinct valid (question, trace): the fixture with its wording shifted, so dedup keeps both."""
    words = ["energy", "sugar", "light", "carbon", "stroma", "membranes", "oxygen", "water"]
    extra = " ".join(f"{words[(topic + k) % len(words)]}{topic}x{k}" for k in range(40))
    trace = good_trace().replace(
        "## Body\n", f"## Body\nNotes {topic}: {extra}. Further detail {topic * 7} follows [2].\n\n"
    )
    question = f"Topic {topic}: {' '.join(words[(topic + k) % 8] + str(topic * k) for k in range(6))}?"
    return question, trace


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def traces_file(path: Path, n_good: int = 6, broken: bool = True, models: dict | None = None) -> Path:
    """`n_good` valid traces g0.., then (with `broken`) one cut off, one failed and a duplicate of g0.
    `models` (role -> model) is written as synth writes it, a JSON string per trace."""
    rows = []
    for i in range(n_good):
        question, trace = variant(i)
        rows.append({"id": f"g{i}", "question": question, "language": "en", "trace": trace, "status": "done"})
        if models:
            rows[-1]["models"] = json.dumps(models, sort_keys=True)
    if broken:
        t = good_trace()
        rows.append(
            {"id": "cut", "question": QUESTION, "trace": t[: t.index("## Conclusion")], "status": "done"}
        )
        rows.append(
            {"id": "failed", "question": QUESTION, "trace": "", "status": "failed", "error": "timeout"}
        )
        rows.append(
            {"id": "dup", "question": rows[0]["question"], "language": "en", "trace": rows[0]["trace"]}
        )
    return write_jsonl(path, rows)


def steps_log(subtasks: int = 2, fallback: Collection[str] = ()) -> str:
    """A synth `steps` log (JSON, as the `steps` column holds it) of `subtasks` subtasks of two
    tool calls each: a subtask list, per subtask three steps, a plan and an answer, then a report
    (2 + 5 * subtasks pieces). The kinds of piece named in `fallback` (subtask_list, step, plan,
    answer, report) are written by orchestrator fallbacks, the rest by the model."""
    from oresearch_cli.agent.context import Failure
    from oresearch_cli.agent.steps import StepRecord

    def failures(piece: str) -> list[Failure]:
        if piece not in fallback:
            return []
        return [Failure(piece, "unusable twice", 2), Failure(piece, "unusable twice", fallback="a fallback")]

    log = []
    for index in range(1, subtasks + 1):
        records = [
            StepRecord("think", "I search first.", failures("step")),
            StepRecord("plan", "1. Search. 2. Read.", failures("plan")),
            StepRecord("web_search", ["query"], count=10),
            StepRecord("observation", "results"),
            StepRecord("think", "I read the best result.", failures("step")),
            StepRecord("crawl_page", ["https://example.org/a"]),
            StepRecord("observation", "page"),
            StepRecord("think", "I can answer.", failures("step")),
            StepRecord("subtask_answer", "The answer [1].", failures("answer")),
        ]
        log.append({"index": index, "question": f"subtask {index}", "steps": [r.to_log() for r in records]})
    return json.dumps(
        {
            "subtask_list": StepRecord("subtask_list", ["a", "b"], failures("subtask_list")).to_log(),
            "subtasks": log,
            "report": StepRecord("report", None, failures("report")).to_log(),
            "sources": [],
        }
    )
