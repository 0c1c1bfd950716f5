"""`ores serve --agent` started as users start it, with real models: the tiny random Llama writing
whole traces through the single-model loop (CI), and, under `-m slow`, the default with nothing
configured: the workflow on the embedded SmolLM2, which writes real reports (~40 s each on 2 cores).
The official `openai` client is the caller, plain and streamed, behind an API key; what was served
lands in the workspace once the server stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from oresearch_cli.workspace import Workspace
from scripted_generator import build_mini_corpus

from conftest import error_lines, ores
from model_support import ServeProcess, embedded_ws, free_port, tiny_model

KEY = "sk-agent-test-key"
QUESTION = "How do plants store light energy in photosynthesis?"
STOP_REASONS = {"answered", "max_tool_calls", "max_turns", "max_new_tokens", "max_turn_tokens", "max_seconds",
                "context", "no_tool_call", "fake_observation"}  # fmt: skip


@pytest.fixture
def agent_ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    build_mini_corpus(Workspace.open(ws), tmp_path)
    return ws


def served_rows(ws: Path) -> list[dict[str, Any]]:
    workspace = Workspace.open(ws)
    run = workspace.runs("serve")[0]
    artifact = next(a for a in workspace.artifacts(run.run_id) if a.kind == "traces")
    return workspace.read_artifact(artifact)


def chat_both_ways(base_url: str, **create: Any) -> tuple[Any, str, str | None]:
    """(the plain answer, the streamed content, the streamed finish reason) through the openai client."""
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=600)
    assert [m.id for m in client.models.list()] == ["ores-agent"]
    messages = [{"role": "user", "content": QUESTION}]
    answer = client.chat.completions.create(model="ores-agent", messages=messages, **create)
    parts, finish = [], None
    for chunk in client.chat.completions.create(model="ores-agent", messages=messages, stream=True, **create):
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return answer, "".join(parts), finish


def test_tiny_model_answers_the_openai_client_behind_a_key_and_lands_in_the_workspace(
    agent_ws: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = tiny_model(embedded_ws(tmp_path_factory))
    monkeypatch.setenv("ORES_SERVE_API_KEY", KEY)
    server = ServeProcess(
        agent_ws, free_port(), "--agent", "--model", str(tiny), "--search", "local:mini", "--crawl", "local",
        "--max-tokens", "48", "--max-concurrent", "8",
    )  # fmt: skip
    try:
        assert server.model_name == "ores-agent" and server.child_pid == server.process.pid
        answer, streamed, finish = chat_both_ways(server.base_url, temperature=0)
        extra = answer.model_extra["ores"]
        assert extra["stop_reason"] in STOP_REASONS
        assert 0 < answer.usage.completion_tokens <= 48  # the server's token limit held
        assert (
            answer.choices[0].finish_reason in ("stop", "length")
            and finish == answer.choices[0].finish_reason
        )
        assert streamed == answer.choices[0].message.content  # greedy: the same research twice
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0).models.list()
        with httpx.stream(
            "POST",
            server.base_url + "/research",
            json={"question": QUESTION, "stream": True, "temperature": 0},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=300,
        ) as response:
            names = [line[len("event: ") :] for line in response.iter_lines() if line.startswith("event: ")]
        assert names[0] == "start" and names[-1] == "done"
        codes = asyncio.run(burst(server.base_url))
        assert set(codes) <= {200, 429} and codes.count(200) >= 8, codes
        health = server.base_url.removesuffix("/v1") + "/health"
        deadline = time.monotonic() + 30  # the clients that left: their researches stop, none orphaned
        while httpx.get(health).json()["tasks"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(health).json() | {"in_flight": 0, "tasks": 0} == httpx.get(health).json()
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.stderr()[-2000:]
    n_rows = 3 + codes.count(200) + N_LEAVING
    assert f"{n_rows} researches recorded" in server.stderr() and KEY not in server.stderr()
    rows = served_rows(agent_ws)
    assert len(rows) == n_rows  # every answer and every abandoned research, none lost
    # A research whose client left is either finished (it ended before the server saw the
    # disconnect: the tiny model is quick) or failed as disconnected; nothing else. That the
    # disconnect cancels the model's turn is asserted deterministically in test_agent_server.py.
    failed = [r for r in rows if r["status"] != "done"]
    assert len(failed) <= N_LEAVING and all(
        r["status"] == "failed" and "client disconnected" in r["error"] for r in failed
    )
    assert all(json.loads(r["models"]) == {"model": tiny.name} for r in rows)


N_LEAVING = 4


async def burst(base_url: str) -> list[int]:
    """32 researches at once through the openai client (their status codes), then 4 clients that
    leave as soon as their research has started (its `start` event arrived)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=300)

    async def ask(n: int) -> int:
        try:
            await client.chat.completions.create(
                model="ores-agent", messages=[{"role": "user", "content": f"{QUESTION} ({n})"}]
            )
            return 200
        except openai.RateLimitError as exc:
            assert int(exc.response.headers["retry-after"]) >= 1
            return 429

    codes = list(await asyncio.gather(*(ask(n) for n in range(32))))

    async def leave_once_started(n: int) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            body = {"question": f"{QUESTION} (gone {n})", "stream": True}
            headers = {"Authorization": f"Bearer {KEY}"}
            async with http.stream("POST", base_url + "/research", json=body, headers=headers) as response:
                async for line in response.aiter_lines():
                    if line == "event: start":
                        return  # closing the stream mid-research

    await asyncio.gather(*(leave_once_started(n) for n in range(N_LEAVING)))
    return codes


def test_agent_flags_that_cannot_go_together_are_one_line_errors(agent_ws: Path) -> None:
    cases = [
        (["serve", "--workflow"], "pass it with --agent"),
        (["serve", "--agent", "--base-url", "http://127.0.0.1:9/v1"], "configure --workflow"),
        (
            [
                "serve",
                "--agent",
                "--workflow",
                "--base-url",
                f"http://127.0.0.1:{free_port()}/v1",
                "--model",
                "m",
            ],
            "is unreachable",
        ),
        (["serve", "--agent", "--model", "no-such-model"], "no-such-model"),
    ]
    for args, expected in cases:
        done = ores(*args, "--ws", str(agent_ws), "--port", "0", cwd=agent_ws.parent)
        assert done.returncode == 2, (args, done.stderr)
        errors = [line for line in error_lines(done.stderr) if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], (args, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_out_of_the_box_the_embedded_model_writes_reports_through_the_workflow(
    agent_ws: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = embedded_ws(tmp_path_factory) / "models"
    (agent_ws / "models").rmdir()
    os.symlink(models, agent_ws / "models", target_is_directory=True)  # converted once per session
    monkeypatch.setenv("ORES_SERVE_API_KEY", KEY)
    server = ServeProcess(
        agent_ws, free_port(), "--agent", "--search", "local:mini", "--crawl", "local", timeout=600
    )
    try:
        assert "the workflow on the embedded SmolLM2" in server.stderr()
        answer, streamed, finish = chat_both_ways(server.base_url)
        for report in (answer.choices[0].message.content, streamed):
            assert "## " in report and "[1]" in report, report  # sections and a citation, written by SmolLM2
        assert answer.model_extra["ores"]["stop_reason"] == "answered" and finish == "stop"
        assert answer.model_extra["ores"]["sources"] and answer.usage.completion_tokens > 100
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.stderr()[-2000:]
    rows = served_rows(agent_ws)
    assert len(rows) == 2 and all(r["status"] == "done" and r["report"] for r in rows)
