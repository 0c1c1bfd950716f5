"""The planner: the question -> 2-6 orthogonal subtasks (the `<subtask_list>`)."""

from __future__ import annotations

from oresearch_cli.agent.context import Context, Failure
from oresearch_cli.agent.fallbacks import content_words
from oresearch_cli.agent.pieces import PieceError, clean_subtask, parse_subtasks, written_in
from oresearch_cli.agent.schemas import schema
from oresearch_cli.agent.steps import StepRecord
from oresearch_cli.llm import ChatResult
from oresearch_cli.trace import tags


def fallback_subtasks(ctx: Context) -> list[str]:
    """Subtasks derived from the question when the planner's replies were unusable twice."""
    question = " ".join(ctx.question.split())
    subtasks = [clean_subtask(ctx.phrase(f"fallback_subtask_{i}", question=question)) for i in (1, 2)]
    return subtasks[: max(1, ctx.options.max_subtasks)]


def _topic_keys(text: str, language: str) -> set[str]:
    """Lower-cased content words, and the character pairs of Han words (Chinese has no spaces, so
    `亚马逊` must meet `亚马逊雨林`)."""
    keys: set[str] = set()
    for word in content_words(text, language):
        word = word.lower()
        keys.add(word)
        if not word.isascii() and len(word) > 2:
            keys.update(word[i : i + 2] for i in range(len(word) - 1))
    return keys


async def plan_subtasks(ctx: Context) -> tuple[list[str], StepRecord]:
    """(subtasks, the record of this step: the `<subtask_list>` and its log entry)."""
    opts = ctx.options
    bounds = {"min_subtasks": opts.min_subtasks, "max_subtasks": opts.max_subtasks}

    topic = _topic_keys(ctx.question, ctx.language)

    def parse(result: ChatResult) -> list[str]:
        subtasks = parse_subtasks(result.text, min_items=opts.min_subtasks, max_items=opts.max_subtasks)
        # A subtask in another language than the question's is dropped (a Chinese question's
        # English subtask becomes an English search, thought and answer).
        in_language = [s for s in subtasks if written_in(s, ctx.language)]
        if len(in_language) < opts.min_subtasks:
            raise PieceError(ctx.phrase("not_in_language"))
        # A small model copies the prompt's example list: a subtask must share a word with the question.
        on_topic = [s for s in in_language if not topic or topic & _topic_keys(s, ctx.language)]
        if len(on_topic) < opts.min_subtasks:
            raise PieceError(
                f"only {len(on_topic)} of its subtasks mention the research question's topic; "
                f"{opts.min_subtasks} are needed"
            )
        return on_topic

    subtasks, failures = await ctx.ask(
        "planner",
        "planner",
        {"question": ctx.question, **bounds},
        parse,
        schema=schema("subtasks", **bounds),
        expected=ctx.phrase("expected_planner", **bounds),
    )
    if subtasks is None:
        subtasks = fallback_subtasks(ctx)
        failures.append(
            Failure(
                "subtask_list", "no usable subtask list in two replies", fallback="subtasks from the question"
            )
        )
    return subtasks, StepRecord(tags.SUBTASK_LIST, subtasks, failures)
