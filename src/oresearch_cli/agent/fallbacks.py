"""What the orchestrator writes when a model fails twice: search queries and answers built from the
question's content, not from the phrases around it.

A fallback query is the content words of a subtask or question: stopwords, question words and the
scaffolding of the fallback subtask phrases ("Background and key facts: ...") removed, so the
search engine sees "Amazon rainforest global climate" rather than a templated sentence that
matches pages about facts in general. A fallback answer quotes the observed sentences that BM25
ranks highest against those words, and cites only sources that share at least one of them.

English words are matched by a light plural-folding stem; Chinese text is split into runs of Han
characters at common function words and the words of requests ("请", "给我提供一份报告"), where
jieba (`rjieba`, when installed) has them as words of their own, and matched by character bigrams.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from oresearch_cli.agent.pieces import cite_after, clean_query, complete_sentences
from oresearch_cli.agent.prompts import phrase, phrases
from oresearch_cli.textutil.lang import HAN_CHARS
from oresearch_cli.trace import escape_tags

FALLBACK_CHARS = 280  # of the sentences quoted from one source by a fallback answer
MAX_QUERY_WORDS = 8  # a search engine ranks a handful of content words best; more dilutes them
MAX_QUERY_CHARS = 120
MAX_SENTENCES = 4
MAX_SOURCES = 3
MIN_SENTENCE_TERMS = 3  # shorter pieces are headings and fragments ("Fact."), not statements
BM25_K1 = 1.2
BM25_B = 0.75

# A run of Han characters, or a word of any other script (letters and digits, no underscore).
_TOKEN = re.compile(rf"[{HAN_CHARS}]+|[^\W_{HAN_CHARS}]+")
_HAN = re.compile(rf"[{HAN_CHARS}]")
# A cited Chinese sentence's end meeting the next one's start: "。[1]中".
_CJK_EDGE = re.compile(
    rf"[{HAN_CHARS}\u3000-\u303f\uff00-\uffef]\[\d+\][{HAN_CHARS}\u3000-\u303f\uff00-\uffef]$"
)

_EN_STOPWORD_TEXT = """
    a about above after again against all also am an and any are aren as at be because been before
    being below between both but by can cannot could did didn do does doesn doing don down during
    each either etc even ever every few for from further had has have having he her here hers
    herself him himself his how however i if in into is isn it its itself just let like may me
    might more most much must my myself neither no nor not now of off on once only or other
    otherwise our ours ourselves out over own per rather same shall she should so some such than
    that the their theirs them themselves then there these they this those through thus to too
    under until up upon us very via was wasn we were weren what whatever when where whether which
    while who whom whose why will with within without would yet you your yours yourself
    yourselves
    please explain describe discuss analyze analyse provide give tell list compare summarize
    summarise outline identify evaluate assess
    important importance significant significance main major various different specific overall
    generally particular particularly question questions
"""  # stopwords, question words, the verbs of instructions, and adjectives that frame a question
_EN_STOPWORDS = frozenset(_EN_STOPWORD_TEXT.split())

# Chinese function words, longest first when matched. Single characters are only the ones that are
# nearly always particles; a few compounds that contain one are kept whole (`_ZH_KEEP`).
_ZH_STOPWORD_TEXT = """
    为什么 为何 什么 哪些 哪个 哪里 哪儿 如何 怎么样 怎么 怎样 是否 是不是 有没有 有哪些 有什么 多少
    以及 或者 还是 因为 所以 但是 而且 并且 如果 虽然 然而 从而 因而 于是 总是 也许 其他 其实 尤其
    极其 这个 那个 这些 那些 这种 那种 这样 那样 这里 那里 我们 你们 他们 她们 它们 一个 一些 一种
    可以 能够 应该 需要 目前 当前 现在 存在 正在 在于 其中 关于 对于 针对 通过 进行 主要 方面 情况
    及其 等等 重要 重要性 请 问题
    能否 给我 为我 帮我 提供 一份 详尽 详细 报告 收集 整理 收集整理 调研 介绍 说明 列出 分析 探讨 阐述
    相关 有关 具体 比如 例如 包括 特别 以下
    的 了 吗 呢 吧 啊 呀 是 和 与 及 或 在 对 把 被 从 之 也 都 很 就 而 其 这 那
