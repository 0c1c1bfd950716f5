"""Launching `ores sft` at scale: the `ores: launch:` block of a recipe -> one `accelerate launch`.

    settings = LaunchSettings(accelerate_config="recipes/accelerate/zero3.yaml")
    check(settings, where="r.yaml: sft.ores.launch")       # one ConfigError line, before any GPU work
    if needs_launcher(settings) and not inside_launcher(os.environ):
        command = launch_command(settings, ["sft", "--recipe", "r.yaml"])
        print(shell_line(command))                          # --dry-run stops here
        os.execvp(command[0], command)                      # every rank runs `ores sft` again, inside

The launched processes run the same `ores` argv; `inside_launcher` tells them not to launch again.
Pure: no torch at import; `torch.cuda.device_count()` is asked only when `num_processes` is null.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oresearch_cli.config import bounded
from oresearch_cli.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "LaunchSettings",
    "check",
    "deepspeed_available",
    "inside_launcher",
    "launch_command",
    "needs_launcher",
    "shell_line",
    "total_processes",
]

DEFAULT_PORT = 29500  # accelerate's and torchrun's default rendezvous port
WHERE = "sft.ores.launch"

# What `accelerate launch` (1.16, utils/launch.py) puts in every child's environment: the simple,
# multi-GPU and DeepSpeed launchers all set ACCELERATE_MIXED_PRECISION; the DeepSpeed one adds
# ACCELERATE_USE_DEEPSPEED; torchrun (which the multi-GPU and DeepSpeed launchers run) adds
# LOCAL_RANK, RANK and WORLD_SIZE, as do `deepspeed` and plain `torchrun`.
_LAUNCHER_MARKERS = ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_DEEPSPEED", "LOCAL_RANK", "WORLD_SIZE")


@dataclass
class LaunchSettings:
    """How `ores sft` runs: in this process (`accelerate_config: null`) or under `accelerate launch`."""

    accelerate_config: str | None = None  # a path, relative to the working directory, or absolute
    num_processes: int | None = bounded(None, low=1)  # all machines together; None: GPUs x num_machines
    num_machines: int = bounded(1, low=1)
    machine_rank: int = bounded(0, low=0)  # this machine's rank; 0 is the main one
    main_process_ip: str | None = None  # the rank-0 machine's address; required above one machine
    main_process_port: int = bounded(DEFAULT_PORT, low=0, high=65535)  # 0: any free port (one machine)


def needs_launcher(settings: LaunchSettings) -> bool:
    """True when the run goes through `accelerate launch` (an accelerate config is named)."""
    return settings.accelerate_config is not None


def inside_launcher(environ: Mapping[str, str]) -> bool:
    """True in a process that a launcher started (accelerate, torchrun, deepspeed).

    Errs towards True: running in-process by mistake costs speed, launching again from inside a
    launched rank would start a launcher per rank.
    """
    for name in _LAUNCHER_MARKERS:
        value = environ.get(name, "").strip()
        if not value:
            continue
        if name == "LOCAL_RANK" and value.lstrip("-").isdigit() and int(value) < 0:
            continue  # some tools write LOCAL_RANK=-1 for "not distributed"
        return True
    return False


def deepspeed_available() -> bool:
    """Whether `deepspeed` is installed, found without importing it (its import is slow and loud)."""
    return importlib.util.find_spec("deepspeed") is not None


def _read_accelerate_config(path: Path, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"{where}: accelerate_config {path} cannot be read ({reason}); fix the file or name another"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: accelerate_config {path} is not a mapping of accelerate settings; "
            "start from one of recipes/accelerate/*.yaml"
        )
    return data


def _uses_deepspeed(config: Mapping[str, Any]) -> bool:
    return str(config.get("distributed_type", "")).upper() == "DEEPSPEED" or bool(
        config.get("deepspeed_config")
    )


def check(settings: LaunchSettings, *, where: str = WHERE) -> None:
    """Raise ConfigError ("where: what; how to fix") for settings no launch could run with.

    Cheap and local: it reads the accelerate config (YAML, no accelerate import) but asks no GPU.
    """
    s = settings
    if s.num_machines < 1:
        raise ConfigError(f"{where}: num_machines must be at least 1, got {s.num_machines}; fix the value")
    if s.num_machines > 1 and s.accelerate_config is None:
        raise ConfigError(
            f"{where}: num_machines is {s.num_machines} but accelerate_config is null; "
            "name one, e.g. recipes/accelerate/multi-node.yaml"
        )
    if s.num_machines > 1 and not s.main_process_ip:
        raise ConfigError(
            f"{where}: num_machines is {s.num_machines} but main_process_ip is not set; "
            "pass --main-process-ip with the rank-0 machine's address on every machine"
        )
    if s.num_machines > 1 and s.main_process_port == 0:
        raise ConfigError(
            f"{where}: main_process_port 0 (any free port) cannot work across {s.num_machines} machines; "
            f"pass the same --main-process-port on every machine (default {DEFAULT_PORT})"
        )
    if not 0 <= s.machine_rank < s.num_machines:
        raise ConfigError(
            f"{where}: machine_rank {s.machine_rank} is not below num_machines {s.num_machines}; "
            f"give each machine a rank from 0 to {s.num_machines - 1}"
        )
    if s.num_processes is not None:
        if s.num_processes < s.num_machines:
            raise ConfigError(
                f"{where}: num_processes {s.num_processes} is fewer than num_machines {s.num_machines} "
                "(num_processes counts all machines together); set it to GPUs per machine x machines, "
                "or null to count the GPUs"
            )
        if s.num_processes % s.num_machines:
            raise ConfigError(
                f"{where}: num_processes {s.num_processes} does not split evenly over {s.num_machines} machines; "
                "set it to GPUs per machine x machines, or null to count the GPUs"
            )
    if s.accelerate_config is None:
        return
    path = Path(s.accelerate_config).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{where}: accelerate_config {s.accelerate_config} does not exist (looked in {Path.cwd()}); "
            "fix the path (relative to the working directory) or pick one of recipes/accelerate/*.yaml"
        )
    config = _read_accelerate_config(path, where)
    if _uses_deepspeed(config) and not deepspeed_available():
        raise ConfigError(
            f"{where}: accelerate_config {s.accelerate_config} runs DeepSpeed, which is not installed; "
            "pip install deepspeed (on the GPU machines), or pick recipes/accelerate/single-gpu.yaml"
        )


def _count_gpus(where: str) -> int:
    try:
        import torch  # lazily: only a null num_processes needs it
    except ImportError:
        raise ConfigError(
            f"{where}: num_processes is null (one per GPU) but torch is not installed to count GPUs; "
            "set num_processes, or install the train extra (pip install 'ores[train]')"
        ) from None
    return int(torch.cuda.device_count())


def total_processes(
    settings: LaunchSettings, *, gpus_per_machine: int | None = None, where: str = WHERE
) -> int:
    """All processes over all machines, as `accelerate launch --num_processes` counts them."""
    if settings.num_processes is not None:
        return settings.num_processes
    gpus = _count_gpus(where) if gpus_per_machine is None else gpus_per_machine
    if gpus < 1:
        raise ConfigError(
            f"{where}: num_processes is null (one per GPU) but no GPU is visible; "
            "set num_processes (2 for recipes/accelerate/cpu-zero2.yaml) or run on a GPU machine"
        )
    return gpus * settings.num_machines


def launch_command(
    settings: LaunchSettings,
    ores_argv: list[str],
    *,
    gpus_per_machine: int | None = None,
    python: str = sys.executable,
    where: str = WHERE,
) -> list[str]:
    """The `accelerate launch` argv that runs `python -m oresearch_cli <ores_argv>` on every rank.

    `python -m accelerate.commands.launch` rather than the `accelerate` script: it is the
    accelerate of the very interpreter that runs ores (a script on PATH may belong to another
    environment, and a venv's bin/ need not be on PATH at all), and accelerate starts the ranks
    with that same interpreter (sys.executable). Counts and ranks always go as flags, so the
    recipe, not whatever the accelerate file says, decides them.
    """
    if settings.accelerate_config is None:
        raise ValueError("launch_command() needs settings.accelerate_config; check needs_launcher() first")
    total = total_processes(settings, gpus_per_machine=gpus_per_machine, where=where)
    command = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        settings.accelerate_config,
        "--num_processes",
        str(total),
        "--num_machines",
        str(settings.num_machines),
        "--machine_rank",
        str(settings.machine_rank),
    ]
    multi_node = settings.num_machines > 1
    if multi_node and settings.main_process_ip:
        command += ["--main_process_ip", settings.main_process_ip]
    # On one machine the port matters only to run two jobs side by side: pass it when it was changed.
    if multi_node or settings.main_process_port != DEFAULT_PORT:
        command += ["--main_process_port", str(settings.main_process_port)]
    return [*command, "-m", "oresearch_cli", *ores_argv]


def shell_line(command: list[str]) -> str:
    """`command` as one line a shell runs unchanged (for `--dry-run`)."""
    return shlex.join(command)
