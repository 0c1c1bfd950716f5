"""Turning fetched or stored documents into (title, main text).

HTML goes through trafilatura (boilerplate removed, tables kept); when trafilatura finds no main
text, the page is cleaned with lxml_html_clean and its visible text is kept. The title always
comes from `<title>` (else the first `<h1>`). Markdown's title is its first heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.html

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset(
    {
        "text/plain",
        "text/markdown",
        "text/x-markdown",
        "text/csv",
        "text/xml",
        "application/xml",
        "application/json",
    }
)

_BLANKS = re.compile(r"\n{3,}")
_SPACES = re.compile(r"[ \t\u00a0]+")


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str
    canonical_url: str | None = None


def _clean_text(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def decode_html(data: bytes, charset: str | None = None) -> str:
    """HTML bytes as text: the declared charset (HTTP header, then <meta>), else UTF-8, else cp1252."""
    declared = _META_CHARSET.search(data[:4096])
    candidates = [charset, declared.group(1).decode("ascii", "ignore") if declared else None, "utf-8"]
    for encoding in candidates:
        if encoding:
            try:
                return data.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("cp1252", errors="replace")


def _parse(html: str) -> lxml.html.HtmlElement | None:
    try:
        return lxml.html.document_fromstring(_XML_DECLARATION.sub("", html, count=1))
    except (ValueError, lxml.etree.ParserError):
        return None


def html_title(tree: lxml.html.HtmlElement | None) -> str:
    if tree is None:
        return ""
    for path in (".//title", ".//h1"):
        node = tree.find(path)
        if node is not None:
            text = " ".join(node.text_content().split())
            if text:
                return text
    return ""


def html_canonical(tree: lxml.html.HtmlElement | None) -> str | None:
    if tree is None:
        return None
    for link in tree.iterfind(".//link"):
        if (link.get("rel") or "").lower() == "canonical" and (href := link.get("href")):
            return href.strip()
    return None


def extract_html(html: str | bytes, url: str | None = None, charset: str | None = None) -> Extracted:
    """Title (from <title>), main text (trafilatura, else all visible text) and canonical URL."""
    if isinstance(html, bytes):
        html = decode_html(html, charset)
    import trafilatura  # imported here: it takes a third of a second, and most commands never need it
    from lxml_html_clean import Cleaner

    tree = _parse(html)
    title = html_title(tree)
    text = None
    try:
        text = trafilatura.extract(
            _XML_DECLARATION.sub("", html, count=1),
            url=url,
            include_comments=False,
            include_tables=True,
            favor_recall=True,
            deduplicate=False,
        )
    except Exception:  # trafilatura raises assorted errors on odd markup; fall back below
        text = None
    if not text and tree is not None:
        try:
            cleaner = Cleaner(
                scripts=True,
                javascript=True,
                style=True,
                comments=True,
                forms=True,
                meta=True,
                page_structure=False,
            )
            cleaned = cleaner.clean_html(tree)
            body = cleaned.find(".//body")
            text = (body if body is not None else cleaned).text_content()
        except (ValueError, TypeError):
            text = None
    # Permalink marks (Sphinx, MkDocs) are noise in text.
    text = (text or "").replace("\u00b6", "")
    return Extracted(title=title, text=_clean_text(text), canonical_url=html_canonical(tree))


def extract_markdown(text: str) -> Extracted:
    title = ""
    for line in text.splitlines():
        match = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            title = match.group(1).strip()
            break
    if not title:  # a front-matter title, else none
        match = re.search(r"^title:\s*[\"']?(.+?)[\"']?\s*$", text[:2000], re.MULTILINE)
        title = match.group(1) if match else ""
    return Extracted(title=title, text=_clean_text(text))


def extract_text(text: str) -> Extracted:
    return Extracted(title="", text=_clean_text(text))


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def content_charset(content_type: str | None) -> str | None:
    match = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def extract(body: str | bytes, content_type: str | None, url: str | None = None) -> Extracted:
    """Dispatch on the media type; an unknown or missing type is sniffed as HTML or text."""
    kind = media_type(content_type)
    charset = content_charset(content_type)
    if kind in HTML_TYPES:
        return extract_html(body, url, charset)
    text = decode_html(body, charset) if isinstance(body, bytes) else body
    if kind in ("text/markdown", "text/x-markdown"):
        return extract_markdown(text)
    if kind in TEXT_TYPES:
        return extract_text(text)
    head = text[:1000].lstrip().lower()
    if head.startswith(("<!doctype html", "<html")) or "<body" in head:
        return extract_html(text, url)
    return extract_text(text)
