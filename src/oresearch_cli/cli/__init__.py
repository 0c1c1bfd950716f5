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


def command_modules() -> dict[str, str]:
    """Command name -> the `*_cmd` module of this package that registers it (named after it)."""
    import pkgutil

    import oresearch_cli.cli as package

    return {
        m.name.removesuffix("_cmd"): f"oresearch_cli.cli.{m.name}"
        for m in pkgutil.iter_modules(package.__path__)
        if m.name.endswith("_cmd")
    }


def register(argv: list[str]) -> None:
    """Import the command module(s) `argv` needs; importing one registers its command on `app`.

    Only the invoked command's module is imported (the root takes no option with a value, so the
    first bare word is the command): `ores seed` need not load the search backends, and every
    command starts about half a second sooner. Help, `--version` or an unknown word load them all.
    """
    import importlib

    modules = command_modules()
    word = next((a for a in argv if not a.startswith("-")), None)
    for name in [word] if word in modules else sorted(modules):
        importlib.import_module(modules[name])


def main() -> None:
    register(sys.argv[1:])
    try:
        app()
    except OresError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `ores ... -o - | head` closes the pipe early; that is not an error.
        sys.stderr.close()
        sys.exit(0)
