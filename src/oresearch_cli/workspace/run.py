"""A stage run: items appended to JSONL as they finish, turned into one Parquet artifact at the end.

The JSONL is flushed per item, so a killed run loses at most the items in flight. A rerun with
the same config hash takes over what earlier runs finished (`prior`), so the stage can skip those
items, and its final artifact holds every item exactly once: the newest record per id wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from oresearch_cli.workspace.catalog import connect
from oresearch_cli.workspace.models import ArtifactInfo

if TYPE_CHECKING:
    from oresearch_cli.workspace.workspace import Workspace

ITEM_DONE = "done"
ITEM_FAILED = "failed"


def iter_jsonl_tolerant(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a run's JSONL; a line torn by a killed writer (always the last one) is skipped."""
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # torn final write
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                yield record


def iter_source(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        yield from pq.read_table(path).to_pylist()
    else:
        yield from iter_jsonl_tolerant(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Run:
    """Writer for one run. Use as a context manager: an exception marks the run failed or interrupted,
    keeping its JSONL for the next rerun to resume from."""

    def __init__(
        self,
        ws: Workspace,
        run_id: str,
        stage: str,
        kind: str,
        config_hash: str,
        prior_sources: list[Path],
        prior: dict[str, str],
    ) -> None:
        self.ws = ws
        self.run_id = run_id
        self.stage = stage
        self.kind = kind
        self.config_hash = config_hash
        self.dir = ws.run_dir(stage, run_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.dir / f"{kind}.jsonl"
        # id -> status of items earlier runs with the same config already produced.
        self.prior: dict[str, str] = prior
        self._prior_sources = prior_sources
        self._lock = threading.Lock()
        self._fh = self.jsonl_path.open("a", encoding="utf-8")
        self.n_appended = 0
        self.closed = False

    # -- writing -------------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished item. It needs an `id`; `status` defaults to done."""
        if "id" not in record:
            raise ValueError("a run item needs an 'id'")
        record = {"id": str(record["id"]), **{k: v for k, v in record.items() if k != "id"}}
        record.setdefault("status", ITEM_DONE)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            self.n_appended += 1

    def is_done(self, item_id: str, retry_failed: bool = False) -> bool:
        """Whether an earlier run already settled this item (a failed one counts unless retried)."""
        status = self.prior.get(str(item_id))
        if status is None:
            return False
        return status == ITEM_DONE or not retry_failed

    # -- ending ----------------------------------------------------------------------------------

    def _merged_records(self) -> tuple[list[dict[str, Any]], int]:
        merged: dict[str, dict[str, Any]] = {}
        from_prior: set[str] = set()
        for source in self._prior_sources:
            for record in iter_source(source):
                merged[str(record["id"])] = record
                from_prior.add(str(record["id"]))
        for record in iter_jsonl_tolerant(self.jsonl_path):
            merged[record["id"]] = record
            from_prior.discard(record["id"])
        return list(merged.values()), len(from_prior)

    def finish(self, schema: pa.Schema | None = None) -> ArtifactInfo:
        """Write the Parquet artifact, register it and the item statuses, and mark the run done."""
        self._close_file()
        records, n_carried = self._merged_records()
        if schema is not None:
            table = pa.Table.from_pylist(records, schema=schema)
        elif records:
            table = pa.Table.from_pylist(records)
        else:
            table = pa.table({"id": pa.array([], pa.string()), "status": pa.array([], pa.string())})
        path = self.dir / f"{self.kind}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        statuses = [str(r.get("status", ITEM_DONE)) for r in records]
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
            run_id=self.run_id,
            kind=self.kind,
            path=path,
            format="parquet",
            n_rows=table.num_rows,
            sha256=sha256_file(path),
            created_at=datetime.now(),
        )
        n_failed = sum(1 for s in statuses if s == ITEM_FAILED)
        with connect(self.ws.catalog_path) as con:
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    self.run_id,
                    self.kind,
                    self.ws.relative(path),
                    "parquet",
                    artifact.n_rows,
                    artifact.sha256,
                    artifact.created_at,
                ],
            )
            con.register("new_items", items)
            con.execute("INSERT INTO items SELECT * FROM new_items")
            con.unregister("new_items")
            con.execute(
                """UPDATE runs SET status = 'done', finished_at = ?, n_items = ?, n_done = ?, n_failed = ?,
                   n_carried = ? WHERE run_id = ?""",
                [datetime.now(), len(records), len(records) - n_failed, n_failed, n_carried, self.run_id],
            )
            self.ws.refresh_views(con, self.kind)
            con.execute("COMMIT")
        # The Parquet now holds everything the JSONL did.
        self.jsonl_path.unlink(missing_ok=True)
        self.closed = True
        return artifact

    def abort(self, status: str, error: str | None) -> None:
        """Mark the run failed or interrupted; its JSONL stays for a rerun to resume from."""
        self._close_file()
        with connect(self.ws.catalog_path) as con:
            con.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ?, n_items = ? WHERE run_id = ?",
                [status, error, datetime.now(), self.n_appended, self.run_id],
            )
        self.closed = True

    def _close_file(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.abort("interrupted", "stopped by the user")
        else:
            self.abort("failed", f"{exc_type.__name__}: {exc}")
