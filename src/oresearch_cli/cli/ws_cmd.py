"""`ores ws`: look into the workspace: status, runs, one run, export, SQL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import JsonOption, WsOption, check_output, default_ws, out, print_json, table
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
    rows = [
        [
            k.kind,
            k.n_rows,
            "[red]unusable, see below[/]" if k.problem else _fmt_breakdown(k.breakdown),
            k.latest_run,
            k.n_artifacts,
        ]
        for k in info.kinds
    ]
    if rows:
        out.print(table(None, ["artifact", "rows", "breakdown", "latest run", "runs"], rows))
    else:
        out.print("no artifacts yet: start with `ores seed FILE`")
    from rich.markup import escape

    for k in info.kinds:
        if k.problem:
            out.print(f"[red]problem:[/] {escape(k.problem)}", highlight=False)
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
    """Write an artifact out as Parquet or JSONL (never into the workspace's own artifacts)."""
    check_output(output)
    workspace = Workspace.open(ws, create=False)
    if output == "-":
        write_jsonl(workspace.read_artifact(workspace.resolve_artifact(what)), sys.stdout)
        return
    n = workspace.export(what, Path(output))
    out.print(f"wrote {n} rows to {output}")


def _json_safe(value: object) -> object:
    """`value` with NaN and infinities as None: JSON has no such numbers (`json.dumps` would write
    `NaN`, which JSON parsers refuse)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


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
        print_json([_json_safe(dict(zip(columns, row, strict=True))) for row in rows])
        return
    out.print(table(None, columns, [list(row) for row in rows]))


@ws_app.command("merge")
def merge(
    workspaces: Annotated[
        list[Path],
        typer.Argument(help="Workspaces to fold in: one per shard (`ores synth --shard i/N --ws ...`)."),
    ],
    into: Annotated[
        Path,
        typer.Option(
            "--into", envvar="ORES_WS", help="The workspace that receives them (created if missing)."
        ),
    ] = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """Combine shard workspaces into one: runs, artifacts, call logs, caches; each item once."""
    from oresearch_cli.workspace.merge import merge_workspaces

    summary = merge_workspaces(workspaces, into)
    if as_json:
        print_json(summary.to_dict())
        return
    rows = [
        [
            s.root,
            s.runs_copied,
            s.runs_present,
            s.runs_stopped,
            s.files_copied,
            s.cache_entries,
            ", ".join(s.corpora),
        ]
        for s in summary.sources
    ]
    columns = [
        "workspace",
        "runs copied",
        "already here",
        "copied as interrupted",
        "files",
        "cache entries",
        "corpora",
    ]
    out.print(table("sources", columns, rows))
    if summary.groups:
        rows = [
            [
                g.stage,
                g.kind,
                g.config_hash,
                g.workspaces,
                g.rows_in,
                g.items,
                g.duplicates,
                g.identical,
                g.run_id or "-",
            ]
            for g in summary.groups
        ]
        columns = [
            "stage",
            "kind",
            "config",
            "workspaces",
            "rows in",
            "items",
            "duplicates",
            "identical",
            "merged run",
        ]
        out.print(table("combined", columns, rows))
    shown = summary.duplicates[:20]
    if shown:
        rows = [[d.kind, d.item_id, d.kept, d.kept_status, ", ".join(d.dropped), d.reason] for d in shown]
        out.print(
            table("duplicates resolved", ["kind", "id", "kept from", "status", "dropped from", "why"], rows)
        )
        if len(summary.duplicates) > len(shown):
            out.print(f"... and {len(summary.duplicates) - len(shown)} more (--json lists them all)")
    out.print(f"merged {len(summary.sources)} workspaces into {summary.into}", highlight=False)
