"""Cooperative runs: `ores synth` processes sharing one workspace split its seeds through the
catalog's leases, a killed one's seeds are taken over, nothing is paid twice; and `ores ws merge`
folds shard workspaces into one.

Against the stand-in endpoint answering as `Teacher` (every seed's research starts with one
planner call, so planner calls count researches) and the tiny "mini" corpus.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.stages.synth import SynthOptions, parse_shard, run_synth
from oresearch_cli.workspace import Workspace
from oresearch_cli.workspace.leases import ClaimResult, LeaseBook, scope_of, utcnow

from standin_llm import Received, Reply, StandinLLM
from synth_support import (
    Teacher,
    build_test_corpus,
    llm_config,
    piece_of,
    planner_question,
    refusing_planner,
    synth_cli_args,
    write_seeds,
)


@pytest.fixture(scope="module")
def template_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("coop-template")
    build_test_corpus(Workspace.open(tmp / "ws"), tmp)
    return tmp / "ws"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORES_", "OPENAI_"))}
    return {**env, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def _synth(url: str, ws: str, cwd: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    args = ["synth", "q.jsonl", "--ws", ws, "--concurrency", "2", *synth_cli_args(url), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "oresearch_cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=(cwd / f"{name}.err").open("w"),
        text=True,
        env=_env(),
    )


def _planner_questions(srv: StandinLLM) -> list[str]:
    return [q for r in srv.chat_requests() if (q := planner_question(r))]


def _traces(ws_dir: Path) -> list[dict[str, Any]]:
    ws = Workspace.open(ws_dir)
    return ws.read_artifact(ws.require_latest("traces", "synth"))


def _researched_by_run(ws_dir: Path) -> dict[str, set[str]]:
    """run id -> the seeds whose planner call that run paid for (from the call logs)."""
    _, rows = Workspace.open(ws_dir).sql(
        "select distinct run_id, trace_id from llm_calls_all where role = 'planner' and trace_id is not null"
    )
    by_run: dict[str, set[str]] = {}
    for run_id, trace_id in rows:
        by_run.setdefault(run_id, set()).add(trace_id)
    return by_run


def _wait(procs: list[subprocess.Popen[str]], tmp: Path, timeout: float = 240) -> None:
    for i, proc in enumerate(procs):
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, (tmp / f"p{i}.err").read_text()


# -- one machine: processes share the work -----------------------------------------------------------


def test_two_processes_on_one_workspace_research_each_seed_once(template_ws: Path, tmp_path: Path) -> None:
    ws_dir = Path(shutil.copytree(template_ws, tmp_path / "ws"))
    seeds = write_seeds(tmp_path / "q.jsonl", 12)
    # Every planner call is held until four wait at once: at 2 seeds in flight per process, both
    # processes are then working side by side, however the machine schedules their starts.
    with StandinLLM(Teacher(latency=0.01), lifetime=600, hold=lambda r: piece_of(r) == "planner") as srv:
        procs = [_synth(srv.url, "ws", tmp_path, f"p{i}") for i in range(2)]
        try:
            assert srv.wait_held(4, timeout=180), [p.poll() for p in procs]
        finally:
            srv.release()
        _wait(procs, tmp_path)
        asked = Counter(_planner_questions(srv))
    # As many planner calls as one process would make: each seed researched once, by one of them.
    assert asked == Counter(s["question"] for s in seeds)
    runs = Workspace.open(ws_dir).runs(stage="synth")
    assert len(runs) == 2 and {r.status for r in runs} == {"done"}
    by_run = _researched_by_run(ws_dir)
    assert set(by_run) == {r.run_id for r in runs} and all(len(ids) >= 2 for ids in by_run.values())
    assert not set.intersection(*by_run.values())
    # Every seed has exactly one trace, in the artifact of either run (the later one has them all).
    ids = [t["id"] for t in _traces(ws_dir)]
    assert sorted(ids) == sorted(s["id"] for s in seeds)
    for run in runs:
        [artifact] = Workspace.open(ws_dir).artifacts(run_id=run.run_id, kind="traces")
        if run.run_id == runs[0].run_id:  # the newest finished last and holds every seed
            assert artifact.n_rows == len(seeds)
    # Every lease ended settled, none left held.
    _, leases = Workspace.open(ws_dir).sql("select state, count(*) from leases group by 1")
    assert dict(leases) == {"settled": len(seeds)}


def test_a_killed_process_seeds_are_taken_over(template_ws: Path, tmp_path: Path) -> None:
    ws_dir = Path(shutil.copytree(template_ws, tmp_path / "ws"))
    seeds = write_seeds(tmp_path / "q.jsonl", 12)
    teacher = Teacher(latency=0.01)
    stall: dict[str, bool] = {}  # question -> whether its first report call was stalled yet

    def script(request: Received) -> Reply:
        reply = teacher(request)
        if piece_of(request) == "report":
            question = _find_question(request.last_user_text())
            if stall.get(question) is False:
                stall[question] = True
                reply.delay = 120  # the victim's two seeds stay in flight, paid up to their report
        return reply

    with StandinLLM(script, lifetime=600, hold=lambda r: piece_of(r) == "planner") as srv:
        procs = [_synth(srv.url, "ws", tmp_path, f"p{i}") for i in range(2)]
        try:
            assert srv.wait_held(4, timeout=180), [p.poll() for p in procs]
            # Each process holds two seeds now; the first one's are made to hang at their report.
            victim_run = _run_of(ws_dir, procs[0].pid)
            _, held = Workspace.open(ws_dir).sql(
                f"select item_id from leases where state = 'held' and run_id = '{victim_run}'"
            )
            victim_seeds = {item for (item,) in held}
            assert len(victim_seeds) == 2
            stall.update({s["question"]: False for s in seeds if s["id"] in victim_seeds})
        finally:
            srv.release()
        deadline = time.monotonic() + 120
        while not all(stall.values()):
            assert time.monotonic() < deadline and procs[0].poll() is None
            time.sleep(0.02)
        procs[0].kill()  # kill -9 with two seeds in flight, their planner and worker calls paid
        procs[0].wait()
        try:
            assert procs[1].wait(timeout=240) == 0, (tmp_path / "p1.err").read_text()
        finally:
            if procs[1].poll() is None:
                procs[1].kill()
        asked = Counter(_planner_questions(srv))
    # The survivor took the dead one's two seeds over: those were researched twice (what was in
    # flight at the kill), every other seed once.
    victim_questions = {s["question"] for s in seeds if s["id"] in victim_seeds}
    assert asked == Counter({s["question"]: 1 + (s["question"] in victim_questions) for s in seeds})
    assert sum(asked.values()) == len(seeds) + 2
    ws = Workspace.open(ws_dir)
    killed, survivor = sorted(ws.runs(stage="synth"), key=lambda r: r.run_id != victim_run)
    assert killed.effective_status == "interrupted" and survivor.status == "done"
    # The survivor's artifact holds every seed once, all done.
    traces = _traces(ws_dir)
    assert sorted(t["id"] for t in traces) == sorted(s["id"] for s in seeds)
    assert all(t["status"] == "done" for t in traces)
    # What the dead one paid for is on the books (the survivor registered its call log).
    by_run = _researched_by_run(ws_dir)
    assert by_run[killed.run_id] == victim_seeds and by_run[survivor.run_id] == {s["id"] for s in seeds}
    _, left = ws.sql("select count(*) from leases where state = 'held'")
    assert left == [(0,)]


def _find_question(text: str) -> str:
    match = re.search(r"Research question:\s*(.+)", text)
    return match.group(1).strip() if match else ""


def _run_of(ws_dir: Path, pid: int) -> str:
    deadline = time.monotonic() + 60
    while True:
        runs = [r.run_id for r in Workspace.open(ws_dir).runs(stage="synth") if r.pid == pid]
        if runs:
            return runs[0]
        assert time.monotonic() < deadline, f"no run of pid {pid}"
        time.sleep(0.05)


def test_lease_rules(template_ws: Path, tmp_path: Path) -> None:
    """The claim rule without processes: a live holder keeps an item, a dead pid or a passed expiry
    loses it, a settled item is skipped (a failure only by a run that started after it)."""
    ws = Workspace.open(Path(shutil.copytree(template_ws, tmp_path / "ws")))
    scope = scope_of("synth", "abc")
    with (
        LeaseBook(ws.catalog_path, scope, "run-a", ttl_s=60) as a,
        LeaseBook(ws.catalog_path, scope, "run-b") as b,
    ):
        assert a.claim("x").ok and b.claim("x").result is ClaimResult.HELD
        a.settle("x", "done")
        assert b.claim("x").result is ClaimResult.SETTLED
        # A dead holder on this host: taken over at once, and the claim says from whom.
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        assert a.claim("y").ok
        with ws_connect(ws) as con:
            con.execute("UPDATE leases SET pid = ? WHERE item_id = 'y'", [int(dead.stdout)])
        taken = b.claim("y")
        assert taken.ok and taken.taken_over_from == "run-a"
        # A holder that stopped renewing (another host's, say) loses it when it expires.
        assert a.claim("z").ok
        with ws_connect(ws) as con:
            con.execute(
                "UPDATE leases SET hostname = 'elsewhere', expires_at = ? WHERE item_id = 'z'", [utcnow()]
            )
        assert b.claim("z").ok
        assert a.renew() == 0 and b.renew() == 2  # a holds nothing now; b holds y and z
        # A failure settled before a run started may be retried by it; one settled after, not.
        a.settle("f", "failed")
        later = LeaseBook(ws.catalog_path, scope, "run-c", since=utcnow() + timedelta(seconds=1))
        with later:
            assert b.claim("f", retry_failed=True).result is ClaimResult.SETTLED
            assert later.claim("f").result is ClaimResult.SETTLED
            assert later.claim("f", retry_failed=True).ok
    # Leaving a book lets go of what it held: y and z are free again, f stays settled.
    # (f's retry was abandoned: its lease is gone, and the failed record still says failed.)
    with LeaseBook(ws.catalog_path, scope, "run-d") as d:
        assert {lease.item_id: lease.state for lease in d.leases()} == {"x": "settled"}


def ws_connect(ws: Workspace):  # type: ignore[no-untyped-def]
    from oresearch_cli.workspace.catalog import connect

    return connect(ws.catalog_path)


# -- past one machine: shards, then a merge ---------------------------------------------------------


def _run(ws_dir: Path, seeds: Path, url: str, **options: Any) -> None:
    opts = SynthOptions(search="local:mini", crawl="local", **options)
    asyncio.run(run_synth(Workspace.open(ws_dir), str(seeds), opts, llm_config(url)))


def _cache_keys(ws_dir: Path) -> set[str]:
    db = sqlite3.connect(ws_dir / "cache" / "tools.sqlite")
    try:
        return {key for (key,) in db.execute("select key from entries")}
    finally:
        db.close()


def _merge(tmp: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "oresearch_cli", "ws", "merge", *args, "--json"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_merging_three_shards_equals_one_unsharded_run(template_ws: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", 9)
    refused: set[str] = set()
    with StandinLLM(refusing_planner(refused), lifetime=600) as srv:
        whole = Path(shutil.copytree(template_ws, tmp_path / "whole"))
        _run(whole, tmp_path / "q.jsonl", srv.url)
        for i in (1, 2, 3):
            shard = Path(shutil.copytree(template_ws, tmp_path / f"ws-{i}"))
            _run(shard, tmp_path / "q.jsonl", srv.url, shard=parse_shard(f"{i}/3"))
        # A fourth machine redid two of shard 1's seeds later: one done again, one failed.
        in_one = sorted(t["id"] for t in _traces(tmp_path / "ws-1"))
        assert len(in_one) >= 2, "shard 1 of 3 holds fewer than 2 of 9 seeds: pick other ids"
        redo = [s for s in seeds if s["id"] in in_one[:2]]
        (tmp_path / "redo.jsonl").write_text("".join(json.dumps(s) + "\n" for s in redo))
        refused.add(redo[1]["question"])
        late = Path(shutil.copytree(template_ws, tmp_path / "ws-late"))
        _run(late, tmp_path / "redo.jsonl", srv.url)

    merged = _merge(tmp_path, "ws-1", "ws-2", "ws-3", "--into", "merged")
    expected = {t["id"]: t for t in _traces(whole)}
    got = _traces(tmp_path / "merged")
    ids = [t["id"] for t in got]
    assert len(ids) == len(set(ids)) and set(ids) == set(expected) == {s["id"] for s in seeds}
    assert all(t["trace"] == expected[t["id"]]["trace"] for t in got)  # the same traces, too
    [traces] = [g for g in merged["groups"] if g["kind"] == "traces"]
    assert (traces["workspaces"], traces["items"], traces["duplicates"]) == (3, 9, 0)
    assert merged["duplicates"] == []
    ws = Workspace.open(tmp_path / "merged")
    # Every shard's run, call log and cache came along.
    shard_runs = {r.run_id for i in (1, 2, 3) for r in Workspace.open(tmp_path / f"ws-{i}").runs()}
    assert shard_runs <= {r.run_id for r in ws.runs()}
    _, per_run = ws.sql("select run_id, count(*) from llm_calls_all group by 1")
    assert {r for r, _ in per_run} == {
        r.run_id for i in (1, 2, 3) for r in Workspace.open(tmp_path / f"ws-{i}").runs(stage="synth")
    }
    assert sum(n for _, n in per_run) == sum(
        Workspace.open(tmp_path / f"ws-{i}").sql("select count(*) from llm_calls")[1][0][0] for i in (1, 2, 3)
    )
    shard_keys = set().union(*(_cache_keys(tmp_path / f"ws-{i}") for i in (1, 2, 3)))
    assert shard_keys and _cache_keys(tmp_path / "merged") == shard_keys

    # The late workspace's two seeds are duplicates: its done one is newer and wins, its failed
    # one loses to shard 1's done one. Both are reported.
    merged = _merge(tmp_path, "ws-late", "--into", "merged")
    by_id = {d["id"]: d for d in merged["duplicates"]}
    assert set(by_id) == {redo[0]["id"], redo[1]["id"]}
    assert (by_id[redo[0]["id"]]["kept"], by_id[redo[0]["id"]]["reason"]) == ("ws-late", "newer")
    assert (by_id[redo[1]["id"]]["kept"], by_id[redo[1]["id"]]["reason"]) == ("merged", "done beats failed")
    [traces] = [g for g in merged["groups"] if g["kind"] == "traces"]
    assert (traces["items"], traces["duplicates"]) == (9, 2)
    final = {t["id"]: t for t in _traces(tmp_path / "merged")}
    assert len(final) == 9 and all(t["status"] == "done" for t in final.values())
    late_rows = {t["id"]: t for t in _traces(late)}
    assert final[redo[0]["id"]]["trace"] == late_rows[redo[0]["id"]]["trace"]
    # Merging a workspace twice copies nothing twice.
    again = _merge(tmp_path, "ws-late", "--into", "merged")
    assert again["sources"][0]["runs_copied"] == 0 and again["sources"][0]["runs_present"] >= 1


def test_two_runs_in_one_process_split_the_seeds_and_a_limit_holds(template_ws: Path, tmp_path: Path) -> None:
    """The same rule inside one process (two runs at once on one event loop), and `limit` counted
    across a run's workers: 4 in flight, at most 3 taken."""
    ws_dir = Path(shutil.copytree(template_ws, tmp_path / "ws"))
    seeds = write_seeds(tmp_path / "q.jsonl", 8)
    opts = SynthOptions(search="local:mini", crawl="local", concurrency=4)
    # Planner calls are held until 8 wait: each run has taken 4 seeds before either finishes one.
    with StandinLLM(Teacher(latency=0.01), lifetime=600, hold=lambda r: piece_of(r) == "planner") as srv:

        async def both() -> list[Any]:
            ws = Workspace.open(ws_dir)
            config = llm_config(srv.url)
            return list(
                await asyncio.gather(
                    run_synth(ws, str(tmp_path / "q.jsonl"), opts, config),
                    run_synth(ws, str(tmp_path / "q.jsonl"), opts, config),
                )
            )

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(asyncio.run, both())
            try:
                assert srv.wait_held(8, timeout=120)
            finally:
                srv.release()
            first, second = running.result(timeout=240)
        asked = Counter(_planner_questions(srv))
        assert asked == Counter(s["question"] for s in seeds)
        assert first.n_todo + second.n_todo == len(seeds)
        for summary in (first, second):  # each accounts for every seed: its own, or the other's
            assert summary.n_skipped + summary.n_todo + summary.n_elsewhere == len(seeds)
        assert first.n_todo == second.n_todo == 4
        assert sorted(t["id"] for t in _traces(ws_dir)) == sorted(s["id"] for s in seeds)

        fresh = Path(shutil.copytree(template_ws, tmp_path / "fresh"))
        before = len(_planner_questions(srv))
        _run(fresh, tmp_path / "q.jsonl", srv.url, concurrency=4, limit=3)
        assert sorted(_planner_questions(srv)[before:]) == sorted(s["question"] for s in seeds[:3])


