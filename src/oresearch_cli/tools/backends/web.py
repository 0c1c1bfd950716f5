"""Web search APIs: Serper (Google), Tavily, SearXNG, and a Search-R1-style `/retrieve` server.

Each is configured from the environment (`from_env`), sends one request per query through an
`ApiClient` (rate limit, retries, key rotation) and maps the API's documented response shape to
`SearchHit`s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from oresearch_cli.tools.apiclient import ApiClient, KeyPool, RetryPolicy, keys_from_env
from oresearch_cli.tools.base import SearchHit
from oresearch_cli.tools.errors import BackendConfigError, BackendResponseError
from oresearch_cli.tools.ratelimit import limit_from_env, limiter_for

SERPER_URL = "https://google.serper.dev"
TAVILY_URL = "https://api.tavily.com"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _base_url(value: str, what: str, env_name: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise BackendConfigError(
            f"{what}: {env_name}={value!r} is not an http(s) URL; set it to e.g. http://127.0.0.1:8080"
        )
    return value


def _require_keys(env: Mapping[str, str], env_name: str, what: str, signup: str) -> KeyPool:
    keys = keys_from_env(env_name, env)
    if not keys:
        raise BackendConfigError(
            f"{what}: no API key; set {env_name} (several keys: comma-separated), get one at {signup}"
        )
    return KeyPool(keys, env_name)


def _items(data: Any, field: str, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        raise BackendResponseError(f"{what}: the answer is not a JSON object; check the endpoint URL")
    items = data.get(field) or []
    if not isinstance(items, list):
        raise BackendResponseError(f"{what}: '{field}' in the answer is not a list; check the endpoint URL")
    return [item for item in items if isinstance(item, dict)]


class SerperSearch:
    """Google results through serper.dev: `POST /search {"q", "num"}` with `X-API-KEY`."""

    def __init__(
        self, keys: KeyPool, base_url: str = SERPER_URL, *, extra: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url
        self.extra = extra or {}
        self.name = "serper"
        self.cache_id = f"serper:{base_url}:{sorted(self.extra.items())}"
        self.client = ApiClient(
            "serper",
            limiter=limiter_for(f"serper:{base_url}", limit_from_env("serper", env=env)),
            keys=keys,
            auth=lambda headers, key: headers.__setitem__("X-API-KEY", key),
            retry=retry,
            env_hint="SERPER_API_KEY / SERPER_BASE_URL",
            transport=transport,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> SerperSearch:
        env = _env(env)
        keys = _require_keys(env, "SERPER_API_KEY", "serper", "https://serper.dev")
        base = _base_url(env.get("SERPER_BASE_URL") or SERPER_URL, "serper", "SERPER_BASE_URL")
        extra = {k: env[f"SERPER_{k.upper()}"] for k in ("gl", "hl") if env.get(f"SERPER_{k.upper()}")}
        return cls(keys, base, extra=extra, env=env, **kwargs)

    async def search(self, query: str, num: int) -> list[SearchHit]:
        data = await self.client.json(
            "POST", f"{self.base_url}/search", json={"q": query, "num": num, **self.extra}
        )
        hits = []
        for item in _items(data, "organic", "serper"):
            if item.get("link"):
                snippet = str(item.get("snippet") or "")
                if item.get("date"):
                    snippet = f"{item['date']} — {snippet}" if snippet else str(item["date"])
                hits.append(
                    SearchHit(title=str(item.get("title") or ""), url=str(item["link"]), snippet=snippet)
                )
        return hits[:num]

    async def aclose(self) -> None:
        await self.client.aclose()


class TavilySearch:
    """Tavily: `POST /search {"query", "max_results"}` with `Authorization: Bearer`."""

    def __init__(
        self, keys: KeyPool, base_url: str = TAVILY_URL, *, depth: str = "basic",
        transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url
        self.depth = depth
        self.name = "tavily"
        self.cache_id = f"tavily:{base_url}:{depth}"
        self.client = ApiClient(
            "tavily",
            limiter=limiter_for(f"tavily:{base_url}", limit_from_env("tavily", env=env)),
            keys=keys,
            auth=lambda headers, key: headers.__setitem__("Authorization", f"Bearer {key}"),
            retry=retry,
            env_hint="TAVILY_API_KEY / TAVILY_BASE_URL",
            transport=transport,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> TavilySearch:
        env = _env(env)
        keys = _require_keys(env, "TAVILY_API_KEY", "tavily", "https://tavily.com")
        base = _base_url(env.get("TAVILY_BASE_URL") or TAVILY_URL, "tavily", "TAVILY_BASE_URL")
        return cls(keys, base, depth=env.get("TAVILY_SEARCH_DEPTH") or "basic", env=env, **kwargs)

    async def search(self, query: str, num: int) -> list[SearchHit]:
        body = {"query": query, "max_results": num, "search_depth": self.depth, "include_answer": False}
        data = await self.client.json("POST", f"{self.base_url}/search", json=body)
        return [
            SearchHit(
                title=str(item.get("title") or ""),
                url=str(item["url"]),
                snippet=str(item.get("content") or ""),
                score=item.get("score") if isinstance(item.get("score"), (int, float)) else None,
            )
            for item in _items(data, "results", "tavily")
            if item.get("url")
        ][:num]

    async def aclose(self) -> None:
        await self.client.aclose()


class SearxngSearch:
    """A SearXNG instance's JSON API: `GET /search?q=...&format=json&pageno=N` (JSON output must
    be enabled in its settings.yml: `search.formats: [html, json]`)."""

    def __init__(
        self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None, env: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url
        self.params = params or {}
        self.name = "searxng"
        self.cache_id = f"searxng:{base_url}:{sorted(self.params.items())}"
        self.client = ApiClient(
            "searxng",
            limiter=limiter_for(f"searxng:{base_url}", limit_from_env("searxng", env=env)),
            retry=retry,
            env_hint="SEARXNG_URL",
            transport=transport,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, url: str | None = None, **kwargs: Any
    ) -> SearxngSearch:
        env = _env(env)
        url = url or env.get("SEARXNG_URL")
        if not url:
            raise BackendConfigError(
                "searxng: no instance URL; set SEARXNG_URL or use --search searxng:http://HOST:PORT"
            )
        params = {
            k: env[f"SEARXNG_{k.upper()}"]
            for k in ("language", "categories", "engines")
            if env.get(f"SEARXNG_{k.upper()}")
        }
        return cls(_base_url(url, "searxng", "SEARXNG_URL"), env=env, params=params, **kwargs)

    async def search(self, query: str, num: int) -> list[SearchHit]:
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for page in (1, 2, 3):
            params = {"q": query, "format": "json", "pageno": str(page), **self.params}
            data = await self.client.json("GET", f"{self.base_url}/search", params=params)
            items = _items(data, "results", "searxng")
            before = len(hits)
            for item in items:
                url = str(item.get("url") or "")
                if url and url not in seen:
                    seen.add(url)
                    score = item.get("score") if isinstance(item.get("score"), (int, float)) else None
                    hits.append(
                        SearchHit(
                            title=str(item.get("title") or ""),
                            url=url,
                            snippet=str(item.get("content") or ""),
                            score=score,
                        )
                    )
            if len(hits) >= num or len(hits) == before:  # enough, or this page added nothing new
                break
        return hits[:num]

    async def aclose(self) -> None:
        await self.client.aclose()


class RetrieverSearch:
    """A Search-R1-style retrieval server: `POST /retrieve {"queries": [q], "topk": k,
    "return_scores": true}` -> `{"result": [[{"document": {"id", "contents"}, "score"}]]}`.
    `contents` is `"Title"\\ntext`; a document's `url` is used when the server gives one (ores
    does), else `retriever://HOST/ID`, which is not crawlable: the passage is the snippet."""

    def __init__(
        self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None, env: Mapping[str, str] | None = None, snippet_chars: int = 1200,
    ) -> None:  # fmt: skip
        self.base_url = base_url
        self.snippet_chars = snippet_chars
        self.name = "retriever"
        self.cache_id = f"retriever:{base_url}"
        self.client = ApiClient(
            "retriever",
            limiter=limiter_for(f"retriever:{base_url}", limit_from_env("retriever", env=env)),
            retry=retry,
            env_hint="RETRIEVER_URL",
            transport=transport,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, url: str | None = None, **kwargs: Any
    ) -> RetrieverSearch:
        env = _env(env)
        url = url or env.get("RETRIEVER_URL")
        if not url:
            raise BackendConfigError(
                "retriever: no server URL; set RETRIEVER_URL or use --search retriever:http://HOST:PORT "
                "(e.g. `ores serve --tools-only`, or Search-R1's retrieval_server.py)"
            )
        url = _base_url(url, "retriever", "RETRIEVER_URL")
        return cls(url.removesuffix("/retrieve"), env=env, **kwargs)

    async def search(self, query: str, num: int) -> list[SearchHit]:
        body = {"queries": [query], "topk": num, "return_scores": True}
        data = await self.client.json("POST", f"{self.base_url}/retrieve", json=body)
        results = data.get("result") if isinstance(data, dict) else data
        if not isinstance(results, list) or not results or not isinstance(results[0], list):
            raise BackendResponseError(
                "retriever: expected {'result': [[...]]} from /retrieve; check RETRIEVER_URL"
            )
        host = httpx.URL(self.base_url).host
        hits: list[SearchHit] = []
        for item in results[0]:
            if not isinstance(item, dict):
                continue
            doc = item.get("document", item)
            score = item.get("score")
            if isinstance(doc, str):
                doc = {"contents": doc}
            contents = str(doc.get("contents") or doc.get("content") or doc.get("text") or "")
            title = str(doc.get("title") or "")
            first, _, rest = contents.partition("\n")
            if not title and rest and first.startswith('"') and first.endswith('"'):
                title, contents = first.strip('"'), rest
            doc_id = str(doc.get("id", len(hits)))
            url = str(doc.get("url") or f"retriever://{host}/{doc_id}")
            snippet = " ".join(contents.split())[: self.snippet_chars]
            hits.append(
                SearchHit(
                    title=title or doc_id,
                    url=url,
                    snippet=snippet,
                    score=score if isinstance(score, (int, float)) else None,
                )
            )
        return hits[:num]

    async def aclose(self) -> None:
        await self.client.aclose()
