"""What every command shares: the workspace option, stderr console, JSON output and tables."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

DEFAULT_WS = "ores-ws"

# Data goes to stdout; progress, logs and human summaries of a piping command go to stderr.
# Rich wraps tables to 80 columns when not on a terminal; piped tables read better unwrapped.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

WsOption = Annotated[
    Path,
    typer.Option(
        "--ws",
        envvar="ORES_WS",
        help="Workspace directory (catalog, artifacts, cache, models).",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
OutputOption = Annotated[
    str | None,
    typer.Option(
        "-o",
        "--output",
        help="Also write the output records: '-' for JSONL on stdout, or a .jsonl/.parquet path.",
    ),
]
FieldOption = Annotated[
    str | None, typer.Option("--field", help="Input field (column) that holds the value.")
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format", help="Input format when the name does not tell: jsonl, json, csv, tsv, parquet."
    ),
]


def default_ws() -> Path:
    return Path(os.environ.get("ORES_WS", DEFAULT_WS))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    result = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*["" if v is None else str(v) for v in row])
    return result
