"""`ores trace`: validate, show and count traces (or bare reports) from files or stdin."""

from __future__ import annotations

import io
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markdown import Markdown
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text as RichText

from oresearch_cli.cli import app
from oresearch_cli.cli.common import FieldOption, FormatOption, JsonOption, out, print_json, table
from oresearch_cli.errors import InputError
from oresearch_cli.records import (
    ID_FIELDS,
    QUESTION_FIELDS,
    STDIN,
    TRACE_FIELDS,
    find_field,
    first_value,
    pick_field,
    read_records,
    source_name,
)
from oresearch_cli.trace import (
    CODES,
    Bounds,
    CrawlPage,
    Observation,
    Plan,
    Problem,
    Step,
    SubtaskAnswer,
    SubtaskList,
    Text,
    Think,
    Trace,
    WebSearch,
    has_tags,
    is_valid,
    parse,
    report_text,
    total_stats,
    trace_stats,
    validate,
)
from oresearch_cli.trace.stats import NUMERIC_FIELDS

if TYPE_CHECKING:
    from oresearch_cli.agent.authorship import Authorship

trace_app = typer.Typer(
    help="Check, show and count traces: raw trace text, or records (JSONL, JSON, CSV, Parquet) with a trace field.",
    no_args_is_help=True,
)
app.add_typer(trace_app, name="trace")

RAW_SUFFIXES = (".txt", ".md", ".markdown", ".text", ".log")
RAW_FORMATS = ("text", "txt", "raw")

SourceArg = Annotated[
    str, typer.Argument(help="A trace .txt file, a record file (JSONL/JSON/CSV/Parquet), or '-' for stdin.")
]
ReportOnlyOption = Annotated[
    bool,
    typer.Option(
        "--report-only", help="Treat each text as a report body (e.g. a DRB article): skip the trace rules."
    ),
]


@dataclass
class Item:
    """One trace to look at: its id, text, question (if the record has one) and origin (file:line);
    `steps`, synth's structured steps log, when the record has one."""

    id: str
    text: str
    question: str | None
    origin: str
    steps: Any = None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{name}:{line}: not UTF-8; re-encode the file as UTF-8") from None


def _read_stdin_records(data: bytes, fmt: str | None):
    # read_records reads stdin itself; hand it the bytes already taken so that its messages still say <stdin>.
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    try:
        return read_records(STDIN, fmt)
    finally:
        sys.stdin = saved