"""
_ZH_STOPWORDS = tuple(_ZH_STOPWORD_TEXT.split())
_ZH_KEEP = ("目的", "的确", "和平", "对比", "对象", "对手", "面对", "相对", "绝对", "首都", "成就", "服从")


# -- words ----------------------------------------------------------------------------------------


def _stem(word: str) -> str:
    """Plural and singular alike ("rainforests" -> "rainforest", "studies" -> "study"): enough
    for a query of a few words and a few dozen sentences, where a full stemmer is overkill."""
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _template_scaffolding(language: str) -> list[str]:
    """The words of the fallback subtask phrases around `$question`: they say what kind of
    subtask it is, not what it is about, so a query built from them finds pages about "facts"."""
    texts = []
    for lang in dict.fromkeys(("en", language)):
        texts += [
            v.replace("$question", " ") for k, v in phrases(lang).items() if k.startswith("fallback_subtask_")
        ]
    return texts


@cache
def _en_scaffolding(language: str) -> frozenset[str]:
    words = (m.group(0) for text in _template_scaffolding(language) for m in _TOKEN.finditer(text))
    return frozenset(_stem(w) for w in words if not _HAN.match(w))


@cache
def _zh_pattern(language: str) -> re.Pattern[str]:
    """Keep-words first, then the stopwords and the scaffolding runs of the phrases, longest first."""
    stop = set(_ZH_STOPWORDS)
    singles = [w for w in _ZH_STOPWORDS if len(w) == 1]
    for text in _template_scaffolding(language):
        for run in re.findall(rf"[{HAN_CHARS}]+", text):
            stop.update(p for p in re.split("|".join(singles), run) if p)
    keep = "|".join(sorted(_ZH_KEEP, key=len, reverse=True))
    drop = "|".join(sorted(stop, key=len, reverse=True))
    return re.compile(f"(?P<keep>{keep})|(?P<drop>{drop})")


@lru_cache(maxsize=4096)
def _word_bounds(run: str) -> frozenset[int] | None:
    """The offsets in `run` where jieba's words begin and end; None without jieba (`rjieba`)."""
    try:
        import rjieba  # lazily: its dictionary loads on first use
    except ImportError:
        return None
    bounds, at = {0}, 0
    for word in rjieba.cut(run):
        at += len(word)
        bounds.add(at)
    return frozenset(bounds)


def _han_words(run: str, language: str) -> list[str]:
    """A run of Han characters split at function words: "为什么亚马逊雨林对全球气候很重要" ->
    ["亚马逊雨林", "全球气候"]. With jieba, a function word splits the run only where it is a word
    of its own: 就 in 就业 and 从 in 从事 stay ("艺术生就业领域", not "艺术生" and "业领域")."""
    pattern = _zh_pattern(language)
    bounds = _word_bounds(run) if len(run) > 1 else None
    words: list[str] = []
    current = ""
    pos = 0
    while pos < len(run):
        m = pattern.match(run, pos)
        inside_word = m is not None and bounds is not None and not {m.start(), m.end()} <= bounds
        if m is None or m.group("keep") or inside_word:
            piece = m.group(0) if m and m.group("keep") else run[pos]
            current += piece
            pos += len(piece)
            continue
        if current:
            words.append(current)
        current = ""
        pos = m.end()
    if current:
        words.append(current)
    return words


def content_words(text: str, language: str) -> list[str]:
    """The words of `text` that say what it is about, in order, each once (case-insensitively):
    Latin-script words less stopwords and scaffolding, and runs of Han characters less function
    words. `language` is the prompt folder (en, zh) whose fallback phrases count as scaffolding."""
    scaffolding = _en_scaffolding(language)
    words: list[str] = []
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if _HAN.match(token):
            words += _han_words(token, language)
        elif len(token) > 1 or token.isdigit():
            lower = token.lower()
            if lower not in _EN_STOPWORDS and _stem(lower) not in scaffolding:
                words.append(token)
    first: dict[str, str] = {}
    for word in words:
        first.setdefault(word.lower(), word)
    return list(first.values())


