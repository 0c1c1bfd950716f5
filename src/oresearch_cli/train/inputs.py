"""Which traces `ores sft` trains on: the workspace's accepted set, a file of traces, or an
`ores export` directory; `-` reads JSONL on stdin.

Every source gives `TraceItem`s (seed id, question, language, trace text) plus a name for the
run's `inputs` in the catalog. A source with nothing to train on is an error, not an empty run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oresearch_cli.errors import InputError
from oresearch_cli.records import (
    ID_FIELDS,
    LANGUAGE_FIELDS,
    QUESTION_FIELDS,
    STDIN,
    TRACE_FIELDS,
    Record,
    find_field,
    pick_field,
    read_records,
    source_name,
)
from oresearch_cli.train.examples import TraceItem
from oresearch_cli.workspace import Workspace

EXPORT_DATA = "data"  # `ores export DIR` writes DIR/data/*.parquet


@dataclass(frozen=True)
class TraceSource:
    items: list[TraceItem]
    name: str  # what the catalog records as the run's input: a filter run id or a file
    n_rows: int  # rows read, before rows without a trace were left out
    n_without_trace: int


def load_traces(
    ws: Workspace,
    source: str | None = None,
    *,
    field: str | None = None,
    filtered_run: str | None = None,
    ignore_gate: bool = False,
) -> TraceSource:
    """The traces of `source` (None: the workspace's accepted set)."""
    if source is None:
        return _accepted(ws, filtered_run, ignore_gate)
    if source != STDIN and Path(source).is_dir():
        return _export_dir(Path(source), field)
    if source != STDIN and not Path(source).exists():
        raise InputError(
            f"{source}: no such file; pass a JSONL/Parquet of traces, an `ores export` dir, or '-'"
        )
    return _from_records(read_records(source), source_name(source), field)


def _accepted(ws: Workspace, filtered_run: str | None, ignore_gate: bool) -> TraceSource:
    from oresearch_cli.export.hf import accepted_set

    found = accepted_set(ws, filtered_run, ignore_gate)
    items = [_item(row, "trace", f"filter run {found.filtered_run}") for row in found.accepted]
    kept = [item for item in items if item is not None]
    if not kept:
        raise InputError(
            f"filter run {found.filtered_run}: no accepted traces ({len(found.rows)} judged); "
            "synthesize more, loosen the filter (`ores filter --disable ...`), or pass a traces file"
        )
    return TraceSource(kept, found.filtered_run, len(items), len(items) - len(kept))


def _export_dir(root: Path, field: str | None) -> TraceSource:
    files = sorted((root / EXPORT_DATA).glob("*.parquet"))
    if not files:
        raise InputError(
            f"{root}: not an `ores export` directory (no {EXPORT_DATA}/*.parquet); pass its path"
        )
    records = [r for path in files for r in read_records(path)]
    return _from_records(records, str(root), field)


def _from_records(records: list[Record], name: str, field: str | None) -> TraceSource:
    if not records:
        raise InputError(f"{name}: no rows; pass a file with one trace per row")
    trace_field = pick_field(records, field, TRACE_FIELDS, name)
    question_field = pick_field(records, None, QUESTION_FIELDS, name, exclude=(trace_field,))
    items = [_item(r.data, trace_field, r.origin, question_field) for r in records]
    kept = [item for item in items if item is not None]
    if not kept:
        raise InputError(
            f"{name}: every {trace_field!r} is empty; pass --field with the column holding the traces"
        )
    return TraceSource(kept, name, len(items), len(items) - len(kept))


def _item(data: dict, trace_field: str, origin: str, question_field: str = "question") -> TraceItem | None:
    trace = data.get(trace_field)
    if not isinstance(trace, str) or not trace.strip():
        return None
    question = data.get(question_field)
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"{origin}: no question beside the trace; add a `question` field")
    id_field = find_field(data, ID_FIELDS)
    language_field = find_field(data, LANGUAGE_FIELDS)
    from oresearch_cli.stages.seed import content_id

    item_id = str(data[id_field]) if id_field and data[id_field] not in (None, "") else content_id(question)
    language = str(data[language_field]) if language_field and data[language_field] else None
    return TraceItem(item_id, question.strip(), language, trace)


# -- questions (`ores rl`) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    language: str | None
    reference: str | None = None  # a reference report: R_base then scores RACE-style against it


@dataclass(frozen=True)
class QuestionSource:
    questions: list[Question]
    name: str  # for the run's `inputs`: a seed run id or a file


# A question's reference report (DeepResearch Bench's reference.jsonl calls it `article`).
REFERENCE_FIELDS = ("reference", "reference_report", "reference_article")


def load_questions(ws: Workspace, source: str | None = None, *, field: str | None = None) -> QuestionSource:
    """The questions `ores rl` researches: a JSONL/Parquet with a question column (`field`), '-'
    for stdin, or (None) the workspace's latest `seeds`."""
    if source is None:
        artifacts = ws.artifacts(kind="seeds")
        if not artifacts:
            raise InputError(
                f"{ws.root}: no seeds in this workspace; run `ores seed` first or pass a questions file"
            )
        latest = artifacts[0]  # newest first
        records = [Record(row, f"seed run {latest.run_id}") for row in ws.read_artifact(latest)]
        name = latest.run_id
    else:
        if source != STDIN and not Path(source).is_file():
            raise InputError(f"{source}: no such file; pass a JSONL/Parquet with a question per row, or '-'")
        records = read_records(source)
        name = source_name(source)
    if not records:
        raise InputError(f"{name}: no rows; pass a file with one question per row")
    question_field = pick_field(records, field, QUESTION_FIELDS, name)
    from oresearch_cli.stages.seed import content_id

    questions: list[Question] = []
    for record in records:
        text = record.data.get(question_field)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{record.origin}: an empty {question_field!r}; fill it or drop the row")
        id_field = find_field(record.data, ID_FIELDS, exclude=(question_field,))
        language_field = find_field(record.data, LANGUAGE_FIELDS)
        raw_id = record.data.get(id_field) if id_field else None
        language = record.data.get(language_field) if language_field else None
        reference_field = find_field(record.data, REFERENCE_FIELDS)
        reference = record.data.get(reference_field) if reference_field else None
        if reference is not None and not isinstance(reference, str):
            raise InputError(
                f"{record.origin}: {reference_field!r} is not text; give the reference report as a string"
            )
        questions.append(
            Question(
                str(raw_id) if raw_id not in (None, "") else content_id(text.strip()),
                text.strip(),
                str(language) if language else None,
                reference.strip() or None if reference else None,
            )
        )
    return QuestionSource(questions, name)
