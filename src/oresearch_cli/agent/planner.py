"""The planner: the question -> 2-6 orthogonal subtasks (the `<subtask_list>`)."""

from __future__ import annotations

from oresearch_cli.agent.context import Context, Failure
from oresearch_cli.agent.pieces import SUBTASKS_SCHEMA, clean_subtask, parse_subtasks
from oresearch_cli.agent.steps import StepRecord
from oresearch_cli.llm import ChatResult
from oresearch_cli.trace import tags


def fallback_subtasks(ctx: Context) -> list[str]:
    """Subtasks derived from the question when the planner's replies were unusable twice."""
    question = " ".join(ctx.question.split())
    subtasks = [clean_subtask(ctx.phrase(f"fallback_subtask_{i}", question=question)) for i in (1, 2)]
    return subtasks[: max(1, ctx.options.max_subtasks)]


async def plan_subtasks(ctx: Context) -> tuple[list[str], StepRecord]:
    """(subtasks, the record of this step: the `<subtask_list>` and its log entry)."""
    opts = ctx.options
    bounds = {"min_subtasks": opts.min_subtasks, "max_subtasks": opts.max_subtasks}

    def parse(result: ChatResult) -> list[str]:
        return parse_subtasks(result.text, min_items=opts.min_subtasks, max_items=opts.max_subtasks)

    subtasks, failures = await ctx.ask(
        "planner",
        "planner",
        {"question": ctx.question, **bounds},
        parse,
        schema=SUBTASKS_SCHEMA,
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
