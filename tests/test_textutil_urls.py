"""URL identity (`page_key`) and the fetchable canonical form (`canonical_url`): their rules, and
`page_key`'s fast path pinned to its plain `urlsplit` reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oresearch_cli.textutil.urls import canonical_url, clean_url, page_key, page_key_reference
from oresearch_cli.trace import find_urls

DRB = Path(__file__).parent.parent / "data" / "deepresearch_bench" / "sample_reports_claude-3-7-sonnet.jsonl"
FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"

# Every spelling in a row names the same page; the row's key is what they all map to.
PAGE_KEYS = [
    (
        "example.org/Café",
        [
            "https://www.example.org/Caf%C3%A9/",
            "http://example.org/Café",
            "HTTPS://WWW.EXAMPLE.ORG/Caf%c3%a9",
            "https://example.org:443/Café/#section",
            "http://www.example.org:80/Caf%C3%A9//",
            "https://example.org/Café.",  # sentence punctuation after a URL
            "  https://example.org/Café/)  ",
            "https://user@www.example.org/Caf%C3%A9",
        ],
    ),
    ("a.org", ["http://a.org", "https://a.org/", "https://www.A.org/#top", "https://a.org/?"]),
    ("a.org?q=1&b= x", ["https://a.org/?q=1&b=%20x", "http://a.org?q=1&b= x#f"]),
    ("a.org:8080/x", ["http://a.org:8080/x/", "https://A.org:8080/x"]),
    (
        "zh.wikipedia.org/wiki/中",
        ["https://zh.wikipedia.org/wiki/%E4%B8%AD", "https://zh.wikipedia.org/wiki/中"],
    ),
    (
        "en.wikipedia.org/wiki/Foo_(bar)",
        ["https://en.wikipedia.org/wiki/Foo_(bar).", "https://en.wikipedia.org/wiki/Foo_(bar)),"],
    ),
    ("ftp://files.org/a", ["ftp://Files.org/a/"]),  # other schemes keep theirs
    ("corpus://mini/river", ["corpus://mini/river"]),
    ("http://[::1/x", ["http://[::1/x"]),  # unparsable: its lowercased cleaned self
]

# Different pages stay apart.
DISTINCT = [
    ("https://a.org/?q=1", "https://a.org/?q=2"),
    ("https://a.org/x", "https://a.org/X"),  # paths are case-sensitive
    ("https://a.org/x", "https://a.org:8443/x"),
    ("https://a.org/?a=1&b=2", "https://a.org/?b=2&a=1"),  # query order is kept (canonical_url sorts)
    ("https://a.org/x", "ftp://a.org/x"),
    ("http://a.org:443/x", "https://a.org/x"),  # 443 is https's default port, not http's
]


@pytest.mark.parametrize(("key", "spellings"), PAGE_KEYS)
def test_page_key_rules(key: str, spellings: list[str]) -> None:
    for spelling in spellings:
        assert page_key(spelling) == key, spelling
        assert page_key_reference(spelling) == key, spelling


@pytest.mark.parametrize(("a", "b"), DISTINCT)
def test_page_key_keeps_pages_apart(a: str, b: str) -> None:
    assert page_key(a) != page_key(b)


CANONICAL = [
    ("HTTPS://Example.org:443/a/?b=2&a=1#frag", "https://example.org/a?a=1&b=2"),
    ("http://example.org", "http://example.org/"),
    ("http://Example.org:80/", "http://example.org/"),
    ("https://example.org:8443/a//", "https://example.org:8443/a"),
    ("https://user@www.Example.org/a?x=", "https://user@www.example.org/a?x="),  # www. is kept: it is fetched
    ("https://example.org/Caf%C3%A9", "https://example.org/Caf%C3%A9"),  # encoding kept as written
    ("  https://a.org/x  ", "https://a.org/x"),
    ("http://[::1/x", "http://[::1/x"),
]


@pytest.mark.parametrize(("url", "expected"), CANONICAL)
def test_canonical_url_rules(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_clean_url() -> None:
    assert clean_url(" https://a.org/x). ") == "https://a.org/x"
    assert clean_url("https://a.org/Foo_(bar)") == "https://a.org/Foo_(bar)"


# -- page_key's fast path agrees with the reference -----------------------------------------------


def _real_urls() -> list[str]:
    texts = [
        json.loads(line)["article"] for line in DRB.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    texts.append(FIXTURE.read_text(encoding="utf-8"))
    return sorted({u for text in texts for u in find_urls(text)})


def test_fast_path_agrees_on_real_urls() -> None:
    urls = _real_urls()
    assert len(urls) > 100
    for url in urls:
        for spelling in (
            url,
            url.upper(),
            url + "/",
            url + "#x",
            url + ").",
            url.replace("https://", "http://www."),
        ):
            page_key.cache_clear()
            assert page_key(spelling) == page_key_reference(spelling), spelling


_URL_PART = st.text(alphabet="aZ09.-_~/?#&=%:@[]() \t\n\r,;!*'\"<>Éé中\x00", max_size=30)
_URLS = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["http://", "https://", "HTTP://", "Https://", "ftp://", "//", "", " https://"]),
        st.sampled_from(["", "www.", "WWW.", "user@", "a:b@"]),
        st.sampled_from(
            ["a.org", "A.Org", "", "例子.测试", "[::1]", "a.org:80", "a.org:443", "a.org:x", "a_b.org"]
        ),
        _URL_PART,
        st.sampled_from(["", "/", "%2F", "%C3%A9", "%zz", "#f", "?", "?q=%20", ".", ")", " "]),
    ),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_URLS, _URL_PART))
@example("http://a.org%20b/x")
@example("https://a.org/x#y?z")
@example("https://a.org?x=1")
def test_fast_path_agrees_with_reference(url: str) -> None:
    page_key.cache_clear()
    assert page_key(url) == page_key_reference(url)
