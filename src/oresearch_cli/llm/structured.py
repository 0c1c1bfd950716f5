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
