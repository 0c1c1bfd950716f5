"""The local corpus as a search backend, and as a crawl backend for the URLs it stores."""

from __future__ import annotations

from typing import Any

from oresearch_cli.tools.base import Page, SearchHit
from oresearch_cli.tools.corpus import Corpus, corpus_info, parse_corpus_url
from oresearch_cli.tools.errors import CorpusError, FetchError


class LocalSearch:
    """BM25 over a corpus' passages, one hit per document (its best passage as the snippet).

    Searching takes well under a millisecond, so it runs inline rather than in a thread."""

    def __init__(self, corpus: Corpus, snippet_chars: int = 400) -> None:
        self.corpus = corpus
        self.snippet_chars = snippet_chars
        self.name = f"local:{corpus.name}"
        self.cache_id = f"local:{corpus.name}:{corpus.info.build_id}"

    async def search(self, query: str, num: int) -> list[SearchHit]:
        return self.corpus.search(query, num, snippet_chars=self.snippet_chars)

    async def aclose(self) -> None:
        return None


class LocalCrawl:
    """Whole documents of local corpora, found by URL: a `corpus://NAME/ID` URL opens corpus NAME
    of the workspace `ws`; any other URL is looked up in the `corpora` given."""

    def __init__(self, corpora: list[Corpus], ws: Any | None = None) -> None:
        self.corpora = list(corpora)
        self.ws = ws
        self.name = "local"
        self.cache_id = "local"
        self._opened: dict[str, Corpus] = {c.name: c for c in self.corpora}
        # Corpora that exist but this ores cannot open (built by an older one): why, for the crawl error.
        self._stale: dict[str, str] = {}

    def _corpus(self, name: str) -> Corpus | None:
        if name not in self._opened:
            if self.ws is None:
                return None
            try:
                self._opened[name] = Corpus.open(self.ws, name)
            except CorpusError as exc:
                if self._needs_rebuild(name):
                    self._stale[name] = str(exc)
                return None
        return self._opened[name]

    def _needs_rebuild(self, name: str) -> bool:
        try:
            return corpus_info(self.ws, name).needs_rebuild
        except CorpusError:  # no such corpus, or an unreadable manifest
            return False

    def lookup(self, url: str) -> Page | None:
        """The stored page of `url`, None when no corpus holds it; raises `FetchError` for a
        `corpus://NAME/ID` URL whose corpus NAME needs a rebuild."""
        parsed = parse_corpus_url(url)
        candidates = self.corpora
        if parsed is not None:
            corpus = self._corpus(parsed[0])
            if parsed[0] in self._stale:  # a corpus:// URL has no other place to be read from
                raise FetchError(f"{url}: {self._stale[parsed[0]]}")
            candidates = [corpus] if corpus is not None else []
        for corpus in candidates:
            doc = corpus.get_by_url(url)
            if doc is not None:
                return Page(
                    url=url,
                    title=doc.title,
                    text=doc.text,
                    final_url=doc.url,
                    content_type="text/plain",
                    source=f"local:{corpus.name}",
                )
        return None

    async def fetch(self, url: str) -> Page:
        page = self.lookup(url)
        if page is None:
            names = ", ".join(c.name for c in self.corpora) or "none"
            raise FetchError(
                f"{url}: not in the local corpus ({names}); crawl only URLs from its search results"
            )
        return page

    async def aclose(self) -> None:
        for corpus in self._opened.values():
            corpus.close()
