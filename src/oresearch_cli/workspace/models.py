"""Typed rows of the catalog, and the config hash that decides what a rerun may skip."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from oresearch_cli.workspace.records import RunStatus


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a stage config: same config, same hash, on any machine."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    stage: str
    kind: str
    config: dict[str, Any]
    config_hash: str
    inputs: list[str]
    status: str
    error: str | None
    n_items: int
    n_done: int
    n_failed: int
    n_carried: int
    pid: int | None
    hostname: str | None
    started_at: datetime
    finished_at: datetime | None

    @property
    def effective_status(self) -> RunStatus:
        """`running` only while its process lives; a run whose process died (kill -9) is `interrupted`."""
        if (
            self.status == RunStatus.RUNNING
            and self.hostname == socket.gethostname()
            and self.pid
            and not _pid_alive(self.pid)
        ):
            return RunStatus.INTERRUPTED
        return RunStatus(self.status)

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunInfo:
        return cls(
            run_id=row["run_id"],
            stage=row["stage"],
            kind=row["kind"],
            config=json.loads(row["config_json"]),
            config_hash=row["config_hash"],
            inputs=json.loads(row["inputs_json"]),
            status=row["status"],
            error=row["error"],
            n_items=row["n_items"] or 0,
            n_done=row["n_done"] or 0,
            n_failed=row["n_failed"] or 0,
            n_carried=row["n_carried"] or 0,
            pid=row["pid"],
            hostname=row["hostname"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "stage": self.stage,
            "kind": self.kind,
            "status": self.effective_status,
            "config_hash": self.config_hash,
            "config": self.config,
            "inputs": self.inputs,
            "error": self.error,
            "n_items": self.n_items,
            "n_done": self.n_done,
            "n_failed": self.n_failed,
            "n_carried": self.n_carried,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class ArtifactInfo:
    run_id: str
    kind: str
    path: Path  # absolute
    format: str
    n_rows: int
    sha256: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "path": str(self.path),
            "format": self.format,
            "n_rows": self.n_rows,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class KindStatus:
    kind: str
    latest_run: str
    n_rows: int
    n_artifacts: int
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> value -> count
    # Why the latest artifact cannot be used (missing, changed since its run wrote it, corrupt),
    # worded `where: what; how to fix`; None when it checks out.
    problem: str | None = None


@dataclass(frozen=True)
class WorkspaceStatus:
    root: Path
    schema_version: int
    runs_by_status: dict[str, int]
    kinds: list[KindStatus]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "schema_version": self.schema_version,
            "runs_by_status": self.runs_by_status,
            "kinds": [
                {
                    "kind": k.kind,
                    "latest_run": k.latest_run,
                    "n_rows": k.n_rows,
                    "n_artifacts": k.n_artifacts,
                    "breakdown": k.breakdown,
                    "problem": k.problem,
                }
                for k in self.kinds
            ],
        }
