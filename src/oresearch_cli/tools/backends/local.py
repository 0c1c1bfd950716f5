"""The local corpus as a search backend, and as a crawl backend for the URLs it stores."""

from __future__ import annotations

from typing import Any

from oresearch_cli.tools.base import Page, SearchHit
from oresearch_cli.tools.corpus import Corpus, parse_corpus_url
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

    def _corpus(self, name: str) -> Corpus | None:
        if name not in self._opened:
            if self.ws is None:
                return None
            try:
                self._opened[name] = Corpus.open(self.ws, name)
            except CorpusError:
                return None
        return self._opened[name]

    def lookup(self, url: str) -> Page | None:
        parsed = parse_corpus_url(url)
        candidates = self.corpora
        if parsed is not None:
            corpus = self._corpus(parsed[0])
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
