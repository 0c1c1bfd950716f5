"""`ores serve --tools-only`: the research tools over HTTP, so other RL frameworks (verl,
Search-R1) can train against an ores corpus.

Endpoints:

* `POST /retrieve` — Search-R1's retrieval server: `{"queries": [...], "topk": 3,
  "return_scores": false}` -> `{"result": [[{"id", "contents", "title", "url"}, ...], ...]}`
  (with scores: `[[{"document": {...}, "score": s}, ...]]`). Passage-level; `contents` is
  `"Title"\\npassage` like wiki-18.
* `POST /search` — O-Researcher's search server: `{"q": "a | b", "num": 10}` -> the observation
  text as a JSON string; with `"format": "json"` the structured result.
* `POST /crawl_page` — O-Researcher's crawl server: `{"urls": [...], "think_content",
  "web_search_query", "task"}` -> `{"success", "obs", "error_message", "processing_time"}`.
* `GET /health`.

`--api-key` (or `ORES_SERVE_API_KEY`) puts every route but /health behind a bearer key; a body
over `--max-body-bytes` is refused with 413 before it is read whole.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from oresearch_cli.server.auth import BearerAuth
from oresearch_cli.server.limits import BodyTooLarge, read_body
from oresearch_cli.tools.backends.local import LocalSearch
from oresearch_cli.tools.errors import BackendAuthError
from oresearch_cli.tools.semantics import DEFAULT_NUM, clamp_num
from oresearch_cli.tools.summarize import SummaryContext
from oresearch_cli.tools.toolbox import Toolbox

MAX_RETRIEVE_QUERIES = 1024
DEFAULT_MAX_BODY_BYTES = 1_000_000  # 1,024 queries of ~900 characters
MAX_TOPK = 100
DEFAULT_TOPK = 3  # Search-R1's default


class _State:
    def __init__(self, factory: Callable[[], Toolbox]) -> None:
        self.factory = factory
        self.toolbox: Toolbox | None = None
        self.lock = asyncio.Lock()

    async def get(self) -> Toolbox:
        if self.toolbox is None:
            async with self.lock:
                if self.toolbox is None:
                    self.toolbox = self.factory()
        return self.toolbox

    async def close(self) -> None:
        if self.toolbox is not None:
            await self.toolbox.aclose()
            self.toolbox = None


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def _upstream_refused(exc: BackendAuthError) -> JSONResponse:
    """The server's own search or crawl API rejected its key: 502 with the line, not an observation."""
    return JSONResponse({"error": str(exc)}, status_code=502)


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = json.loads(await read_body(request, request.app.state.max_body_bytes))
    except BodyTooLarge as exc:
        return JSONResponse({"error": str(exc)}, status_code=413)
    except ValueError:
        return _bad_request("the request body must be JSON")
    if not isinstance(body, dict):
        return _bad_request("the request body must be a JSON object")
    return body


def create_tools_app(
    toolbox_factory: Callable[[], Toolbox],
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Any:
    """The tools app. The toolbox is made on startup (or first request) in the server's loop. With
    `api_key`, every route but /health needs `Authorization: Bearer <key>` (server/auth.py)."""
    state = _State(toolbox_factory)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.get()
        try:
            yield
        finally:
            await state.close()

    async def health(request: Request) -> JSONResponse:
        tools = await state.get()
        backend = tools.search_backend
        info: dict[str, Any] = {"status": "ok", "search": backend.name if backend else None}
        if isinstance(backend, LocalSearch):
            info.update(
                corpus=backend.corpus.name,
                documents=backend.corpus.info.n_docs,
                passages=backend.corpus.info.n_passages,
            )
        return JSONResponse(info)

    async def retrieve(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        queries = body.get("queries")
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            return _bad_request("'queries' must be a list of strings")
        if len(queries) > MAX_RETRIEVE_QUERIES:
            return _bad_request(f"at most {MAX_RETRIEVE_QUERIES} queries per request")
        topk = clamp_num(body.get("topk"), DEFAULT_TOPK, MAX_TOPK)
        scores = bool(body.get("return_scores", False))
        tools = await state.get()
        backend = tools.search_backend
        # Per query: (document, score) pairs, as Search-R1's retriever returns them.
        raw: list[list[tuple[dict[str, str], float]]]
        if isinstance(backend, LocalSearch):
            corpus = backend.corpus

            def run() -> list[list[tuple[dict[str, str], float]]]:
                out = []
                for query in queries:
                    out.append(
                        [
                            (
                                {
                                    "id": f"{p.doc_id}#{p.passage}",
                                    "contents": f'"{p.title}"\n{p.text}',
                                    "title": p.title,
                                    "url": p.url,
                                },
                                p.score,
                            )
                            for p in corpus.search_passages(query, topk)
                        ]
                    )
                return out

            raw = await run_in_threadpool(run)
        else:
            raw = []
            for query in queries:
                result = await tools.search(query, min(topk, tools.config.max_num))
                raw.append(
                    [
                        (
                            {
                                "id": h.url,
                                "contents": f'"{h.title}"\n{h.snippet}',
                                "title": h.title,
                                "url": h.url,
                            },
                            h.score or 0.0,
                        )
                        for h in result.hits
                    ]
                )
        result_list: list[list[Any]]
        if scores:
            result_list = [
                [{"document": doc, "score": score} for doc, score in per_query] for per_query in raw
            ]
        else:
            result_list = [[doc for doc, _ in per_query] for per_query in raw]
        return JSONResponse({"result": result_list})

    async def search(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        query = body.get("q", body.get("query", body.get("queries")))
        if isinstance(query, list):
            query = " | ".join(str(q) for q in query)
        if not isinstance(query, str) or not query.strip():
            return _bad_request("give the queries as 'q': 'first query | second query'")
        num = body.get("num", body.get("serp_num", DEFAULT_NUM))
        tools = await state.get()
        try:
            observation = await tools.web_search(query, num=num)
        except BackendAuthError as exc:
            return _upstream_refused(exc)
        if body.get("format") == "json":
            return JSONResponse(observation.to_dict())
        return JSONResponse(observation.text)

    async def crawl_page(request: Request) -> JSONResponse:
        started = time.perf_counter()
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        urls = body.get("urls", body.get("url"))
        if not isinstance(urls, (str, list)) or not urls:
            return _bad_request("give 'urls': a list of URLs (or 'a | b')")
        context = SummaryContext(
            think=str(body.get("think_content") or ""),
            query=str(body.get("web_search_query") or ""),
            task=str(body.get("task") or ""),
        )
        tools = await state.get()
        try:
            observation = await tools.crawl_page(
                urls if isinstance(urls, str) else [str(u) for u in urls], context
            )
        except BackendAuthError as exc:
            return _upstream_refused(exc)
        any_page = any(p.ok for p in observation.pages)
        return JSONResponse(
            {
                "success": any_page,
                "obs": observation.text,
                "error_message": "; ".join(observation.errors) or None,
                "processing_time": round(time.perf_counter() - started, 4),
                **(
                    {"pages": [p.to_dict() for p in observation.pages]}
                    if body.get("format") == "json"
                    else {}
                ),
            }
        )

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/retrieve", retrieve, methods=["POST"]),
        Route("/search", search, methods=["POST"]),
        Route("/crawl_page", crawl_page, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.max_body_bytes = max_body_bytes
    return BearerAuth(app, api_key) if api_key else app
