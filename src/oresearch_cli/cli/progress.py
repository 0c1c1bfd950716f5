"""The CLI's `Progress` (oresearch_cli.workspace.progress): a rich bar on stderr when it is a
terminal; one line per item otherwise, since a bar in a log file shows nothing until the end."""

from __future__ import annotations

import time
from typing import Any

from oresearch_cli.cli.common import err


class ConsoleProgress:
    def __init__(self) -> None:
        self.lines = not err.is_terminal
        self.label = ""
        self.total = 0
        self.done = 0  # items finished in the current phase (what a Ctrl-C message reports kept)
        self._bar: Any = None
        self._task: Any = None
        self._started = time.perf_counter()

    def start(self, label: str, total: int, note: str = "") -> None:
        self.stop()
        self.label, self.total, self.done = label, total, 0
        self._started = time.perf_counter()
        if self.lines:
            if note:
                err.print(f"{label} {note}", highlight=False, markup=False)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, stats="")

    def _rate(self) -> str:
        minutes = max(time.perf_counter() - self._started, 1e-6) / 60
        return f"{self.done / minutes:.1f}/min"

    def advance(self, n: int = 1, *, item: str = "", stats: str = "") -> None:
        self.done += n
        shown = f"{stats} | {self._rate()}" if stats else self._rate()
        if self.lines:
            what = f" {item}" if item else ""
            err.print(
                f"{self.label} {self.done}/{self.total}{what} | {shown}",
                highlight=False,
                markup=False,
            )
        elif self._bar is not None:
            self._bar.update(self._task, advance=n, stats=shown)

    def stop(self) -> None:
        # A bar never started (the run failed its checks) would print a stray blank line before
        # the one-line error.
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None
