"""The tool cache: every search and crawl result, keyed by its normalized request.

One SQLite file in the workspace's `cache/` (WAL mode, so many processes and tasks read and
write it at once). Entries are keyed by (kind, backend cache id, normalized request): a search
by query text and result count, a crawl by normalized URL. Hit and miss counters per kind live
in the same file, so `ores ws status` can show them for every process that used the cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from oresearch_cli.errors import InputError
from oresearch_cli.migrations import Migration, migrate_sqlite, run_script

CACHE_FILE = "tools.sqlite"
KINDS = ("search", "crawl", "summary")
FLUSH_EVERY = 100
FLUSH_SECONDS = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    backend TEXT NOT NULL,
    request TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    kind TEXT PRIMARY KEY,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0
);
"""

# One step per schema change (`oresearch_cli.migrations`; version in PRAGMA user_version). Step 1
# is the schema as the first tools wrote it: a cache of that ores (version 0) is adopted as is.
MIGRATIONS = (Migration(1, "entries and hit counters", run_script(_SCHEMA)),)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(text: str | None) -> float | None:
    """`--cache-ttl`: seconds, or a number with s/m/h/d/w (`90s`, `12h`, `7d`); none/empty: forever."""
    if text is None or not str(text).strip() or str(text).strip().lower() in ("none", "forever", "inf"):
        return None
    match = _DURATION.match(str(text))
    if not match:
        raise InputError(f"--cache-ttl {text!r}: not a duration; use seconds or e.g. 30m, 12h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def request_key(kind: str, backend: str, request: Any) -> tuple[str, str]:
    """(key, request JSON) of a normalized request."""
    text = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(f"{kind}\x00{backend}\x00{text}".encode()).hexdigest()
    return digest, text


class ToolCache:
    """Thread- and task-safe; one connection per instance. `ttl` in seconds (None: forever)."""

    def __init__(
        self, path: Path, ttl: float | None = None, *, read: bool = True, write: bool = True
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.read = read
        self.write = write
        self.hits = dict.fromkeys(KINDS, 0)
        self.misses = dict.fromkeys(KINDS, 0)
        # Counters are added to the file in batches (at most FLUSH_EVERY lookups or FLUSH_SECONDS
        # old, and on close), so a cache hit costs one read, not a write transaction.
        self._pending: dict[tuple[str, str], int] = {}
        self._pending_n = 0
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        migrate_sqlite(self._db, MIGRATIONS, where=path)

    @classmethod
    def for_workspace(cls, ws: Any, ttl: float | None = None) -> ToolCache:
        return cls(Path(ws.cache_dir) / CACHE_FILE, ttl)

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._db.close()

    def flush(self) -> None:
        """Write the pending hit/miss counts to the file."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for (kind, column), n in self._pending.items():
                self._db.execute(
                    f"INSERT INTO counters (kind, {column}) VALUES (?, ?) "
                    f"ON CONFLICT(kind) DO UPDATE SET {column} = {column} + excluded.{column}",
                    (kind, n),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._pending.clear()
        self._pending_n = 0
        self._flushed_at = time.monotonic()

    def get(self, kind: str, backend: str, request: Any) -> Any | None:
        """The cached value, or None (counting a hit or a miss)."""
        if not self.read:
            return None
        key, _ = request_key(kind, backend, request)
        with self._lock:
            row = self._db.execute("SELECT value, created_at FROM entries WHERE key = ?", (key,)).fetchone()
            hit = row is not None and (self.ttl is None or time.time() - row[1] <= self.ttl)
            column = "hits" if hit else "misses"
            self._pending[(kind, column)] = self._pending.get((kind, column), 0) + 1
            self._pending_n += 1
            if self._pending_n >= FLUSH_EVERY or time.monotonic() - self._flushed_at > FLUSH_SECONDS:
                self._flush()
            (self.hits if hit else self.misses)[kind] = (self.hits if hit else self.misses).get(kind, 0) + 1
        return json.loads(row[0]) if hit else None

    def put(self, kind: str, backend: str, request: Any, value: Any) -> None:
        if not self.write:
            return
        key, text = request_key(kind, backend, request)
        payload = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries (key, kind, backend, request, value, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, backend, text, payload, time.time()),
            )

    def clear(self, kind: str | None = None) -> int:
        with self._lock:
            if kind:
                cursor = self._db.execute("DELETE FROM entries WHERE kind = ?", (kind,))
            else:
                cursor = self._db.execute("DELETE FROM entries")
            return cursor.rowcount


def cache_stats(ws: Any) -> dict[str, Any]:
    """Entries, hits and misses per kind, and the file size, without creating the cache.

    `{"path": str, "bytes": int, "kinds": {"search": {"entries", "hits", "misses"}, ...}}`"""
    path = Path(ws.cache_dir) / CACHE_FILE
    kinds = {kind: {"entries": 0, "hits": 0, "misses": 0} for kind in KINDS}
    result: dict[str, Any] = {"path": str(path), "bytes": 0, "kinds": kinds}
    if not path.exists():
        return result
    result["bytes"] = sum(p.stat().st_size for p in path.parent.glob(CACHE_FILE + "*") if p.is_file())
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        for kind, count in db.execute("SELECT kind, count(*) FROM entries GROUP BY kind"):
            kinds.setdefault(kind, {"entries": 0, "hits": 0, "misses": 0})["entries"] = count
        for kind, hits, misses in db.execute("SELECT kind, hits, misses FROM counters"):
            entry = kinds.setdefault(kind, {"entries": 0, "hits": 0, "misses": 0})
            entry["hits"], entry["misses"] = hits, misses
    except sqlite3.DatabaseError:
        pass
    finally:
        db.close()
    return result
