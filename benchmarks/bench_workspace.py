"""Workspace append throughput vs writing the same records as plain JSONL, in one run.

`RunContext.append` adds an id/status envelope and a lock around a flushed line; `finish` turns the
JSONL into Parquet and registers it in the catalog. The plain baseline writes and flushes the
same JSON lines to a file and nothing else.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from oresearch_cli.workspace import StageSpec, Workspace

from common import Result

N_ITEMS = 20_000


def _records() -> list[dict]:
    body = "Observation text about photosynthesis and the Calvin cycle. " * 16  # ~1 KB
    return [
        {"id": str(i), "question": f"question {i}", "trace": body, "tokens": i % 4096} for i in range(N_ITEMS)
    ]


def _plain_jsonl(path: Path, records: list[dict]) -> float:
    started = time.perf_counter()
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
    return time.perf_counter() - started


def _workspace(root: Path, records: list[dict]) -> tuple[float, float]:
    ws = Workspace.open(root)
    run = ws.start_run(StageSpec("bench", "bench_items"), {"n": len(records)})
    started = time.perf_counter()
    for record in records:
        run.append(record)
    appended = time.perf_counter() - started
    run.finish()
    return appended, time.perf_counter() - started


def run() -> list[Result]:
    records = _records()
    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-ws-"))
    try:
        # Best of three for each side, interleaved so machine noise hits both alike.
        plain, append, total = [], [], []
        for i in range(3):
            plain.append(_plain_jsonl(tmp / f"plain{i}.jsonl", records))
            a, t = _workspace(tmp / f"ws{i}", records)
            append.append(a)
            total.append(t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    plain_rate = N_ITEMS / min(plain)
    return [
        Result(
            "workspace append (flushed per item)",
            N_ITEMS / min(append),
            "items/s",
            baseline=plain_rate,
            baseline_label="plain JSONL",
            target=">= 0.5x",
            note=f"{N_ITEMS:,} items of ~1 KB; ratio = ours / plain",
        ),
        Result(
            "workspace append + finish (Parquet, catalog)",
            N_ITEMS / min(total),
            "items/s",
            baseline=plain_rate,
            baseline_label="plain JSONL",
            note="includes JSONL -> Parquet and catalog registration",
        ),
    ]
