"""Keeping secrets out of everything the client writes: URLs without credentials, texts without keys."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

# Shapes of common API keys (OpenAI `sk-...`, bearer tokens); servers sometimes echo them in errors.
_KEY_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+[A-Za-z0-9_\-.=*]{6,})")


@functools.lru_cache(maxsize=1024)  # called per call with the same few base URLs
def safe_url(url: str) -> str:
    """`url` without user:password and without query or fragment (where tokens like `?key=` hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret and anything shaped like an API key replaced by `***`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_PATTERNS.sub("***", text)
