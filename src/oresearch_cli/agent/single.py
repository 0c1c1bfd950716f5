"""The single-model research loop: one model writes a whole O-Researcher trace; the environment
answers its tool calls. `ores rl` (rollouts), `ores eval run --model` and the agent server run on it.

    from oresearch_cli.agent.generators import load_engine_generator
    from oresearch_cli.agent.single import LoopBudget, research

    async with load_engine_generator(checkpoint) as model, open_toolbox(ws, search="local:wiki") as tools:
        episode = await research(question, model, tools, budget=LoopBudget(max_tool_calls=8))
    episode.report, episode.stop_reason, episode.problems
    episode.prompt_ids, episode.completion_ids, episode.logprobs, episode.env_mask  # a GRPO rollout

The model generates until a tool tag closes or the report does (`trace.tags.STOP_STRINGS`); the
call is read with `trace.pending_tool_call` and run through the toolbox; its observation block
(`trace.tags.observation_block`, tag-escaped) is appended by the environment; generation goes on.
Tool calls, model turns (generator calls), model-written tokens, tokens per turn, the context
length and wall seconds bound it; `Episode.stop_reason` says which ended it.

Token layout, the one `ores sft` trains on (train/examples.py): the prompt is the chat template
with the generation prompt; then each model turn's ids and each observation block encoded on its
own without special tokens, so no token straddles the model/environment boundary and `env_mask`
(1 = model, 0 = environment) is exact. Every turn continues from these very ids. A turn keeps the
ids the model sampled when they decode to exactly its text; when they do not (the last token ran
past the stop string, as `>\\n` does past `</web_search>`, or the text was cut) the text is
re-encoded, and only the log probs of the leading ids both encodings share survive (same context,
same token: same log prob); the rest are None, never made up. The chat template's end of turn is
never part of the completion: generation stops at `</suggested_answer>`.

Decisions:

* Observations are the environment's alone. `<observation>` is a stop string too, so generation
  stops where the model starts writing one; an observation tag in any spelling cuts the turn
  before it, and the episode ends (`fake_observation`): going on would have a greedy model write
  the same again, and in RL the missing report is the penalty. (A server that does not say which
  stop matched, like `ores serve`, makes this look like a turn without a call: `no_tool_call`.)
* A tool call beyond `max_tool_calls` is not run. The environment answers it once with a notice
  that the budget is spent and the report is due; a further call ends the episode
  (`max_tool_calls`). One notice turns the research already done into a report (what eval scores
  and what the RL reward needs) instead of throwing it away; only one, so a model that ignores it
  cannot loop.
* A turn that reaches `max_turn_tokens` ends the episode (`max_turn_tokens`): one turn that long
  is a model repeating itself, or a report longer than is worth keeping. A report is one turn, so
  the default leaves room for a long one.
* Generator errors (an unreachable endpoint) raise `GeneratorError`; tool failures never raise:
  they are observation text the model reads, and `Episode.tool_errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from oresearch_cli.agent.generators import Generation, Generator, SamplingParams
from oresearch_cli.agent.prompts import phrase
from oresearch_cli.agent.protocol import messages, protocol_language
from oresearch_cli.errors import ConfigError
from oresearch_cli.server.engine import FINISH_LENGTH
from oresearch_cli.tools.base import Observation
from oresearch_cli.tools.summarize import SummaryContext
from oresearch_cli.trace import (
    STOP_STRINGS,
    CrawlPage,
    Problem,
    Think,
    Trace,
    WebSearch,
    escape_tags,
    is_valid,
    observation_block,
    parse,
    pending_tool_call,
    tags,
    validate,
)

__all__ = ["Episode", "LoopBudget", "Span", "StopReason", "Tools", "research"]

StopReason = Literal[
    "answered",  # the report closed
    "max_tool_calls",  # a tool call after the budget notice
    "max_turns",
    "max_new_tokens",
    "max_turn_tokens",
    "max_seconds",
    "context",  # the model's context length is full
    "no_tool_call",  # the model ended its turn with neither a tool call nor a report
    "fake_observation",  # the model began writing an observation itself
]

TOOL_STOPS = {
    tags.close_tag(tags.WEB_SEARCH): tags.WEB_SEARCH,
    tags.close_tag(tags.CRAWL_PAGE): tags.CRAWL_PAGE,
}
REPORT_STOP = tags.close_tag(tags.SUGGESTED_ANSWER)
FAKE_OBSERVATION = tags.open_tag(tags.OBSERVATION)
# Four strings: the most OpenAI's API (and `ores serve`) accepts.
LOOP_STOPS = (*STOP_STRINGS, FAKE_OBSERVATION)
BUDGET_TOOL = "budget"  # `Span.tool` of the notice that answers a call beyond the budget

_BUDGET_NOTICE = {
    "en": (
        "Tool budget spent: this call was not run, and no more web_search or crawl_page calls are "
        "possible. Answer from the observations above: finish the subtask answers and write the "
        "final report (suggested_answer) now."
    ),
    "zh": (
        "工具调用次数已用完：这次调用没有执行，之后也不能再调用 web_search 或 crawl_page。"
        "请根据上面的观察结果完成子任务回答，并立即写出最终报告（suggested_answer）。"
    ),
}


def budget_notice(language: str) -> str:
    """The observation that answers a tool call beyond the budget."""
    return _BUDGET_NOTICE.get(language, _BUDGET_NOTICE["en"])


@dataclass(frozen=True)
class LoopBudget:
    """Bounds and sampling of one episode.

    `max_tool_calls`: tools run; `max_turns`: generator calls (model turns); `max_new_tokens`:
    model-written tokens in all; `max_turn_tokens`: per turn (a report is one turn);
    `max_seconds`: wall clock, a turn or tool call in flight included; `max_context_tokens`: the
    prompt and everything after it (below the model's own limit: a training step's memory grows
    with it, and a rollout past a few thousand tokens is mostly observations). `seed`: turn n samples
    with `seed + n`, so an episode repeats and its turns differ.
    """

    max_tool_calls: int = 16
    max_turns: int = 40
    max_new_tokens: int = 8192
    max_turn_tokens: int = 4096
    max_seconds: float = 900.0
    max_context_tokens: int | None = None  # prompt + completion; None: the model's context length
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"loop budget: {name}={getattr(self, name)!r} must be {rule}; change it")

        if self.max_tool_calls < 0:
            raise bad("max_tool_calls", "0 or more")
        for name in ("max_turns", "max_new_tokens", "max_turn_tokens"):
            if getattr(self, name) < 1:
                raise bad(name, "1 or more")
        if self.max_context_tokens is not None and self.max_context_tokens < 1:
            raise bad("max_context_tokens", "1 or more, or None for the model's own limit")
        if not self.max_seconds > 0:
            raise bad("max_seconds", "above 0")
        if not 0 <= self.temperature <= 2:
            raise bad("temperature", "from 0 (greedy) to 2")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "above 0 and at most 1")


@dataclass(frozen=True)
class Span:
    """One stretch of the completion: a model turn or an observation block (`completion_ids[start:end]`).

    `sampled`: a model turn whose ids are the ones the model sampled (False: re-encoded from its
    text, or from a generator that returns text only). `tool`: for an observation block, the tool
    that answered (`budget` for the notice).
    """

    text: str
    by_model: bool
    start: int
    end: int
    sampled: bool = False
    tool: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_model": self.by_model,
            "start": self.start,
            "end": self.end,
            "sampled": self.sampled,
            "tool": self.tool,
            "chars": len(self.text),
        }


class Tools(Protocol):
    """What the loop needs of `tools.Toolbox`: run one call, never raising a tool failure."""

    async def call(self, tool: str, argument: str, context: SummaryContext | None = None) -> Observation: ...


@dataclass
class Episode:
    """One research episode: the text the model and environment wrote (without the prompt), its
    trace and problems, and the tokens.

    `completion_ids`, `env_mask` (1 = model token, 0 = environment token) and `logprobs` (None for
    environment tokens and for model tokens whose log prob is unknown) are aligned; decoded one
    span at a time they give back `text`.
    """

    question: str
    language: str  # the protocol language of the prompt
    text: str
    trace: Trace
    problems: list[Problem]
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    logprobs: list[float | None]
    spans: list[Span]
    n_tool_calls: int
    n_turns: int
    stop_reason: StopReason
    seconds: float
    tool_errors: list[str] = field(default_factory=list)
    generator: str = ""

    @property
    def report(self) -> str | None:
        return self.trace.report.text if self.trace.report is not None else None

    @property
    def n_model_tokens(self) -> int:
        return sum(self.env_mask)

    @property
    def has_logprobs(self) -> bool:
        """Every model token has its log prob (what importance-sampling corrections need)."""
        return all(lp is not None for lp, m in zip(self.logprobs, self.env_mask, strict=True) if m)

    @property
    def valid(self) -> bool:
        return is_valid(self.problems)

    def to_dict(self, *, tokens: bool = False) -> dict[str, Any]:
        """For logs: counts, text, report and problems; with `tokens`, the ids, mask and log probs too."""
        data: dict[str, Any] = {
            "question": self.question,
            "language": self.language,
            "generator": self.generator,
            "stop_reason": self.stop_reason,
            "n_tool_calls": self.n_tool_calls,
            "n_turns": self.n_turns,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.completion_ids),
            "model_tokens": self.n_model_tokens,
            "has_logprobs": self.has_logprobs,
            "seconds": round(self.seconds, 3),
            "valid": self.valid,
            "problems": [p.to_dict() for p in self.problems],
            "tool_errors": list(self.tool_errors),
            "text": self.text,
            "report": self.report,
            "spans": [s.to_dict() for s in self.spans],
        }
        if tokens:
            data |= {
                "prompt_ids": list(self.prompt_ids),
                "completion_ids": list(self.completion_ids),
                "env_mask": list(self.env_mask),
                "logprobs": list(self.logprobs),
            }
        return data


def settle_turn(generation: Generation) -> tuple[str, str | None, bool]:
    """(the turn's text, the stop string that ended it, whether it began a fake observation).

    The stop string goes back into the text (servers leave it out); a stop tag's text ends right
    after it. An observation tag the model wrote (any spelling) cuts the text before it.
    """
    text = generation.text
    stop = generation.stop
    fake = stop == FAKE_OBSERVATION
    if stop in STOP_STRINGS:
        text += stop
    else:
        stop = None
    for match in tags.TAG_RE.finditer(text):
        if match.lastgroup == tags.OBSERVATION:
            return text[: match.start()], None, True
    return text, stop, fake


def _call_argument(call: WebSearch | CrawlPage | None, tool: str) -> tuple[str, str]:
    """(tool, argument) for `Toolbox.call` from the parsed call; an unreadable call gets an empty
    argument, which the toolbox answers with its usage message."""
    if isinstance(call, WebSearch):
        queries = " | ".join(call.queries)
        return tags.WEB_SEARCH, f"{queries}&serp_num={call.count}" if queries else ""
    if isinstance(call, CrawlPage):
        return tags.CRAWL_PAGE, " | ".join(call.urls)
    return tool, ""


def _summary_context(trace: Trace, question: str) -> SummaryContext:
    """What the model was after when it crawled: its last think and search, and its subtask."""
    think = query = ""
    for _, step in trace.steps():
        if isinstance(step, Think):
            think = step.text
        elif isinstance(step, WebSearch):
            query = " | ".join(step.queries)
    task = trace.subtasks[-1].question if trace.subtasks else question
    return SummaryContext(think=think, query=query, task=task)


class _Rollout:
    """The episode being written: text, ids, mask, log probs and spans, kept aligned."""

    def __init__(self, generator: Generator, on_span: Callable[[Span], object] | None) -> None:
        self.generator = generator
        self.on_span = on_span
        self.parts: list[str] = []
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float | None] = []
        self.spans: list[Span] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _add(self, text: str, ids: Sequence[int], logprobs: Sequence[float | None], span: Span) -> None:
        self.parts.append(text)
        self.ids += ids
        self.mask += [1 if span.by_model else 0] * len(ids)
        self.logprobs += logprobs
        self.spans.append(span)
        if self.on_span is not None:
            self.on_span(span)

    def add_model(self, generation: Generation, text: str) -> None:
        if not text:
            return
        start = len(self.ids)
        sampled = generation.token_ids
        if sampled is not None and self.generator.decode(sampled) == text:
            ids = list(sampled)
            known = generation.logprobs if generation.logprobs is not None else ()
            logprobs: list[float | None] = list(known) if len(known) == len(ids) else [None] * len(ids)
            self._add(text, ids, logprobs, Span(text, True, start, start + len(ids), sampled=True))
            return
        ids = self.generator.encode(text)
        logprobs = [None] * len(ids)
        if sampled is not None and generation.logprobs is not None:
            for k, (ours, theirs) in enumerate(zip(ids, sampled, strict=False)):
                if ours != theirs or k >= len(generation.logprobs):
                    break
                logprobs[k] = generation.logprobs[k]
        self._add(text, ids, logprobs, Span(text, True, start, start + len(ids)))

    def add_env(self, observation: str, tool: str) -> None:
        text = observation_block(observation)
        ids = self.generator.encode(text)
        start = len(self.ids)
        self._add(text, ids, [None] * len(ids), Span(text, False, start, start + len(ids), tool=tool))


class _Loop:
    def __init__(
        self,
        question: str,
        generator: Generator,
        toolbox: Tools,
        language: str,
        budget: LoopBudget,
        on_span: Callable[[Span], object] | None,
    ) -> None:
        self.question = question
        self.generator = generator
        self.toolbox = toolbox
        self.language = language
        self.budget = budget
        self.started = time.monotonic()
        self.prompt_ids = generator.prompt_ids(messages(question, language))
        self.rollout = _Rollout(generator, on_span)
        self.n_turns = 0
        self.n_tool_calls = 0
        self.n_model_tokens = 0
        self.notice_given = False
        self.tool_errors: list[str] = []

    def _seconds_left(self) -> float:
        return self.budget.max_seconds - (time.monotonic() - self.started)

    def _turn_limit(self) -> tuple[int, StopReason]:
        """The most tokens the next turn may write, and the bound that sets it (episode bounds first)."""
        limits: list[tuple[int, StopReason]] = [
            (self.budget.max_new_tokens - self.n_model_tokens, "max_new_tokens")
        ]
        known = [n for n in (self.generator.context_length, self.budget.max_context_tokens) if n]
        context = min(known) if known else None
        if context:
            limits.append((context - len(self.prompt_ids) - len(self.rollout.ids), "context"))
        limits.append((self.budget.max_turn_tokens, "max_turn_tokens"))
        least = min(n for n, _ in limits)
        return least, next(reason for n, reason in limits if n == least)

    async def run(self) -> StopReason:
        budget = self.budget
        while True:
            if self.n_turns >= budget.max_turns:
                return "max_turns"
            if self._seconds_left() <= 0:
                return "max_seconds"
            max_tokens, bound = self._turn_limit()
            if max_tokens <= 0:
                return bound
            seed = None if budget.seed is None else budget.seed + self.n_turns
            params = SamplingParams(max_tokens, budget.temperature, budget.top_p, seed, LOOP_STOPS)
            ids = self.prompt_ids + self.rollout.ids
            try:
                generation = await asyncio.wait_for(
                    self.generator.generate(ids, params), timeout=self._seconds_left()
                )
            except asyncio.TimeoutError:
                return "max_seconds"
            self.n_turns += 1
            text, stop, fake = settle_turn(generation)
            before = len(self.rollout.ids)
            self.rollout.add_model(generation, text)
            self.n_model_tokens += len(self.rollout.ids) - before
            if fake:
                return "fake_observation"
            if stop in TOOL_STOPS:
                if self.n_tool_calls >= budget.max_tool_calls:
                    if self.notice_given:
                        return "max_tool_calls"
                    self.notice_given = True
                    self.rollout.add_env(escape_tags(budget_notice(self.language)), BUDGET_TOOL)
                    continue
                if not await self._run_call(TOOL_STOPS[stop]):
                    return "max_seconds"
                continue
            if stop == REPORT_STOP or parse(self.rollout.text).report is not None:
                return "answered"
            if generation.finish_reason == FINISH_LENGTH:
                return bound
            return "no_tool_call"

    async def _run_call(self, tool: str) -> bool:
        """Run the call that ended the turn and append its observation; False when time ran out."""
        trace = parse(self.rollout.text)
        tool, argument = _call_argument(pending_tool_call(trace), tool)
        try:
            observation = await asyncio.wait_for(
                self.toolbox.call(tool, argument, _summary_context(trace, self.question)),
                timeout=max(self._seconds_left(), 0.001),
            )
        except asyncio.TimeoutError:
            return False
        self.n_tool_calls += 1
        self.tool_errors += [f"{observation.tool}: {error}" for error in observation.errors]
        text = escape_tags(observation.text.strip()) or phrase(self.language, "no_output")
        self.rollout.add_env(text, tool)
        return True


async def research(
    question: str,
    generator: Generator,
    toolbox: Tools,
    *,
    language: str | None = None,
    budget: LoopBudget | None = None,
    on_span: Callable[[Span], object] | None = None,
) -> Episode:
    """Research `question` with one model writing the whole trace; see the module docstring.

    `language` picks the protocol prompt (`zh-cn` -> `zh`; default English). `on_span` is called
    with each model turn and observation block as it is added (to stream steps). Raises
    `GeneratorError` when the generator fails; tool failures are observations, but a search or
    crawl API that rejects its key raises `BackendAuthError` (every later call would fail too).
    """
    loop = _Loop(question, generator, toolbox, protocol_language(language), budget or LoopBudget(), on_span)
    reason = await loop.run()
    rollout = loop.rollout
    text = rollout.text
    trace = parse(text)
    return Episode(
        question=question,
        language=loop.language,
        text=text,
        trace=trace,
        problems=validate(trace),
        prompt_ids=list(loop.prompt_ids),
        completion_ids=rollout.ids,
        env_mask=rollout.mask,
        logprobs=rollout.logprobs,
        spans=rollout.spans,
        n_tool_calls=loop.n_tool_calls,
        n_turns=loop.n_turns,
        stop_reason=reason,
        seconds=time.monotonic() - loop.started,
        tool_errors=loop.tool_errors,
        generator=getattr(generator, "name", type(generator).__name__),
    )
