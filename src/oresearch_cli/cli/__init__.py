"""The `ores` command line. It parses options, calls library code and prints; no logic lives here."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from oresearch_cli import __version__
from oresearch_cli.cli.common import err
from oresearch_cli.errors import OresError

app = typer.Typer(
    name="ores",
    help="Turn open LLMs into deep-research agents: seed -> synth -> filter -> spotcheck -> sft -> rl -> eval.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"ores {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """ores: every stage reads and writes a DuckDB-indexed workspace, and pipes JSONL with `-o -`."""


def _register() -> None:
    # Each command (group) lives in a `*_cmd` module of this package; importing it registers it on `app`.
    import importlib
    import pkgutil

    import oresearch_cli.cli as package

    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.endswith("_cmd")):
        importlib.import_module(f"oresearch_cli.cli.{module}")


def main() -> None:
    _register()
    try:
        app()
    except OresError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `ores ... -o - | head` closes the pipe early; that is not an error.
        sys.stderr.close()
        sys.exit(0)
