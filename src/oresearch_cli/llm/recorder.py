"""One record per chat call: who asked, which endpoint and model, tokens, latency, cost, outcome.

`CallLog` appends records to a JSONL file, one flushed line per call, so a killed run keeps what
it paid for. At the end of a run `register_call_log` turns the file into a Parquet artifact of
kind `llm_calls` in the workspace, so that `ores ws sql` can answer what a run and each trace cost:

    select run_id, sum(cost_usd), sum(prompt_tokens + completion_tokens) from llm_calls_all group by 1
    select trace_id, sum(cost_usd) from llm_calls_all where run_id = '...' group by 1

A record holds no API key and no request header: base URLs are stored without credentials or
query strings and error texts are redacted by the client before they get here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from oresearch_cli.workspace import ArtifactInfo, Workspace

log = logging.getLogger(__name__)
CALLS_KIND = "llm_calls"
CALL_LOG_FILE = "llm_calls.jsonl"  # in each run's directory: the log a run appends to as it goes
STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass
class CallRecord:
    call_id: str
    run_id: str | None
    trace_id: str | None
    role: str
    model: str
    base_url: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float | None  # None: the price of this model is unknown
    attempts: int
    status: str  # ok | error
    error: str | None
    started_at: str  # ISO 8601, UTC
    finish_reason: str | None = None  # stop | length (truncated) | tool_calls | ...

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


CALL_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("trace_id", pa.string()),
        ("role", pa.string()),
        ("model", pa.string()),
        ("base_url", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("cost_usd", pa.float64()),
        ("attempts", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finish_reason", pa.string()),
    ]
)


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
        self.errors += record.status != STATUS_OK
        self.truncated += record.finish_reason == "length"
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.latency_s += record.latency_s
        if record.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + record.cost_usd
        elif record.status == STATUS_OK:
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
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "call_id" in data:
                yield CallRecord.from_dict(data)


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


def write_call_parquet(jsonl: Path, out: Path) -> int:
    """The call log as Parquet (schema `CALL_SCHEMA`; run_id comes from the artifact); returns rows."""
    rows = []
    for record in read_call_log(jsonl):
        row = asdict(record)
        row.pop("run_id")
        row["started_at"] = datetime.fromisoformat(row["started_at"]) if row["started_at"] else None
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=CALL_SCHEMA)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    return table.num_rows


def register_call_log(ws: Workspace, run_id: str, path: str | Path) -> ArtifactInfo | None:
    """Turn a run's call log into its `llm_calls` Parquet artifact and the `llm_calls`/`llm_calls_all`
    views. Returns None (and registers nothing) when the log does not exist.

    The workspace has no public call for a second artifact of a run, so this writes the catalog row
    the way `Run.finish` does, in one short transaction.
    """
    from oresearch_cli.workspace.catalog import connect
    from oresearch_cli.workspace.models import ArtifactInfo
    from oresearch_cli.workspace.run import sha256_file

    path = Path(path)
    if not path.exists():
        return None
    out = path.with_suffix(".parquet")
    n_rows = write_call_parquet(path, out)
    artifact = ArtifactInfo(
        run_id=run_id,
        kind=CALLS_KIND,
        path=out,
        format="parquet",
        n_rows=n_rows,
        sha256=sha256_file(out),
        created_at=datetime.now(),
    )
    with connect(ws.catalog_path) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM artifacts WHERE run_id = ? AND kind = ?", [run_id, CALLS_KIND])
        con.execute(
            "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, CALLS_KIND, ws.relative(out), "parquet", n_rows, artifact.sha256, artifact.created_at],
        )
        ws.refresh_views(con, CALLS_KIND)
        con.execute("COMMIT")
    return artifact


def register_unlogged_calls(ws: Workspace, stage: str) -> list[str]:
    """Register the call logs of earlier `stage` runs that never registered theirs (a `kill -9`
    stops a run before it can): what they paid for stays answerable in `llm_calls_all`. Returns
    the run ids registered. A run still going elsewhere registers its full log again when it ends.
    A log that cannot be registered is logged and skipped: it is bookkeeping of an earlier run
    and must not stop this one.
    """
    registered = {a.run_id for a in ws.artifacts(kind=CALLS_KIND)}
    done = []
    for run in ws.runs(stage=stage):
        path = ws.run_dir(stage, run.run_id) / CALL_LOG_FILE
        if run.run_id in registered or not path.exists():
            continue
        try:
            register_call_log(ws, run.run_id, path)
        except Exception:  # noqa: BLE001
            log.exception("could not register the call log %s of an earlier run", path)
            continue
        done.append(run.run_id)
    return done
