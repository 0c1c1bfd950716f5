"""`ores serve --agent`: what the HTTP server adds to a research, 32 concurrent requests (target <= 1.05x).

The same research agent (`SingleModelAgent`), run two ways side by side in one process:

- direct: N_CONCURRENT `agent.research(...)` calls at once (`asyncio.gather`), in the main thread.
- served: the same kind of agent behind `AgentServer(...).app()`, run by `uvicorn.Server` on a free
  127.0.0.1 port in a background thread with its own event loop; a client in the main thread sends
  N_CONCURRENT `POST /v1/research` at once and checks each got 200 with a report. The client is a bare
  keep-alive HTTP/1.1 client on asyncio streams (`LeanClient`), so that what is added is the server's;
  a second row uses `httpx.AsyncClient` (what the openai client runs on), whose pure-Python pool and
  h11 parsing cost far more CPU than the server does.

Both use the scripted model of the tests (tests/scripted_generator.py: one token per character, a
search, a crawl, then a cited report; each turn waits TURN_LATENCY_S first, as a served model would,
so a research is 3 turns) and the real
toolbox over a 3-page local corpus (no tool cache). The ratio is the served wall time over the direct
one, median of ROUNDS rounds each, the kinds taking turns going first, after a warm-up of each; the
note gives the process CPU per round too (both threads). A third row does the same for one request
at a time (the latency the server adds).

Client, server and the direct run share one Python process (the GIL) and this machine's cores, so
the client's own work counts as overhead here. A turn of 250 ms is shorter than any real model's
(a served 7B model writes ~50 tokens/s per sequence; a turn is 100-1,000 tokens), so the fixed
cost per request weighs more here than in use: a 32-request burst takes ~0.8 s. With 50 ms turns
(~200 ms a burst) the same server measured 1.03-1.10x: each ms of CPU per request then shows as
~0.15x. The ratio moves by a few hundredths from run to run on a shared machine.
ORES_BENCH_QUICK=1 runs fewer rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from oresearch_cli.server.agent_app import AgentServer
from oresearch_cli.server.limits import ServeLimits
from oresearch_cli.server.research_service import ResearchBudget, ResearchRequest, SingleModelAgent
from oresearch_cli.tools import open_toolbox
from oresearch_cli.workspace import Workspace

from common import Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scripted_generator import CharModel, build_mini_corpus  # noqa: E402  (tests/: the loop's scripted model)

QUICK = os.environ.get("ORES_BENCH_QUICK", "") not in ("", "0")
N_CONCURRENT = 32
TURN_LATENCY_S = 0.25
ROUNDS = 3 if QUICK else 15
ROUNDS_SINGLE = 5 if QUICK else 15
NOISY_LOAD = 2.5  # 1-minute load average above which the note says so
LIMITS = ResearchBudget(max_tool_calls=16, max_steps=40, max_tokens=8192, max_seconds=900.0)

QUESTIONS = [
    f"How do plants store light energy in photosynthesis? (variant {i})" for i in range(N_CONCURRENT)
]


@contextlib.asynccontextmanager
async def open_agent(ws: Workspace) -> Any:
    """The agent on a fresh scripted model and a toolbox opened in the running loop."""
    async with open_toolbox(ws, search="local:mini", crawl="local", cache=False) as tools:
        yield SingleModelAgent(CharModel(delay=TURN_LATENCY_S), tools, "scripted-char", limits=LIMITS)


def _ignore(_: Any) -> None:
    return None


async def direct_round(agent: SingleModelAgent, questions: Sequence[str]) -> float:
    started = time.perf_counter()
    done = await asyncio.gather(
        *(agent.research(ResearchRequest(f"d{i}", q, "en"), _ignore) for i, q in enumerate(questions))
    )
    wall = time.perf_counter() - started
    assert all(r.report for r in done), [r.stop_reason for r in done]
    return wall


Post = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class LeanClient:
    """A bare HTTP/1.1 JSON client on asyncio streams, keeping its connections alive: the least a
    client can cost, so that what the served round adds over the direct one is the server's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        length = {k.strip().lower(): v.strip() for k, v in fields.items()}["content-length"]
        payload = await reader.readexactly(int(length))
        self.idle.append((reader, writer))
        return int(head[0].split()[1]), json.loads(payload)

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def httpx_post(client: httpx.AsyncClient) -> Post:
    async def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reply = await client.post(path, json=body)
        return reply.status_code, reply.json()

    return post


async def served_round(post: Post, questions: Sequence[str]) -> float:
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(post("/v1/research", {"question": q, "language": "en"}) for q in questions)
    )
    wall = time.perf_counter() - started
    for status, body in replies:
        assert status == 200, (status, str(body)[:300])
        assert body["report"], str(body)[:300]
    return wall


