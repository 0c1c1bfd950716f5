"""`ores spotcheck`: parse options, call stages.spotcheck, print the sample and the gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import (
    JsonOption,
    WsOption,
    check_output,
    default_ws,
    err,
    out,
    print_json,
    table,
)

EXIT_HELD = 3


@app.command()
def spotcheck(
    # Unset flags (None) take the --config `spotcheck:` section, then ORES_SPOTCHECK_<KEY>, then the default.
    n: Annotated[
        int | None, typer.Option("-n", "--n", min=1, help="Traces in the sample. [default: 50]")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed of the sample. [default: 0]")
    ] = None,
    max_reject: Annotated[
        float | None,
        typer.Option(
            "--max-reject", min=0.0, max=1.0, help="The gate passes under this reject rate. [default: 0.1]"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML recipe; its `spotcheck:` section sets n, seed, max_reject."),
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Filter run to sample (default: the latest).")
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", help="Name recorded with each verdict.")
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write a review sheet: .csv, .jsonl or .html.")
    ] = None,
    import_: Annotated[
        Path | None, typer.Option("--import", help="Read verdicts from a filled-in sheet (.csv/.jsonl).")
    ] = None,
    max_lines: Annotated[int, typer.Option("--max-lines", min=5, help="Report lines shown per trace.")] = 60,
    as_json: JsonOption = False,
    ws: WsOption = default_ws(),
) -> None:
    """Review a stratified sample of accepted traces; the gate passes when few are rejected.

    Interactive on a terminal; with no terminal it never waits: it prints the gate (use --export
    and --import to review elsewhere). Exit code 3 when the gate holds the batch.
    """
    check_output(export, "--export", (".csv", ".jsonl", ".ndjson", ".html", ".htm"), stdout=False)
    from oresearch_cli.stages.spotcheck import (
        Session,
        export_verdict_sheet,
        gate,
        import_verdicts,
        open_sample,
        spotcheck_options,
    )
    from oresearch_cli.workspace import Workspace

    options = spotcheck_options(
        {"n": n, "seed": seed, "max_reject": max_reject}, config, filtered_run=run, reviewer=reviewer
    )
    workspace = Workspace.open(ws, create=False)
    sample = open_sample(workspace, options)
    err.print(
        f"sample: {len(sample.items)} of {sample.n_accepted} accepted traces of {sample.filtered_run} "
        f"(by judge band and language)",
        highlight=False,
    )
    if export is not None:
        fmt = export_verdict_sheet(workspace, sample, export)
        err.print(
            f"wrote a {fmt} review sheet to {export}; fill in human_verdict and run --import", highlight=False
        )
    if import_ is not None:
        count, result = import_verdicts(workspace, sample, import_, options)
        err.print(f"imported {count} verdicts from {import_}", highlight=False)
    elif export is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            from oresearch_cli.review.session import review

            with Session(workspace, sample, options) as session:
                given, finished = review(
                    sample.items, session.done, session.record, max_report_lines=max_lines
                )
            assert session.gate is not None  # written when the session ends
            result = session.gate
            err.print(
                f"{given} verdicts recorded" + ("" if finished else "; run `ores spotcheck` again to resume"),
                highlight=False,
            )
        else:
            err.print(
                "no terminal: not reviewing here; use --export SHEET and --import SHEET", highlight=False
            )
            result = gate(workspace, sample, options.max_reject)
    else:
        result = gate(workspace, sample, options.max_reject)
    assert result is not None
    _print_gate(result, as_json)
    if result.status == "held":
        raise typer.Exit(EXIT_HELD)


def _print_gate(result, as_json: bool) -> None:  # noqa: ANN001 - a review.gate.Gate
    if as_json:
        print_json(result.to_dict())
        return
    color = {"passed": "green", "held": "red"}.get(result.status, "yellow")
    rate = "-" if result.reject_rate is None else f"{result.reject_rate:.1%}"
    out.print(
        f"gate: [{color} bold]{result.status}[/]  reject rate {rate} (max {result.max_reject:.0%}); "
        f"{result.reviewed}/{result.sample} reviewed: {result.accepted} accepted, {result.rejected} rejected, "
        f"{result.skipped} skipped"
    )
    a = result.agreement
    rows = [
        ["decided", a.decided],
        ["human agrees with judge", "-" if a.agree is None else f"{a.agree:.0%}"],
        ["mean judge score, human accepted", a.mean_judge_accepted],
        ["mean judge score, human rejected", a.mean_judge_rejected],
        ["AUC of judge score for human verdict", a.auc],
    ]
    out.print(table("human vs judge", ["", ""], rows))
