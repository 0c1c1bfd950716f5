"""`ores ws merge`: shard workspaces (one per machine, `--shard i/N`) combined into one.

    summary = merge_workspaces([Path("ws-1"), Path("ws-2"), Path("ws-3")], Path("ws"))

Every run of every source is copied into the target (its catalog rows: run, artifacts, logs,
item statuses; and its files under `artifacts/`), so `llm_calls_all` and `ores ws runs` answer
for all of them; a run already there (an earlier merge) is left as it is. Then, for each stage,
kind and config hash whose items come from more than one workspace, one new run of that stage
and config holds every item once (so `traces` is all of them, and a later `ores synth` with the
same config resumes from it): where workspaces disagree on an item, a done record beats a failed
one and the newer beats the older; each such duplicate is reported. The tool and judge caches
are merged (the newer entry of a key wins) and corpora the target lacks are copied.

Nothing here is a distributed system: the machines never talk; each writes its own workspace
and this folds them together afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from oresearch_cli.errors import WorkspaceError
from oresearch_cli.workspace.catalog import connect
from oresearch_cli.workspace.models import RunInfo
from oresearch_cli.workspace.records import RunStatus, Status, record_type
from oresearch_cli.workspace.run import StageSpec, iter_source
from oresearch_cli.workspace.workspace import Workspace

# Kinds made one record per item (question, trace, report...), which merge by id, and the module
# that defines each one's record class (imported only when a kind is merged).
ITEM_KINDS = {
    "seeds": "oresearch_cli.stages.seed",
    "traces": "oresearch_cli.stages.synth",
    "filtered": "oresearch_cli.stages.filter",
    "spotcheck": "oresearch_cli.stages.spotcheck",
    "reports": "oresearch_cli.stages.eval_run",
    "scores": "oresearch_cli.stages.eval_score",
}
# Catalog tables copied per run, in the order they are written.
_RUN_TABLES = ("runs", "artifacts", "run_logs", "items")
_CACHES = {"tools.sqlite": "entries", "judge.sqlite": "judge"}  # file -> table of keyed entries


@dataclass
class SourceReport:
    """What one source workspace brought."""

    root: Path
    runs_copied: int = 0
    runs_present: int = 0  # already in the target (merged before): left as they were
    runs_stopped: int = 0  # marked running by another host: copied as interrupted
    files_copied: int = 0
    cache_entries: int = 0  # tool and judge cache entries added or refreshed
    corpora: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "runs_copied": self.runs_copied,
            "runs_present": self.runs_present,
            "runs_stopped": self.runs_stopped,
            "files_copied": self.files_copied,
            "cache_entries": self.cache_entries,
            "corpora": self.corpora,
        }


@dataclass(frozen=True)
class Duplicate:
    """An item more than one workspace holds: which record was kept, and why."""

    stage: str
    kind: str
    item_id: str
    kept: str  # the workspace the kept record came from
    kept_status: str
    dropped: tuple[str, ...]  # the other workspaces holding it
    reason: str  # "done beats failed", "newer", "identical"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "kind": self.kind,
            "id": self.item_id,
            "kept": self.kept,
            "kept_status": self.kept_status,
            "dropped": list(self.dropped),
            "reason": self.reason,
        }


@dataclass
class GroupReport:
    """One stage + config hash whose items were combined."""

    stage: str
    kind: str
    config_hash: str
    workspaces: int  # how many held items of it (the target included)
    rows_in: int  # records read, all workspaces together
    items: int  # distinct ids: the merged run's rows
    duplicates: int  # ids more than one workspace held
    identical: int  # of those, ids whose records were the same everywhere
    run_id: str | None = None  # the run that holds them all; None when one workspace had them all

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "kind": self.kind,
            "config_hash": self.config_hash,
            "workspaces": self.workspaces,
            "rows_in": self.rows_in,
            "items": self.items,
            "duplicates": self.duplicates,
            "identical": self.identical,
            "run_id": self.run_id,
        }


@dataclass
class MergeSummary:
    into: Path
    sources: list[SourceReport]
    groups: list[GroupReport]
    duplicates: list[Duplicate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "into": str(self.into),
            "sources": [s.to_dict() for s in self.sources],
            "groups": [g.to_dict() for g in self.groups],
            "duplicates": [d.to_dict() for d in self.duplicates],
        }


# -- what each workspace holds -------------------------------------------------------------------


@dataclass(frozen=True)
class _Held:
    record: dict[str, Any]
    at: datetime  # when the run that wrote it (or carried it last) ran
    workspace: str


_GroupKey = tuple[str, str, str]  # stage, kind, config hash


def _held_items(ws: Workspace, name: str) -> dict[_GroupKey, dict[str, _Held]]:
    """Per item-kind group, what `ws` holds now (what a resumed run there would take over), each
    record dated by the first run that wrote it as it is: a later run that only carried it over,
    or an earlier merge, does not make it newer."""
    runs = sorted(ws.runs(), key=lambda r: r.started_at)
    groups: dict[_GroupKey, dict[str, _Held]] = {}
    for stage, kind, chash in sorted({(r.stage, r.kind, r.config_hash) for r in runs}):
        if kind not in ITEM_KINDS:
            continue
        current: dict[str, dict[str, Any]] = {}
        for source in ws.resume_sources(stage, chash):
            for record in iter_source(source):
                current[str(record["id"])] = record
        if not current:
            continue
        dated: dict[str, datetime] = {}
        for run in (r for r in runs if (r.stage, r.config_hash) == (stage, chash)):
            at = run.finished_at or run.started_at
            for record in _run_records(ws, run):
                item_id = str(record["id"])
                same = item_id in current and _comparable(record) == _comparable(current[item_id])
                if same and item_id not in dated:
                    dated[item_id] = at
        groups[(stage, kind, chash)] = {
            item_id: _Held(record, dated.get(item_id, datetime.min), name)
            for item_id, record in current.items()
        }
    return groups


def _run_records(ws: Workspace, run: RunInfo) -> list[dict[str, Any]]:
    """What a run holds: its finished artifact, or the JSONL it was writing."""
    if run.status == RunStatus.DONE:
        artifacts = ws.artifacts(run_id=run.run_id, kind=run.kind)
        for artifact in artifacts:
            ws.verify_artifact(artifact)  # a shard's changed or corrupt file stops the merge, named
        paths = [a.path for a in artifacts]
    else:
        paths = [ws.run_dir(run.stage, run.run_id) / f"{run.kind}.jsonl"]
    return [record for path in paths if path.exists() for record in iter_source(path)]


def _rank(held: _Held) -> tuple[bool, datetime]:
    """Newest done wins: a done record over a failed one, then the newer."""
    return (str(held.record.get("status") or Status.DONE) == Status.DONE, held.at)


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


# -- copying runs ----------------------------------------------------------------------------------


def _check_not_running(ws: Workspace, runs: list[RunInfo]) -> None:
    host = socket.gethostname()
    for run in runs:
        if run.effective_status == RunStatus.RUNNING and run.hostname == host:
            raise WorkspaceError(
                f"{ws.root}: run {run.run_id} is still running (pid {run.pid}); "
                "wait for it to finish or stop it, then merge again"
            )


def _copy_runs(source: Workspace, target: Workspace, report: SourceReport) -> None:
    with connect(target.catalog_path, read_only=True) as con:
        present = {row[0] for row in con.execute("SELECT run_id FROM runs").fetchall()}
    with connect(source.catalog_path, read_only=True) as con:
        tables = {name: con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in _RUN_TABLES}
    runs = tables["runs"].to_pylist()
    new = [r["run_id"] for r in runs if r["run_id"] not in present]
    report.runs_present = len(runs) - len(new)
    report.runs_copied = len(new)
    if not new:
        return
    # Files first: a run in the catalog always has its files.
    paths = {f"artifacts/{r['stage']}/{r['run_id']}" for r in runs if r["run_id"] in new}
    for name in ("artifacts", "run_logs"):
        paths |= {r["path"] for r in tables[name].to_pylist() if r["run_id"] in new}
    for rel in sorted(paths):
        report.files_copied += _copy_path(source.root / rel, target.root / rel)
    host = socket.gethostname()
    stopped = 0
    for row in runs:
        if row["run_id"] in new and row["status"] == RunStatus.RUNNING and row["hostname"] != host:
            # Its process was on another machine: here nothing runs it (a rerun takes it over).
            row["status"] = str(RunStatus.INTERRUPTED)
            row["error"] = (
                row["error"] or f"copied by `ores ws merge` from {source.root} while marked running"
            )
            stopped += 1
    report.runs_stopped = stopped
    keep = pa.array(new, pa.string())
    with connect(target.catalog_path) as con:
        con.execute("BEGIN")
        try:
            for name in _RUN_TABLES:
                table = tables[name]
                if name == "runs":
                    table = pa.Table.from_pylist(runs, schema=table.schema)
                table = table.filter(pc.is_in(table["run_id"], value_set=keep))
                con.register("incoming", table)
                con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming")
                con.unregister("incoming")
            for kind in {r["kind"] for r in tables["artifacts"].to_pylist() if r["run_id"] in new}:
                target.refresh_views(con, kind)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _copy_path(source: Path, target: Path) -> int:
    """Copy a file or folder unless the target has it; returns the files copied."""
    if not source.exists():
        return 0
    if source.is_dir():
        n = 0
        for path in source.rglob("*"):
            if path.is_file():
                n += _copy_path(path, target / path.relative_to(source))
        return n
    if target.exists():
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return 1


def _merge_caches(source: Workspace, target: Workspace) -> int:
    """Add the source's tool and judge cache entries (a key both hold keeps the newer entry) and
    its hit/miss counts; returns the entries added or refreshed."""
    added = 0
    for name, table in _CACHES.items():
        src = source.cache_dir / name
        if not src.exists():
            continue
        _open_cache(src)  # migrates an older file, so both are at this ores's version
        _open_cache(target.cache_dir / name)
        db = sqlite3.connect(str(target.cache_dir / name), timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("ATTACH DATABASE ? AS src", (f"file:{src}?mode=ro",))
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            db.execute(
                f"""INSERT INTO main.{table} SELECT * FROM src.{table} WHERE true
                    ON CONFLICT(key) DO UPDATE SET {_set_all(db, table)}
                    WHERE excluded.created_at > main.{table}.created_at"""
            )
            added += db.total_changes - before
            if name == "tools.sqlite":
                db.execute(
                    """INSERT INTO main.counters SELECT * FROM src.counters WHERE true
                       ON CONFLICT(kind) DO UPDATE SET hits = hits + excluded.hits,
                       misses = misses + excluded.misses"""
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise WorkspaceError(
                f"{src}: cannot merge this cache ({exc}); remove it from the source or rerun without it"
            ) from None
        finally:
            db.close()
    return added


def _set_all(db: sqlite3.Connection, table: str) -> str:
    columns = [row[1] for row in db.execute(f"PRAGMA main.table_info({table})") if row[1] != "key"]
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


def _open_cache(path: Path) -> None:
    if path.name == "tools.sqlite":
        from oresearch_cli.tools.cache import ToolCache

        ToolCache(path).close()
    else:
        from oresearch_cli.filtering.judge import JudgeCache

        JudgeCache(path).close()


def _copy_corpora(source: Workspace, target: Workspace, report: SourceReport) -> None:
    if not source.corpora_dir.is_dir():
        return
    for corpus in sorted(p for p in source.corpora_dir.iterdir() if p.is_dir()):
        if not (target.corpora_dir / corpus.name).exists():
            shutil.copytree(corpus, target.corpora_dir / corpus.name)
            report.corpora.append(corpus.name)


# -- the merge ---------------------------------------------------------------------------------------


def merge_workspaces(sources: Sequence[str | Path], into: str | Path) -> MergeSummary:
    """Fold the `sources` workspaces into `into` (created if missing); see the module's docstring."""
    if not sources:
        raise WorkspaceError("ores ws merge: no workspace to merge; name one or more, e.g. ws-1 ws-2")
    target_root = Path(into).resolve()
    roots: list[Path] = []
    for source in sources:
        root = Path(source).resolve()
        if root == target_root:
            raise WorkspaceError(f"{source}: is the workspace merged into; name it once, with --into")
        if root in roots:
            raise WorkspaceError(f"{source}: named twice; name each workspace once")
        roots.append(root)
    opened = [Workspace.open(root, create=False) for root in roots]
    for ws in opened:
        _check_not_running(ws, ws.runs())
    target = Workspace.open(target_root)
    _check_not_running(target, target.runs())

    names = _names([target_root, *roots])
    # What each workspace holds before anything moves: the target's own items count too.
    held = [_held_items(ws, name) for ws, name in zip([target, *opened], names, strict=True)]
    reports = [SourceReport(ws.root) for ws in opened]
    for ws, report in zip(opened, reports, strict=True):
        _copy_runs(ws, target, report)
        report.cache_entries = _merge_caches(ws, target)
        _copy_corpora(ws, target, report)
    for stage in sorted({r.stage for r in target.runs()}):
        target.register_orphan_logs(stage)  # logs of killed runs, copied unregistered

    groups: list[GroupReport] = []
    duplicates: list[Duplicate] = []
    keys = sorted({key for per_ws in held for key in per_ws})
    for key in keys:
        group, dups = _combine(target, key, [per_ws.get(key, {}) for per_ws in held])
        groups.append(group)
        duplicates.extend(dups)
    return MergeSummary(target.root, reports, groups, duplicates)


