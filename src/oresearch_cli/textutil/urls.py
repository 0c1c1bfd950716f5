"""The two ways the project spells a URL, in one place.

* `page_key(url)`: the identity of a page across its spellings, for de-duplication, matching a
  report's references to the pages a trace observed, and the corpus store's URL lookup. Not a URL:
  it drops the scheme (http and https are one page) and decodes percent-encoding.
* `canonical_url(url)`: a fetchable URL in one canonical spelling, for crawl requests and the
  tool-cache keys.

A change to `page_key`'s rules changes stored keys: the corpus document store then needs a
migration step that recomputes them (see `tools/corpus/store.py`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

_TRAILING = ".,;:!?*_~'\")]}>"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WEB_SCHEMES = ("http", "https", "")


def clean_url(url: str) -> str:
    """Drop punctuation that ends a sentence rather than the URL; keep a `)` the URL opened."""
    url = url.strip()
    while url and url[-1] in _TRAILING:
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        url = url[:-1]
    return url


def page_key_reference(url: str) -> str:
    """`page_key`'s rules written plainly with `urlsplit` (the fast path must agree with it):

    trailing sentence punctuation cleaned (`clean_url`); scheme dropped for http/https (other
    schemes keep theirs); host lowercased, `www.` and user info dropped; the scheme's default port
    dropped, another port kept; fragment dropped; trailing slashes dropped; path and query
    percent-decoded, the query's order kept. An unparsable URL is its lowercased cleaned self."""
    url = clean_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # e.g. an unbalanced `[` reads as a broken IPv6 host, or a bad port
        return url.lower()
    host = host.removeprefix("www.")
    if port is not None and _DEFAULT_PORTS.get(parts.scheme) != port:
        host = f"{host}:{port}"
    if parts.scheme not in _WEB_SCHEMES:
        host = f"{parts.scheme}:{'//' if parts.netloc else ''}{host}"
    path = unquote(parts.path).rstrip("/")
    query = f"?{unquote(parts.query)}" if parts.query else ""
    return f"{host}{path}{query}"


# The common case: http(s), a plain ASCII host without user info, port or IPv6 brackets, nothing
# that urlsplit would strip or reject. Anything else goes to the reference.
_PLAIN = re.compile(r"(?i:https?)://([a-zA-Z0-9.\-_~]*)((?:[/?][^#\t\r\n]*)?)(?:#[^\t\r\n]*)?")


@lru_cache(maxsize=65536)  # the same pages recur across search hits, observations and traces
def page_key(url: str) -> str:
    """A key shared by the spellings of one page: scheme, `www.`, case of the host, the default
    port, a trailing slash, the fragment and percent-encoding make no difference (see
    `page_key_reference` for the rules)."""
    if not url or url[-1] in _TRAILING or url[0].isspace() or url[-1].isspace():
        return page_key_reference(url)
    m = _PLAIN.fullmatch(url)
    if m is None:
        return page_key_reference(url)
    host = m.group(1).lower().removeprefix("www.")
    path, sep, query = m.group(2).partition("?")
    if "%" in path:
        path = unquote(path)
    path = path.rstrip("/")
    if not query:
        return f"{host}{path}"
    if "%" in query:
        query = unquote(query)
    return f"{host}{path}?{query}"


def canonical_url(url: str) -> str:
    """A URL in one fetchable spelling, for crawl requests and the tool-cache keys: scheme and host
    lowercased, the default port, the fragment and a trailing slash dropped, query parameters
    sorted. The rules are part of the cache keys: changing them orphans every cached page."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port if parts.port and (scheme, parts.port) not in (("http", 80), ("https", 443)) else None
    netloc = f"{host}:{port}" if port else host
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    path = parts.path or "/"
    if len(path) > 1:
        path = path.rstrip("/")
    query = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return urlunsplit((scheme, netloc, path, query, ""))