def fallback_query(text: str, language: str) -> str:
    """A search query from the content words of `text` (the first `MAX_QUERY_WORDS`, in order);
    `text` itself, cleaned, when it has none, so a search still happens."""
    words = content_words(text, language)[:MAX_QUERY_WORDS]
    query = " ".join(words) if words else clean_query(text)
    return query[:MAX_QUERY_CHARS].rsplit(" ", 1)[0] if len(query) > MAX_QUERY_CHARS else query


def broader_queries(text: str, language: str) -> list[str]:
    """`fallback_query(text)` and then ever broader ones, its last word dropped each time
    ("大熊猫 栖息地 数量现状", "大熊猫 栖息地", "大熊猫"): what to search next when a query found
    nothing worth reading, instead of the same query again."""
    words = content_words(text, language)[:MAX_QUERY_WORDS]
    queries = [fallback_query(text, language)]
    queries += [" ".join(words[:n]) for n in range(len(words) - 1, 0, -1)]
    return list(dict.fromkeys(q for q in queries if q))


def _terms(text: str, *, unigrams: bool = True) -> list[str]:
    """Match terms of a sentence or title: stemmed Latin words, and the characters and character
    bigrams of Han runs, so a sentence matches a Chinese query word without segmenting Chinese.
    A query word gives its bigrams only (a one-character word, itself): "全球气候" must not match
    every sentence that merely contains 全."""
    terms: list[str] = []
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if _HAN.match(token):
            terms += [token[i : i + 2] for i in range(len(token) - 1)]
            terms += list(token) if unigrams or len(token) == 1 else []
        elif len(token) > 1 or token.isdigit():
            terms.append(_stem(token))
    return terms


def query_terms(text: str, language: str) -> list[str]:
    """The match terms of the content words of `text`, each once."""
    words = content_words(text, language)
    return list(dict.fromkeys(t for word in words for t in _terms(word, unigrams=False)))


# -- sentences ------------------------------------------------------------------------------------

# After a Latin stop followed by a space and a capital, digit or quote ("e.g. the" stays whole);
# after a CJK stop; at a line break; at a snippet's " ... " joint.
_SPLIT = re.compile(
    rf"(?<=[.!?])\s+(?=[\"'“‘(\[]?[A-Z0-9\u00c0-\u024f{HAN_CHARS}])|(?<=[。！？])|\n+|\s+(?:\.\.\.|…)\s+"
)
_LEADING = re.compile(r"^(?:\.\.\.|…|[-–—|·•:;,])+\s*")
_ENDS = (".", "!", "?", "。", "！", "？")


