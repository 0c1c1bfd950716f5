"""Contract tests: each backend's client against a loopback server answering in that API's
documented shape; key rotation, retries, Retry-After and rate limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from oresearch_cli.tools.apiclient import RetryPolicy, keys_from_env
from oresearch_cli.tools.backends.fetch import DirectFetch, JinaFetch
from oresearch_cli.tools.backends.web import RetrieverSearch, SearxngSearch, SerperSearch, TavilySearch
from oresearch_cli.tools.errors import BackendConfigError, BackendResponseError, BackendUnavailableError
from oresearch_cli.tools.ratelimit import BackendLimiter, RateLimit, parse_retry_after
from oresearch_cli.tools.registry import open_search_backend
from oresearch_cli.tools.safety import UrlPolicy

from tools_support import LoopbackServer, Seen, loopback_only, send, send_json  # noqa: F401

pytestmark = pytest.mark.usefixtures("loopback_only")
FAST = RetryPolicy(attempts=3, base_wait=0.01, max_wait=0.05, max_retry_after=5)
NO_RPM = {"ORES_SEARXNG_RPM": "0"}  # SearXNG defaults to 60/min; tests need not wait


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _search(backend: Any, query: str = "photosynthesis", num: int = 3) -> Any:
    try:
        return await backend.search(query, num)
    finally:
        await backend.aclose()


def serper_handler(seen: Seen, h: Any) -> None:
    if seen.headers.get("x-api-key") != "good-key":
        send_json(h, {"message": "Unauthorized."}, 403)
        return
    body = seen.json()
    organic = [
        {"title": f"Result {i}", "link": f"https://example.org/{i}", "snippet": f"snippet {i}", "position": i}
        for i in range(1, body["num"] + 1)
    ]
    organic[0]["date"] = "Mar 3, 2024"
    send_json(h, {"searchParameters": {"q": body["q"], "num": body["num"]}, "organic": organic})


def test_serper_contract() -> None:
    with LoopbackServer(serper_handler) as server:
        env = {"SERPER_API_KEY": "good-key", "SERPER_BASE_URL": server.url}
        hits = run(_search(SerperSearch.from_env(env, retry=FAST), "light reactions", 3))
        seen = server.requests[0]
        assert (seen.method, seen.path) == ("POST", "/search")
        assert seen.json() == {"q": "light reactions", "num": 3}
        assert [h.url for h in hits] == [
            "https://example.org/1",
            "https://example.org/2",
            "https://example.org/3",
        ]
        assert hits[0].title == "Result 1" and hits[0].snippet == "Mar 3, 2024 — snippet 1"


def test_serper_rotates_keys_on_failure() -> None:
    with LoopbackServer(serper_handler) as server:
        env = {"SERPER_API_KEY": "bad-key,good-key", "SERPER_BASE_URL": server.url}
        hits = run(_search(SerperSearch.from_env(env, retry=FAST)))
        assert len(hits) == 3
        assert [s.headers["x-api-key"] for s in server.requests] == ["bad-key", "good-key"]
        env = {"SERPER_API_KEY": "bad-1 | bad-2", "SERPER_BASE_URL": server.url}
        with pytest.raises(BackendConfigError, match="SERPER_API_KEY"):
            run(_search(SerperSearch.from_env(env, retry=FAST)))


def test_missing_keys_and_urls_are_config_errors() -> None:
    with pytest.raises(BackendConfigError, match="set SERPER_API_KEY"):
        SerperSearch.from_env({})
    with pytest.raises(BackendConfigError, match="set TAVILY_API_KEY"):
        TavilySearch.from_env({})
    with pytest.raises(BackendConfigError, match="SEARXNG_URL"):
        SearxngSearch.from_env({})
    with pytest.raises(BackendConfigError, match="RETRIEVER_URL"):
        RetrieverSearch.from_env({})
    with pytest.raises(BackendConfigError, match="unknown backend"):
        open_search_backend("bing", env={})
    assert keys_from_env("K", {"K": "a, b|c", "K_2": "d"}) == ["a", "b", "c", "d"]


def test_tavily_contract() -> None:
    def handler(seen: Seen, h: Any) -> None:
        assert seen.headers["authorization"] == "Bearer tvly-test"
        body = seen.json()
        results = [{"title": f"T{i}", "url": f"https://t.org/{i}", "content": f"c{i}", "score": 0.9 - i / 10, "raw_content": None}
                   for i in range(body["max_results"])]  # fmt: skip
        send_json(
            h,
            {"query": body["query"], "answer": None, "images": [], "results": results, "response_time": 0.1},
        )

    with LoopbackServer(handler) as server:
        hits = run(
            _search(
                TavilySearch.from_env(
                    {"TAVILY_API_KEY": "tvly-test", "TAVILY_BASE_URL": server.url}, retry=FAST
                )
            )
        )
        body = server.requests[0].json()
        assert (server.requests[0].path, body["query"], body["max_results"], body["search_depth"]) == (
            "/search",
            "photosynthesis",
            3,
            "basic",
        )
        assert [(h.title, h.url, h.snippet) for h in hits][0] == ("T0", "https://t.org/0", "c0")
        assert hits[0].score == pytest.approx(0.9)


def test_searxng_contract_with_pages() -> None:
    def handler(seen: Seen, h: Any) -> None:
        assert seen.method == "GET" and seen.path == "/search" and seen.query["format"] == ["json"]
        page = int(seen.query["pageno"][0])
        results = [{"url": f"https://s.org/{page}/{i}", "title": f"S{page}.{i}", "content": "text", "engine": "wikipedia", "score": 1.0}
                   for i in range(2)]  # fmt: skip
        send_json(
            h,
            {
                "query": seen.query["q"][0],
                "number_of_results": 0,
                "results": results,
                "answers": [],
                "suggestions": [],
            },
        )

    with LoopbackServer(handler) as server:
        hits = run(_search(SearxngSearch.from_env(NO_RPM, url=server.url, retry=FAST), num=3))
        assert [h.url for h in hits] == ["https://s.org/1/0", "https://s.org/1/1", "https://s.org/2/0"]
        assert [s.query["pageno"] for s in server.requests] == [["1"], ["2"]]


def test_retriever_contract() -> None:
    def handler(seen: Seen, h: Any) -> None:
        body = seen.json()
        assert seen.path == "/retrieve" and body["queries"] == ["photosynthesis"] and body["topk"] == 3
        docs = [
            {"document": {"id": str(i), "contents": f'"Doc {i}"\nPassage number {i}.'}, "score": 10.0 - i}
            for i in range(3)
        ]
        send_json(h, {"result": [docs]})

    with LoopbackServer(handler) as server:
        hits = run(_search(RetrieverSearch.from_env({"RETRIEVER_URL": server.url + "/retrieve"}, retry=FAST)))
        assert [(h.title, h.snippet) for h in hits] == [
            ("Doc 0", "Passage number 0."),
            ("Doc 1", "Passage number 1."),
            ("Doc 2", "Passage number 2."),
        ]
        assert hits[0].url == "retriever://127.0.0.1/0" and hits[0].score == 10.0


def test_jina_contract() -> None:
    def handler(seen: Seen, h: Any) -> None:
        assert seen.path == "/https://example.org/article"
        assert (
            seen.headers["accept"] == "application/json"
            and seen.headers["authorization"] == "Bearer jina-key"
        )
        send_json(h, {"code": 200, "status": 20000, "data": {"title": "Article", "url": "https://example.org/article",
                                                             "content": "# Article\n\nMain text.", "usage": {"tokens": 5}}})  # fmt: skip

    async def go(server: LoopbackServer) -> Any:
        jina = JinaFetch.from_env({"JINA_API_KEY": "jina-key", "JINA_BASE_URL": server.url}, retry=FAST)
        try:
            return await jina.fetch("https://example.org/article")
        finally:
            await jina.aclose()

    with LoopbackServer(handler) as server:
        page = run(go(server))
        assert (page.title, page.source, page.text) == ("Article", "jina", "# Article\n\nMain text.")


def test_direct_fetch_contract_follows_redirects_and_extracts() -> None:
    html = b"""<html><head><title>Photosynthesis - Test</title></head><body><nav>Home | About</nav>
    <article><h1>Photosynthesis</h1><p>Photosynthesis converts light energy into chemical energy in plants.</p>
    <p>The light reactions happen in the thylakoid membranes of the chloroplast.</p></article>
    <footer>Copyright</footer></body></html>"""

    def handler(seen: Seen, h: Any) -> None:
        if seen.path == "/old":
            send(h, 301, b"", {"Location": "/new"})
        else:
            send(h, body=html, content_type="text/html; charset=utf-8")

    async def go(server: LoopbackServer) -> Any:
        fetcher = DirectFetch(UrlPolicy.allowing(["127.0.0.1"]))
        try:
            return await fetcher.fetch(server.url + "/old")
        finally:
            await fetcher.aclose()

    with LoopbackServer(handler) as server:
        page = run(go(server))
        assert page.title == "Photosynthesis - Test"
        assert "thylakoid membranes" in page.text and "Copyright" not in page.text
        assert page.final_url == server.url + "/new"
        assert [s.path for s in server.requests] == ["/old", "/new"]
        assert server.requests[0].headers["user-agent"].startswith("ores/")


def test_retry_after_is_honoured() -> None:
    calls: list[float] = []

    def handler(seen: Seen, h: Any) -> None:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            send_json(h, {"message": "Too many requests"}, 429, {"Retry-After": "1"})
        else:
            serper_handler(seen, h)

    with LoopbackServer(handler) as server:
        hits = run(
            _search(
                SerperSearch.from_env(
                    {"SERPER_API_KEY": "good-key", "SERPER_BASE_URL": server.url}, retry=FAST
                )
            )
        )
        assert len(hits) == 3 and len(calls) == 2
        assert calls[1] - calls[0] >= 0.95  # waited what Retry-After said, not FAST's 10 ms


def test_5xx_is_retried_then_gives_one_line_error() -> None:
    with LoopbackServer(lambda seen, h: send_json(h, {"error": "down"}, 503)) as server:
        with pytest.raises(BackendUnavailableError, match=r"HTTP 503.*after 3 attempts") as info:
            run(_search(SearxngSearch.from_env(NO_RPM, url=server.url, retry=FAST)))
        assert len(server.requests) == 3 and "\n" not in str(info.value)


def test_client_errors_are_not_retried() -> None:
    with LoopbackServer(lambda seen, h: send_json(h, {"error": "bad query"}, 400)) as server:
        with pytest.raises(BackendResponseError, match="HTTP 400"):
            run(_search(SearxngSearch.from_env(NO_RPM, url=server.url, retry=FAST)))
        assert len(server.requests) == 1


def test_unreachable_endpoint() -> None:
    with LoopbackServer(lambda seen, h: None) as server:
        port = server.port
    # The server is closed now: nothing listens on that loopback port.
    with pytest.raises(BackendUnavailableError, match=r"cannot reach http://127\.0\.0\.1"):
        run(_search(RetrieverSearch.from_env({"RETRIEVER_URL": f"http://127.0.0.1:{port}"}, retry=FAST)))


def test_concurrency_cap_is_shared_by_all_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(seen: Seen, h: Any) -> None:
        time.sleep(0.1)
        serper_handler(seen, h)

    with LoopbackServer(slow) as server:
        env = {
            "SERPER_API_KEY": "good-key",
            "SERPER_BASE_URL": server.url,
            "ORES_SERPER_CONCURRENCY": "5",
            "ORES_SERPER_RPM": "0",
        }

        async def many() -> None:
            # Two separate clients (as two synth workers would have) share the process-wide limiter.
            a, b = SerperSearch.from_env(env, retry=FAST), SerperSearch.from_env(env, retry=FAST)
            assert a.client.limiter is b.client.limiter
            try:
                await asyncio.gather(*(c.search(f"q{i}", 1) for i in range(10) for c in (a, b)))
            finally:
                await a.aclose()
                await b.aclose()

        run(many())
        assert len(server.requests) == 20
        assert 2 <= server.max_in_flight <= 5


def test_requests_per_minute_limit() -> None:
    limiter = BackendLimiter("test-rpm", RateLimit(rpm=600, concurrency=None))  # 10/s, in 1 s buckets

    async def go() -> float:
        started = time.perf_counter()
        for _ in range(20):
            async with limiter:
                pass
        return time.perf_counter() - started

    assert run(go()) >= 0.9  # 20 requests at 10/s: the second ten wait about a second


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # type: ignore[operator]
