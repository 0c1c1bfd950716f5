"""What faults cost: wall time of the same LLM work against a faulty endpoint, over a clean one.

The stand-in endpoint (tests/standin_llm.py) runs in its own process with `FaultScript`: a clean
call answers after 0.15-0.35 s; with faults, 20% of requests (each attempt, hedges included) fail,
a third each as HTTP 429 with Retry-After: 1, HTTP 500, or a hang past the client's 2 s timeout.
Default retry settings (5 attempts, backoff from 0.5 s). Clean and faulty runs are measured side by
side in one run; each ratio is wall(faulty) / wall(clean), target <= 2x.

Rows:
- llm, hedging off (the default): `LLMClient` sends N_CALLS calls, 8 in flight at most
  (`max_concurrency: 8`), all queued at once, as a stage hands a client more work than it may
  send. What the slot release, retries-first and the 429 pause rule buy; each hang still holds
  its slot for the whole 2 s timeout (a request in flight is one).
- llm, hedging on (`hedge_after_s: 0.5`): a request running past max(3x the endpoint's recent
  median, 0.5 s) gets a second one; the first answer wins. Plus its cost on a clean endpoint.
- synth, hedging off / on: `ores synth` (run_synth, scripted teacher, tiny local corpus) of
  N_SEEDS seeds, 8 at once, the user's setting. A seed whose calls all wait out a retry lends its
  place to another seed (llm/waiting.py, research_run's `_Place`), so the run keeps 8 seeds at work;
  its calls are a chain, so each fault still adds its wait to that seed, and the run's last seeds
  (the tail) add theirs to the wall time: more seeds weigh the tail less.

Measured on the 2-core dev box (single runs; the fault draws are seeded, the timing is not):
before this work the llm row was 4.1x and the synth row 5.0x (every 429 paused all callers for
its Retry-After, and a call queued for a slot sat on it through such a pause); with the client's
changes but before seeds lent their places, synth was 2.96x (24 seeds), after it 2.38x (24 seeds)
and 2.00x (64 seeds; 1.57x with hedging on).

`ORES_BENCH_QUICK=1`: fewer calls and seeds (noisier: the fault draws matter more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Result

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from oresearch_cli.agent import ResearchOptions  # noqa: E402
from oresearch_cli.llm import LLMClient, LLMError, load_config  # noqa: E402
from oresearch_cli.stages.synth import SynthOptions, run_synth  # noqa: E402
from oresearch_cli.workspace import Workspace  # noqa: E402

from standin_llm import Received, Reply, rate_limited, server_error, standin_process  # noqa: E402
from synth_support import Teacher, build_test_corpus, llm_config, write_seeds  # noqa: E402

QUICK = os.environ.get("ORES_BENCH_QUICK") == "1"
N_CALLS = 160 if QUICK else 400
N_SEEDS = 8 if QUICK else 64  # for `ores synth`, CONCURRENCY seeds at work
CONCURRENCY = 8
TIMEOUT_S = 2.0
FAULT_RATE = 0.2
HEDGE_FLOOR_S = 0.5
MESSAGES = [{"role": "user", "content": "Name one factor that limits photosynthesis at noon."}]


class FaultScript:
    """Answers for the stand-in: after `latency` +- `jitter` seconds, or, for `fault_rate` of the
    requests (drawn from a seeded generator, in arrival order), a 429 with Retry-After, a 500, or
    a hang of `hang_s` (past the client's timeout)."""

    def __init__(
        self,
        latency: float = 0.25,
        jitter: float = 0.1,
        fault_rate: float = FAULT_RATE,
        retry_after: float = 1.0,
        hang_s: float = 8.0,
        seed: int = 7,
    ) -> None:
        self.latency, self.jitter, self.fault_rate = latency, jitter, fault_rate
        self.retry_after, self.hang_s = retry_after, hang_s
        self.rng = random.Random(seed)

    def __call__(self, request: Received) -> Reply:
        draw, delay = self.rng.random(), self.latency + self.rng.uniform(-self.jitter, self.jitter)
        third = self.fault_rate / 3
        if draw < third:
            return rate_limited(retry_after=self.retry_after)
        if draw < 2 * third:
            return server_error(500)
        if draw < self.fault_rate:
            return Reply(delay=self.hang_s)
        return Reply(text="Stomatal closure under heat.", delay=delay)


class FaultyTeacher(FaultScript):
    """`FaultScript`'s faults over the scripted teacher of tests/synth_support.py (what `ores
    synth` needs answered), its answers after `latency` +- `jitter` seconds."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.teacher = Teacher(subtasks=2, calls=2)

    def __call__(self, request: Received) -> Reply:
        reply = super().__call__(request)
        if reply.status != 200 or reply.text is None:  # a fault
            return reply
        answer = self.teacher(request)
        answer.delay = reply.delay
        return answer


def _endpoint(fault_rate: float, script: str = "FaultScript") -> contextlib.AbstractContextManager[str]:
    """The stand-in in a child process answering with `script(fault_rate=...)` of this module."""
    return standin_process(
        lifetime=600,
        script=f"bench_faults:{script}",
        script_kwargs={"fault_rate": fault_rate},
        import_path=[HERE],
        quiet=True,
    )


async def _calls(url: str, hedge_after_s: float | None) -> dict[str, Any]:
    env = {"OPENAI_API_KEY": "sk-bench"}
    overrides: dict[str, Any] = {
        "model": "bench-model",
        "base_url": url,
        "max_concurrency": CONCURRENCY,
        "timeout_s": TIMEOUT_S,
    }
    if hedge_after_s is not None:
        overrides["hedge_after_s"] = hedge_after_s
    config = load_config(overrides=overrides, environ=env)
    async with LLMClient(config, environ=env) as llm:
        # Warm-up, not timed: loads the SDK's modules and opens the connections.
        await asyncio.gather(*(llm.chat("worker", MESSAGES, max_attempts=10) for _ in range(CONCURRENCY)))
        started = time.perf_counter()
        results = await asyncio.gather(
            *(llm.chat("worker", MESSAGES) for _ in range(N_CALLS)), return_exceptions=True
        )
        wall = time.perf_counter() - started
        failed = [r for r in results if isinstance(r, BaseException)]
        if any(not isinstance(r, LLMError) for r in failed):
            raise next(r for r in failed if not isinstance(r, LLMError))
        return {
            "wall": wall,
            "failed": len(failed),
            "attempts": sum(r.attempts for r in results if not isinstance(r, BaseException)),
            "hedges": getattr(llm, "hedges", 0),
            "hedge_wins": getattr(llm, "hedge_wins", 0),
            "max_in_flight": llm.max_in_flight,
        }


def _measure(fault_rate: float, hedge_after_s: float | None) -> dict[str, Any]:
    with _endpoint(fault_rate) as url:
        return asyncio.run(_calls(url, hedge_after_s))


def _synth(tmp: Path, fault_rate: float, hedge_after_s: float | None) -> dict[str, Any]:
    """`ores synth` of N_SEEDS seeds, CONCURRENCY at once, default retry settings, 2 s timeout."""
    ws_dir = Path(shutil.copytree(tmp / "template", tmp / f"ws-{time.perf_counter_ns()}"))
    options = SynthOptions(
        search="local:mini", crawl="local", cache=False, concurrency=CONCURRENCY, research=ResearchOptions()
    )
    settings: dict[str, Any] = {"timeout_s": TIMEOUT_S, "max_attempts": 5, "backoff_base_s": 0.5}
    settings["backoff_max_s"] = 30.0
    if hedge_after_s is not None:
        settings["hedge_after_s"] = hedge_after_s
    with _endpoint(fault_rate, "FaultyTeacher") as url:
        summary = asyncio.run(
            run_synth(Workspace.open(ws_dir), str(tmp / "seeds.jsonl"), options, llm_config(url, **settings))
        )
    shutil.rmtree(ws_dir, ignore_errors=True)
    return {"wall": summary.seconds, "done": summary.n_done, "failed": summary.n_failed}


def _synth_rows() -> list[Result]:
    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-faults-"))
    try:
        build_test_corpus(Workspace.open(tmp / "template"), tmp)
        write_seeds(tmp / "seeds.jsonl", N_SEEDS)
        _synth(tmp, 0.0, None)  # warm-up: imports, the index
        clean = _synth(tmp, 0.0, None)
        faulty = _synth(tmp, FAULT_RATE, None)
        hedged = _synth(tmp, FAULT_RATE, HEDGE_FLOOR_S)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def row(name: str, m: dict[str, Any], note: str) -> Result:
        return Result(
            name,
            m["wall"],
            "s",
            baseline=clean["wall"],
            baseline_label="clean",
            target="<= 2x",
            note=f"{note}; {m['done']} done, {m['failed']} failed (clean: {clean['done']} done)",
            higher_is_better=True,
        )

    setup = (
        f"ores synth, {N_SEEDS} seeds, {CONCURRENCY} at once, 2 subtasks x 2 tool calls, same faults; a seed "
        "waiting out a retry lends its place to another (up to 2x as many in flight)"
    )
    return [
        row("synth faults: wall faulty / clean, hedging off", faulty, setup),
        row("synth faults: wall faulty / clean, hedging on", hedged, f"hedge_after_s={HEDGE_FLOOR_S:g}"),
    ]


def run() -> list[Result]:
    logging.getLogger("oresearch_cli.llm").setLevel(logging.ERROR)  # a retry line per fault otherwise
    clean = _measure(0.0, None)
    faulty = _measure(FAULT_RATE, None)
    hedged = _measure(FAULT_RATE, HEDGE_FLOOR_S)
    clean_hedged = _measure(0.0, HEDGE_FLOOR_S)
    setup = (
        f"{N_CALLS} calls, {CONCURRENCY} in flight, clean 0.15-0.35 s; faults: {FAULT_RATE:.0%} of requests "
        f"429 (Retry-After 1 s) / 500 / hang past {TIMEOUT_S:g} s timeout"
    )

    def detail(m: dict[str, Any]) -> str:
        return (
            f"{m['attempts']} attempts, {m['failed']} failed, {m['hedges']} hedges "
            f"({m['hedge_wins']} won), peak {m['max_in_flight']} in flight"
        )

    def row(name: str, m: dict[str, Any], baseline: dict[str, Any], label: str, note: str) -> Result:
        return Result(
            name,
            m["wall"],
            "s",
            baseline=baseline["wall"],
            baseline_label=label,
            target="<= 2x",
            note=f"{note}; {detail(m)}",
            higher_is_better=True,  # so the ratio reads wall(faulty) / wall(clean)
        )

    results = [
        row(
            "llm faults: wall faulty / clean, hedging off",
            faulty,
            clean,
            "clean",
            f"{setup}; ratio = faulty / clean; clean run: {detail(clean)}",
        ),
        row(
            "llm faults: wall faulty / clean, hedging on",
            hedged,
            clean,
            "clean, hedging off",
            f"hedge_after_s={HEDGE_FLOOR_S:g}",
        ),
        Result(
            "llm faults: hedging's cost on a clean endpoint",
            clean_hedged["wall"],
            "s",
            baseline=clean["wall"],
            baseline_label="clean, hedging off",
            note=f"ratio = hedging off / on (1x: free); {detail(clean_hedged)}",
            higher_is_better=False,
        ),
    ]
    return results + _synth_rows()


if __name__ == "__main__":
    for result in run():
        print(
            f"{result.name}: {result.ours_text()} | {result.baseline_text()} | {result.ratio_text()} | {result.note}"
        )
