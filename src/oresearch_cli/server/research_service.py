"""The research agent behind `ores serve --agent`, without HTTP: a request in, events out as the
research goes, a finished research (report, sources, trace, usage) and its workspace row at the end.

Two systems answer, both through the loops the rest of ores runs:

* `SingleModelAgent`: one model writes the whole trace (`agent.single.research`, the loop `ores rl`
  and `ores eval run --model` run), on an in-process engine or a served `/v1/completions`.
* `WorkflowAgent`: planner, parallel workers and summarizer over the configured endpoints
  (`agent.workflow.research`, the workflow `ores synth` runs).

Events are the same for both, read off the trace steps as they settle: `subtasks`, one `step` per
think / plan / tool call / observation (an observation as a short summary), `subtask_answer`, then
`report` chunks once the report is written (a turn reaches the loop whole, so the report arrives in
paragraph-sized chunks after it is done, not token by token).

Budgets: a request may lower the server's limits (`ResearchBudget`), never raise them. The single
model spends them as `LoopBudget` does (tool calls, model turns, written tokens, seconds). The
workflow's tool calls and steps are per subtask, as in `ores synth`; its tokens are what its roles
wrote, and past them the research stops (`stop_reason` "max_tokens", no report).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from oresearch_cli.agent.context import Meter, ResearchOptions
from oresearch_cli.agent.generators import Generator, GeneratorError
from oresearch_cli.agent.single import LoopBudget, Span, Tools
from oresearch_cli.errors import ConfigError
from oresearch_cli.llm import ChatResult, LLMClient, LLMError
from oresearch_cli.stages.research_run import SeedItem
from oresearch_cli.stages.single_model import episode_record
from oresearch_cli.stages.synth import TraceRecord, fill_from_result, fill_usage
from oresearch_cli.textutil import detect_language
from oresearch_cli.tools import Toolbox
from oresearch_cli.trace import (
    CrawlPage,
    Observation,
    Plan,
    Report,
    Step,
    SubtaskAnswer,
    SubtaskList,
    Text,
    Think,
    WebSearch,
    parse,
)
from oresearch_cli.trace.report import analyze_report

OBSERVATION_SUMMARY_CHARS = 300  # of an observation, in its `step` event
REPORT_CHUNK_CHARS = 400  # a `report` event carries about this much (whole paragraphs where they fit)

Emit = Callable[["ResearchEvent"], None]


@dataclass(frozen=True)
class ResearchBudget:
    """What one research may spend; None: the server's limit. For the workflow, tool calls and
    steps are per subtask."""

    max_tool_calls: int | None = None
    max_steps: int | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None

    def within(self, limits: ResearchBudget) -> ResearchBudget:
        """This budget with the server's `limits` filled in; a value above its limit raises
        `ConfigError` naming both (a request can lower a limit, never raise it)."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            asked, limit = getattr(self, item.name), getattr(limits, item.name)
            if asked is not None and limit is not None and asked > limit:
                raise ConfigError(
                    f"{item.name}={asked:g} is above this server's limit of {limit:g}; ask for at most {limit:g}"
                )
            values[item.name] = asked if asked is not None else limit
        return ResearchBudget(**values)


@dataclass(frozen=True)
class ResearchRequest:
    id: str
    question: str
    language: str | None = None  # None: detected from the question
    budget: ResearchBudget = field(default_factory=ResearchBudget)
    temperature: float | None = None  # the single model's sampling; None: the server's

    @property
    def seed(self) -> SeedItem:
        return SeedItem(self.id, self.question, self.language or detect_language(self.question))


@dataclass(frozen=True)
class ResearchEvent:
    """One step of the research as a client sees it: `type` names the server-sent event."""

    type: str  # subtasks, step, subtask_answer, report
    data: dict[str, Any]


