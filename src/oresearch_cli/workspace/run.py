"""The run context: what a stage gets from the workspace for one run, and the only way it writes.

    with ws.start_run(SYNTH, config, inputs=[name], resume=True, progress=bar) as run:
        todo = [s for s in seeds if not run.is_done(s.id)]
        calls = CallLog(run.open_log(CALLS_KIND), run.run_id)   # registered when the run ends
        run.progress.start("synth", len(todo))
        for record in ...:
            run.append(record)                                 # one flushed JSONL line
            run.progress.advance(item=record.id)
    # leaving the block: finished (Parquet + catalog), or marked failed/interrupted on an exception

Items go to `artifacts/<stage>/<run_id>/<kind>.jsonl`, flushed per item, so a killed run loses
at most the items in flight; `finish` writes one Parquet with the kind's record schema. A rerun
with the same config hash takes over what earlier runs finished (`prior`), so the stage can skip
those items, and its artifact holds every item exactly once: the newest record per id wins.

Logs a run writes beside its items (`open_log`: LLM call logs; rollouts and scores next) are
listed in the catalog when opened and registered as artifacts of their own kind when the run
ends, however it ends; a run killed before it could has them registered by the next run of its
stage (`Workspace.start_run`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from oresearch_cli.files import iter_jsonl_tolerant, sha256_file
from oresearch_cli.records import dumps
from oresearch_cli.workspace.catalog import connect
from oresearch_cli.workspace.leases import DEFAULT_TTL_S, LeaseBook, scope_of, utcnow
from oresearch_cli.workspace.models import ArtifactInfo
from oresearch_cli.workspace.progress import NoProgress, Progress
from oresearch_cli.workspace.records import ArtifactRecord, RunStatus, Status, record_type, to_table

if TYPE_CHECKING:
    from oresearch_cli.workspace.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """What the workspace must know of a stage: its name and the record class of what it makes
    (whose `KIND` names the artifact). A record of None infers the schema from the rows; it is
    for tools and tests, every stage of ores names its record class."""

    name: str
    kind: str
    record: type[ArtifactRecord] | None = None

    @classmethod
    def of(cls, name: str, record: type[ArtifactRecord]) -> StageSpec:
        return cls(name, record.KIND, record)


def iter_source(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an artifact file: a finished Parquet, or a run's JSONL (tolerating a torn line)."""
    if path.suffix == ".parquet":
        yield from pq.read_table(path).to_pylist()
    else:
        yield from iter_jsonl_tolerant(path, key="id")


def register_log(ws: Workspace, run_id: str, kind: str, jsonl: Path) -> ArtifactInfo | None:
    """Turn a run's log of `kind` into its Parquet artifact (replacing one registered before);
    None when the log was never written."""
    if not jsonl.exists():
        return None
    table = to_table(iter_jsonl_tolerant(jsonl), record_type(kind))
    out = jsonl.with_suffix(".parquet")
    _write_parquet(table, out)
    artifact = ArtifactInfo(run_id, kind, out, "parquet", table.num_rows, sha256_file(out), datetime.now())
    with connect(ws.catalog_path) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM artifacts WHERE run_id = ? AND kind = ?", [run_id, kind])
        _insert_artifact(con, ws, artifact)
        ws.refresh_views(con, kind)
        con.execute("COMMIT")
    return artifact


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _insert_artifact(con: Any, ws: Workspace, artifact: ArtifactInfo) -> None:
    con.execute(
        "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            artifact.run_id,
            artifact.kind,
            ws.relative(artifact.path),
            artifact.format,
            artifact.n_rows,
            artifact.sha256,
            artifact.created_at,
        ],
    )


