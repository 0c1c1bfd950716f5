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

from oresearch_cli.errors import InputError
from oresearch_cli.records import OUTPUT_SUFFIXES, cannot_create

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


def check_output(
    output: str | Path | None,
    option: str = "-o",
    suffixes: tuple[str, ...] = tuple(OUTPUT_SUFFIXES),
    stdout: bool = True,
) -> None:
    """Refuse an `-o`/`--output` that cannot be written, before the command starts its run: every
    command calls this first, so a bad path leaves the workspace unchanged.

    Accepted: None (no output), '-' (when `stdout`), or a file named with one of `suffixes` whose
    directory exists and is writable, or can be created (write_records makes missing parents).
    """
    if output is None:
        return
    text = str(output)
    kinds = ".jsonl or .parquet" if set(suffixes) == set(OUTPUT_SUFFIXES) else "/".join(suffixes)
    dash = ", or '-' for JSONL on stdout" if stdout else ""
    if text == "-":
        if stdout:
            return
        raise InputError(f"{option} -: this option cannot write to stdout; name a {kinds} file")
    if not text.strip():
        raise InputError(f"{option}: the path is empty; name a {kinds} file{dash}")
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        what = f"a {suffix} file" if suffix else "a file without an extension"
        raise InputError(f"{option} {text}: cannot write {what}; name a {kinds} file{dash}")
    if path.is_dir():
        raise InputError(
            f"{option} {text}: is a directory; name a file in it, e.g. {path / ('out' + suffix)}"
        )
    if path.exists():
        if not os.access(path, os.W_OK):
            raise InputError(
                f"{option} {text}: the file is not writable; fix its permissions or choose another path"
            )
        return
    reason = cannot_create(path)
    if reason:
        raise InputError(f"{option} {text}: {reason}; choose a path in a writable directory")


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