class ServerThread:
    """`AgentServer` on uvicorn, in a thread with its own event loop (and its own agent and toolbox)."""

    def __init__(self, ws: Workspace) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.ws = ws
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="agent-server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        async with open_agent(self.ws) as agent:
            app = AgentServer(agent, ServeLimits(max_concurrent=N_CONCURRENT * 2, budget=LIMITS)).app()
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
            self.server = uvicorn.Server(config)
            serving = asyncio.ensure_future(self.server.serve())
            while not self.server.started and not serving.done():
                await asyncio.sleep(0.01)
            self.ready.set()
            await serving

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.ready.wait(60)
        if self.error is not None or self.server is None or not self.server.started:
            raise RuntimeError(f"the agent server did not start: {self.error!r}")
        return self

    def __exit__(self, *_: Any) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


KINDS = ("direct", "served", "httpx")


async def measure(ws: Workspace, port: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds of each round, by kind; `1` appended: one request at a time."""
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in (*KINDS, "direct1", "served1")}
    limits = httpx.Limits(max_connections=N_CONCURRENT * 2, max_keepalive_connections=N_CONCURRENT * 2)
    lean = LeanClient("127.0.0.1", port)
    async with (
        open_agent(ws) as agent,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits) as client,
    ):

        async def one_round(kind: str, questions: Sequence[str]) -> tuple[float, float]:
            cpu = time.process_time()
            if kind.startswith("direct"):
                wall = await direct_round(agent, questions)
            else:
                wall = await served_round(httpx_post(client) if kind == "httpx" else lean.post, questions)
            return wall, time.process_time() - cpu

        try:
            for kind in KINDS:  # warm-up: imports, the corpus, the connections
                await one_round(kind, QUESTIONS)
            for n in range(ROUNDS):
                # rotate which goes first, so a drift in the machine's load hits all alike
                for kind in KINDS[n % 3 :] + KINDS[: n % 3]:
                    rounds[kind].append(await one_round(kind, QUESTIONS))
            for n in range(ROUNDS_SINGLE):
                question = [QUESTIONS[n % len(QUESTIONS)]]
                rounds["direct1"].append(await one_round("direct1", question))
                rounds["served1"].append(await one_round("served1", question))
        finally:
            await lean.aclose()
    return rounds


def run() -> list[Result]:
    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-agent-server-"))
    loads = [os.getloadavg()[0]]
    try:
        ws = Workspace.open(tmp / "ws")
        build_mini_corpus(ws, tmp)
        with ServerThread(ws) as server:
            rounds = asyncio.run(measure(ws, server.port))
        loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    wall = {k: 1000 * statistics.median(w for w, _ in v) for k, v in rounds.items()}
    cpu = {k: 1000 * statistics.median(c for _, c in v) for k, v in rounds.items()}
    spread = {
        k: f"{1000 * min(w for w, _ in v):.0f}-{1000 * max(w for w, _ in v):.0f}" for k, v in rounds.items()
    }
    load = f"load avg {min(loads):.1f}-{max(loads):.1f}"
    if max(loads) > NOISY_LOAD:
        load = f"NOISY, rerun: other processes were busy; {load}"
    mode = "QUICK mode (fewer rounds); " if QUICK else ""
    n = N_CONCURRENT
    setup = (
        f"scripted model, 3 turns of {TURN_LATENCY_S * 1000:.0f} ms (ideal {3000 * TURN_LATENCY_S:.0f} ms a "
        f"research), local-corpus toolbox; client, uvicorn thread and direct run share one process (GIL) "
        f"and {os.cpu_count()} cores"
    )
    return [
        Result(
            name=f"agent server: {n} concurrent POST /v1/research vs direct research()",
            ours=wall["served"],
            unit="ms",
            baseline=wall["direct"],
            baseline_label="direct",
            target="<= 1.05x",
            note=(
                f"{mode}ratio = served/direct wall, median of {ROUNDS} rounds after a warm-up (served "
                f"{spread['served']} ms, direct {spread['direct']} ms); bare keep-alive asyncio client; "
                f"process CPU {cpu['served']:.0f} vs {cpu['direct']:.0f} ms a round, i.e. "
                f"{(cpu['served'] - cpu['direct']) / n:.2f} ms/request of HTTP (server and client); {setup}; {load}"
            ),
        ),
        Result(
            name=f"agent server: {n} concurrent, httpx.AsyncClient vs direct research()",
            ours=wall["httpx"],
            unit="ms",
            baseline=wall["direct"],
            baseline_label="direct",
            note=(
                f"ratio = served/direct wall, median of {ROUNDS} ({spread['httpx']} ms); the same server, "
                f"what a Python httpx (or openai) client in the same process sees: its pure-Python pool and "
                f"h11 cost {(cpu['httpx'] - cpu['served']) / n:.2f} ms CPU/request more than the bare client"
            ),
        ),
        Result(
            name="agent server: 1 request, POST /v1/research vs direct research()",
            ours=wall["served1"],
            unit="ms",
            baseline=wall["direct1"],
            baseline_label="direct",
            note=(
                f"ratio = served/direct latency, median of {ROUNDS_SINGLE}; the server adds "
                f"{wall['served1'] - wall['direct1']:.1f} ms a request "
                f"(served {spread['served1']} ms, direct {spread['direct1']} ms)"
            ),
        ),
    ]


if __name__ == "__main__":
    for result in run():
        print(f"{result.name}: {result.ours_text()} vs {result.baseline_text()} = {result.ratio_text()}")
        print(f"  {result.note}")
