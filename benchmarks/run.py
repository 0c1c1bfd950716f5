"""`make bench`: run every benchmarks/bench_*.py and print its side-by-side ratios in one table.

Each module defines `run() -> list[Result]`. A ratio compares two things measured in the same run
on the same machine (ours vs a peer, parallel vs sequential, achieved vs ideal), so it stays
meaningful across machines where absolute timings do not.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Result  # noqa: E402


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="ores benchmarks (ratios measured side by side in one run)", title_justify="left")
    for column in ("benchmark", "ours", "baseline", "ratio", "target", "note"):
        table.add_column(column)
    for name in names:
        started = time.perf_counter()
        module = importlib.import_module(name)
        results: list[Result] = module.run()
        for r in results:
            table.add_row(r.name, r.ours_text(), r.baseline_text(), r.ratio_text(), r.target or "", r.note)
        console.print(f"[dim]{name}: {time.perf_counter() - started:.1f}s[/]")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
