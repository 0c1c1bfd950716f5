"""`ores filter`: parse options, call stages.filter, print the funnel and the top reasons."""

from __future__ import annotations

import asyncio
import json
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
from oresearch_cli.records import write_jsonl, write_records

if TYPE_CHECKING:
    from oresearch_cli.agent.authorship import Authorship


def _rule_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@app.command("filter")
def filter_(
    traces: Annotated[
        str | None,
        typer.Argument(
            help="Traces: JSONL/CSV/Parquet or '-' (default: the workspace's latest synth output)."
        ),
    ] = None,
    field: FieldOption = None,
    fmt: FormatOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML with filter settings (`filter:` section) and the judge (`llm:`)."
        ),
    ] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Run the hard rules and dedup only.")] = False,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Model of the judge role.")] = None,
    judge_base_url: Annotated[
        str | None, typer.Option("--judge-base-url", help="OpenAI-compatible base URL of the judge.")
    ] = None,
    disable: Annotated[
        str | None, typer.Option("--disable", help="Comma-separated rules to switch off (see --list-rules).")
    ] = None,
    enable: Annotated[
        str | None, typer.Option("--enable", help="Comma-separated rules to switch on.")
    ] = None,
    max_fallback_share: Annotated[
        float | None,
        typer.Option(
            "--max-fallback-share",
            min=0.0,
            max=1.0,
            help="Reject a trace when more than this share of its pieces are orchestrator fallbacks. [default: 0.5]",
        ),
    ] = None,
    min_tool_calls: Annotated[int | None, typer.Option("--min-tool-calls", min=0)] = None,
    max_tool_calls: Annotated[int | None, typer.Option("--max-tool-calls", min=1)] = None,
    min_steps: Annotated[int | None, typer.Option("--min-steps", min=0)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1)] = None,
    min_sources: Annotated[int | None, typer.Option("--min-sources", min=0)] = None,
    min_report_tokens: Annotated[int | None, typer.Option("--min-report-tokens", min=0)] = None,
    max_report_tokens: Annotated[int | None, typer.Option("--max-report-tokens", min=1)] = None,
    max_trace_tokens: Annotated[int | None, typer.Option("--max-trace-tokens", min=1)] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", help="Count tokens with this model's tokenizer (transformers)."),
    ] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Skip near-duplicate removal.")] = False,
    min_overall: Annotated[
        float | None, typer.Option("--min-overall", help="Judge: overall floor (0-10).")
    ] = None,
    min_each: Annotated[
        float | None, typer.Option("--min-each", help="Judge: floor of every criterion.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Rule processes (0: one per core).")] = 0,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N traces.")] = None,
    explain_id: Annotated[
        str | None, typer.Option("--explain", help="Show one trace's verdict from the latest filter run.")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option("--run", help="With --explain: the filter run to look in (default: the latest)."),
    ] = None,
    list_rules: Annotated[bool, typer.Option("--list-rules", help="List rules and reason codes.")] = False,
    output: OutputOption = None,
    as_json: JsonOption = False,
    ws: WsOption = default_ws(),
) -> None:
    """Filter traces: hard rules, near-duplicate removal, LLM judge; a verdict with reasons for each."""
    check_output(output)
    if list_rules:
        _print_rules(as_json)
        return
    if explain_id is not None:
        from oresearch_cli.stages.filter import explain

        _print_explain(explain(ws, explain_id, run), as_json)
        return

    from oresearch_cli.cli.progress import ConsoleProgress
    from oresearch_cli.config import load_recipe
    from oresearch_cli.filtering.config import load_filter_config
    from oresearch_cli.stages.filter import FilterOptions, run_filter

    overrides: dict[str, Any] = {
        "max_fallback_share": max_fallback_share,
        "min_tool_calls": min_tool_calls,
        "max_tool_calls": max_tool_calls,
        "min_steps": min_steps,
        "max_steps": max_steps,
        "min_sources": min_sources,
        "min_report_tokens": min_report_tokens,
        "max_report_tokens": max_report_tokens,
        "max_trace_tokens": max_trace_tokens,
        "tokenizer": tokenizer,
        "workers": workers or None,
    }
    rules = {r: False for r in _rule_list(disable)} | {r: True for r in _rule_list(enable)}
    if rules:
        overrides["rules"] = rules
    if no_dedup:
        overrides["dedup"] = False
    judge = {k: v for k, v in {"min_overall": min_overall, "min_each": min_each}.items() if v is not None}
    if judge:
        overrides["judge"] = judge
    cfg = load_filter_config(config, {k: v for k, v in overrides.items() if v is not None})
    llm_overrides = {
        k: v for k, v in {"judge.model": judge_model, "judge.base_url": judge_base_url}.items() if v
    }
    options = FilterOptions(
        config=cfg,
        field=field,
        fmt=fmt,
        judge=not no_judge,
        llm_config=str(config) if config and not no_judge and load_recipe(config).has("llm") else None,
        llm_overrides=llm_overrides,
        limit=limit,
    )
    progress = ConsoleProgress() if err.is_terminal else None
    try:
        result = asyncio.run(run_filter(ws, traces, options, progress))
    finally:
        if progress is not None:
            progress.stop()
    if output == "-":
        write_jsonl(result.records, sys.stdout)
    elif output:
        write_records(result.records, Path(output))
    funnel = result.funnel
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "funnel": funnel.to_dict(),
                "rules": {
                    r.name: {"checked": r.checked, "failed": r.failed, "codes": dict(r.codes)}
                    for r in result.rules
                },
                "judge": {
                    "model": result.judge_model,
                    "calls": result.judge_calls,
                    "cached": result.judge_cached,
                    "failed": result.judge_failed,
                },
            }
        )
        return
    console = err if output == "-" else out
    rows = [["in", funnel.n_in, ""]] + [
        [r.stage, r.left, f"-{r.dropped}" if r.dropped else ""] for r in funnel.rows
    ]
    rows.append(["accepted", funnel.accepted, f"{funnel.accepted / funnel.n_in:.0%}" if funnel.n_in else ""])
    console.print(
        table(f"filter {result.run_id} (field '{result.field}')", ["stage", "traces left", "dropped"], rows)
    )
    if funnel.authorship is not None:
        console.print(_authorship_line(funnel.authorship), highlight=False)
    if funnel.reasons:
        total = funnel.n_in - funnel.accepted
        console.print(
            table(
                f"top rejection reasons ({total} rejected; a trace may have several)",
                ["reason", "traces"],
                [[code, n] for code, n in funnel.reasons.most_common(12)],
            )
        )
    if result.judge_model:
        console.print(
            f"judge {escape(result.judge_model)}: {result.judge_calls} calls, {result.judge_cached} cached, "
            f"{result.judge_failed} failed",
            highlight=False,
        )
    console.print("see one verdict: ores filter --explain ID", highlight=False)


