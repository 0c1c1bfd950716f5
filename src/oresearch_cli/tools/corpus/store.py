"""The document store of a corpus: whole documents in SQLite, found by id or by URL.

A document's `url_key` is `page_key(url)`, computed when the corpus is built. The file records its
schema version in `PRAGMA user_version` (see `oresearch_cli.migrations`): a change to `page_key`'s
rules needs a new step below that recomputes `url_key`, or stores built before it miss lookups.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oresearch_cli.migrations import Migration, migrate_sqlite, pending, run_script, sqlite_version
from oresearch_cli.textutil.urls import page_key
from oresearch_cli.tools.errors import CorpusError

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    url_key TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_url_key ON docs (url_key);
"""


def _recompute_url_keys(db: sqlite3.Connection) -> None:
    db.create_function("page_key", 1, page_key, deterministic=True)
    db.execute("UPDATE docs SET url_key = page_key(url)")


STEPS = (
    # Adopts a store built before versions were recorded (version 0), whose url_key followed the
    # tools' old identity rules (www. and percent-encoding kept).
    Migration(1, "the documents table, found by id and by url_key", run_script(_SCHEMA_V1)),
    Migration(2, "url_key is page_key(url)", _recompute_url_keys),
)


@dataclass
class Document:
    id: str
    url: str
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


class DocStore:
    """Opened read-only for searching (`create=False`); a store an older ores built is migrated
    first, once, through a read-write connection, then reopened read-only."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        if create:
            self._db = sqlite3.connect(f"file:{path}", uri=True, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            migrate_sqlite(self._db, STEPS, where=path)
            return
        self._db = self._open_ro()
        try:
            stale = bool(pending(STEPS, sqlite_version(self._db), path))
        except BaseException:
            self._db.close()
            raise
        if stale:
            self._db.close()
            _migrate(path)
            self._db = self._open_ro()

    def _open_ro(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)

    def add_many(self, docs: list[Document]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO docs (id, url, url_key, title, text, meta) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.id,
                        d.url,
                        page_key(d.url),
                        d.title,
                        d.text,
                        json.dumps(d.meta, ensure_ascii=False),
                    )
                    for d in docs
                ],
            )

    def commit(self) -> None:
        with self._lock:
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: tuple[Any, ...] | None) -> Document | None:
        if row is None:
            return None
        return Document(id=row[0], url=row[1], title=row[2], text=row[3], meta=json.loads(row[4]))

    def get(self, doc_id: str) -> Document | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, url, title, text, meta FROM docs WHERE id = ?", (doc_id,)
            ).fetchone()
        return self._row(row)

    def get_by_url(self, url: str) -> Document | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, url, title, text, meta FROM docs WHERE url_key = ? LIMIT 1", (page_key(url),)
            ).fetchone()
        return self._row(row)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM docs").fetchone()[0])


def _migrate(path: Path) -> None:
    """Bring an existing store up to the newest schema; one clear line when it cannot be written."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        raise _cannot_migrate(path, exc) from None
    try:
        migrate_sqlite(db, STEPS, where=path)
    except sqlite3.Error as exc:
        raise _cannot_migrate(path, exc) from None
    finally:
        db.close()


def _cannot_migrate(path: Path, exc: BaseException) -> CorpusError:
    return CorpusError(
        f"{path}: this corpus was built by an older ores and its document store needs an upgrade, "
        f"but the file cannot be written ({exc}); rebuild the corpus with `ores corpus build SRC "
        "--name NAME --force`"
    )
