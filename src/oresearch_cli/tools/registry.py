"""Choosing backends from spec strings, and building a `Toolbox` for a workspace.

Search specs (`--search`):

    local            the workspace's only corpus        local:NAME   corpus NAME
    serper           SERPER_API_KEY [SERPER_BASE_URL, SERPER_GL, SERPER_HL]
    tavily           TAVILY_API_KEY [TAVILY_BASE_URL, TAVILY_SEARCH_DEPTH]
    searxng[:URL]    SEARXNG_URL [SEARXNG_LANGUAGE, SEARXNG_CATEGORIES, SEARXNG_ENGINES]
    retriever[:URL]  RETRIEVER_URL (a Search-R1-style POST /retrieve server)

Crawl specs (`--crawl`): `auto` (local corpus URLs from the corpus, others by direct fetch),
`direct`, `jina` (JINA_API_KEY optional, JINA_BASE_URL), `local` (corpus only, never the network).
Rate limits: ORES_<BACKEND>_RPM and ORES_<BACKEND>_CONCURRENCY (see `ratelimit.DEFAULT_LIMITS`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oresearch_cli.tools.backends.fetch import DirectFetch, FetchLimits, JinaFetch
from oresearch_cli.tools.backends.local import LocalCrawl, LocalSearch
from oresearch_cli.tools.backends.web import RetrieverSearch, SearxngSearch, SerperSearch, TavilySearch
from oresearch_cli.tools.base import CrawlBackend, SearchBackend
from oresearch_cli.tools.cache import ToolCache
from oresearch_cli.tools.corpus import Corpus, list_corpora
from oresearch_cli.tools.errors import BackendConfigError
from oresearch_cli.tools.safety import UrlPolicy
from oresearch_cli.tools.summarize import Summarizer
from oresearch_cli.tools.toolbox import Toolbox, ToolConfig

SEARCH_KINDS = ("local", "serper", "tavily", "searxng", "retriever")
CRAWL_KINDS = ("auto", "direct", "jina", "local")


@dataclass(frozen=True)
class BackendInfo:
    spec: str
    kind: str  # "search" or "crawl"
    env: tuple[str, ...]
    description: str


BACKENDS: tuple[BackendInfo, ...] = (
    BackendInfo("local:NAME", "search", (), "BM25 over a corpus built by `ores corpus build`"),
    BackendInfo(
        "serper",
        "search",
        ("SERPER_API_KEY", "SERPER_BASE_URL", "SERPER_GL", "SERPER_HL"),
        "Google results via serper.dev",
    ),
    BackendInfo(
        "tavily", "search", ("TAVILY_API_KEY", "TAVILY_BASE_URL", "TAVILY_SEARCH_DEPTH"), "Tavily search API"
    ),
    BackendInfo(
        "searxng[:URL]",
        "search",
        ("SEARXNG_URL", "SEARXNG_LANGUAGE", "SEARXNG_CATEGORIES", "SEARXNG_ENGINES"),
        "a SearXNG instance (JSON format enabled)",
    ),
    BackendInfo(
        "retriever[:URL]",
        "search",
        ("RETRIEVER_URL",),
        "a Search-R1-style POST /retrieve server (e.g. ores serve --tools-only)",
    ),
    BackendInfo("auto", "crawl", (), "corpus URLs from the local corpus, other URLs by direct fetch"),
    BackendInfo("direct", "crawl", (), "httpx + trafilatura, with the safety policy (--allow-host)"),
    BackendInfo("jina", "crawl", ("JINA_API_KEY", "JINA_BASE_URL"), "Jina Reader (r.jina.ai)"),
    BackendInfo("local", "crawl", (), "local corpus documents only; never the network"),
)


def _split(spec: str) -> tuple[str, str | None]:
    kind, _, arg = spec.strip().partition(":")
    return kind.lower(), (arg or None)


def backend_configured(info: BackendInfo, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment has what the backend needs (for `ores tools backends`)."""
    env = os.environ if env is None else env
    required = {
        "serper": "SERPER_API_KEY",
        "tavily": "TAVILY_API_KEY",
        "searxng[:URL]": "SEARXNG_URL",
        "retriever[:URL]": "RETRIEVER_URL",
    }
    name = required.get(info.spec)
    return name is None or bool(env.get(name))


