"""How long a call waits before it may be sent: pauses, rate limits and concurrency caps.

Per endpoint (base URL): a pause that a 429's Retry-After sets for every caller at once, a
requests-per-minute limiter (aiolimiter) and a tokens-per-minute bucket. Then a cap on calls in
flight for the role and one for all calls. Rate limits are waited for before a concurrency slot is
taken, so a call held back by one endpoint's budget does not block calls to other endpoints.

A slot is held only while a request is in flight: a call that finds its endpoint paused after it
got a slot (a 429 arrived while it queued) gives the slot back, waits out the pause and queues
again; the client's retry waits (backoff, Retry-After) happen outside `slot` altogether. A retry
(`slot(first=True)`) queues ahead of calls not yet sent: a call that has already waited finishes
before new work starts, rather than going to the back of a queue its failure let others into.

A 429 pauses the endpoint for every caller unless the endpoint is plainly serving: at least
PAUSE_MIN_ANSWERS answers known and at most PAUSE_SHARE of its last PAUSE_WINDOW answers 429s (see
`Pauses.pause`). A stray 429 among mostly good answers (a proxy shedding load, one replica
restarting, a limiter at its edge) is then one request's bad luck, not an exhausted budget, and
holding every caller back for it would turn each one into a stall of the whole run (measured in
benchmarks/bench_faults.py). An exhausted budget refuses most requests at once and pauses all.
The refused call itself always waits its full Retry-After (the client's retry wait).

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
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from oresearch_cli.llm.config import LLMConfig
from oresearch_cli.llm.waiting import wait_out

# A 429 pauses every caller of an endpoint unless it has answered PAUSE_MIN_ANSWERS requests and
# at most PAUSE_SHARE of its last PAUSE_WINDOW answers (this 429 among them) were 429s.
PAUSE_WINDOW = 32
PAUSE_MIN_ANSWERS = 8
PAUSE_SHARE = 0.25


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
        # Per endpoint, whether each of its last PAUSE_WINDOW answers was a 429.
        self._answers: dict[str, deque[bool]] = {}
        self._lock = threading.Lock()

    def answered(self, base_url: str, refused: bool = False) -> None:
        """`base_url` answered a request: with a 429 (`refused`) or otherwise."""
        with self._lock:
            answers = self._answers.get(base_url)
            if answers is None:
                answers = self._answers[base_url] = deque(maxlen=PAUSE_WINDOW)
            answers.append(refused)

    def pause(self, base_url: str, seconds: float) -> bool:
        """A 429 from `base_url` asked to wait `seconds`: hold every caller of it back that long,
        unless the endpoint is plainly serving (module docstring). True if it paused."""
        self.answered(base_url, refused=True)
        with self._lock:
            answers = self._answers[base_url]
            if len(answers) >= PAUSE_MIN_ANSWERS and sum(answers) <= PAUSE_SHARE * len(answers):
                return False
            self._until[base_url] = max(self._until.get(base_url, 0.0), time.monotonic() + seconds)
            return True

    def remaining(self, base_url: str) -> float:
        with self._lock:
            return max(0.0, self._until.get(base_url, 0.0) - time.monotonic())


class Slots:
    """A counting semaphore for calls in flight whose `acquire(first=True)` waiters (retries) are
    served before the others; each in arrival order. A released slot is handed to the next waiter."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    async def acquire(self, first: bool = False) -> None:
        if self._free > 0 and not (self._waiting[0] or self._waiting[1]):
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[0 if first else 1]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                with contextlib.suppress(ValueError):
                    queue.remove(future)
            else:  # handed a slot just as it was cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        for queue in self._waiting:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._free += 1


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
        self._global = Slots(config.max_concurrency) if config.max_concurrency else None
        self._roles = {
            name: Slots(rc.max_concurrency) for name, rc in config.roles.items() if rc.max_concurrency
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
    async def slot(
        self, role: str, base_url: str, estimated_tokens: int, *, first: bool = False, hedge: bool = False
    ) -> AsyncIterator[Grant]:
        """Wait for the pause, the rate limits and a concurrency slot; hold the slot inside.
        `first`: queue for the slot ahead of calls without it (a retry).

        `hedge`: a second request of a call that holds a slot already (the client's hedging). It
        waits for the pause and the rate limits like any request, but rides on its call's slot:
        the caps count calls, so requests in flight may exceed them by the calls hedged just then.
        """
        await self._wait_pause(base_url)
        if (requests := self._requests.get(base_url)) is not None:
            await requests.acquire()
        bucket = self._tokens.get(base_url)
        if bucket is not None:
            await bucket.acquire(estimated_tokens)
        grant = Grant(estimated_tokens, bucket)
        acquired: list[Slots] = []
        try:
            while not hedge:
                for semaphore in (self._roles.get(role), self._global):
                    if semaphore is not None:
                        await semaphore.acquire(first)
                        acquired.append(semaphore)
                if self.pauses.remaining(base_url) <= 0:
                    break
                # A 429 paused the endpoint while this call queued: wait it out without the slots,
                # so calls to other endpoints (or other roles) go meanwhile, then queue again (first:
                # it has waited its turn once).
                for semaphore in reversed(acquired):
                    semaphore.release()
                acquired.clear()
                await self._wait_pause(base_url)
                first = True
            if hedge:
                yield grant
                return
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
            await wait_out(wait)
