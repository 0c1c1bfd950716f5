"""What one `ores serve --agent` (and the tools server, for its body) lets its callers spend: request size, question length, how many
researches run at once, and each research's budget (tool calls, steps, tokens, seconds).

`Admission` holds the concurrency limit. Past it a request is refused at once (HTTP 429) rather than
queued: a research takes minutes, and a client that knows it must wait can back off and retry, or
go to another replica, instead of holding a connection open. Its `Retry-After` is how long the
oldest research in flight should still take, judged from the recent ones.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass

from starlette.requests import Request

from oresearch_cli.errors import ConfigError
from oresearch_cli.records import MAX_QUESTION_CHARS
from oresearch_cli.server.research_service import ResearchBudget

RECENT_LATENCIES = 50  # researches the Retry-After estimate looks back over
MAX_RETRY_AFTER_S = 600


@dataclass(frozen=True)
class ServeLimits:
    """The server's limits. `budget` is each research's most (and default) tool calls, steps,
    tokens and seconds; a request may ask for less."""

    max_body_bytes: int = 1_000_000
    max_question_chars: int = MAX_QUESTION_CHARS  # what a seeds file may hold, too
    max_concurrent: int = 8
    budget: ResearchBudget = ResearchBudget(
        max_tool_calls=16, max_steps=40, max_tokens=8192, max_seconds=900.0
    )

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_question_chars", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be 1 or more; raise it")
        for name, value in vars(self.budget).items():
            if value is not None and not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be above 0; raise it")


class BodyTooLarge(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(f"the request body is over this server's limit of {cap:,} bytes")
        self.cap = cap


async def read_body(request: Request, cap: int) -> bytes:
    """The request's body, refused (`BodyTooLarge`) past `cap` bytes: by its Content-Length before
    reading, or while reading a chunked one, so an oversized body is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge(cap)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge(cap)
    return bytes(body)


class Busy(Exception):
    """Every research slot is taken; `retry_after` seconds is a fair wait."""

    def __init__(self, retry_after: int, limit: int) -> None:
        super().__init__(f"all {limit} research slots are busy; retry in {retry_after} s")
        self.retry_after = retry_after
        self.limit = limit


class Admission:
    """At most `limit` researches at once; the rest are refused with a wait estimate."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._started: dict[int, float] = {}
        self._next = 0
        self._latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def retry_after(self) -> int:
        """Seconds until a slot should free: the typical research time left to the oldest one."""
        if not self._latencies or not self._started:
            return 1
        typical = statistics.median(self._latencies)
        oldest = min(self._started.values())
        left = typical - (time.monotonic() - oldest)
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(left)))

    def acquire(self) -> int:
        """Take a slot (its ticket, for `release`); raises `Busy` when none is free."""
        if len(self._started) >= self.limit:
            raise Busy(self.retry_after(), self.limit)
        ticket = self._next
        self._next += 1
        self._started[ticket] = time.monotonic()
        return ticket

    def release(self, ticket: int) -> None:
        """Free the slot however its research ended (done, failed, cancelled by a client that left)."""
        started = self._started.pop(ticket, None)
        if started is not None:
            self._latencies.append(time.monotonic() - started)
