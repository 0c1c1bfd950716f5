"""The tool interface: result types and the two backend protocols every backend implements.

A *search backend* answers one query with a ranked list of `SearchHit`s; a *crawl backend* turns
one URL into a `Page`. Everything O-Researcher-specific (several queries per call, splitting the
result count, de-duplication, the markdown observation) lives above them in `semantics` and
`toolbox`, so a backend stays a thin client of one API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ToolName = Literal["web_search", "crawl_page", "unknown"]


@dataclass(frozen=True)
class SearchHit:
    """One search result: what a search engine result page shows for it."""

    title: str
    url: str
    snippet: str = ""
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchHit:
        return cls(
            data.get("title") or "", data.get("url") or "", data.get("snippet") or "", data.get("score")
        )


@dataclass
class QueryResult:
    """The hits kept for one query of a `web_search` call (after de-duplication), or its error."""

    query: str
    hits: list[SearchHit] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits], "error": self.error}


@dataclass
class SearchResult:
    """A whole `web_search` call: one `QueryResult` per query, in the order asked."""

    backend: str
    num: int
    results: list[QueryResult]

    @property
    def hits(self) -> list[SearchHit]:
        return [hit for result in self.results for hit in result.hits]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "num": self.num, "results": [r.to_dict() for r in self.results]}


@dataclass
class Page:
    """A crawled page: its main text (whole, before the observation budget cuts it)."""

    url: str
    title: str = ""
    text: str = ""
    final_url: str | None = None
    content_type: str | None = None
    source: str = ""  # the backend that produced it: "direct", "jina", "local:NAME"
    error: str | None = None
    summary: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Page:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class Observation:
    """What the environment writes into `<observation>...</observation>` after one tool call.

    `text` is exactly what the agent sees. `errors` lists what failed (each also described in
    `text`); `ok` is false when anything failed. `search`/`pages` carry the structured result.
    """

    tool: ToolName
    text: str
    errors: list[str] = field(default_factory=list)
    search: SearchResult | None = None
    pages: list[Page] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "ok": self.ok,
            "text": self.text,
            "errors": list(self.errors),
            "search": self.search.to_dict() if self.search else None,
            "pages": [p.to_dict() for p in self.pages],
        }


@runtime_checkable
class SearchBackend(Protocol):
    """Answers one query. `name` is shown to users; `cache_id` keys the cache (it changes when
    the results would: another endpoint, a rebuilt corpus)."""

    name: str
    cache_id: str

    async def search(self, query: str, num: int) -> list[SearchHit]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CrawlBackend(Protocol):
    """Turns one URL into a `Page`, raising `ToolError` when it cannot."""

    name: str
    cache_id: str

    async def fetch(self, url: str) -> Page: ...

    async def aclose(self) -> None: ...
