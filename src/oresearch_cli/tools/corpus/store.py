"""The document store of a corpus: whole documents in SQLite, found by id or by URL."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oresearch_cli.tools.semantics import url_identity

_SCHEMA = """
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


@dataclass
class Document:
    id: str
    url: str
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


class DocStore:
    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        uri = f"file:{path}" + ("" if create else "?mode=ro")
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        if create:
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.executescript(_SCHEMA)

    def add_many(self, docs: list[Document]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO docs (id, url, url_key, title, text, meta) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.id,
                        d.url,
                        url_identity(d.url),
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
                "SELECT id, url, title, text, meta FROM docs WHERE url_key = ? LIMIT 1", (url_identity(url),)
            ).fetchone()
        return self._row(row)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM docs").fetchone()[0])
