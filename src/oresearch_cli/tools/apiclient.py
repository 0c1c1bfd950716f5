"""One way to call a search/crawl API: rate-limited, retried, with API keys rotated on failure.

`ApiClient.request` wraps an httpx call in the backend's `BackendLimiter`, retries timeouts,
connection errors, 429 and 5xx with tenacity (waiting what Retry-After says, capped), and on
401/403/429 moves to the next of the backend's keys before giving up.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from oresearch_cli.tools.errors import BackendAuthError, BackendResponseError, BackendUnavailableError
from oresearch_cli.tools.ratelimit import BackendLimiter, parse_retry_after

USER_AGENT = "ores/0.1 (research agent tools)"


def keys_from_env(name: str, env: Mapping[str, str] | None = None) -> list[str]:
    """API keys from `NAME` (several separated by `,`, `|` or whitespace) and `NAME_2`.. `NAME_9`."""
    env = os.environ if env is None else env
    raw = [env.get(name, "")] + [env.get(f"{name}_{i}", "") for i in range(2, 10)]
    keys: list[str] = []
    for value in raw:
        for key in re.split(r"[,|\s]+", value):
            if key and key not in keys:
                keys.append(key)
    return keys


class KeyPool:
    """A backend's API keys. The current key is used until it fails; `rotate` moves on."""

    def __init__(self, keys: Sequence[str], env_name: str) -> None:
        self.keys = list(keys)
        self.env_name = env_name
        self._index = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    def current(self) -> tuple[int, str]:
        with self._lock:
            return self._index, self.keys[self._index]

    def rotate(self, failed: int) -> None:
        """Move past key `failed` (if no other caller has already)."""
        with self._lock:
            if self._index == failed and len(self.keys) > 1:
                self._index = (failed + 1) % len(self.keys)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_wait: float = 0.5
    max_wait: float = 8.0
    max_retry_after: float = 60.0


class _Retry(Exception):
    """A failed attempt worth retrying; `wait` overrides the backoff (Retry-After, key switch)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class ApiClient:
    """httpx client of one backend. `auth(headers, key)` puts the API key where the API wants it."""

    def __init__(
        self,
        name: str,
        *,
        limiter: BackendLimiter,
        keys: KeyPool | None = None,
        auth: Callable[[dict[str, str], str], None] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        env_hint: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.limiter = limiter
        self.keys = keys
        self.auth = auth
        self.retry = retry or RetryPolicy()
        self.env_hint = env_hint
        self.requests_sent = 0
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.wait is not None:
            return min(exc.wait, self.retry.max_retry_after)
        backoff = min(self.retry.max_wait, self.retry.base_wait * 2 ** (state.attempt_number - 1))
        return backoff * (0.5 + random.random() / 2)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one API request; return the 2xx response or raise a `ToolError`."""
        attempts = max(self.retry.attempts, len(self.keys) if self.keys else 1)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        limited: set[int] = set()  # keys that answered 429 during this request
        rejected: set[int] = set()  # keys that answered 401/403
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(method, url, limited, rejected, **kwargs)
        except _Retry as exc:
            raise BackendUnavailableError(
                f"{self.name}: {exc} (after {attempts} attempts); try again later{self._hint()}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _hint(self) -> str:
        return f" or check {self.env_hint}" if self.env_hint else ""

    async def _attempt(
        self, method: str, url: str, limited: set[int], rejected: set[int], **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        key_index = -1
        if self.keys is not None and self.auth is not None:
            key_index, key = self.keys.current()
            self.auth(headers, key)
        try:
            async with self.limiter:
                self.requests_sent += 1
                response = await self._client.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise _Retry(f"timed out calling {_origin(url)} ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retry(f"cannot reach {_origin(url)} ({type(exc).__name__}: {exc})") from None
        status = response.status_code
        if status < 400:
            return response
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        many_keys = self.keys is not None and len(self.keys) > 1
        if status in (401, 403):
            rejected.add(key_index)
            if many_keys and len(rejected) < len(self.keys):  # type: ignore[arg-type]
                self.keys.rotate(key_index)  # type: ignore[union-attr]
                raise _Retry(f"HTTP {status}: the API rejected the key", wait=0.0)
            if self.keys is None:  # no key to blame: the server refuses this client (SearXNG without JSON)
                raise BackendAuthError(
                    f"{self.name}: {_origin(url)} refused access (HTTP {status}); check {self.env_hint or 'the backend URL'} and that the server allows these requests"
                )
            which = "every API key" if many_keys else "the API key"
            raise BackendAuthError(
                f"{self.name}: the API rejected {which} (HTTP {status}); check {self.keys.env_name}"
            )
        if status == 429:
            limited.add(key_index)
            if many_keys and len(limited) < len(self.keys):  # type: ignore[arg-type]
                self.keys.rotate(key_index)  # type: ignore[union-attr]
                raise _Retry("HTTP 429 Too Many Requests on every API key", wait=0.0)
            limited.clear()
            if retry_after is not None:
                self.limiter.pause(min(retry_after, self.retry.max_retry_after))
            raise _Retry("HTTP 429 Too Many Requests", wait=retry_after)
        if status >= 500 or status == 408:
            raise _Retry(f"HTTP {status} from {_origin(url)}", wait=retry_after)
        detail = " ".join(response.text[:200].split())
        raise BackendResponseError(
            f"{self.name}: HTTP {status} from {_origin(url)}: {detail}; check the request and {self.env_hint or 'the backend'}"
        )

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise BackendResponseError(
                f"{self.name}: {_origin(url)} did not answer JSON; check that {self.env_hint or 'the URL'} points at the API"
            ) from None


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}{':' + str(parsed.port) if parsed.port else ''}{parsed.path}"
