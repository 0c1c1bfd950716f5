"""The BM25 passage index (tantivy): schema, analyzers, writing and querying.

One tantivy document per passage: `doc_id`, `title` (boosted at query time), `body` (the
passage), `url`, `passage` (its number in the document). Title and body go through the same
analysis: CJK runs are first cut into words or bigrams in Python (`textutil.cjk`, the corpus'
segmentation scheme), then tantivy's analyzer splits on non-alphanumerics, drops tokens over 40
bytes, lowercases, ASCII-folds and stems. Text without CJK characters is indexed exactly as
before segmentation existed.

Title and body are indexed, not stored: the segmented text is not what a reader should see.
The original title and passage are stored beside them in stored-only bytes fields.

`analyzer_id(scheme)` names the whole analysis (`ores_text/2 cjk=jieba`); a corpus records it in
its manifest, and an index whose analysis this version does not produce is not searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from oresearch_cli.textutil.cjk import SCHEMES, segment
from oresearch_cli.tools.errors import CorpusError

ANALYZER = "ores_text"
# Bumped whenever indexing changes so that an index built before cannot be searched right.
# 2: CJK segmentation (Han folded to simplified first), stored-only original text.
ANALYZER_VERSION = 2
# Chosen by benchmarks/bench_cjk_quality.py: on 45 Chinese questions jieba has MRR@10 0.89 and
# recall@5 0.98 vs 0.85 and 0.96 for bigrams (mixed zh/en queries tie), a smaller index, and
# build and query speeds within the run-to-run noise of bigrams'.
DEFAULT_SEGMENTATION = "jieba"
SEGMENTATIONS = SCHEMES
# Snowball stemmers tantivy ships.
STEMMERS = (
    "arabic", "danish", "dutch", "english", "finnish", "french", "german", "greek", "hungarian", "italian",
    "norwegian", "portuguese", "romanian", "russian", "spanish", "swedish", "tamil", "turkish",
)  # fmt: skip
# Languages without a stemmer ("none" turns stemming off): Latin words are not stemmed; CJK text
# is segmented in these as in every corpus.
UNSTEMMED = ("chinese", "japanese", "korean", "none")
LANGUAGES = STEMMERS + UNSTEMMED
_LANGUAGE_ALIASES = {"zh": "chinese", "cjk": "chinese", "ja": "japanese", "ko": "korean", "en": "english"}
DEFAULT_TITLE_BOOST = 2.0
_WORD = re.compile(r"\w+")


def analyzer_id(segmentation: str) -> str:
    """The manifest's description of how an index was analysed."""
    return f"{ANALYZER}/{ANALYZER_VERSION} cjk={segmentation}"


def segmentation_of(analyzer: str) -> str | None:
    """The segmentation scheme of an analyzer description this version produces, else None."""
    for scheme in SEGMENTATIONS:
        if analyzer == analyzer_id(scheme):
            return scheme
    return None


def check_segmentation(segmentation: str) -> str:
    if segmentation not in SEGMENTATIONS:
        raise CorpusError(
            f"--segmentation {segmentation!r}: no such CJK segmentation; use one of {', '.join(SEGMENTATIONS)}"
        )
    return segmentation


def _analyzer(language: str) -> tantivy.TextAnalyzer:
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
    )
    if language in STEMMERS:
        builder = builder.filter(tantivy.Filter.stemmer(language))
    return builder.build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=False, tokenizer_name=ANALYZER)
    builder.add_text_field("body", stored=False, tokenizer_name=ANALYZER)
    # What search hits show: the original text, UTF-8, stored only.
    builder.add_bytes_field("title_text", stored=True)
    builder.add_bytes_field("body_text", stored=True)
    builder.add_text_field("url", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("passage", stored=True)
    # The document's ordinal as a fast field: de-duplicating passages by document needs no
    # stored-document reads.
    builder.add_unsigned_field("doc_ord", stored=False, fast=True)
    return builder.build()


def check_language(language: str) -> str:
    language = _LANGUAGE_ALIASES.get(language.lower(), language.lower())
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


def _text(stored: bytes | None) -> str:
    return stored.decode() if stored else ""


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
        self,
        path: Path,
        language: str,
        heap_bytes: int = 256 * 1024 * 1024,
        threads: int = 0,
        segmentation: str = DEFAULT_SEGMENTATION,
    ) -> None:
        self.segmentation = check_segmentation(segmentation)
        self._index = _open(path, language, create=True)
        kwargs = {"heap_size": heap_bytes}
        if threads:
            kwargs["num_threads"] = threads
        self._writer = self._index.writer(**kwargs)
        self.count = 0
        self._title = ("", "")  # (title, segmented): a document's passages share their title

    def add(self, doc_ord: int, doc_id: str, title: str, url: str, passage: int, text: str) -> None:
        if self._title[0] != title:
            self._title = (title, segment(title, self.segmentation))
        doc = tantivy.Document(
            doc_id=doc_id,
            title=self._title[1],
            body=segment(text, self.segmentation),
            url=url,
        )
        doc.add_bytes("title_text", title.encode())
        doc.add_bytes("body_text", text.encode())
        doc.add_unsigned("passage", passage)
        doc.add_unsigned("doc_ord", doc_ord)
        self._writer.add_document(doc)
        self.count += 1

    def close(self) -> None:
        self._writer.commit()
        self._writer.wait_merging_threads()


def query_text(query: str, segmentation: str = DEFAULT_SEGMENTATION) -> str:
    """The words of a free-text query, lowercased so that none reads as query syntax
    (AND/OR/NOT, field:, quotes, +/-), CJK runs cut as the index was; the analyzer does the rest."""
    return " ".join(_WORD.findall(segment(query.lower(), segmentation)))


class PassageIndex:
    """A read-only open index. Searching is thread-safe."""

    def __init__(
        self,
        path: Path,
        language: str,
        title_boost: float = DEFAULT_TITLE_BOOST,
        segmentation: str = DEFAULT_SEGMENTATION,
    ) -> None:
        self.segmentation = check_segmentation(segmentation)
        self._index = _open(path, language, create=False)
        self._searcher = self._index.searcher()
        self.title_boost = title_boost

    @property
    def num_passages(self) -> int:
        return self._searcher.num_docs

    def _hits(self, query: str, limit: int) -> list[tuple[float, tantivy.DocAddress]]:
        words = query_text(query, self.segmentation)
        if not words or limit <= 0:
            return []
        parsed = self._index.parse_query(words, ["title", "body"], field_boosts={"title": self.title_boost})
        return self._searcher.search(parsed, limit, count=False).hits

    def _load(self, score: float, address: tantivy.DocAddress) -> PassageHit:
        doc = self._searcher.doc(address)
        return PassageHit(
            doc_id=doc.get_first("doc_id") or "",
            title=_text(doc.get_first("title_text")),
            url=doc.get_first("url") or "",
            text=_text(doc.get_first("body_text")),
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
