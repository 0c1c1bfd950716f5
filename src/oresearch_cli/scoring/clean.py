"""Articles cleaned of citations before RACE judges them, the way DeepResearch Bench does it.

DRB has an LLM rewrite each article without citation marks, links, footnotes and the reference
list (so a judge scores the prose, not the bibliography), keeping the result when it is at least
100 characters long. `clean_with_llm` does the same through the judge role, with prompts written
for ores, and caches each cleaned article in the judge cache, so an article is cleaned once per
judge model whatever the number of runs that score it.

A weak model asked to copy a long article back often rewrites or truncates it. Beyond DRB's
length floor, a cleaned text must keep at least `min_kept` of the article's prose as measured by
the rule cleaner (`race.clean_article`) and must not be longer than the article. A cleaning that
fails these (or whose endpoint fails) is replaced by the rule cleaner's text, and the result says
so (`method` "rules-fallback" with the reason): counted in the scores, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oresearch_cli.filtering.judge import JudgeCache, cache_key
from oresearch_cli.scoring.race import clean_article

CLEAN_VERSION = "clean-v1"  # part of the cache key: bump when the prompt or the checks change
MIN_CHARS = 100  # DRB's floor for a usable cleaning
METHODS = ("llm", "rules", "none")

_PROMPT = {
    "en": (
        "You edit research articles. Return the article below with every citation removed: citation "
        "marks such as [1] or [2, 3], inline links to sources, footnotes and the list of references "
        "or sources at the end. Where a citation's words are part of a sentence, keep the words and "
        "drop only the mark. Change nothing else: keep every other sentence, heading and table as "
        "it is. Reply with the cleaned article only, with no comment before or after it.\n\n"
        "<article>\n{article}\n</article>"
    ),
    "zh": (
        "你负责编辑调研文章。请返回去掉所有引用后的下面这篇文章：删除引用标记（如 [1]、[2, 3]）、指向来源的链接、"
        "脚注，以及文末的参考文献或来源列表。如果引用中的文字是句子的一部分，保留文字，只删除标记。其余内容一律不改："
        "保留所有其他句子、标题和表格。只回复清洗后的文章，前后不要加任何说明。\n\n<article>\n{article}\n</article>"
    ),
}


@dataclass(frozen=True)
class Cleaned:
    """An article as it will be judged, and how it was cleaned: `llm`, `rules`, `none`, or
    `rules-fallback` (the LLM's cleaning was unusable; `problem` says why)."""

    text: str
    method: str
    cached: bool = False
    problem: str | None = None


def check_cleaning(article: str, cleaned: str, *, min_kept: float = 0.6) -> str | None:
    """Why an LLM's cleaning of `article` cannot be used, or None when it can."""
    text = cleaned.strip()
    floor = min(MIN_CHARS, len(clean_article(article)))
    if len(text) < floor:
        return f"{len(text)} characters, under {floor}"
    if len(text) > len(article.strip()) * 1.05 + 20:
        return f"longer than the article ({len(text)} > {len(article.strip())} characters)"
    kept = len(text) / max(1, len(clean_article(article)))
    if kept < min_kept:
        return f"kept {kept:.0%} of the article's prose (under {min_kept:.0%}): rewritten or cut"
    return None


async def clean_with_llm(
    llm: Any,
    article: str,
    language: str,
    cache: JudgeCache,
    *,
    trace_id: str | None = None,
    max_attempts: int = 2,
    min_kept: float = 0.6,
) -> Cleaned:
    """`article` cleaned by the judge role (cached); the rule cleaner's text when that fails."""
    from oresearch_cli.llm.errors import LLMError

    if not article.strip():
        return Cleaned("", "none")
    model = llm.config.role("judge").model
    lang = "zh" if language.lower().startswith("zh") else "en"
    key = cache_key(model, lang, article, CLEAN_VERSION)
    hit = cache.get(key)
    if hit is not None and isinstance(hit.get("cleaned"), dict):
        return Cleaned(str(hit["cleaned"]["text"]), "llm", cached=True)
    messages = [{"role": "user", "content": _PROMPT[lang].format(article=article)}]
    problem = "no attempt"
    for _ in range(max(1, max_attempts)):
        try:
            answer = await llm.chat("judge", messages, trace_id=trace_id)
        except LLMError as exc:
            problem = f"endpoint: {exc}"
            break
        text = (answer.text or "").strip()
        problem = (
            "cut at max_tokens"
            if answer.truncated
            else (check_cleaning(article, text, min_kept=min_kept) or "")
        )
        if not problem:
            cache.put(key, model, {"cleaned": {"text": text}}, rubric=CLEAN_VERSION)
            return Cleaned(text, "llm")
    return Cleaned(clean_article(article), "rules-fallback", problem=problem)


async def clean_for_judging(
    llm: Any, article: str, language: str, method: str, cache: JudgeCache, *, trace_id: str | None = None
) -> Cleaned:
    """The article as `method` (llm, rules, none) prepares it for the judge."""
    if method == "none":
        return Cleaned(article, "none")
    if method == "rules":
        return Cleaned(clean_article(article), "rules")
    if method != "llm":
        raise ValueError(f"clean method {method!r}: use one of {', '.join(METHODS)}")
    return await clean_with_llm(llm, article, language, cache, trace_id=trace_id)
