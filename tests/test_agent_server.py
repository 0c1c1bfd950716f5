"""`ores serve --agent`: the research agent over HTTP, called the way users call it (the official
`openai` client, curl-style SSE through httpx).

The server here is the real one (`server.agent_server.run_agent_server`: the toolbox on a real local
corpus, the workspace run that records requests, uvicorn) run in a thread; only the model is
scripted (`scripted_generator.CharModel`: search, read, cited report; a `delay` per turn to hold
researches open). The tests through real models (the tiny random Llama in CI, the embedded
SmolLM2 under `-m slow`) start `ores serve --agent` as users do, in test_agent_server_cli.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from oresearch_cli.server import agent_server
from oresearch_cli.server.agent_app import AgentServer
from oresearch_cli.server.agent_server import AgentServeOptions, run_agent_server
from oresearch_cli.server.limits import ServeLimits
from oresearch_cli.server.research_service import ResearchBudget, report_chunks
from oresearch_cli.stages.single_model import ModelSystem
from oresearch_cli.workspace import Workspace
from scripted_generator import PHOTO_URL, CharModel, build_mini_corpus

from model_support import free_port

QUESTION = "How do plants store light energy in photosynthesis?"
KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def template_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("agent-server")
    build_mini_corpus(Workspace.open(tmp / "ws"), tmp)
    return tmp / "ws"


@pytest.fixture
def ws_dir(template_ws: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template_ws, tmp_path / "ws"))


class Running:
    """A running agent server: its URL, the `AgentServer` (counts, jobs), what it said."""

    def __init__(self) -> None:
        self.url = ""
        self.server: AgentServer | None = None
        self.stop: Any = None
        self.lines: list[str] = []
        self.error: BaseException | None = None

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=10).json()


@contextmanager
def serving(
    ws_dir: Path,
    model: CharModel,
    monkeypatch: pytest.MonkeyPatch,
    system: ModelSystem | None = ModelSystem("scripted"),
    **options: Any,
) -> Iterator[Running]:
    """`run_agent_server` on the scripted model in a thread; stopped (its run finished) on exit."""

    async def open_generator(
        ws: Any, system: ModelSystem, stack: Any, max_batch: int
    ) -> tuple[CharModel, str]:
        return model, model.name

    monkeypatch.setattr(agent_server, "open_generator", open_generator)
    port = free_port()
    opts = AgentServeOptions(model=system, port=port, search="local:mini", crawl="local", **options)
    running = Running()
    ready = threading.Event()

    def on_ready(server: AgentServer, stop: Any) -> None:
        running.server, running.stop = server, stop
        running.url = f"http://127.0.0.1:{port}"
        ready.set()

    def main() -> None:
        try:
            asyncio.run(
                run_agent_server(Workspace.open(ws_dir), opts, say=running.lines.append, on_ready=on_ready)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            running.error = exc
            ready.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(60), running.lines
    if running.error is not None:
        raise running.error
    try:
        yield running
    finally:
        running.stop()
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop"
        if running.error is not None:
            raise running.error


def served_rows(ws_dir: Path) -> list[dict[str, Any]]:
    """The rows the (stopped) server recorded: its `traces` artifact of stage `serve`."""
    ws = Workspace.open(ws_dir)
    runs = ws.runs("serve")
    assert runs, "no serve run was recorded"
    artifact = next(a for a in ws.artifacts(runs[0].run_id) if a.kind == "traces")
    return ws.read_artifact(artifact)


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name or "message", json.loads(line[len("data: ") :])))
            name = None
    return events


def wait_until(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


# -- the official openai client ----------------------------------------------------------------------


def test_openai_client_gets_the_report_plain_and_streamed(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = CharModel()
    with serving(ws_dir, model, monkeypatch) as running:
        client = openai.OpenAI(base_url=running.v1, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["ores-agent"]

        answer = client.chat.completions.create(
            model="ores-agent", messages=[{"role": "user", "content": QUESTION}]
        )
        report = answer.choices[0].message.content
        assert report.startswith("# Photosynthesis") and "[1]" in report
        assert answer.choices[0].finish_reason == "stop"
        assert (
            answer.usage.completion_tokens > 0 and answer.usage.prompt_tokens > answer.usage.completion_tokens
        )
        extra = answer.model_extra["ores"]
        assert extra["stop_reason"] == "answered" and extra["tool_calls"] == 2
        assert [s["url"] for s in extra["sources"]] == [PHOTO_URL] and extra["sources"][0]["cited"]

        stream = client.chat.completions.create(
            model="ores-agent",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
        content, reasoning, finish, usage = [], [], None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                content.append(choice.delta.content or "")
                reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
                finish = choice.finish_reason or finish
        assert "".join(content) == report  # the same scripted research, streamed
        steps = "".join(reasoning)
        assert "search: photosynthesis light energy" in steps and f"read: {PHOTO_URL}" in steps
        assert steps.index("search:") < steps.index("observed") < steps.index("read:")
        assert finish == "stop" and usage is not None and usage.total_tokens == answer.usage.total_tokens
    rows = served_rows(ws_dir)
    assert len(rows) == 2 and all(r["status"] == "done" and r["valid"] for r in rows)
    assert {r["question"] for r in rows} == {QUESTION}


def test_chat_refuses_another_model_and_what_the_agent_cannot_do(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(ws_dir, CharModel(), monkeypatch) as running:
        client = openai.OpenAI(base_url=running.v1, api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="serves 'ores-agent'"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
        with pytest.raises(openai.BadRequestError, match="tools: not supported"):
            client.chat.completions.create(
                model="ores-agent",
                messages=[{"role": "user", "content": QUESTION}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            )
        with pytest.raises(openai.BadRequestError, match="last user message"):
            client.chat.completions.create(model="ores-agent", messages=[{"role": "system", "content": "hi"}])


# -- /v1/research ------------------------------------------------------------------------------------


def test_research_returns_report_sources_trace_usage_and_is_recorded(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(ws_dir, CharModel(), monkeypatch) as running:
        response = httpx.post(
            running.v1 + "/research", json={"question": QUESTION, "language": "en"}, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == response.headers["x-request-id"] and body["object"] == "research"
        assert body["report"].startswith("# Photosynthesis") and body["valid"] and body["problems"] == []
        assert "<web_search>" in body["trace"] and "<crawl_page>" in body["trace"]
        assert body["sources"] == [{"n": 1, "url": PHOTO_URL, "title": "Photosynthesis", "cited": True}]
        usage = body["usage"]
        assert usage["tool_calls"] == 2 and usage["steps"] == 3
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert body["cost_usd"] is None  # a local model has no price
        lean = httpx.post(
            running.v1 + "/research", json={"question": QUESTION, "include_trace": False}, timeout=30
        )
        assert "trace" not in lean.json()
        assert any("recording requests in run serve-" in line for line in running.lines)
    rows = {r["id"]: r for r in served_rows(ws_dir)}
    assert body["id"] in rows and rows[body["id"]]["report"] == body["report"]
    assert rows[body["id"]]["trace"] == body["trace"] and rows[body["id"]]["n_tool_calls"] == 2


def test_sse_events_come_in_research_order_and_the_report_chunks_join_up(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        serving(ws_dir, CharModel(), monkeypatch) as running,
        httpx.stream(
            "POST", running.v1 + "/research", json={"question": QUESTION, "stream": True}, timeout=30
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert (
        names.index("subtasks") < names.index("step") < names.index("subtask_answer") < names.index("report")
    )
    steps = [data for name, data in events if name == "step"]
    assert [s["kind"] for s in steps] == [
        "think", "plan", "web_search", "observation", "think", "crawl_page", "observation"
    ]  # fmt: skip
    assert all(s["subtask"] == 1 for s in steps)
    assert steps[2]["queries"] == ["photosynthesis light energy"] and steps[5]["urls"] == [PHOTO_URL]
    assert 0 < len(steps[3]["summary"]) <= 303 and steps[3]["chars"] >= len(steps[3]["summary"]) - 3
    done = events[-1][1]
    assert "".join(data["delta"] for name, data in events if name == "report") == done["report"]
    assert events[0][1]["id"] == done["id"]
    assert names[names.index("report") :].count("step") == 0  # nothing after the report but chunks and done


def test_report_chunks_join_back_exactly() -> None:
    report = "# T\n\n" + "A sentence of the body. " * 60 + "\n\n## Next\n" + "x" * 2000 + "\nend"
    chunks = report_chunks(report)
    assert "".join(chunks) == report and len(chunks) > 3
    assert max(map(len, chunks)) <= 800


# -- auth ------------------------------------------------------------------------------------------


def test_every_route_but_health_needs_the_key(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(ws_dir, CharModel(), monkeypatch, api_key=KEY) as running:
        assert httpx.get(running.url + "/health").status_code == 200
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/research"),
                             ("POST", "/v1/chat/completions")]:  # fmt: skip
            missing = httpx.request(method, running.url + path, json={"question": QUESTION})
            assert missing.status_code == 401 and "missing API key" in missing.text
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = httpx.request(
                method,
                running.url + path,
                json={"question": QUESTION},
                headers={"Authorization": "Bearer sk-nope"},
            )
            assert wrong.status_code == 401 and "invalid API key" in wrong.text
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            openai.OpenAI(base_url=running.v1, api_key="sk-nope", max_retries=0).models.list()
        client = openai.OpenAI(base_url=running.v1, api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(
            model="ores-agent", messages=[{"role": "user", "content": QUESTION}]
        )
        assert answer.choices[0].message.content.startswith("# Photosynthesis")
        metrics = httpx.get(running.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert 'ores_agent_errors_total{kind="auth"} 9.0' in metrics
    assert not any(KEY in line for line in running.lines)


def test_binding_beyond_loopback_without_a_key_warns() -> None:
    from oresearch_cli.server.auth import api_key_from, exposure_warning

    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", KEY) is None
    assert "without an API key" in (exposure_warning("0.0.0.0", None) or "")
    assert api_key_from(None, {"ORES_SERVE_API_KEY": KEY}) == KEY
    assert api_key_from("flag", {"ORES_SERVE_API_KEY": KEY}) == "flag"
    assert api_key_from(None, {"ORES_SERVE_API_KEY": ""}) is None


# -- limits ----------------------------------------------------------------------------------------


def test_each_request_limit_is_refused_with_a_clear_line(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = ServeLimits(
        max_body_bytes=4000,
        max_question_chars=500,
        budget=ResearchBudget(max_tool_calls=4, max_steps=10, max_tokens=4000, max_seconds=60),
    )
    with serving(ws_dir, CharModel(), monkeypatch, limits=limits) as running:
        url = running.v1 + "/research"

        def refused(body: Any, status: int = 400, **kwargs: Any) -> str:
            response = httpx.post(url, json=body, **kwargs) if body is not None else httpx.post(url, **kwargs)
            assert response.status_code == status, response.text
            return response.json()["error"]["message"]

        assert "over this server's limit of 4,000 bytes" in refused({"question": "x" * 5000}, 413)
        assert "over this server's limit of 500" in refused({"question": "why? " * 150})
        assert "max_tool_calls=5 is above this server's limit of 4" in refused(
            {"question": QUESTION, "max_tool_calls": 5}
        )
        assert "max_tokens=5000 is above" in refused({"question": QUESTION, "max_tokens": 5000})
        assert "max_seconds=61 is above" in refused({"question": QUESTION, "max_seconds": 61})
        assert "max_steps must be an integer of at least 1" in refused({"question": QUESTION, "max_steps": 0})
        assert "unknown field(s) max_tool_call" in refused({"question": QUESTION, "max_tool_call": 2})
        assert "question must be a non-empty string" in refused({"question": 42})
        assert "not valid JSON" in refused(None, content=b"{nope")
        with pytest.raises(openai.BadRequestError, match="max_tokens=9000 is above"):
            openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0).chat.completions.create(
                model="ores-agent", messages=[{"role": "user", "content": QUESTION}], max_tokens=9000
            )
        assert running.server is not None and running.server.admission.in_flight == 0


def test_budgets_stop_the_research_where_they_say(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(ws_dir, CharModel(), monkeypatch) as running:

        def research(**budget: Any) -> dict[str, Any]:
            response = httpx.post(running.v1 + "/research", json={"question": QUESTION, **budget}, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        steps = research(max_steps=1)
        assert (
            steps["stop_reason"] == "max_turns" and steps["usage"]["steps"] == 1 and steps["report"] is None
        )
        tools = research(max_tool_calls=1)  # the second call gets the budget notice, then the report
        assert tools["usage"]["tool_calls"] == 1 and "Tool budget spent" in tools["trace"]
        tokens = research(max_tokens=40)
        assert tokens["stop_reason"] == "max_new_tokens" and tokens["usage"]["completion_tokens"] <= 40
        chat = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0).chat.completions.create(
            model="ores-agent", messages=[{"role": "user", "content": QUESTION}], max_tokens=40
        )
        assert chat.choices[0].finish_reason == "length" and chat.choices[0].message.content == ""
    with serving(ws_dir, CharModel(delay=0.5), monkeypatch) as running:
        timed = httpx.post(
            running.v1 + "/research", json={"question": QUESTION, "max_seconds": 0.8}, timeout=30
        )
        assert timed.json()["stop_reason"] == "max_seconds"


def test_concurrency_past_the_limit_gets_429_with_retry_after(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = CharModel(delay=0.3)
    with serving(ws_dir, model, monkeypatch, limits=ServeLimits(max_concurrent=8)) as running:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return list(
                    await asyncio.gather(
                        *(
                            client.post(running.v1 + "/research", json={"question": f"{QUESTION} #{i}"})
                            for i in range(32)
                        )
                    )
                )

        responses = asyncio.run(burst())
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 429} and codes.count(200) >= 8, codes
        busy = next(r for r in responses if r.status_code == 429)
        assert (
            int(busy.headers["retry-after"]) >= 1
            and "research slots are busy" in busy.json()["error"]["message"]
        )
        answered = {r.json()["id"] for r in responses if r.status_code == 200}
        assert all(r.json()["report"] for r in responses if r.status_code == 200)
        assert running.health()["in_flight"] == 0 and running.health()["tasks"] == 0
        metrics = httpx.get(running.url + "/metrics").text
        assert f'ores_agent_errors_total{{kind="busy"}} {float(codes.count(429))}' in metrics
        assert (
            f'ores_agent_requests_total{{route="/v1/research",status="200"}} {float(len(answered))}'
            in metrics
        )
        assert (
            "ores_agent_tool_calls_total" in metrics
            and 'ores_agent_tokens_total{kind="completion"}' in metrics
        )
    rows = served_rows(ws_dir)
    assert {r["id"] for r in rows} == answered  # every answer recorded, none lost, no refused one


def test_a_client_that_disconnects_stops_its_research(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = CharModel(delay=2.0)
    with serving(ws_dir, model, monkeypatch) as running:
        for stream in (False, True):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    running.v1 + "/research", json={"question": QUESTION, "stream": stream}, timeout=0.5
                )
            # the research is cancelled at its model turn: no orphaned task, the slot is free
            assert wait_until(lambda: running.health()["tasks"] == 0), running.health()
            assert running.health()["in_flight"] == 0 and model.in_flight == 0
        assert model.cancelled == 2
        assert 'ores_agent_errors_total{kind="disconnected"} 2.0' in httpx.get(running.url + "/metrics").text
    rows = served_rows(ws_dir)
    assert len(rows) == 2 and all(r["status"] == "failed" for r in rows)
    assert all("client disconnected" in r["error"] for r in rows)


def test_no_record_leaves_the_workspace_alone(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(ws_dir, CharModel(), monkeypatch, record=False) as running:
        assert (
            httpx.post(running.v1 + "/research", json={"question": QUESTION}, timeout=30).status_code == 200
        )
        assert any("not recording" in line for line in running.lines)
    assert Workspace.open(ws_dir).runs("serve") == []


def test_a_failing_model_is_a_502_with_its_line_and_a_failed_row(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(ws_dir, CharModel(), monkeypatch) as running:
        response = httpx.post(running.v1 + "/research", json={"question": "BROKEN: what now?"}, timeout=30)
        assert response.status_code == 502 and "the engine fell over" in response.json()["error"]["message"]
        with httpx.stream(
            "POST", running.v1 + "/research", json={"question": "BROKEN: again", "stream": True}
        ) as r:
            events = sse_events(r)
        assert [n for n, _ in events] == ["start", "error"] and "fell over" in events[1][1]["error"][
            "message"
        ]
    rows = served_rows(ws_dir)
    assert [r["status"] for r in rows] == ["failed", "failed"] and "fell over" in rows[0]["error"]


# -- the workflow ----------------------------------------------------------------------------------


def test_workflow_streams_each_subtasks_steps_and_records_its_calls(
    ws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oresearch_cli.agent.context import ResearchOptions

    from standin_llm import StandinLLM
    from synth_support import Teacher, llm_config

    research = ResearchOptions(
        min_subtasks=2, max_subtasks=2, min_tool_calls=1, max_tool_calls=2, max_steps=4
    )
    with (
        StandinLLM(Teacher()) as llm,
        serving(
            ws_dir, CharModel(), monkeypatch, system=None, workflow=llm_config(llm.url), research=research
        ) as running,
    ):
        with httpx.stream(
            "POST", running.v1 + "/research", json={"question": QUESTION, "stream": True}, timeout=60
        ) as response:
            events = sse_events(response)
        capped = httpx.post(
            running.v1 + "/research", json={"question": QUESTION, "max_tool_calls": 1}, timeout=60
        )
        assert any("researching with the workflow" in line for line in running.lines)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[1] == "subtasks" and names[-1] == "done", names
    assert len(events[1][1]["subtasks"]) == 2
    steps = [data for name, data in events if name == "step"]
    assert {s["subtask"] for s in steps} == {1, 2}  # both workers' steps, as they happen
    answers = [data["subtask"] for name, data in events if name == "subtask_answer"]
    assert sorted(answers) == [1, 2] and names.index("report") > max(
        i for i, n in enumerate(names) if n == "subtask_answer"
    )
    done = events[-1][1]
    assert done["valid"] and done["model"] == "workflow" and done["usage"]["tool_calls"] >= 2
    assert (
        done["usage"]["prompt_tokens"] > 0
        and "".join(d["delta"] for n, d in events if n == "report") == done["report"]
    )
    assert capped.json()["usage"]["tool_calls"] <= 2  # one per subtask, as asked
    ws = Workspace.open(ws_dir)
    run = ws.runs("serve")[0]
    kinds = {a.kind for a in ws.artifacts(run.run_id)}
    assert kinds == {"traces", "llm_calls"}  # the roles' calls logged like a synth run's
    assert len(served_rows(ws_dir)) == 2
