"""Exit 0 means done: a rejected search key stops `ores synth`, a judge that is unreachable, refuses
the key or fails every call stops `ores filter`, a run with failed items exits 3 (`EXIT_PARTIAL`),
and `ores synth` against an endpoint serving one model needs no model set.

Search backends answer from a loopback server; the LLM roles from the scripted stand-in.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from oresearch_cli.errors import EXIT_PARTIAL, OresError
from oresearch_cli.filtering.judge import CRITERIA
from oresearch_cli.llm import LLMConfigError, load_config
from oresearch_cli.llm.discover import fill_models
from oresearch_cli.stages.filter import FilterOptions, run_filter
from oresearch_cli.stages.synth import SynthOptions, run_synth
from oresearch_cli.tools import Toolbox
from oresearch_cli.tools.apiclient import RetryPolicy
from oresearch_cli.tools.backends.web import SerperSearch
from oresearch_cli.tools.base import SearchHit
from oresearch_cli.tools.errors import BackendAuthError
from oresearch_cli.workspace import Workspace

from filter_support import traces_file
from standin_llm import Received, Reply, StandinLLM, error, ok
from synth_support import (
    Teacher,
    build_test_corpus,
    llm_config,
    planner_question,
    synth_cli_args,
    write_seeds,
)
from tools_support import LoopbackServer, Seen, send_json

FAST = RetryPolicy(attempts=2, base_wait=0.0, max_wait=0.0)
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serper(seen: Seen, h: Any) -> None:
    """Serper: 401 for any key but `good`, a 500 for the query `boom`, else one hit per query."""
    if seen.path.endswith("/models"):
        send_json(h, {"data": []}, 404)
        return
    if seen.headers.get("x-api-key") != "good":
        send_json(h, {"message": "Unauthorized."}, 401)
        return
    query = seen.json()["q"]
    if query == "boom":
        send_json(h, {"message": "upstream"}, 500)
        return
    send_json(h, {"organic": [{"title": query, "link": f"https://example.org/{query}", "snippet": "s"}]})


def _no_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("ORES_", "OPENAI_", "SERPER_")):
            monkeypatch.delenv(name)


# -- a rejected search key --------------------------------------------------------------------------


def test_the_toolbox_raises_on_a_rejected_key_and_observes_other_failures() -> None:
    async def go(key: str, *calls: Any) -> list[Any]:
        backend = SerperSearch.from_env({"SERPER_API_KEY": key, "SERPER_BASE_URL": server.url}, retry=FAST)
        async with Toolbox(backend, None) as tools:
            return [await call(tools) for call in calls]

    with LoopbackServer(serper) as server:
        # one query, and several at once: the rejection is raised, naming the backend and its variable
        for argument in ("photosynthesis", "photosynthesis | calvin cycle"):
            with pytest.raises(BackendAuthError) as info:
                asyncio.run(go("bad", lambda t, a=argument: t.web_search(a)))
            assert "serper" in str(info.value) and "SERPER_API_KEY" in str(info.value)
        with pytest.raises(BackendAuthError):
            asyncio.run(go("bad", lambda t: t.call("web_search", "photosynthesis")))
        # a 500 (after its retries) on one query is an observation, as before; the other query answers
        [observation] = asyncio.run(go("good", lambda t: t.web_search("boom | leaf")))
    assert observation.errors and "boom" in observation.errors[0]
    assert [h.url for h in observation.search.hits] == ["https://example.org/leaf"]


def test_synth_stops_on_a_rejected_search_key_and_records_no_seed_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_llm_env(monkeypatch)
    write_seeds(tmp_path / "q.jsonl", 3)
    ws = Workspace.open(tmp_path / "ws")
    with LoopbackServer(serper) as server, StandinLLM(Teacher(), lifetime=120) as srv:
        monkeypatch.setenv("SERPER_API_KEY", "bad")
        monkeypatch.setenv("SERPER_BASE_URL", server.url)
        options = SynthOptions(search="serper", crawl="local", concurrency=1)
        with pytest.raises(OresError) as info:
            asyncio.run(run_synth(ws, str(tmp_path / "q.jsonl"), options, llm_config(srv.url)))
        n_planners = sum(planner_question(r) is not None for r in srv.chat_requests())
    message = str(info.value)
    assert "serper" in message and "SERPER_API_KEY" in message and "HTTP 401" in message
    assert "synth stopped" in message and "\n" not in message
    assert n_planners <= 2  # the first seed's first search stopped the run (the next may have begun)
    [run] = ws.runs(stage="synth")
    assert run.status == "failed"
    # not one seed recorded as failed: a plain rerun after the fix does them all
    assert not [p for p in (tmp_path / "ws").glob("artifacts/synth/*/traces.jsonl") if p.read_text().strip()]


def test_the_single_model_loop_raises_a_rejected_key_too() -> None:
    from oresearch_cli.agent.single import LoopBudget, research
    from scripted_generator import CharModel

    class Rejected:
        name = cache_id = "rejected"

        async def search(self, query: str, num: int) -> list[SearchHit]:
            raise BackendAuthError("tavily: the API rejected the API key (HTTP 403); check TAVILY_API_KEY")

        async def aclose(self) -> None:
            return None

    async def go() -> None:
        async with Toolbox(Rejected(), None) as tools:
            await research("What is photosynthesis?", CharModel(), tools, budget=LoopBudget())

    with pytest.raises(BackendAuthError, match="TAVILY_API_KEY"):
        asyncio.run(go())


# -- the judge ------------------------------------------------------------------------------------------


def _judge_options(url: str, **overrides: Any) -> FilterOptions:
    return FilterOptions(
        llm_overrides={
            "judge.model": "judge-test",
            "judge.base_url": url,
            "judge.api_key_env": "",
            "judge.max_attempts": 1,
            **overrides,
        }
    )


def _scores(score: int = 8) -> str:
    return json.dumps({c: {"score": score, "reason": f"{c} is fine"} for c in CRITERIA})


def test_an_unreachable_judge_stops_filter_before_the_run(tmp_path: Path) -> None:
    src = traces_file(tmp_path / "t.jsonl", n_good=2, broken=False)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(OresError) as info:
        asyncio.run(run_filter(tmp_path / "ws", str(src), _judge_options(dead)))
    message = str(info.value)
    assert "judge endpoint" in message and "unreachable" in message and "--no-judge" in message
    assert not Workspace.open(tmp_path / "ws").runs(stage="filter")


def test_a_judge_that_rejects_the_key_stops_filter(tmp_path: Path) -> None:
    src = traces_file(tmp_path / "t.jsonl", n_good=3, broken=False)
    with StandinLLM(lambda request: error(401, "invalid api key")) as srv:
        with pytest.raises(OresError) as info:
            asyncio.run(run_filter(tmp_path / "ws", str(src), _judge_options(srv.url)))
        asked = len(srv.chat_requests())
    message = str(info.value)
    assert "HTTP 401" in message and "filter stopped" in message and "\n" not in message
    assert asked >= 1
    [run] = Workspace.open(tmp_path / "ws").runs(stage="filter")
    assert run.status == "failed"


def test_a_judge_failing_every_call_stops_filter_and_one_failure_stays_per_trace(tmp_path: Path) -> None:
    src = traces_file(tmp_path / "t.jsonl", n_good=3, broken=False)
    with (
        StandinLLM(lambda request: error(500, "down")) as srv,
        pytest.raises(OresError, match="no score for any of 3 traces"),
    ):
        asyncio.run(run_filter(tmp_path / "ws", str(src), _judge_options(srv.url)))
    first = [True]

    def once(request: Received) -> Reply:
        if first:
            first.clear()
            return error(500, "hiccup")
        return ok(_scores(8))

    with StandinLLM(once) as srv:
        result = asyncio.run(run_filter(tmp_path / "ws", str(src), _judge_options(srv.url)))
    verdicts = sorted(json.loads(r["reasons"]) for r in result.records)
    assert verdicts == [[], [], ["judge-failed"]]


# -- exit 3: done, with failed items -------------------------------------------------------------------


def test_synth_exits_3_while_seeds_have_failed_and_0_once_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import oresearch_cli.cli.synth_cmd  # noqa: F401 - registers `ores synth`
    from oresearch_cli.cli import app

    _no_llm_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    build_test_corpus(Workspace.open(tmp_path / "ws"), tmp_path)
    seeds = write_seeds(tmp_path / "q.jsonl", 2)
    teacher = Teacher()
    refuse = {seeds[1]["question"]}

    def script(request: Received) -> Reply:
        if planner_question(request) in refuse:
            return error(400, "context too long")
        return teacher(request)

    with StandinLLM(script, lifetime=120) as srv:
        args = ["synth", "q.jsonl", "--ws", "ws", *synth_cli_args(srv.url)]
        first = runner.invoke(app, args)
        assert first.exit_code == EXIT_PARTIAL, first.output
        assert "--retry-failed" in first.output
        again = runner.invoke(app, args)  # the failed seed skipped: still not done
        assert again.exit_code == EXIT_PARTIAL, again.output
        refuse.clear()
        fixed = runner.invoke(app, [*args, "--retry-failed"])
        assert fixed.exit_code == 0, fixed.output


def test_eval_run_exits_3_with_a_failed_question(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import oresearch_cli.cli.eval_cmd  # noqa: F401 - registers `ores eval`
    from oresearch_cli.cli import app
    from oresearch_cli.stages import eval_run
    from oresearch_cli.tools.corpus import build_corpus
    from scripted_generator import DOCS, SEEDS, CharModel

    scripted = CharModel()

    async def open_generator(ws: Any, system: Any, stack: Any, max_batch: int) -> tuple[CharModel, str]:
        return scripted, scripted.name

    monkeypatch.setattr(eval_run, "open_generator", open_generator)
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    build_corpus(Workspace.open(tmp_path / "ws"), docs, "mini")
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SEEDS))  # one is BROKEN
    args = ["eval", "run", "--bench", "q.jsonl", "--model", "scripted", "--search", "local:mini",
            "--crawl", "local", "--max-tool-calls", "3", "--no-cache", "--ws", "ws"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "1 questions failed" in result.output and "--retry-failed" in result.output


# -- no model set, and the endpoint serves one -------------------------------------------------------------


def test_a_role_without_a_model_takes_the_one_model_its_endpoint_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def two_models(seen: Seen, h: Any) -> None:
        send_json(h, {"object": "list", "data": [{"id": "a"}, {"id": "b"}]})

    roles = ("planner", "worker", "summarizer")
    with StandinLLM() as srv:  # its /v1/models lists one model, "standin"
        config = load_config(overrides={"base_url": srv.url, "api_key_env": None}, environ={})
        filled, notes = asyncio.run(fill_models(config, roles, environ={}))
        assert {filled.role(r).model for r in roles} == {"standin"}
        [note] = notes  # one line for the three roles that share the endpoint
        assert "'standin'" in note and srv.url in note and "ORES_LLM_MODEL" in note
        # a model given is never replaced
        given = load_config(
            overrides={"base_url": srv.url, "worker.model": "w", "api_key_env": None}, environ={}
        )
        filled, _ = asyncio.run(fill_models(given, roles, environ={}))
        assert filled.role("worker").model == "w" and filled.role("planner").model == "standin"
    with LoopbackServer(two_models) as server:
        config = load_config(overrides={"base_url": server.url, "api_key_env": None}, environ={})
        filled, notes = asyncio.run(fill_models(config, roles, environ={}))
        assert notes == []
        with pytest.raises(LLMConfigError, match="no model set"):
            filled.role("planner")
    dead = load_config(
        overrides={"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key_env": None}, environ={}
    )
    filled, notes = asyncio.run(fill_models(dead, roles, environ={}))
    assert notes == [] and not filled.roles["planner"].model

    # `ores synth` with no model: the note on stderr, then the run goes on (here: to a missing seed file)
    import oresearch_cli.cli.synth_cmd  # noqa: F401 - registers `ores synth`
    from oresearch_cli.cli import app

    _no_llm_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with StandinLLM() as srv:
        result = runner.invoke(app, ["synth", "missing.jsonl", "--base-url", srv.url, "--ws", "ws"])
    assert "using 'standin', the one model" in result.output
    assert isinstance(result.exception, OresError) and "missing.jsonl" in str(result.exception)
