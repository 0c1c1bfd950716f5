"""The numbered list of sources a worker (or the whole trace) observed: what citations point at."""

from __future__ import annotations

from dataclasses import dataclass

from oresearch_cli.tools import Observation
from oresearch_cli.trace.urls import is_url, page_key


@dataclass
class Source:
    url: str
    title: str = ""
    snippet: str = ""
    crawled: bool = False


class SourceBook:
    """Sources numbered from 1 in the order first observed; one entry per page (`page_key`)."""

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.sources]

    def number(self, url: str) -> int | None:
        index = self._index.get(page_key(url))
        return None if index is None else index + 1

    def get(self, number: int) -> Source:
        return self.sources[number - 1]

    def add(self, url: str, title: str = "", snippet: str = "", crawled: bool = False) -> int | None:
        """The source's number (new or existing); None for what is not an http(s) URL."""
        url = url.strip()
        if not is_url(url):
            return None
        key = page_key(url)
        if key in self._index:
            source = self.sources[self._index[key]]
            source.title = source.title or title
            source.snippet = source.snippet or snippet
            source.crawled = source.crawled or crawled
            return self._index[key] + 1
        self._index[key] = len(self.sources)
        self.sources.append(Source(url, title, snippet, crawled))
        return len(self.sources)

    def add_observation(self, obs: Observation) -> None:
        """Every search hit and every page read successfully."""
        if obs.search is not None:
            for hit in obs.search.hits:
                self.add(hit.url, hit.title, hit.snippet)
        for page in obs.pages:
            if page.ok:
                snippet = " ".join((page.summary or page.text or "").split())[:300]
                self.add(page.url, page.title, snippet, crawled=True)

    def render(self, limit: int | None = None, snippets: bool = False, empty: str = "(none)") -> str:
        shown = self.sources if limit is None else self.sources[:limit]
        if not shown:
            return empty
        lines = []
        for number, source in enumerate(shown, start=1):
            title = " ".join(source.title.split()) or source.url
            line = f"[{number}] {title} - {source.url}"
            if snippets and source.snippet:
                line += f"\n    {source.snippet[:300]}"
            lines.append(line)
        return "\n".join(lines)
