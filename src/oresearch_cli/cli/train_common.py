"""What `ores sft` and `ores rl` share at the CLI: relaunching under accelerate, and the
per-step progress (rich on a terminal, one line per logging step otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from oresearch_cli.cli.common import err

SFT_FIELDS = (("loss", "loss"), ("eval_loss", "eval loss"), ("learning_rate", "lr"))
RL_FIELDS = (
    ("reward", "reward"),
    ("rewards/base/mean", "base"),
    ("rewards/tool/mean", "tool"),
    ("rewards/format/mean", "format"),
    ("kl", "kl"),
)


# Options `ores sft` and `ores rl` share, spelt once.
LoraROption = Annotated[int | None, typer.Option("--lora-r", min=0, help="LoRA rank; 0 trains every weight.")]
LearningRateOption = Annotated[
    float | None, typer.Option("--learning-rate", min=0.0, help="Peak learning rate.")
]
MaxStepsOption = Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimizer steps.")]
SaveStepsOption = Annotated[int | None, typer.Option("--save-steps", min=1, help="Checkpoint every N steps.")]
ReportToOption = Annotated[
    str | None, typer.Option("--report-to", help="none, tensorboard, wandb, trackio (when installed).")
]
AccelerateConfigOption = Annotated[
    str | None, typer.Option("--accelerate-config", help="Launch through accelerate with this config.")
]
NumProcessesOption = Annotated[
    int | None, typer.Option("--num-processes", min=1, help="Processes on all machines together.")
]
NumMachinesOption = Annotated[
    int | None, typer.Option("--num-machines", min=1, help="Nodes of a multi-node run.")
]
MachineRankOption = Annotated[
    int | None, typer.Option("--machine-rank", min=0, help="This node's rank (0 is the main node).")
]
MainProcessIpOption = Annotated[
    str | None, typer.Option("--main-process-ip", help="Node 0's address, reachable from every node.")
]
MainProcessPortOption = Annotated[
    int | None, typer.Option("--main-process-port", min=0, max=65535, help="Node 0's rendezvous port.")
]


def launch_flags(
    accelerate_config: str | None,
    num_processes: int | None,
    num_machines: int | None,
    machine_rank: int | None,
    main_process_ip: str | None,
    main_process_port: int | None,
) -> dict[str, Any] | None:
    """The `ores.launch` block the launch flags set, or None when none is set."""
    flags = {
        "accelerate_config": accelerate_config,
        "num_processes": num_processes,
        "num_machines": num_machines,
        "machine_rank": machine_rank,
        "main_process_ip": main_process_ip,
        "main_process_port": main_process_port,
    }
    return {k: v for k, v in flags.items() if v is not None} or None


def folder_state(state: str | None) -> str:
    """What a run would do with its output folder, for --dry-run."""
    return {"done": "already trained (a run would do nothing)", "resume": "a run resumes there"}.get(
        state or "", "new"
    )


def print_outcome_notes(stage: str, result: Any, output_dir: Any) -> None:
    """The lines every training run ends with before its summary: nothing to do, and its notes."""
    if result.skipped:
        err.print(
            f"ores {stage}: this config is already trained in {output_dir}; nothing to do "
            "(change a setting or --name to train again)"
        )
    for note in result.notes:
        err.print(f"ores {stage}: {note}")


def launched_elsewhere(
    stage: str, settings: Any, where: str, dry_run: bool, print_resolved: Callable[[], None]
) -> bool:
    """When the launch settings ask for accelerate and this is not a rank already, run every rank
    as `accelerate launch ... ores <stage> <same arguments>` (a dry run prints that command) and
    return True; False: train in this process."""
    from oresearch_cli.train import launch as launching

    if not launching.needs_launcher(settings) or launching.inside_launcher(os.environ):
        return False
    launching.check(settings, where=where)
    argv = [a for a in sys.argv[2:] if a != "--dry-run"]
    command = launching.launch_command(settings, [stage, *argv], where=where)
    if dry_run:
        print_resolved()
        err.print("[bold]launch:[/bold] " + launching.shell_line(command), highlight=False, soft_wrap=True)
        print(launching.shell_line(command))
        return True
    err.print(
        f"ores {stage}: launching {settings.num_processes or 'all GPUs'} processes: {launching.shell_line(command)}"
    )
    raise typer.Exit(subprocess.call(command))


class TrainProgress:
    """A rich progress bar on a terminal; one plain line per logging step otherwise."""

    def __init__(self, stage: str, fields: tuple[tuple[str, str], ...]) -> None:
        self.stage = stage
        self.fields = fields
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> TrainProgress:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(self.stage), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), console=err,
            )  # fmt: skip
            self._bar.start()
        return self

    def log(self, line: dict[str, Any]) -> None:
        parts = [f"step {line['step']}/{line['max_steps']}"]
        for key, label in self.fields:
            if key in line:
                parts.append(f"{label} {line[key]:.4g}")
        parts.append(f"{line['tokens_seen']:,} tokens")
        if line.get("seconds"):
            parts.append(f"{line['tokens_seen'] / line['seconds']:.0f} tok/s")
        info = " | ".join(parts)
        if self._bar is None:
            err.print(f"{self.stage} {info}", highlight=False)
            return
        if self._task is None:
            self._task = self._bar.add_task(self.stage, total=line["max_steps"], info="")
        self._bar.update(self._task, completed=line["step"], info=info)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
