"""Asking a role for structured output: parse leniently, re-ask strictly, record every unusable reply.

The one loop behind the agent's pieces (`agent.context.Context.ask`) and the judge's scores
(`filtering.judge`): ask; hand the reply to `parse`; a reply `parse` rejects with `ReplyError` (or
that `chat_json` could not read as the JSON asked for: `MalformedOutput`) is recorded with its raw
text and asked again with the messages `restate` builds, up to `max_attempts` in all. A weak model
therefore costs re-asks and leaves a record; it never raises. `LLMError` from the endpoint does
propagate: what to do about an endpoint that keeps failing is the caller's decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from oresearch_cli.llm.client import ChatResult
from oresearch_cli.llm.errors import MalformedOutput

T = TypeVar("T")
Messages = list[dict[str, str]]
Restate = Callable[[Messages, str, str], Messages]  # (messages, raw reply, reason) -> the re-ask


class ReplyError(ValueError):
    """A reply with nothing usable in it; `reason` says why, in words the re-ask can quote."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FailedReply:
    """One unusable reply: which attempt (1-based), why, and the model's whole text."""

    attempt: int
    reason: str
    raw: str


@dataclass
class Structured(Generic[T]):
    """What asking gave: the value (None when every attempt was unusable), the calls made, and
    one record per unusable reply."""

    value: T | None
    attempts: int
    failed: list[FailedReply] = field(default_factory=list)


async def ask_structured(
    llm: Any,
    role: str,
    messages: Messages,
    parse: Callable[[ChatResult], T],
    *,
    restate: Restate,
    max_attempts: int = 2,
    schema: Mapping[str, Any] | None = None,
    json_object: bool = False,
    trace_id: str | None = None,
    affinity: str | None = None,
    on_reply: Callable[[ChatResult], None] | None = None,
    failed: list[FailedReply] | None = None,
) -> Structured[T]:
    """Ask `role` until `parse` accepts a reply, at most `max_attempts` times.

    `schema` goes to the endpoint as the response format where it supports one. With
    `json_object`, the reply must hold a JSON object fitting `schema` (read by `llm.chat_json`;
    `parse` finds it in `result.data`); otherwise `parse` reads `result.text` its own way.
    `on_reply` sees every reply, usable or not (tokens were spent on each). Unusable replies are
    appended to `failed`: a caller that must know them when `LLMError` ends the asking passes
    its own list. Raises `LLMError` (not `MalformedOutput`) when the endpoint fails.
    """
    if json_object and schema is None:
        raise ValueError("ask_structured: json_object needs a schema")
    failed = failed if failed is not None else []
    for attempt in range(1, max_attempts + 1):
        try:
            if json_object:
                result = await llm.chat_json(role, messages, schema, affinity=affinity, trace_id=trace_id)
            else:
                result = await llm.chat(
                    role, messages, affinity=affinity, trace_id=trace_id, json_schema=schema
                )
        except MalformedOutput as exc:
            if on_reply is not None and exc.result is not None:
                on_reply(exc.result)
            reason, raw = exc.reason or str(exc), exc.raw or ""
        else:
            if on_reply is not None:
                on_reply(result)
            try:
                return Structured(parse(result), attempt, failed)
            except ReplyError as exc:
                reason, raw = exc.reason, result.text or ""
        failed.append(FailedReply(attempt, reason, raw))
        if attempt < max_attempts:
            messages = restate(messages, raw, reason)
    return Structured(None, max(max_attempts, 0), failed)


@dataclass
class Judgement(Generic[T]):
    """A judge's scores, or why there are none: `error` starts with "endpoint:" when the endpoint
    failed, "malformed output:" when no reply fitted. `raw` keeps the unusable replies."""

    value: T | None
    attempts: int
    error: str | None = None
    raw: list[str] = field(default_factory=list)


def reask_strictly(shape: str) -> Restate:
    """The re-ask after an unusable reply: the bad answer, what was wrong, and `shape` again."""

    def restate(messages: Messages, raw: str, problem: str) -> Messages:
        return [
            *messages,
            {"role": "assistant", "content": raw[:2000]},
            {
                "role": "user",
                "content": f"That answer was not usable: {problem}. Reply with ONLY a JSON object, no prose, "
                f"no code fence, {shape}",
            },
        ]

    return restate


async def ask_for_scores(
    llm: Any,
    messages: Messages,
    check: Callable[[Mapping[str, Any]], T],
    *,
    schema: Mapping[str, Any],
    shape: str,
    max_attempts: int,
    trace_id: str | None = None,
    role: str = "judge",
    from_text: Callable[[str], Mapping[str, Any]] | None = None,
) -> Judgement[T]:
    """Ask `role` for a JSON object of scores that `check` accepts (it raises ValueError, in words
    the re-ask can quote, for one it does not), re-asking strictly (`shape` says what is wanted).
    The object is read by `chat_json` (the schema enforced where the endpoint can), or from the
    reply's text by `from_text` (raising ValueError too) for a judge asked in prose.
    Never raises for the endpoint or the model: a judgement without scores says why."""
    from oresearch_cli.llm.errors import LLMError

    def parse(answer: ChatResult) -> T:
        try:
            data = from_text(answer.text or "") if from_text is not None else (answer.data or {})
            return check(data)
        except ValueError as exc:
            raise ReplyError(str(exc)) from None

    failed: list[FailedReply] = []
    try:
        asked = await ask_structured(
            llm,
            role,
            messages,
            parse,
            restate=reask_strictly(shape),
            max_attempts=max_attempts,
            schema=schema,
            json_object=from_text is None,
            trace_id=trace_id,
            failed=failed,
        )
    except LLMError as exc:
        return Judgement(None, len(failed) + 1, f"endpoint: {exc}", [f.raw[:500] for f in failed])
    error = None
    if asked.value is None:
        error = f"malformed output: {failed[-1].reason}" if failed else "no usable answer"
    return Judgement(asked.value, asked.attempts, error, [f.raw[:500] for f in failed])
