"""The crawl's DNS-rebinding guard, observed where connections actually go.

A name is resolved once, every address it resolves to is checked, and the crawl connects to the
checked address itself: a resolver that answers with a public address first and loopback later,
or with a public address and loopback together, must never get a request onto this machine.

Resolution is faked (`socket.getaddrinfo`, which asyncio and anyio call); socket connects are
recorded, and any to a non-loopback address is refused on the spot, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest

from oresearch_cli.tools.backends.fetch import DirectFetch
from oresearch_cli.tools.errors import BlockedURLError, FetchError

from tools_support import LoopbackServer, send

PUBLIC = "93.184.216.34"  # a global unicast address; no connection to it ever leaves the test
PAGE = b"""<html><head><title>Loopback secret</title></head><body><article>
<p>This page is served on loopback. A crawl that reaches it has been rebound onto this machine.</p>
<p>A second paragraph gives the extractor enough main content to return the page.</p></article></body></html>"""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture
def network(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Callable[[str, list[list[str]]], None], list[str], list[str]]:
    """(answer, lookups, connects): `answer(name, [[addresses of the 1st lookup], [2nd], ...])`
    scripts the resolver (the last answer repeats); `lookups` lists the names asked for and
    `connects` the addresses sockets tried to connect to."""
    answers: dict[str, list[list[str]]] = {}
    lookups: list[str] = []
    connects: list[str] = []
    original_getaddrinfo = socket.getaddrinfo
    original_connect = socket.socket.connect

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if _is_ip(name):
            return original_getaddrinfo(host, port, *args, **kwargs)  # a literal: no DNS involved
        if name not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        lookups.append(name)
        script = answers[name]
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [info for a in addresses for info in original_getaddrinfo(a, port, *args, **kwargs)]

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            host = str(address[0])
            connects.append(host)
            if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
                raise ConnectionRefusedError(f"test: no connection leaves this machine ({host})")
        return original_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)

    def answer(name: str, script: list[list[str]]) -> None:
        answers[name] = [list(a) for a in script]

    return answer, lookups, connects


def _fetch(url: str) -> object:
    async def run() -> object:
        fetcher = DirectFetch()  # the default policy: public addresses only
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


def _serve_page() -> LoopbackServer:
    return LoopbackServer(lambda seen, h: send(h, body=PAGE, content_type="text/html"), lifetime=20)


def test_crawl_connects_to_the_checked_address_not_a_second_lookup(network: Any) -> None:
    answer, lookups, connects = network
    with _serve_page() as server:
        # Checked as public; any later lookup of the name would answer loopback (a rebinding DNS).
        answer("rebind.example", [[PUBLIC], ["127.0.0.1"]])
        with pytest.raises(FetchError, match="cannot connect"):
            _fetch(f"http://rebind.example:{server.port}/page")
        assert server.requests == [], "the crawl was rebound onto loopback"
    assert connects and set(connects) == {PUBLIC}  # it went (only) to the address it checked
    assert lookups == ["rebind.example"]  # resolved once


@pytest.mark.parametrize("bad", ["127.0.0.1", "10.1.2.3", "169.254.169.254"])
def test_every_resolved_address_is_checked(network: Any, bad: str) -> None:
    answer, _lookups, connects = network
    with _serve_page() as server:
        answer("mixed.example", [[PUBLIC, bad]])
        with pytest.raises(BlockedURLError, match=rf"{bad}.*after DNS resolution"):
            _fetch(f"http://mixed.example:{server.port}/page")
        assert server.requests == []
    assert connects == []  # refused before any connection, to the public address or the other
