"""Errors of the LLM client. Each is an `OresError`: one line, `where: what; how to fix`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oresearch_cli.errors import ConfigError, OresError

if TYPE_CHECKING:
    from oresearch_cli.llm.client import ChatResult


class LLMConfigError(ConfigError):
    """The LLM configuration is unusable: no model, a bad YAML file, an unknown role, a key
    variable that is named but not set."""


class LLMError(OresError):
    """A chat call that failed: the endpoint refused it, or kept failing until the retries ran out.

    `role`, `base_url` (without credentials), `status` (HTTP status, None for network errors),
    `attempts` and `retryable` (whether the last failure was of a kind worth retrying later)
    say what happened, for callers that decide what to do next.
    """

    def __init__(
        self,
        message: str,
        *,
        role: str = "",
        base_url: str = "",
        status: int | None = None,
        attempts: int = 0,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.role = role
        self.base_url = base_url
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


class MalformedOutput(LLMError):
    """The model answered, but not with the JSON the caller asked for.

    `raw` is the model's text and `result` the whole `ChatResult` (tokens were spent and are
    recorded), so the caller can retry with a stricter prompt or repair the text itself.
    """

    def __init__(self, message: str, *, raw: str, result: ChatResult | None = None, reason: str = "") -> None:
        super().__init__(
            message,
            role=result.role if result is not None else "",
            base_url=result.base_url if result is not None else "",
            attempts=result.attempts if result is not None else 0,
        )
        self.raw = raw
        self.result = result
        self.reason = reason
