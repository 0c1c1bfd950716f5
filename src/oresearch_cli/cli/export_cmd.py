"""`ores export`: the accepted traces as a Hugging Face compatible Parquet dataset with a card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import WsOption, default_ws, out


@app.command("export")
def export(
    out_dir: Annotated[Path, typer.Argument(help="Directory for README.md and data/*.parquet.")] = Path(
        "accepted-dataset"
    ),
    run: Annotated[
        str | None, typer.Option("--run", help="Filter run to export (default: the latest).")
    ] = None,
    ignore_gate: Annotated[
        bool, typer.Option("--ignore-gate", help="Export even when the spot-check gate holds the batch.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write into a non-empty directory, overwriting its README.md and data file."
        ),
    ] = False,
    ws: WsOption = default_ws(),
) -> None:
    """Write the accepted set (filter accepted, minus human rejects) as a Parquet dataset with a card."""
    from oresearch_cli.export.hf import export_accepted

    result = export_accepted(ws, out_dir, run, ignore_gate, force)
    gate = result.gate["status"] if result.gate else "no spot check"
    out.print(
        f"wrote {result.rows} traces of {result.filtered_run} to {result.out_dir} "
        f"({result.human_rejected} rejected by a human; gate: {gate})",
        highlight=False,
    )
