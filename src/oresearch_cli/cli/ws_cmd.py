"""`ores ws`: look into the workspace: status, runs, one run, export, SQL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import JsonOption, WsOption, default_ws, out, print_json, table
from oresearch_cli.records import write_jsonl
from oresearch_cli.workspace import Workspace

ws_app = typer.Typer(help="Inspect and query the workspace (catalog, runs, artifacts).", no_args_is_help=True)
app.add_typer(ws_app, name="ws")


def _fmt_breakdown(breakdown: dict[str, dict[str, int]]) -> str:
    parts = []
    for column, counts in breakdown.items():
        if column == "status" and set(counts) == {"done"}:
            continue  # all done says nothing
        parts.append(f"{column}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return "; ".join(parts)


@ws_app.command("init")
def init(ws: WsOption = default_ws()) -> None:
    """Create an empty workspace (stages also create one on first use)."""
    workspace = Workspace.open(ws)
    out.print(f"workspace ready at {workspace.root}")


@ws_app.command("status")
def status(ws: WsOption = default_ws(), as_json: JsonOption = False) -> None:
    """What the workspace holds: runs by status and the latest artifact of each kind."""
    workspace = Workspace.open(ws, create=False)
    info = workspace.status()
    from oresearch_cli.tools.cache import cache_stats  # loads the tools package: only here

    cache = cache_stats(workspace)
    if as_json:
        print_json({**info.to_dict(), "cache": cache})
        return
    runs = ", ".join(f"{n} {s}" for s, n in sorted(info.runs_by_status.items())) or "none"
    out.print(f"[bold]workspace[/] {info.root}  (schema {info.schema_version})  runs: {runs}")
    rows = [[k.kind, k.n_rows, _fmt_breakdown(k.breakdown), k.latest_run, k.n_artifacts] for k in info.kinds]
    if rows:
        out.print(table(None, ["artifact", "rows", "breakdown", "latest run", "runs"], rows))
    else:
        out.print("no artifacts yet: start with `ores seed FILE`")
    kinds = ", ".join(
        f"{kind} {c['entries']:,} entries ({c['hits']:,} hits, {c['misses']:,} misses)"
        for kind, c in cache["kinds"].items()
    )
    out.print(f"tool cache: {kinds}; {cache['bytes'] / 1e6:.1f} MB", highlight=False)


@ws_app.command("runs")
def runs(
    ws: WsOption = default_ws(),
    stage: Annotated[str | None, typer.Option("--stage", help="Only runs of this stage.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Runs, newest first."""
    workspace = Workspace.open(ws, create=False)
    found = workspace.runs(stage=stage, limit=limit)
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    rows = []
    for r in found:
        items = r.n_items if r.status != "running" else workspace.live_item_count(r)
        rows.append(
            [
                r.run_id,
                r.stage,
                r.effective_status,
                items,
                r.n_failed,
                r.n_carried,
                r.config_hash,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                "" if r.seconds is None else f"{r.seconds:.1f}s",
            ]
        )
    out.print(
        table(
            None, ["run", "stage", "status", "items", "failed", "carried", "config", "started", "took"], rows
        )
    )


@ws_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """One run: its config, inputs, artifacts and item statuses."""
    workspace = Workspace.open(ws, create=False)
    run = workspace.get_run(run_id)
    artifacts = workspace.artifacts(run_id=run.run_id)
    items = workspace.item_counts(run.run_id)
    if as_json:
        print_json({**run.to_dict(), "artifacts": [a.to_dict() for a in artifacts], "items": items})
        return
    out.print(
        f"[bold]{run.run_id}[/]  stage {run.stage}  status {run.effective_status}  config {run.config_hash}"
    )
    if run.error:
        out.print(f"[red]error:[/] {run.error}")
    out.print(table("config", ["key", "value"], [[k, v] for k, v in sorted(run.config.items())]))
    out.print(f"inputs: {', '.join(run.inputs) or 'none'}")
    out.print(
        table(
            "artifacts",
            ["kind", "rows", "path", "sha256"],
            [[a.kind, a.n_rows, a.path, a.sha256[:12]] for a in artifacts],
        )
    )
    if items:
        out.print("items: " + ", ".join(f"{n} {s}" for s, n in items.items()))


@ws_app.command("export")
def export(
    what: Annotated[str, typer.Argument(help="Artifact kind (its latest) or run id.")],
    output: Annotated[
        str, typer.Option("-o", "--output", help="A .parquet or .jsonl path, or '-' for JSONL on stdout.")
    ],
    ws: WsOption = default_ws(),
) -> None:
    """Write an artifact out as Parquet or JSONL."""
    workspace = Workspace.open(ws, create=False)
    if output == "-":
        write_jsonl(workspace.read_artifact(workspace.resolve_artifact(what)), sys.stdout)
        return
    n = workspace.export(what, Path(output))
    out.print(f"wrote {n} rows to {output}")


@ws_app.command("sql")
def sql(
    query: Annotated[
        str, typer.Argument(help="A read-only SQL query; artifact kinds are views (`seeds`, `seeds_all`).")
    ],
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """Query the catalog (runs, artifacts, items) and every artifact through DuckDB."""
    workspace = Workspace.open(ws, create=False)
    columns, rows = workspace.sql(query)
    if as_json:
        print_json([dict(zip(columns, row, strict=True)) for row in rows])
        return
    out.print(table(None, columns, [list(row) for row in rows]))
