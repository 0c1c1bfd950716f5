"""How a stage reports progress: a Protocol the CLI implements (a rich bar on a terminal, one
line per item otherwise); library callers pass nothing and get `NoProgress`."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int, note: str = "") -> None:
        """A phase begins: `total` items to do (`note`: what was skipped, shown once)."""

    def advance(self, n: int = 1, *, item: str = "", stats: str = "") -> None:
        """`n` items finished; `item` says which and how, `stats` the phase's totals so far."""

    def stop(self) -> None:
        """The work ended (or failed): release the terminal. The run context calls it when the
        run ends; it must be safe to call more than once."""


class NoProgress:
    """Reports nothing."""

    def start(self, label: str, total: int, note: str = "") -> None:
        return None

    def advance(self, n: int = 1, *, item: str = "", stats: str = "") -> None:
        return None

    def stop(self) -> None:
        return None
