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
