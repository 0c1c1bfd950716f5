"""The stage contract (`oresearch_cli.workspace`): typed records per artifact kind, one status enum,
a run context that owns its lifecycle, its logs and its secondary artifacts, progress through a
Protocol, and the catalog written by `workspace/` alone."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oresearch_cli.workspace import ArtifactRecord, RunStatus, StageSpec, Status, Workspace, record_type

SRC = Path(__file__).resolve().parents[1] / "src" / "oresearch_cli"


@dataclass
class Score(ArtifactRecord):
    KIND: ClassVar[str] = "test_scores"

    id: str
    score: float | None = None
    n: Annotated[int, pa.int32()] = 0
    status: Status = Status.DONE


SCORES = StageSpec.of("test_eval", Score)


def test_a_record_class_is_its_kinds_schema_and_defaults(tmp_path: Path) -> None:
    assert record_type("test_scores") is Score
    assert Score.arrow_schema() == pa.schema(
        [("id", pa.string()), ("score", pa.float64()), ("n", pa.int32()), ("status", pa.string())]
    )
    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(SCORES, {"k": 1}) as run:
        run.append(Score("a", 0.5, 3))
        run.append(Score("b", status=Status.FAILED))
    table = pq.read_table(run.artifact.path)
    assert table.schema == Score.arrow_schema()
    assert table.to_pylist() == [
        {"id": "a", "score": 0.5, "n": 3, "status": "done"},
        {"id": "b", "score": None, "n": 0, "status": "failed"},
    ]
    # Rows of an older or newer version of the kind still read.
    assert Score.from_row({"id": "c", "extra": 1}) == Score("c")


def test_statuses_are_one_enum_and_old_logs_read() -> None:
    assert Status("ok") is Status.DONE and Status("error") is Status.FAILED
    assert str(Status.DONE) == "done" and json.dumps(Status.FAILED) == '"failed"'
    assert f"{RunStatus.INTERRUPTED}" == "interrupted"
    from oresearch_cli.stages.filter import FilterRecord
    from oresearch_cli.stages.synth import TraceRecord

    for record in (TraceRecord, FilterRecord):  # every kind's status column holds the enum's values
        assert record.__dataclass_fields__["status"].type in ("Status", Status)


def test_a_runs_log_and_secondary_artifacts_are_registered_however_it_ends(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(RuntimeError), ws.start_run(SCORES, {"k": 2}) as run:
        with run.open_log("test_rollouts").open("a") as fh:
            fh.write(json.dumps({"id": "r1", "reward": 0.25}) + "\n")
        raise RuntimeError("boom")
    info = ws.get_run(run.run_id)
    assert info.status == RunStatus.FAILED and "boom" in (info.error or "")
    # The failed run's log is an artifact of its own kind, queryable at once.
    assert [a.kind for a in ws.artifacts(run_id=run.run_id)] == ["test_rollouts"]
    assert ws.sql("select reward from test_rollouts")[1] == [(0.25,)]

    with ws.start_run(SCORES, {"k": 3}) as run:
        checkpoint = run.dir / "model.safetensors"
        checkpoint.write_bytes(b"weights")
        added = run.add_artifact("test_models", checkpoint, n_rows=1, format="safetensors")
        run.append(Score("a"))
    assert added.sha256 and {a.kind for a in ws.artifacts(run_id=run.run_id)} == {
        "test_scores",
        "test_models",
    }
    assert ws.resolve_artifact(run.run_id).kind == "test_scores"  # the run's own output, not its extras


_KILLED = """
import json, os, sys
from oresearch_cli.workspace import StageSpec, Workspace
ws = Workspace.open(sys.argv[1])
run = ws.start_run(StageSpec("test_eval", "test_scores"), {"k": 4})
with run.open_log("test_rollouts").open("a") as fh:
    fh.write(json.dumps({"id": "r1", "reward": 1.0}) + "\\n")
    fh.write('{"id": "r2", "rew')  # torn by the kill
    fh.flush()
os.kill(os.getpid(), 9)
"""


def test_the_next_run_registers_the_log_of_a_run_killed_before_it_could(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.open(root)
    killed = subprocess.run([sys.executable, "-c", _KILLED, str(root)], check=False)
    assert killed.returncode == -9
    ws = Workspace.open(root)
    [dead] = ws.runs()
    assert dead.effective_status == RunStatus.INTERRUPTED and ws.artifacts() == []
    with ws.start_run(SCORES, {"k": 5}) as run:  # the next run of the stage
        run.append(Score("x"))
    [log] = ws.artifacts(run_id=dead.run_id)
    assert log.kind == "test_rollouts" and log.n_rows == 1  # the torn line is not half a row


class Recording:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, label: str, total: int, note: str = "") -> None:
        self.events.append(("start", label, total))

    def advance(self, n: int = 1, *, item: str = "", stats: str = "") -> None:
        self.events.append(("advance", n))

    def stop(self) -> None:
        self.events.append(("stop",))


def test_a_stage_reports_progress_through_the_protocol(tmp_path: Path) -> None:
    from oresearch_cli.stages.filter import FilterOptions, run_filter

    from filter_support import traces_file

    src = traces_file(tmp_path / "t.jsonl", n_good=3)
    progress = Recording()
    result = asyncio.run(run_filter(tmp_path / "ws", str(src), FilterOptions(judge=False), progress))
    starts = [e for e in progress.events if e[0] == "start"]
    assert starts == [("start", "rules", result.funnel.n_in)]
    assert sum(e[1] for e in progress.events if e[0] == "advance") == result.funnel.n_in
    assert progress.events[-1] == ("stop",)
    # Counters per rule come with the result: every enabled rule saw every trace.
    from oresearch_cli.filtering.rules import RULE_ORDER

    assert [s.name for s in result.rules] == list(RULE_ORDER)
    assert all(s.checked == result.funnel.n_in for s in result.rules if s.name not in ("tool_calls", "steps"))


def test_only_the_workspace_package_writes_catalog_sql() -> None:
    """Stages hand records, logs and artifacts to the run context; none opens the catalog."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "workspace":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "oresearch_cli.workspace.catalog":
                offenders.append(str(path.relative_to(SRC)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = " ".join(node.value.split()).upper()
                if any(f"{verb} {table}" in text for verb in ("INSERT INTO", "UPDATE", "DELETE FROM")
                       for table in ("RUNS", "ARTIFACTS", "ITEMS", "RUN_LOGS", "META")):  # fmt: skip
                    offenders.append(str(path.relative_to(SRC)))
    assert offenders == []
