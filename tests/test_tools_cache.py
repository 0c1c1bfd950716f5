"""The workspace tool cache: a warm rerun makes zero network calls; TTL, --no-cache, stats."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.tools import ToolCache, cache_stats, open_toolbox, parse_ttl
from oresearch_cli.workspace import Workspace

from tools_support import LoopbackServer, Seen, loopback_only, send, send_json  # noqa: F401

pytestmark = pytest.mark.usefixtures("loopback_only")

PAGE = (
    b"<html><head><title>Cached page</title></head><body><article><p>"
    + b"Some cached words here. " * 20
    + b"</p></article></body></html>"
)


def searxng(seen: Seen, h: Any) -> None:
    if seen.path == "/search":
        q = seen.query["q"][0]
        results = [
            {"url": f"https://r.org/{q.replace(' ', '-')}/{i}", "title": f"{q} {i}", "content": f"about {q}"}
            for i in range(6)
        ]
        send_json(h, {"query": q, "results": results})
    else:
        send(h, body=PAGE, content_type="text/html")


def _env(server: LoopbackServer) -> dict[str, str]:
    return {"SEARXNG_URL": server.url, "ORES_SEARXNG_RPM": "0"}


async def _session(ws: Workspace, server: LoopbackServer, **options: Any) -> tuple[str, str, dict[str, Any]]:
    async with open_toolbox(
        ws, search="searxng", crawl="direct", env=_env(server), allow_hosts=["127.0.0.1"], **options
    ) as tools:
        search = await tools.web_search("first query | second query&serp_num=6")
        crawl = await tools.crawl_page(f"{server.url}/page-a | {server.url}/page-b")
        assert search.ok and crawl.ok, (search.errors, crawl.errors)
        return search.text, crawl.text, tools.stats.to_dict()


def test_warm_rerun_makes_zero_network_calls(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with LoopbackServer(searxng) as server:
        first = asyncio.run(_session(ws, server))
        cold_requests = len(server.requests)
        assert cold_requests == 4  # two queries, two pages
        second = asyncio.run(_session(ws, server))
        assert len(server.requests) == cold_requests  # not one more request
        assert second[:2] == first[:2]  # the agent sees exactly the same observations
        assert second[2]["search_calls"] == 0 and second[2]["crawl_calls"] == 0
        assert second[2]["cache_hits"] == {"search": 2, "crawl": 2, "summary": 0}
    stats = cache_stats(ws)
    assert stats["kinds"]["search"] == {"entries": 2, "hits": 2, "misses": 2}
    assert stats["kinds"]["crawl"] == {"entries": 2, "hits": 2, "misses": 2}
    assert stats["bytes"] > 0


def test_no_cache_and_ttl(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with LoopbackServer(searxng) as server:
        asyncio.run(_session(ws, server))
        asyncio.run(_session(ws, server, cache=False))
        assert len(server.requests) == 8  # --no-cache: everything again
        time.sleep(0.05)
        asyncio.run(_session(ws, server, cache_ttl=0.01))
        assert len(server.requests) == 12  # older than the TTL: fetched again
        asyncio.run(_session(ws, server, cache_ttl=3600))
        assert len(server.requests) == 12  # refreshed entries are fresh


def test_cache_key_is_normalized(tmp_path: Path) -> None:
    cache = ToolCache(tmp_path / "c.sqlite")
    cache.put("search", "serper", {"q": "a b", "num": 3}, [1])
    assert cache.get("search", "serper", {"num": 3, "q": "a b"}) == [1]
    assert cache.get("search", "tavily", {"q": "a b", "num": 3}) is None
    assert cache.get("search", "serper", {"q": "a b", "num": 4}) is None
    assert (cache.hits["search"], cache.misses["search"]) == (1, 2)
    cache.close()


def test_cache_is_shared_by_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    caches = [ToolCache(path) for _ in range(4)]

    async def write(i: int) -> None:
        for j in range(25):
            caches[i].put("crawl", "direct", {"url": f"https://x.org/{i}/{j}"}, {"text": "x" * 100})
            await asyncio.sleep(0)

    async def all_writes() -> None:
        await asyncio.gather(*(write(i) for i in range(4)))

    asyncio.run(all_writes())
    assert all(caches[0].get("crawl", "direct", {"url": f"https://x.org/{i}/24"}) for i in range(4))
    for cache in caches:
        cache.close()


def test_cache_stats_without_a_cache(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    stats = cache_stats(ws)
    assert stats["bytes"] == 0 and stats["kinds"]["search"]["entries"] == 0
    assert not Path(stats["path"]).exists()  # reading stats creates nothing


def test_parse_ttl() -> None:
    assert parse_ttl(None) is None and parse_ttl("") is None and parse_ttl("forever") is None
    assert (
        parse_ttl("90") == 90
        and parse_ttl("30m") == 1800
        and parse_ttl("12h") == 43200
        and parse_ttl("7d") == 604800
    )
    with pytest.raises(InputError, match="cache-ttl"):
        parse_ttl("soon")


def test_ws_status_shows_the_cache(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oresearch_cli.cli import app, register

    register([])
    ws = Workspace.open(tmp_path / "ws")
    cache = ToolCache.for_workspace(ws)
    cache.put("search", "serper", {"q": "a", "num": 1}, [])
    cache.get("search", "serper", {"q": "a", "num": 1})
    cache.close()
    result = CliRunner().invoke(app, ["ws", "status", "--ws", str(ws.root)])
    assert result.exit_code == 0 and "tool cache: search 1 entries (1 hits, 0 misses)" in result.stdout
    result = CliRunner().invoke(app, ["ws", "status", "--json", "--ws", str(ws.root)])
    assert '"hits": 1' in result.stdout
