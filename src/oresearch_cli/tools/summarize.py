"""Optional crawl summaries: an LLM condenses a page with the agent's current think and query.

Off by default. When on, `crawl_page` shows the summary instead of the raw page (as
O-Researcher's crawl server does). Any object with `async summarize(page, context) -> str` works;
`ChatSummarizer` calls an OpenAI-compatible chat endpoint (the llm "summarizer" role).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from oresearch_cli.tools.base import Page
from oresearch_cli.tools.errors import BackendUnavailableError

PROMPT_RESOURCE = ("oresearch_cli", "prompts/tools/summarize_page.txt")
MAX_PAGE_CHARS = 60_000


@dataclass(frozen=True)
class SummaryContext:
    """What the agent was after when it crawled: its last <think> and <web_search> and the task."""

    think: str = ""
    query: str = ""
    task: str = ""

    @property
    def key(self) -> str:
        return f"{self.task}\x00{self.query}\x00{self.think}"


class Summarizer(Protocol):
    model: str

    async def summarize(self, page: Page, context: SummaryContext) -> str: ...


def summary_prompt(page: Page, context: SummaryContext) -> str:
    template = resources.files(PROMPT_RESOURCE[0]).joinpath(PROMPT_RESOURCE[1]).read_text(encoding="utf-8")
    return template.format(
        task=context.task or "(not given)",
        query=context.query or "(not given)",
        think=context.think or "(not given)",
        url=page.final_url or page.url,
        title=page.title,
        page=page.text[:MAX_PAGE_CHARS],
    )


class ChatSummarizer:
    """Summaries from an OpenAI-compatible `/chat/completions` endpoint (`openai.AsyncOpenAI`)."""

    def __init__(self, client: Any, model: str, *, max_tokens: int = 1024, temperature: float = 0.0) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature

    @classmethod
    def create(cls, base_url: str, model: str, api_key: str | None = None, **kwargs: Any) -> ChatSummarizer:
        import openai

        client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", max_retries=3, timeout=120.0
        )
        return cls(client, model, **kwargs)

    async def summarize(self, page: Page, context: SummaryContext) -> str:
        try:
            completion = await self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {
                        "role": "system",
                        "content": "You extract what a research agent needs from one web page.",
                    },
                    {"role": "user", "content": summary_prompt(page, context)},
                ],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        except Exception as exc:  # the openai client raises its own error types
            raise BackendUnavailableError(
                f"summarizer: the {self.model} endpoint failed ({type(exc).__name__}: {exc}); check the summarizer base URL and model"
            ) from None
        content = completion.choices[0].message.content or ""
        return content.strip()


class RoleSummarizer:
    """Summaries through the project's LLM client (`oresearch_cli.llm.LLMClient`) and its
    `summarizer` role, so the role's endpoints, limits, retries and call log apply:

        RoleSummarizer(llm, model=config.role("summarizer").model)
    """

    def __init__(self, llm: Any, model: str, role: str = "summarizer", max_tokens: int = 1024) -> None:
        self.llm = llm
        self.model = model  # part of the cache key
        self.role = role
        self.max_tokens = max_tokens

    async def summarize(self, page: Page, context: SummaryContext) -> str:
        messages = [
            {"role": "system", "content": "You extract what a research agent needs from one web page."},
            {"role": "user", "content": summary_prompt(page, context)},
        ]
        try:
            result = await self.llm.chat(self.role, messages, max_tokens=self.max_tokens)
        except Exception as exc:  # the llm client's own errors; the crawl falls back to raw text
            raise BackendUnavailableError(
                f"summarizer: the {self.role} role failed ({exc}); check the llm configuration"
            ) from None
        return str(result.text).strip()
