"""Chinese (and mixed Chinese/English) search in local corpora: segmentation, ranking, passages,
snippets, crawl, and refusing an index built with another analyzer."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from oresearch_cli.textutil.cjk import segment
from oresearch_cli.tools import open_toolbox
from oresearch_cli.tools.corpus import (
    DEFAULT_SEGMENTATION,
    Corpus,
    analyzer_id,
    build_corpus,
    corpus_info,
    list_corpora,
    split_passages,
)
from oresearch_cli.tools.errors import CorpusError
from oresearch_cli.tools.semantics import truncate_text
from oresearch_cli.workspace import Workspace

from conftest import error_lines, ores
from tools_support import write_jsonl
from zh_corpus_support import MIXED_QUERIES, ZH_DOCS, ZH_QUERIES, write_zh_corpus

SCHEMES = ("jieba", "bigram")


@pytest.fixture(scope="module")
def zh_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    tmp = tmp_path_factory.mktemp("zh")
    ws = Workspace.open(tmp / "ws")
    src = write_zh_corpus(tmp / "zh.jsonl")
    for scheme in SCHEMES:
        build_corpus(ws, src, f"zh-{scheme}", segmentation=scheme, language="zh")
    return ws


def _top(corpus: Corpus, query: str, k: int = 1) -> list[str]:
    return [h.url.rsplit("/", 1)[-1] for h in corpus.search(query, k)]


def test_segment_cuts_cjk_runs_only() -> None:
    assert (
        segment("Transformer 的注意力机制, GPT-4!", "bigram")
        == "Transformer  的注 注意 意力 力机 机制 , GPT-4!"
    )
    assert segment("Plain English, untouched.", "jieba") == "Plain English, untouched."
    jieba = segment("量子计算机的原理", "jieba").split()
    assert {"量子", "计算", "计算机", "原理"} <= set(jieba)  # sub-words of long words too
    # Kana and Han are bigrammed apart: no pair straddles the scripts (Han folded to simplified).
    assert segment("東京タワー", "bigram").split() == ["东京", "タワ", "ワー"]
    assert "京タ" not in segment("東京タワー", "jieba")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_traditional_and_simplified_characters_find_each_other(zh_ws: Workspace, scheme: str) -> None:
    assert segment("學而時習之", scheme) == segment("学而时习之", scheme)
    corpus = Corpus.open(zh_ws, f"zh-{scheme}")
    # The corpus is written in simplified characters; the same questions in traditional ones.
    assert _top(corpus, "熊貓平時吃什麼？") == ["panda"]
    assert _top(corpus, "被人們稱為詩仙的是誰？") == ["li_bai"]
    hit = corpus.search("熊貓", 1)[0]
    assert "大熊猫" in hit.snippet  # hits show the text as written


@pytest.mark.parametrize("scheme", SCHEMES)
def test_chinese_questions_find_their_document(zh_ws: Workspace, scheme: str) -> None:
    corpus = Corpus.open(zh_ws, f"zh-{scheme}")
    assert corpus.info.analyzer == analyzer_id(scheme) and corpus.info.language == "chinese"
    for query, doc_id in [
        ("熊猫平时吃什么？", "panda"),
        ("被人们称为诗仙的是谁？", "li_bai"),
        ("赛龙舟是为了纪念哪位诗人？", "dragon_boat"),
        ("哪个探测器第一次降落在月亮的背面？", "lunar_program"),
        ("比特币的发明者是谁？", "blockchain"),
        ("紫禁城", "forbidden_city"),  # a title word
    ]:
        assert _top(corpus, query) == [doc_id], query
    # Most labelled questions find their document in the top 5 (the benchmark measures more).
    found = sum(doc_id in _top(corpus, q, 5) for q, doc_id in ZH_QUERIES)
    assert found >= 0.9 * len(ZH_QUERIES)
    corpus.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mixed_chinese_english_queries(zh_ws: Workspace, scheme: str) -> None:
    corpus = Corpus.open(zh_ws, f"zh-{scheme}")
    # Both halves count: the Chinese Transformer page beats the English one, which has no Chinese.
    assert _top(corpus, "Transformer 注意力机制", 2) == ["transformer", "en_transformer"]
    assert _top(corpus, "transformers attention mechanism") == ["en_transformer"]  # stemmed as before
    # Each half finds its own-language page.
    assert set(_top(corpus, "Photosynthesis 叶绿体", 2)) == {"photosynthesis", "en_photosynthesis"}
    found = sum(doc_id in _top(corpus, q, 5) for q, doc_id in MIXED_QUERIES)
    assert found == len(MIXED_QUERIES)
    corpus.close()


def test_hits_show_the_original_chinese_text(zh_ws: Workspace) -> None:
    corpus = Corpus.open(zh_ws, f"zh-{DEFAULT_SEGMENTATION}")
    hit = corpus.search("熊猫平时吃什么？", 1)[0]
    panda = next(text for doc_id, _, text in ZH_DOCS if doc_id == "panda")
    assert hit.title == "大熊猫" and hit.snippet == panda  # unsegmented, whole (it is short)
    passage = corpus.search_passages("熊猫", 1)[0]
    assert passage.title == "大熊猫" and passage.text == panda
    corpus.close()


def test_long_chinese_document_passages_snippet_and_crawl(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    filler = "".join(f"第{i}段讲的是一些普通的事情，没有什么特别值得注意的内容。" for i in range(80))
    needle = "斑胸草雀会学习并唱出复杂的歌曲，这种鸣禽原产于澳大利亚。"
    text = filler + "\n\n" + needle + "\n\n" + filler
    src = write_jsonl(tmp_path / "long.jsonl", [{"id": "birds", "title": "鸟类", "text": text}])
    build_corpus(ws, src, "long", passage_words=50)
    corpus = Corpus.open(ws, "long")
    assert corpus.info.n_passages > 10
    hit = corpus.search("澳大利亚的鸣禽会唱歌吗", 1)[0]
    assert needle in hit.snippet and len(hit.snippet) <= 400
    assert corpus.search_passages("斑胸草雀", 1)[0].text.count("斑胸草雀") == 1
    corpus.close()

    async def crawl() -> str:
        async with open_toolbox(ws, search="local:long", crawl="local", cache=False) as tools:
            return (await tools.crawl_page("corpus://long/birds")).text

    assert asyncio.run(crawl()) == f"鸟类\n{text}"  # the document, whole and unsegmented


def test_split_passages_chinese() -> None:
    sentences = [f"这是第{i}个句子，它讲了一件事情。" for i in range(60)]
    text = "".join(sentences[:30]) + "\n\n" + "".join(sentences[30:]) + "最后一句没有句号"
    passages = split_passages(text, 40)
    assert len(passages) > 3
    # The text is kept: no space inserted inside Chinese, only the paragraph break became one.
    assert "".join(passages).replace(" ", "") == text.replace("\n\n", "")
    for p in passages:
        han = len(re.findall(r"[\u4e00-\u9fff]", p))
        assert han <= 40 * 2 * 1.25 + 2  # a Han character weighs half a word
    # Cut between sentences, never inside one (these are short enough to fit).
    assert all(p.endswith(("。", "句号")) for p in passages)
    # One over-long sentence without punctuation is still cut, at characters.
    run = "没有标点的很长的中文句子" * 30
    cut = split_passages(run, 20)
    assert len(cut) > 5 and "".join(cut) == run
    # Mixed text keeps its spaces between words.
    assert split_passages("使用 Python 和 PyTorch 训练模型。", 40) == ["使用 Python 和 PyTorch 训练模型。"]


def _old_split_passages(text: str, max_words: int) -> list[str]:
    """split_passages as it was before Chinese support: English must split exactly the same."""
    paragraphs = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)]|#{1,6})\s)")
    sentences = re.compile(r"(?<=[.!?。])\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")
    units: list[list[str]] = []
    for paragraph in paragraphs.split(text):
        words = paragraph.split()
        if not words:
            continue
        if len(words) <= max_words:
            units.append(words)
            continue
        for sentence in sentences.split(paragraph):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                if chunk := words[start : start + max_words]:
                    units.append(chunk)
    passages: list[list[str]] = []
    current: list[str] = []
    for unit in units:
        if current and len(current) + len(unit) > max_words:
            passages.append(current)
            current = []
        current.extend(unit)
    if current:
        if (
            passages
            and len(current) < max_words // 4
            and len(passages[-1]) + len(current) <= max_words * 1.25
        ):
            passages[-1].extend(current)
        else:
            passages.append(current)
    return [" ".join(words) for words in passages]


@pytest.mark.parametrize("max_words", [8, 20, 120])
def test_english_passages_are_unchanged(max_words: int) -> None:
    para = " ".join(f"Sentence {i} says a thing. It goes on (briefly) and ends here!" for i in range(30))
    texts = [
        para,
        f"# Title\n\nShort intro.\n\n{para}\n- item one\n- item two\n\n{' '.join(['word'] * 300)}",
        "Tiny.",
        "",
    ]
    for text in texts:
        assert split_passages(text, max_words) == _old_split_passages(text, max(8, max_words))


def test_truncate_text_cuts_chinese_at_a_sentence_end() -> None:
    text = "注意力机制让模型关注输入中最重要的部分。" * 30
    cut, truncated = truncate_text(text, 200)
    assert truncated and cut.endswith("。") and len(cut) <= 200 and text.startswith(cut)


def _set_analyzer(ws: Workspace, name: str, analyzer: str | None) -> None:
    path = ws.corpora_dir / name / "manifest.json"
    data = json.loads(path.read_text())
    if analyzer is None:
        del data["analyzer"]
    else:
        data["analyzer"] = analyzer
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("analyzer", [None, "ores_text/1", "ores_text/2 cjk=unigram"])
def test_an_index_with_another_analyzer_is_refused(tmp_path: Path, analyzer: str | None) -> None:
    ws = Workspace.open(tmp_path / "ws")
    src = write_zh_corpus(tmp_path / "zh.jsonl")
    build_corpus(ws, src, "old", language="english", passage_words=100)
    _set_analyzer(ws, "old", analyzer)
    with pytest.raises(CorpusError) as info:
        Corpus.open(ws, "old")
    message = str(info.value)
    assert "\n" not in message and "'old'" in message
    assert message.endswith(
        f"rebuild it with `ores corpus build {src} --name old --format jsonl --language english "
        "--passage-words 100 --force`"
    )
    # Still listed, marked as needing a rebuild.
    assert [c.name for c in list_corpora(ws)] == ["old"] and corpus_info(ws, "old").needs_rebuild

    async def crawl() -> str:
        async with open_toolbox(ws, search=None, crawl="local", cache=False) as tools:
            page = await tools.crawl_page("corpus://old/panda")
            return page.text

    assert "rebuild it with `ores corpus build" in asyncio.run(crawl())


def test_cli_build_search_and_refuse_a_stale_corpus(tmp_path: Path) -> None:
    src = write_zh_corpus(tmp_path / "zh.jsonl")
    ws = tmp_path / "ws"
    built = ores("corpus", "build", str(src), "--name", "zh", "--language", "zh", "--segmentation", "bigram",
                 "--json", "--ws", str(ws), cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["analyzer"] == "ores_text/2 cjk=bigram"
    found = ores("corpus", "search", "zh", "熊猫平时吃什么", "--json", "--ws", str(ws), cwd=tmp_path)
    assert json.loads(found.stdout)[0]["title"] == "大熊猫"
    bad = ores(
        "corpus", "build", str(src), "--name", "x", "--segmentation", "unigram", "--ws", str(ws), cwd=tmp_path
    )
    assert (
        bad.returncode != 0 and len(error_lines(bad.stderr)) == 1 and "--segmentation 'unigram'" in bad.stderr
    )

    _set_analyzer(Workspace.open(ws), "zh", None)
    rebuild = f"ores corpus build {src} --name zh --format jsonl --language chinese --passage-words 120"
    for args in (("corpus", "search", "zh", "熊猫"), ("tools", "search", "熊猫", "--search", "local:zh")):
        refused = ores(*args, "--ws", str(ws), cwd=tmp_path)
        lines = error_lines(refused.stderr)
        assert refused.returncode != 0 and len(lines) == 1, refused.stderr
        assert "corpus 'zh'" in lines[0] and rebuild in lines[0]
    listed = ores("corpus", "ls", "--json", "--ws", str(ws), cwd=tmp_path)
    (row,) = json.loads(listed.stdout)
    assert row["needs_rebuild"] is True and row["rebuild_command"].startswith(rebuild)
    shown = ores("corpus", "ls", "--ws", str(ws), cwd=tmp_path)
    assert shown.returncode == 0 and "needs rebuild" in shown.stdout