class RunContext:
    """One run of a stage. Use as a context manager: leaving it normally finishes the run, an
    exception marks it failed (Ctrl-C: interrupted), keeping its JSONL for the next rerun."""

    def __init__(
        self,
        ws: Workspace,
        run_id: str,
        spec: StageSpec,
        config: Mapping[str, Any],
        config_hash: str,
        prior_sources: list[Path],
        prior: dict[str, str],
        progress: Progress | None = None,
        *,
        resume: bool = False,
    ) -> None:
        self.ws = ws
        self.run_id = run_id
        self.spec = spec
        self.stage = spec.name
        self.kind = spec.kind
        self.config = dict(config)
        self.config_hash = config_hash
        self.progress: Progress = progress if progress is not None else NoProgress()
        self.dir = ws.run_dir(self.stage, run_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.dir / f"{self.kind}.jsonl"
        # id -> status of items earlier runs with the same config already produced.
        self.prior: dict[str, str] = prior
        self._prior_sources = prior_sources
        # A resumed run looks again when it finishes: a sibling process on the same stage and
        # config may have written (or finished) items meanwhile, and this artifact must hold them.
        self.resume = resume
        self.started_at = utcnow()  # UTC, as leases compare times
        self._logs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._fh = self.jsonl_path.open("a", encoding="utf-8")
        self.n_appended = 0
        self.closed = False
        self.artifact: ArtifactInfo | None = None  # set by finish()

    # -- writing -------------------------------------------------------------------------------

    def append(self, record: ArtifactRecord | Mapping[str, Any]) -> None:
        """Write one finished item: a record of the stage's kind (a mapping only for a stage
        without a record class). It needs an `id`; `status` defaults to done."""
        row = record.to_row() if isinstance(record, ArtifactRecord) else dict(record)
        if "id" not in row:
            raise ValueError("a run item needs an 'id'")
        row = {"id": str(row["id"]), **{k: v for k, v in row.items() if k != "id"}}
        row["status"] = str(Status(row.get("status") or Status.DONE))
        line = dumps(row) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            self.n_appended += 1

    def is_done(self, item_id: str, retry_failed: bool = False) -> bool:
        """Whether an earlier run already settled this item (a failed one counts unless retried)."""
        status = self.prior.get(str(item_id))
        if status is None:
            return False
        return status == Status.DONE or not retry_failed

    def open_log(self, kind: str) -> Path:
        """The path of this run's log of `kind` (a JSONL the caller appends to), listed in the
        catalog now and registered as a `kind` artifact when the run ends."""
        path = self.dir / f"{kind}.jsonl"
        if kind not in self._logs:
            with connect(self.ws.catalog_path) as con:
                con.execute(
                    "INSERT INTO run_logs VALUES (?, ?, ?)", [self.run_id, kind, self.ws.relative(path)]
                )
            self._logs[kind] = path
        return path

    def leases(self, ttl_s: float = DEFAULT_TTL_S) -> LeaseBook:
        """This run's item leases, shared with every run of its stage and config hash (see
        `workspace/leases.py`): claim an item before working on it, settle it once written."""
        return LeaseBook(
            self.ws.catalog_path,
            scope_of(self.stage, self.config_hash),
            self.run_id,
            ttl_s=ttl_s,
            since=self.started_at,
        )

    def add_artifact(self, kind: str, path: Path, n_rows: int, format: str = "parquet") -> ArtifactInfo:
        """Register a finished file of this run (a checkpoint, a score table) as a `kind` artifact."""
        artifact = ArtifactInfo(self.run_id, kind, path, format, n_rows, sha256_file(path), datetime.now())
        with connect(self.ws.catalog_path) as con:
            con.execute("BEGIN")
            _insert_artifact(con, self.ws, artifact)
            if format == "parquet":
                self.ws.refresh_views(con, kind)
            con.execute("COMMIT")
        return artifact

    # -- ending ----------------------------------------------------------------------------------

    def _current_sources(self) -> list[Path]:
        """What earlier and sibling runs of this stage and config hold now (not this run's JSONL).
        A sibling that finishes meanwhile swaps its JSONL for its Parquet: look again then."""
        for _ in range(5):
            sources = [
                p for p in self.ws.resume_sources(self.stage, self.config_hash) if p != self.jsonl_path
            ]
            if all(p.exists() for p in sources):
                return sources
        return [p for p in sources if p.exists()]

    def _merged_records(self) -> tuple[list[dict[str, Any]], int]:
        merged: dict[str, dict[str, Any]] = {}
        from_prior: set[str] = set()
        sources = self._current_sources() if self.resume else self._prior_sources
        for source in sources:
            for record in iter_source(source):
                merged[str(record["id"])] = record
                from_prior.add(str(record["id"]))
        for record in iter_jsonl_tolerant(self.jsonl_path, key="id"):
            merged[record["id"]] = record
            from_prior.discard(record["id"])
        return list(merged.values()), len(from_prior)

    def finish(self) -> ArtifactInfo:
        """Write the Parquet artifact, register it, the item statuses and the run's logs, and
        mark the run done."""
        self._close_file()
        records, n_carried = self._merged_records()
        table = to_table(records, self.spec.record)
        path = self.dir / f"{self.kind}.parquet"
        _write_parquet(table, path)
        statuses = [str(Status(r.get("status") or Status.DONE)) for r in records]
        items = pa.table(
            {
                "run_id": [self.run_id] * len(records),
                "item_id": [str(r["id"]) for r in records],
                "status": statuses,
                "error": [None if r.get("error") is None else str(r.get("error")) for r in records],
            },
            schema=pa.schema(
                [
                    ("run_id", pa.string()),
                    ("item_id", pa.string()),
                    ("status", pa.string()),
                    ("error", pa.string()),
                ]
            ),
        )
        artifact = ArtifactInfo(
            self.run_id, self.kind, path, "parquet", table.num_rows, sha256_file(path), datetime.now()
        )
        n_failed = sum(1 for s in statuses if s == Status.FAILED)
        with connect(self.ws.catalog_path) as con:
            con.execute("BEGIN")
            _insert_artifact(con, self.ws, artifact)
            con.register("new_items", items)
            con.execute("INSERT INTO items SELECT * FROM new_items")
            con.unregister("new_items")
            con.execute(
                """UPDATE runs SET status = ?, finished_at = ?, n_items = ?, n_done = ?, n_failed = ?,
                   n_carried = ? WHERE run_id = ?""",
                [
                    str(RunStatus.DONE),
                    datetime.now(),
                    len(records),
                    len(records) - n_failed,
                    n_failed,
                    n_carried,
                    self.run_id,
                ],
            )
            self.ws.refresh_views(con, self.kind)
            con.execute("COMMIT")
        # The Parquet now holds everything the JSONL did.
        self.jsonl_path.unlink(missing_ok=True)
        self.artifact = artifact
        self._end()
        return artifact

    def abort(self, status: RunStatus, error: str | None) -> None:
        """Mark the run failed or interrupted; its JSONL stays for a rerun to resume from, and
        its logs are registered (what a failed run paid for stays answerable)."""
        self._close_file()
        with connect(self.ws.catalog_path) as con:
            con.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ?, n_items = ? WHERE run_id = ?",
                [str(status), error, datetime.now(), self.n_appended, self.run_id],
            )
        self._end()

    def _end(self) -> None:
        """What every ending shares: the run's progress stops, its logs are registered."""
        self.closed = True
        self.progress.stop()
        self._register_logs()
        if self.resume:
            # A sibling that died while this run went on (kill -9) left its logs unregistered.
            try:
                self.ws.register_orphan_logs(self.stage)
            except Exception:  # noqa: BLE001 - bookkeeping of another run must not fail this one
                log.exception("could not register the logs of an earlier %s run", self.stage)

    def _register_logs(self) -> None:
        for kind, path in self._logs.items():
            try:
                register_log(self.ws, self.run_id, kind, path)
            except Exception:  # noqa: BLE001 - a log is bookkeeping; the run's items matter more
                log.exception("could not register the %s log %s", kind, path)

    def _close_file(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt | asyncio.CancelledError):
            self.abort(RunStatus.INTERRUPTED, "stopped by the user")
        else:
            self.abort(RunStatus.FAILED, f"{exc_type.__name__}: {exc}")
