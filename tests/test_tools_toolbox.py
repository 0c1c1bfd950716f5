"""The Toolbox: the agent-facing API turns failures into observations, the library API raises;
local corpus URLs are crawled without network; summaries; the `ores tools` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from oresearch_cli.cli import app, register
from oresearch_cli.tools import (
    BackendConfigError,
    ChatSummarizer,
    SummaryContext,
    ToolConfig,
    ToolError,
    open_toolbox,
)
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.workspace import Workspace

from tools_support import LoopbackServer, Seen, loopback_only, send, send_json, write_jsonl  # noqa: F401

pytestmark = pytest.mark.usefixtures("loopback_only")
register([])
runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace.open(tmp_path / "ws")
    build_corpus(workspace, write_jsonl(tmp_path / "docs.jsonl"), "mini")
    return workspace


def test_agent_sees_errors_as_observations(ws: Workspace) -> None:
    async def run() -> None:
        async with open_toolbox(ws, search="local:mini", crawl="local") as tools:
            empty = await tools.web_search(" | &serp_num=3")
            assert not empty.ok and "needs at least one query" in empty.text
            bad = await tools.crawl_page("file:///etc/passwd | corpus://mini/river")
            assert len(bad.errors) == 1 and "## Page 2: corpus://mini/river\nAmazon River" in bad.text
            assert "Failed to crawl file:///etc/passwd" in bad.text
            unknown = await tools.call("browse", "x")
            assert unknown.tool == "unknown" and not unknown.ok
            ok = await tools.call("web_search", "photosynthesis&serp_num=2")
            assert ok.ok and ok.text.startswith("## Query: 'photosynthesis'\n1. [Photosynthesis]")
            with pytest.raises(ToolError):
                await tools.crawl("https://example.org/not-in-corpus")

    asyncio.run(run())


def test_search_backend_failure_is_an_observation_and_a_library_error(ws: Workspace) -> None:
    with LoopbackServer(lambda seen, h: send_json(h, {"error": "down"}, 500)) as server:
        env = {"RETRIEVER_URL": server.url, "ORES_RETRIEVER_CONCURRENCY": "2"}

        async def run() -> None:
            from oresearch_cli.tools.apiclient import RetryPolicy

            fast = {"retry": RetryPolicy(attempts=2, base_wait=0.01)}
            async with open_toolbox(ws, search="retriever", env=env, search_kwargs=fast) as tools:
                observation = await tools.web_search("a | b")
                assert len(observation.errors) == 2
                assert observation.text.startswith(
                    "## Query: 'a'\nSearch failed for this query: retriever: HTTP 500"
                )
                with pytest.raises(ToolError, match="HTTP 500"):
                    await tools.search("a")

        asyncio.run(run())


def test_count_split_and_dedup_through_the_toolbox(ws: Workspace) -> None:
    async def run() -> Any:
        async with open_toolbox(ws, search="local:mini", crawl="local", cache=False) as tools:
            return await tools.web_search("photosynthesis | light reactions | calvin cycle&serp_num=4")

    observation = asyncio.run(run())
    urls = [h.url for h in observation.search.hits]
    # 4 over 3 queries is 2, 1, 1; the corpus has only 3 matching documents, each shown once.
    assert len(urls) == len(set(urls)) == 3
    assert len(observation.search.results[0].hits) == 2


def test_crawl_budget_and_url_cap(ws: Workspace, tmp_path: Path) -> None:
    long_doc = [{"id": "long", "title": "Long", "text": "Many words here. " * 2000}]
    build_corpus(ws, write_jsonl(tmp_path / "long.jsonl", long_doc), "long")

    async def run() -> Any:
        config = ToolConfig(crawl_max_chars=500, max_urls=2)
        async with open_toolbox(ws, search=None, crawl="local", corpora=["long"], config=config) as tools:
            return await tools.crawl_page("corpus://long/long | corpus://mini/river | corpus://mini/photo")

    observation = asyncio.run(run())
    assert observation.pages[0].truncated and len(observation.pages[0].text) <= 500
    assert "[... truncated]" in observation.text
    assert "skipped: corpus://mini/photo" in observation.text


def test_summaries_use_the_current_think_and_query(ws: Workspace) -> None:
    prompts: list[str] = []

    def openai_handler(seen: Seen, h: Any) -> None:
        body = seen.json()
        prompts.append(body["messages"][-1]["content"])
        send_json(h, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                      "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "# 1. Summary of the page"}}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})  # fmt: skip

    with LoopbackServer(openai_handler) as server:

        async def run() -> Any:
            summarizer = ChatSummarizer.create(server.url + "/v1", "tiny-model", "k")
            async with open_toolbox(
                ws, search=None, crawl="local", corpora=["mini"], summarizer=summarizer
            ) as tools:
                context = SummaryContext(think="Where do light reactions happen?", query="light reactions")
                first = await tools.crawl_page("https://en.wikipedia.org/wiki/Photosynthesis", context)
                again = await tools.crawl_page("https://en.wikipedia.org/wiki/Photosynthesis", context)
                return first, again

        first, again = asyncio.run(run())
        assert first.text == "Photosynthesis\n# 1. Summary of the page" and again.text == first.text
        assert len(server.requests) == 1  # the second summary came from the cache
        assert "Where do light reactions happen?" in prompts[0] and "thylakoid membranes" in prompts[0]


def test_unknown_backends_are_config_errors(ws: Workspace) -> None:
    with pytest.raises(BackendConfigError, match="unknown backend"):
        open_toolbox(ws, search="google")
    with pytest.raises(BackendConfigError, match="--crawl"):
        open_toolbox(ws, search=None, crawl="selenium")


# -- CLI -----------------------------------------------------------------------------------


def test_cli_tools_search_prints_the_observation_and_json(ws: Workspace) -> None:
    result = runner.invoke(
        app,
        [
            "tools",
            "search",
            "photosynthesis light reactions&serp_num=2",
            "--search",
            "local:mini",
            "--ws",
            str(ws.root),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "## Query: 'photosynthesis light reactions'\n1. [Photosynthesis](https://en.wikipedia.org/wiki/Photosynthesis)\n"
    )
    result = runner.invoke(
        app,
        ["tools", "search", "amazon", "-n", "1", "--search", "local:mini", "--json", "--ws", str(ws.root)],
    )
    data = json.loads(result.stdout)
    assert data["ok"] and data["search"]["results"][0]["hits"][0]["url"] == "corpus://mini/river"
    assert data["stats"]["cache_hits"]["search"] == 0


def test_cli_tools_crawl_blocked_url_exits_2(ws: Workspace) -> None:
    result = runner.invoke(app, ["tools", "crawl", "http://169.254.169.254/latest", "--ws", str(ws.root)])
    assert result.exit_code == 2
    assert "Failed to crawl http://169.254.169.254/latest: refused" in result.stdout
    result = runner.invoke(app, ["tools", "crawl", "corpus://mini/photo", "--ws", str(ws.root)])
    assert result.exit_code == 0 and result.stdout.startswith("Photosynthesis\nPhotosynthesis converts")


def test_cli_warm_cache_rerun_makes_zero_requests(ws: Workspace) -> None:
    def handler(seen: Seen, h: Any) -> None:
        if seen.path == "/search":
            send_json(h, {"results": [{"url": "https://r.org/1", "title": "R1", "content": "c"}]})
        else:
            send(h, body=b"<html><head><title>P</title></head><body><p>" + b"Words of the page. " * 30 + b"</p></body></html>",
                 content_type="text/html")  # fmt: skip

    with LoopbackServer(handler) as server:
        env = {"SEARXNG_URL": server.url, "ORES_SEARXNG_RPM": "0"}
        search = ["tools", "search", "q1", "-n", "1", "--search", "searxng", "--ws", str(ws.root)]
        crawl = [
            "tools",
            "crawl",
            server.url + "/p",
            "--crawl",
            "direct",
            "--allow-host",
            "127.0.0.1",
            "--ws",
            str(ws.root),
        ]
        outputs = [runner.invoke(app, args, env=env).stdout for args in (search, crawl)]
        assert len(server.requests) == 2
        again = [runner.invoke(app, args, env=env).stdout for args in (search, crawl)]
        assert again == outputs and len(server.requests) == 2
        fresh = runner.invoke(app, [*search, "--no-cache"], env=env)
        assert fresh.exit_code == 0 and len(server.requests) == 3


def test_cli_backends_and_missing_key(ws: Workspace) -> None:
    result = runner.invoke(app, ["tools", "backends", "--json"], env={"SERPER_API_KEY": ""})
    rows = {r["spec"]: r for r in json.loads(result.stdout)}
    assert rows["serper"]["configured"] is False and "SERPER_API_KEY" in rows["serper"]["env"]
    result = runner.invoke(
        app, ["tools", "search", "q", "--search", "serper", "--ws", str(ws.root)], env={"SERPER_API_KEY": ""}
    )
    assert isinstance(result.exception, BackendConfigError) and "set SERPER_API_KEY" in str(result.exception)


def test_role_summarizer_uses_the_llm_client_role(ws: Workspace) -> None:
    from oresearch_cli.tools.summarize import RoleSummarizer

    class FakeLLM:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any]] = []

        async def chat(self, role: str, messages: Any, **overrides: Any) -> Any:
            self.calls.append((role, messages))
            return type("Result", (), {"text": " summary "})()

    llm = FakeLLM()

    async def run() -> Any:
        async with open_toolbox(
            ws, search=None, crawl="local", corpora=["mini"], summarizer=RoleSummarizer(llm, "m")
        ) as tools:
            return await tools.crawl_page("corpus://mini/calvin", SummaryContext(query="calvin"))

    observation = asyncio.run(run())
    assert observation.text == "Calvin cycle\nsummary" and llm.calls[0][0] == "summarizer"
