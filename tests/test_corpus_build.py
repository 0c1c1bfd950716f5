"""Local corpora: building from JSONL and folders, passages, search quality basics, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oresearch_cli.tools.corpus import (
    Corpus,
    build_corpus,
    corpus_info,
    list_corpora,
    parse_corpus_url,
    remove_corpus,
    split_passages,
)
from oresearch_cli.tools.errors import CorpusError, CorpusInputError
from oresearch_cli.workspace import Workspace

from tools_support import DOCS, write_jsonl


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


def test_build_jsonl_and_search(ws: Workspace, tmp_path: Path) -> None:
    info = build_corpus(ws, write_jsonl(tmp_path / "docs.jsonl"), "mini")
    assert (info.n_docs, info.n_passages, info.source_format) == (5, 5, "jsonl")
    corpus = Corpus.open(ws, "mini")
    hits = corpus.search("photosynthesis light reactions", 3)
    assert hits[0].title == "Photosynthesis" and hits[0].url == "https://en.wikipedia.org/wiki/Photosynthesis"
    # A document without a URL gets corpus://NAME/ID, and crawl finds it by either URL.
    river = corpus.search("amazon", 1)[0]
    assert river.url == "corpus://mini/river" and parse_corpus_url(river.url) == ("mini", "river")
    assert corpus.get_by_url("corpus://mini/river").text.startswith("The Amazon River")  # type: ignore[union-attr]
    assert corpus.get_by_url("http://en.wikipedia.org/wiki/Photosynthesis/").id == "photo"  # type: ignore[union-attr]
    assert corpus.search("", 3) == [] and corpus.search("?!", 3) == []
    assert isinstance(
        corpus.search('AND OR "NOT" title:(x -y +z~2', 3), list
    )  # query syntax is not interpreted
    corpus.close()


def test_stemming_and_title_boost(ws: Workspace, tmp_path: Path) -> None:
    build_corpus(ws, write_jsonl(tmp_path / "docs.jsonl"), "mini")
    corpus = Corpus.open(ws, "mini")
    assert corpus.search("running", 1)[0].title == "Marathon"  # runs/runner/running share a stem
    # "photosynthesis" is in both bodies once; the title match ranks first.
    assert [h.title for h in corpus.search("photosynthesis", 2)] == ["Photosynthesis", "Light"]
    corpus.close()


def test_long_documents_are_split_for_search_and_whole_for_crawl(ws: Workspace, tmp_path: Path) -> None:
    filler = " ".join(f"Paragraph {i} talks about general matters of little interest." for i in range(60))
    text = filler + "\n\nThe zebra finch sings a learned song.\n\n" + filler
    build_corpus(
        ws,
        write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "title": "Birds", "text": text}]),
        "long",
        passage_words=50,
    )
    corpus = Corpus.open(ws, "long")
    assert corpus.info.n_passages > 10
    hit = corpus.search("zebra finch", 1)[0]
    assert "zebra finch" in hit.snippet and len(hit.snippet) <= 400
    passages = corpus.search_passages("zebra finch", 3)
    assert passages[0].doc_id == "long" and "zebra" in passages[0].text
    assert corpus.get("long").text == text  # type: ignore[union-attr]
    corpus.close()


def test_split_passages() -> None:
    text = "Short intro.\n\n" + " ".join(["word"] * 250) + ".\n\nA closing paragraph. With two sentences."
    passages = split_passages(text, 100)
    assert all(len(p.split()) <= 125 for p in passages)
    assert " ".join(passages).split() == text.split()
    assert split_passages("", 100) == []


def test_build_folder_of_html_markdown_text(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "site"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "asyncio.html").write_text(
        "<html><head><title>asyncio — Asynchronous I/O</title>"
        '<link rel="canonical" href="https://docs.python.org/3/library/asyncio.html"></head>'
        "<body><nav>Navigation</nav><div class='body'><h1>asyncio</h1><p>asyncio is a library to write concurrent code "
        "using the async/await syntax. It is used as a foundation for multiple Python asynchronous frameworks.</p>"
        "</div></body></html>"
    )
    (src / "notes.md").write_text("# Event loops\n\nAn event loop runs asynchronous tasks and callbacks.\n")
    (src / "plain.txt").write_text("Coroutines are declared with the async def statement.\n")
    (src / ".hidden.txt").write_text("never indexed")
    (src / "_sources").mkdir()
    (src / "_sources" / "notes.md.txt").write_text("never indexed either")
    (src / "image.png").write_bytes(b"\x89PNG")
    info = build_corpus(ws, src, "docs")
    assert (info.n_docs, info.source_format) == (3, "dir")
    corpus = Corpus.open(ws, "docs")
    top = corpus.search("async await concurrent code", 1)[0]
    assert (top.title, top.url) == (
        "asyncio — Asynchronous I/O",
        "https://docs.python.org/3/library/asyncio.html",
    )
    md = corpus.search("event loop", 1)[0]
    assert (md.title, md.url) == ("Event loops", "corpus://docs/notes.md")
    assert corpus.search("coroutines", 1)[0].title == "plain"
    assert corpus.search("never indexed", 3) == []
    corpus.close()
    info = build_corpus(ws, src, "docs2", base_url="https://example.org/notes/")
    corpus = Corpus.open(ws, "docs2")
    assert corpus.search("event loop", 1)[0].url == "https://example.org/notes/notes.md"
    corpus.close()


def test_search_r1_contents_jsonl(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "wiki18.jsonl"
    path.write_text(
        json.dumps({"id": "0", "contents": '"Aaron"\nAaron is a prophet and the brother of Moses.'}) + "\n"
    )
    build_corpus(ws, path, "w18")
    corpus = Corpus.open(ws, "w18")
    hit = corpus.search("brother of moses", 1)[0]
    assert hit.title == "Aaron" and hit.snippet == "Aaron is a prophet and the brother of Moses."
    corpus.close()


def test_ls_info_rm_and_rebuild(ws: Workspace, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    build_corpus(ws, src, "a")
    build_corpus(ws, src, "b")
    assert [c.name for c in list_corpora(ws)] == ["a", "b"]
    with pytest.raises(CorpusError, match="already exists; pass --force"):
        build_corpus(ws, src, "a")
    old = corpus_info(ws, "a").build_id
    assert build_corpus(ws, write_jsonl(src, DOCS[:2]), "a", force=True).build_id != old
    assert corpus_info(ws, "a").n_docs == 2
    remove_corpus(ws, "a")
    with pytest.raises(CorpusError, match=r"no corpus named 'a' .*have: b.*ores corpus build"):
        Corpus.open(ws, "a")
    assert not [p for p in ws.corpora_dir.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"id": 1, "text": "ok"}\n{not json}\n', r"bad\.jsonl:2: not valid JSON"),
        ('{"id": 1, "title": "no text"}\n', r"bad\.jsonl:1: no 'text' field"),
        ('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', r"bad\.jsonl:2: duplicate id '1'"),
        ("[1, 2]\n", r"bad\.jsonl:1: expected a JSON object"),
        ("\n\n", "no documents with text"),
    ],
)
def test_bad_sources_are_one_line_errors(ws: Workspace, tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CorpusInputError, match=match) as info:
        build_corpus(ws, path, "bad")
    assert "\n" not in str(info.value)
    assert not (ws.corpora_dir / "bad").exists()


def test_bad_names_paths_and_formats(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="corpus name"):
        build_corpus(ws, tmp_path, "../escape")
    with pytest.raises(CorpusInputError, match="no such file"):
        build_corpus(ws, tmp_path / "missing.jsonl", "x")
    with pytest.raises(CorpusInputError, match="pass --format"):
        build_corpus(ws, write_jsonl(tmp_path / "docs.txt"), "x")
    with pytest.raises(CorpusError, match="--language"):
        build_corpus(ws, write_jsonl(tmp_path / "docs.jsonl"), "x", language="klingon")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusInputError, match="no .html, .md or .txt files"):
        build_corpus(ws, tmp_path / "empty", "x")


def test_one_long_document_does_not_crowd_out_the_others(ws: Workspace, tmp_path: Path) -> None:
    long_text = " ".join(f"Section {i}: the json module dumps data with indent." for i in range(400))
    docs = [
        {"id": "long", "title": "json", "text": long_text},
        {"id": "short", "title": "Other", "text": "json dumps once"},
    ]
    build_corpus(ws, write_jsonl(tmp_path / "crowd.jsonl", docs), "crowd", passage_words=20)
    corpus = Corpus.open(ws, "crowd")
    assert corpus.info.n_passages > 100
    assert [h.url for h in corpus.search("json dumps indent", 2)] == [
        "corpus://crowd/long",
        "corpus://crowd/short",
    ]
    corpus.close()