def excerpt(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at its last complete sentence, else its last whole word
    with an ellipsis: a fallback answer quotes sources, and a word cut in half reads as a typo."""
    if len(text) <= limit:
        return text if text.endswith((*_ENDS, "…")) else f"{text.rstrip('.')}."
    head = text[:limit]
    sentences = complete_sentences(head)
    if len(sentences) >= limit // 3:
        return sentences
    words = head.rsplit(" ", 1)[0] if " " in head else head
    return f"{words.rstrip(' ,;:')}…"


def split_sentences(text: str) -> list[str]:
    """The sentences of a snippet or page text, whitespace squeezed; a piece that does not end
    on a stop (a snippet cut short) ends with an ellipsis."""
    out = []
    for piece in _SPLIT.split(text):
        piece = _LEADING.sub("", " ".join(piece.split()))
        if not piece:
            continue
        if piece.endswith(("...", "…")):
            piece = piece.rstrip(".… ") + "…"
        elif not piece.endswith(_ENDS):
            piece += "…"
        out.append(piece)
    return out


@dataclass(frozen=True)
class ObservedSource:
    """A numbered source as a fallback answer reads it: its title and the text observed of it."""

    number: int
    title: str
    text: str


@dataclass(frozen=True)
class Sentence:
    source: int  # the source's number
    text: str
    score: float


def bm25_scores(query: Sequence[str], docs: Sequence[Sequence[str]]) -> list[float]:
    """Okapi BM25 of each of `docs` (term lists) against the `query` terms; a few dozen sentences
    need no index."""
    if not docs:
        return []
    n = len(docs)
    avg = sum(len(d) for d in docs) / n or 1.0
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in dict.fromkeys(query):
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                norm = tf[term] + BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / avg)
                score += idf * tf[term] * (BM25_K1 + 1) / norm
        scores.append(score)
    return scores


def relevant_sentences(
    topic: str,
    sources: Sequence[ObservedSource],
    language: str,
    *,
    max_sentences: int = MAX_SENTENCES,
    max_sources: int = MAX_SOURCES,
    chars_per_source: int = FALLBACK_CHARS,
) -> list[Sentence]:
    """The observed sentences that share content words with `topic`, best BM25 first (ties: the
    order of `sources`), each at most once, within `chars_per_source` per source and at most
    `max_sources` sources. A sentence sharing no content word never appears: quoting it would
    cite a page that says nothing about the topic."""
    query = query_terms(topic, language)
    if not query:
        return []
    candidates: list[tuple[int, str, list[str]]] = []
    seen: set[str] = set()
    for source in sources:
        for text in split_sentences(source.text):
            key = " ".join(text.casefold().split())
            terms = _terms(text)
            if key in seen or len(terms) < MIN_SENTENCE_TERMS:
                continue
            seen.add(key)
            candidates.append((source.number, text, terms))
    scores = bm25_scores(query, [terms for _, _, terms in candidates])
    order = sorted(range(len(candidates)), key=lambda i: -scores[i])
    chosen: list[Sentence] = []
    used: dict[int, int] = {}
    for i in order:
        number, text, _ = candidates[i]
        if scores[i] <= 0 or len(chosen) == max_sentences:
            break
        text = excerpt(text, chars_per_source)
        if number not in used and len(used) == max_sources:
            continue
        if used.get(number, 0) + len(text) > chars_per_source:
            continue
        used[number] = used.get(number, 0) + len(text)
        chosen.append(Sentence(number, text, scores[i]))
    return chosen


def _closest_by_title(topic: str, sources: Sequence[ObservedSource], language: str) -> ObservedSource | None:
    """The source whose title best matches `topic`; None when no title shares a content word."""
    query = query_terms(topic, language)
    scores = bm25_scores(query, [_terms(s.title) for s in sources]) if query else []
    best = max(range(len(scores)), key=lambda i: scores[i], default=None)
    return sources[best] if best is not None and scores[best] > 0 else None


def fallback_answer(topic: str, sources: Sequence[ObservedSource], language: str) -> str:
    """An answer to `topic` from the observed sources: the most relevant sentences, each cited.

    When no sentence shares a content word with `topic`, it says so plainly, citing the source
    whose title does if there is one, else nothing. '' when there are no sources at all."""
    if not sources:
        return ""
    sentences = relevant_sentences(topic, sources, language)
    if sentences:
        answer = ""
        for s in sentences:
            # Chinese sentences follow each other without a space: "……威胁。[1]中国建立了……"
            gap = "" if _CJK_EDGE.search(answer[-8:] + s.text[:1]) or not answer else " "
            answer += gap + cite_after(escape_tags(s.text), f"[{s.source}]")
        return answer
    closest = _closest_by_title(topic, sources, language)
    if closest is None:
        return phrase(language, "fallback_answer_none")
    title = re.sub(r"\[(\d+)\]", r"(\1)", " ".join(closest.title.split()))  # no stray citations
    return f"{phrase(language, 'fallback_answer_title', title=escape_tags(title))} [{closest.number}]"


def best_unread(topic: str, sources: Sequence[ObservedSource], language: str) -> int | None:
    """The number of the source (title and snippet) that best matches `topic`; None when none
    shares a content word, so the orchestrator does not spend a tool call reading an unrelated page."""
    query = query_terms(topic, language)
    if not query or not sources:
        return None
    scores = bm25_scores(query, [_terms(f"{s.title} {s.text}") for s in sources])
    best = max(range(len(scores)), key=lambda i: scores[i])
    return sources[best].number if scores[best] > 0 else None
