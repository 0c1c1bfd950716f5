"""The orchestrator's fallbacks research the question: queries from its content words, answers from
the observed sentences that match them, citing only sources that share them."""

from __future__ import annotations

import re

from oresearch_cli.agent.fallbacks import (
    ObservedSource,
    best_unread,
    bm25_scores,
    content_words,
    fallback_answer,
    fallback_query,
    relevant_sentences,
    split_sentences,
)
from oresearch_cli.agent.prompts import phrase

AMAZON = "Why is the Amazon rainforest important for the global climate?"
TEMPLATE_WORDS = {"what", "why", "is", "the", "for", "background", "key", "facts", "question", "current",
                  "developments", "evidence", "open", "issues", "of", "this", "are"}  # fmt: skip


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", text)}


def test_content_words_drop_stopwords_and_scaffolding_en() -> None:
    assert content_words(AMAZON, "en") == ["Amazon", "rainforest", "global", "climate"]
    assert content_words(
        "What are the key facts? Explain the facts of photosynthesis, Photosynthesis!", "en"
    ) == ["photosynthesis"]
    assert content_words("What is it?", "en") == []


def test_content_words_keep_han_runs_and_drop_function_words_zh() -> None:
    assert content_words("为什么亚马逊雨林对全球气候很重要？", "zh") == ["亚马逊雨林", "全球气候"]
    assert content_words("光合作用（photosynthesis）如何把光变成糖？", "zh") == [
        "光合作用",
        "photosynthesis",
        "光变成糖",
    ]
    assert content_words("茶对健康的影响有哪些？", "zh") == ["茶", "健康", "影响"]
    assert content_words("中国的和平发展道路是什么", "zh") == ["中国", "和平发展道路"]  # 和平 stays whole
    subtask = phrase("zh", "fallback_subtask_1", question="为什么亚马逊雨林对全球气候很重要？")
    assert content_words(subtask, "zh") == ["亚马逊雨林", "全球气候"]


def test_fallback_query_is_the_content_of_the_question_not_the_template() -> None:
    query = fallback_query(AMAZON, "en")
    assert {"amazon", "rainforest", "climate"} <= _words(query) and not _words(query) & TEMPLATE_WORDS
    for i in (1, 2):
        subtask = phrase("en", f"fallback_subtask_{i}", question=AMAZON)
        assert fallback_query(subtask, "en") == query == "Amazon rainforest global climate"
    long = "How do " + " ".join(f"topic{i}" for i in range(20)) + " relate?"
    assert len(fallback_query(long, "en").split()) == 8
    assert fallback_query("What is it?", "en") == "What is it?"  # nothing to keep: the text itself


SOURCES = [
    ObservedSource(
        1, "Fact", "A fact is a datum about one or more aspects of a circumstance. Facts are verifiable."
    ),
    ObservedSource(
        2, "Social issue", "A social issue is a problem that affects many people within a society."
    ),
    ObservedSource(
        3,
        "Amazon rainforest - Wikipedia",
        "The Amazon basin covers seven million square kilometres. The Amazon rainforest stores about "
        "150 billion tonnes of carbon and regulates the global climate through evapotranspiration. "
        "Tourism in Manaus grew in the 1990s.",
    ),
    ObservedSource(
        4, "Tropical forests and climate", "Tropical forests cool the climate by moving water vapour."
    ),
]


def test_fallback_answer_ranks_relevant_sentences_and_cites_only_sharing_sources() -> None:
    sentences = relevant_sentences(AMAZON, SOURCES, "en")
    assert sentences[0].text.startswith("The Amazon rainforest stores") and sentences[0].source == 3
    texts = [s.text for s in sentences]
    assert "Tourism in Manaus grew in the 1990s." not in texts  # shares no content word
    answer = fallback_answer(AMAZON, SOURCES, "en")
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    assert cited == {3, 4} and "fact is a datum" not in answer and "social issue" not in answer.lower()
    assert answer.index("stores about 150 billion") < answer.index("Tropical forests cool")
    assert all(q.endswith((".", "…")) for q in re.split(r" \[\d+\] ?", answer) if q)


def test_fallback_answer_never_cites_an_unrelated_source() -> None:
    unrelated = SOURCES[:2]
    answer = fallback_answer(AMAZON, unrelated, "en")
    assert answer == phrase("en", "fallback_answer_none") and "[" not in answer
    # A title that names the topic is the closest source; it is cited, its unrelated text is not quoted.
    titled = [*unrelated, ObservedSource(5, "Amazon rainforest [2] facts", "Opening hours and tickets.")]
    answer = fallback_answer(AMAZON, titled, "en")
    assert answer.endswith("[5]") and "Amazon rainforest (2) facts" in answer and "Opening" not in answer
    assert re.findall(r"\[(\d+)\]", answer) == ["5"]
    assert fallback_answer(AMAZON, [], "en") == ""  # the caller's "no output" phrase applies


def test_fallback_answer_zh_matches_by_character_bigrams() -> None:
    sources = [
        ObservedSource(1, "事实", "事实是指客观存在的情况。"),
        ObservedSource(2, "亚马逊雨林", "亚马逊雨林储存了大量碳，对全球气候有调节作用。旅游业在增长。"),
    ]
    answer = fallback_answer("为什么亚马逊雨林对全球气候很重要？", sources, "zh")
    assert answer.startswith("亚马逊雨林储存了大量碳") and re.findall(r"\[(\d+)\]", answer) == ["2"]
    # A one-character content word (茶) still matches; sharing only a character of a longer word does not.
    tea = [
        ObservedSource(1, "", "咖啡因的化学结构很复杂。"),
        ObservedSource(2, "", "绿茶含有多种抗氧化物质。"),
    ]
    assert re.findall(r"\[(\d+)\]", fallback_answer("茶对健康的影响有哪些？", tea, "zh")) == ["2"]
    assert fallback_answer("全球气候", [ObservedSource(1, "", "全体成员参加了会议。")], "zh") == phrase(
        "zh", "fallback_answer_none"
    )
    assert fallback_answer("为什么亚马逊雨林对全球气候很重要？", sources[:1], "zh") == phrase(
        "zh", "fallback_answer_none"
    )


def test_quotes_stay_within_the_per_source_budget() -> None:
    long = " ".join(
        f"The Amazon rainforest claim number {i} concerns the climate of the planet." for i in range(30)
    )
    sentences = relevant_sentences(AMAZON, [ObservedSource(1, "", long)], "en", chars_per_source=280)
    assert sentences and sum(len(s.text) for s in sentences) <= 280


def test_helpers() -> None:
    assert split_sentences("... The Amazon stores carbon. It is big ... 雨林很大。气候变化") == [
        "The Amazon stores carbon.",
        "It is big…",
        "雨林很大。",
        "气候变化…",
    ]
    scores = bm25_scores(["amazon"], [["amazon", "rainforest"], ["fact"], []])
    assert scores[0] > 0 and scores[1] == scores[2] == 0
    unread = [SOURCES[0], SOURCES[2]]
    assert best_unread(AMAZON, unread, "en") == 3 and best_unread(AMAZON, SOURCES[:2], "en") is None