@dataclass
class Research:
    """A finished research (or one stopped by its budget: `report` None, `stop_reason` says why)
    and the row it is recorded as."""

    request: ResearchRequest
    report: str | None
    trace: str
    valid: bool
    problems: list[dict[str, Any]]
    stop_reason: str
    prompt_tokens: int
    completion_tokens: int
    n_tool_calls: int
    n_steps: int
    seconds: float
    cost_usd: float | None
    record: TraceRecord

    @property
    def sources(self) -> list[dict[str, Any]]:
        return sources_of(self.report)

    def to_dict(self, *, include_trace: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "question": self.request.question,
            "language": self.record.language,
            "report": self.report,
            "sources": self.sources,
            "stop_reason": self.stop_reason,
            "valid": self.valid,
            "problems": self.problems,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "tool_calls": self.n_tool_calls,
                "steps": self.n_steps,
                "seconds": round(self.seconds, 3),
            },
            "cost_usd": self.cost_usd,
        }
        if include_trace:
            data["trace"] = self.trace
        return data


class ResearchAgent(Protocol):
    """What the HTTP layer needs of a research system."""

    name: str  # the system, for /v1/models and the records: `model:<name>` or `workflow`
    limits: ResearchBudget  # the server's limits, each request's default

    async def research(self, request: ResearchRequest, emit: Emit) -> Research:
        """Research `request`, calling `emit` as steps settle. Raises `OresError` when the system
        cannot answer at all (an unreachable endpoint, a rejected key); cancelling stops it."""
        ...

    def failed_record(self, request: ResearchRequest, error: str, seconds: float) -> TraceRecord:
        """The row of a research that did not finish (an error, a client that left)."""
        ...


# -- sources and events ----------------------------------------------------------------------------


def sources_of(report: str | None) -> list[dict[str, Any]]:
    """The report's reference list: number, URL, title and whether the text cites it."""
    if not report:
        return []
    analysis = analyze_report(report)
    cited = set(analysis.cited_numbers)
    return [
        {"n": ref.number, "url": ref.url, "title": ref.title, "cited": ref.number in cited}
        for ref in analysis.references
    ]


def step_event(subtask: int | None, step: Step) -> ResearchEvent | None:
    """The event for one settled trace step (None for free text between tags, and the report:
    it goes out in chunks)."""
    if isinstance(step, SubtaskList):
        return ResearchEvent("subtasks", {"subtasks": step.items})
    if isinstance(step, SubtaskAnswer):
        return ResearchEvent("subtask_answer", {"subtask": subtask, "text": step.text})
    data: dict[str, Any] = {"subtask": subtask}
    if isinstance(step, Think):
        data |= {"kind": "think", "text": step.text}
    elif isinstance(step, Plan):
        data |= {"kind": "plan", "text": step.text}
    elif isinstance(step, WebSearch):
        data |= {"kind": "web_search", "queries": list(step.queries)}
    elif isinstance(step, CrawlPage):
        data |= {"kind": "crawl_page", "urls": list(step.urls)}
    elif isinstance(step, Observation):
        text = " ".join(step.text.split())
        summary = text if len(text) <= OBSERVATION_SUMMARY_CHARS else text[:OBSERVATION_SUMMARY_CHARS] + "..."
        data |= {"kind": "observation", "summary": summary, "chars": len(step.text)}
    else:
        return None
    return ResearchEvent("step", data)


def report_chunks(report: str) -> list[str]:
    """The report in paragraph-sized pieces that join back into it exactly."""
    chunks: list[str] = []
    current = ""
    for paragraph in report.splitlines(keepends=True):
        if current and len(current) + len(paragraph) > REPORT_CHUNK_CHARS:
            chunks.append(current)
            current = ""
        current += paragraph
        while len(current) > REPORT_CHUNK_CHARS * 2:  # one huge paragraph: cut it
            chunks.append(current[:REPORT_CHUNK_CHARS])
            current = current[REPORT_CHUNK_CHARS:]
    if current:
        chunks.append(current)
    return chunks


