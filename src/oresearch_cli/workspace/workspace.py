"""The workspace: a directory holding the catalog, each run's artifacts, the tool cache and models."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from oresearch_cli.errors import InputError, WorkspaceError
from oresearch_cli.files import sha256_file
from oresearch_cli.records import write_records
from oresearch_cli.workspace.catalog import (
    SCHEMA_VERSION,
    check_schema_readonly,
    connect,
    ensure_schema,
    lock_down,
)
from oresearch_cli.workspace.models import ArtifactInfo, KindStatus, RunInfo, WorkspaceStatus, config_hash
from oresearch_cli.workspace.progress import Progress
from oresearch_cli.workspace.records import RunStatus, Status
from oresearch_cli.workspace.run import RunContext, StageSpec, iter_source, register_log

log = logging.getLogger(__name__)

CATALOG_NAME = "ores.duckdb"
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Catalog tables; artifact kinds may not shadow them as views.
_RESERVED = {"meta", "runs", "artifacts", "items", "run_logs", "leases"}
# Columns worth counting by value in `ws status` when an artifact has them.
BREAKDOWN_COLUMNS = ("language", "status", "verdict")
# The folders whose files only stages write: `ws export` refuses to write into them.
_OWNED_DIRS = ("artifacts", "models", "cache", "corpora")
# Statements `ws sql` runs (SHOW, DESCRIBE and SUMMARIZE parse as SELECT); anything else could
# write (COPY, ATTACH, INSTALL, SET...).
_READING_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# The command that makes a stage's artifacts, where it is not `ores <stage>`.
_STAGE_COMMANDS = {"eval": "eval run", "score": "eval score", "serve": "serve --agent"}
# Files whose checksum matched, keyed by (path, size, mtime_ns): each artifact is hashed once per
# process (a stage reads its input through require_latest and read_artifact). A change that keeps
# both size and mtime is caught by the next process.
_VERIFIED: dict[tuple[str, int, int], str] = {}


class Workspace:
    """Open with `Workspace.open(path)`. Every catalog access is a short connection (see catalog.py)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.catalog_path = self.root / CATALOG_NAME
        self.artifacts_dir = self.root / "artifacts"
        self.cache_dir = self.root / "cache"
        self.models_dir = self.root / "models"
        self.corpora_dir = self.root / "corpora"

    def run_dir(self, stage: str, run_id: str) -> Path:
        """Where run `run_id` of `stage` keeps its files (its JSONL, call log, side files)."""
        return self.artifacts_dir / stage / run_id

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, *, create: bool = True) -> Workspace:
        """Open the workspace at `root`; with `create`, make it (and its catalog) if missing."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise WorkspaceError(
                f"{root}: is a file, not a workspace directory; pass --ws with a directory path"
            )
        ws = cls(root)
        if not ws.catalog_path.exists():
            if not create:
                raise WorkspaceError(
                    f"{root}: no ores workspace here; create one with `ores ws init --ws {root}` or run `ores seed`"
                )
            for directory in (ws.root, ws.artifacts_dir, ws.cache_dir, ws.models_dir, ws.corpora_dir):
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise WorkspaceError(
                        f"{directory}: cannot create the workspace ({exc.strerror}); pick another --ws"
                    ) from None
            ensure_schema(ws.catalog_path)
        elif create:
            ensure_schema(ws.catalog_path)
        elif check_schema_readonly(ws.catalog_path) < SCHEMA_VERSION:
            ensure_schema(ws.catalog_path)  # a workspace of an older ores: migrate it once
        return ws

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.root))

    def _absolute(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        spec: StageSpec,
        config: Mapping[str, Any],
        inputs: list[str] | tuple[str, ...] = (),
        *,
        resume: bool = False,
        progress: Progress | None = None,
    ) -> RunContext:
        """Register a new run of `spec`'s stage. With `resume`, items finished by earlier runs of
        the same stage and config hash are handed over in `run.prior` and carried into this run's
        artifact. Logs of earlier runs of the stage that were killed before registering them are
        registered first."""
        kind = spec.kind
        if not _KIND_RE.match(kind) or kind in _RESERVED:
            raise ValueError(f"artifact kind {kind!r} must be a lowercase identifier, not one of {_RESERVED}")
        self.register_orphan_logs(spec.name)
        chash = config_hash(dict(config))
        run_id = f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        prior_sources = self.resume_sources(spec.name, chash) if resume else []
        prior: dict[str, str] = {}
        for source in prior_sources:
            for record in iter_source(source):
                prior[str(record["id"])] = str(Status(record.get("status") or Status.DONE))
        with connect(self.catalog_path) as con:
            con.execute(
                """INSERT INTO runs (run_id, stage, kind, config_json, config_hash, inputs_json, status,
                   pid, hostname, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    run_id,
                    spec.name,
                    kind,
                    json.dumps(config, sort_keys=True, ensure_ascii=False, default=str),
                    chash,
                    json.dumps(list(inputs), ensure_ascii=False),
                    str(RunStatus.RUNNING),
                    os.getpid(),
                    socket.gethostname(),
                    datetime.now(),
                ],
            )
        return RunContext(self, run_id, spec, config, chash, prior_sources, prior, progress, resume=resume)

    def register_orphan_logs(self, stage: str) -> list[str]:
        """Register the logs (LLM calls...) of earlier `stage` runs that never registered theirs:
        a `kill -9` stops a run before it can, and what it paid for must stay answerable in
        `<kind>_all`. Runs still going are left to register their own. Returns the run ids done.
        A log that cannot be registered is logged and skipped: bookkeeping of an earlier run
        must not stop this one."""
        with connect(self.catalog_path, read_only=True) as con:
            rows = con.execute(
                """SELECT l.run_id, l.kind, l.path FROM run_logs l JOIN runs r USING (run_id)
                   WHERE r.stage = ? AND NOT EXISTS (
                       SELECT 1 FROM artifacts a WHERE a.run_id = l.run_id AND a.kind = l.kind)""",
                [stage],
            ).fetchall()
        if not rows:
            return []
        running = {r.run_id for r in self.runs(stage=stage) if r.effective_status == RunStatus.RUNNING}
        done = []
        for run_id, kind, stored in rows:
            path = self._absolute(stored)
            if run_id in running or not path.exists():
                continue
            try:
                register_log(self, run_id, kind, path)
            except Exception:  # noqa: BLE001
                log.exception("could not register the %s log %s of an earlier run", kind, path)
                continue
            done.append(run_id)
        return done

    def resume_sources(self, stage: str, chash: str) -> list[Path]:
        """The newest finished artifact of this stage+config, then the JSONL of every unfinished run
        since (oldest first), so that later records override earlier ones."""
        runs = [r for r in self.runs(stage=stage) if r.config_hash == chash]
        runs.sort(key=lambda r: r.started_at)
        sources: list[Path] = []
        for run in runs:
            if run.status == RunStatus.DONE:
                # Only the stage's own kind: a run may also register others (synth's `llm_calls`).
                artifacts = self.artifacts(run_id=run.run_id, kind=run.kind)
                sources = [a.path for a in artifacts if self._usable(a)]
            else:
                jsonl = self.run_dir(stage, run.run_id) / f"{run.kind}.jsonl"
                if jsonl.exists():
                    sources.append(jsonl)
        return sources

    def runs(self, stage: str | None = None, limit: int | None = None) -> list[RunInfo]:
        query = "SELECT * FROM runs"
        params: list[Any] = []
        if stage:
            query += " WHERE stage = ?"
            params.append(stage)
        query += " ORDER BY started_at DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        with connect(self.catalog_path, read_only=True) as con:
            cursor = con.execute(query, params)
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        return [RunInfo.from_row(dict(zip(columns, row, strict=True))) for row in rows]

    def get_run(self, run_id: str) -> RunInfo:
        """A run by id or unique id prefix."""
        matches = [r for r in self.runs() if r.run_id == run_id or r.run_id.startswith(run_id)]
        exact = [r for r in matches if r.run_id == run_id]
        if exact:
            return exact[0]
        if not matches:
            raise WorkspaceError(f"{self.root}: no run {run_id!r}; list runs with `ores ws runs`")
        if len(matches) > 1:
            raise WorkspaceError(f"run id prefix {run_id!r} matches {len(matches)} runs; give more of the id")
        return matches[0]

    def live_item_count(self, run: RunInfo) -> int:
        """Items a still-running (or crashed) run has written so far, read from its JSONL."""
        jsonl = self.run_dir(run.stage, run.run_id) / f"{run.kind}.jsonl"
        if not jsonl.exists():
            return run.n_items
        with jsonl.open("rb") as fh:
            return sum(1 for line in fh if line.endswith(b"\n"))

    def item_counts(self, run_id: str) -> dict[str, int]:
        with connect(self.catalog_path, read_only=True) as con:
            rows = con.execute(
                "SELECT status, count(*) FROM items WHERE run_id = ? GROUP BY status ORDER BY status",
                [run_id],
            ).fetchall()
        return {status: count for status, count in rows}

    # -- artifacts -----------------------------------------------------------------------------

    def artifacts(self, run_id: str | None = None, kind: str | None = None) -> list[ArtifactInfo]:
        query, params = "SELECT * FROM artifacts WHERE 1=1", []
        if run_id:
            query += " AND run_id = ?"
            params.append(run_id)
        if kind:
            query += " AND kind = ?"
            params.append(kind)
        query += " ORDER BY created_at DESC"
        with connect(self.catalog_path, read_only=True) as con:
            rows = con.execute(query, params).fetchall()
        return [
            ArtifactInfo(
                run_id=r[0],
                kind=r[1],
                path=self._absolute(r[2]),
                format=r[3],
                n_rows=r[4],
                sha256=r[5],
                created_at=r[6],
            )
            for r in rows
        ]

    def latest_artifact(self, kind: str) -> ArtifactInfo | None:
        found = self.artifacts(kind=kind)
        return found[0] if found else None

    def require_latest(self, kind: str, producer: str) -> ArtifactInfo:
        """The latest artifact of `kind`, or an error that says which command makes one."""
        artifact = self.latest_artifact(kind)
        if artifact is None:
            raise WorkspaceError(
                f"{self.root}: no '{kind}' artifact yet; run `ores {producer}` first or pass an input file"
            )
        self.verify_artifact(artifact)
        return artifact

    def resolve_artifact(self, kind_or_run: str) -> ArtifactInfo:
        """An artifact named by kind (its latest) or by run id."""
        artifact = self.latest_artifact(kind_or_run) if _KIND_RE.match(kind_or_run) else None
        if artifact is not None:
            return artifact
        try:
            run = self.get_run(kind_or_run)
        except WorkspaceError:
            kinds = sorted({a.kind for a in self.artifacts()})
            raise WorkspaceError(
                f"{self.root}: no artifact kind or run {kind_or_run!r}; kinds here: {', '.join(kinds) or 'none'}"
            ) from None
        # The run's own output, not its newest artifact: synth and a judged filter also register
        # an `llm_calls` log after it (name that one by kind: `ores ws export llm_calls`).
        artifacts = self.artifacts(run_id=run.run_id, kind=run.kind) or self.artifacts(run_id=run.run_id)
        if not artifacts:
            raise WorkspaceError(f"run {run.run_id} has no finished artifact (status {run.effective_status})")
        return artifacts[0]

    def _recovery(self, artifact: ArtifactInfo) -> str:
        """How to get a good copy of `artifact` back: rerun the stage that made it."""
        with connect(self.catalog_path, read_only=True) as con:
            row = con.execute("SELECT stage FROM runs WHERE run_id = ?", [artifact.run_id]).fetchone()
        if row is None:
            return f"rerun the stage that made run {artifact.run_id}"
        command = _STAGE_COMMANDS.get(row[0], row[0])
        return f"rerun `ores {command}` to make it again (run {artifact.run_id} made it)"

    def verify_artifact(self, artifact: ArtifactInfo) -> None:
        """Check that the artifact's file is there and is what its run wrote: the sha256 stored in
        the catalog. Raises a WorkspaceError that names the file and the stage to rerun."""
        path = artifact.path
        try:
            stat = path.stat()
        except OSError:
            raise WorkspaceError(
                f"{path}: the {artifact.kind} artifact file is missing; {self._recovery(artifact)}"
            ) from None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if _VERIFIED.get(key) == artifact.sha256:
            return
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise WorkspaceError(
                f"{path}: cannot read the {artifact.kind} artifact ({exc.strerror}); check its permissions"
            ) from None
        if actual != artifact.sha256:
            damage = "was changed after its run wrote it"
            if artifact.format == "parquet":
                problem = _parquet_problem(path)
                if problem:
                    damage = f"is corrupt ({problem})"
            raise WorkspaceError(
                f"{path}: the {artifact.kind} artifact {damage} (sha256 {actual[:12]}, the catalog has "
                f"{artifact.sha256[:12]}); {self._recovery(artifact)}"
            )
        _VERIFIED[key] = actual

    def _usable(self, artifact: ArtifactInfo) -> bool:
        """Whether a finished artifact can be resumed from; a changed one is left out (with a
        warning) so that the rerun the error messages advise makes its items again."""
        if not artifact.path.exists():
            return False
        try:
            self.verify_artifact(artifact)
        except WorkspaceError as exc:
            log.warning("not resuming from it: %s", exc)
            return False
        return True

    def read_artifact(self, artifact: ArtifactInfo) -> list[dict[str, Any]]:
        """The artifact's rows, after checking it is the file its run wrote."""
        self.verify_artifact(artifact)
        try:
            return list(iter_source(artifact.path))
        except (pa.ArrowException, OSError) as exc:
            raise WorkspaceError(
                f"{artifact.path}: cannot read the {artifact.kind} artifact "
                f"({_first_line(exc)}); "
                f"{self._recovery(artifact)}"
            ) from None

    def _refuse_owned(self, out: Path) -> None:
        """Refuse an export path inside the folders (and the catalog) that only stages write."""
        target = out.resolve()
        if not target.is_relative_to(self.root) or target == self.root:
            return
        first = target.relative_to(self.root).parts[0]
        if first in _OWNED_DIRS or first.startswith(CATALOG_NAME):
            raise InputError(
                f"{out}: is inside the workspace's {first}, which only ores stages write; "
                "export to a path outside the workspace's artifacts, models, cache, corpora and catalog"
            )

    def export(self, kind_or_run: str, out: Path) -> int:
        """Write an artifact to `out` (.parquet, or JSONL and the other record formats); never
        into the workspace's own files."""
        self._refuse_owned(out)
        artifact = self.resolve_artifact(kind_or_run)
        if out.suffix == ".parquet":
            self.verify_artifact(artifact)
            table = pq.read_table(artifact.path)
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out)
            return table.num_rows
        records = self.read_artifact(artifact)
        write_records(records, out)
        return len(records)

    # -- views and queries ---------------------------------------------------------------------

    def refresh_views(self, con: duckdb.DuckDBPyConnection, kind: str) -> None:
        """`<kind>` is its latest artifact, `<kind>_all` every one with a run_id column.
        Paths stay relative to the workspace so the catalog survives moving the directory."""
        rows = con.execute(
            "SELECT run_id, path FROM artifacts WHERE kind = ? ORDER BY created_at DESC", [kind]
        ).fetchall()
        if not rows:
            return
        latest = rows[0][1].replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW \"{kind}\" AS SELECT * FROM read_parquet('{latest}')")
        parts = [
            f"SELECT '{run_id}' AS run_id, * FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}')"
            for run_id, path in rows
        ]
        con.execute(f'CREATE OR REPLACE VIEW "{kind}_all" AS ' + " UNION ALL BY NAME ".join(parts))

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a read-only query over the catalog and the artifact views.

        Read-only three ways: the catalog is opened read-only; the connection can touch no file
        but the catalog and the registered artifacts, install or load no extension, and its
        settings are locked (`catalog.lock_down`); and only reading statements run, since DuckDB
        would let a COPY overwrite an artifact it may read."""
        if not query.strip():
            raise InputError('ws sql: the query is empty; pass one, e.g. `ores ws sql "show tables"`')
        with connect(self.catalog_path, read_only=True) as con:
            # Views name files relative to the workspace (found through `file_search_path`);
            # DuckDB checks both the name as written and the file it resolves to.
            stored = [p for (p,) in con.execute("SELECT DISTINCT path FROM artifacts").fetchall()]
            lock_down(con, sorted({*stored, *(str(self._absolute(p)) for p in stored)}))
            try:
                statements = con.extract_statements(query)
            except duckdb.Error as exc:
                raise WorkspaceError(f"query failed: {_first_line(exc)}; check the SQL syntax") from None
            if not statements:
                raise InputError(
                    'ws sql: the query has no statement; pass one, e.g. `ores ws sql "show tables"`'
                )
            for statement in statements:
                if statement.type not in _READING_STATEMENTS:
                    kind = str(statement.type).rsplit(".", 1)[-1]
                    raise WorkspaceError(
                        f"query failed: {kind} statements are refused, `ores ws sql` only reads; use "
                        "SELECT, SHOW, DESCRIBE, SUMMARIZE or EXPLAIN, and `ores ws export KIND -o FILE` "
                        "to write an artifact out"
                    )
            try:
                cursor = con.execute(query)
                if cursor is None or cursor.description is None:
                    return [], []
                columns = [d[0] for d in cursor.description]
                return columns, cursor.fetchall()
            except duckdb.PermissionException as exc:
                raise WorkspaceError(
                    f"query failed: {_first_line(exc)}; `ores ws sql` reads only the catalog and this "
                    "workspace's artifacts (query other files with duckdb itself)"
                ) from None
            except duckdb.Error as exc:
                raise WorkspaceError(
                    f'query failed: {_first_line(exc)}; list tables and views with `ores ws sql "show tables"`'
                ) from None

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> WorkspaceStatus:
        runs = self.runs()
        by_status: dict[str, int] = {}
        for run in runs:
            by_status[run.effective_status] = by_status.get(run.effective_status, 0) + 1
        artifacts = self.artifacts()
        kinds: list[KindStatus] = []
        for kind in sorted({a.kind for a in artifacts}):
            of_kind = [a for a in artifacts if a.kind == kind]
            latest = of_kind[0]
            # Only the latest of each kind is checked (hashed): it is what stages read by default.
            problem: str | None = None
            breakdown: dict[str, dict[str, int]] = {}
            try:
                self.verify_artifact(latest)
                breakdown = _breakdown(latest.path) if latest.format == "parquet" else {}
            except WorkspaceError as exc:
                problem = str(exc)
            except (pa.ArrowException, OSError) as exc:
                problem = (
                    f"{latest.path}: cannot read the {kind} artifact ({_first_line(exc)}); "
                    f"{self._recovery(latest)}"
                )
            kinds.append(
                KindStatus(
                    kind=kind,
                    latest_run=latest.run_id,
                    n_rows=latest.n_rows,
                    n_artifacts=len(of_kind),
                    breakdown=breakdown,
                    problem=problem,
                )
            )
        return WorkspaceStatus(
            root=self.root, schema_version=SCHEMA_VERSION, runs_by_status=by_status, kinds=kinds
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parquet_problem(path: Path) -> str | None:
    """Why `path` is no readable Parquet file (its first line), or None when its footer reads."""
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        return _first_line(exc)
    return None


def _breakdown(path: Path) -> dict[str, dict[str, int]]:
    if not path.exists():
        return {}
    names = set(pq.read_schema(path).names)
    columns = [c for c in BREAKDOWN_COLUMNS if c in names]
    if not columns:
        return {}
    table = pq.read_table(path, columns=columns)
    result: dict[str, dict[str, int]] = {}
    for column in columns:
        counts = table.column(column).value_counts().to_pylist()
        result[column] = {
            str(c["values"]): int(c["counts"]) for c in sorted(counts, key=lambda c: -c["counts"])
        }
    return result