def open_local_corpus(ws: Any, name: str | None) -> Corpus:
    if name:
        return Corpus.open(ws, name)
    corpora = list_corpora(ws)
    if len(corpora) == 1:
        return Corpus.open(ws, corpora[0].name)
    if not corpora:
        raise BackendConfigError(
            f"--search local: no corpus in {ws.root}; build one with `ores corpus build SRC --name NAME`"
        )
    names = ", ".join(c.name for c in corpora)
    raise BackendConfigError(
        f"--search local: the workspace has several corpora ({names}); pass --search local:NAME"
    )


def open_search_backend(
    spec: str, *, ws: Any = None, env: Mapping[str, str] | None = None, **kwargs: Any
) -> SearchBackend:
    """A search backend from its spec. `kwargs` (transport, retry) go to web backends."""
    kind, arg = _split(spec)
    if kind == "local":
        if ws is None:
            raise BackendConfigError("--search local needs a workspace; pass --ws")
        return LocalSearch(open_local_corpus(ws, arg))
    if kind == "serper":
        return SerperSearch.from_env(env, **kwargs)
    if kind == "tavily":
        return TavilySearch.from_env(env, **kwargs)
    if kind == "searxng":
        return SearxngSearch.from_env(env, url=arg, **kwargs)
    if kind == "retriever":
        return RetrieverSearch.from_env(env, url=arg, **kwargs)
    raise BackendConfigError(
        f"--search {spec!r}: unknown backend; use one of local[:NAME], serper, tavily, searxng[:URL], retriever[:URL]"
    )


def open_crawl_backend(
    spec: str,
    *,
    policy: UrlPolicy | None = None,
    limits: FetchLimits | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> CrawlBackend | None:
    """The web crawl backend of a spec (None for `local`: corpus only)."""
    kind, _ = _split(spec)
    if kind in ("auto", "direct"):
        return DirectFetch(policy, limits, **kwargs)
    if kind == "jina":
        return JinaFetch.from_env(env, policy=policy, **kwargs)
    if kind in ("local", "none"):
        return None
    raise BackendConfigError(f"--crawl {spec!r}: unknown backend; use one of {', '.join(CRAWL_KINDS)}")


def open_toolbox(
    ws: Any,
    *,
    search: str | None = "local",
    crawl: str = "auto",
    cache: bool = True,
    cache_ttl: float | None = None,
    allow_hosts: Iterable[str] = (),
    limits: FetchLimits | None = None,
    summarizer: Summarizer | None = None,
    config: ToolConfig | None = None,
    env: Mapping[str, str] | None = None,
    corpora: Iterable[str] = (),
    search_kwargs: dict[str, Any] | None = None,
    crawl_kwargs: dict[str, Any] | None = None,
) -> Toolbox:
    """A `Toolbox` for workspace `ws`: the search backend `search` (None: crawl only), the crawl
    backend `crawl`, the workspace cache (unless `cache=False`) and the safety policy.

    Crawls of URLs stored in the search corpus (and in the extra `corpora` named) are answered
    from the corpus; `corpus://NAME/ID` URLs from corpus NAME of the workspace."""
    policy = UrlPolicy.allowing(allow_hosts)
    search_backend = open_search_backend(search, ws=ws, env=env, **(search_kwargs or {})) if search else None
    local = [search_backend.corpus] if isinstance(search_backend, LocalSearch) else []
    local += [Corpus.open(ws, name) for name in corpora if name not in {c.name for c in local}]
    crawl_backend = open_crawl_backend(crawl, policy=policy, limits=limits, env=env, **(crawl_kwargs or {}))
    tool_cache = ToolCache.for_workspace(ws, ttl=cache_ttl) if cache and ws is not None else None
    return Toolbox(
        search_backend,
        crawl_backend,
        local=LocalCrawl(local, ws=ws),
        cache=tool_cache,
        summarizer=summarizer,
        config=config,
    )
