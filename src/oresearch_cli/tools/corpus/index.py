"""The BM25 passage index (tantivy): schema, analyzers, writing and querying.

One tantivy document per passage: `doc_id`, `title` (boosted at query time), `body` (the
passage), `url`, `passage` (its number in the document). Title and body go through the same
analyzer: split on non-alphanumerics, drop tokens over 40 bytes, lowercase, ASCII-fold, stem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from oresearch_cli.tools.errors import CorpusError

ANALYZER = "ores_text"
# Snowball stemmers tantivy ships; "none" turns stemming off.
LANGUAGES = (
    "arabic", "danish", "dutch", "english", "finnish", "french", "german", "greek", "hungarian", "italian",
    "norwegian", "portuguese", "romanian", "russian", "spanish", "swedish", "tamil", "turkish", "none",
)  # fmt: skip
DEFAULT_TITLE_BOOST = 2.0
_WORD = re.compile(r"\w+")


def _analyzer(language: str) -> tantivy.TextAnalyzer:
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
    )
    if language != "none":
        builder = builder.filter(tantivy.Filter.stemmer(language))
    return builder.build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=True, tokenizer_name=ANALYZER)
    builder.add_text_field("body", stored=True, tokenizer_name=ANALYZER)
    builder.add_text_field("url", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("passage", stored=True)
    # The document's ordinal as a fast field: de-duplicating passages by document needs no
    # stored-document reads.
    builder.add_unsigned_field("doc_ord", stored=False, fast=True)
    return builder.build()


def check_language(language: str) -> str:
    language = language.lower()
    if language not in LANGUAGES:
        raise CorpusError(f"--language {language!r}: no stemmer for it; use one of {', '.join(LANGUAGES)}")
    return language


def _open(path: Path, language: str, create: bool) -> tantivy.Index:
    if create:
        path.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(_schema(), path=str(path), reuse=False)
    else:
        if not tantivy.Index.exists(str(path)):
            raise CorpusError(
                f"{path}: the search index is missing; rebuild the corpus with `ores corpus build --force`"
            )
        index = tantivy.Index.open(str(path))
    index.register_tokenizer(ANALYZER, _analyzer(language))
    return index


@dataclass(frozen=True)
class PassageHit:
    doc_id: str
    title: str
    url: str
    text: str
    passage: int
    score: float


class IndexWriter:
    """Adds passages in batches; `close()` commits and waits for merges."""

    def __init__(
        self, path: Path, language: str, heap_bytes: int = 256 * 1024 * 1024, threads: int = 0
    ) -> None:
        self._index = _open(path, language, create=True)
        kwargs = {"heap_size": heap_bytes}
        if threads:
            kwargs["num_threads"] = threads
        self._writer = self._index.writer(**kwargs)
        self.count = 0

    def add(self, doc_ord: int, doc_id: str, title: str, url: str, passage: int, text: str) -> None:
        doc = tantivy.Document(doc_id=doc_id, title=title, body=text, url=url)
        doc.add_unsigned("passage", passage)
        doc.add_unsigned("doc_ord", doc_ord)
        self._writer.add_document(doc)
        self.count += 1

    def close(self) -> None:
        self._writer.commit()
        self._writer.wait_merging_threads()


def query_text(query: str) -> str:
    """The words of a free-text query, lowercased so that none reads as query syntax
    (AND/OR/NOT, field:, quotes, +/-); the analyzer does the rest."""
    return " ".join(_WORD.findall(query.lower()))


class PassageIndex:
    """A read-only open index. Searching is thread-safe."""

    def __init__(self, path: Path, language: str, title_boost: float = DEFAULT_TITLE_BOOST) -> None:
        self._index = _open(path, language, create=False)
        self._searcher = self._index.searcher()
        self.title_boost = title_boost

    @property
    def num_passages(self) -> int:
        return self._searcher.num_docs

    def _hits(self, query: str, limit: int) -> list[tuple[float, tantivy.DocAddress]]:
        words = query_text(query)
        if not words or limit <= 0:
            return []
        parsed = self._index.parse_query(words, ["title", "body"], field_boosts={"title": self.title_boost})
        return self._searcher.search(parsed, limit, count=False).hits

    def _load(self, score: float, address: tantivy.DocAddress) -> PassageHit:
        doc = self._searcher.doc(address)
        return PassageHit(
            doc_id=doc.get_first("doc_id") or "",
            title=doc.get_first("title") or "",
            url=doc.get_first("url") or "",
            text=doc.get_first("body") or "",
            passage=int(doc.get_first("passage") or 0),
            score=float(score),
        )

    def search(self, query: str, limit: int = 10) -> list[PassageHit]:
        """The best `limit` passages."""
        return [self._load(score, address) for score, address in self._hits(query, limit)]

    def search_documents(
        self, query: str, limit: int = 10, depth: int = 4, max_passages: int = 5000
    ) -> list[PassageHit]:
        """The best passage of each of the best `limit` documents. Looks `depth` x `limit`
        passages deep first, and deeper (up to `max_passages`) while one long document's
        passages crowd out the others."""
        want = limit * depth + 5
        while True:
            hits = self._hits(query, want)
            ords = (
                self._searcher.fast_field_values("doc_ord", [address for _, address in hits]) if hits else []
            )
            best: dict[Any, int] = {}  # doc ordinal -> index of its best passage in hits
            for i, ord_ in enumerate(ords):
                if ord_ not in best:
                    best[ord_] = i
                    if len(best) >= limit:
                        break
            if len(best) >= limit or len(hits) < want or want >= max_passages:
                break
            want = min(max_passages, want * 4)
        return [self._load(*hits[i]) for i in best.values()]