def _names(roots: list[Path]) -> list[str]:
    """Short names for the report: the folder names, or whole paths where those clash."""
    short = [r.name for r in roots]
    return short if len(set(short)) == len(short) else [str(r) for r in roots]


def _combine(
    target: Workspace, key: _GroupKey, held: list[dict[str, _Held]]
) -> tuple[GroupReport, list[Duplicate]]:
    stage, kind, chash = key
    contributing = [h for h in held if h]
    by_id: dict[str, list[_Held]] = {}
    for per_ws in contributing:
        for item_id, item in per_ws.items():
            by_id.setdefault(item_id, []).append(item)
    duplicates: list[Duplicate] = []
    winners: dict[str, _Held] = {}
    n_identical = 0
    for item_id, copies in by_id.items():
        best = max(reversed(copies), key=_rank)  # max keeps the first best: a tie goes to the later
        winners[item_id] = best
        if len(copies) < 2:
            continue
        same = all(_comparable(c.record) == _comparable(best.record) for c in copies)
        n_identical += same
        others = [c for c in copies if c is not best]
        if same:
            reason = "identical"
        elif any(_rank(c)[0] != _rank(best)[0] for c in others):
            reason = "done beats failed"
        else:
            reason = "newer"
        duplicates.append(
            Duplicate(
                stage,
                kind,
                item_id,
                best.workspace,
                str(best.record.get("status") or Status.DONE),
                tuple(c.workspace for c in others),
                reason,
            )
        )
    group = GroupReport(
        stage,
        kind,
        chash,
        workspaces=len(contributing),
        rows_in=sum(len(h) for h in contributing),
        items=len(winners),
        duplicates=len(duplicates),
        identical=n_identical,
    )
    if len(contributing) < 2:
        return group, []  # one workspace holds them all: its own runs already say so
    group.run_id = _write_merged_run(target, key, list(winners.values()))
    return group, [d for d in duplicates if d.reason != "identical"]


def _write_merged_run(target: Workspace, key: _GroupKey, items: list[_Held]) -> str:
    """One new run of the group's stage and config holding every item once."""
    stage, kind, chash = key
    runs = [r for r in target.runs(stage=stage) if r.config_hash == chash]
    config = runs[0].config  # every run of the group has this config: its hash says so
    with contextlib.suppress(ImportError):  # the record class gives the schema; else the rows do
        importlib.import_module(ITEM_KINDS[kind])
    spec = StageSpec(stage, kind, record_type(kind))
    inputs = sorted({item.workspace for item in items})
    with target.start_run(spec, config, inputs=[f"merge:{name}" for name in inputs]) as run:
        if run.config_hash != chash:  # the config did not survive its JSON round trip
            raise WorkspaceError(
                f"{target.root}: the {stage} runs of config {chash} cannot be combined (their "
                "stored config hashes differently); merge their workspaces' artifacts by hand"
            )
        for item in sorted(items, key=lambda h: str(h.record["id"])):
            run.append(item.record)
    return run.run_id
