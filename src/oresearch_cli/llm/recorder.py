"""One record per chat call: who asked, which endpoint and model, tokens, latency, cost, outcome.

`CallLog` appends records to a JSONL file, one flushed line per call, so a killed run keeps what
it paid for. A stage opens it at `run.open_log(CALLS_KIND)`; the run registers it as a Parquet
artifact of kind `llm_calls` when it ends (`CallRecord` is that kind's record class), so that
`ores ws sql` can answer what a run and each trace cost:

    select run_id, sum(cost_usd), sum(prompt_tokens + completion_tokens) from llm_calls_all group by 1
    select trace_id, sum(cost_usd) from llm_calls_all where run_id = '...' group by 1

A record holds no API key and no request header: base URLs are stored without credentials or
query strings and error texts are redacted by the client before they get here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Protocol

import pyarrow as pa

from oresearch_cli.files import iter_jsonl_tolerant
from oresearch_cli.workspace.records import ArtifactRecord, Status

CALLS_KIND = "llm_calls"


@dataclass
class CallRecord(ArtifactRecord):
    """One chat call. `status` is done or failed; `run_id` is in the JSONL only (the catalog's
    views add the run id of the artifact)."""

    KIND: ClassVar[str] = CALLS_KIND

    call_id: str
    run_id: str | None = field(metadata={"parquet": False})
    trace_id: str | None
    role: str
    model: str
    base_url: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float | None  # None: the price of this model is unknown
    attempts: Annotated[int, pa.int32()]
    status: Status
    error: str | None
    started_at: Annotated[str, pa.timestamp("us", tz="UTC")]  # ISO 8601, UTC
    finish_reason: str | None = None  # stop | length (truncated) | tool_calls | ...

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # logs of older versions said ok/error

    def to_json(self) -> str:
        return json.dumps(self.to_row(), ensure_ascii=False)


class Recorder(Protocol):
    """Anything that takes call records; `CallLog` is the one that writes them down."""

    def append(self, record: CallRecord) -> None: ...


@dataclass
class Totals:
    """Sums over calls. `cost_usd` adds the priced calls (None when none was); `unpriced_calls`
    counts the successful calls whose model has no price, so a partial sum is visible as one."""

    calls: int = 0
    errors: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = None
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, record: CallRecord) -> None:
        self.calls += 1
        self.errors += record.status != Status.DONE
        self.truncated += record.finish_reason == "length"
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.latency_s += record.latency_s
        if record.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + record.cost_usd
        elif record.status == Status.DONE:
            self.unpriced_calls += 1


def sum_records(records: Iterable[CallRecord]) -> Totals:
    totals = Totals()
    for record in records:
        totals.add(record)
    return totals


def totals_by_trace(records: Iterable[CallRecord]) -> dict[str | None, Totals]:
    """Totals per trace id (None collects calls made outside any trace)."""
    by_trace: dict[str | None, Totals] = {}
    for record in records:
        by_trace.setdefault(record.trace_id, Totals()).add(record)
    return by_trace


def read_call_log(path: Path) -> Iterator[CallRecord]:
    """Records of a call log; a line torn by a killed writer is skipped."""
    for data in iter_jsonl_tolerant(path, key="call_id"):
        yield CallRecord.from_row(data)


class CallLog:
    """Appends `CallRecord`s to a JSONL file, one flushed line each, from any task or thread.

    Records get this log's `run_id` when they have none. `totals()` and `totals_by_trace()` read
    the file back, so they include what earlier processes appended to it.
    """

    def __init__(self, path: str | Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, record: CallRecord) -> None:
        if record.run_id is None:
            record.run_id = self.run_id
        line = record.to_json() + "\n"
        with self._lock:
            if self._fh.closed:
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(line)
            self._fh.flush()

    def records(self) -> list[CallRecord]:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
        return list(read_call_log(self.path))

    def totals(self) -> Totals:
        return sum_records(self.records())

    def totals_by_trace(self) -> dict[str | None, Totals]:
        return totals_by_trace(self.records())

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
