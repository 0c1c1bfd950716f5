"""Item leases: processes running one stage with one config on one workspace share its items.

Before a process works on an item it claims it in the catalog's `leases` table (schema in
`migrations.CATALOG_LEASES`); the claim names its run, pid and host and expires unless renewed.
Once the item's record is written the lease is settled (done or failed) and stays, so that a
sibling process that has not seen the record yet skips the item instead of paying for it again.

    book = run.leases()                       # this run's leases, scope = stage + config hash
    with book, renewing(book):                # renewed while the block runs; held ones released after
        claim = book.claim(item_id)
        if claim.ok:
            ...                               # work, write the record
            book.settle(item_id, "done")
        elif claim.result is ClaimResult.HELD:
            ...                               # another live process has it: come back later

A held lease can be taken over when its holder is gone: its process is dead (same host), it is
an ended run of this very process, or it was not renewed before `expires_at` (any host, which is
what covers a process on another machine sharing the workspace). Every claim is one catalog
transaction; DuckDB lets one process write the file at a time, so claims never race, and a
process-wide lock keeps the threads of one process from racing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oresearch_cli.workspace.catalog import connect
from oresearch_cli.workspace.models import _pid_alive

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 120.0
HELD = "held"
SETTLED = "settled"

# Runs of this process with an open lease book: a lease of this pid whose run is not among them
# was left by a run that ended here (in a test, or a library caller running several in turn).
_ACTIVE: set[str] = set()
# One catalog transaction on leases at a time in this process, for callers on several threads
# (threads share DuckDB's instance; the question loop calls from its event loop's thread only).
_LOCK = threading.Lock()

_COLUMNS = "item_id, state, status, run_id, pid, hostname, expires_at, updated_at"


def utcnow() -> datetime:
    """Now in UTC, naive (how the catalog stores lease times)."""
    return datetime.now(UTC).replace(tzinfo=None)


class ClaimResult(str, enum.Enum):
    CLAIMED = "claimed"  # this run holds the item now
    HELD = "held"  # another live process works on it
    SETTLED = "settled"  # its record is written already (done, or failed and not retried)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Lease:
    """One row of `leases`."""

    item_id: str
    state: str  # held | settled
    status: str | None  # of a settled item: done | failed
    run_id: str
    pid: int
    hostname: str
    expires_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Lease:
        item_id, state, status, run_id, pid, hostname, expires_at, updated_at = row
        return cls(str(item_id), state, status, run_id, int(pid), hostname, expires_at, updated_at)

    def holder_alive(self, now: datetime) -> bool:
        """Whether a held lease still binds: renewed in time, and its process (on this host) alive."""
        if self.state != HELD or self.expires_at <= now:
            return False
        if self.hostname != socket.gethostname():
            return True  # another machine: only its expiry can tell
        if self.pid == os.getpid():
            return self.run_id in _ACTIVE
        return _pid_alive(self.pid)


@dataclass(frozen=True)
class Claim:
    """What a claim found. `previous`: the lease that was there (its holder when HELD, who settled
    it when SETTLED, the dead holder or the old failure taken over when CLAIMED; None if none)."""

    item_id: str
    result: ClaimResult
    previous: Lease | None = None

    @property
    def ok(self) -> bool:
        return self.result is ClaimResult.CLAIMED

    @property
    def taken_over_from(self) -> str | None:
        """The run whose held lease this claim took over (its process died or stopped renewing)."""
        if self.ok and self.previous is not None and self.previous.state == HELD:
            return self.previous.run_id
        return None


class LeaseBook:
    """The leases of one run over one scope (`<stage>:<config hash>`). Use as a context manager:
    leaving it releases what the run still holds, so a sibling can take those items at once."""

    def __init__(
        self,
        catalog_path: Path,
        scope: str,
        run_id: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        since: datetime | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease's ttl must be positive")
        self.catalog_path = catalog_path
        self.scope = scope
        self.run_id = run_id
        self.ttl = timedelta(seconds=ttl_s)
        # Failures settled before this moment may be retried (`retry_failed`); later ones are a
        # sibling's of this same round, and retrying them again would pay twice.
        self.since = since or utcnow()
        self.pid = os.getpid()
        self.hostname = socket.gethostname()
        _ACTIVE.add(run_id)

    @property
    def renew_every_s(self) -> float:
        return self.ttl.total_seconds() / 3

    # -- claiming ------------------------------------------------------------------------------

    def judge(self, lease: Lease | None, now: datetime, retry_failed: bool = False) -> ClaimResult:
        """What a claim on an item with `lease` gets (no catalog access: the rule, on its own)."""
        if lease is None:
            return ClaimResult.CLAIMED
        if lease.state == SETTLED:
            if lease.status == "failed" and retry_failed and lease.updated_at < self.since:
                return ClaimResult.CLAIMED
            return ClaimResult.SETTLED
        if lease.run_id == self.run_id or not lease.holder_alive(now):
            return ClaimResult.CLAIMED
        return ClaimResult.HELD

    def claim(self, item_id: str, *, retry_failed: bool = False) -> Claim:
        """Take the item unless another live process holds it or its record is written already."""
        item_id = str(item_id)
        with _LOCK, connect(self.catalog_path) as con:
            con.execute("BEGIN")
            try:
                row = con.execute(
                    f"SELECT {_COLUMNS} FROM leases WHERE scope = ? AND item_id = ? LIMIT 1",
                    [self.scope, item_id],
                ).fetchone()
                lease = Lease.from_row(row) if row is not None else None
                now = utcnow()
                result = self.judge(lease, now, retry_failed)
                if result is ClaimResult.CLAIMED:
                    self._write(con, item_id, HELD, None, now, exists=lease is not None)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return Claim(item_id, result, lease)

    def settle(self, item_id: str, status: str) -> None:
        """The item's record is written (`status`: done or failed): siblings skip it from now on."""
        with _LOCK, connect(self.catalog_path) as con:
            con.execute("BEGIN")
            try:
                exists = con.execute(
                    "SELECT count(*) FROM leases WHERE scope = ? AND item_id = ?", [self.scope, str(item_id)]
                ).fetchone()
                self._write(
                    con, str(item_id), SETTLED, str(status), utcnow(), exists=bool(exists and exists[0])
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _write(
        self, con: Any, item_id: str, state: str, status: str | None, now: datetime, *, exists: bool
    ) -> None:
        values = [state, status, self.run_id, self.pid, self.hostname, now + self.ttl, now]
        if exists:
            con.execute(
                """UPDATE leases SET state = ?, status = ?, run_id = ?, pid = ?, hostname = ?,
                   expires_at = ?, updated_at = ? WHERE scope = ? AND item_id = ?""",
                [*values, self.scope, item_id],
            )
        else:
            con.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [self.scope, item_id, *values]
            )

    # -- keeping and letting go ---------------------------------------------------------------------

    def renew(self) -> int:
        """Push back the expiry of every lease this run holds; returns how many."""
        now = utcnow()
        with _LOCK, connect(self.catalog_path) as con:
            row = con.execute(
                """UPDATE leases SET expires_at = ?, updated_at = ?
                   WHERE scope = ? AND run_id = ? AND state = ? RETURNING item_id""",
                [now + self.ttl, now, self.scope, self.run_id, HELD],
            ).fetchall()
        return len(row)

    def release(self, item_id: str) -> None:
        """Give up a held item unsettled (its work was abandoned): a sibling may take it at once."""
        with _LOCK, connect(self.catalog_path) as con:
            con.execute(
                "DELETE FROM leases WHERE scope = ? AND item_id = ? AND run_id = ? AND state = ?",
                [self.scope, str(item_id), self.run_id, HELD],
            )

    def release_all(self) -> int:
        """Give up every item this run still holds; returns how many."""
        with _LOCK, connect(self.catalog_path) as con:
            rows = con.execute(
                "DELETE FROM leases WHERE scope = ? AND run_id = ? AND state = ? RETURNING item_id",
                [self.scope, self.run_id, HELD],
            ).fetchall()
        return len(rows)

    def leases(self) -> list[Lease]:
        """Every lease of the scope (held or settled), by item id."""
        with connect(self.catalog_path, read_only=True) as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM leases WHERE scope = ? ORDER BY item_id", [self.scope]
            ).fetchall()
        return [Lease.from_row(row) for row in rows]

    def settled(self) -> dict[str, Lease]:
        """The scope's settled items, in one read: a loop skips them without a claim each."""
        with connect(self.catalog_path, read_only=True) as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM leases WHERE scope = ? AND state = ?", [self.scope, SETTLED]
            ).fetchall()
        return {str(row[0]): Lease.from_row(row) for row in rows}

    def close(self) -> None:
        """Let go of what the run still holds. Failing that (a catalog locked too long), the
        leases lapse by themselves: siblings see this process gone, or the expiry pass."""
        try:
            self.release_all()
        except Exception:  # noqa: BLE001 - must not hide the error that ended the run
            log.warning("could not release the leases of %s", self.run_id, exc_info=True)
        finally:
            _ACTIVE.discard(self.run_id)

    def __enter__(self) -> LeaseBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.asynccontextmanager
async def renewing(book: LeaseBook) -> AsyncIterator[LeaseBook]:
    """Renew the book's held leases every third of their lifetime while the block runs."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(book.renew_every_s)
            try:
                book.renew()  # on the loop's thread, like every other catalog use of the run
            except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease lasts 3 periods
                log.warning("could not renew the leases of %s", book.run_id, exc_info=True)

    task = asyncio.ensure_future(loop())
    try:
        yield book
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def scope_of(stage: str, chash: str) -> str:
    """The lease scope of a stage's runs with one config: only they share items."""
    return f"{stage}:{chash}"
