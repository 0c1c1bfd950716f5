"""A hostile user against the workspace: `ores ws sql` only reads, and artifacts are written only
by the stage that owns them (export refuses the workspace's folders; a changed or corrupt file is
caught by its stored sha256 and reported in one line that says which stage to rerun)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oresearch_cli.errors import InputError, WorkspaceError
from oresearch_cli.workspace import StageSpec, Workspace

from conftest import error_lines, ores

SECRET = "do-not-leak-7f3a"


def make_ws(root: Path, kind: str = "seeds", stage: str = "seed") -> tuple[Workspace, Path]:
    """A workspace with one finished run of `stage`; returns it and the artifact's path."""
    ws = Workspace.open(root)
    with ws.start_run(StageSpec(stage, kind), {"k": 1}) as run:
        run.append({"id": "1", "question": "what is bm25?", "language": "en", "trace": "x"})
        run.append({"id": "2", "question": "why is the sky blue?", "language": "en", "trace": "y"})
    artifact = ws.latest_artifact(kind)
    assert artifact is not None
    return ws, artifact.path


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` with the sha256 of its bytes."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def two_workspaces(tmp_path: Path) -> tuple[Path, Path, Path]:
    """`ws` with a seeds artifact, `other` with one too; returns (ws, its artifact, other)."""
    _, artifact = make_ws(tmp_path / "ws")
    make_ws(tmp_path / "other")
    return tmp_path / "ws", artifact, tmp_path / "other"


# -- 1. `ores ws sql` only reads ------------------------------------------------------------------


@pytest.mark.parametrize("options", ["", " (FORMAT parquet, USE_TMP_FILE false)"])
def test_sql_copy_cannot_overwrite_an_artifact(two_workspaces, tmp_path: Path, options: str) -> None:
    """DuckDB lets a COPY write to a file the connection may read: the statement itself is refused."""
    ws, artifact, other = two_workspaces
    before = snapshot(ws, other)
    query = f"COPY (SELECT 'evil' AS id) TO '{artifact}'{options}"
    result = ores("ws", "sql", query, "--ws", str(ws), cwd=tmp_path)
    assert_one_line_error(result, "query failed", "COPY", "ores ws export")
    assert snapshot(ws, other) == before
    assert Workspace.open(ws, create=False).sql("select count(*) from seeds")[1] == [(2,)]


def test_sql_cannot_attach_and_empty_another_workspace(two_workspaces, tmp_path: Path) -> None:
    ws, _, other = two_workspaces
    before = snapshot(ws, other)
    query = f"ATTACH '{other / 'ores.duckdb'}' AS o (READ_WRITE); DELETE FROM o.runs"
    result = ores("ws", "sql", query, "--ws", str(ws), cwd=tmp_path)
    assert_one_line_error(result, "query failed", "ATTACH")
    assert snapshot(ws, other) == before
    assert len(Workspace.open(other, create=False).runs()) == 1


@pytest.mark.parametrize(
    "template",
    [
        "select * from read_text('{secret}')",
        "select * from read_csv('{secret}', header=false)",
        "select * from read_blob('{secret}')",
        "select * from read_text('/etc/hostname')",
        "select * from glob('{dir}/*')",
    ],
)
def test_sql_cannot_read_files_outside_the_workspace(two_workspaces, tmp_path: Path, template: str) -> None:
    ws, _, other = two_workspaces
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    before = snapshot(ws, other)
    query = template.format(secret=secret, dir=tmp_path)
    result = ores("ws", "sql", query, "--ws", str(ws), "--json", cwd=tmp_path)
    assert_one_line_error(result, "query failed", "reads only the catalog")
    assert SECRET not in result.stdout + result.stderr
    assert snapshot(ws, other) == before


@pytest.mark.parametrize(
    "query",
    ["INSTALL httpfs", "LOAD httpfs", "select * from 'https://example.invalid/x.parquet'"],
)
def test_sql_installs_and_loads_no_extension(two_workspaces, tmp_path: Path, query: str) -> None:
    """Nothing is downloaded or written under the user's home (DuckDB keeps extensions in ~/.duckdb)."""
    ws, _, other = two_workspaces
    home = tmp_path / "home"
    home.mkdir()
    before = snapshot(ws, other)
    result = ores("ws", "sql", query, "--ws", str(ws), cwd=tmp_path, env={"HOME": str(home)})
    assert_one_line_error(result, "query failed")
    assert snapshot(ws, other) == before
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    "query",
    [
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "SET allowed_directories = ['/']",
        "CREATE TEMP TABLE t AS SELECT 1",
        "EXPORT DATABASE 'dump'",
        "select 1; COPY runs TO 'runs.csv'",
        "CHECKPOINT",
    ],
)
def test_sql_refuses_every_statement_that_is_not_a_read(two_workspaces, tmp_path: Path, query: str) -> None:
    ws, _, other = two_workspaces
    before = snapshot(ws, other)
    with pytest.raises(WorkspaceError, match="query failed: .* statements are refused"):
        Workspace.open(ws, create=False).sql(query)
    assert snapshot(ws, other) == before
    assert not (tmp_path / "dump").exists() and not (tmp_path / "runs.csv").exists()


def test_sql_still_reads_the_catalog_and_every_artifact_view(two_workspaces, tmp_path: Path) -> None:
    ws, _, _ = two_workspaces
    workspace = Workspace.open(ws, create=False)
    assert workspace.sql("select count(*) from seeds")[1] == [(2,)]
    assert workspace.sql("from seeds_all select count(distinct run_id)")[1] == [(1,)]
    assert workspace.sql("select count(*) from runs join artifacts using (run_id)")[1] == [(1,)]
    assert ("seeds",) in workspace.sql("show tables")[1]
    assert workspace.sql("describe seeds")[0][0] == "column_name"
    assert workspace.sql("explain select * from seeds")[0]  # EXPLAIN reads too
    # The views name their files relative to the workspace: the check must not break that.
    result = ores("ws", "sql", "select id from seeds order by id", "--ws", str(ws), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"id": "1"}, {"id": "2"}]
    # ...and a later writer in the same process is not left locked down (DuckDB shares instances).
    with workspace.start_run(StageSpec("seed", "seeds"), {"k": 2}) as run:
        run.append({"id": "3", "question": "q"})
    assert workspace.sql("select count(*) from seeds_all")[1] == [(3,)]


@pytest.mark.parametrize("query", ["", "   ", " ; ", "-- only a comment"])
def test_sql_empty_query_is_a_one_line_error(two_workspaces, tmp_path: Path, query: str) -> None:
    ws, _, _ = two_workspaces
    result = ores("ws", "sql", "--ws", str(ws), "--", query, cwd=tmp_path)
    assert_one_line_error(result, "ws sql:", "ores ws sql")
    with pytest.raises(InputError):
        Workspace.open(ws, create=False).sql(query)


def test_sql_syntax_error_is_a_one_line_error(two_workspaces, tmp_path: Path) -> None:
    ws, _, _ = two_workspaces
    result = ores("ws", "sql", "selec 1", "--ws", str(ws), cwd=tmp_path)
    assert_one_line_error(result, "query failed")


def test_sql_json_writes_null_for_nan_and_infinity(two_workspaces, tmp_path: Path) -> None:
    ws, _, _ = two_workspaces
    query = (
        "select 'nan'::double as x, ['inf'::double, 1.5, '-inf'::double] as l, "
        "{'a': 'nan'::float, 'b': 2} as s, 3 as n"
    )
    result = ores("ws", "sql", query, "--ws", str(ws), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    rows = json.loads(result.stdout, parse_constant=refuse)
    assert rows == [{"x": None, "l": [None, 1.5, None], "s": {"a": None, "b": 2}, "n": 3}]


# -- 2. artifacts are written only by their stage -------------------------------------------------


def test_export_into_the_workspace_artifacts_is_refused(two_workspaces, tmp_path: Path) -> None:
    ws, artifact, other = two_workspaces
    (tmp_path / "link").symlink_to(ws / "artifacts")
    before = snapshot(ws, other)
    for target in (
        artifact,  # over the artifact itself
        artifact.with_suffix(".jsonl"),  # beside it
        ws / "artifacts" / "new" / "x.parquet",
        tmp_path / "link" / "seed" / "x.jsonl",  # through a symlink
        ws / "models" / "x.jsonl",
    ):
        result = ores("ws", "export", "seeds", "-o", str(target), "--ws", str(ws), cwd=tmp_path)
        assert_one_line_error(result, str(target), "only ores stages write", "outside the workspace")
        with pytest.raises(InputError, match="only ores stages write"):
            Workspace.open(ws, create=False).export("seeds", target)
    with pytest.raises(InputError, match="only ores stages write"):  # the catalog
        Workspace.open(ws, create=False).export("seeds", ws / "ores.duckdb")
    # A path given relative to the workspace, `..` and all, is refused too.
    result = ores(
        "ws", "export", "seeds", "-o", "ws/artifacts/../artifacts/y.parquet", "--ws", "ws", cwd=tmp_path
    )
    assert_one_line_error(result, "only ores stages write")
    assert snapshot(ws, other) == before
    assert not (ws / "artifacts" / "new").exists()
    # Outside the workspace's own folders export still works.
    result = ores("ws", "export", "seeds", "-o", str(tmp_path / "out.parquet"), "--ws", str(ws), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 2


def _change(path: Path) -> None:
    """Rewrite a Parquet artifact with other, valid content (what a user's script might do)."""
    pq.write_table(pa.table({"id": ["evil"], "question": ["injected"], "language": ["en"]}), path)


def test_a_changed_artifact_is_refused_on_read(tmp_path: Path) -> None:
    ws, path = make_ws(tmp_path / "ws")
    artifact = ws.latest_artifact("seeds")
    assert artifact is not None
    assert len(ws.read_artifact(artifact)) == 2  # verified, and remembered for this file state
    _change(path)
    with pytest.raises(WorkspaceError, match=r"was changed after its run wrote it .*rerun `ores seed`"):
        ws.read_artifact(artifact)
    with pytest.raises(WorkspaceError, match="was changed"):
        ws.require_latest("seeds", "seed")
    with pytest.raises(WorkspaceError, match="was changed"):
        ws.export("seeds", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
    # Through the CLI: one line that names the file and the fix.
    result = ores("ws", "export", "seeds", "-o", "-", "--ws", "ws", cwd=tmp_path)
    assert_one_line_error(result, str(path), "was changed", "rerun `ores seed`")
    assert "injected" not in result.stdout


def test_ws_status_reports_a_changed_artifact_and_how_to_recover(tmp_path: Path) -> None:
    ws, path = make_ws(tmp_path / "ws")
    _change(path)
    result = ores("ws", "status", "--ws", "ws", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    problem = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problem) == 1, result.stdout
    assert str(path) in problem[0] and "was changed" in problem[0] and "rerun `ores seed`" in problem[0]
    shown = json.loads(ores("ws", "status", "--ws", "ws", "--json", cwd=tmp_path).stdout)
    (kind,) = shown["kinds"]
    assert kind["kind"] == "seeds" and "rerun `ores seed`" in kind["problem"] and kind["breakdown"] == {}


def test_rerunning_the_stage_recovers_from_a_changed_artifact(tmp_path: Path) -> None:
    """The advised fix works: a resumed rerun does not take items over from the changed file."""
    ws, path = make_ws(tmp_path / "ws")
    _change(path)
    with ws.start_run(StageSpec("seed", "seeds"), {"k": 1}, resume=True) as run:
        assert run.prior == {}, "nothing is resumed from a file that is not what its run wrote"
        run.append({"id": "1", "question": "what is bm25?", "language": "en"})
    latest = ws.latest_artifact("seeds")
    assert latest is not None and latest.run_id == run.run_id
    assert [r["id"] for r in ws.read_artifact(latest)] == ["1"]
    (kind,) = ws.status().kinds
    assert kind.problem is None and kind.breakdown["language"] == {"en": 1}


def test_a_corrupt_parquet_is_one_line_in_status_filter_and_readers(tmp_path: Path) -> None:
    ws, path = make_ws(tmp_path / "ws", kind="traces", stage="synth")
    path.write_bytes(b"this is not parquet at all")
    status = ores("ws", "status", "--ws", "ws", cwd=tmp_path)
    assert status.returncode == 0 and "Traceback" not in status.stdout + status.stderr, status.stderr
    problem = [line for line in status.stdout.splitlines() if line.startswith("problem:")]
    assert len(problem) == 1, status.stdout
    assert str(path) in problem[0] and "Parquet magic bytes not found" in problem[0]
    assert "rerun `ores synth`" in problem[0]
    result = ores("filter", "--no-judge", "--ws", "ws", cwd=tmp_path)
    assert_one_line_error(
        result, str(path), "is corrupt", "Parquet magic bytes not found", "rerun `ores synth`"
    )
    for command in (
        ["ws", "export", "traces", "-o", "out.jsonl"],
        ["ws", "export", "traces", "-o", "out.parquet"],
    ):
        result = ores(*command, "--ws", "ws", cwd=tmp_path)
        assert_one_line_error(result, str(path), "is corrupt", "rerun `ores synth`")
    artifact = ws.latest_artifact("traces")
    assert artifact is not None
    with pytest.raises(WorkspaceError, match="Parquet magic bytes not found"):
        ws.read_artifact(artifact)


def test_a_missing_artifact_is_reported_not_raised_by_status(tmp_path: Path) -> None:
    ws, path = make_ws(tmp_path / "ws")
    path.unlink()
    (kind,) = ws.status().kinds
    assert kind.problem is not None and "missing" in kind.problem and "rerun `ores seed`" in kind.problem
    with pytest.raises(WorkspaceError, match="missing"):
        ws.require_latest("seeds", "seed")


def test_a_corrupt_filtered_artifact_is_one_line_in_explain(tmp_path: Path) -> None:
    """`ores filter --explain` with a run id reads the verdicts itself: checked like every read."""
    from oresearch_cli.stages.filter import explain

    ws, path = make_ws(tmp_path / "ws", kind="filtered", stage="filter")
    run_id = ws.latest_artifact("filtered").run_id  # type: ignore[union-attr]
    path.write_bytes(b"not parquet")
    with pytest.raises(WorkspaceError, match="Parquet magic bytes not found"):
        explain(tmp_path / "ws", "1", run_id)
