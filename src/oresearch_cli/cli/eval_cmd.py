"""`ores eval`: run a system on a benchmark, score its reports as DeepResearch Bench does, show
the scored runs beside published numbers, and measure how far two judges agree."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from oresearch_cli.cli import app
from oresearch_cli.cli.common import (
    FieldOption,
    FormatOption,
    JsonOption,
    OutputOption,
    WsOption,
    check_output,
    default_ws,
    err,
    out,
    print_json,
    table,
)
from oresearch_cli.errors import InputError

if TYPE_CHECKING:
    from oresearch_cli.stages.eval_score import ScoreSummary
    from oresearch_cli.stages.research_run import ResearchSummary

eval_app = typer.Typer(
    help="Evaluate research systems: run a benchmark, score reports (RACE, FACT, rules), leaderboard.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")

BenchOption = Annotated[
    str,
    typer.Option("--bench", help="drb (DeepResearch Bench's 100 tasks) or a JSONL/CSV/Parquet of questions."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML recipe: `eval:` settings and `llm:` roles (judge, workflow roles)."),
]


class _Collect:
    """Rows for `-o`: JSONL on stdout as they come, or a file written at the end."""

    def __init__(self, output: str | None) -> None:
        self.output = output
        self.rows: list[dict[str, Any]] = []

    def __call__(self, row: dict[str, Any]) -> None:
        from oresearch_cli.records import write_jsonl

        if self.output == "-":
            write_jsonl([row], sys.stdout)
        elif self.output:
            self.rows.append(row)

    def write(self) -> None:
        from oresearch_cli.records import write_records

        if self.output and self.output != "-" and self.rows:
            write_records(self.rows, Path(self.output))


def _run_with_progress(coro_factory: Any, collect: _Collect, what: str) -> Any:
    from oresearch_cli.cli.progress import ConsoleProgress

    bar = ConsoleProgress()
    try:
        result = asyncio.run(coro_factory(bar))
    except KeyboardInterrupt:
        bar.stop()
        collect.write()
        err.print(
            f"[bold yellow]interrupted:[/] {bar.done} {what} finished this run are kept; rerun the same "
            "command to do the rest",
            highlight=False,
        )
        raise typer.Exit(130) from None
    except BaseException:
        bar.stop()
        collect.write()
        raise
    bar.stop()
    collect.write()
    return result


# -- ores eval run -----------------------------------------------------------------------------------


@eval_app.command("run")
def run(
    bench: BenchOption = "drb",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The single model: a checkpoint folder, sft/rl run id, models/ name, `embedded`, or a "
            "/v1 URL (vLLM, `ores serve`).",
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", help="Tokenizer of a --model URL: its checkpoint folder or run id."),
    ] = None,
    served_model: Annotated[
        str | None,
        typer.Option(
            "--served-model", help="Model name on a --model URL's server (default: the first listed)."
        ),
    ] = None,
    workflow: Annotated[
        bool,
        typer.Option("--workflow", help="Run the multi-agent workflow of `ores synth` instead of one model."),
    ] = False,
    workflow_model: Annotated[
        str | None, typer.Option("--workflow-model", help="With --workflow: the model of every role.")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="With --workflow: OpenAI-compatible base URL(s), comma-separated."),
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", help="Only the questions in this language (DRB: en or zh).")
    ] = None,
    search: Annotated[str | None, typer.Option("--search", help="Search backend. [default: local]")] = None,
    crawl: Annotated[str | None, typer.Option("--crawl", help="Crawl backend. [default: auto]")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Questions at once. [default: 4]")
    ] = None,
    max_tool_calls: Annotated[
        int | None,
        typer.Option("--max-tool-calls", min=0, help="Tool calls per question (--model). [default: 16]"),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", min=1, help="Model tokens per question (--model). [default: 8192]"),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", min=0.0, max=2.0, help="Sampling (--model). [default: 0.7]"),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed (--model).")] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads of an in-process model.")
    ] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="i/n: only the questions of shard i of n.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Answer at most N questions this run.")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Redo questions that failed earlier.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the search/crawl cache.")] = False,
    config: ConfigOption = None,
    field: FieldOption = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
    ws: WsOption = default_ws(),
) -> None:
    """Answer a benchmark with a system; writes `reports` (full traces) and DRB's submission.jsonl."""
    check_output(output)
    from oresearch_cli.stages.eval_run import EvalRunOptions, ModelSystem, run_model_eval, run_workflow_eval
    from oresearch_cli.stages.eval_settings import eval_settings
    from oresearch_cli.stages.research_run import RunOptions, parse_shard
    from oresearch_cli.workspace import Workspace

    if workflow == (model is not None):
        raise InputError(
            "ores eval run: pass exactly one system, --model M (one model) or --workflow (multi-agent)"
        )
    flags = {
        "search": search,
        "crawl": crawl,
        "concurrency": concurrency,
        "max_tool_calls": max_tool_calls,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
    }
    settings = eval_settings(flags, config)
    options = EvalRunOptions(
        bench=bench,
        language=language,
        run=RunOptions(settings.concurrency, parse_shard(shard), retry_failed, limit),
        settings=settings,
        cache=not no_cache,
        question_field=field,
        fmt=fmt,
    )
    workspace = Workspace.open(ws)
    collect = _Collect(output)
    if model is not None:
        system = ModelSystem(model, tokenizer, served_model, threads)
        summary = _run_with_progress(
            lambda bar: run_model_eval(workspace, system, options, progress=bar, on_record=collect),
            collect,
            "reports",
        )
    else:
        from oresearch_cli.llm import load_config
        from oresearch_cli.stages.synth import synth_options

        overrides = {"model": workflow_model, "base_url": base_url}
        llm_config = load_config(config, overrides, require=["planner", "worker", "summarizer"])
        synth = synth_options(
            {"search": search, "crawl": crawl}, config, cache=not no_cache, question_field=field, fmt=fmt
        )
        summary = _run_with_progress(
            lambda bar: run_workflow_eval(
                workspace, options, synth, llm_config, progress=bar, on_record=collect
            ),
            collect,
            "reports",
        )
    _print_run(summary, workspace)
    failed = summary.n_failed + summary.n_skipped_failed
    if failed:
        from oresearch_cli.errors import EXIT_PARTIAL

        err.print(
            f'{failed} questions failed (see `ores ws sql "select id, error from reports where status = '
            "'failed'\"`); rerun with --retry-failed to redo them",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_PARTIAL)


