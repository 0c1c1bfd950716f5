"""Bearer-token auth for the servers ores runs (`ores serve --agent`, and the tools server next).

Every HTTP route but the open ones (`/health`, so a load balancer can probe without the key) needs
`Authorization: Bearer <key>`. The key is compared in constant time (`hmac.compare_digest`), and
neither it nor the header is ever logged. A refusal is OpenAI's error shape with status 401, so the
`openai` client raises `AuthenticationError` with the message.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

API_KEY_ENV = "ORES_SERVE_API_KEY"
OPEN_PATHS = frozenset({"/health"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def api_key_from(flag: str | None, environ: MutableMapping[str, str] | None = None) -> str | None:
    """The key to require: `--api-key`, else `ORES_SERVE_API_KEY`, else none (an empty value is none)."""
    environ = os.environ if environ is None else environ
    key = flag if flag is not None else environ.get(API_KEY_ENV)
    return key or None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for a server anyone on the network can call without a key, else None."""
    if api_key or is_loopback(host):
        return None
    return (
        f"listening on {host} without an API key: anyone who can reach this port can run research "
        f"on your tools and budget; set --api-key or {API_KEY_ENV}"
    )


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class BearerAuth:
    """ASGI middleware: refuse HTTP requests without the key (except `open_paths`).

    `on_refused` is called once per refusal (for metrics), with nothing about the key.
    """

    def __init__(
        self,
        app: ASGIApp,
        api_key: str,
        *,
        open_paths: Collection[str] = OPEN_PATHS,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")
        self.open_paths = frozenset(open_paths)
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers") or [])
        # compare_digest takes as long whatever the token is, so timing tells nothing of the key
        if token is not None and hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        if self.on_refused is not None:
            self.on_refused()
        message = (
            "missing API key: send the header `Authorization: Bearer <key>`"
            if token is None
            else "invalid API key: send the key this server was started with (--api-key)"
        )
        body = json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
