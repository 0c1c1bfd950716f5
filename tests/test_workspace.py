"""The workspace: runs, artifacts, resume after a crash, views, and several processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oresearch_cli.errors import WorkspaceError
from oresearch_cli.workspace import CATALOG_NAME, StageSpec, Workspace, config_hash
from oresearch_cli.workspace.catalog import connect


def test_open_creates_layout_and_catalog(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    for sub in ("artifacts", "cache", "models", "corpora"):
        assert (ws.root / sub).is_dir()
    assert (ws.root / CATALOG_NAME).is_file()
    assert ws.status().kinds == []


def test_open_refuses_a_file_and_a_missing_workspace(tmp_path: Path) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    with pytest.raises(WorkspaceError, match="is a file, not a workspace directory"):
        Workspace.open(file)
    with pytest.raises(WorkspaceError, match="no ores workspace here"):
        Workspace.open(tmp_path / "missing", create=False)


def test_newer_schema_is_refused_without_changes(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with connect(ws.catalog_path) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = ws.catalog_path.read_bytes()
    with pytest.raises(WorkspaceError, match="schema 99 is newer"):
        Workspace.open(ws.root)
    with pytest.raises(WorkspaceError, match="schema 99 is newer"):
        Workspace.open(ws.root, create=False)
    assert ws.catalog_path.read_bytes() == before


def test_catalog_that_is_not_duckdb(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / CATALOG_NAME).write_text("hello, I am not a database")
    with pytest.raises(WorkspaceError, match="not a usable DuckDB catalog"):
        Workspace.open(root)


def test_run_writes_parquet_registers_items_and_views(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(StageSpec("seed", "seeds"), {"k": 1}, inputs=["q.jsonl"]) as run:
        run.append({"id": 1, "question": "a", "language": "en"})
        run.append({"id": "2", "question": "b", "language": "zh", "status": "failed", "error": "boom"})
        assert run.jsonl_path.exists()
    artifact = ws.latest_artifact("seeds")
    assert artifact is not None and artifact.n_rows == 2
    assert not run.jsonl_path.exists(), "the Parquet replaces the in-progress JSONL"
    assert pq.read_table(artifact.path).column("id").to_pylist() == ["1", "2"]
    info = ws.get_run(run.run_id)
    assert (info.status, info.n_items, info.n_done, info.n_failed) == ("done", 2, 1, 1)
    assert info.config == {"k": 1} and info.config_hash == config_hash({"k": 1})
    assert ws.item_counts(run.run_id) == {"done": 1, "failed": 1}
    columns, rows = ws.sql("select id, language from seeds order by id")
    assert columns == ["id", "language"] and rows == [("1", "en"), ("2", "zh")]
    _, rows = ws.sql("select count(*) from seeds_all")
    assert rows == [(2,)]


def test_views_survive_moving_the_workspace(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "a")
    with ws.start_run(StageSpec("seed", "seeds"), {}) as run:
        run.append({"id": "x", "question": "q"})
    (tmp_path / "a").rename(tmp_path / "b")
    moved = Workspace.open(tmp_path / "b", create=False)
    assert moved.sql("select id from seeds")[1] == [("x",)]


def test_sql_is_read_only_and_errors_are_one_line(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="query failed"):
        ws.sql("insert into runs values (1)")
    with pytest.raises(WorkspaceError, match="query failed"):
        ws.sql("select * from no_such_table")


def test_exception_marks_run_failed_and_keeps_jsonl(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(RuntimeError), ws.start_run(StageSpec("synth", "traces"), {"m": "x"}) as run:
        run.append({"id": "s1"})
        raise RuntimeError("endpoint went away")
    info = ws.get_run(run.run_id)
    assert info.status == "failed" and "endpoint went away" in (info.error or "")
    assert run.jsonl_path.exists()
    assert ws.latest_artifact("traces") is None


def test_resume_skips_done_items_and_carries_them_over(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    config = {"model": "m", "max_steps": 10}
    with pytest.raises(KeyboardInterrupt), ws.start_run(StageSpec("synth", "traces"), config) as first:
        first.append({"id": "a", "trace": "A"})
        first.append({"id": "b", "status": "failed", "error": "429"})
        raise KeyboardInterrupt
    assert ws.get_run(first.run_id).status == "interrupted"
    # A torn last line, as a kill -9 during a write leaves it.
    with first.jsonl_path.open("a") as fh:
        fh.write('{"id": "c", "trace": "half')

    second = ws.start_run(StageSpec("synth", "traces"), config, resume=True)
    assert second.prior == {"a": "done", "b": "failed"}
    assert second.is_done("a") and second.is_done("b") and not second.is_done("b", retry_failed=True)
    assert not second.is_done("c")
    second.append({"id": "b", "trace": "B"})
    second.append({"id": "c", "trace": "C"})
    artifact = second.finish()
    rows = {r["id"]: r for r in pq.read_table(artifact.path).to_pylist()}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["b"]["status"] == "done" and rows["b"]["trace"] == "B"
    assert ws.get_run(second.run_id).n_carried == 1

    # A different config starts from scratch.
    other = ws.start_run(StageSpec("synth", "traces"), {**config, "max_steps": 5}, resume=True)
    assert other.prior == {}
    other.abort("failed", "test")

    # After a finished run, the next rerun with the same config has everything done.
    third = ws.start_run(StageSpec("synth", "traces"), config, resume=True)
    assert third.prior == {"a": "done", "b": "done", "c": "done"}
    assert third.finish().n_rows == 3


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from oresearch_cli.workspace import StageSpec, Workspace
    ws = Workspace.open(sys.argv[1])
    run = ws.start_run(StageSpec("synth", "traces"), {"cfg": 1}, resume=True)
    for i in range(20):
        if run.is_done(str(i)):
            continue
        run.append({"id": str(i), "trace": "x" * 1000})
        print(i, flush=True)
        time.sleep(0.05)
    run.finish()
    print("finished", flush=True)
    """
)