def _authorship_line(authorship: Authorship) -> str:
    """'pieces written by the model: 83% (166 of 200, 10 traces; 2 without a steps log)'."""
    share = authorship.model_share
    unrecorded = f"; {authorship.unrecorded} without a steps log" if authorship.unrecorded else ""
    return (
        f"pieces written by the model: {share:.0%} ({authorship.model_written} of {authorship.total}, "
        f"{authorship.traces} traces{unrecorded}); the rest are orchestrator fallbacks"
        if share is not None
        else f"pieces written by the model: none recorded{unrecorded}"
    )


def _print_rules(as_json: bool) -> None:
    from oresearch_cli.filtering.dedup import CODES as DEDUP
    from oresearch_cli.filtering.judge import CODES as JUDGE
    from oresearch_cli.filtering.rules import RULES

    if as_json:
        print_json(
            {
                "rules": {
                    n: {"doc": r.doc, "codes": r.codes, "needs_trace": r.needs_trace}
                    for n, r in RULES.items()
                },
                "dedup": DEDUP,
                "judge": JUDGE,
            }
        )
        return
    rows = [[n, escape(code), escape(meaning)] for n, r in RULES.items() for code, meaning in r.codes.items()]
    rows += [["dedup", c, escape(m)] for c, m in DEDUP.items()] + [
        ["judge", c, escape(m)] for c, m in JUDGE.items()
    ]
    out.print(
        table(
            "rules and reason codes (switch rules with --disable/--enable or `rules:` in YAML)",
            ["rule", "code", "meaning"],
            rows,
        )
    )


def _print_explain(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    color = "green" if info["verdict"] == "accepted" else "red"
    out.print(
        f"[bold]{escape(info['id'])}[/]  [{color}]{info['verdict']}[/]  (run {info['run_id']}, language {info['language']})"
    )
    if info["question"]:
        out.print(f"question: {escape(info['question'][:300])}", highlight=False)
    if info["reasons"]:
        out.print(
            table(
                "reasons", ["code", "meaning"], [[r["code"], escape(r["meaning"])] for r in info["reasons"]]
            )
        )
    if info["duplicate_of"]:
        out.print(f"duplicate of {escape(info['duplicate_of'])}")
    details = info["details"]
    rows = [
        [rule, escape(json.dumps(value, ensure_ascii=False, default=str))[:160]]
        for rule, value in details.items()
    ]
    out.print(table("measured", ["rule", "values"], rows))
    if info["judge_scores"]:
        out.print(
            table(
                f"judge scores (overall {info['judge_overall']})",
                ["criterion", "score", "reason"],
                [[c, s["score"], escape(s["reason"])] for c, s in info["judge_scores"].items()],
            )
        )
