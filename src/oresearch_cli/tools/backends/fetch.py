"""Crawling the web: direct fetch (httpx + trafilatura) and Jina Reader.

Direct fetch follows redirects itself so that every hop passes the safety policy, connects only
to checked public addresses (`SafeTransport`), refuses bodies over `max_bytes` and non-text
content types, and gives up after `timeout` seconds for the whole page (a server that drips
bytes cannot hold a worker).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from oresearch_cli.tools.apiclient import USER_AGENT, ApiClient, KeyPool, RetryPolicy, keys_from_env
from oresearch_cli.tools.base import Page
from oresearch_cli.tools.errors import BackendResponseError, BlockedURLError, FetchError
from oresearch_cli.tools.extract import HTML_TYPES, TEXT_TYPES, extract, media_type
from oresearch_cli.tools.ratelimit import BackendLimiter, RateLimit, limit_from_env, limiter_for
from oresearch_cli.tools.safety import SafeTransport, UrlPolicy, check_url

JINA_URL = "https://r.jina.ai"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,text/markdown;q=0.9,*/*;q=0.1"


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 5_000_000
    timeout: float = 20.0  # seconds for the whole page: connect, redirects, body
    connect_timeout: float = 10.0
    max_redirects: int = 5


class DirectFetch:
    """GET the page and extract its main text."""

    def __init__(
        self,
        policy: UrlPolicy | None = None,
        limits: FetchLimits | None = None,
        *,
        limiter: BackendLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy or UrlPolicy()
        self.limits = limits or FetchLimits()
        self.limiter = limiter or limiter_for("direct", limit_from_env("direct"))
        self.name = "direct"
        self.cache_id = "direct"
        self.requests_sent = 0
        self._client = httpx.AsyncClient(
            transport=transport or SafeTransport(self.policy),
            timeout=httpx.Timeout(self.limits.timeout, connect=self.limits.connect_timeout),
            headers={"User-Agent": USER_AGENT, "Accept": BROWSER_ACCEPT},
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> Page:
        check_url(url, self.policy)
        try:
            async with self.limiter:
                final_url, content_type, body = await asyncio.wait_for(
                    self._download(url), self.limits.timeout
                )
        except asyncio.TimeoutError:
            raise FetchError(
                f"{url}: no complete answer within {self.limits.timeout:g}s; the site is too slow, try another source"
            ) from None
        extracted = await asyncio.to_thread(extract, body, content_type, final_url)
        if not extracted.text.strip():
            raise FetchError(
                f"{url}: the page has no readable text (it may need JavaScript); try another source"
            )
        return Page(
            url=url,
            title=extracted.title,
            text=extracted.text,
            final_url=final_url,
            content_type=media_type(content_type) or None,
            source="direct",
        )

    async def _download(self, url: str) -> tuple[str, str, bytes]:
        current = url
        for _ in range(self.limits.max_redirects + 1):
            try:
                async with self._client.stream("GET", current) as response:
                    self.requests_sent += 1
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if not location:
                            raise FetchError(f"{url}: redirect without a Location header")
                        current = urljoin(current, location)
                        check_url(current, self.policy)
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"{url}: HTTP {response.status_code} {response.reason_phrase}; the page is not available"
                        )
                    content_type = response.headers.get("content-type", "")
                    kind = media_type(content_type)
                    if kind and kind not in HTML_TYPES and kind not in TEXT_TYPES:
                        raise BlockedURLError(
                            f"{url}: content type {kind} is not a web page; crawl_page reads HTML and text only"
                        )
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.limits.max_bytes:
                        raise BlockedURLError(
                            f"{url}: the page is {int(declared):,} bytes, over the {self.limits.max_bytes:,}-byte limit"
                        )
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.limits.max_bytes:
                            raise BlockedURLError(
                                f"{url}: the page is over the {self.limits.max_bytes:,}-byte limit"
                            )
                    return str(response.url), content_type, bytes(body)
            except httpx.TimeoutException:
                raise FetchError(f"{url}: timed out; the site is too slow, try another source") from None
            except httpx.TransportError as exc:
                raise FetchError(
                    f"{url}: cannot connect ({type(exc).__name__}: {exc}); check the URL"
                ) from None
        raise FetchError(f"{url}: more than {self.limits.max_redirects} redirects")


class JinaFetch:
    """Jina Reader: `GET https://r.jina.ai/<url>` with `Accept: application/json` ->
    `{"code": 200, "data": {"title", "url", "content"}}`. The page is fetched by Jina, so only
    the scheme and literal addresses are checked here (no DNS)."""

    def __init__(
        self, keys: KeyPool | None, base_url: str = JINA_URL, *, policy: UrlPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.policy = policy or UrlPolicy()
        self.name = "jina"
        self.cache_id = f"jina:{self.base_url}"
        default = RateLimit(rpm=500, concurrency=16) if keys else RateLimit(rpm=20, concurrency=4)
        self.client = ApiClient(
            "jina",
            limiter=limiter_for(f"jina:{self.base_url}", limit_from_env("jina", default, env=env)),
            keys=keys,
            auth=(lambda headers, key: headers.__setitem__("Authorization", f"Bearer {key}"))
            if keys
            else None,
            retry=retry,
            timeout=60.0,
            env_hint="JINA_API_KEY / JINA_BASE_URL",
            transport=transport,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> JinaFetch:
        env = os.environ if env is None else env
        keys = keys_from_env("JINA_API_KEY", env)
        return cls(
            KeyPool(keys, "JINA_API_KEY") if keys else None,
            env.get("JINA_BASE_URL") or JINA_URL,
            env=env,
            **kwargs,
        )

    async def fetch(self, url: str) -> Page:
        check_url(url, self.policy)
        headers = {"Accept": "application/json", "X-Retain-Images": "none"}
        data = await self.client.json("GET", f"{self.base_url}/{url}", headers=headers)
        payload = data.get("data") if isinstance(data, dict) else None
        if not isinstance(payload, dict):
            raise BackendResponseError(f"jina: unexpected answer for {url}; check JINA_BASE_URL")
        text = str(payload.get("content") or "").strip()
        if not text:
            raise FetchError(f"{url}: Jina Reader returned no text; try another source")
        return Page(
            url=url,
            title=str(payload.get("title") or ""),
            text=text,
            final_url=str(payload.get("url") or url),
            content_type="text/markdown",
            source="jina",
        )

    async def aclose(self) -> None:
        await self.client.aclose()
