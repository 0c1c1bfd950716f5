"""`ores sft`: parse options, resolve the recipe, launch or train through train.sft, print progress."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import FieldOption, WsOption, default_ws, err
from oresearch_cli.cli.train_common import (
    SFT_FIELDS,
    AccelerateConfigOption,
    LearningRateOption,
    LoraROption,
    MachineRankOption,
    MainProcessIpOption,
    MainProcessPortOption,
    MaxStepsOption,
    NumMachinesOption,
    NumProcessesOption,
    ReportToOption,
    SaveStepsOption,
    TrainProgress,
    folder_state,
    launch_flags,
    launched_elsewhere,
    print_outcome_notes,
)


@app.command()
def sft(
    traces: Annotated[
        str | None,
        typer.Argument(
            help="Traces to train on: a JSONL/Parquet file, an `ores export` dir, '-' for JSONL on stdin; "
            "default: the workspace's accepted set."
        ),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            "--config",
            help="Recipe YAML: an `sft:` section of trl.SFTConfig keys plus an `ores:` block.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Base model: a checkpoint dir, a models/ name, a hub id, or `embedded`."
        ),
    ] = None,
    field: FieldOption = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", min=16, help="Tokens per example (TRL max_length).")
    ] = None,
    overlong: Annotated[
        str | None,
        typer.Option("--overlong", help="A trace over --max-length: drop, or truncate at a step boundary."),
    ] = None,
    packing: Annotated[
        bool | None, typer.Option("--packing/--no-packing", help="Pack examples into full sequences (TRL).")
    ] = None,
    eval_split: Annotated[
        float | None,
        typer.Option("--eval-split", min=0.0, max=0.5, help="Share of questions held out for eval loss."),
    ] = None,
    lora_r: LoraROption = None,
    epochs: Annotated[float | None, typer.Option("--epochs", min=0.0, help="num_train_epochs.")] = None,
    learning_rate: LearningRateOption = None,
    max_steps: MaxStepsOption = None,
    save_steps: SaveStepsOption = None,
    report_to: ReportToOption = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The model's folder under models/. Default: sft-<config hash>."),
    ] = None,
    ignore_gate: Annotated[
        bool | None, typer.Option("--ignore-gate", help="Train on a batch the spot-check gate holds.")
    ] = None,
    accelerate_config: AccelerateConfigOption = None,
    num_processes: NumProcessesOption = None,
    num_machines: NumMachinesOption = None,
    machine_rank: MachineRankOption = None,
    main_process_ip: MainProcessIpOption = None,
    main_process_port: MainProcessPortOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the resolved config, data and launch command; train nothing."),
    ] = False,
    ws: WsOption = default_ws(),
) -> None:
    """Fine-tune one model to write whole traces (subtasks, steps, tool calls, report) from the
    question alone, on TRL's SFTTrainer; loss only on what the model wrote (observations masked)."""
    from oresearch_cli.config import load_recipe
    from oresearch_cli.train.settings import resolve_sft

    loaded = load_recipe(recipe)
    trl_flags = {
        "max_length": max_length,
        "packing": packing,
        "num_train_epochs": epochs,
        "learning_rate": learning_rate,
        "max_steps": max_steps,
        "save_steps": save_steps,
        "report_to": report_to,
    }
    ores_flags: dict[str, Any] = {
        "model": model,
        "traces": traces,
        "field": field,
        "overlong": overlong,
        "eval_split": eval_split,
        "name": name,
        "ignore_gate": ignore_gate,
        "lora": {"r": lora_r} if lora_r is not None else None,
        "launch": launch_flags(
            accelerate_config, num_processes, num_machines, machine_rank, main_process_ip, main_process_port
        ),
    }
    resolved = resolve_sft(loaded, trl_flags, ores_flags)
    if launched_elsewhere(
        "sft", resolved.ores.launch, loaded.where, dry_run, lambda: _print_resolved(resolved)
    ):
        return
    _train(resolved, loaded.where, ws, dry_run)


def _print_resolved(resolved: Any) -> None:
    import yaml

    err.print("[bold]resolved sft config:[/bold]")
    sys.stderr.write(yaml.safe_dump({"sft": resolved.to_dict()}, sort_keys=False, allow_unicode=True))


def _train(resolved: Any, where: str, ws_path: Path, dry_run: bool) -> None:
    from oresearch_cli.train import sft as stage
    from oresearch_cli.train.inputs import load_traces
    from oresearch_cli.workspace import Workspace

    ores = resolved.ores
    workspace = Workspace.open(ws_path, create=ores.traces is not None)
    source = load_traces(
        workspace, ores.traces, field=ores.field, filtered_run=ores.filtered_run, ignore_gate=ores.ignore_gate
    )
    plan = stage.plan_sft(
        workspace, resolved, where, input_name=source.name, input_ids=[item.id for item in source.items]
    )
    state = stage.check_output_dir(plan.output_dir, plan.config_hash)
    tokenizer = stage.load_tokenizer(plan.model_path)
    data = stage.prepare_data(plan, tokenizer, source.items, source.name)
    main = stage.is_main_process()  # under accelerate, every rank runs this: one of them reports
    if main and source.n_without_trace:
        err.print(f"ores sft: {source.n_without_trace} rows of {source.name} have no trace and were left out")
    if main:
        err.print(f"ores sft: {data.summary()}")
    if dry_run:
        _print_resolved(resolved)
        what = folder_state(state)
        err.print(
            f"ores sft: base model {plan.model_path}; output {plan.output_dir} ({what}); config {plan.config_hash}"
        )
        return
    if state == "resume" and main:
        err.print(f"ores sft: resuming the interrupted run in {plan.output_dir}")
    with TrainProgress("sft", SFT_FIELDS) as progress:
        result = stage.run_sft(workspace, plan, data, on_log=progress.log)
    if not main:
        return
    record = result.record
    print_outcome_notes("sft", result, plan.output_dir)
    eval_part = f", eval loss {record.eval_loss:.4f}" if record.eval_loss is not None else ""
    loss_part = f"train loss {record.train_loss:.4f}" if record.train_loss is not None else "no loss logged"
    err.print(
        f"ores sft: {record.method} fine-tuning of {record.base_model}: {record.steps} steps, "
        f"{record.tokens_seen:,} tokens seen, {loss_part}{eval_part}, {record.seconds:.0f} s"
    )
    err.print(
        f"ores sft: model saved in {workspace.root / record.path}; serve it with `ores serve --model {record.id}`"
    )
