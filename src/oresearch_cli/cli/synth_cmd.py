"""`ores synth`: parse options, call stages.synth, draw progress on stderr, print the summary."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import FieldOption, FormatOption, OutputOption, WsOption, default_ws, err, table

if TYPE_CHECKING:
    from oresearch_cli.llm import LLMConfig
    from oresearch_cli.stages.synth import SynthSummary


@app.command()
def synth(
    seeds: Annotated[
        str | None,
        typer.Argument(
            help="Seed questions: a JSONL/CSV/Parquet file, '-' for JSONL on stdin; default: latest `seeds`."
        ),
    ] = None,
    # Research settings default to None: unset flags take the --config `synth:` section, then the
    # built-in defaults (stages.synth.SYNTH_DEFAULTS), so a recipe can set them and a flag still wins.
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            help="Search backend: local[:NAME], serper, tavily, searxng[:URL], retriever[:URL]. [default: local]",
        ),
    ] = None,
    crawl: Annotated[
        str | None, typer.Option("--crawl", help="Crawl backend: auto, direct, jina, local. [default: auto]")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Seeds researched at once. [default: 8]")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Think->tool steps per subtask. [default: 10]")
    ] = None,
    min_tool_calls: Annotated[
        int | None,
        typer.Option("--min-tool-calls", min=0, help="Tool calls per subtask, at least. [default: 2]"),
    ] = None,
    max_tool_calls: Annotated[
        int | None,
        typer.Option("--max-tool-calls", min=1, help="Tool calls per subtask, at most. [default: 8]"),
    ] = None,
    max_subtasks: Annotated[
        int | None,
        typer.Option("--max-subtasks", min=1, max=12, help="Subtasks per question, at most. [default: 6]"),
    ] = None,
    serp_num: Annotated[
        int | None,
        typer.Option("--serp-num", min=1, max=20, help="Search results per search call. [default: 10]"),
    ] = None,
    sequential: Annotated[
        bool | None,
        typer.Option(
            "--sequential/--parallel",
            help="Run a question's subtasks one after another (the paper's ablation). [default: parallel]",
        ),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Redo seeds that failed in earlier runs.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="i/n: only the seeds of shard i of n (stable hash of the id)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Research at most N seeds this run.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML recipe: `llm:` (roles, endpoints, prices) and `synth:` (these settings)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model for every role.")] = None,
    planner_model: Annotated[
        str | None, typer.Option("--planner-model", help="Model of the planner.")
    ] = None,
    worker_model: Annotated[str | None, typer.Option("--worker-model", help="Model of the workers.")] = None,
    summarizer_model: Annotated[
        str | None, typer.Option("--summarizer-model", help="Model of the summarizer.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible base URL(s), comma-separated.")
    ] = None,
    json_mode: Annotated[
        str | None,
        typer.Option(
            "--json-mode", help="Structured output the endpoint supports: none, json_object, json_schema."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the search/crawl cache.")] = False,
    field: FieldOption = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
    ws: WsOption = default_ws(),
) -> None:
    """Synthesize one research trace per seed: planner -> parallel workers -> summarizer, into `traces`."""
    from oresearch_cli.cli.common import check_output
    from oresearch_cli.cli.progress import ConsoleProgress
    from oresearch_cli.errors import EXIT_PARTIAL
    from oresearch_cli.llm import load_config
    from oresearch_cli.records import write_jsonl
    from oresearch_cli.stages.synth import STAGE, parse_shard, run_synth, synth_options
    from oresearch_cli.workspace import Workspace

    check_output(output)
    overrides = {
        "model": model,
        "planner.model": planner_model,
        "worker.model": worker_model,
        "summarizer.model": summarizer_model,
        "base_url": base_url,
        "json_mode": json_mode,
    }
    llm_config = _with_models(load_config(config, overrides), ("planner", "worker", "summarizer"))
    flags = {
        "search": search,
        "crawl": crawl,
        "concurrency": concurrency,
        "max_steps": max_steps,
        "min_tool_calls": min_tool_calls,
        "max_tool_calls": max_tool_calls,
        "max_subtasks": max_subtasks,
        "serp_num": serp_num,
        "sequential": sequential,
    }
    options = synth_options(
        flags,
        config,
        cache=not no_cache,
        shard=parse_shard(shard),
        retry_failed=retry_failed,
        limit=limit,
        question_field=field,
        fmt=fmt,
    )
    written: list[dict[str, Any]] = []

    def on_record(record: dict[str, Any]) -> None:
        if output == "-":
            write_jsonl([record], sys.stdout)
        elif output:
            written.append(record)

    bar = ConsoleProgress()
    workspace = Workspace.open(ws)
    try:
        summary = asyncio.run(
            run_synth(workspace, seeds, options, llm_config, progress=bar, on_record=on_record)
        )
    except KeyboardInterrupt:
        # run_synth has marked the run interrupted and kept the finished traces; say so in one line
        # instead of typer's silent exit, and exit 130 as shells expect after Ctrl-C.
        bar.stop()
        _write_output(output, written)
        runs = workspace.runs(stage=STAGE, limit=1) if bar.label else []
        run = f" (run {runs[0].run_id})" if runs else ""
        err.print(
            f"[bold yellow]interrupted:[/] {bar.done} traces finished this run are kept{run}; "
            "rerun the same command to do the rest",
            highlight=False,
        )
        raise typer.Exit(130) from None
    except BaseException:
        bar.stop()
        _write_output(output, written)  # what finished before a failure still reaches -o FILE
        raise
    bar.stop()
    _write_output(output, written, partial=False)
    cost = f"{summary.cost_usd:.4f}" if summary.cost_usd is not None else "unknown"
    rows: list[list[Any]] = [
        ["seeds in input", summary.n_input],
        *([["in this shard", summary.n_in_shard]] if options.shard else []),
        ["skipped (done earlier)", summary.n_skipped - summary.n_skipped_failed],
        *([["skipped (failed earlier)", summary.n_skipped_failed]] if summary.n_skipped_failed else []),
        ["researched", summary.n_todo],
        ["done", summary.n_done],
        ["  of which invalid", summary.n_invalid],
        ["failed", summary.n_failed],
        *_authorship_rows(summary),
        ["tokens (prompt + completion)", f"{summary.prompt_tokens:,} + {summary.completion_tokens:,}"],
        ["cost USD", cost],
        ["seconds", f"{summary.seconds:.1f}"],
    ]
    err.print(table(f"synth {summary.run_id}", ["", "traces"], rows))
    if summary.n_failed or summary.n_skipped_failed:
        err.print(
            f"{summary.n_failed + summary.n_skipped_failed} seeds failed (see the `error` column of "
            "`ores ws sql \"select id, error from traces where status = 'failed'\"`); "
            "rerun with --retry-failed to redo them",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_PARTIAL)


def _with_models(llm_config: LLMConfig, roles: tuple[str, ...]) -> LLMConfig:
    """`llm_config` with a role that has no model given the one its endpoint serves, when it
    serves exactly one (`ores serve`), said in one line on stderr; else "no model set" as before."""
    from oresearch_cli.llm.discover import fill_models

    if any(not llm_config.roles[role].model for role in roles):
        llm_config, notes = asyncio.run(fill_models(llm_config, roles))
        for note in notes:
            err.print(note, highlight=False, markup=False)
    for role in roles:
        llm_config.role(role)
    return llm_config


# The kinds of piece (`oresearch_cli.agent.authorship.PIECES`) as the summary names them.
PIECE_LABELS = {
    "subtask_list": "subtask lists",
    "step": "steps",
    "plan": "plans",
    "answer": "subtask answers",
    "report": "reports",
}


def _authorship_rows(summary: SynthSummary) -> list[list[Any]]:
    """The share of the pieces the model wrote (the rest are the orchestrator's fallbacks),
    overall and per kind of piece; nothing when no trace was done."""

    def share(model: int, total: int) -> str:
        return f"{model / total:.0%} ({model} of {total})"

    authorship = summary.authorship
    if not authorship.total:
        return []
    rows: list[list[Any]] = [
        ["pieces written by the model", share(authorship.model_written, authorship.total)]
    ]
    for piece, count in authorship.pieces.items():
        if count.total:
            rows.append([f"  {PIECE_LABELS.get(piece, piece)}", share(count.model, count.total)])
    return rows


def _write_output(output: str | None, written: list[dict[str, Any]], partial: bool = True) -> None:
    """Write `-o FILE` (stdout was written as records came); after a failure only if any finished."""
    from oresearch_cli.records import write_records

    if output and output != "-" and (written or not partial):
        write_records(written, Path(output))
