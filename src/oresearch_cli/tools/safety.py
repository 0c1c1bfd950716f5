"""What a crawl may touch: http(s) only, and never this machine, its network or a cloud metadata
service, unless the user names the host with `--allow-host`.

Two checks, both needed:

* `check_url` before each request and after every redirect: scheme, literal IP addresses and
  well-known internal names, so the error names the URL the agent asked for;
* `SafeNetworkBackend` at connect time: it resolves the host itself, refuses if any address is
  not public, and connects to the address it checked (so DNS rebinding cannot slip in between).

`--allow-host` matches the host exactly as written in the URL (a name or an IP literal).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpcore
import httpx

from oresearch_cli.tools.errors import BlockedURLError, FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
# Cloud metadata services: AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Oracle.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_HOSTNAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
LOCAL_HOSTNAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs a crawl may fetch. `allow_hosts` are exempt from the address checks."""

    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def allowing(cls, hosts: Iterable[str] = ()) -> UrlPolicy:
        return cls(allow_hosts=frozenset(_host_key(h) for h in hosts if h.strip()))

    def allows(self, host: str) -> bool:
        return _host_key(host) in self.allow_hosts


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def blocked_reason(address: IPAddress) -> str | None:
    """Why an address may not be crawled, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a non-public address"
    return None


def _blocked(url: str, host: str, reason: str) -> BlockedURLError:
    return BlockedURLError(
        f"{url}: refused, host {host} is {reason}; crawling stays on public addresses "
        f"unless you pass --allow-host {host}"
    )


def check_url(url: str, policy: UrlPolicy) -> SplitResult:
    """Refuse a URL before any network use: scheme, missing host, literal non-public IPs and
    internal host names. DNS-resolved addresses are checked at connect time."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise BlockedURLError(f"{url}: not a valid URL ({exc}); give a full http(s):// URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise BlockedURLError(
            f"{url}: refused, {shown} URLs cannot be crawled; give an http:// or https:// URL"
        )
    if not host:
        raise BlockedURLError(f"{url}: no host in the URL; give a full http(s):// URL")
    if policy.allows(host):
        return parts
    key = _host_key(host)
    if key in METADATA_HOSTNAMES:
        raise _blocked(url, host, "a cloud metadata service")
    if key in LOCAL_HOSTNAMES or key.endswith(".localhost"):
        raise _blocked(url, host, "this machine")
    address = _literal_address(key)
    if address is not None:
        reason = blocked_reason(address)
        if reason:
            raise _blocked(url, host, reason)
    return parts


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # Forms like 2130706433 or 0x7f.1 that resolvers accept as IPv4 literals.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


async def resolve_checked(host: str, port: int, policy: UrlPolicy) -> list[str]:
    """The host's addresses, after refusing if any of them is not public (unless allowed)."""
    if policy.allows(host):
        return [host]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"{host}: cannot resolve the host name ({exc}); check the URL") from None
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        reason = blocked_reason(address)
        if reason:
            raise _blocked(host, host, f"{reason} ({text}) after DNS resolution")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise FetchError(f"{host}: the host name has no address; check the URL")
    return addresses


class SafeNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that only opens TCP connections to checked addresses.

    TLS still verifies the certificate against the URL's host name, since httpcore passes the
    origin host as `server_hostname` after connecting."""

    def __init__(self, policy: UrlPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self.policy)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedURLError(f"{path}: refused, crawling never uses unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class SafeTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go through `SafeNetworkBackend` (no proxies)."""

    def __init__(self, policy: UrlPolicy, *, max_connections: int = 64) -> None:
        super().__init__(retries=0, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=16,
            keepalive_expiry=5.0,
            network_backend=SafeNetworkBackend(policy),
        )