def _looks_like_records(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


def _raw_item(text: str, name: str) -> list[Item]:
    if not text.strip():
        raise InputError(f"{name}: the input is empty; give a trace text or a record file")
    label = "stdin" if name == "<stdin>" else name
    return [Item(label, text, None, name)]


def load_items(source: str, field: str | None = None, fmt: str | None = None) -> list[Item]:
    """Traces from `source`: a whole raw text is one trace; records give one per row."""
    name = source_name(source)
    if fmt and fmt.lower() in RAW_FORMATS:
        return _raw_item(_decode(_read_bytes(source), name), name)
    if source == STDIN:
        data = sys.stdin.buffer.read()
        if fmt is None and not _looks_like_records(data):
            return _raw_item(_decode(data, name), name)
        records = _read_stdin_records(data, fmt)
    else:
        path = Path(source)
        if fmt is None and path.suffix.lower() in RAW_SUFFIXES:
            return _raw_item(_decode(_read_bytes(source), name), name)
        known = fmt is not None or any(
            s.lower().lstrip(".") in ("jsonl", "ndjson", "json", "csv", "tsv", "parquet", "pq")
            for s in path.suffixes
        )
        if not known:
            data = _read_bytes(source)
            if not _looks_like_records(data):
                return _raw_item(_decode(data, name), name)
            fmt = "jsonl"
        records = read_records(source, fmt)
    column = pick_field(records, field, TRACE_FIELDS, name)
    items = []
    for index, record in enumerate(records, start=1):
        value = record.data.get(column)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise InputError(
                f"{record.origin}: field {column!r} holds {type(value).__name__}, not text; pass --field with the trace text"
            )
        rid = first_value(record.data, ID_FIELDS)
        question_field = find_field(record.data, QUESTION_FIELDS, exclude=(column,))
        question = record.data.get(question_field) if question_field else None
        question = question if isinstance(question, str) else None
        steps = record.data.get("steps") if column != "steps" else None
        items.append(Item(str(rid) if rid is not None else str(index), value, question, record.origin, steps))
    return items


def _read_bytes(source: str) -> bytes:
    if source == STDIN:
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file; name a trace .txt or a record file")
    return path.read_bytes()


def _problem_line(item: Item, problem: Problem) -> str:
    where = f"{item.id}:{problem.line}:" if problem.line is not None else f"{item.id}:"
    subtask = f" (subtask {problem.subtask})" if problem.subtask is not None else ""
    return f"{where} {problem.severity} [{problem.code}]{subtask} {problem.message}"


@trace_app.command("validate")
def validate_cmd(
    source: SourceArg,
    field: FieldOption = None,
    fmt: FormatOption = None,
    report_only: ReportOnlyOption = False,
    min_tool_calls: Annotated[
        int, typer.Option("--min-tool-calls", min=0, help="Fewest tool calls per subtask.")
    ] = 2,
    max_tool_calls: Annotated[
        int, typer.Option("--max-tool-calls", min=0, help="Most tool calls per subtask.")
    ] = 8,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with 1 when any problem (error or warning) is found.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List every problem of each trace, one line each (id:line, severity, code, message), then a summary.

    Exits 0 even when problems are found, unless --strict. Line numbers count within each trace.
    """
    items = load_items(source, field, fmt)
    bounds = Bounds(min_tool_calls=min_tool_calls, max_tool_calls=max_tool_calls)
    results = [(item, validate(item.text, bounds, report_only=report_only)) for item in items]
    by_code: Counter[str] = Counter()
    traces_by_code: Counter[str] = Counter()
    for _, problems in results:
        by_code.update(p.code for p in problems)
        traces_by_code.update({p.code for p in problems})
    n_valid = sum(is_valid(problems) for _, problems in results)
    n_clean = sum(not problems for _, problems in results)
    if as_json:
        print_json(
            {
                "traces": [
                    {
                        "id": item.id,
                        "origin": item.origin,
                        "valid": is_valid(problems),
                        "problems": [p.to_dict() for p in problems],
                    }
                    for item, problems in results
                ],
                "summary": {
                    "traces": len(results),
                    "valid": n_valid,
                    "without_problems": n_clean,
                    "problems_by_code": dict(by_code.most_common()),
                },
            }
        )
    else:
        for item, problems in results:
            for problem in problems:
                sys.stdout.write(_problem_line(item, problem) + "\n")
        sys.stdout.flush()
        out.print(
            table(
                "summary",
                ["traces", "valid (no errors)", "without problems", "errors", "warnings"],
                [
                    [
                        len(results),
                        n_valid,
                        n_clean,
                        sum(n for code, n in by_code.items() if CODES[code][0] == "error"),
                        sum(n for code, n in by_code.items() if CODES[code][0] == "warning"),
                    ]
                ],
            )
        )
        if by_code:
            rows = [[code, CODES[code][0], n, traces_by_code[code]] for code, n in by_code.most_common()]
            out.print(table("problems by code", ["code", "severity", "problems", "traces"], rows))
    if strict and any(problems for _, problems in results):
        raise typer.Exit(1)


def _select(items: list[Item], trace_id: str | None, index: int | None) -> Item:
    if trace_id is not None:
        for item in items:
            if item.id == trace_id:
                return item
        known = ", ".join(item.id for item in items[:10]) + (" ..." if len(items) > 10 else "")
        raise InputError(f"no trace with id {trace_id!r} (ids: {known}); pass an existing --id")
    position = index if index is not None else 1
    if not 1 <= position <= len(items):
        raise InputError(
            f"--index {position} is out of range; the input has {len(items)} traces (1..{len(items)})"
        )
    return items[position - 1]


def _print(renderable: object) -> None:
    # The shared console does not wrap (for piping); panels and Markdown must, or they are cut off.
    out.print(renderable, soft_wrap=False)


def _fold(text: str, full: bool, keep: int = 4) -> RichText:
    lines = text.splitlines()
    if full or len(lines) <= keep + 1:
        return RichText(text)
    shown = RichText("\n".join(lines[:keep]))
    shown.append(f"\n… {len(lines) - keep} more lines", style="dim italic")
    return shown


def _show_step(step: Step, full: bool) -> None:
    if isinstance(step, Think):
        _print(RichText.assemble(("think  ", "bold magenta"), (step.text, "italic")))
    elif isinstance(step, Plan):
        _print(RichText.assemble(("plan   ", "bold blue"), step.text))
    elif isinstance(step, WebSearch):
        queries = " | ".join(step.queries) or "(no query)"
        _print(RichText.assemble(("search ", "bold cyan"), (queries, "cyan"), (f"  (n={step.count})", "dim")))
    elif isinstance(step, CrawlPage):
        _print(RichText.assemble(("crawl  ", "bold cyan"), (" | ".join(step.urls) or "(no URL)", "cyan")))
    elif isinstance(step, Observation):
        _print(Panel(_fold(step.text, full), title="observation", title_align="left", border_style="dim"))
    elif isinstance(step, SubtaskAnswer):
        _print(Panel(RichText(step.text), title="subtask answer", title_align="left", border_style="green"))
    elif isinstance(step, SubtaskList):
        _print(Panel(RichText(step.text), title="subtask list", title_align="left", border_style="blue"))
    elif isinstance(step, Text):
        _print(RichText.assemble(("text   ", "bold yellow"), (step.text, "yellow")))


def _show_trace(trace: Trace, full: bool) -> None:
    for step in trace.preamble:
        _show_step(step, full)
    for number, subtask in enumerate(trace.subtasks, start=1):
        _print(Rule(RichText(f"subtask {number}: {' '.join(subtask.question.split())}"), align="left"))
        for step in subtask.steps:
            _show_step(step, full)
    if trace.report is not None:
        _print(Rule("report", align="left"))
        _print(Markdown(trace.report.text))
    for step in trace.trailer:
        _show_step(step, full)


@trace_app.command("show")
def show_cmd(
    source: SourceArg,
    trace_id: Annotated[str | None, typer.Option("--id", help="Show the trace with this id.")] = None,
    index: Annotated[
        int | None, typer.Option("--index", min=1, help="Show the N-th trace (1-based; default 1).")
    ] = None,
    field: FieldOption = None,
    fmt: FormatOption = None,
    full: Annotated[bool, typer.Option("--full", help="Unfold observations.")] = False,
) -> None:
    """Render one trace readably: question, subtasks, steps, folded observations, the report as Markdown."""
    item = _select(load_items(source, field, fmt), trace_id, index)
    trace = parse(item.text)
    problems = validate(trace)
    header = RichText.assemble(("trace ", "bold"), (item.id, "bold"), (f"  ({item.origin})", "dim"))
    _print(header)
    if item.question:
        _print(Panel(RichText(item.question), title="question", title_align="left", border_style="bold"))
    if not has_tags(trace):
        _print(RichText("no trace tags: showing the text as a report", style="dim"))
        _print(Markdown(report_text(trace, bare_text_is_report=True) or ""))
        return
    _show_trace(trace, full)
    errors = sum(p.severity == "error" for p in problems)
    summary = f"{errors} errors, {len(problems) - errors} warnings"
    _print(
        RichText(f"{summary}; see `ores trace validate` for each", style="dim" if not problems else "yellow")
    )


@trace_app.command("stats")
def stats_cmd(
    source: SourceArg,
    field: FieldOption = None,
    fmt: FormatOption = None,
    report_only: Annotated[
        bool,
        typer.Option(
            "--report-only",
            help="Count each text as a report body. Default: texts without any trace tag are reports.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """One row of counts per trace (subtasks, tool calls, citations, references, ...) and the totals.

    Records from `ores synth` (with its `steps` column) also get the share of their pieces the
    model wrote, rather than the orchestrator's fallbacks (`model share`)."""
    items = load_items(source, field, fmt)
    all_stats = [trace_stats(item.text, report_only=True if report_only else None) for item in items]
    total = total_stats(all_stats)
    written, written_total = _authorship(items)
    if as_json:
        print_json(
            {
                "traces": [
                    {
                        "id": item.id,
                        "origin": item.origin,
                        **s.to_dict(),
                        "authorship": a.to_dict() if a is not None else None,
                    }
                    for item, s, a in zip(items, all_stats, written, strict=True)
                ],
                "total": {
                    "traces": len(items),
                    **total.to_dict(),
                    "authorship": written_total.to_dict() if written_total is not None else None,
                },
            }
        )
        return
    columns = ["id", "mode", *NUMERIC_FIELDS]
    rows = [
        [item.id, s.mode, *(getattr(s, f) for f in NUMERIC_FIELDS)]
        for item, s in zip(items, all_stats, strict=True)
    ]
    rows.append([f"total ({len(items)})", "", *(getattr(total, f) for f in NUMERIC_FIELDS)])
    if written_total is not None:
        columns.append("model_share")
        for row, a in zip(rows, [*written, written_total], strict=True):
            row.append(_share(a))
    out.print(table(None, [c.replace("_", " ") for c in columns], rows))


def _authorship(items: list[Item]) -> tuple[list[Authorship | None], Authorship | None]:
    """Who wrote each item's pieces (`Authorship` or None) and the sum, None when no item has a
    steps log (the agent is imported only when one does)."""
    if not any(item.steps for item in items):
        return [None] * len(items), None
    from oresearch_cli.agent.authorship import authorship_of, total_authorship

    written = [authorship_of(item.steps) for item in items]
    if all(a is None for a in written):
        return written, None
    return written, total_authorship(written)


def _share(authorship: Authorship | None) -> str:
    """'85%' of the pieces the model wrote (`--json` has the counts); '' without a steps log."""
    if authorship is None or authorship.model_share is None:
        return ""
    return f"{authorship.model_share:.0%}"
