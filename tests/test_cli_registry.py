"""`ores` imports only the invoked command's module: that is correct only while every `*_cmd`
module registers exactly the one top-level command it is named after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from oresearch_cli.cli import app, command_modules, register


def _registered() -> set[str]:
    # A command given no name is named after its function, as typer does.
    commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    return commands | {g.name for g in app.registered_groups}


def test_each_command_module_registers_the_command_it_is_named_after() -> None:
    register([])
    modules = command_modules()
    assert {"seed", "synth", "filter", "spotcheck", "serve", "ws", "trace"} <= set(modules)
    assert _registered() == set(modules)
    # One fresh interpreter: what each import adds is what that module registers on its own.
    code = (
        f"import importlib, json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from test_cli_registry import _registered; from oresearch_cli.cli import command_modules; "
        "added = {}\n"
        "for name, module in command_modules().items():\n"
        "    before = _registered(); importlib.import_module(module); added[name] = sorted(_registered() - before)\n"
        "print(json.dumps(added))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {name: [name] for name in modules}


def test_a_command_loads_only_its_own_module_and_help_lists_them_all() -> None:
    code = (
        "import sys; from oresearch_cli.cli import register; register(sys.argv[1:]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('oresearch_cli.'))))"
    )

    def loaded(*argv: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import json; {code}", *argv], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    seed = loaded("seed", "q.jsonl")
    assert [m for m in seed if m.endswith("_cmd")] == ["oresearch_cli.cli.seed_cmd"]
    assert "oresearch_cli.tools.registry" not in seed  # the search backends stay unloaded
    every = loaded("--help")
    assert len([m for m in every if m.endswith("_cmd")]) == len(command_modules())
    helped = subprocess.run(
        [sys.executable, "-m", "oresearch_cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert helped.returncode == 0
    for name in command_modules():
        assert name in helped.stdout
