"""Shared fixtures: paths to the vendored data, and running the real `ores` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The real-model servers (session fixtures: the trained tiny judge's and model_support's) and
# `served_model`, visible to every test module.
from judge_model_support import judge_server  # noqa: E402, F401
from model_support import embedded_server, served_model, tiny_server  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
DRB = REPO / "data" / "deepresearch_bench"


def ores(
    *args: str,
    cwd: Path,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
):
    """Run `python -m oresearch_cli ARGS` and return the CompletedProcess (text mode unless stdin is bytes)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("ORES_WS", None)
    if env and "ORES_WS" in env:
        full_env["ORES_WS"] = env["ORES_WS"]
    text = not isinstance(stdin, bytes)
    return subprocess.run(
        [sys.executable, "-m", "oresearch_cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=text,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def run_ores(tmp_path: Path):
    """`run_ores(*args, stdin=None)` runs the CLI in a fresh temporary directory."""

    def _run(
        *args: str,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        return ores(*args, cwd=cwd or tmp_path, stdin=stdin, env=env)

    return _run


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# `ores_forked`: several CLI runs whose commands import the training stack (torch, transformers,
# TRL: ~7 s per process here). One process imports it once, then forks a child per run, so each
# run still has a process of its own (its own globals, exit code, stdout and stderr) and the suite
# pays the import once. Only for runs that stop before training (input errors, dry runs).
# What `ores sft`/`ores rl` import before they train (TRL's configs import torch, transformers, peft).
TRAINING_STACK = ("trl.trainer.sft_config", "trl.trainer.grpo_config", "oresearch_cli.train.sft", "peft")
_FORKED = r"""
import importlib, json, os, sys
spec = json.loads(sys.argv[1])
for name in spec["preload"]:
    importlib.import_module(name)
from oresearch_cli.cli import main
results = []
for i, case in enumerate(spec["cases"]):
    out, err = f"{spec['tmp']}/{i}.out", f"{spec['tmp']}/{i}.err"
    pid = os.fork()
    if pid == 0:
        os.chdir(spec["cwd"])
        if case["stdin"] is not None:
            stdin_path = f"{spec['tmp']}/{i}.in"
            with open(stdin_path, "w", encoding="utf-8") as fh:
                fh.write(case["stdin"])
            os.dup2(os.open(stdin_path, os.O_RDONLY), 0)
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        sys.argv = ["ores", *case["args"]]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append(os.waitstatus_to_exitcode(status))
print(json.dumps(results))
"""


def ores_forked(
    *cases: tuple[str, ...] | tuple[tuple[str, ...], str],
    cwd: Path,
    preload: tuple[str, ...] = TRAINING_STACK,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> list[subprocess.CompletedProcess[str]]:
    """Run each case (`args`, or `(args, stdin)`) as `ores ARGS` in a forked child of one process
    that imported `preload` first; CompletedProcess per case, as `ores()` returns."""
    import json
    import tempfile

    specs = []
    for case in cases:
        args, stdin = (case[0], case[1]) if case and isinstance(case[0], tuple) else (case, None)
        specs.append({"args": list(args), "stdin": stdin})
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("ORES_WS", None)
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"cases": specs, "cwd": str(cwd), "tmp": tmp, "preload": list(preload)}
        done = subprocess.run(
            [sys.executable, "-c", _FORKED, json.dumps(spec)],
            cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        codes = json.loads(done.stdout.strip().splitlines()[-1])
        return [
            subprocess.CompletedProcess(
                ["ores", *s["args"]],
                code,
                Path(tmp, f"{i}.out").read_text(encoding="utf-8", errors="replace"),
                Path(tmp, f"{i}.err").read_text(encoding="utf-8", errors="replace"),
            )
            for i, (s, code) in enumerate(zip(specs, codes, strict=True))
        ]
