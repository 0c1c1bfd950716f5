"""LLM client overhead per call at 256 concurrent calls, against raw httpx and the bare openai SDK.

The stand-in endpoint (tests/standin_llm.py) runs in its own process and answers every chat call
after a fixed 50 ms, so the ideal wall time of N calls at concurrency C is N / C * 50 ms. What a
client takes beyond that, per call, is its overhead: on one event loop the clients' CPU work is
serial, so at this concurrency it shows up almost whole in the wall time.

Three clients send the same requests, interleaved, best of three rounds:
- ours: `LLMClient.chat` with routing, limits, tenacity, cost and a flushed `CallLog` line per call;
- bare openai: `AsyncOpenAI.chat.completions.create` under a semaphore (what ours wraps);
- raw httpx: `httpx.AsyncClient.post` + `json.loads` under a semaphore, with one connection pool
  (as usually written) and spread over pools of 16 (as ours does: a pool's cost per request grows
  with its connections, so one pool of 256 costs several times more CPU per call).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402
import openai  # noqa: E402

from oresearch_cli.llm import CallLog, LLMClient, load_config  # noqa: E402

from standin_llm import standin_process  # noqa: E402

CONCURRENCY = 256
N_CALLS = 512
LATENCY_S = 0.05
ROUNDS = 2
MESSAGES = [
    {"role": "system", "content": "You are a careful research assistant."},
    {"role": "user", "content": "Summarize the light-dependent reactions of photosynthesis. " * 8},
]


async def _timed(one_call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) for N_CALLS calls at most CONCURRENCY at a time."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def limited() -> None:
        async with slots:
            await one_call()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(limited() for _ in range(N_CALLS)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def _ours(url: str, log_dir: Path) -> tuple[float, float]:
    env = {"OPENAI_API_KEY": "sk-bench"}
    config = load_config(
        overrides={
            "model": "bench-model",
            "base_url": url,
            "max_concurrency": CONCURRENCY,
            "max_tokens": 256,
        },
        environ=env,
    )
    with CallLog(log_dir / f"calls-{time.perf_counter_ns()}.jsonl") as log:
        async with LLMClient(config, log, environ=env) as llm:
            await asyncio.gather(*(llm.chat("worker", MESSAGES) for _ in range(CONCURRENCY)))  # warm-up
            return await _timed(lambda: llm.chat("worker", MESSAGES, trace_id="t"))


async def _bare_openai(url: str) -> tuple[float, float]:
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY
    )
    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="sk-bench",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )

    async def one() -> str:
        response = await client.chat.completions.create(
            model="bench-model", messages=MESSAGES, max_tokens=256
        )  # type: ignore[arg-type]
        return response.choices[0].message.content or ""

    try:
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
        return await _timed(one)
    finally:
        await client.close()


async def _raw_httpx(url: str, per_pool: int = CONCURRENCY) -> tuple[float, float]:
    """Raw httpx; with `per_pool` < CONCURRENCY, several clients, each call on the least busy one."""
    n_pools = CONCURRENCY // per_pool
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    clients = [httpx.AsyncClient(limits=limits, timeout=60) for _ in range(n_pools)]
    in_flight = [0] * n_pools
    body = {"model": "bench-model", "messages": MESSAGES, "max_tokens": 256}
    headers = {"Authorization": "Bearer sk-bench"}

    async def one() -> str:
        i = min(range(n_pools), key=in_flight.__getitem__)
        in_flight[i] += 1
        try:
            response = await clients[i].post(f"{url}/chat/completions", json=body, headers=headers)
        finally:
            in_flight[i] -= 1
        response.raise_for_status()
        return json.loads(response.content)["choices"][0]["message"]["content"]

    try:
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
        return await _timed(one)
    finally:
        for client in clients:
            await client.aclose()


def run() -> list[Result]:
    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-llm-"))
    runners: dict[str, Callable[[str], Awaitable[tuple[float, float]]]] = {
        "httpx": _raw_httpx,
        "httpx16": lambda url: _raw_httpx(url, per_pool=16),
        "openai": _bare_openai,
        "ours": lambda url: _ours(url, tmp),
    }
    walls: dict[str, list[float]] = {name: [] for name in runners}
    cpus: dict[str, list[float]] = {name: [] for name in runners}
    try:
        with standin_process(latency=LATENCY_S) as url:
            for _ in range(ROUNDS):  # interleaved so machine noise hits all alike
                for name, runner in runners.items():
                    wall, cpu = asyncio.run(runner(url))
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ideal = N_CALLS / CONCURRENCY * LATENCY_S
    overhead = {name: max(0.0, min(w) - ideal) / N_CALLS * 1000 for name, w in walls.items()}
    cpu = {name: min(c) / N_CALLS * 1000 for name, c in cpus.items()}
    best_ours = min(walls["ours"])
    setup = f"{N_CALLS} calls, {CONCURRENCY} at once, stand-in answers in {LATENCY_S * 1000:.0f} ms"

    def row(name: str, baseline: str, label: str, note: str) -> Result:
        return Result(
            name,
            overhead["ours"],
            "ms",
            baseline=overhead[baseline],
            baseline_label=label,
            higher_is_better=False,
            note=f"{note}; CPU/call ours {cpu['ours']:.2f} ms, theirs {cpu[baseline]:.2f} ms",
        )

    return [
        row(
            "llm client overhead per call vs raw httpx",
            "httpx",
            "httpx, one pool",
            f"{setup}; wall beyond ideal ({ideal:.2f}s) per call; ratio = theirs / ours",
        ),
        row(
            "llm client overhead per call vs pooled httpx",
            "httpx16",
            "httpx, pools of 16",
            "raw httpx over pools of 16 like ours (the SDK's httpx2 fork costs less per request)",
        ),
        row(
            "llm client overhead per call vs openai SDK",
            "openai",
            "AsyncOpenAI create()",
            "the typed SDK call as usually written, one pool",
        ),
        Result(
            "llm client throughput vs ideal",
            N_CALLS / best_ours,
            "calls/s",
            baseline=N_CALLS / ideal,
            baseline_label="ideal",
            note=f"{setup}; bound by client CPU (2-core machine shared with the stand-in)",
        ),
    ]


if __name__ == "__main__":
    for result in run():
        print(
            f"{result.name}: {result.ours_text()} | {result.baseline_text()} | {result.ratio_text()} | {result.note}"
        )
