"""The agent's research tools, `web_search` and `crawl_page`, behind one async interface.

    from oresearch_cli.tools import open_toolbox

    async with open_toolbox(ws, search="local:wiki", crawl="auto") as tools:
        obs = await tools.web_search("photosynthesis light reactions | Calvin cycle&serp_num=6")
        print(obs.text)                      # exactly what goes into <observation>...</observation>
        page = await tools.crawl(obs.search.hits[0].url)   # library API: raises ToolError

Backends: a local BM25 corpus (`tools.corpus`), Serper, Tavily, SearXNG, a Search-R1 `/retrieve`
server; crawl by direct fetch (safety-checked) or Jina Reader. Results are cached in the workspace.
"""

from oresearch_cli.tools.base import (
    CrawlBackend,
    Observation,
    Page,
    QueryResult,
    SearchBackend,
    SearchHit,
    SearchResult,
)
from oresearch_cli.tools.cache import ToolCache, cache_stats, parse_ttl
from oresearch_cli.tools.errors import (
    BackendConfigError,
    BackendResponseError,
    BackendUnavailableError,
    BlockedURLError,
    CorpusError,
    FetchError,
    ToolError,
)
from oresearch_cli.tools.registry import BACKENDS, open_crawl_backend, open_search_backend, open_toolbox
from oresearch_cli.tools.safety import UrlPolicy
from oresearch_cli.tools.semantics import parse_crawl_argument, parse_search_argument
from oresearch_cli.tools.summarize import ChatSummarizer, RoleSummarizer, Summarizer, SummaryContext
from oresearch_cli.tools.toolbox import Toolbox, ToolConfig

__all__ = [
    "BACKENDS",
    "BackendConfigError",
    "BackendResponseError",
    "BackendUnavailableError",
    "BlockedURLError",
    "ChatSummarizer",
    "CorpusError",
    "CrawlBackend",
    "FetchError",
    "Observation",
    "Page",
    "QueryResult",
    "RoleSummarizer",
    "SearchBackend",
    "SearchHit",
    "SearchResult",
    "Summarizer",
    "SummaryContext",
    "ToolCache",
    "ToolConfig",
    "ToolError",
    "Toolbox",
    "UrlPolicy",
    "cache_stats",
    "open_crawl_backend",
    "open_search_backend",
    "open_toolbox",
    "parse_crawl_argument",
    "parse_search_argument",
    "parse_ttl",
]
