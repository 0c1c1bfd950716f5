"""The DuckDB catalog: schema, version check, and short-lived connections that tolerate other writers.

DuckDB lets one process write a database file at a time. Stages in a shell pipeline share one
workspace, so every catalog use opens a connection, does its work and closes it, and a locked
file is retried for a while instead of failing at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from oresearch_cli.errors import WorkspaceError
from oresearch_cli.migrations import (
    CATALOG_LEASES,
    Migration,
    latest_version,
    migrate,
    run_script,
    too_new,
)

LOCK_TIMEOUT_S = 60.0

# Version 1: the catalog as the first stages wrote it (the schema ores wrote before versions were
# migrated; `IF NOT EXISTS`, so such a catalog is adopted as is).
_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    stage VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,          -- artifact kind the run produces
    config_json VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,
    inputs_json VARCHAR NOT NULL,
    status VARCHAR NOT NULL,        -- running | done | failed | interrupted
    error VARCHAR,
    n_items BIGINT DEFAULT 0,
    n_done BIGINT DEFAULT 0,
    n_failed BIGINT DEFAULT 0,
    n_carried BIGINT DEFAULT 0,     -- items taken over from earlier runs with the same config
    pid INTEGER,
    hostname VARCHAR,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL,          -- relative to the workspace root
    format VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    run_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    error VARCHAR
)
"""

# Version 2: the logs a run writes beside its items (LLM call logs today; rollouts and scores
# next) are listed when opened, so that the next run can register the log of a run killed
# before it could, whatever the kind. Runs of version 1 kept their call log as
# `llm_calls.jsonl` in their folder: every synth run, and a filter run only when it judged
# (a rules-only filter had no log, and a listed log that never existed would be looked for at
# every later start).
_V2 = """
CREATE TABLE IF NOT EXISTS run_logs (
    run_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL           -- the JSONL, relative to the workspace root
);
INSERT INTO run_logs
    SELECT run_id, 'llm_calls', 'artifacts/' || stage || '/' || run_id || '/llm_calls.jsonl'
    FROM runs
    WHERE stage = 'synth'
       OR (stage = 'filter' AND json_extract_string(config_json, '$.judge_model') IS NOT NULL)
"""

# Version 3: item leases, so that processes running one stage with one config on one workspace
# split its items instead of each doing all of them (`workspace/leases.py`, `CATALOG_LEASES`).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, artifacts and item statuses", run_script(_V1)),
    Migration(2, "logs written beside a run's items", run_script(_V2)),
    Migration(3, "item leases of cooperating runs", run_script(CATALOG_LEASES)),
)
SCHEMA_VERSION = latest_version(MIGRATIONS)


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _connect_once(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        if _is_lock_error(exc):
            raise  # retried by connect()
        first_line = str(exc).splitlines()[0]
        if "not a valid DuckDB database" in first_line:
            raise WorkspaceError(
                f"{path}: not a usable DuckDB catalog; point --ws at an ores workspace or move this file away"
            ) from None
        raise WorkspaceError(
            f"{path}: cannot open the catalog ({first_line}); check permissions and disk"
        ) from None


@contextlib.contextmanager
def connect(
    path: Path, *, read_only: bool = False, timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection held only for the `with` block, waiting up to `timeout_s` for another writer."""
    retrying = Retrying(
        retry=retry_if_exception(_is_lock_error),
        wait=wait_random_exponential(multiplier=0.02, max=0.5),
        stop=stop_after_delay(timeout_s),
        reraise=True,
    )
    try:
        con = retrying(_connect_once, path, read_only)
    except duckdb.IOException:
        raise WorkspaceError(
            f"{path}: catalog stayed locked by another process for {timeout_s:.0f}s; wait for it to finish or stop it"
        ) from None
    # Views name artifact files relative to the workspace root, which holds the catalog.
    root = str(path.resolve().parent).replace("'", "''")
    con.execute(f"SET file_search_path = '{root}'")
    try:
        yield con
    finally:
        con.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def lock_down(con: duckdb.DuckDBPyConnection, readable: Iterable[str | Path]) -> None:
    """Confine a (read-only) connection for user queries: files other than the catalog and
    `readable` cannot be read or written, no extension is installed or loaded, Python variables
    are not scanned, and the settings cannot be changed back. DuckDB still lets a COPY write to a
    readable file, so `Workspace.sql` also allows only reading statements."""
    paths = ", ".join(_quote(str(p)) for p in readable)
    for statement in (
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET python_enable_replacements = false",
        f"SET allowed_paths = [{paths}]",
        "SET enable_external_access = false",  # after allowed_paths: it refuses changes to them
        "SET lock_configuration = true",
    ):
        con.execute(statement)


def _stored_version(con: duckdb.DuckDBPyConnection) -> int:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except duckdb.CatalogException:
        return 0
    return int(row[0]) if row is not None else 0


def _store_version(con: duckdb.DuckDBPyConnection, version: int) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])


def ensure_schema(path: Path) -> int:
    """Create the catalog if needed and migrate it to `SCHEMA_VERSION`; returns that version.

    DuckDB lets one process write the file at a time, so two processes opening an old catalog
    migrate it one after the other."""
    with connect(path) as con:
        con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        return migrate(
            con, MIGRATIONS, where=path, read_version=_stored_version, write_version=_store_version
        )


def check_schema_readonly(path: Path) -> int:
    """The schema version, without writing; for readers such as `ws sql`."""
    with connect(path, read_only=True) as con:
        version = _stored_version(con)
    if version == 0:
        raise WorkspaceError(
            f"{path}: not an ores catalog (no schema version); run `ores ws init` on a new directory"
        )
    if version > SCHEMA_VERSION:
        raise too_new(path, version, SCHEMA_VERSION)
    return version
