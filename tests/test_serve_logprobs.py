"""`logprobs` / `top_logprobs` on `ores serve`'s /v1/chat/completions: the request fields and the
answer's shape against a scripted engine (no torch in the test process), then the real engine's
top-k through the embedded SmolLM2."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from oresearch_cli.server.engine import Delta, Done, GenerationRequest  # noqa: E402
from oresearch_cli.server.openai_api import OpenAIServer  # noqa: E402

MESSAGES = [{"role": "user", "content": "Rate it."}]
VOCAB = {1: "Clarity", 2: ":", 3: " 7", 4: " 8", 5: "\ufffd", 6: " 6"}


class ScriptedEngine:
    """What OpenAIServer needs of an engine; every request gets "Clarity: 7" and these log probs."""

    grammars = None
    context_length = 4096
    cache_tokens = 4096
    default_sampling = (0.0, 1.0)
    in_flight = 0

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        return [0] * len(messages)

    def encode_text(self, text: str) -> list[int]:
        return [0]

    def token_texts(self, ids: list[int]) -> list[str]:
        return [VOCAB[i] for i in ids]

    def submit(self, request: GenerationRequest) -> None:
        self.requests.append(request)
        k = request.params.top_logprobs
        tops = ((1, -0.1), (5, -3.0)), ((2, 0.0),), ((3, -0.5), (4, -1.2), (6, -math.inf))
        request._emit(Delta("Clarity: 7"))
        request._emit(
            Done("stop", 3, 3, token_ids=(1, 2, 3), logprobs=(-0.1, 0.0, -0.5),
                 top_logprobs=tuple(t[:k] for t in tops) if k else ())
        )  # fmt: skip


@pytest.fixture
def served() -> tuple[TestClient, ScriptedEngine]:
    engine = ScriptedEngine()
    return TestClient(OpenAIServer(engine, "m").app()), engine  # type: ignore[arg-type]


def post(client: TestClient, path: str = "/v1/chat/completions", **body: Any) -> Any:
    return client.post(path, content=json.dumps({"model": "m", "messages": MESSAGES, **body}))


def test_logprobs_come_back_in_openai_shape(served: tuple[TestClient, ScriptedEngine]) -> None:
    client, engine = served
    answer = post(client, logprobs=True, top_logprobs=3)
    assert answer.status_code == 200, answer.text
    assert engine.requests[0].params.top_logprobs == 3
    choice = answer.json()["choices"][0]
    assert choice["message"]["content"] == "Clarity: 7"
    content = choice["logprobs"]["content"]
    assert [c["token"] for c in content] == ["Clarity", ":", " 7"]
    assert [c["logprob"] for c in content] == [-0.1, 0.0, -0.5]
    assert content[2]["bytes"] == [32, 55]
    assert content[2]["top_logprobs"] == [
        {"token": " 7", "logprob": -0.5, "bytes": [32, 55]},
        {"token": " 8", "logprob": -1.2, "bytes": [32, 56]},
        {"token": " 6", "logprob": -9999.0, "bytes": [32, 54]},  # -inf has no JSON: OpenAI's floor
    ]
    # part of a multi-byte character: no bytes to give
    assert content[0]["top_logprobs"][1] == {"token": "\ufffd", "logprob": -3.0, "bytes": None}


def test_logprobs_without_alternatives_and_not_asked(served: tuple[TestClient, ScriptedEngine]) -> None:
    client, engine = served
    only = post(client, logprobs=True).json()["choices"][0]["logprobs"]["content"]
    assert [c["top_logprobs"] for c in only] == [[], [], []] and engine.requests[0].params.top_logprobs == 0
    plain = post(client).json()["choices"][0]
    assert plain["logprobs"] is None and engine.requests[1].params.top_logprobs == 0
    off = post(client, logprobs=False, top_logprobs=0).json()["choices"][0]
    assert off["logprobs"] is None


@pytest.mark.parametrize(
    ("path", "extra", "needle"),
    [
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs needs logprobs: true"),
        (
            "/v1/chat/completions",
            {"logprobs": True, "top_logprobs": 21},
            "top_logprobs must be an integer from 0 to 20",
        ),
        ("/v1/chat/completions", {"logprobs": "yes"}, "logprobs must be true or false"),
        ("/v1/chat/completions", {"logprobs": True, "stream": True}, "logprobs: not supported with stream"),
        ("/v1/completions", {"prompt": "x", "logprobs": 2}, "logprobs: not supported on /v1/completions"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(
    served: tuple[TestClient, ScriptedEngine], path: str, extra: dict[str, Any], needle: str
) -> None:
    client, engine = served
    answer = post(client, path, **extra)
    assert answer.status_code == 400 and needle in answer.json()["error"]["message"]
    assert not engine.requests


def test_top_logprobs_from_the_real_engine(embedded_server: tuple[str, str]) -> None:
    """The embedded SmolLM2, greedy: one entry per generated token, the alternatives in order with
    the chosen token first (greedy picks the likeliest), log probs of a distribution."""
    import httpx

    base_url, model = embedded_server
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6,
            "temperature": 0, "logprobs": True, "top_logprobs": 5}  # fmt: skip
    answer = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120, trust_env=False).json()
    choice = answer["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == answer["usage"]["completion_tokens"] >= 1
    assert "".join(c["token"] for c in content).startswith(choice["message"]["content"])
    for entry in content:
        top = entry["top_logprobs"]
        assert len(top) == 5 and len({t["token"] for t in top}) >= 4
        values = [t["logprob"] for t in top]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-4
        assert top[0]["token"] == entry["token"]  # greedy: the chosen token is the likeliest
        assert top[0]["logprob"] == pytest.approx(entry["logprob"], abs=1e-4)