def emit_report(report: str | None, emit: Emit) -> None:
    for chunk in report_chunks(report or ""):
        emit(ResearchEvent("report", {"delta": chunk}))


class _SpanSteps:
    """Steps of the single-model loop's text as it grows one span (a model turn, an observation
    block) at a time: each settled step is emitted once, in order."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.text = ""
        self.n_sent = 0

    def __call__(self, span: Span) -> None:
        self.text += span.text
        trace = parse(self.text)
        steps = [(n, s) for n, s in trace.steps() if not isinstance(s, Text)]
        for number, step in steps[self.n_sent :]:
            event = step_event(number, step)
            if event is not None:
                self.emit(event)
        self.n_sent = len(steps)


def failed_row(
    request: ResearchRequest, error: str, seconds: float, config_hash: str, models: Mapping[str, str]
) -> TraceRecord:
    """The row of a research that did not finish, whichever system ran it."""
    seed = request.seed
    record = TraceRecord(seed.id, seed.question, seed.language, config_hash=config_hash, error=error)
    record.models = json.dumps(dict(models), sort_keys=True)
    record.seconds = round(seconds, 3)
    return record


# -- the single model ------------------------------------------------------------------------------


class SingleModelAgent:
    """One model writing whole traces, as trained (`ores sft`/`ores rl`) or embedded."""

    def __init__(
        self,
        generator: Generator,
        tools: Tools,
        model: str,
        *,
        limits: ResearchBudget,
        loop: LoopBudget | None = None,
        config_hash: str = "",
    ) -> None:
        self.generator = generator
        self.tools = tools
        self.model = model
        self.name = f"model:{model}"
        self.limits = limits
        self.loop = loop or LoopBudget()
        self.config_hash = config_hash

    def loop_budget(self, request: ResearchRequest) -> LoopBudget:
        budget = request.budget.within(self.limits)
        base = self.loop
        tokens = budget.max_tokens if budget.max_tokens is not None else base.max_new_tokens
        return dataclasses.replace(
            base,
            max_tool_calls=budget.max_tool_calls
            if budget.max_tool_calls is not None
            else base.max_tool_calls,
            max_turns=budget.max_steps if budget.max_steps is not None else base.max_turns,
            max_new_tokens=tokens,
            max_turn_tokens=min(base.max_turn_tokens, tokens),
            max_seconds=budget.max_seconds if budget.max_seconds is not None else base.max_seconds,
            temperature=request.temperature if request.temperature is not None else base.temperature,
        )

    async def research(self, request: ResearchRequest, emit: Emit) -> Research:
        from oresearch_cli.agent.single import research

        budget = self.loop_budget(request)
        seed = request.seed
        episode = await research(
            seed.question,
            self.generator,
            self.tools,
            language=seed.language,
            budget=budget,
            on_span=_SpanSteps(emit),
        )
        emit_report(episode.report, emit)
        record = episode_record(seed, episode, self.config_hash, self.model, TraceRecord)
        return Research(
            request=request,
            report=episode.report,
            trace=episode.text,
            valid=episode.valid,
            problems=[p.to_dict() for p in episode.problems],
            stop_reason=episode.stop_reason,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            n_tool_calls=episode.n_tool_calls,
            n_steps=episode.n_turns,
            seconds=episode.seconds,
            cost_usd=None,  # a local model: no price
            record=record,
        )

    def failed_record(self, request: ResearchRequest, error: str, seconds: float) -> TraceRecord:
        return failed_row(request, error, seconds, self.config_hash, {"model": self.model})


# -- the workflow ----------------------------------------------------------------------------------


class TokenBudgetSpent(Exception):
    """The workflow's roles wrote more tokens than the request may."""


