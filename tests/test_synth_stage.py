"""`ores synth`, the stage: one trace per seed in the workspace and what each cost, resume after
failed seeds, kill -9 and Ctrl-C, shards, user errors, piping, API keys, sequential mode.

Against the stand-in endpoint answering as `Teacher` (2 subtasks of 2 tool calls: 10 calls per
seed) and the tiny "mini" corpus. What a user sees runs the real CLI in a subprocess; the rest
calls `run_synth`, which is faster (no interpreter start, no openai import per run).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oresearch_cli.agent import ResearchOptions
from oresearch_cli.errors import OresError
from oresearch_cli.stages.synth import SynthOptions, SynthSummary, parse_shard, run_synth, shard_of
from oresearch_cli.trace import parse
from oresearch_cli.workspace import Workspace
from oresearch_cli.workspace.run import iter_jsonl_tolerant

from conftest import REPO, error_lines
from model_support import sigint_as_at_a_terminal
from standin_llm import Received, Reply, StandinLLM, error
from synth_support import (
    MODELS,
    Teacher,
    build_test_corpus,
    llm_config,
    piece_of,
    planner_question,
    refusing_planner,
    synth_cli_args,
    write_priced_config,
    write_seeds,
)

CALLS_PER_SEED = 1 + 2 * 4 + 1  # planner, 2 subtasks x (3 steps + answer), summarizer
SECRET = "ores-test-secret-5c1f0e9b7a"  # not shaped like a key: only the client's own redaction hides it


# -- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the "mini" corpus, built once; each test works on a copy."""
    tmp = tmp_path_factory.mktemp("synth-template")
    build_test_corpus(Workspace.open(tmp / "ws"), tmp)
    return tmp / "ws"


@pytest.fixture
def ws_dir(template_ws: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template_ws, tmp_path / "ws"))


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without LLM settings (they would leak into the runs), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORES_", "OPENAI_"))}
    return {**env, "COLUMNS": "200", **extra}


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oresearch_cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=120,
    )


