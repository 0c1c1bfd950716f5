"""`ask_structured` against the scripted stand-in: parse, re-ask strictly, record, propagate."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from oresearch_cli.llm import (
    ChatResult,
    FailedReply,
    LLMClient,
    LLMError,
    ReplyError,
    Structured,
    ask_structured,
    load_config,
)

from standin_llm import StandinLLM, error, ok

ENV = {"OPENAI_API_KEY": "sk-test-abcdefghijklmnop0123456789"}
ASK = [
    {"role": "system", "content": "Count things."},
    {"role": "user", "content": "How many moons has Mars?"},
]
SCHEMA = {"type": "object", "properties": {"moons": {"type": "integer"}}, "required": ["moons"]}


def parse_number(result: ChatResult) -> int:
    text = result.text.strip()
    if not text.isdigit():
        raise ReplyError(f"{text[:20]!r} is not a number")
    return int(text)


def restate(messages: list[dict[str, str]], raw: str, reason: str) -> list[dict[str, str]]:
    return [
        *messages,
        {"role": "assistant", "content": raw},
        {"role": "user", "content": f"Not usable: {reason}. Reply with ONLY the number."},
    ]


def ask(url: str, parse: Any = parse_number, **kwargs: Any) -> tuple[Structured[Any], list[ChatResult]]:
    config = load_config(
        overrides={"model": "m", "base_url": url, "backoff_base_s": 0.01, "backoff_max_s": 0.02}, environ=ENV
    )
    replies: list[ChatResult] = []

    async def main() -> Structured[Any]:
        async with LLMClient(config, environ=ENV) as llm:
            return await ask_structured(
                llm, "worker", ASK, parse, restate=restate, on_reply=replies.append, **kwargs
            )

    return asyncio.run(main()), replies


def test_a_usable_first_reply_is_the_value() -> None:
    with StandinLLM() as srv:
        srv.push(ok("2"))
        asked, replies = ask(srv.url)
        assert len(srv.chat_requests()) == 1
    assert (asked.value, asked.attempts, asked.failed) == (2, 1, [])
    assert [r.text for r in replies] == ["2"]


def test_an_unusable_reply_is_recorded_and_asked_again_with_the_restated_prompt() -> None:
    with StandinLLM() as srv:
        srv.push(ok("Two, I believe."), ok("2"))
        asked, replies = ask(srv.url)
        second = srv.chat_requests()[1].json()["messages"]
    assert (asked.value, asked.attempts) == (2, 2)
    assert asked.failed == [FailedReply(1, "'Two, I believe.' is not a number", "Two, I believe.")]
    assert second[:2] == ASK and second[2] == {"role": "assistant", "content": "Two, I believe."}
    assert second[3]["content"].startswith("Not usable: 'Two, I believe.' is not a number.")
    assert len(replies) == 2  # the unusable reply's tokens were spent too


def test_always_unusable_gives_none_and_one_failure_per_attempt() -> None:
    with StandinLLM(lambda request: ok("many")) as srv:
        asked, _ = ask(srv.url, max_attempts=3)
        assert len(srv.chat_requests()) == 3
    assert asked.value is None and asked.attempts == 3
    assert [(f.attempt, f.raw) for f in asked.failed] == [(1, "many"), (2, "many"), (3, "many")]


def test_malformed_json_from_chat_json_counts_as_an_unusable_reply() -> None:
    with StandinLLM() as srv:
        srv.push(ok("Mars has two moons."), ok('```json\n{"moons": 2}\n```'))
        asked, replies = ask(srv.url, parse=lambda r: r.data["moons"], schema=SCHEMA, json_object=True)
    assert (asked.value, asked.attempts) == (2, 2)
    assert asked.failed == [FailedReply(1, "the answer holds no JSON object", "Mars has two moons.")]
    assert len(replies) == 2


def test_an_endpoint_error_propagates_with_the_failures_so_far_in_the_callers_list() -> None:
    failed: list[FailedReply] = []
    with StandinLLM() as srv:
        srv.push(ok("lots"), error(400, "bad request"))
        with pytest.raises(LLMError) as info:
            ask(srv.url, max_attempts=3, failed=failed)
        assert len(srv.chat_requests()) == 2
    assert "HTTP 400" in str(info.value)
    assert [(f.attempt, f.raw) for f in failed] == [(1, "lots")]
