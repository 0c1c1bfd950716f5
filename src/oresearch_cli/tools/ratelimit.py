"""Per-backend rate limits shared by every caller in the process.

Each backend has one `BackendLimiter` (from `limiter_for`): a token bucket for requests per
minute (aiolimiter) and a cap on requests in flight. A 429 pauses the whole backend until its
Retry-After has passed, so 64 concurrent synth workers back off together instead of each
earning its own 429.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from aiolimiter import AsyncLimiter


@dataclass(frozen=True)
class RateLimit:
    """`rpm`: requests per minute (None: unlimited); `concurrency`: requests in flight (None: unlimited)."""

    rpm: float | None = None
    concurrency: int | None = None


# Defaults sized to each service's published free/entry limits; override with ORES_<NAME>_RPM
# and ORES_<NAME>_CONCURRENCY.
DEFAULT_LIMITS: dict[str, RateLimit] = {
    "serper": RateLimit(rpm=300, concurrency=16),
    "tavily": RateLimit(rpm=100, concurrency=8),
    "searxng": RateLimit(rpm=60, concurrency=4),
    "retriever": RateLimit(rpm=None, concurrency=32),
    "jina": RateLimit(rpm=20, concurrency=4),  # without a key; with JINA_API_KEY see registry
    "direct": RateLimit(rpm=None, concurrency=16),
    "summarizer": RateLimit(rpm=None, concurrency=8),
}


def limit_from_env(
    name: str, default: RateLimit | None = None, env: Mapping[str, str] | None = None
) -> RateLimit:
    """`ORES_<NAME>_RPM` / `ORES_<NAME>_CONCURRENCY` over `default` (0 or empty means unlimited)."""
    env = os.environ if env is None else env
    base = default or DEFAULT_LIMITS.get(name, RateLimit())
    prefix = f"ORES_{name.upper()}_"
    rpm, concurrency = base.rpm, base.concurrency
    if (raw := env.get(prefix + "RPM")) is not None:
        rpm = float(raw) if raw.strip() and float(raw) > 0 else None
    if (raw := env.get(prefix + "CONCURRENCY")) is not None:
        concurrency = int(raw) if raw.strip() and int(raw) > 0 else None
    return RateLimit(rpm=rpm, concurrency=concurrency)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _LoopState:
    """The asyncio primitives of one limiter on one event loop (they cannot cross loops)."""

    def __init__(self, limit: RateLimit) -> None:
        self.bucket: AsyncLimiter | None = None
        if limit.rpm:
            # Smooth over one second (or one request's period when slower than 1/s) rather than
            # allowing a whole minute's burst at once.
            if limit.rpm >= 60:
                self.bucket = AsyncLimiter(limit.rpm / 60.0, 1.0)
            else:
                self.bucket = AsyncLimiter(1, 60.0 / limit.rpm)
        self.slots = asyncio.Semaphore(limit.concurrency) if limit.concurrency else None


class BackendLimiter:
    """`async with limiter:` around each request to one backend."""

    def __init__(self, name: str, limit: RateLimit) -> None:
        self.name = name
        self.limit = limit
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                state = self._states[loop] = _LoopState(self.limit)
            return state

    def pause(self, seconds: float) -> None:
        """Hold every caller of this backend for `seconds` (a 429's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def __aenter__(self) -> None:
        state = self._state()
        if state.slots is not None:
            await state.slots.acquire()
        try:
            while (wait := self._paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if state.bucket is not None:
                await state.bucket.acquire()
        except BaseException:
            if state.slots is not None:
                state.slots.release()
            raise
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self.in_flight -= 1
        state = self._state()
        if state.slots is not None:
            state.slots.release()


_REGISTRY: dict[str, BackendLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def limiter_for(key: str, limit: RateLimit) -> BackendLimiter:
    """The process-wide limiter of a backend (`key` is e.g. "serper" or "searxng:https://host").
    The first caller's limit wins; `reset_limiters` forgets them (tests)."""
    with _REGISTRY_LOCK:
        limiter = _REGISTRY.get(key)
        if limiter is None or limiter.limit != limit:
            limiter = _REGISTRY[key] = BackendLimiter(key, limit)
        return limiter


def reset_limiters() -> None:
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