def _print_run(summary: ResearchSummary, workspace: Any) -> None:
    from oresearch_cli.stages.eval_run import SUBMISSION_KIND

    cost = f"{summary.cost_usd:.4f}" if summary.cost_usd is not None else "unknown (local model)"
    rows: list[list[Any]] = [
        ["questions", summary.n_input],
        ["answered earlier", summary.n_skipped],
        ["answered now", summary.n_done],
        ["  without a valid trace", summary.n_invalid],
        ["failed", summary.n_failed],
        ["tokens (read + written)", f"{summary.prompt_tokens:,} + {summary.completion_tokens:,}"],
        ["cost USD", cost],
        ["seconds", f"{summary.seconds:.1f}"],
    ]
    err.print(table(f"eval run {summary.run_id}", ["", "reports"], rows))
    submission = workspace.artifacts(run_id=summary.run_id, kind=SUBMISSION_KIND)
    if submission:
        err.print(f"DRB submission: {submission[0].path}", highlight=False, markup=False)
    err.print(f"next: ores eval score {summary.run_id} --bench drb", highlight=False, markup=False)


# -- ores eval score ---------------------------------------------------------------------------------


@eval_app.command("score")
def score(
    reports: Annotated[
        str | None,
        typer.Argument(
            help="An `ores eval run` id, or a JSONL of reports ({id, prompt, article}); default: latest."
        ),
    ] = None,
    bench: Annotated[
        str,
        typer.Option(
            "--bench",
            help="RACE criteria: drb (shipped), generate (the judge writes them per question, as DRB did), "
            "or a folder with a criteria.jsonl in DRB's format.",
        ),
    ] = "drb",
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="Reference articles for RACE's T/(T+R): DRB's reference.jsonl or an earlier eval run id. "
            "Without one RACE is pointwise (not comparable with published numbers).",
        ),
    ] = None,
    rules_only: Annotated[
        bool, typer.Option("--rules-only", help="Rule metrics only: no judge, no endpoint.")
    ] = False,
    race: Annotated[
        bool, typer.Option("--race/--no-race", help="RACE (DRB's criteria). [default: on]")
    ] = True,
    fact: Annotated[
        bool,
        typer.Option("--fact", help="FACT: cited statements checked against their pages (crawled, cached)."),
    ] = False,
    fact_extractor: Annotated[
        str,
        typer.Option(
            "--fact-extractor", help="judge (DRB's LLM extraction) or rules ([n] markers + reference list)."
        ),
    ] = "judge",
    crawl: Annotated[
        str, typer.Option("--crawl", help="How FACT fetches cited pages: auto, direct, jina, local.")
    ] = "auto",
    quality: Annotated[
        bool,
        typer.Option(
            "--quality", help="DeepResearchGym-style quality (six dimensions 0-10, key-point recall)."
        ),
    ] = False,
    weighted: Annotated[
        bool,
        typer.Option(
            "--weighted",
            help="RACE and quality also weighted by the judge's top logprobs (G-Eval), where sent.",
        ),
    ] = False,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Model of the judge role.")] = None,
    judge_base_url: Annotated[
        str | None, typer.Option("--judge-base-url", help="OpenAI-compatible base URL of the judge.")
    ] = None,
    judge_json_mode: Annotated[
        str | None,
        typer.Option(
            "--judge-json-mode",
            help="Structured output the judge endpoint supports: none, json_object, json_schema.",
        ),
    ] = None,
    clean: Annotated[
        str | None,
        typer.Option(
            "--clean",
            help="How citations leave the articles first: llm (as DRB), rules, none. [default: llm]",
        ),
    ] = None,
    judge_max_chars: Annotated[
        int | None,
        typer.Option("--judge-max-chars", min=200, help="Cut each article to N characters (small judges)."),
    ] = None,
    complete: Annotated[
        bool | None,
        typer.Option("--complete/--as-drb", help="Re-ask a reply that misses criteria (DRB does not)."),
    ] = None,
    judge_integer_scores: Annotated[
        bool | None,
        typer.Option(
            "--judge-integer-scores",
            help="Bind scores to integers 0-10 (schema endpoints; a small judge loops on digits).",
        ),
    ] = None,
    judge_analysis_chars: Annotated[
        int | None,
        typer.Option(
            "--judge-analysis-chars",
            min=0,
            help="Bound each criterion's analysis (schema-binding endpoints, small judges).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Score at most N reports this run.")
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Judge everything again, reading nothing from the judge cache (a new run)."
        ),
    ] = False,
    config: ConfigOption = None,
    field: FieldOption = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
    as_json: JsonOption = False,
    ws: WsOption = default_ws(),
) -> None:
    """Score reports: RACE (DRB's criteria, judge), rule metrics; one `scores` row per task."""
    check_output(output)
    from oresearch_cli.stages.eval_score import ScoreOptions, run_score
    from oresearch_cli.stages.eval_settings import eval_settings
    from oresearch_cli.workspace import Workspace

    settings = eval_settings(
        {
            "clean": clean,
            "judge_max_chars": judge_max_chars,
            "complete": complete,
            "judge_analysis_chars": judge_analysis_chars,
            "judge_integer_scores": judge_integer_scores,
        },
        config,
    )
    llm_config = None
    if not rules_only:
        from oresearch_cli.llm import load_config

        overrides = {
            k: v
            for k, v in {
                "judge.model": judge_model,
                "judge.base_url": judge_base_url,
                "judge.json_mode": judge_json_mode,
            }.items()
            if v
        }
        llm_config = load_config(config, overrides, require=["judge"])
    options = ScoreOptions(
        bench=bench if not rules_only else None,
        reference=reference,
        rules_only=rules_only,
        race=race,
        fact=fact,
        quality=quality,
        weighted=weighted,
        fact_extractor=fact_extractor,
        crawl=crawl,
        field_name=field,
        fmt=fmt,
        limit=limit,
        fresh=fresh,
        settings=settings,
    )
    workspace = Workspace.open(ws)
    collect = _Collect(output)
    summary = _run_with_progress(
        lambda bar: run_score(workspace, reports, options, llm_config, progress=bar, on_record=collect),
        collect,
        "scores",
    )
    if as_json:
        print_json(summary_dict(summary))
    else:
        _print_score(summary)
    if summary.n_failed:  # scores were written, but not for every report: say so to the caller
        from oresearch_cli.errors import EXIT_PARTIAL

        raise typer.Exit(EXIT_PARTIAL)


