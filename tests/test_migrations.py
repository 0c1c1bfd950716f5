"""Versioned migrations: a workspace written by an earlier ores (tests/fixtures/ws_schema_v1: the
catalog of schema 1, caches without versions) opens with today's code, keeps every run and
artifact, and takes new runs; each database records its version; a newer one is refused."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pytest

from oresearch_cli.errors import WorkspaceError
from oresearch_cli.migrations import Migration, migrate_sqlite, run_script, sqlite_version
from oresearch_cli.workspace import SCHEMA_VERSION, StageSpec, Workspace
from oresearch_cli.workspace.catalog import MIGRATIONS

FIXTURE = Path(__file__).parent / "fixtures" / "ws_schema_v1"


@pytest.fixture
def old_ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.gz", "README.md"))
    with gzip.open(FIXTURE / "ores.duckdb.gz") as src, (root / "ores.duckdb").open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return root


def _catalog_version(root: Path) -> int:
    con = duckdb.connect(str(root / "ores.duckdb"), read_only=True)
    try:
        return int(con.execute("select value from meta where key = 'schema_version'").fetchone()[0])
    finally:
        con.close()


def test_a_workspace_of_schema_1_opens_and_keeps_its_runs(old_ws: Path) -> None:
    assert _catalog_version(old_ws) == 1
    ws = Workspace.open(old_ws, create=False)  # even a reader migrates an older catalog, once
    assert _catalog_version(old_ws) == SCHEMA_VERSION == len(MIGRATIONS)
    runs = {r.stage: r for r in ws.runs()}
    assert set(runs) == {"seed", "synth", "filter"} and all(r.status == "done" for r in runs.values())
    # Every artifact still reads, and the views still answer.
    kinds = {a.kind for a in ws.artifacts()}
    assert kinds == {"seeds", "traces", "llm_calls", "filtered"}
    assert all(a.path.exists() for a in ws.artifacts())
    assert ws.sql("select count(*) from traces")[1] == [(3,)]
    assert ws.sql("select count(*) from llm_calls_all")[1][0][0] > 0
    # Old call logs said `ok`; the shared status enum reads them as done.
    from oresearch_cli.llm import CallRecord

    rows = ws.read_artifact(ws.require_latest("llm_calls", "synth"))
    assert {CallRecord.from_row({**r, "run_id": None}).status.value for r in rows} == {"done"}
    # Migration 2 listed the call log of the old synth run, so it is known as the run's log.
    _, logs = ws.sql("select kind, path from run_logs where run_id = '" + runs["synth"].run_id + "'")
    assert logs == [("llm_calls", f"artifacts/synth/{runs['synth'].run_id}/llm_calls.jsonl")]
    # The rules-only filter run had no call log: nothing is listed to be looked for at every start.
    _, none = ws.sql("select count(*) from run_logs where run_id = '" + runs["filter"].run_id + "'")
    assert none == [(0,)]
    status = ws.status()
    assert {k.kind: k.n_rows for k in status.kinds}["seeds"] == 3


def test_the_old_workspace_resumes_and_takes_new_runs(old_ws: Path) -> None:
    from oresearch_cli.stages.synth import SYNTH

    ws = Workspace.open(old_ws)
    old = ws.runs(stage="synth")[0]
    # A rerun with the old run's config resumes from its artifact: every seed is done already.
    with ws.start_run(SYNTH, old.config, inputs=["seeds"], resume=True) as run:
        assert sorted(run.prior) == ["q00", "q01", "q02"] and all(run.is_done(i) for i in run.prior)
    assert ws.latest_artifact("traces").n_rows == 3
    with ws.start_run(StageSpec("eval", "scores"), {"bench": "drb"}) as run:
        run.append({"id": "1", "score": 0.5})
    assert ws.sql("select score from scores")[1] == [(0.5,)]


def test_the_caches_of_an_old_workspace_gain_a_version_and_keep_their_entries(old_ws: Path) -> None:
    from oresearch_cli.filtering.judge import CACHE_MIGRATIONS, CRITERIA, JudgeCache, cache_key
    from oresearch_cli.tools.cache import MIGRATIONS as TOOL_MIGRATIONS
    from oresearch_cli.tools.cache import ToolCache

    for name in ("judge.sqlite", "tools.sqlite"):
        with sqlite3.connect(old_ws / "cache" / name) as db:
            assert sqlite_version(db) == 0
    judge = JudgeCache(old_ws / "cache" / "judge.sqlite")
    try:
        # the fixture's entry was judged under rubric-v2: kept, and found under that rubric's key
        scores = judge.get(cache_key("judge-m", "q?", "trace text", rubric="rubric-v2"))
        rejudged = judge.get(cache_key("judge-m", "q?", "trace text"))  # the current rubric asks again
    finally:
        judge.close()
    assert scores is not None and set(scores) == set(CRITERIA)
    assert rejudged is None
    tools = ToolCache(old_ws / "cache" / "tools.sqlite")
    tools.close()
    with sqlite3.connect(old_ws / "cache" / "judge.sqlite") as db:
        assert sqlite_version(db) == len(CACHE_MIGRATIONS)
    with sqlite3.connect(old_ws / "cache" / "tools.sqlite") as db:
        assert sqlite_version(db) == len(TOOL_MIGRATIONS)
        assert db.execute("select count(*) from entries").fetchone()[0] > 0


def test_a_catalog_newer_than_this_ores_is_refused_unchanged(old_ws: Path) -> None:
    con = duckdb.connect(str(old_ws / "ores.duckdb"))
    con.execute("update meta set value = '99' where key = 'schema_version'")
    con.close()
    for create in (True, False):
        with pytest.raises(
            WorkspaceError, match=f"schema 99 is newer than this ores understands \\({SCHEMA_VERSION}\\)"
        ):
            Workspace.open(old_ws, create=create)
    assert _catalog_version(old_ws) == 99


def test_sqlite_steps_run_in_order_once_and_refuse_a_newer_file(tmp_path: Path) -> None:
    calls: list[int] = []

    def step(n: int, sql: str) -> Migration:
        def apply(db: sqlite3.Connection) -> None:
            calls.append(n)
            run_script(sql)(db)

        return Migration(n, f"step {n}", apply)

    steps = (step(1, "CREATE TABLE t (a TEXT)"), step(2, "ALTER TABLE t ADD COLUMN b TEXT"))
    db = sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)
    assert migrate_sqlite(db, steps[:1], where="x") == 1 and calls == [1]
    assert migrate_sqlite(db, steps, where="x") == 2 and calls == [1, 2]  # only the new step
    assert migrate_sqlite(db, steps, where="x") == 2 and calls == [1, 2]  # nothing left to do
    with pytest.raises(WorkspaceError, match="schema 2 is newer than this ores understands \\(1\\)"):
        migrate_sqlite(db, steps[:1], where="x")
    # A failing step leaves the file at the last good version.
    broken = (*steps, Migration(3, "broken", run_script("ALTER TABLE nope ADD COLUMN c TEXT")))
    with pytest.raises(sqlite3.OperationalError):
        migrate_sqlite(db, broken, where="x")
    assert sqlite_version(db) == 2
    with pytest.raises(ValueError, match="numbered 3, expected 2"):
        migrate_sqlite(db, (steps[0], Migration(3, "gap", run_script(""))), where="x")
