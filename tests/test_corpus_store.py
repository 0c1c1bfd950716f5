"""The corpus document store's schema versions: a store built before `page_key` is migrated."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from oresearch_cli.errors import WorkspaceError
from oresearch_cli.textutil.urls import page_key
from oresearch_cli.tools.corpus import store as store_module
from oresearch_cli.tools.corpus.store import STEPS, DocStore, Document
from oresearch_cli.tools.errors import CorpusError

# The store exactly as ores wrote it before schema versions (user_version 0): the old tools
# `url_identity` key kept `www.` and percent-encoding, so `http://example.org/Café` missed it.
_OLD_SCHEMA = """
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
_OLD_ROWS = [
    (
        "cafe",
        "https://www.example.org/Caf%C3%A9/",
        "www.example.org/Caf%C3%A9",
        "Café",
        "About the café.",
        "{}",
    ),
    ("root", "https://example.org", "example.org/", "Home", "The home page.", '{"k": 1}'),
]
CAFE_SPELLINGS = [
    "https://www.example.org/Caf%C3%A9/",
    "http://example.org/Café",
    "https://example.org/Caf%c3%a9#menu",
    "HTTPS://WWW.EXAMPLE.ORG:443/Café/",
    "https://example.org/Café).",
]


def _old_store(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(_OLD_SCHEMA)
    db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?)", _OLD_ROWS)
    db.commit()
    db.close()
    return path


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_old_store_is_migrated_and_found_under_every_spelling(tmp_path: Path) -> None:
    path = _old_store(tmp_path / "docs.sqlite")
    assert _version(path) == 0
    store = DocStore(path)
    try:
        for spelling in CAFE_SPELLINGS:
            doc = store.get_by_url(spelling)
            assert doc is not None and doc.id == "cafe", spelling
        root = store.get_by_url("http://www.example.org/")
        assert root is not None and root.meta == {"k": 1}
        assert store.get("cafe") is not None and store.count() == 2
        with pytest.raises(sqlite3.OperationalError):  # still opened read-only for searching
            store._db.execute("DELETE FROM docs")
    finally:
        store.close()
    assert _version(path) == len(STEPS)
    db = sqlite3.connect(path)
    keys = dict(db.execute("SELECT id, url_key FROM docs").fetchall())
    db.close()
    assert keys == {"cafe": page_key("https://www.example.org/Caf%C3%A9/"), "root": "example.org"}


def test_a_current_store_is_opened_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "docs.sqlite"
    built = DocStore(path, create=True)
    built.add_many([Document(id="cafe", url="https://www.example.org/Caf%C3%A9/", title="Café", text="x")])
    built.commit()
    built.close()
    assert _version(path) == len(STEPS)
    mtime = path.stat().st_mtime_ns
    store = DocStore(path)
    try:
        assert store.get_by_url("http://example.org/Café").id == "cafe"  # type: ignore[union-attr]
    finally:
        store.close()
    assert path.stat().st_mtime_ns == mtime


def test_an_old_store_that_cannot_be_written_asks_for_a_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _old_store(tmp_path / "docs.sqlite")

    def readonly(*args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(store_module, "migrate_sqlite", readonly)
    with pytest.raises(CorpusError, match=r"cannot be written .* rebuild the corpus with `ores corpus build"):
        DocStore(path)
    assert _version(path) == 0


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only files")
def test_an_old_read_only_file_asks_for_a_rebuild(tmp_path: Path) -> None:
    path = _old_store(tmp_path / "docs.sqlite")
    path.chmod(stat.S_IRUSR)
    try:
        with pytest.raises(CorpusError, match="ores corpus build"):
            DocStore(path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_a_store_from_a_newer_ores_is_refused(tmp_path: Path) -> None:
    path = _old_store(tmp_path / "docs.sqlite")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(STEPS) + 1}")
    db.close()
    with pytest.raises(WorkspaceError, match="newer than this ores"):
        DocStore(path)
