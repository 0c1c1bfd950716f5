"""`ores serve --model`: an OpenAI-compatible server for a local checkpoint, run as a child process.

This module picks a server, builds its command line, starts it, waits until it answers and stops
it (with its whole process group):

- vLLM (`vllm serve`) when the `vllm` package is importable and a CUDA GPU is present;
- otherwise our own server over transformers (server/cpu_server.py: continuous batching with a
  grammar per request, server/engine.py), which honours `response_format` (JSON schema and JSON
  object) and `stop` as vLLM does. `transformers serve` could not: its batching takes one
  generation config for all requests and no logits processor, and it ignores `stop`.

Both expose `/v1/chat/completions` and `/v1/completions` (streaming too), `/v1/models` and
`/health`, under a stable model name (the checkpoint directory's name unless `served_model_name`
says otherwise).

Nothing here imports torch or vllm at module import; the probes import lazily (torch only when it is
a GPU build).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from oresearch_cli.errors import OresError
from oresearch_cli.server.embedded import (
    INSTALL_LOCAL_HINT,
    convert_gguf,
    ensure_embedded_model,
    gguf_file_source,
)

Backend = Literal["auto", "vllm", "transformers"]
BACKENDS: tuple[str, ...] = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class ServeOptions:
    """How to serve: address, the served model name and backend-specific knobs (None: default)."""

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    # vLLM: the context length; transformers on a CPU: the KV cache's capacity in tokens, all
    # requests together (default CPU_CACHE_TOKENS)
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    # both: a torch dtype name ("float32", "bfloat16") or None for the checkpoint's own
    dtype: str | None = None
    # CPU server only: decode concurrent requests together (server/engine.py); off means one at a
    # time. Parallel subtasks send several calls at once: SmolLM2 on 2 CPU cores, 4 at once ran
    # 1.69x the tokens/s of one at a time (benchmarks/bench_constrained.py).
    continuous_batching: bool = True
    # passed through verbatim after the built arguments
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one server: the argv, where to run it and what clients should use."""

    backend: str
    argv: list[str]
    checkpoint: Path
    model_name: str
    host: str
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def shell_command(self) -> str:
        """The command as one shell line (what `--dry-run` prints)."""
        parts = []
        parts += [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        parts.append(shlex.join(self.argv))
        return " ".join(parts)


# -- probes --------------------------------------------------------------------------------------


def vllm_available() -> bool:
    """True when the `vllm` package can be imported (not imported here)."""
    return importlib.util.find_spec("vllm") is not None


def _torch_is_cpu_only_build() -> bool:
    """True when the installed torch is a CPU-only build (cuda and hip None in torch/version.py).

    Read from the file, not imported: `ores serve` would otherwise carry torch (~1500 modules) only to
    learn that there is no GPU, and tearing it down made every Ctrl-C seconds slower on a busy machine.
    """
    spec = importlib.util.find_spec("torch")
    for location in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = (Path(location) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        values = dict(re.findall(r"^(cuda|hip)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", text, re.MULTILINE))
        return set(values) == {"cuda", "hip"} and set(values.values()) == {"None"}
    return False


def gpu_available() -> bool:
    """True when torch is installed and sees a CUDA GPU (torch is imported only for a GPU build)."""
    if importlib.util.find_spec("torch") is None or _torch_is_cpu_only_build():
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def cpu_server_available() -> bool:
    """True when the CPU server's stack is installed (not imported here)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("torch", "transformers", "xgrammar", "uvicorn")
    )


def choose_backend(
    requested: str = "auto",
    *,
    has_vllm: Callable[[], bool] = vllm_available,
    has_gpu: Callable[[], bool] = gpu_available,
) -> str:
    """`vllm` or `transformers`: `auto` takes vLLM only with both the package and a GPU."""
    if requested not in BACKENDS:
        raise OresError(f"unknown backend {requested!r}; use one of {', '.join(BACKENDS)}")
    if requested == "vllm":
        if not has_vllm():
            raise OresError(
                "--backend vllm: vllm is not installed; `pip install 'ores[gpu]'` on a CUDA machine"
            )
        return "vllm"
    if requested == "transformers":
        return "transformers"
    return "vllm" if has_vllm() and has_gpu() else "transformers"


# -- the model -----------------------------------------------------------------------------------


def is_checkpoint(path: Path) -> bool:
    """A transformers/vLLM checkpoint directory: it has a config.json."""
    return (Path(path) / "config.json").is_file()


def resolve_model(model: str | Path | None, models_dir: Path, *, prepare: bool = True) -> Path:
    """The checkpoint directory to serve.

    None: the embedded SmolLM2 (converted into `models_dir` on first use). A `.gguf` file: converted
    into `models_dir/<stem>`. A directory: used as is when it holds a checkpoint. A bare name that is
    not a path but exists under `models_dir`: that. With `prepare=False` nothing is converted; the
    path where the conversion would go is returned (for `--dry-run`).
    """
    models_dir = Path(models_dir)
    if model is None:
        if not prepare:
            from oresearch_cli.server.embedded import EMBEDDED_NAME, embedded_gguf

            embedded_gguf()  # fail the same way a real run would when the wheel is missing
            return (models_dir / EMBEDDED_NAME).resolve()
        return ensure_embedded_model(models_dir).resolve()
    path = Path(model).expanduser()
    if not path.exists() and not path.is_absolute() and (models_dir / path).exists():
        path = models_dir / path
    if not path.exists():
        raise OresError(
            f"model {model} does not exist; pass a checkpoint directory (with config.json), a .gguf "
            f"file, or omit --model to serve the embedded SmolLM2"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise OresError(
                f"model {model} is a file but not a .gguf; pass a checkpoint directory or a .gguf file"
            )
        dest = models_dir / path.stem
        if not prepare:
            return dest.resolve()
        return convert_gguf(gguf_file_source(path), dest).resolve()
    if not is_checkpoint(path):
        raise OresError(
            f"model {model} is not a checkpoint (no config.json in it); pass the directory that "
            f"save_pretrained wrote, or a .gguf file"
        )
    return path.resolve()


# -- command lines -------------------------------------------------------------------------------


def _script(name: str) -> str:
    """The console script `name` next to this interpreter, else on PATH, else the bare name."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name) or name


def build_vllm_command(checkpoint: Path, model_name: str, options: ServeOptions) -> list[str]:
    argv = [_script("vllm"), "serve", str(checkpoint), "--host", options.host, "--port", str(options.port)]
    argv += ["--served-model-name", model_name]
    if options.max_model_len is not None:
        argv += ["--max-model-len", str(options.max_model_len)]
    if options.tensor_parallel_size is not None:
        argv += ["--tensor-parallel-size", str(options.tensor_parallel_size)]
    if options.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if options.dtype is not None:
        argv += ["--dtype", options.dtype]
    return argv + list(options.extra_args)


# The CPU server's KV cache holds this many tokens, all requests together (`--max-model-len` sets
# it): sized from the machine's memory it would take gigabytes a second server then lacks.
CPU_CACHE_TOKENS = 32768
CPU_MAX_BATCH = 8  # requests decoded together; 1 without continuous batching


# On SIGTERM/SIGINT a server gives requests in flight this long, then cancels them and exits.
# ModelServer.stop() waits a little longer than this before it kills the process group.
SHUTDOWN_TIMEOUT = 2.0
STOP_MARGIN = 5.0  # seconds beyond SHUTDOWN_TIMEOUT for the app's shutdown and the interpreter's exit
VLLM_STOP_GRACE = 10.0


def build_cpu_command(
    checkpoint: Path, model_name: str, options: ServeOptions, *, device: str = "cpu"
) -> list[str]:
    """The command of our OpenAI server over transformers (server/cpu_server.py)."""
    argv = [sys.executable, "-m", "oresearch_cli.server.cpu_server", str(checkpoint)]
    argv += ["--served-model-name", model_name, "--host", options.host, "--port", str(options.port)]
    argv += ["--device", device, "--shutdown-timeout", f"{SHUTDOWN_TIMEOUT:g}"]
    if options.dtype is not None:
        argv += ["--dtype", options.dtype]
    argv += ["--max-batch", str(CPU_MAX_BATCH if options.continuous_batching else 1)]
    argv += ["--cache-tokens", str(options.max_model_len or CPU_CACHE_TOKENS)]
    return argv + list(options.extra_args)


def _check_model_name(name: str) -> str:
    parts = Path(name).parts
    if not name.strip() or name.startswith(("/", "~")) or ".." in parts or "." in parts:
        raise OresError(f"served model name {name!r} is not usable; pick a plain name like 'smollm2'")
    if name.rpartition(":")[2].endswith(".gguf"):
        raise OresError(f"served model name {name!r} must not end in ':<file>.gguf'; pick a plain name")
    return name


def plan_serve(
    checkpoint: Path,
    backend: str,
    options: ServeOptions,
    *,
    has_gpu: Callable[[], bool] = gpu_available,
) -> LaunchPlan:
    """The launch plan for `checkpoint` on `backend` (`vllm` or `transformers`, as chosen already)."""
    checkpoint = Path(checkpoint).resolve()
    name = _check_model_name(options.served_model_name or checkpoint.name)
    # A local checkpoint never needs the Hub; offline mode keeps a typo from turning into a download.
    env = {k: "1" for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k not in os.environ}
    if backend == "vllm":
        return LaunchPlan(
            backend="vllm",
            argv=build_vllm_command(checkpoint, name, options),
            checkpoint=checkpoint,
            model_name=name,
            host=options.host,
            port=options.port,
            env=env,
        )
    if backend != "transformers":
        raise OresError(f"unknown backend {backend!r}; use vllm or transformers")
    device = "cuda" if has_gpu() else "cpu"
    return LaunchPlan(
        backend="transformers",
        argv=build_cpu_command(checkpoint, name, options, device=device),
        checkpoint=checkpoint,
        model_name=name,
        host=options.host,
        port=options.port,
        env=env,
    )


# -- ports ---------------------------------------------------------------------------------------


def check_port(host: str, port: int) -> int:
    """`port` if it can be bound on `host` (0: a free one picked now); else an OresError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OresError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port "
                f"(--port 0 picks a free one) or stop what holds it"
            ) from None
        return sock.getsockname()[1]


# -- the running server --------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if ores dies, even by SIGKILL, so it cannot outlive it."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ModelServer:
    """One server child process (in its own process group) started from a LaunchPlan.

    `start()` launches it, `wait_ready()` polls `/health` until it answers 200 (raising OresError
    with the tail of its log if it exits first), `stop()` ends the whole group (SIGTERM, then
    SIGKILL after `stop_grace`). Also a context manager: `with ModelServer(plan, log) as s: s.wait_ready()`.
    """

    def __init__(self, plan: LaunchPlan, log_path: Path) -> None:
        self.plan = plan
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        # set by stop(): True when the server had to be killed (it did not exit within the grace)
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        plan = self.plan
        if plan.backend == "transformers" and not cpu_server_available():
            raise OresError(f"serving on CPU needs torch, transformers and xgrammar; {INSTALL_LOCAL_HINT}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    plan.argv,
                    env={**os.environ, **plan.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
        except FileNotFoundError:
            hint = INSTALL_LOCAL_HINT if plan.backend == "transformers" else "`pip install 'ores[gpu]'`"
            raise OresError(f"cannot run {plan.argv[0]!r} for the {plan.backend} backend; {hint}") from None

    def log_tail(self, lines: int = 4) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        # progress bars redraw with \r: keep what a terminal would show last
        kept = [line.rsplit("\r", 1)[-1] for line in kept]
        # drop traceback underlines (^^^^ / ~~~~): they say nothing on one line
        kept = [line for line in kept if line.strip("^~ ")]
        return " | ".join(kept[-lines:])

    def wait_ready(self, timeout: float = 600.0, interval: float = 0.5) -> None:
        import httpx

        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        url = f"{self.plan.root_url}/health"
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise OresError(
                        f"the {self.plan.backend} server exited with code {code} while starting: "
                        f"{self.log_tail() or 'no output'}; full log in {self.log_path}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise OresError(
                        f"the {self.plan.backend} server did not answer {url} within {timeout:.0f} s: "
                        f"{self.log_tail() or 'no output'}; full log in {self.log_path}"
                    )
                time.sleep(interval)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    @property
    def stop_grace(self) -> float:
        """Seconds stop() waits after SIGTERM before SIGKILL: the server's bounded shutdown and a margin."""
        if self.plan.backend == "vllm":
            return VLLM_STOP_GRACE
        return SHUTDOWN_TIMEOUT + STOP_MARGIN

    def stop(self, grace: float | None = None) -> int | None:
        """End the server's process group: SIGTERM, then SIGKILL after `grace` seconds (default
        `stop_grace`; 0 kills at once). Returns its exit code (None if never started); `killed` says
        whether it took the SIGKILL."""
        process = self.process
        if process is None:
            return None
        grace = self.stop_grace if grace is None else grace
        for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            self.killed = sig == signal.SIGKILL
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait_s)
        # Leftover members of the group (a worker the server spawned) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.poll()

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_command_env(plan: LaunchPlan) -> list[tuple[str, str]]:
    """The environment a client sets to use this server (printed by `ores serve`). Both backends
    enforce `response_format`, so roles send their pieces' JSON schemas (`json_mode`)."""
    return [
        ("OPENAI_BASE_URL", plan.base_url),
        ("ORES_LLM_MODEL", plan.model_name),
        ("ORES_LLM_JSON_MODE", "json_schema"),
    ]


def format_env_lines(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in pairs]
