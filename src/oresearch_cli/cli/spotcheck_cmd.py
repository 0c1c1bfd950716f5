"""`ores spotcheck`: parse options, call stages.spotcheck, print the sample and the gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import JsonOption, WsOption, default_ws, err, out, print_json, table

EXIT_HELD = 3


@app.command()
def spotcheck(
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Traces in the sample.")] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the sample.")] = 0,
    max_reject: Annotated[
        float, typer.Option("--max-reject", min=0.0, max=1.0, help="The gate passes under this reject rate.")
    ] = 0.10,
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
    from oresearch_cli.stages.spotcheck import (
        Session,
        SpotcheckOptions,
        export_verdict_sheet,
        gate,
        import_verdicts,
        open_sample,
    )
    from oresearch_cli.workspace import Workspace

    options = SpotcheckOptions(n=n, seed=seed, max_reject=max_reject, filtered_run=run, reviewer=reviewer)
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
            result = gate(workspace, sample, max_reject)
    else:
        result = gate(workspace, sample, max_reject)
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