def _popen(*args: str, cwd: Path, stderr_path: Path) -> subprocess.Popen[str]:
    # stderr to a file: an unread pipe could fill up and stall the run the test is waiting on.
    # SIGINT as a foreground process at a terminal has it: under a background job it is inherited
    # ignored, and a Ctrl-C test would never interrupt.
    return subprocess.Popen(
        [sys.executable, "-m", "oresearch_cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=stderr_path.open("w"),
        text=True,
        env=_env(),
        preexec_fn=sigint_as_at_a_terminal,
    )


def _traces(ws_dir: Path) -> list[dict[str, Any]]:
    ws = Workspace.open(ws_dir)
    return ws.read_artifact(ws.require_latest("traces", "synth"))


def _live_records(ws_dir: Path) -> list[dict[str, Any]]:
    """Records in the JSONL of unfinished synth runs (what a killed or interrupted run kept)."""
    return [r for path in ws_dir.glob("artifacts/synth/*/traces.jsonl") for r in iter_jsonl_tolerant(path)]


def _wait_for_traces(ws_dir: Path, n: int, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(_live_records(ws_dir)) < n:
        assert proc.poll() is None, f"synth exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"fewer than {n} traces written in {timeout}s"
        time.sleep(0.02)


def _planner_questions(srv: StandinLLM) -> list[str]:
    return [q for r in srv.chat_requests() if (q := planner_question(r))]


def _run(
    ws_dir: Path, seeds: Path, url: str, research: ResearchOptions | None = None, **options: Any
) -> tuple[SynthSummary, list[dict[str, Any]]]:
    """`run_synth` in this process; returns the summary and the records this run wrote."""
    records: list[dict[str, Any]] = []
    opts = SynthOptions(search="local:mini", crawl="local", research=research or ResearchOptions(), **options)
    summary = asyncio.run(
        run_synth(Workspace.open(ws_dir), str(seeds), opts, llm_config(url), on_record=records.append)
    )
    return summary, records


# -- one priced CLI run, looked at three ways ----------------------------------------------------------


@pytest.fixture(scope="module")
def priced_run(template_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`ores synth` over 4 seeds with priced models and OPENAI_API_KEY set to SECRET. The first
    seed's planner call first fails with a 500 (retried), the last seed's is refused with a 400;
    both error bodies echo the key, as some servers do."""
    tmp = tmp_path_factory.mktemp("priced")
    ws = Path(shutil.copytree(template_ws, tmp / "ws"))
    seeds = write_seeds(tmp / "q.jsonl", 4)
    write_priced_config(tmp / "ores.yaml", input_usd=1.0, output_usd=2.0)
    teacher = Teacher()
    flaky = [seeds[0]["question"]]

    def script(request: Received) -> Reply:
        question = planner_question(request)
        if question == seeds[3]["question"]:
            return error(400, f"context too long for key {SECRET}")
        if question in flaky:
            flaky.clear()
            return error(500, f"upstream failed for key {SECRET}")
        return teacher(request)

    with StandinLLM(script, lifetime=300) as srv:
        args = synth_cli_args(srv.url, "--config", "ores.yaml")
        proc = _cli("synth", "q.jsonl", "--ws", "ws", *args, cwd=tmp, env=_env(OPENAI_API_KEY=SECRET))
        requests = srv.chat_requests()
    assert proc.returncode == 3, proc.stderr  # EXIT_PARTIAL: done, one seed failed
    return SimpleNamespace(tmp=tmp, ws=ws, seeds=seeds, refused=seeds[3]["id"], proc=proc, requests=requests)


def test_a_run_writes_one_trace_per_seed(priced_run: SimpleNamespace) -> None:
    rows = {t["id"]: t for t in _traces(priced_run.ws)}
    assert sorted(rows) == sorted(s["id"] for s in priced_run.seeds)
    for seed in priced_run.seeds[:3]:
        row = rows[seed["id"]]
        assert (row["status"], row["error"], row["valid"]) == ("done", None, True), row["problems"]
        assert row["question"] == seed["question"] and row["language"] == "en"
        assert (row["n_subtasks"], row["n_tool_calls"]) == (2, 4)
        assert len(parse(row["trace"]).subtasks) == 2 and "## References" in row["report"]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        # Priced at 1 and 2 USD per 1M tokens: the cost is exactly the tokens'.
        assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] + 2 * row["completion_tokens"]) / 1e6)
        assert json.loads(row["models"]) == MODELS
    refused = rows[priced_run.refused]
    assert refused["status"] == "failed" and refused["trace"] is None
    assert "HTTP 400" in refused["error"] and "context too long" in refused["error"]
    [run] = Workspace.open(priced_run.ws).runs(stage="synth")
    assert (run.status, run.n_items, run.n_done, run.n_failed) == ("done", 4, 3, 1)
    assert "--retry-failed" in priced_run.proc.stderr  # the summary says how to redo the failed seed
    # stderr is not a terminal here: a line per finished trace instead of a bar that shows nothing.
    progress = [line for line in priced_run.proc.stderr.splitlines() if re.match(r"synth \d/4 ", line)]
    assert len(progress) == 4 and progress[-1].startswith("synth 4/4 ")
    assert sum(f" {priced_run.refused}: failed " in line for line in progress) == 1
    assert sum(": valid in " in line for line in progress) == 3


def test_the_summary_says_how_much_of_the_traces_the_model_wrote(priced_run: SimpleNamespace) -> None:
    # The Teacher writes every piece: 3 traces of 2 subtasks (3 steps, a plan, an answer each),
    # a subtask list and a report. The failed seed has no pieces.
    summary = priced_run.proc.stderr
    assert re.search(r"pieces written by the model\s*│\s*100% \(36 of 36\)", summary), summary
    assert re.search(r"  steps\s*│\s*100% \(18 of 18\)", summary) and "  reports" in summary
    progress = [line for line in summary.splitlines() if re.match(r"synth \d/4 ", line)]
    assert "model-written 100%" in progress[-1]


def test_ws_sql_answers_what_the_run_and_each_trace_cost(priced_run: SimpleNamespace) -> None:
    # What a user would ask, in one query (one CLI start): rows without a trace_id are the run's totals.
    query = (
        "select run_id, trace_id, count(*) as calls, sum(attempts) as attempts, sum(cost_usd) as cost "
        "from llm_calls_all group by grouping sets ((run_id), (run_id, trace_id))"
    )
    proc = _cli("ws", "sql", query, "--json", "--ws", "ws", cwd=priced_run.tmp)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    [run] = Workspace.open(priced_run.ws).runs(stage="synth")
    [total] = [r for r in answer if r["trace_id"] is None]
    per_trace = {r["trace_id"]: r for r in answer if r["trace_id"] is not None}
    # One call record per chat call; the 500 and its retry are one call of two attempts.
    assert (total["run_id"], total["calls"], total["attempts"]) == (
        run.run_id,
        len(priced_run.requests) - 1,
        len(priced_run.requests),
    )
    rows = {t["id"]: t for t in _traces(priced_run.ws)}
    assert set(per_trace) == set(rows)
    for trace_id, row in rows.items():
        if trace_id == priced_run.refused:
            assert per_trace[trace_id]["calls"] == 1 and not per_trace[trace_id]["cost"]
        else:
            assert per_trace[trace_id]["calls"] == CALLS_PER_SEED
            assert per_trace[trace_id]["cost"] == pytest.approx(row["cost_usd"])
    assert total["cost"] > 0
    assert total["cost"] == pytest.approx(sum(t["cost_usd"] or 0 for t in rows.values()))


def test_api_keys_never_reach_the_workspace(priced_run: SimpleNamespace) -> None:
    # The key was sent, so it was there to leak...
    assert {r.headers.get("authorization") for r in priced_run.requests} == {f"Bearer {SECRET}"}
    # ...and the refused seed's error, which echoed it, is kept with the key blotted out.
    refused = next(t for t in _traces(priced_run.ws) if t["id"] == priced_run.refused)
    assert "context too long for key ***" in refused["error"]
    files = [p for p in priced_run.ws.rglob("*") if p.is_file()]
    assert any(p.name == "llm_calls.parquet" for p in files)
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert SECRET not in priced_run.proc.stderr + priced_run.proc.stdout


# -- resume ------------------------------------------------------------------------------------------


def test_rerun_skips_done_seeds_and_failed_ones_until_retry_failed(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 4)
    refused = {seeds[1]["question"]}
    with StandinLLM(refusing_planner(refused), lifetime=300) as srv:
        summary, _ = _run(ws_dir, tmp_path / "q.jsonl", srv.url)
        assert (summary.n_done, summary.n_failed) == (3, 1)
        rows = {t["id"]: t for t in _traces(ws_dir)}
        assert rows[seeds[1]["id"]]["status"] == "failed" and "HTTP 400" in rows[seeds[1]["id"]]["error"]
        assert "prompt is too long" in rows[seeds[1]["id"]]["error"]

        # A plain rerun: nothing to do, not one call, the same four rows.
        n_calls = len(srv.chat_requests())
        summary, records = _run(ws_dir, tmp_path / "q.jsonl", srv.url)
        assert len(srv.chat_requests()) == n_calls and records == []
        assert (summary.n_skipped, summary.n_skipped_failed, summary.n_todo) == (4, 1, 0)
        assert {t["id"]: t["status"] for t in _traces(ws_dir)} == {i: r["status"] for i, r in rows.items()}

        # --retry-failed redoes only the failed seed; now it succeeds.
        refused.clear()
        before = len(_planner_questions(srv))
        summary, records = _run(ws_dir, tmp_path / "q.jsonl", srv.url, retry_failed=True)
        assert _planner_questions(srv)[before:] == [seeds[1]["question"]]
        assert [r["id"] for r in records] == [seeds[1]["id"]] and summary.n_skipped == 3
        final = _traces(ws_dir)
        assert sorted(t["id"] for t in final) == sorted(s["id"] for s in seeds)
        assert all(t["status"] == "done" for t in final)

        # Other bounds make other traces: a changed config reuses nothing.
        summary, _ = _run(ws_dir, tmp_path / "q.jsonl", srv.url, ResearchOptions(max_tool_calls=5))
        assert (summary.n_skipped, summary.n_done) == (0, 4)


def test_a_rejected_key_stops_the_run_and_keeps_finished_traces(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 5)
    teacher = Teacher()
    state = {"planners": 0, "fixed": False}

    def script(request: Received) -> Reply:
        state["planners"] += piece_of(request) == "planner"
        if state["planners"] > 2 and not state["fixed"]:  # the key stops working after two seeds
            return error(401, "invalid api key")
        return teacher(request)

    with StandinLLM(script, lifetime=300) as srv:
        with pytest.raises(OresError) as info:
            _run(ws_dir, tmp_path / "q.jsonl", srv.url, concurrency=1)
        message = str(info.value)
        assert "HTTP 401" in message and "2 traces of this run are kept" in message and "\n" not in message
        [run] = Workspace.open(ws_dir).runs(stage="synth")
        assert run.status == "failed" and "HTTP 401" in (run.error or "")
        # Not one seed is recorded as failed: every one would have failed the same way.
        kept = _live_records(ws_dir)
        assert [r["status"] for r in kept] == ["done", "done"]

        # With the key fixed, a plain rerun (no --retry-failed) does the rest.
        state["fixed"] = True
        summary, records = _run(ws_dir, tmp_path / "q.jsonl", srv.url)
    assert (summary.n_skipped, summary.n_done) == (2, 3)
    assert {r["id"] for r in records} == {s["id"] for s in seeds} - {r["id"] for r in kept}
    assert sorted(t["status"] for t in _traces(ws_dir)) == ["done"] * 5


def test_shards_cover_every_seed_once(template_ws: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 10)
    researched: dict[int, set[str]] = {}
    with StandinLLM(Teacher(), lifetime=300) as srv:
        for i in (1, 2):  # two machines, each with its own workspace
            ws_dir = Path(shutil.copytree(template_ws, tmp_path / f"ws{i}"))
            summary, records = _run(ws_dir, tmp_path / "q.jsonl", srv.url, shard=parse_shard(f"{i}/2"))
            researched[i] = {r["id"] for r in records}
            assert summary.n_input == 10 and summary.n_in_shard == len(researched[i])
            assert {t["id"] for t in _traces(ws_dir)} == researched[i]
        asked = Counter(_planner_questions(srv))
    everyone = {s["id"] for s in seeds}
    assert researched[1] and researched[2] and not researched[1] & researched[2]
    assert researched[1] | researched[2] == everyone
    assert researched[1] == {i for i in everyone if shard_of(i, 2) == 1}
    assert asked == Counter(s["question"] for s in seeds)  # each seed researched exactly once


# -- kill -9 and Ctrl-C --------------------------------------------------------------------------------


def test_kill_9_then_rerun_holds_every_seed_exactly_once(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 20)
    teacher = Teacher(latency=0.05)
    with StandinLLM(teacher, lifetime=300) as srv:
        args = ("synth", "q.jsonl", "--ws", "ws", *synth_cli_args(srv.url))
        proc = _popen(*args, "--concurrency", "4", cwd=tmp_path, stderr_path=tmp_path / "err.txt")
        _wait_for_traces(ws_dir, 3, proc)
        proc.kill()
        proc.wait()
        kept = {r["id"]: r for r in _live_records(ws_dir)}
        assert 3 <= len(kept) < 20
        [killed] = Workspace.open(ws_dir).runs(stage="synth")
        assert killed.effective_status == "interrupted"

        # The rerun in this process (faster); it resumes only if it hashes the config as the CLI does.
        teacher.latency = 0.0
        before = len(_planner_questions(srv))
        summary, _ = _run(ws_dir, tmp_path / "q.jsonl", srv.url)
        redone = _planner_questions(srv)[before:]
    assert summary.n_skipped == len(kept)
    # The kept traces were not researched again, the others were, each once.
    assert sorted(redone) == sorted(s["question"] for s in seeds if s["id"] not in kept)
    final = {t["id"]: t for t in _traces(ws_dir)}
    assert len(_traces(ws_dir)) == 20 and set(final) == {s["id"] for s in seeds}
    assert all(t["status"] == "done" and t["valid"] for t in final.values())
    assert all(final[i]["trace"] == kept[i]["trace"] for i in kept)
    # What the killed run paid for was registered by the rerun: its calls answer in `llm_calls_all`.
    _, per_run = Workspace.open(ws_dir).sql("select run_id, count(*) from llm_calls_all group by 1")
    assert (
        dict(per_run).get(killed.run_id, 0) >= 3 * 3
    )  # planner, worker and summarizer calls of each kept trace


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 8)
    # Two seeds run at a time. The stand-in answers the first two planner calls and holds every later
    # one: the first two seeds finish, the next two wait in flight on their planner call, and four
    # have not started. The Ctrl-C lands in that state, whatever the machine's speed.
    planner_calls = itertools.count()

    def hold(request: Received) -> bool:
        return piece_of(request) == "planner" and next(planner_calls) >= 2

    with StandinLLM(Teacher(), lifetime=300, hold=hold) as srv:
        args = ("synth", "q.jsonl", "--ws", "ws", "--concurrency", "2", *synth_cli_args(srv.url))
        proc = _popen(*args, cwd=tmp_path, stderr_path=tmp_path / "err.txt")
        try:
            assert srv.wait_held(2, timeout=120), f"seeds 3 and 4 never asked: {proc.poll()=}"
            _wait_for_traces(ws_dir, 2, proc)
            assert srv.held == 2 and len(_live_records(ws_dir)) == 2  # 2 done, 2 in flight, 4 to do
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            srv.release()  # from now on every call is answered (the rerun's too)
        stderr = (tmp_path / "err.txt").read_text()
        kept = {r["id"] for r in _live_records(ws_dir)}
        assert "Traceback" not in stderr
        assert f"interrupted: {len(kept)} traces finished this run are kept" in stderr
        assert len([line for line in stderr.splitlines() if "interrupted" in line]) == 1, stderr
        [run] = Workspace.open(ws_dir).runs(stage="synth")
        assert run.status == "interrupted" and len(kept) == 2
        # What the interrupted run paid for is still on the books.
        assert [a.kind for a in Workspace.open(ws_dir).artifacts(run_id=run.run_id)] == ["llm_calls"]

        before = len(_planner_questions(srv))
        summary, _ = _run(ws_dir, tmp_path / "q.jsonl", srv.url)
        redone = _planner_questions(srv)[before:]
    assert summary.n_skipped == len(kept)
    assert sorted(redone) == sorted(s["question"] for s in seeds if s["id"] not in kept)
    final = _traces(ws_dir)
    assert sorted(t["id"] for t in final) == sorted(s["id"] for s in seeds)
    assert all(t["status"] == "done" for t in final)


# -- user errors -------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI's `main()` in this process: (exit code, stdout, stderr). The same code path as `ores`,
    without an interpreter start and an openai import per case."""
    from oresearch_cli.cli import main

    capsys.readouterr()
    old_argv = sys.argv
    sys.argv = ["ores", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old_argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_user_errors_are_one_line_exit_2_and_register_no_run(
    template_ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith(("ORES_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    write_seeds(tmp_path / "q.jsonl", 2)
    (tmp_path / "empty.jsonl").write_text("")
    seeds, empty = str(tmp_path / "q.jsonl"), str(tmp_path / "empty.jsonl")
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    workspaces = {}

    def ws_for(name: str) -> str:
        workspaces[name] = Path(shutil.copytree(template_ws, tmp_path / name.replace(" ", "_")))
        return str(workspaces[name])

    # One case through a real `ores` process, to pin what the shell sees; it runs meanwhile.
    real = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oresearch_cli",
            "synth",
            seeds,
            *synth_cli_args(dead),
            "--ws",
            ws_for("unreachable"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    with StandinLLM(Teacher(), lifetime=300) as srv:
        ok = synth_cli_args(srv.url)
        cases = {  # name: (arguments, what the one line must say)
            "unknown corpus": (
                [seeds, *synth_cli_args(srv.url, corpus="nope")],
                ["'nope'", "ores corpus build"],
            ),
            "no model": (  # an endpoint serving exactly one model would lend it (test_hardening_exits)
                [seeds, "--search", "local:mini", "--base-url", dead],
                ["no model set", "--model"],
            ),
            "bad shard": ([seeds, *ok, "--shard", "3/2"], ["--shard '3/2'", "1 <= i <= n"]),
            "min above max": (
                [seeds, *ok, "--min-tool-calls", "5", "--max-tool-calls", "3"],
                ["--min-tool-calls 5 is above --max-tool-calls 3"],
            ),
            "empty seeds": ([empty, *ok], [empty, "empty"]),
        }
        results = {
            name: _main(["synth", *args, "--ws", ws_for(name)], capsys) for name, (args, _) in cases.items()
        }
        stdout, stderr = real.communicate(timeout=120)
    results["unreachable"] = (real.returncode, stdout, stderr)
    cases["unreachable"] = ([], [dead, "unreachable", "--base-url"])
    for name, (rc, stdout, stderr) in results.items():
        lines = error_lines(stderr)
        # Exactly one line: not even a blank one from a progress bar that never started.
        assert rc == 2 and stderr.splitlines() == lines and len(lines) == 1, (name, rc, stderr)
        assert lines[0].startswith("error: ")
        assert all(part in lines[0] for part in cases[name][1]), (name, lines[0])
        assert stdout == "" and "Traceback" not in stderr
        assert Workspace.open(workspaces[name]).runs() == [], name


# -- piping ------------------------------------------------------------------------------------------


def test_seed_synth_filter_pipe(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 3)
    ores = f"{sys.executable} -m oresearch_cli"
    with StandinLLM(Teacher(), lifetime=300) as srv:
        synth_args = " ".join(synth_cli_args(srv.url))
        pipeline = (
            f"set -o pipefail; {ores} seed q.jsonl -o - --ws ws "
            f"| {ores} synth - -o - --ws ws {synth_args} | tee synth.jsonl "
            f"| {ores} filter - --no-judge -o - --ws ws"
        )
        proc = subprocess.run(
            ["bash", "-c", pipeline], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=180
        )
    assert proc.returncode == 0, proc.stderr
    traces = [json.loads(line) for line in (tmp_path / "synth.jsonl").read_text().splitlines()]
    assert sorted(t["id"] for t in traces) == sorted(s["id"] for s in seeds)
    assert all(t["status"] == "done" and parse(t["trace"]).subtasks for t in traces)
    verdicts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(v["id"] for v in verdicts) == sorted(s["id"] for s in seeds)
    assert all(v["verdict"] in ("accepted", "rejected") and v["trace"] for v in verdicts)


# -- sequential ----------------------------------------------------------------------------------------


def test_sequential_gives_the_same_shape_and_runs_subtasks_in_turn(ws_dir: Path, tmp_path: Path) -> None:
    write_seeds(tmp_path / "q.jsonl", 2)
    spans: dict[bool, list[list[tuple[float, float]]]] = {}
    rows: dict[bool, list[dict[str, Any]]] = {}
    for sequential in (False, True):
        teacher = Teacher(subtasks=3, calls=2, latency=0.03)
        with StandinLLM(teacher, lifetime=300) as srv:
            _, rows[sequential] = _run(
                ws_dir, tmp_path / "q.jsonl", srv.url, ResearchOptions(sequential=sequential), cache=False
            )
        # The worker requests of each subtask, grouped per question (its text quotes the question).
        by_subtask: dict[str, list[float]] = {}
        for piece, subtask, at in teacher.log:
            if piece in ("step", "answer"):
                by_subtask.setdefault(subtask, []).append(at)
        per_question: dict[str, list[tuple[float, float]]] = {}
        for subtask, times in by_subtask.items():
            per_question.setdefault(subtask.split("(", 1)[1], []).append((min(times), max(times)))
        spans[sequential] = [sorted(s) for s in per_question.values()]

    def shape(row: dict[str, Any]) -> tuple[Any, ...]:
        trace = parse(row["trace"])
        calls = tuple(len(s.tool_calls) for s in trace.subtasks)
        return row["id"], row["status"], row["valid"], row["n_subtasks"], row["n_tool_calls"], calls

    assert sorted(map(shape, rows[True])) == sorted(map(shape, rows[False]))
    assert {r["n_subtasks"] for r in rows[True]} == {3}
    assert all(len(s) == 3 for s in spans[False] + spans[True])
    # Parallel: every subtask of a question starts before any of them ends. Sequential: each ends
    # before the next starts.
    assert all(max(a for a, _ in s) < min(b for _, b in s) for s in spans[False])
    assert all(s[i][1] < s[i + 1][0] for s in spans[True] for i in range(len(s) - 1))


def test_a_recipe_sets_research_settings_and_flags_still_win(tmp_path: Path) -> None:
    from oresearch_cli.llm import load_config
    from oresearch_cli.stages.synth import synth_options

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "llm: {defaults: {model: m, max_tokens: 99}}\n"
        "synth: {max_steps: 4, serp_num: 3, history_chars: 600, search: 'local:mini', concurrency: 2}\n"
    )
    options = synth_options({"serp_num": 5, "max_steps": None}, recipe, limit=3)
    assert options.research.max_steps == 4 and options.research.history_chars == 600
    assert options.research.serp_num == 5  # the flag beats the recipe
    assert (options.search, options.concurrency, options.limit) == ("local:mini", 2, 3)
    assert options.research.max_tool_calls == ResearchOptions().max_tool_calls  # neither: the default
    assert load_config(recipe, environ={}).role("worker").max_tokens == 99  # the llm: section still reads
    # A recipe of stage sections only has no llm settings, and is not an error for the llm loader.
    only = tmp_path / "only.yaml"
    only.write_text("synth: {max_subtasks: 2}\n")
    assert synth_options({}, only).research.max_subtasks == 2
    assert load_config(only, environ={"ORES_LLM_MODEL": "m"}).role("planner").model == "m"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("synth: {max_stepz: 3}", "synth.max_stepz is not a synth setting"),
        ("synth: {max_steps: true}", "synth.max_steps must be int"),
        ("synth: {sequential: 'yes'}", "synth.sequential must be bool"),
        ("synth: [1, 2]", "`synth:` must be a mapping"),
    ],
)
def test_bad_recipe_settings_name_the_key_and_the_fix(tmp_path: Path, body: str, needle: str) -> None:
    from oresearch_cli.stages.synth import synth_options

    recipe = tmp_path / "r.yaml"
    recipe.write_text(body + "\n")
    with pytest.raises(OresError, match=needle.replace("[", r"\[")):
        synth_options({}, recipe)


def test_the_embedded_cpu_recipe_is_valid() -> None:
    from oresearch_cli.llm import load_config
    from oresearch_cli.stages.synth import synth_options

    recipe = REPO / "recipes" / "synth" / "embedded-cpu.yaml"
    options = synth_options({}, recipe)
    options.research.check()
    config = load_config(recipe, environ={"ORES_LLM_MODEL": "SmolLM2-135M-Instruct"})
    assert all(config.role(r).max_tokens for r in ("planner", "worker", "summarizer", "judge"))
