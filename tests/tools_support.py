"""Test support for the tools tests: a loopback HTTP server that stops by itself, and a guard that
fails any attempt to open a socket to an address outside 127.0.0.0/8 / ::1."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Handler = Callable[[Seen, BaseHTTPRequestHandler], None]


def send(h: BaseHTTPRequestHandler, status: int = 200, body: bytes | str = b"", headers: dict[str, str] | None = None,
         content_type: str = "text/plain; charset=utf-8") -> None:  # fmt: skip
    data = body.encode() if isinstance(body, str) else body
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(data)


def send_json(
    h: BaseHTTPRequestHandler, obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> None:
    send(h, status, json.dumps(obj), headers, "application/json")


class LoopbackServer:
    """`with LoopbackServer(handler) as srv:` serves on http://127.0.0.1:<ephemeral> in a daemon
    thread. It shuts down on exit, and by itself after `lifetime` seconds in any case."""

    def __init__(self, handler: Handler, lifetime: float = 30.0) -> None:
        self.handler = handler
        self.lifetime = lifetime
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds per socket operation: a stuck client cannot hold a thread

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with outer._lock:
                    outer.requests.append(seen)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    outer.handler(seen, self)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            do_GET = do_POST = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime, self._server.shutdown)
        self._timer.daemon = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to connect a socket to a non-loopback address."""
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not is_loopback(str(address[0])):
            raise AssertionError(f"test tried to connect to {address[0]}: only loopback is allowed")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return original(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return original_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Map host names to addresses (fill the returned dict); other names do not resolve."""
    table: dict[str, str] = {}
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in table:
            return original(table[name], port, *args, **kwargs)
        if is_loopback(name):
            return original(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@dataclass
class Clock:
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


DOCS = [
    {"id": "photo", "title": "Photosynthesis", "url": "https://en.wikipedia.org/wiki/Photosynthesis",
     "text": "Photosynthesis converts light energy into chemical energy. The light reactions run in the thylakoid membranes."},
    {"id": "calvin", "title": "Calvin cycle", "url": "https://en.wikipedia.org/wiki/Calvin_cycle",
     "text": "The Calvin cycle fixes carbon dioxide in the stroma using ATP and NADPH from the light reactions."},
    {"id": "river", "title": "Amazon River", "text": "The Amazon River in South America is the largest river by discharge volume of water."},
    {"id": "runner", "title": "Marathon", "text": "A marathon runner runs 42 kilometres. Running long distances needs training."},
    {"id": "light", "title": "Light", "url": "https://en.wikipedia.org/wiki/Light",
     "text": "Light is electromagnetic radiation visible to the eye. Photosynthesis is mentioned here once."},
]  # fmt: skip


def write_jsonl(path: Any, docs: list[dict[str, Any]] | None = None) -> Any:
    path.write_text("".join(json.dumps(d) + "\n" for d in (DOCS if docs is None else docs)))
    return path
