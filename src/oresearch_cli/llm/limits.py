"""How long a call waits before it may be sent: pauses, rate limits and concurrency caps.

Per endpoint (base URL): a pause that a 429's Retry-After sets for every caller at once, a
requests-per-minute limiter (aiolimiter) and a tokens-per-minute bucket. Then a cap on calls in
flight for the role and one for all calls. Rate limits are waited for before a concurrency slot is
taken, so a call held back by one endpoint's budget does not block calls to other endpoints.

Tokens are counted before the call from an estimate (characters / 4 of the prompt plus the
`max_tokens` asked for) and corrected with the usage the endpoint reports afterwards. Failed calls
give their estimate back.

asyncio primitives belong to one event loop, so the client builds one `Limits` per loop; the
pauses (`Pauses`) are plain clock times shared by all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from oresearch_cli.llm.config import LLMConfig


class TokenBucket:
    """`per_minute` tokens a minute, refilled continuously, holding at most a minute's worth.

    `acquire(n)` waits until `n` tokens are there (callers queue in order); `adjust(delta)` takes
    `delta` more (or gives back, if negative) once the true count is known, so the level may go
    below zero and later callers wait off the debt.
    """

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self._updated = time.monotonic()
        self._queue = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, tokens: float) -> None:
        tokens = min(float(tokens), self.capacity)  # a request larger than a minute's budget still goes
        async with self._queue:
            while True:
                self._refill()
                if self.level >= tokens:
                    self.level -= tokens
                    return
                await asyncio.sleep((tokens - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class Pauses:
    """Endpoints every caller must leave alone until a given time (a 429's Retry-After)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def pause(self, base_url: str, seconds: float) -> None:
        with self._lock:
            self._until[base_url] = max(self._until.get(base_url, 0.0), time.monotonic() + seconds)

    def remaining(self, base_url: str) -> float:
        with self._lock:
            return max(0.0, self._until.get(base_url, 0.0) - time.monotonic())


@dataclass
class Grant:
    """Permission to send one call; `settle(tokens)` corrects the token estimate with the real count."""

    estimated_tokens: int
    _bucket: TokenBucket | None
    settled: bool = False

    def settle(self, actual_tokens: int | None) -> None:
        if self.settled:
            return
        self.settled = True
        if self._bucket is not None:
            used = self.estimated_tokens if actual_tokens is None else actual_tokens
            self._bucket.adjust(used - self.estimated_tokens)


def _requests_limiter(rpm: float) -> AsyncLimiter:
    # Smooth over a second (or one request's period when slower than 1/s) rather than allowing a
    # whole minute's burst at once.
    if rpm >= 60:
        return AsyncLimiter(rpm / 60.0, 1.0)
    return AsyncLimiter(1, 60.0 / rpm)


class Limits:
    """Everything a call waits for, on one event loop. `async with limits.slot(...) as grant:`."""

    def __init__(self, config: LLMConfig, pauses: Pauses) -> None:
        self.pauses = pauses
        self._global = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        self._roles = {
            name: asyncio.Semaphore(rc.max_concurrency)
            for name, rc in config.roles.items()
            if rc.max_concurrency
        }
        # Roles sharing an endpoint share its limiters; the strictest limit any of them sets wins.
        rpm: dict[str, float] = {}
        tpm: dict[str, float] = {}
        for rc in config.roles.values():
            for url in rc.base_urls:
                if rc.rpm:
                    rpm[url] = min(rpm.get(url, math.inf), rc.rpm)
                if rc.tpm:
                    tpm[url] = min(tpm.get(url, math.inf), rc.tpm)
        self._requests = {url: _requests_limiter(value) for url, value in rpm.items()}
        self._tokens = {url: TokenBucket(value) for url, value in tpm.items()}
        self.in_flight = 0
        self.max_in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self, role: str, base_url: str, estimated_tokens: int) -> AsyncIterator[Grant]:
        await self._wait_pause(base_url)
        if (requests := self._requests.get(base_url)) is not None:
            await requests.acquire()
        bucket = self._tokens.get(base_url)
        if bucket is not None:
            await bucket.acquire(estimated_tokens)
        grant = Grant(estimated_tokens, bucket)
        acquired: list[asyncio.Semaphore] = []
        try:
            for semaphore in (self._roles.get(role), self._global):
                if semaphore is not None:
                    await semaphore.acquire()
                    acquired.append(semaphore)
            await self._wait_pause(base_url)  # a 429 may have paused the endpoint meanwhile
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield grant
            finally:
                self.in_flight -= 1
        finally:
            for semaphore in reversed(acquired):
                semaphore.release()
            if not grant.settled:
                grant.settle(0)  # nothing was used: give the estimate back

    async def _wait_pause(self, base_url: str) -> None:
        while (wait := self.pauses.remaining(base_url)) > 0:
            await asyncio.sleep(wait)
