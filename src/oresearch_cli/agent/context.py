"""What every part of the workflow shares: options, the token meter, failure records, and `ask`,
the one way a role is asked for a piece (one retry with a stricter prompt, then a failure; the
loop itself is `llm.ask_structured`, shared with the judge)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from oresearch_cli.agent.prompts import PLACEHOLDER, phrase, prompt
from oresearch_cli.llm import ChatResult, LLMClient, ReplyError, ask_structured
from oresearch_cli.tools import Toolbox
from oresearch_cli.trace import Report, Step

T = TypeVar("T")
RAW_CHARS = 300  # of a failed reply, kept in the failure record


MIN_BARE_PLACEHOLDER = 12  # characters: shorter descriptions (<标题>, <a heading>) are common words


@dataclass(frozen=True)
class ResearchOptions:
    """Bounds of one research run. `min_tool_calls`/`max_tool_calls` are per subtask; `max_steps`
    caps the worker's think -> action steps per subtask. `sequential` runs subtasks one after another."""

    max_steps: int = 10
    min_tool_calls: int = 2
    max_tool_calls: int = 8
    min_subtasks: int = 2
    max_subtasks: int = 6
    sequential: bool = False
    serp_num: int = 10
    max_sources: int = 30  # shown to the summarizer
    history_chars: int = 1500  # per observation in the worker's prompt (older ones get 300)
    answer_context_chars: int = 8000  # of observations in the answer prompt

    def check(self) -> None:
        from oresearch_cli.errors import OresError

        if not 1 <= self.min_subtasks <= self.max_subtasks:
            raise OresError("subtasks: need 1 <= min <= max; fix --max-subtasks")
        if not 0 <= self.min_tool_calls <= self.max_tool_calls:
            raise OresError(
                f"--min-tool-calls {self.min_tool_calls} is above --max-tool-calls {self.max_tool_calls}; "
                "lower the minimum or raise the maximum"
            )
        if self.max_steps < max(1, self.min_tool_calls):
            raise OresError(
                f"--max-steps {self.max_steps} leaves no room for --min-tool-calls {self.min_tool_calls}; "
                "raise --max-steps"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Meter:
    """Tokens, cost and calls of one trace, and which model each role used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    calls: int = 0
    models: dict[str, str] = field(default_factory=dict)

    def add(self, result: ChatResult) -> None:
        self.calls += 1
        self.prompt_tokens += result.usage.prompt_tokens
        self.completion_tokens += result.usage.completion_tokens
        if result.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + result.cost_usd
        if result.role:
            self.models.setdefault(result.role, result.model)


@dataclass
class Failure:
    """A piece that could not be used (`attempt` 1 or 2), or a fallback the orchestrator applied."""

    piece: str  # subtask_list, step, plan, answer, report, min_tool_calls
    reason: str
    attempt: int = 0  # 0: not a model reply (a fallback or a bound)
    subtask: int | None = None  # 1-based
    step: int | None = None  # 1-based step of the subtask
    raw: str = ""
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass
class Context:
    question: str
    language: str  # a prompt folder: en, zh
    llm: LLMClient
    toolbox: Toolbox
    options: ResearchOptions
    meter: Meter
    trace_id: str | None = None
    affinity: str | None = None
    started: float = field(default_factory=time.perf_counter)
    # Called with (subtask number or None, trace step) as each step is settled, to stream progress.
    on_step: Callable[[int | None, Step | Report], object] | None = None

    def emit(self, subtask: int | None, step: Step | Report | None) -> None:
        if self.on_step is not None and step is not None:
            self.on_step(subtask, step)

    def phrase(self, key: str, **values: object) -> str:
        return phrase(self.language, key, **values)

    async def ask(
        self,
        role: str,
        piece: str,
        values: dict[str, object],
        parse: Callable[[ChatResult], T],
        *,
        schema: dict[str, Any] | None = None,
        expected: str,
        subtask: int | None = None,
        step: int | None = None,
    ) -> tuple[T | None, list[Failure]]:
        """Ask `role` for `piece` with prompt `piece`; `parse` raises `PieceError` on an unusable
        reply, which is retried once with the strict prompt. Returns (value or None, failures).
        `LLMError` (the endpoint failed after the client's retries) propagates."""

        def restate(messages: list[dict[str, str]], raw: str, reason: str) -> list[dict[str, str]]:
            strict = prompt("strict", self.language)
            return [
                *messages[:2],
                {"role": "assistant", "content": raw[:2000] or "(empty)"},
                {
                    "role": "user",
                    "content": strict.user.replace("$reason", reason).replace("$expected", expected),
                },
            ]

        template = prompt(piece, self.language)
        # Small models copy the prompt's `<what to write>` descriptions word for word; phrases
        # filled into it (a plan field) carry some too. Long values (observations) are not scanned:
        # a page may well contain `<...>`.
        # So do the examples of the retry's `expected` phrase. A long description is also found
        # without its brackets: a model echoing "用 2 到 4 句事实回答，并引用来源，例如 [1]" wrote no answer.
        placeholders = set(template.placeholders) | set(PLACEHOLDER.findall(expected))
        for value in values.values():
            if isinstance(value, str) and len(value) < 200:
                placeholders.update(PLACEHOLDER.findall(value))

        def copies(text: str, placeholder: str) -> bool:
            inner = placeholder[1:-1].strip()
            return placeholder in text or (len(inner) >= MIN_BARE_PLACEHOLDER and inner in text)

        def parse_own(result: ChatResult) -> T:
            copied = next((p for p in placeholders if copies(result.text or "", p)), None)
            if copied is not None:
                raise ReplyError(
                    f"it copies the prompt's placeholder {copied} instead of writing its own text"
                )
            return parse(result)

        asked = await ask_structured(
            self.llm,
            role,
            template.messages(**values),
            parse_own,
            restate=restate,
            max_attempts=2,
            schema=schema,
            trace_id=self.trace_id,
            affinity=self.affinity,
            on_reply=self.meter.add,
        )
        failures = [
            Failure(piece, f.reason, f.attempt, subtask, step, raw=f.raw[:RAW_CHARS]) for f in asked.failed
        ]
        return asked.value, failures
