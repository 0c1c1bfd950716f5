"""The LLM client's parts on their own: routing, limits, lenient JSON, redaction."""

from __future__ import annotations

import asyncio
import time

import pytest

from oresearch_cli.llm.jsonout import JSONExtractError, check_schema, extract_json
from oresearch_cli.llm.limits import TokenBucket
from oresearch_cli.llm.redact import redact, safe_url
from oresearch_cli.llm.routing import Router, rank
from oresearch_cli.textutil.tokens import estimate_message_tokens

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]


def test_rank_is_stable_and_moves_few_keys_when_a_url_is_added() -> None:
    keys = [f"question-{i}" for i in range(400)]
    before = {k: rank(URLS, k)[0] for k in keys}
    assert before == {k: rank(list(reversed(URLS)), k)[0] for k in keys}  # order of the list is irrelevant
    counts = [list(before.values()).count(u) for u in URLS]
    assert min(counts) > 60  # roughly even
    after = {k: rank([*URLS, "http://10.0.0.9:8000/v1"], k)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "http://10.0.0.9:8000/v1" for k in moved)
    assert 40 < len(moved) < 130  # about a fifth


def test_router_cooldown_and_recovery() -> None:
    router = Router(cooldown_s=0.2, failures_to_cooldown=2)
    key = "q1"
    first, second = rank(URLS[:2], key)
    assert router.route(URLS[:2], key) == first
    for _ in range(2):
        router.begin(first)
        router.end(first, ok=False, endpoint_fault=True)
    assert router.cooling_down(first)
    assert router.route(URLS[:2], key) == second
    # A 4xx is the request's fault, not the endpoint's.
    router.begin(second)
    router.end(second, ok=False, endpoint_fault=False)
    assert not router.cooling_down(second)
    time.sleep(0.25)
    assert router.route(URLS[:2], key) == first


def test_router_uses_the_soonest_recovering_url_when_all_cool_down() -> None:
    router = Router(cooldown_s=10, failures_to_cooldown=1)
    for url in URLS[:2]:
        router.begin(url)
        router.end(url, ok=False, endpoint_fault=True)
    assert router.route(URLS[:2], "q") == URLS[0]


def test_router_without_affinity_prefers_idle_urls() -> None:
    router = Router()
    router.begin(URLS[0])
    assert {router.route(URLS[:2]) for _ in range(4)} == {URLS[1]}
    router.end(URLS[0], ok=True)
    assert {router.route(URLS[:2]) for _ in range(4)} == set(URLS[:2])


def test_token_bucket_waits_and_takes_debt() -> None:
    async def main() -> tuple[float, float]:
        bucket = TokenBucket(per_minute=600)  # 10 a second
        await bucket.acquire(1e9)  # larger than a minute's budget: clamped to it, still goes
        bucket.adjust(-3)  # 3 given back
        started = time.monotonic()
        await bucket.acquire(5)  # 2 missing: 0.2 s
        waited = time.monotonic() - started
        bucket.adjust(2)  # used 2 more than estimated: a debt that the next caller waits off
        assert bucket.level < 0
        started = time.monotonic()
        await bucket.acquire(1)
        return waited, time.monotonic() - started

    waited, waited_debt = asyncio.run(main())
    assert 0.15 <= waited <= 0.5
    assert 0.2 <= waited_debt <= 0.6


def test_estimate_tokens() -> None:
    messages = [
        {"role": "user", "content": "x" * 400},
        {"role": "user", "content": [{"type": "text", "text": "y" * 40}]},
    ]
    assert estimate_message_tokens(messages) == 110 + 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Here it is: {"a": {"b": "}"}} and more {"c": 2}', {"a": {"b": "}"}}),
        ('<think>maybe {"a": 0}</think>{"a": 2}', {"a": 2}),
        ('Use the {format}. {"a": 3}', {"a": 3}),
        ('{"s": "say \\"hi\\" {"}', {"s": 'say "hi" {'}),
    ],
)
def test_extract_json(text: str, expected: dict) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1}, "missing required key(s) 'b'"),
        ({"a": "1", "b": True}, "'a' should be integer"),
        ({"a": True, "b": True}, "'a' should be integer"),  # a bool is no integer
        ({"a": 1, "b": "maybe"}, "'b' should be boolean"),
        ({"a": 1, "b": True, "c": "z"}, "not one of"),
    ],
)
def test_check_schema(value: dict, message: str) -> None:
    schema = {
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "boolean"},
            "c": {"type": "string", "enum": ["x", "y"]},
        },
    }
    with pytest.raises(JSONExtractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_schema(value, schema)
    check_schema({"a": 1, "b": False, "c": "x"}, schema)


def test_redaction() -> None:
    assert (
        safe_url("https://user:pw@api.example.com:8443/v1/?api-key=abc#x")
        == "https://api.example.com:8443/v1"
    )
    assert safe_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
    text = "Incorrect API key provided: sk-proj-abcdef123456. Bearer tok_1234567 and mykeyvalue"
    cleaned = redact(text, {"mykeyvalue"})
    assert "sk-proj" not in cleaned and "tok_1234567" not in cleaned and "mykeyvalue" not in cleaned
