"""Crawl safety: schemes, loopback/private/link-local/metadata addresses (also after DNS and
after redirects), size cap, content type, slow servers. Every server here is on loopback, and
`loopback_only` fails the test if anything tries to connect elsewhere."""

from __future__ import annotations

import asyncio
import time

import pytest

from oresearch_cli.errors import OresError
from oresearch_cli.tools.backends.fetch import DirectFetch, FetchLimits
from oresearch_cli.tools.errors import BlockedURLError, FetchError
from oresearch_cli.tools.safety import UrlPolicy, check_url

from tools_support import LoopbackServer, fake_dns, loopback_only, send  # noqa: F401

pytestmark = pytest.mark.usefixtures("loopback_only")

PAGE = b"""<html><head><title>Safe page</title></head><body><article>
<p>This page is served on loopback for the crawl tests. It has enough text for extraction.</p>
<p>A second paragraph keeps trafilatura happy about the main content of the page.</p></article></body></html>"""


def _fetch(url: str, allow: tuple[str, ...] = (), **limits: float) -> object:
    async def run() -> object:
        fetcher = DirectFetch(UrlPolicy.allowing(allow), FetchLimits(**limits))  # type: ignore[arg-type]
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/x",
        "gopher://example.org/",
        "example.org/no-scheme",
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/",
        "http://localhost/",
        "http://api.localhost/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",  # 127.0.0.1 as one integer
        "http://0x7f.1/",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(BlockedURLError) as info:
        check_url(url, UrlPolicy())
    assert isinstance(info.value, OresError)  # the CLI prints one line and exits 2
    assert "\n" not in str(info.value)


def test_check_url_allows_public_and_listed_hosts() -> None:
    check_url("https://en.wikipedia.org/wiki/Photosynthesis", UrlPolicy())
    check_url("http://93.184.216.34/", UrlPolicy())
    check_url("http://127.0.0.1:8080/x", UrlPolicy.allowing(["127.0.0.1"]))
    check_url("http://[::1]:8080/x", UrlPolicy.allowing(["::1"]))


def test_file_scheme_is_refused_with_a_clear_message() -> None:
    with pytest.raises(BlockedURLError, match=r"file:// URLs cannot be crawled"):
        _fetch("file:///etc/passwd")


def test_metadata_address_is_refused_without_any_connection() -> None:
    with pytest.raises(BlockedURLError, match="metadata"):
        _fetch("http://169.254.169.254/latest/meta-data/")


def test_loopback_is_refused_by_default_and_allowed_with_allow_host() -> None:
    with LoopbackServer(lambda seen, h: send(h, body=PAGE, content_type="text/html")) as server:
        with pytest.raises(BlockedURLError, match="loopback"):
            _fetch(server.url + "/page")
        assert server.requests == []  # refused before connecting
        page = _fetch(server.url + "/page", allow=("127.0.0.1",))
        assert page.title == "Safe page" and "served on loopback" in page.text  # type: ignore[attr-defined]
        assert len(server.requests) == 1


def test_host_resolving_to_loopback_is_refused_after_dns(fake_dns: dict[str, str]) -> None:  # noqa: F811
    with LoopbackServer(lambda seen, h: send(h, body=PAGE, content_type="text/html")) as server:
        fake_dns["innocent.example"] = "127.0.0.1"
        fake_dns["rebind.example"] = "10.1.2.3"
        with pytest.raises(BlockedURLError, match="after DNS resolution"):
            _fetch(f"http://innocent.example:{server.port}/", allow=("127.0.0.1",))
        with pytest.raises(BlockedURLError, match="private"):
            _fetch("http://rebind.example/")
        assert server.requests == []


def test_redirect_to_a_private_address_is_refused(fake_dns: dict[str, str]) -> None:  # noqa: F811
    targets = {"/to-private": "http://10.0.0.7/admin", "/to-metadata": "http://169.254.169.254/latest/",
               "/to-name": "http://internal.example/", "/to-file": "file:///etc/passwd"}  # fmt: skip
    fake_dns["internal.example"] = "192.168.0.10"

    def handler(seen: object, h: object) -> None:
        send(h, 302, b"", {"Location": targets[seen.path]})  # type: ignore[attr-defined]

    with LoopbackServer(handler) as server:
        for path, match in [
            ("/to-private", "private"),
            ("/to-metadata", "metadata"),
            ("/to-name", "private"),
            ("/to-file", "file://"),
        ]:
            with pytest.raises(BlockedURLError, match=match):
                _fetch(server.url + path, allow=("127.0.0.1",))
        assert len(server.requests) == 4  # one each: the redirect was never followed


def _big_body(declare_length: bool) -> object:
    total = 50 * 1024 * 1024
    chunk = b"a" * 65536

    def handler(seen: object, h: object) -> None:
        h.send_response(200)  # type: ignore[attr-defined]
        h.send_header("Content-Type", "text/plain")  # type: ignore[attr-defined]
        if declare_length:
            h.send_header("Content-Length", str(total))  # type: ignore[attr-defined]
        h.end_headers()  # type: ignore[attr-defined]
        for _ in range(total // len(chunk)):
            h.wfile.write(chunk)  # type: ignore[attr-defined]

    return handler


@pytest.mark.parametrize("declare_length", [True, False])
def test_50_mb_body_is_refused(declare_length: bool) -> None:
    with LoopbackServer(_big_body(declare_length)) as server:
        started = time.perf_counter()
        with pytest.raises(BlockedURLError, match="byte limit"):
            _fetch(server.url + "/big", allow=("127.0.0.1",), max_bytes=1_000_000)
        assert time.perf_counter() - started < 10


def test_slow_loris_server_is_cut_off() -> None:
    def handler(seen: object, h: object) -> None:
        h.send_response(200)  # type: ignore[attr-defined]
        h.send_header("Content-Type", "text/html")  # type: ignore[attr-defined]
        h.end_headers()  # type: ignore[attr-defined]
        for _ in range(50):  # one byte every 0.2 s, 10 s at most
            h.wfile.write(b"<")  # type: ignore[attr-defined]
            h.wfile.flush()  # type: ignore[attr-defined]
            time.sleep(0.2)

    with LoopbackServer(handler) as server:
        started = time.perf_counter()
        with pytest.raises(FetchError, match="within 1s"):
            _fetch(server.url + "/slow", allow=("127.0.0.1",), timeout=1.0)
        assert time.perf_counter() - started < 3


@pytest.mark.parametrize(
    "content_type", ["application/pdf", "image/png", "application/octet-stream", "video/mp4"]
)
def test_non_text_content_types_are_refused(content_type: str) -> None:
    with (
        LoopbackServer(lambda seen, h: send(h, body=b"%PDF-1.7 binary", content_type=content_type)) as server,
        pytest.raises(BlockedURLError, match="not a web page"),
    ):
        _fetch(server.url + "/file", allow=("127.0.0.1",))


def test_too_many_redirects() -> None:
    with LoopbackServer(lambda seen, h: send(h, 302, b"", {"Location": "/again"})) as server:
        with pytest.raises(FetchError, match="redirects"):
            _fetch(server.url + "/start", allow=("127.0.0.1",), max_redirects=3)
        assert len(server.requests) == 4
