"""A judge that asks for top log probs where the endpoint gives them, for probability-weighted
scores (`llm.logprob_scores`): the quality judge and DRB's RACE both ask through it.

    judge = LogprobJudge(llm, top_logprobs=5, support=LogprobSupport())
    judged = await ask_for_scores(judge, ...)      # as with the plain client
    judge.last.text, judge.last.logprobs           # the reply the scores were read from

An endpoint that refuses the fields (400/422 naming log probs) is asked without them from then
on, for the whole run (`LogprobSupport`), and the plain written scores are used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from oresearch_cli.llm.client import ChatResult
from oresearch_cli.llm.errors import LLMError

log = logging.getLogger(__name__)


@dataclass
class LogprobSupport:
    """Whether the judge endpoint refused the log-prob fields once (then they are left out); one
    per run, shared by its calls."""

    refused: bool = False


class LogprobJudge:
    """The judge as `ask_for_scores` sees it: each chat asks for top log probs when `top_logprobs`
    is set (and the endpoint has not refused them), and the last reply is kept, the one whose
    text the accepted scores were read from."""

    def __init__(self, llm: Any, top_logprobs: int | None, support: LogprobSupport) -> None:
        self.llm = llm
        self.config = llm.config
        self.top_logprobs = top_logprobs
        self.support = support
        self.last: ChatResult | None = None

    async def chat(self, role: str, messages: Any, **kwargs: Any) -> ChatResult:
        result: ChatResult | None = None
        if self.top_logprobs is not None and not self.support.refused:
            try:
                result = await self.llm.chat(role, messages, top_logprobs=self.top_logprobs, **kwargs)
            except LLMError as exc:
                if exc.status not in (400, 422) or "logprob" not in str(exc).lower():
                    raise
                if not self.support.refused:
                    log.warning("the judge endpoint refuses log probs (%s); scoring without them", exc)
                self.support.refused = True
        if result is None:
            result = await self.llm.chat(role, messages, **kwargs)
        self.last = result
        return result
