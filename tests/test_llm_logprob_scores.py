"""Probability-weighted scores from top log probs: the arithmetic on hand-made tokens, finding the
score's token, and `LLMClient.chat(top_logprobs=k)` against the scripted stand-in."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from oresearch_cli.llm import LLMClient, load_config
from oresearch_cli.llm.logprob_scores import (
    TokenLogprob,
    expected_score,
    parse_logprobs,
    score_distribution,
    token_at,
    weighted_score,
)

from standin_llm import StandinLLM, ok, raw

L = math.log


def tok(text: str, p: float = 1.0, *top: tuple[str, float], with_bytes: bool = False) -> TokenLogprob:
    """A token written with probability `p`, its alternatives given as (text, probability)."""
    return TokenLogprob(text, L(p), tuple((t, L(q)) for t, q in top), text.encode() if with_bytes else None)


# --- the arithmetic -------------------------------------------------------------------------------


def test_whole_token_score_is_the_probability_weighted_mean() -> None:
    # "Clarity: 7" as "Clarity", ":", " 7"; " Good" is no score and drops out of the sum
    tokens = [tok("Clarity"), tok(":"), tok(" 7", 0.5, (" 7", 0.5), (" 8", 0.3), (" 6", 0.1), (" Good", 0.1))]
    text = "Clarity: 7"
    assert token_at(tokens, text, 9) == (2, 1)  # the " 7" token, the digit one character in
    expected = (7 * 0.5 + 8 * 0.3 + 6 * 0.1) / 0.9
    assert weighted_score(tokens, text, 9) == pytest.approx(expected)  # 7.2222
    assert score_distribution(tokens, 2) == pytest.approx({6: 0.1 / 0.9, 7: 0.5 / 0.9, 8: 0.3 / 0.9})


def test_a_two_digit_ten_split_into_digits_reads_the_next_position() -> None:
    # SmolLM2 / Llama write "10" as "1", "0": p(10) = p("1") * p("0" next), p(1) = p("1") * p(no digit)
    tokens = [
        tok("Depth"), tok(":"), tok(" "),
        tok("1", 0.6, ("1", 0.6), ("9", 0.3), ("8", 0.1)),
        tok("0", 0.5, ("0", 0.5), ("\n", 0.4), ("5", 0.1)),
        tok("\n"),
    ]  # fmt: skip
    text = "Depth: 10\n"
    p10, p1, p9, p8 = 0.6 * 0.5, 0.6 * (1 - 0.5 - 0.1), 0.3, 0.1  # "15" is no score: dropped
    expected = (10 * p10 + 1 * p1 + 9 * p9 + 8 * p8) / (p10 + p1 + p9 + p8)
    assert weighted_score(tokens, text, 7) == pytest.approx(expected)  # 7.1702
    assert weighted_score(tokens, text, 7, "10") == pytest.approx(expected)


def test_a_whole_ten_token_and_an_unknown_continuation_of_one() -> None:
    # a tokenizer with "10" as one token: "1" is an alternative whose continuation is unknown: 1
    tokens = [tok("Depth"), tok(":"), tok(" 10", 0.7, (" 10", 0.7), (" 9", 0.2), (" 1", 0.1)), tok("\n")]
    assert weighted_score(tokens, "Depth: 10\n", 7) == pytest.approx(10 * 0.7 + 9 * 0.2 + 1 * 0.1)


def test_the_sampled_token_counts_when_the_top_list_left_it_out() -> None:
    tokens = [tok("A: "), tok("3", 0.05, ("7", 0.6), ("8", 0.35))]
    assert weighted_score(tokens, "A: 3", 3) == pytest.approx((3 * 0.05 + 7 * 0.6 + 8 * 0.35) / 1.0)
    # alternatives with the same text are two ways to write it: they add up
    twice = [tok("A: "), tok("7", 0.4, ("7", 0.4), ("7", 0.2), ("9", 0.4))]
    assert weighted_score(twice, "A: 7", 3) == pytest.approx(7 * 0.6 + 9 * 0.4)


def test_without_alternatives_the_written_score_is_the_score() -> None:
    tokens = [tok("A: "), tok("7", 0.9, ("7", 0.9), ("seven", 0.1))]
    assert weighted_score(tokens, "A: 7", 3) == pytest.approx(7.0)
    assert expected_score({}) is None


@pytest.mark.parametrize(
    ("tokens", "text", "offset"),
    [
        ([], "A: 7", 3),  # no log probs at all
        ([tok("A:"), tok(" x7")], "A: x7", 4),  # the number does not start its token
        ([tok("A: "), tok("78")], "A: 7", 3),  # the token holds more than the number
        ([tok("A: 7")], "A: 7", 9),  # an offset outside the text
        ([tok("B: 9")], "A: 7", 3),  # tokens that spell another text
    ],
)
def test_what_cannot_be_read_is_none(tokens: list[TokenLogprob], text: str, offset: int) -> None:
    assert weighted_score(tokens, text, offset) is None


def test_tokens_found_through_bytes_or_by_alignment_when_texts_differ() -> None:
    # "é" split over two tokens: their texts are U+FFFD, their bytes are exact
    top = (("7", 0.5), ("9", 0.5))
    split = [
        TokenLogprob("Clart", 0.0, (), b"Clart"),
        TokenLogprob("\ufffd", 0.0, (), b"\xc3"),
        TokenLogprob("\ufffd", 0.0, (), b"\xa9"),
        TokenLogprob(": ", 0.0, (), b": "),
        TokenLogprob("7", L(0.5), tuple((t, L(p)) for t, p in top), b"7"),
    ]
    text = "Clarté: 7"
    assert token_at(split, text, 8) == (4, 0)
    assert weighted_score(split, text, 8) == pytest.approx(8.0)
    # the same without bytes: the texts are aligned to the reply by matching blocks
    bare = [TokenLogprob(t.token, t.logprob, t.top) for t in split]
    assert token_at(bare, text, 8) == (4, 0)
    assert weighted_score(bare, text, 8) == pytest.approx(8.0)
    # tokens that run on past the text (a stop string cut it) still spell it
    run_on = [tok("A: "), tok("7", 0.5, ("7", 0.5), ("5", 0.5)), tok("\nSTOP")]
    assert weighted_score(run_on, "A: 7\n", 3) == pytest.approx(6.0)


def test_parse_logprobs_reads_openai_content_and_stops_at_a_gap() -> None:
    data = {
        "content": [
            {"token": " 7", "logprob": -0.5, "bytes": [32, 55],
             "top_logprobs": [{"token": " 7", "logprob": -0.5, "bytes": [32, 55]}, {"token": " 8", "logprob": -1.2}]},
            {"token": "\n", "logprob": 0, "bytes": None, "top_logprobs": []},
            {"token": None, "logprob": -1},
            {"token": "x", "logprob": -1},
        ]
    }  # fmt: skip
    tokens = parse_logprobs(data)
    assert tokens == (
        TokenLogprob(" 7", -0.5, ((" 7", -0.5), (" 8", -1.2)), b" 7"),
        TokenLogprob("\n", 0.0, (), None),
    )
    assert parse_logprobs(None) is None and parse_logprobs({"content": None}) is None
    assert parse_logprobs({"content": []}) is None and parse_logprobs("x") is None


# --- the client -----------------------------------------------------------------------------------

ENV = {"OPENAI_API_KEY": "sk-test-abcdefghijklmnop0123456789"}
USER = [{"role": "user", "content": "Rate it."}]


def completion(text: str, logprobs: Any) -> str:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
              "logprobs": logprobs}  # fmt: skip
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [choice],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})  # fmt: skip


async def chat(url: str, **kwargs: Any):
    cfg = load_config(overrides={"model": "m", "base_url": url}, environ=ENV)
    async with LLMClient(cfg, environ=ENV) as llm:
        return await llm.chat("judge", USER, **kwargs)


LOGPROBS = {"content": [{"token": "7", "logprob": -0.1, "top_logprobs": [{"token": "7", "logprob": -0.1}]}]}


def test_chat_asks_for_top_logprobs_only_when_told_and_returns_them() -> None:
    with StandinLLM() as srv:
        srv.push(raw(completion("7", LOGPROBS)), raw(completion("7", LOGPROBS)), ok("7"))
        asked = asyncio.run(chat(srv.url, top_logprobs=3))
        plain = asyncio.run(chat(srv.url))
        none_sent = asyncio.run(chat(srv.url, top_logprobs=3))
        bodies = [r.json() for r in srv.chat_requests()]
    assert bodies[0]["logprobs"] is True and bodies[0]["top_logprobs"] == 3
    assert asked.text == "7" and asked.logprobs == (TokenLogprob("7", -0.1, (("7", -0.1),)),)
    # not asked: nothing in the body, nothing read, even when the endpoint sends some
    assert "logprobs" not in bodies[1] and "top_logprobs" not in bodies[1]
    assert plain.text == "7" and plain.logprobs is None
    # asked, but the endpoint sends none (most do not)
    assert none_sent.text == "7" and none_sent.logprobs is None


@pytest.mark.parametrize("k", [-1, 21, 2.5, True])
def test_top_logprobs_out_of_bounds_is_refused_before_any_call(k: Any) -> None:
    with StandinLLM() as srv, pytest.raises(ValueError, match="top_logprobs must be an integer from 0 to 20"):
        asyncio.run(chat(srv.url, top_logprobs=k))
    assert not srv.chat_requests()
