"""`research()`: one question -> one trace, the O-Researcher way.

The planner splits the question into subtasks; one worker per subtask runs its think -> tool ->
observation loop (all at once, or one after another with `sequential`); the sources each worker
cited are renumbered into one list for the whole trace; the summarizer writes the report. The
orchestrator builds the `Trace` from the pieces (it never asks a model for tags), renders it with
the trace module and validates it. A trace that fails validation is returned with its problems.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from oresearch_cli.agent.context import Context, Failure, Meter, ResearchOptions
from oresearch_cli.agent.pieces import rewrite_citations
from oresearch_cli.agent.planner import plan_subtasks
from oresearch_cli.agent.prompts import prompt_language
from oresearch_cli.agent.sources import SourceBook
from oresearch_cli.agent.summarizer import write_report
from oresearch_cli.agent.worker import SubtaskRun, run_subtask
from oresearch_cli.llm import LLMClient
from oresearch_cli.tools import Toolbox
from oresearch_cli.trace import (
    Bounds,
    Problem,
    Report,
    Step,
    Subtask,
    Trace,
    is_valid,
    render,
    validate,
)

T = TypeVar("T")


@dataclass
class ResearchResult:
    trace: Trace
    text: str  # render(trace)
    report: str
    problems: list[Problem]
    usage: Meter
    failures: list[Failure]
    steps: dict[str, Any]  # structured steps: the plan, each subtask's steps, the report
    seconds: float
    subtasks: list[SubtaskRun] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return is_valid(self.problems)


async def _all(calls: list[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def merge_sources(runs: list[SubtaskRun]) -> SourceBook:
    """One numbering for the trace: sources cited in the answers first (subtask order, citation
    order), then the other pages read, then the other search results. Rewrites each answer's
    record, so the trace and the structured log both cite the merged numbers."""
    book = SourceBook()
    cited_per_run = []
    for run in runs:
        _, cited = rewrite_citations(run.answer, None, set(range(1, len(run.sources) + 1)))
        cited_per_run.append(cited)
        for number in cited:
            s = run.sources.get(number)
            book.add(s.url, s.title, s.snippet, s.crawled)
    for crawled in (True, False):
        for run in runs:
            for s in run.sources.sources:
                if s.crawled == crawled:
                    book.add(s.url, s.title, s.snippet, s.crawled)
    valid = set(range(1, len(book) + 1))
    for run in runs:
        record = run.answer_record
        if record is not None:
            mapping = {n: book.number(s.url) or -1 for n, s in enumerate(run.sources.sources, start=1)}
            record.content, _ = rewrite_citations(record.content, mapping, valid)
    return book


async def research(
    question: str,
    language: str | None,
    llm: LLMClient,
    toolbox: Toolbox,
    options: ResearchOptions | None = None,
    *,
    trace_id: str | None = None,
    meter: Meter | None = None,
    on_step: Callable[[int | None, Step | Report], object] | None = None,
) -> ResearchResult:
    """Research `question` into a trace. Raises `LLMError` when an endpoint keeps failing (after
    the client's retries); everything a weak model can get wrong becomes a recorded failure.
    `on_step` gets (subtask number or None, step) as each step is settled: the subtask list, each
    subtask's steps as its worker takes them (subtasks interleave), then the report."""
    options = options or ResearchOptions()
    options.check()
    meter = meter if meter is not None else Meter()
    ctx = Context(
        question=" ".join(question.split()),
        language=prompt_language(language),
        llm=llm,
        toolbox=toolbox,
        options=options,
        meter=meter,
        trace_id=trace_id,
        affinity=trace_id,
        on_step=on_step,
    )
    started = time.perf_counter()
    subtasks, plan_record = await plan_subtasks(ctx)
    ctx.emit(None, plan_record.to_trace_step())
    if options.sequential:
        runs = [await run_subtask(ctx, i, s) for i, s in enumerate(subtasks, start=1)]
    else:
        runs = await _all([run_subtask(ctx, i, s) for i, s in enumerate(subtasks, start=1)])
    book = merge_sources(runs)
    report, report_record = await write_report(ctx, [(r.question, r.answer) for r in runs], book)
    ctx.emit(None, Report(report))

    subtask_list = plan_record.to_trace_step()
    trace = Trace(
        preamble=[subtask_list] if subtask_list is not None else [],
        subtasks=[Subtask(r.question, r.steps) for r in runs],
        report=Report(report),
    )
    text = render(trace)
    problems = validate(text, Bounds(options.min_tool_calls, options.max_tool_calls))
    failures = [*plan_record.failures, *(f for r in runs for f in r.failures), *report_record.failures]
    steps = {
        "subtask_list": plan_record.to_log(),
        "subtasks": [
            {
                "index": r.index,
                "question": r.question,
                "n_tool_calls": r.n_calls,
                "n_steps": r.n_steps,
                "started_s": round(r.started, 3),
                "finished_s": round(r.finished, 3),
                "steps": r.log,
            }
            for r in runs
        ],
        "report": report_record.to_log(),
        "sources": [{"n": n, "url": s.url, "title": s.title} for n, s in enumerate(book.sources, start=1)],
    }
    return ResearchResult(
        trace=trace,
        text=text,
        report=report,
        problems=problems,
        usage=meter,
        failures=failures,
        steps=steps,
        seconds=time.perf_counter() - started,
        subtasks=runs,
    )


__all__ = ["ResearchOptions", "ResearchResult", "merge_sources", "research"]
