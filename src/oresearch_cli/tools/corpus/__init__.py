"""Local corpora: BM25 (tantivy) passage indexes with a whole-document store, in the workspace."""

from oresearch_cli.tools.corpus.corpus import (
    CORPUS_SCHEME,
    Corpus,
    CorpusInfo,
    build_corpus,
    corpus_info,
    corpus_url,
    list_corpora,
    parse_corpus_url,
    remove_corpus,
)
from oresearch_cli.tools.corpus.index import (
    DEFAULT_SEGMENTATION,
    LANGUAGES,
    SEGMENTATIONS,
    PassageHit,
    analyzer_id,
)
from oresearch_cli.tools.corpus.passages import split_passages
from oresearch_cli.tools.corpus.readers import (
    FORMATS,
    WIKI_PACKAGE,
    WIKI_SOURCE,
    SourceDocument,
    iter_documents,
)
from oresearch_cli.tools.corpus.store import Document

__all__ = [
    "CORPUS_SCHEME",
    "DEFAULT_SEGMENTATION",
    "FORMATS",
    "LANGUAGES",
    "SEGMENTATIONS",
    "WIKI_PACKAGE",
    "WIKI_SOURCE",
    "Corpus",
    "CorpusInfo",
    "Document",
    "PassageHit",
    "SourceDocument",
    "analyzer_id",
    "build_corpus",
    "corpus_info",
    "corpus_url",
    "iter_documents",
    "list_corpora",
    "parse_corpus_url",
    "remove_corpus",
    "split_passages",
]
