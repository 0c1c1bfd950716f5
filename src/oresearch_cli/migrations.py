"""Versioned migrations for the project's databases: an ordered list of steps, the version stored
in each database.

The DuckDB catalog keeps its version in its `meta` table; the SQLite files (tool cache, judge
cache, a corpus's document store) in `PRAGMA user_version`. Each owner lists its steps once:

    STEPS = (
        Migration(1, "the first schema", lambda db: db.executescript(...)),
        Migration(2, "runs record their parent", lambda db: db.execute("ALTER TABLE ...")),
    )
    migrate_sqlite(db, STEPS, where=path)

Opening runs every step above the stored version, in order, each in its own transaction with
the version bump, so a database is always at some listed version. A database newer than this
code knows is refused with one line (upgrade ores), never silently downgraded or written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from oresearch_cli.errors import WorkspaceError


@dataclass(frozen=True)
class Migration:
    """One step: brings a database from `version - 1` to `version`."""

    version: int
    description: str
    apply: Callable[[Any], object]  # gets the open connection; runs inside the step's transaction


def latest_version(steps: Sequence[Migration]) -> int:
    return steps[-1].version if steps else 0


def check_steps(steps: Sequence[Migration]) -> None:
    """Steps are numbered 1, 2, 3... with no gap: a missing step would skip a schema change."""
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise ValueError(
                f"migration {step.description!r} is numbered {step.version}, expected {expected}"
            )


def too_new(where: object, found: int, known: int) -> WorkspaceError:
    return WorkspaceError(
        f"{where}: schema {found} is newer than this ores understands ({known}); "
        "upgrade ores (pip install -U ores) or use another workspace"
    )


def pending(steps: Sequence[Migration], current: int, where: object) -> list[Migration]:
    """The steps a database at `current` still needs (none when it is up to date)."""
    check_steps(steps)
    known = latest_version(steps)
    if current > known:
        raise too_new(where, current, known)
    return [step for step in steps if step.version > current]


def sqlite_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    db: Any,
    steps: Sequence[Migration],
    *,
    where: object,
    read_version: Callable[[Any], int],
    write_version: Callable[[Any, int], object],
    begin: str = "BEGIN",
) -> int:
    """Run every step above the stored version, in order, each in one transaction (`begin`)
    with its version bump; returns the version reached. The version is read again inside each
    transaction, so two processes migrating one file do not run a step twice."""
    for step in pending(steps, read_version(db), where):
        db.execute(begin)
        try:
            if read_version(db) >= step.version:
                db.execute("ROLLBACK")
                continue
            step.apply(db)
            write_version(db, step.version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return read_version(db)


def migrate_sqlite(db: sqlite3.Connection, steps: Sequence[Migration], *, where: object) -> int:
    """Bring a SQLite database (version in PRAGMA user_version) up to the newest step.

    A version-0 file that already holds tables was made before versions were recorded: every
    owner's first step is written with `IF NOT EXISTS`, so it adopts such a file as is. BEGIN
    IMMEDIATE takes the write lock first, so a second process waits and then sees the new version.
    """
    return migrate(
        db,
        steps,
        where=where,
        read_version=sqlite_version,
        write_version=lambda con, version: con.execute(f"PRAGMA user_version = {int(version)}"),
        begin="BEGIN IMMEDIATE",
    )


# The DuckDB catalog's table of item leases (catalog version 3; `workspace/leases.py` owns its
# use). One row per (scope, item): `scope` is `<stage>:<config hash>`; `state` is `held` while a
# process works on the item (its run, pid and host, renewed before `expires_at`) and `settled`
# once the item's record is written (`status` says done or failed). No key constraint: every
# change happens in a transaction of the one process that holds the catalog's write lock.
CATALOG_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    scope VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    state VARCHAR NOT NULL,         -- held | settled
    status VARCHAR,                 -- of a settled item: done | failed
    run_id VARCHAR NOT NULL,
    pid INTEGER NOT NULL,
    hostname VARCHAR NOT NULL,
    expires_at TIMESTAMP NOT NULL,  -- UTC: a held lease past it may be taken over
    updated_at TIMESTAMP NOT NULL   -- UTC
)
"""


def run_script(sql: str) -> Callable[[Any], None]:
    """A step that runs SQL statements separated by `;` (both DuckDB and SQLite take them one by one)."""

    def apply(db: Any) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                db.execute(statement)

    return apply
