"""Errors of the research tools.

Every failure a user or the web can cause is a `ToolError` (an `OresError`, so the CLI prints one
line and exits 2). Inside the agent loop, `Toolbox.web_search`/`crawl_page` turn it into
observation text instead, so the agent sees what went wrong and can try something else.
"""

from __future__ import annotations

from oresearch_cli.errors import InputError, OresError


class ToolError(OresError):
    """A search or crawl that could not be answered."""


class BackendConfigError(ToolError):
    """A backend is missing its configuration: an API key, an endpoint URL, an unknown spec."""


class BackendAuthError(BackendConfigError):
    """The service rejected the backend's API key (HTTP 401/403 on every key): every other call
    would fail the same way, so the agent-facing tools raise it instead of observing it."""


class BackendUnavailableError(ToolError):
    """A backend could not be reached, timed out, or kept failing after retries."""


class BackendResponseError(ToolError):
    """A backend answered, but not with something usable (bad status, malformed body)."""


class BlockedURLError(ToolError):
    """The safety policy refused a URL: scheme, private/loopback/metadata address, size, type."""


class FetchError(ToolError):
    """A page could not be fetched or turned into text."""


class CorpusError(ToolError):
    """An unknown corpus name, a corpus that already exists, or a damaged index."""


class CorpusInputError(InputError):
    """A corpus source that cannot be read (missing file, bad JSONL line, no documents)."""


__all__ = [
    "BackendAuthError",
    "BackendConfigError",
    "BackendResponseError",
    "BackendUnavailableError",
    "BlockedURLError",
    "CorpusError",
    "CorpusInputError",
    "FetchError",
    "ToolError",
]
