"""Structured output from `ores serve` on a CPU, through a real model behind the real server.

In CI the model is the tiny random-weight Llama (`served_model`, nonsense text, SmolLM2's tokenizer):
whatever it wants to write, the grammar must keep every reply valid against the schema, at
temperature 1.0 and for many seeds. Under `-m slow` the embedded SmolLM2 runs the same tests.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from oresearch_cli.agent.schemas import schema, step_schema

from model_support import served_model, skip_without_local_stack  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")

PIECE_SCHEMAS = {
    "subtasks": schema("subtasks", min_subtasks=2, max_subtasks=4),
    "step": step_schema(actions=("search", "crawl", "answer"), n_sources=5, need_plan=True),
    "answer": schema("answer", n_sources=3),
}
MESSAGES = [{"role": "user", "content": "Why is the Amazon rainforest important for the global climate?"}]


def _client(base_url: str):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


def _json_schema(body: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "piece", "schema": body, "strict": False}}


@pytest.fixture(scope="module")
def client(served_model):  # noqa: F811
    skip_without_local_stack()
    base_url, model_name, kind = served_model
    return _client(base_url), model_name, kind


@pytest.mark.parametrize("piece", sorted(PIECE_SCHEMAS))
def test_json_schema_replies_always_validate(client, piece):
    llm, model, kind = client
    body = PIECE_SCHEMAS[piece]
    seeds = range(6 if kind == "tiny" else 3)

    def ask(seed: int):
        return llm.chat.completions.create(
            model=model, messages=MESSAGES, temperature=1.0, seed=seed, max_tokens=2000,
            response_format=_json_schema(body),
        )  # fmt: skip

    with ThreadPoolExecutor(len(seeds)) as pool:  # concurrent: rows of one batch, each with its grammar
        replies = list(pool.map(ask, seeds))
    texts = []
    for reply in replies:
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        data = json.loads(choice.message.content)
        jsonschema.validate(data, body)
        texts.append(choice.message.content)
        assert reply.usage.completion_tokens > 0
    assert len(set(texts)) > 1  # sampled per seed, not one reply repeated


def test_json_object_and_free_text_share_a_batch(client):
    llm, model, _ = client

    def ask(seed: int):
        extra = {"response_format": {"type": "json_object"}} if seed % 2 else {}
        return seed, llm.chat.completions.create(
            model=model, messages=MESSAGES, temperature=1.0, seed=seed, max_tokens=300, **extra
        )

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(4)))
    for seed, reply in replies:
        text = reply.choices[0].message.content
        if seed % 2:
            if reply.choices[0].finish_reason == "stop":  # a free JSON object may run past the cap
                assert isinstance(json.loads(text), dict)
            else:
                assert text.startswith("{")
        else:
            assert text  # unconstrained: whatever the model writes


def test_streaming_with_a_schema(client):
    llm, model, _ = client
    body = PIECE_SCHEMAS["answer"]
    stream = llm.chat.completions.create(
        model=model, messages=MESSAGES, temperature=1.0, seed=7, max_tokens=2000, stream=True,
        stream_options={"include_usage": True}, response_format=_json_schema(body),
    )  # fmt: skip
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0
    jsonschema.validate(json.loads("".join(parts)), body)
    assert sum(1 for p in parts if p) > 1  # it came in pieces


def test_stop_strings_end_the_text_before_them(client):
    llm, model, _ = client
    for seed in range(4):
        free = llm.completions.create(
            model=model, prompt="The forest", max_tokens=40, temperature=1.0, seed=seed
        )
        text = free.choices[0].text
        if len(text) < 6:
            continue
        stop = text[3:6]  # a string it certainly writes with this seed
        cut = llm.completions.create(
            model=model, prompt="The forest", max_tokens=40, temperature=1.0, seed=seed, stop=[stop]
        )
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].text == text[: text.index(stop)]
        return
    pytest.fail("the model wrote under 6 characters for every seed")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"response_format": {"type": "xml"}}, "response_format type 'xml' is not supported"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "needs `json_schema"),
        ({"n": 2}, "n: only one choice"),
        ({"top_logprobs": 2}, "top_logprobs needs logprobs"),
        ({"temperature": 7}, "temperature must be"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(client, extra, needle):
    llm, model, _ = client
    with pytest.raises(openai.BadRequestError) as caught:
        llm.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, **extra)
    assert needle in str(caught.value)


def test_a_client_that_disconnects_stops_its_generation(served_model):  # noqa: F811
    import time

    import httpx

    base_url, model, _ = served_model
    health = base_url.removesuffix("/v1") + "/health"
    body = {"model": model, "messages": MESSAGES, "max_tokens": 7000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before 7000 tokens
        httpx.post(f"{base_url}/chat/completions", json=body, timeout=1.5, trust_env=False)
    deadline = time.monotonic() + 10
    while httpx.get(health, trust_env=False).json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(health, trust_env=False).json()["in_flight"] == 0


def test_unknown_model_is_404_naming_the_served_one(client):
    llm, model, _ = client
    with pytest.raises(openai.NotFoundError, match=f"serves '{model}'"):
        llm.chat.completions.create(model="gpt-nope", messages=MESSAGES, max_tokens=5)