class _BudgetMeter(Meter):
    """A meter that stops the research once its roles have written more than `limit` tokens."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def add(self, result: ChatResult) -> None:
        super().add(result)
        if self.limit is not None and self.completion_tokens > self.limit:
            raise TokenBudgetSpent(f"the budget of {self.limit} written tokens is spent")


class WorkflowAgent:
    """Planner, parallel workers and summarizer over the configured endpoints (`ores synth`'s workflow)."""

    name = "workflow"

    def __init__(
        self,
        llm: LLMClient,
        toolbox: Toolbox,
        options: ResearchOptions,
        models: Mapping[str, str],
        *,
        limits: ResearchBudget,
        config_hash: str = "",
    ) -> None:
        self.llm = llm
        self.toolbox = toolbox
        self.options = options
        self.models = dict(models)
        self.limits = limits
        self.config_hash = config_hash

    def research_options(self, asked: ResearchBudget) -> ResearchOptions:
        """The workflow's bounds for one request: what it asked for, else the configured bounds
        held under the server's limits (tool calls and steps are per subtask)."""
        options = self.options
        limits = self.limits
        for name, option in (("max_tool_calls", "max_tool_calls"), ("max_steps", "max_steps")):
            value = getattr(asked, name)
            if value is None:
                limit = getattr(limits, name)
                value = getattr(options, option) if limit is None else min(getattr(options, option), limit)
            options = dataclasses.replace(options, **{option: value})
        # a lower bound above what the request allows gives way, never the other way round
        least = min(options.min_tool_calls, options.max_tool_calls, options.max_steps)
        options = dataclasses.replace(options, min_tool_calls=least)
        options.check()
        return options

    async def research(self, request: ResearchRequest, emit: Emit) -> Research:
        from oresearch_cli.agent.workflow import research

        budget = request.budget.within(self.limits)
        options = self.research_options(request.budget)
        seed = request.seed
        meter = _BudgetMeter(budget.max_tokens)
        record = TraceRecord(seed.id, seed.question, seed.language, config_hash=self.config_hash)
        started = time.perf_counter()

        def on_step(subtask: int | None, step: Step | Report) -> None:
            if isinstance(step, Step):
                event = step_event(subtask, step)
                if event is not None:
                    emit(event)

        stop_reason = "answered"
        result = None
        try:
            result = await asyncio.wait_for(
                research(
                    seed.question,
                    seed.language,
                    self.llm,
                    self.toolbox,
                    options,
                    trace_id=seed.id,
                    meter=meter,
                    on_step=on_step,
                ),
                timeout=budget.max_seconds,
            )
        except TokenBudgetSpent as exc:
            stop_reason, record.error = "max_tokens", str(exc)
        except asyncio.TimeoutError:
            stop_reason, record.error = "max_seconds", f"the time budget of {budget.max_seconds:g} s is spent"
        seconds = time.perf_counter() - started
        if result is not None:
            fill_from_result(record, result)
            emit_report(result.report, emit)
        fill_usage(record, meter, self.models, seconds)
        return Research(
            request=request,
            report=result.report if result is not None else None,
            trace=result.text if result is not None else "",
            valid=result.valid if result is not None else False,
            problems=[p.to_dict() for p in result.problems] if result is not None else [],
            stop_reason=stop_reason,
            prompt_tokens=meter.prompt_tokens,
            completion_tokens=meter.completion_tokens,
            n_tool_calls=record.n_tool_calls,
            n_steps=record.n_steps,
            seconds=seconds,
            cost_usd=meter.cost_usd,
            record=record,
        )

    def failed_record(self, request: ResearchRequest, error: str, seconds: float) -> TraceRecord:
        return failed_row(request, error, seconds, self.config_hash, self.models)


__all__ = [
    "Emit",
    "GeneratorError",
    "LLMError",
    "Research",
    "ResearchAgent",
    "ResearchBudget",
    "ResearchEvent",
    "ResearchRequest",
    "SingleModelAgent",
    "WorkflowAgent",
    "report_chunks",
    "sources_of",
    "step_event",
]