def test_kill_9_then_rerun_has_every_item_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    script = tmp_path / "writer.py"
    script.write_text(_SLOW_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(7):
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ws = Workspace.open(root)
    crashed = ws.runs(stage="synth")[0]
    assert crashed.status == "running" and crashed.effective_status == "interrupted"
    assert ws.live_item_count(crashed) >= 7

    rerun = subprocess.run(
        [sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    written = [line for line in rerun.stdout.splitlines() if line != "finished"]
    assert len(written) <= 13, "the rerun must skip what the killed run wrote"
    ids = ws.sql("select id from traces")[1]
    assert sorted(int(i) for (i,) in ids) == list(range(20))


_RUN_MANY = textwrap.dedent(
    """
    import sys
    from oresearch_cli.workspace import StageSpec, Workspace
    ws = Workspace.open(sys.argv[1])
    for n in range(6):
        with ws.start_run(StageSpec("seed", "seeds"), {"writer": sys.argv[2], "n": n}) as run:
            for i in range(50):
                run.append({"id": f"{sys.argv[2]}-{n}-{i}", "question": "q"})
    """
)


def test_two_processes_share_one_workspace(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.open(root)
    script = tmp_path / "many.py"
    script.write_text(_RUN_MANY)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(root), name], stderr=subprocess.PIPE, text=True)
        for name in "ab"
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    ws = Workspace.open(root, create=False)
    runs = ws.runs()
    assert len(runs) == 12 and {r.status for r in runs} == {"done"}
    assert ws.sql("select count(*) from seeds_all")[1] == [(600,)]


def test_connect_waits_for_another_writer(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(ws.catalog_path)!r}); print('locked', flush=True); time.sleep(1.5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    with ws.start_run(StageSpec("seed", "seeds"), {}) as run:
        run.append({"id": "1"})
    assert time.monotonic() - started > 0.5, "the run had to wait for the lock"
    holder.wait()
    with pytest.raises(WorkspaceError, match="stayed locked"):
        blocker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import duckdb, time; c = duckdb.connect({str(ws.catalog_path)!r}); print('x', flush=True); time.sleep(3)",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert blocker.stdout is not None
        blocker.stdout.readline()
        try:
            with connect(ws.catalog_path, timeout_s=0.5):
                pass
        finally:
            blocker.kill()
            blocker.wait()


def test_export_parquet_and_jsonl(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(StageSpec("seed", "seeds"), {}) as run:
        run.append({"id": "1", "question": "什么是 BM25？"})
    assert ws.export("seeds", tmp_path / "out.parquet") == 1
    assert pq.read_table(tmp_path / "out.parquet").column("question").to_pylist() == ["什么是 BM25？"]
    assert ws.export(run.run_id, tmp_path / "out.jsonl") == 1
    assert json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))["question"] == "什么是 BM25？"
    with pytest.raises(WorkspaceError, match="no artifact kind or run"):
        ws.export("nothing_here", tmp_path / "x.jsonl")


def test_duckdb_cli_users_can_read_views_from_the_workspace_dir(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(StageSpec("seed", "seeds"), {}) as run:
        run.append({"id": "1"})
    cwd = os.getcwd()
    try:
        os.chdir(ws.root)
        con = duckdb.connect(CATALOG_NAME, read_only=True)
        assert con.execute("select id from seeds").fetchall() == [("1",)]
        con.close()
    finally:
        os.chdir(cwd)


def test_a_run_with_a_call_log_resolves_and_resumes_from_its_own_kind(tmp_path: Path) -> None:
    """synth and a judged filter register an `llm_calls` artifact after their output: naming the run
    must still give its output, and a rerun must resume from it, not from the call log."""
    from oresearch_cli.llm import CALLS_KIND, CallLog, CallRecord

    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(StageSpec("synth", "traces"), {"n": 1}, resume=True) as run:
        run.append({"id": "s1", "status": "done"})
        with CallLog(run.open_log(CALLS_KIND), run.run_id) as log:
            log.append(
                CallRecord(
                    call_id="c1", run_id=run.run_id, trace_id="s1", role="worker", model="m",
                    base_url="http://127.0.0.1:8000/v1", prompt_tokens=10, completion_tokens=2,
                    latency_s=0.1, cost_usd=0.0, attempts=1, status="done", error=None,
                    started_at="2026-01-01T00:00:00+00:00",
                )
            )  # fmt: skip
        run.finish()  # registers the call log too
    assert {a.kind for a in ws.artifacts(run_id=run.run_id)} == {"traces", "llm_calls"}
    assert ws.resolve_artifact(run.run_id).kind == "traces"
    with ws.start_run(StageSpec("synth", "traces"), {"n": 1}, resume=True) as again:
        assert again.is_done("s1")
