"""The call log: one flushed line per call, totals per trace, and the workspace artifact."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from oresearch_cli.llm import CALLS_KIND, CallLog, CallRecord, LLMClient, load_config, read_call_log
from oresearch_cli.workspace import StageSpec, Workspace
from oresearch_cli.workspace.run import register_log

from standin_llm import StandinLLM, ok

KEY = "sk-recorder-test-0123456789abcdef"


def record(i: int, trace: str | None, cost: float | None, status: str = "done") -> CallRecord:
    return CallRecord(
        call_id=f"c{i}",
        run_id=None,
        trace_id=trace,
        role="worker",
        model="m",
        base_url="http://127.0.0.1:8000/v1",
        prompt_tokens=100,
        completion_tokens=10,
        latency_s=0.5,
        cost_usd=cost,
        attempts=1,
        status=status,
        error=None if status == "done" else "boom",
        started_at="2025-06-01T12:00:00+00:00",
        finish_reason="stop" if status == "done" else None,
    )


def test_append_is_flushed_and_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    log = CallLog(path, run_id="r1")

    def writer(offset: int) -> None:
        for i in range(200):
            log.append(record(offset + i, f"t{i % 5}", 0.001))

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Flushed: another reader sees every line before the log is closed.
    lines = path.read_text().splitlines()
    assert len(lines) == 800 and all(line.startswith("{") for line in lines)
    records = list(read_call_log(path))
    assert {r.run_id for r in records} == {"r1"}
    log.close()


def test_totals_per_trace_and_unknown_costs(tmp_path: Path) -> None:
    with CallLog(tmp_path / "calls.jsonl") as log:
        log.append(record(1, "a", 0.01))
        log.append(record(2, "a", 0.02))
        log.append(record(3, "b", None))  # unpriced model
        log.append(record(4, "b", None, status="error"))
        log.append(record(5, None, 0.5))
        by_trace = log.totals_by_trace()
        total = log.totals()
    assert by_trace["a"].cost_usd == pytest.approx(0.03) and by_trace["a"].calls == 2
    assert by_trace["b"].cost_usd is None and by_trace["b"].unpriced_calls == 1 and by_trace["b"].errors == 1
    assert by_trace[None].cost_usd == pytest.approx(0.5)
    assert total.calls == 5 and total.total_tokens == 550 and total.cost_usd == pytest.approx(0.53)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    with CallLog(path) as log:
        log.append(record(1, "a", 0.01))
    with path.open("a") as fh:
        fh.write('{"call_id": "c2", "tra')
    assert [r.call_id for r in read_call_log(path)] == ["c1"]


def test_a_runs_call_log_answers_cost_per_run_and_trace_in_ws_sql(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    run = ws.start_run(StageSpec("synth", "traces"), {"n": 2})
    log_path = run.open_log(CALLS_KIND)
    env = {"OPENAI_API_KEY": KEY}
    with StandinLLM() as srv:
        srv.push(*[ok("step", usage=(1000, 100)) for _ in range(5)])
        cfg = load_config(overrides={"model": "gpt-4o-mini", "base_url": srv.url}, environ=env)

        async def main() -> None:
            async with LLMClient(cfg, CallLog(log_path, run.run_id), environ=env) as llm:
                for trace, n in (("q1", 2), ("q2", 3)):
                    for _ in range(n):
                        await llm.chat("worker", [{"role": "user", "content": trace}], trace_id=trace)

        asyncio.run(main())
    run.append({"id": "q1", "verdict": "accept"})
    run.append({"id": "q2", "verdict": "reject"})
    run.finish()  # registers the log the run opened
    [artifact] = ws.artifacts(run_id=run.run_id, kind=CALLS_KIND)
    assert artifact.n_rows == 5 and artifact.path.exists()

    per_call = (1000 * 0.15 + 100 * 0.60) / 1e6
    _, rows = ws.sql("select run_id, count(*), sum(cost_usd) from llm_calls_all group by run_id")
    assert rows[0][0] == run.run_id and rows[0][1] == 5 and rows[0][2] == pytest.approx(5 * per_call)
    _, rows = ws.sql(
        "select c.trace_id, sum(c.cost_usd) from llm_calls c join traces t on c.trace_id = t.id "
        "where t.verdict = 'accept' group by 1"
    )
    assert rows == [("q1", pytest.approx(2 * per_call))]
    # No key anywhere in the workspace.
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    # Registering again replaces the row instead of doubling the calls.
    register_log(ws, run.run_id, CALLS_KIND, log_path)
    _, rows = ws.sql("select count(*) from llm_calls_all")
    assert rows == [(5,)]
    assert register_log(ws, run.run_id, CALLS_KIND, tmp_path / "missing.jsonl") is None
