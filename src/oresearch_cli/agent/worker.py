"""A worker: one subtask, as Think -> (Plan) -> tool call -> Observation steps, then the answer.

Each step asks the worker role for one piece (a thought, on the first step a plan, and an action:
search queries, URLs from the sources seen, or answer); the orchestrator runs the tool and writes
the trace steps itself. Bounds, enforced here rather than hoped for:

* at most `max_steps` steps and `max_tool_calls` tool calls; reaching either forces the answer;
* at least `min_tool_calls`: a step that answers too early is asked once more with an explicit
  instruction to call a tool; if it still answers (or its replies are unusable), the orchestrator
  makes the call itself: a search for the subtask's content words first, then reading the unread
  search result that best matches them, then a search for the question's content words and
  broader ones, never the same query twice while another is left (`agent.fallbacks`). Each such
  fallback is recorded as a failure.
* an unusable step reply once the minimum is met ends the loop and goes to the answer.

The answer cites the worker's numbered sources; if it is unusable twice, it is built from the
observed sentences most relevant to the subtask (each cited), recorded as a failure. A thought,
plan or answer in another language than a Chinese question's is unusable (`pieces.written_in`):
the retry says so, and the fallbacks write in the question's language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oresearch_cli.agent.context import Context, Failure
from oresearch_cli.agent.fallbacks import (
    ObservedSource,
    best_unread,
    broader_queries,
    fallback_answer,
    fallback_query,
)
from oresearch_cli.agent.pieces import (
    ACTIONS,
    ANSWER,
    CRAWL,
    SEARCH,
    PieceError,
    StepPiece,
    parse_answer,
    parse_step,
    written_in,
)
from oresearch_cli.agent.schemas import schema, step_schema
from oresearch_cli.agent.sources import SourceBook
from oresearch_cli.agent.steps import STEP_FAILED, StepRecord
from oresearch_cli.llm import ChatResult
from oresearch_cli.tools import SummaryContext
from oresearch_cli.trace import Step, escape_tags, tags

OLD_OBS_CHARS = 300


@dataclass
class SubtaskRun:
    """One finished subtask: one record per step (its trace steps and structured log both come
    from them), its sources and failures."""

    index: int  # 1-based
    question: str
    records: list[StepRecord] = field(default_factory=list)
    sources: SourceBook = field(default_factory=SourceBook)
    failures: list[Failure] = field(default_factory=list)
    n_calls: int = 0
    n_steps: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def steps(self) -> list[Step]:
        """The trace steps, in order."""
        return [step for r in self.records if (step := r.to_trace_step()) is not None]

    @property
    def log(self) -> list[dict[str, Any]]:
        """The entries of the structured `steps` log, in order."""
        return [r.to_log() for r in self.records]

    @property
    def answer_record(self) -> StepRecord | None:
        return next((r for r in reversed(self.records) if r.kind == tags.SUBTASK_ANSWER), None)

    @property
    def answer(self) -> str:
        record = self.answer_record
        return record.content if record is not None else ""


@dataclass
class _Turn:
    """One step as the worker sees it in its next prompt."""

    thought: str
    plan: str
    call: str
    result: str


class Worker:
    def __init__(self, ctx: Context, index: int, subtask: str) -> None:
        self.ctx = ctx
        self.opts = ctx.options
        self.run = SubtaskRun(index=index, question=subtask)
        self.turns: list[_Turn] = []
        self.searched: list[str] = []

    def _add(self, *records: StepRecord) -> None:
        """Settle steps: into the run's records, and out to whoever streams the research."""
        for record in records:
            self.run.records.append(record)
            self.ctx.emit(self.run.index, record.to_trace_step())

    # -- prompts ---------------------------------------------------------------------------------

    def _history(self) -> str:
        ctx = self.ctx
        if not self.turns:
            return ctx.phrase("history_none") + "\n"
        blocks = []
        for number, turn in enumerate(self.turns, start=1):
            recent = number > len(self.turns) - 2
            limit = self.opts.history_chars if recent else OLD_OBS_CHARS
            result = turn.result if len(turn.result) <= limit else turn.result[:limit].rstrip() + " ..."
            lines = [f"{ctx.phrase('step_label')} {number}", f"{ctx.phrase('thought_label')}: {turn.thought}"]
            if turn.plan:
                lines.append(f"{ctx.phrase('plan_label')}: {turn.plan}")
            lines += [turn.call, f"{ctx.phrase('result_label')}:", result]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n"

    def _step_values(self, instruction: str) -> dict[str, object]:
        ctx, opts = self.ctx, self.opts
        first = not self.turns
        return {
            "question": ctx.question,
            "subtask": self.run.question,
            "history": self._history(),
            "sources": self.run.sources.render(limit=40, empty=ctx.phrase("sources_none")),
            "n_calls": self.run.n_calls,
            "min_tool_calls": opts.min_tool_calls,
            "max_tool_calls": opts.max_tool_calls,
            "plan_field": ctx.phrase("plan_field") if first else "",
            "instruction": instruction,
        }

    def _allowed_actions(self) -> tuple[str, ...]:
        """The actions a step may choose now: no answer below the minimum of tool calls."""
        if self.run.n_calls < self.opts.min_tool_calls:
            return (SEARCH, CRAWL)
        return ACTIONS

    async def _ask_step(self, instruction: str, step: int) -> tuple[StepPiece | None, list[Failure]]:
        ctx = self.ctx
        first = not self.turns

        def parse(result: ChatResult) -> StepPiece:
            piece = parse_step(result.text, sources=self.run.sources.urls, need_plan=first)
            if not (written_in(piece.thought, ctx.language) and written_in(piece.plan, ctx.language)):
                raise PieceError(ctx.phrase("not_in_language"))
            return piece

        return await ctx.ask(
            "worker",
            "step",
            self._step_values(instruction),
            parse,
            schema=step_schema(
                actions=self._allowed_actions(), n_sources=len(self.run.sources.urls), need_plan=first
            ),
            expected=ctx.phrase("expected_step", plan_field=ctx.phrase("plan_field") if first else ""),
            subtask=self.run.index,
            step=step,
        )

    # -- fallbacks -------------------------------------------------------------------------------

    def _observed(self, crawled: bool | None = None) -> list[ObservedSource]:
        """The worker's sources as the fallbacks read them, pages read first; `crawled` filters."""
        numbered = enumerate(self.run.sources.sources, start=1)
        return [
            ObservedSource(n, s.title, s.snippet)
            for n, s in sorted(numbered, key=lambda p: (not p[1].crawled, p[0]))
            if crawled is None or s.crawled == crawled
        ]

    def _fallback_step(self) -> StepPiece:
        """A search for the subtask's content words; else reading the unread result that best
        matches them; else a search for the question's content words, then broader ones (fewer
        words) not searched yet; else any unread result; else the question's query again."""
        ctx = self.ctx
        unread = self._observed(crawled=False)
        subtask_query = fallback_query(self.run.question, ctx.language)
        question_queries = broader_queries(ctx.question, ctx.language) or [subtask_query]
        fresh = [q for q in question_queries if q not in self.searched]
        best = best_unread(self.run.question, unread, ctx.language)
        if subtask_query and subtask_query not in self.searched:
            query = subtask_query
        elif best is not None or (unread and not fresh):
            url = self.run.sources.get(best if best is not None else unread[0].number).url
            return StepPiece(ctx.phrase("fallback_think_crawl", url=url), CRAWL, urls=[url])
        else:
            query = fresh[0] if fresh else question_queries[0]
        return StepPiece(ctx.phrase("fallback_think_search", queries=query), SEARCH, queries=[query])

    def _fallback_answer(self) -> str:
        """The observed sentences most relevant to the subtask, cited (`fallbacks.fallback_answer`).
        The question's words count too: a weak planner's subtask may say nothing of the topic."""
        topic = f"{self.run.question}\n{self.ctx.question}"
        answer = fallback_answer(topic, self._observed(), self.ctx.language)
        return answer or self.ctx.phrase("no_output")

    # -- the loop --------------------------------------------------------------------------------

    async def _tool(self, piece: StepPiece) -> tuple[StepRecord, str, Any]:
        ctx, opts = self.ctx, self.opts
        if piece.action == SEARCH:
            self.searched += piece.queries
            call = StepRecord(tags.WEB_SEARCH, list(piece.queries), count=opts.serp_num)
            obs = await ctx.toolbox.web_search(list(piece.queries), num=opts.serp_num)
            label = f"{ctx.phrase('search_label')}: {' | '.join(piece.queries)}"
        else:
            call = StepRecord(tags.CRAWL_PAGE, list(piece.urls))
            context = SummaryContext(
                think=piece.thought, query=" | ".join(self.searched[-3:]), task=self.run.question
            )
            obs = await ctx.toolbox.crawl_page(list(piece.urls), context=context)
            label = f"{ctx.phrase('crawl_label')}: {' | '.join(piece.urls)}"
        return call, label, obs

    async def research(self) -> SubtaskRun:
        ctx, opts, run = self.ctx, self.opts, self.run
        forced: str | None = None
        while True:
            if run.n_calls >= opts.max_tool_calls:
                forced = f"reached max_tool_calls={opts.max_tool_calls}"
                break
            if run.n_steps >= opts.max_steps:
                forced = f"reached max_steps={opts.max_steps}"
                break
            run.n_steps += 1
            step = run.n_steps
            first = not self.turns
            instruction = ctx.phrase("instruction_first" if first else "instruction_next")
            piece, failures = await self._ask_step(instruction, step)
            below_min = run.n_calls < opts.min_tool_calls
            if piece is not None and piece.action == ANSWER and below_min:
                failures.append(
                    Failure(
                        "min_tool_calls",
                        f"answered after {run.n_calls} tool calls, below min_tool_calls={opts.min_tool_calls}; asked again",
                        subtask=run.index,
                        step=step,
                    )
                )
                piece, more = await self._ask_step(
                    ctx.phrase("instruction_more", min_tool_calls=opts.min_tool_calls), step
                )
                failures += more
                if piece is not None and piece.action == ANSWER:
                    failures.append(
                        Failure(
                            "min_tool_calls", "answered again below the minimum", subtask=run.index, step=step
                        )
                    )
                    piece = None
            if piece is None:
                if not below_min:
                    failures.append(
                        Failure("step", "no usable step; answering with the sources so far", subtask=run.index,
                                step=step, fallback="answer")
                    )  # fmt: skip
                    run.failures += failures
                    self._add(StepRecord(STEP_FAILED, None, list(failures)))
                    break
                piece = self._fallback_step()
                failures.append(
                    Failure("step", "no usable step below min_tool_calls", subtask=run.index, step=step,
                            fallback=f"{piece.action} chosen by the orchestrator")
                )  # fmt: skip
            run.failures += failures
            self._add(StepRecord(tags.THINK, piece.thought, list(failures)))
            if piece.action == ANSWER:
                break
            plan = ""
            if first:
                plan = piece.plan
                plan_failures = []
                if not plan:
                    plan = ctx.phrase("fallback_plan")
                    plan_failures.append(
                        Failure("plan", "the first step has no plan", subtask=run.index, step=step,
                                fallback="generic plan")
                    )  # fmt: skip
                    run.failures += plan_failures
                self._add(StepRecord(tags.PLAN, plan, plan_failures))
            call, label, obs = await self._tool(piece)
            run.n_calls += 1
            run.sources.add_observation(obs)
            text = escape_tags(obs.text.strip()) or ctx.phrase("no_output")
            self._add(call, StepRecord(tags.OBSERVATION, text, errors=list(obs.errors)))
            self.turns.append(_Turn(piece.thought, plan, label, text))
        await self._answer(forced)
        return run

    def _observations(self) -> str:
        budget = self.opts.answer_context_chars
        parts = []
        for turn in reversed(self.turns):
            chunk = f"{turn.call}\n{turn.result}"
            if len(chunk) > budget:
                chunk = chunk[: max(budget, 0)]
            if not chunk:
                break
            parts.append(chunk)
            budget -= len(chunk)
        return "\n\n".join(reversed(parts)) or self.ctx.phrase("no_output")

    async def _answer(self, forced: str | None) -> None:
        ctx, run = self.ctx, self.run
        n_sources = len(run.sources)
        answer: str | None = None
        failures: list[Failure] = []
        if n_sources:

            def parse(result: ChatResult) -> str:
                answer = parse_answer(result.text, n_sources, truncated=result.truncated)
                if not written_in(answer, ctx.language):
                    raise PieceError(ctx.phrase("not_in_language"))
                return answer

            answer, failures = await ctx.ask(
                "worker",
                "answer",
                {
                    "question": ctx.question,
                    "subtask": run.question,
                    "sources": run.sources.render(snippets=True),
                    "observations": self._observations(),
                },
                parse,
                schema=schema("answer", n_sources=n_sources),
                expected=ctx.phrase("expected_answer"),
                subtask=run.index,
                step=run.n_steps + 1,
            )
        if answer is None:
            answer = self._fallback_answer()
            reason = "no usable answer in two replies" if n_sources else "no sources were observed"
            failures.append(
                Failure("answer", reason, subtask=run.index, step=run.n_steps + 1,
                        fallback="answer built from the observed snippets")
            )  # fmt: skip
        run.failures += failures
        self._add(StepRecord(tags.SUBTASK_ANSWER, answer, list(failures), forced=forced))


async def run_subtask(ctx: Context, index: int, subtask: str) -> SubtaskRun:
    """Research subtask `index` (1-based) to its answer."""
    import time

    worker = Worker(ctx, index, subtask)
    worker.run.started = time.perf_counter() - ctx.started
    run = await worker.research()
    run.finished = time.perf_counter() - ctx.started
    return run
