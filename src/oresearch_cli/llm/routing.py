"""Which of a role's base URLs a call goes to.

With an affinity key (a question's id), rendezvous hashing ranks the URLs the same way every time,
so every call for one question lands on one server and reuses its KV/prefix cache; adding or
removing a URL moves only the keys that ranked it first. Without a key, the call goes to the URL
with the fewest calls in flight.

An endpoint that fails `failures_to_cooldown` times in a row (connection errors, timeouts, 5xx) is
skipped for `cooldown_s`; its keys move to their next-ranked URL meanwhile and come back after.
If every URL is cooling down, the one that recovers first is used anyway.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class EndpointHealth:
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    in_flight: int = 0
    calls: int = 0
    failures: int = 0


def _score(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}\x00{url}".encode(), digest_size=8).digest(), "big")


def rank(urls: Sequence[str], key: str) -> list[str]:
    """`urls` in rendezvous order for `key` (highest score first); stable across processes."""
    return sorted(urls, key=lambda url: _score(key, url), reverse=True)


class Router:
    """Shared by all roles: health is per URL, whichever role calls it."""

    def __init__(self, cooldown_s: float = 30.0, failures_to_cooldown: int = 3) -> None:
        self.cooldown_s = cooldown_s
        self.failures_to_cooldown = max(1, failures_to_cooldown)
        self.health: dict[str, EndpointHealth] = {}
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def _get(self, url: str) -> EndpointHealth:
        health = self.health.get(url)
        if health is None:
            health = self.health[url] = EndpointHealth()
        return health

    def route(self, urls: Sequence[str], affinity: str | None = None) -> str:
        """The URL for one attempt of a call."""
        if len(urls) == 1:
            return urls[0]
        now = time.monotonic()
        with self._lock:
            if affinity is not None:
                ordered = rank(urls, affinity)
            else:
                # Fewest in flight; ties rotate so idle URLs share the load.
                start = next(self._turn) % len(urls)
                rotated = list(urls[start:]) + list(urls[:start])
                ordered = sorted(rotated, key=lambda url: self._get(url).in_flight)
            for url in ordered:
                if self._get(url).cooldown_until <= now:
                    return url
            return min(ordered, key=lambda url: self._get(url).cooldown_until)

    def cooling_down(self, url: str) -> bool:
        with self._lock:
            return self._get(url).cooldown_until > time.monotonic()

    def begin(self, url: str) -> None:
        with self._lock:
            health = self._get(url)
            health.in_flight += 1
            health.calls += 1

    def end(self, url: str, *, ok: bool, endpoint_fault: bool = False) -> None:
        """A call to `url` ended; `endpoint_fault` (no answer, timeout, 5xx) counts toward a cooldown."""
        with self._lock:
            health = self._get(url)
            health.in_flight -= 1
            if ok or not endpoint_fault:
                if ok:
                    health.consecutive_failures = 0
                return
            health.failures += 1
            health.consecutive_failures += 1
            if health.consecutive_failures >= self.failures_to_cooldown:
                health.cooldown_until = time.monotonic() + self.cooldown_s
                health.consecutive_failures = 0
