"""`ores rl`: parse options, resolve the recipe, launch or train through train.rl, print progress."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import FieldOption, WsOption, default_ws, err
from oresearch_cli.cli.train_common import (
    RL_FIELDS,
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
def rl(
    questions: Annotated[
        str | None,
        typer.Argument(
            help="Questions to research: a JSONL/Parquet with a question column, '-' for stdin; "
            "default: the workspace's seeds."
        ),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe", "--config", help="Recipe YAML: an `rl:` section of trl.GRPOConfig keys plus `ores:`."
        ),
    ] = None,
    start_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            "--model",
            help="The policy to start from: an sft run, a models/ name, a checkpoint dir.",
        ),
    ] = None,
    field: FieldOption = None,
    reward_weights: Annotated[
        str | None,
        typer.Option(
            "--reward-weights", help="BASE,TOOL,FORMAT weights of the three rewards (default 0.6,0.2,0.2)."
        ),
    ] = None,
    reward_func: Annotated[
        list[str] | None,
        typer.Option(
            "--reward-func", help="An extra reward, module:function or file.py:function (weight 1)."
        ),
    ] = None,
    judge_config: Annotated[
        str | None,
        typer.Option("--judge-config", help="LLM config (or recipe) with the judge role for R_base."),
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option("--judge-model", help="Override the judge role's model.")
    ] = None,
    search: Annotated[
        str | None, typer.Option("--search", help="The rollouts' search backend, e.g. local:wiki.")
    ] = None,
    max_tool_calls: Annotated[
        int | None, typer.Option("--max-tool-calls", min=0, help="Tool calls a rollout may run.")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", min=1, help="Model-written tokens a rollout may write.")
    ] = None,
    num_generations: Annotated[
        int | None, typer.Option("--num-generations", min=2, help="Rollouts per question (a group).")
    ] = None,
    lora_r: LoraROption = None,
    learning_rate: LearningRateOption = None,
    max_steps: MaxStepsOption = None,
    max_train_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-train-seconds", min=1.0, help="Stop (and save) at the first step end after this long."
        ),
    ] = None,
    save_steps: SaveStepsOption = None,
    report_to: ReportToOption = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The model's folder under models/. Default: rl-<config hash>."),
    ] = None,
    accelerate_config: AccelerateConfigOption = None,
    num_processes: NumProcessesOption = None,
    num_machines: NumMachinesOption = None,
    machine_rank: MachineRankOption = None,
    main_process_ip: MainProcessIpOption = None,
    main_process_port: MainProcessPortOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config and launch command; train nothing.")
    ] = False,
    ws: WsOption = default_ws(),
) -> None:
    """Agentic GRPO: the policy researches questions with real tool calls; rewards are report
    quality (the judge), tool use and format, weighted 0.6/0.2/0.2 by default, as in the paper."""
    from oresearch_cli.config import load_recipe
    from oresearch_cli.train.rewards import parse_reward_weights
    from oresearch_cli.train.rl_settings import resolve_rl

    loaded = load_recipe(recipe)
    trl_flags = {
        "num_generations": num_generations,
        "learning_rate": learning_rate,
        "max_steps": max_steps,
        "save_steps": save_steps,
        "report_to": report_to,
    }
    budget = {"max_tool_calls": max_tool_calls, "max_new_tokens": max_new_tokens}
    judge = {"llm_config": judge_config, "model": judge_model}
    ores_flags: dict[str, Any] = {
        "model": start_from,
        "questions": questions,
        "field": field,
        "search": search,
        "reward_weights": list(parse_reward_weights(reward_weights)) if reward_weights is not None else None,
        "custom_rewards": {spec: 1.0 for spec in reward_func} if reward_func else None,
        "budget": {k: v for k, v in budget.items() if v is not None} or None,
        "judge": {k: v for k, v in judge.items() if v is not None} or None,
        "name": name,
        "max_train_seconds": max_train_seconds,
        "lora": {"r": lora_r} if lora_r is not None else None,
        "launch": launch_flags(
            accelerate_config, num_processes, num_machines, machine_rank, main_process_ip, main_process_port
        ),
    }
    resolved = resolve_rl(loaded, trl_flags, ores_flags)
    if resolved.ores.judge.llm_config is None and loaded.has("llm") and loaded.path is not None:
        resolved.ores.judge.llm_config = str(
            loaded.path
        )  # the recipe's own `llm:` section configures the judge
    if launched_elsewhere(
        "rl", resolved.ores.launch, loaded.where, dry_run, lambda: _print_resolved(resolved)
    ):
        return
    _train(resolved, loaded.where, ws, dry_run)


def _print_resolved(resolved: Any) -> None:
    import yaml

    err.print("[bold]resolved rl config:[/bold]")
    sys.stderr.write(yaml.safe_dump({"rl": resolved.to_dict()}, sort_keys=False, allow_unicode=True))


def _train(resolved: Any, where: str, ws_path: Path, dry_run: bool) -> None:
    from oresearch_cli.train import rl as stage
    from oresearch_cli.train.inputs import load_questions
    from oresearch_cli.train.runs import check_output_dir, is_main_process
    from oresearch_cli.workspace import Workspace

    ores = resolved.ores
    workspace = Workspace.open(ws_path, create=ores.questions is not None)
    questions = load_questions(workspace, ores.questions, field=ores.field)
    plan = stage.plan_rl(workspace, resolved, where, questions)
    state = check_output_dir(plan.output_dir, plan.config_hash, "rl")
    stage.judge_llm_config(plan)  # a missing judge fails now, before any rollout
    main = is_main_process()
    if main:
        weights = ", ".join(f"{n} {w:g}" for n, w in zip(plan.reward_names, plan.reward_weights, strict=True))
        err.print(f"ores rl: {len(questions.questions)} questions from {questions.name}; rewards {weights}")
    if dry_run:
        _print_resolved(resolved)
        what = folder_state(state)
        err.print(
            f"ores rl: policy {plan.model_path}; output {plan.output_dir} ({what}); config {plan.config_hash}"
        )
        return
    if state == "resume" and main:
        err.print(f"ores rl: resuming the interrupted run in {plan.output_dir}")
    with TrainProgress("rl", RL_FIELDS) as progress:
        result = stage.run_rl(workspace, plan, questions, on_log=progress.log)
    if not main:
        return
    record = result.record
    print_outcome_notes("rl", result, plan.output_dir)
    err.print(
        f"ores rl: {record.method} from {record.base_model}: {record.steps} steps, {record.rollouts} rollouts, "
        f"{record.mean_tool_calls or 0:.1f} tool calls each, judge {record.judge_calls} calls "
        f"({record.judge_failed} failed), {record.seconds:.0f} s"
    )
    err.print(
        f"ores rl: model saved in {workspace.root / record.path}; serve it with `ores serve --model {record.id}`"
    )
