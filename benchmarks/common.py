"""Shared result type and timing helper for the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    name: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str | None = None
    note: str = ""
    # For throughputs higher is better, so ratio = ours / baseline; for latencies the reverse.
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    def ours_text(self) -> str:
        return f"{self.ours:,.1f} {self.unit}"

    def baseline_text(self) -> str:
        if self.baseline is None:
            return "-"
        return f"{self.baseline:,.1f} {self.unit} ({self.baseline_label})"

    def ratio_text(self) -> str:
        return "-" if self.ratio is None else f"{self.ratio:.2f}x"


def throughput(fn: Callable[[], object], items_per_call: int, min_seconds: float = 1.0) -> float:
    """Items per second of `fn`, repeated until at least `min_seconds` have passed."""
    fn()  # warm-up: imports, caches
    calls = 0
    started = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return calls * items_per_call / elapsed