def summary_dict(summary: ScoreSummary) -> dict[str, Any]:
    race = summary.race
    return {
        "run_id": summary.run_id,
        "reports": summary.n_items,
        "scored": summary.n_scored,
        "failed": summary.n_failed,
        "race": None
        if race is None
        else {
            "mode": summary.mode,
            "overall": race.overall,
            **race.dimensions,
            "scored": race.scored,
            "failed": race.failed,
        },
        "fact": None if summary.fact is None else _fact_dict(summary.fact),
        "quality": None if summary.quality is None else _quality_dict(summary.quality),
        "race_weighted": summary.race_weighted,
        "race_weighted_tasks": summary.race_weighted_tasks,
        "clean_fallbacks": summary.clean_fallbacks,
        "judge": summary.judge,
        "judge_calls": summary.judge_calls,
        "judge_cost_usd": summary.judge_cost_usd,
        "rules": summary.rules,
    }


def _fact_dict(fact: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(fact)


def _quality_dict(quality: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(quality), "normalized": quality.normalized}


def _print_score(summary: ScoreSummary) -> None:
    race = summary.race
    rows: list[list[Any]] = [
        ["reports", summary.n_items],
        ["scored", summary.n_scored],
        ["failed", summary.n_failed],
    ]
    if race is not None:
        label = "RACE" if summary.mode == "reference" else "RACE pointwise (not comparable with DRB)"
        rows += [[f"{label} overall", f"{race.overall * 100:.2f}"]]
        rows += [[f"  {d}", f"{v * 100:.2f}"] for d, v in race.dimensions.items()]
        rows += [["  tasks scored / failed", f"{race.scored} / {race.failed}"]]
        if summary.race_weighted is not None:
            rows += [
                [
                    "  logprob-weighted overall (G-Eval)",
                    f"{summary.race_weighted * 100:.2f} ({summary.race_weighted_tasks} tasks)",
                ]
            ]
        rows += [["citation cleaning fell back to rules", summary.clean_fallbacks]]
    fact = summary.fact
    if fact is not None:
        accuracy = "-" if fact.accuracy is None else f"{fact.accuracy:.2%}"
        effective = "-" if fact.effective is None else f"{fact.effective:.2f}"
        rows += [
            ["FACT citation accuracy (pooled)", accuracy],
            ["FACT effective citations per task", effective],
            [
                "  tasks counted / failed / incomplete",
                f"{fact.counted} / {fact.failed_tasks} / {fact.incomplete}",
            ],
        ]
    quality = summary.quality
    if quality is not None:
        overall = "-" if quality.overall is None else f"{quality.overall:.2f}"
        rows += [["quality (DRGym-style, 0-10)", overall]]
        if quality.weighted_overall is not None:
            rows += [["  logprob-weighted", f"{quality.weighted_overall:.2f} ({quality.weighted} reports)"]]
        if quality.key_point_recall is not None:
            rows += [["  key-point recall", f"{quality.key_point_recall:.0%}"]]
        rows += [["  scored / failed", f"{quality.scored} / {quality.failed}"]]
    rules = summary.rules
    if rules:

        def num(key: str, fmt: str = "{:.1f}") -> str:
            value = rules.get(key)
            return "-" if value is None else fmt.format(value)

        rows += [
            ["length (words + CJK chars), mean", num("length_mean", "{:.0f}")],
            ["citation markers, mean", num("citation_markers_mean")],
            ["distinct sources, mean", num("sources_mean")],
            ["complete structure", num("structure_complete_share", "{:.0%}")],
            ["language match", num("language_match_share", "{:.0%}")],
            ["tool calls, mean", num("tool_calls_mean")],
            ["cited pages the trace observed", num("cited_observed_share", "{:.0%}")],
        ]
    if summary.judge:
        cost = f"${summary.judge_cost_usd:.4f}" if summary.judge_cost_usd is not None else "unpriced"
        rows += [["judge", f"{escape(summary.judge)}: {summary.judge_calls} calls this run, {cost}"]]
    err.print(table(f"eval score {summary.run_id}", ["", "value"], rows))
    if summary.n_failed:
        err.print(
            f'{summary.n_failed} reports failed to score (see `ores ws sql "select id, error from scores '
            "where status = 'failed'\"`); they are left out of the means; rerun the same command to retry them",
            highlight=False,
            markup=False,
        )
    out.print(f"scores: {summary.artifact.path if summary.artifact else '-'}", highlight=False, markup=False)


# -- ores eval board ---------------------------------------------------------------------------------


@eval_app.command("board")
def board(
    runs: Annotated[
        list[str] | None, typer.Argument(help="Score runs to show (default: every finished one).")
    ] = None,
    published: Annotated[
        str | None,
        typer.Option(
            "--published",
            help="Published sources to show beside ours, comma-separated ids of data/published_scores.json "
            "(default: the paper and DRB's July 2025 board); 'none' for ours only.",
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option("--report", help="Folder for leaderboard.md/.html/.png. [default: <ws>/board]"),
    ] = None,
    no_chart: Annotated[bool, typer.Option("--no-chart", help="Skip the PNG.")] = False,
    as_json: JsonOption = False,
    ws: WsOption = default_ws(),
) -> None:
    """Scored runs beside published DeepResearch Bench numbers: a table, a PNG and a Markdown/HTML page."""
    from oresearch_cli.evaluation import board_table, load_published, sort_entries, write_report
    from oresearch_cli.evaluation.runs import scored_entries
    from oresearch_cli.workspace import Workspace

    workspace = Workspace.open(ws, create=False)
    ours = scored_entries(workspace, runs or None)
    if not ours:
        raise InputError(f"{workspace.root}: no finished `ores eval score` run to show; score a run first")
    chosen = (
        DEFAULT_PUBLISHED if published is None else [p for p in published.split(",") if p and p != "none"]
    )
    entries = sort_entries([*ours, *(load_published(sources=chosen) if chosen else [])])
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    out.print(board_table(entries))
    paths = write_report(entries, report_dir or workspace.root / "board", chart=not no_chart)
    err.print(f"board: {paths.markdown}, {paths.html}", highlight=False, markup=False)
    if paths.chart is not None:
        err.print(f"chart: {paths.chart}", highlight=False, markup=False)
    elif paths.chart_problem:
        err.print(f"no chart: {paths.chart_problem}", highlight=False, markup=False)


DEFAULT_PUBLISHED = ["o-researcher-paper", "drb-readme-2025-07-15"]


# -- ores eval agree ---------------------------------------------------------------------------------


@eval_app.command("agree")
def agree(
    run_a: Annotated[str, typer.Argument(help="A score run (e.g. the expensive judge).")],
    run_b: Annotated[
        str, typer.Argument(help="Another score run of the same reports (the cheap judge, or a rerun).")
    ],
    as_json: JsonOption = False,
    ws: WsOption = default_ws(),
) -> None:
    """How far two judges agree on the same reports: rank correlation and mean difference per dimension."""
    from oresearch_cli.evaluation import judge_agreement
    from oresearch_cli.evaluation.runs import dimension_scores
    from oresearch_cli.workspace import Workspace

    workspace = Workspace.open(ws, create=False)
    result = judge_agreement(
        dimension_scores(workspace, run_a), dimension_scores(workspace, run_b), label_a=run_a, label_b=run_b
    )
    if as_json:
        print_json(result.to_dict())
        return
    out.print(result.table())
    out.print(result.verdict(), highlight=False, markup=False)
