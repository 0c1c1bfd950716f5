"""The interactive review in a terminal (rich): one sampled trace at a time.

Shows the question, the subtasks, the tool calls folded to one line each, the report rendered as
Markdown and the judge's scores, then asks accept / reject / skip / quit and an optional note.
Each verdict is handed to `record` at once (the stage appends it to a flushed JSONL), so quitting,
Ctrl-C or a closed terminal loses nothing already given; the next session resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.prompt import Prompt
from rich.table import Table

from oresearch_cli.trace import has_tags, parse, tool_calls

KEYS = {"a": "accept", "r": "reject", "s": "skip", "q": "quit"}


def render_item(console: Console, item: dict[str, Any], position: str, max_report_lines: int) -> None:
    console.rule(
        f"[bold]{position}[/]  {item['id']}  ·  {item.get('language')}  ·  judge {item.get('judge_overall')}"
    )
    console.print(Panel(item.get("question") or "(no question)", title="question", title_align="left"))
    trace = parse(item.get("trace") or "")
    if has_tags(trace):
        lines = [
            f"{n}. {s.question.strip()}  [dim]({len(s.tool_calls)} tool calls)[/]"
            for n, s in enumerate(trace.subtasks, 1)
        ]
        console.print(Panel("\n".join(lines) or "(none)", title="subtasks", title_align="left"))
        calls = tool_calls(trace)
        folded = [
            f"[{c.subtask or '-'}] {c.kind}: " + (" | ".join(c.queries) if c.queries else " | ".join(c.urls))
            for c in calls
        ]
        shown = folded[:12] + ([f"... {len(folded) - 12} more"] if len(folded) > 12 else [])
        console.print(
            Panel(
                "\n".join(shown) or "(none)",
                title=f"tool calls ({len(calls)}, observations folded)",
                title_align="left",
            )
        )
    report = item.get("report") or ""
    lines = report.splitlines()
    cut = "\n".join(lines[:max_report_lines]) + (
        f"\n\n*... {len(lines) - max_report_lines} more lines*" if len(lines) > max_report_lines else ""
    )
    console.print(Panel(Markdown(cut), title="report", title_align="left"))
    scores = item.get("judge_scores")
    if scores:
        scores = json.loads(scores) if isinstance(scores, str) else scores
        table = Table(title=f"judge scores (overall {item.get('judge_overall')})", title_justify="left")
        for column in ("criterion", "score", "reason"):
            table.add_column(column)
        for criterion, s in scores.items():
            table.add_row(criterion, str(s.get("score")), str(s.get("reason", "")))
        console.print(table)


def review(
    items: Sequence[dict[str, Any]],
    done: set[str],
    record: Callable[[str, str, str], None],
    console: Console | None = None,
    max_report_lines: int = 60,
) -> tuple[int, bool]:
    """Review `items` not in `done`. Returns (verdicts given, finished: False when the reviewer quit)."""
    console = console or Console()
    todo = [i for i in items if i["id"] not in done]
    # `record` adds to `done` as verdicts come in, so the position counts from what was done before.
    before = len(items) - len(todo)
    given = 0
    for index, item in enumerate(todo, start=1):
        render_item(console, item, f"{before + index}/{len(items)}", max_report_lines)
        try:
            key = Prompt.ask(
                "[bold]verdict[/] (a)ccept (r)eject (s)kip (q)uit", choices=list(KEYS), console=console
            )
        except EOFError:
            return given, False
        if KEYS[key] == "quit":
            return given, False
        try:
            note = Prompt.ask("note (enter for none)", default="", show_default=False, console=console)
        except EOFError:
            note = ""
        record(item["id"], KEYS[key], note)
        given += 1
    return given, True
