"""`ores seed`: parse options, call stages.seed, print the stats."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import (
    FieldOption,
    FormatOption,
    OutputOption,
    WsOption,
    check_output,
    default_ws,
    err,
    table,
)
from oresearch_cli.records import MAX_QUESTION_CHARS, write_jsonl, write_records


@app.command()
def seed(
    source: Annotated[
        str,
        typer.Argument(
            help="Questions: a JSONL, JSON, CSV/TSV or Parquet file, or '-' for JSONL on stdin; each "
            f"question text of at most {MAX_QUESTION_CHARS:,} characters, each id a string or integer."
        ),
    ],
    field: FieldOption = None,
    id_field: Annotated[
        str | None, typer.Option("--id-field", help="Field with the question ids (default: id, if present).")
    ] = None,
    fmt: FormatOption = None,
    # Unset flags (None) take the --config `seed:` section, then ORES_SEED_<KEY>, then the default.
    near_dup: Annotated[
        float | None,
        typer.Option(
            "--near-dup",
            min=0.0,
            max=1.0,
            help="Jaccard similarity at which two questions are near-duplicates. [default: 0.85]",
        ),
    ] = None,
    no_near_dup: Annotated[bool, typer.Option("--no-near-dup", help="Drop exact duplicates only.")] = False,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="Keep a random sample of N questions.")
    ] = None,
    sample_seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed for --sample. [default: 0]")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Keep at most the first N questions.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML recipe; its `seed:` section sets near_dup_threshold, sample..."),
    ] = None,
    output: OutputOption = None,
    show_dropped: Annotated[
        bool, typer.Option("--show-dropped", help="List every dropped question and why.")
    ] = False,
    ws: WsOption = default_ws(),
) -> None:
    """Import seed questions: normalize, drop empties and duplicates, tag language, write `seeds`."""
    from oresearch_cli.stages.seed import run_seed, seed_options

    check_output(output)
    flags = {
        "near_dup_threshold": near_dup,
        "dedup_near": False if no_near_dup else None,
        "sample": sample,
        "sample_seed": sample_seed,
        "limit": limit,
    }
    options = seed_options(flags, config, field=field, id_field=id_field, fmt=fmt)
    result, artifact = run_seed(ws, source, options)
    records = [s.to_record() for s in result.seeds]
    if output == "-":
        write_jsonl(records, sys.stdout)
    elif output:
        write_records(records, Path(output))

    drops = result.drop_counts()
    rows = [["read", result.n_read]]
    rows += [[f"dropped: {reason}", count] for reason, count in sorted(drops.items())]
    if result.n_sampled_out:
        rows.append(["left out by --sample/--limit", result.n_sampled_out])
    rows.append(["kept", len(result.seeds)])
    rows += [[f"  language {lang}", count] for lang, count in result.language_counts().items()]
    err.print(table(f"seed {artifact.run_id} (field '{result.field}')", ["", "questions"], rows))
    if show_dropped and result.dropped:
        err.print(
            table(
                "dropped",
                ["where", "reason", "duplicate of", "similarity", "question"],
                [[d.origin, d.reason, d.duplicate_of, d.similarity, d.question[:80]] for d in result.dropped],
            )
        )