def test_merge_refuses_what_it_cannot_merge_in_one_line(template_ws: Path, tmp_path: Path) -> None:
    from oresearch_cli.errors import WorkspaceError
    from oresearch_cli.workspace.merge import merge_workspaces

    shard = Path(shutil.copytree(template_ws, tmp_path / "ws-1"))
    cases = {
        "nothing": ([], tmp_path / "ws", "no workspace to merge"),
        "itself": ([shard], shard, "is the workspace merged into"),
        "twice": ([shard, tmp_path / "ws-1"], tmp_path / "ws", "named twice"),
        "missing": ([tmp_path / "nope"], tmp_path / "ws", "no ores workspace here"),
    }
    for name, (sources, into, needle) in cases.items():
        with pytest.raises(WorkspaceError) as info:
            merge_workspaces(sources, into)
        assert needle in str(info.value) and "; " in str(info.value) and "\n" not in str(info.value), name
    # A source with a run still going on this host is refused: its items are not all written yet.
    ws = Workspace.open(shard)
    from oresearch_cli.workspace import StageSpec

    with ws.start_run(StageSpec("synth", "traces"), {"x": 1}) as run:
        with pytest.raises(WorkspaceError, match=f"run {run.run_id} is still running"):
            merge_workspaces([shard], tmp_path / "ws")
        run.append({"id": "a"})
    assert not (tmp_path / "ws").exists() or Workspace.open(tmp_path / "ws").runs() == []
    # One marked running by another machine (killed there) is copied as interrupted: nothing runs it here.
    with ws_connect(ws) as con:
        con.execute("UPDATE runs SET status = 'running', hostname = 'node-7', finished_at = NULL")
    summary = merge_workspaces([shard], tmp_path / "ws")
    assert (summary.sources[0].runs_copied, summary.sources[0].runs_stopped) == (1, 1)
    [copied] = Workspace.open(tmp_path / "ws").runs()
    assert copied.status == "interrupted" and "while marked running" in (copied.error or "")
