"""`Toolbox`: the one async interface to `web_search` and `crawl_page` that synth, rl, eval and
serve share.

Two layers:

* the library API, `search(queries, num) -> SearchResult` and `crawl(url) -> Page`, raises a
  `ToolError` when it cannot answer (every query failed, the page could not be read);
* the agent-facing API, `web_search(...)` / `crawl_page(...)` / `call(tool, argument)`, turns
  failures into observation text the agent reads (and `Observation.errors`), with one exception:
  a backend whose API key the service rejects (HTTP 401/403) raises `BackendAuthError`, since
  every later call would fail the same way and a run of "Search failed" observations is no data.

Searches go through the cache per (backend, query, count); crawls per (backend, URL). URLs of a
local corpus (its own or `corpus://NAME/ID`) are answered from the corpus without network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from oresearch_cli.textutil.urls import canonical_url
from oresearch_cli.tools.backends.local import LocalCrawl
from oresearch_cli.tools.base import CrawlBackend, Observation, Page, SearchBackend, SearchHit, SearchResult
from oresearch_cli.tools.cache import ToolCache
from oresearch_cli.tools.errors import BackendAuthError, BackendConfigError, FetchError, ToolError
from oresearch_cli.tools.semantics import (
    DEFAULT_CRAWL_CHARS,
    DEFAULT_NUM,
    MAX_NUM,
    clamp_num,
    fetch_count,
    merge_results,
    one_line,
    parse_crawl_argument,
    parse_search_argument,
    render_crawl,
    render_search,
    split_count,
    split_queries,
    truncate_text,
)
from oresearch_cli.tools.summarize import Summarizer, SummaryContext

log = logging.getLogger(__name__)

SEARCH_USAGE = "write <web_search>first query | second query&serp_num=10</web_search>"
CRAWL_USAGE = "write <crawl_page>https://first.url | https://second.url</crawl_page>"


@dataclass
class ToolConfig:
    default_num: int = DEFAULT_NUM
    max_num: int = MAX_NUM
    crawl_max_chars: int = DEFAULT_CRAWL_CHARS  # per page, in the observation
    max_urls: int = 10  # per crawl_page call


@dataclass
class ToolStats:
    """What this toolbox did: backend calls (network for web backends) and cache use."""

    search_calls: int = 0
    crawl_calls: int = 0
    local_crawls: int = 0
    summaries: int = 0
    cache_hits: dict[str, int] = field(default_factory=lambda: {"search": 0, "crawl": 0, "summary": 0})

    def to_dict(self) -> dict[str, Any]:
        return {
            "search_calls": self.search_calls,
            "crawl_calls": self.crawl_calls,
            "local_crawls": self.local_crawls,
            "summaries": self.summaries,
            "cache_hits": dict(self.cache_hits),
        }


def _query_key(query: str) -> str:
    return " ".join(query.split())


class Toolbox:
    """`async with Toolbox(...) as tools:` or `open_toolbox(ws, search=..., crawl=...)`."""

    def __init__(
        self,
        search: SearchBackend | None,
        crawl: CrawlBackend | None,
        *,
        local: LocalCrawl | None = None,
        cache: ToolCache | None = None,
        summarizer: Summarizer | None = None,
        config: ToolConfig | None = None,
    ) -> None:
        self.search_backend = search
        self.crawl_backend = crawl
        self.local = local or LocalCrawl([])
        self.cache = cache
        self.summarizer = summarizer
        self.config = config or ToolConfig()
        self.stats = ToolStats()

    async def __aenter__(self) -> Toolbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for backend in (self.search_backend, self.crawl_backend, self.local):
            if backend is not None:
                await backend.aclose()
        if self.cache is not None:
            self.cache.close()

    # -- library API -----------------------------------------------------------------------

    async def search(self, queries: str | Sequence[str], num: int | None = None) -> SearchResult:
        """Search each query (`a | b` or a list) for its share of `num` results, de-duplicated
        by URL. Raises `ToolError` when no query could be answered (`BackendAuthError` at once
        when the backend's key is rejected)."""
        result = await self._search(
            split_queries(queries), clamp_num(num, self.config.default_num, self.config.max_num)
        )
        errors = [r.error for r in result.results if r.error]
        if result.results and len(errors) == len(result.results):
            raise ToolError(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more)")
        return result

    async def crawl(self, url: str, context: SummaryContext | None = None) -> Page:
        """One page's whole main text (and summary when a summarizer is set). Raises `ToolError`."""
        page = await self._crawl(url)
        if self.summarizer is not None:
            page.summary = await self._summarize(page, context or SummaryContext())
        return page

    async def _search(self, queries: list[str], num: int) -> SearchResult:
        backend = self.search_backend
        if backend is None:
            raise BackendConfigError("web_search is not available: no search backend; pass --search")
        if not queries:
            return SearchResult(backend=backend.name, num=num, results=[])
        shares = split_count(num, len(queries))
        calls = [
            self._search_one(backend, q, fetch_count(s, len(queries), self.config.max_num))
            for q, s in zip(queries, shares, strict=True)
        ]
        if len(calls) == 1:  # no task for a single query: the cache-hit path stays cheap
            try:
                outcomes: list[Any] = [await calls[0]]
            except ToolError as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ToolError):
                raise outcome
        for outcome in outcomes:
            if isinstance(outcome, BackendAuthError):
                raise outcome
        return SearchResult(backend=backend.name, num=num, results=merge_results(queries, outcomes, shares))

    async def _search_one(self, backend: SearchBackend, query: str, k: int) -> list[SearchHit]:
        request = {"q": _query_key(query), "num": k}
        if self.cache is not None:
            cached = self.cache.get("search", backend.cache_id, request)
            if cached is not None:
                self.stats.cache_hits["search"] += 1
                return [SearchHit.from_dict(h) for h in cached]
        self.stats.search_calls += 1
        hits = await backend.search(query, k)
        if self.cache is not None:
            self.cache.put("search", backend.cache_id, request, [h.to_dict() for h in hits])
        return hits

    async def _crawl(self, url: str) -> Page:
        url = url.strip()
        page = self.local.lookup(url)
        if page is not None:
            self.stats.local_crawls += 1
            return page
        backend = self.crawl_backend
        if backend is None:
            raise FetchError(
                f"{url}: not in the local corpus, and web crawling is off (--crawl local); crawl URLs from the search results"
            )
        request = {"url": canonical_url(url)}
        if self.cache is not None:
            cached = self.cache.get("crawl", backend.cache_id, request)
            if cached is not None:
                self.stats.cache_hits["crawl"] += 1
                page = Page.from_dict(cached)
                page.url = url
                return page
        self.stats.crawl_calls += 1
        page = await backend.fetch(url)
        if self.cache is not None:
            self.cache.put("crawl", backend.cache_id, request, page.to_dict())
        return page

    async def _summarize(self, page: Page, context: SummaryContext) -> str:
        assert self.summarizer is not None
        request = {
            "url": canonical_url(page.final_url or page.url),
            "context": context.key,
            "chars": len(page.text),
        }
        if self.cache is not None:
            cached = self.cache.get("summary", self.summarizer.model, request)
            if cached is not None:
                self.stats.cache_hits["summary"] += 1
                return str(cached)
        self.stats.summaries += 1
        summary = await self.summarizer.summarize(page, context)
        if self.cache is not None:
            self.cache.put("summary", self.summarizer.model, request, summary)
        return summary

    # -- agent-facing API ------------------------------------------------------------------

    async def web_search(self, argument: str | Sequence[str], num: int | str | None = None) -> Observation:
        """The observation for `<web_search>argument</web_search>`; `argument` may carry
        `&serp_num=N` (an explicit `num` wins). Raises no `ToolError` but `BackendAuthError`."""
        if isinstance(argument, str):
            request = parse_search_argument(argument, self.config.default_num, self.config.max_num)
            queries, count = request.queries, request.num
        else:
            queries, count = split_queries(argument), self.config.default_num
        if num is not None:
            count = clamp_num(num, self.config.default_num, self.config.max_num)
        if not queries:
            message = f"web_search needs at least one query; {SEARCH_USAGE}"
            return Observation(tool="web_search", text=message, errors=[message])
        try:
            result = await self._search(queries, count)
        except BackendAuthError:
            raise
        except ToolError as exc:
            return Observation(tool="web_search", text=f"web_search failed: {exc}", errors=[str(exc)])
        errors = [f"{r.query}: {r.error}" for r in result.results if r.error]
        return Observation(
            tool="web_search", text=render_search(result.results), errors=errors, search=result
        )

    async def crawl_page(
        self, argument: str | Sequence[str], context: SummaryContext | None = None
    ) -> Observation:
        """The observation for `<crawl_page>argument</crawl_page>`: each page's main text cut to
        `crawl_max_chars` (or its summary). Pages are fetched concurrently; a failed page is
        described in place. Raises no `ToolError` but `BackendAuthError` (a crawl API's key rejected)."""
        urls = parse_crawl_argument(argument)
        if not urls:
            message = f"crawl_page needs at least one URL; {CRAWL_USAGE}"
            return Observation(tool="crawl_page", text=message, errors=[message])
        dropped = urls[self.config.max_urls :]
        urls = urls[: self.config.max_urls]
        outcomes = await asyncio.gather(*(self._crawl(u) for u in urls), return_exceptions=True)
        pages: list[Page] = []
        errors: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, BackendAuthError):
                raise outcome
        for url, outcome in zip(urls, outcomes, strict=True):
            if isinstance(outcome, ToolError):
                errors.append(str(outcome))
                pages.append(Page(url=url, error=str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                pages.append(outcome)
        if self.summarizer is not None:
            await self._summarize_pages(pages, context or SummaryContext(), errors)
        shown = []
        for page in pages:
            if page.ok and page.summary is None:
                text, cut = truncate_text(page.text, self.config.crawl_max_chars)
                page = Page(**{**page.to_dict(), "text": text, "truncated": cut})
            shown.append(page)
        text = render_crawl(shown)
        if dropped:
            text += f"\n\n(Only the first {self.config.max_urls} URLs were crawled; skipped: {', '.join(dropped)})"
        return Observation(tool="crawl_page", text=text, errors=errors, pages=shown)

    async def _summarize_pages(self, pages: list[Page], context: SummaryContext, errors: list[str]) -> None:
        async def one(page: Page) -> None:
            try:
                page.summary = await self._summarize(page, context)
            except ToolError as exc:  # keep the raw text; say why there is no summary
                log.warning("summary failed for %s: %s", page.url, exc)
                errors.append(str(exc))

        await asyncio.gather(*(one(p) for p in pages if p.ok))

    async def call(self, tool: str, argument: str, context: SummaryContext | None = None) -> Observation:
        """Run the tool call the agent wrote (`web_search` or `crawl_page`) and return what it sees;
        raises `BackendAuthError` when the backend's API key is rejected."""
        if tool == "web_search":
            return await self.web_search(argument)
        if tool == "crawl_page":
            return await self.crawl_page(argument, context)
        message = f"unknown tool {one_line(tool)!r}; the tools are web_search and crawl_page"
        return Observation(tool="unknown", text=message, errors=[message])
