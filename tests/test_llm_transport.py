"""How LLMClient sends a call: through the SDK, on SDK clients (one connection pool each) opened
as calls need them and sharing one TLS context, and the retry loop that starts only after a first
failure."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import datetime, timezone
from typing import Any

import openai
import pytest

from oresearch_cli.llm import LLMClient, LLMError, load_config
from oresearch_cli.llm.client import CONNECTIONS_PER_POOL, _Endpoint, _has_ca_dir, shared_ssl_context

from standin_llm import StandinLLM, server_error

KEY = "sk-test-abcdefghijklmnop0123456789"
ENV = {"OPENAI_API_KEY": KEY}
USER = [{"role": "user", "content": "Quelle est la limite de la photosynthèse à midi ? ✓"}]


def config(url: str, **settings: Any):
    base = {"model": "gpt-4o-mini", "base_url": url, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    return load_config(overrides={**base, **settings}, environ=ENV)


def _pools(llm: LLMClient) -> list[int]:
    """Pools opened per endpoint on the (one) event loop the client served."""
    [state] = llm._states.values()
    return [len(endpoint.clients) for endpoint in state.endpoints.values()]


def test_a_call_sends_what_the_sdk_sends() -> None:
    with StandinLLM() as srv:
        body = {"model": "gpt-4o-mini", "messages": USER, "temperature": 0.3, "stop": ["</answer>"]}

        async def main() -> None:
            sdk = openai.AsyncOpenAI(base_url=srv.url, api_key=KEY, max_retries=0)
            try:
                await sdk.post("/chat/completions", cast_to=object, body=body, options={"timeout": 7.0})
            finally:
                await sdk.close()
            async with LLMClient(config(srv.url, timeout_s=7, temperature=0.3), environ=ENV) as llm:
                await llm.chat("worker", USER, stop=["</answer>"])
                await llm.chat("worker", USER, stop=["</answer>"], timeout_s=3)

        asyncio.run(main())
        theirs, ours, shorter = srv.chat_requests()

    assert ours.body == theirs.body  # the same bytes: compact UTF-8 JSON, fields in the same order
    assert ours.headers == theirs.headers
    assert ours.headers["authorization"] == f"Bearer {KEY}"
    assert ours.headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert ours.headers["x-stainless-read-timeout"] == "7.0"
    assert shorter.headers["x-stainless-read-timeout"] == "3"  # a per-call timeout is the SDK's too


def test_pools_open_only_as_calls_need_them_and_share_one_tls_context() -> None:
    shared_ssl_context.cache_clear()
    with StandinLLM(latency=0.2) as srv:
        llm = LLMClient(config(srv.url, max_concurrency=64), environ=ENV)

        async def main() -> tuple[list[int], list[int]]:
            await llm.chat("worker", USER)
            after_one = _pools(llm)
            await asyncio.gather(*(llm.chat("worker", USER) for _ in range(2 * CONNECTIONS_PER_POOL + 8)))
            after_many = _pools(llm)
            await llm.aclose()
            return after_one, after_many

        after_one, after_many = asyncio.run(main())
    assert after_one == [1]  # a cap of 64 allows 4 pools; one call opens one
    assert after_many == [3]  # 40 at once: two full pools of 16 and a third
    info = shared_ssl_context.cache_info()
    assert info.misses == 1 and info.hits == 2  # built once, for the first pool; the others share it


def test_pools_fill_before_another_opens_and_stop_at_the_cap() -> None:
    endpoint = _Endpoint("http://127.0.0.1:9/v1", None, max_pools=2)
    try:
        assert endpoint.pick() == 0 and len(endpoint.clients) == 1
        endpoint.in_flight[0] = CONNECTIONS_PER_POOL - 1
        assert endpoint.pick() == 0  # room left: no new pool
        endpoint.in_flight[0] = CONNECTIONS_PER_POOL
        assert endpoint.pick() == 1 and len(endpoint.clients) == 2
        endpoint.in_flight[1] = CONNECTIONS_PER_POOL + 1
        assert endpoint.pick() == 0 and len(endpoint.clients) == 2  # all full, at the cap: least busy
    finally:
        asyncio.run(endpoint.aclose())


def test_the_shared_tls_context_verifies_with_the_system_cas() -> None:
    shared_ssl_context.cache_clear()
    try:
        context = shared_ssl_context()
        assert context is shared_ssl_context()
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        # CAs loaded up front, or a hashed CA folder OpenSSL reads from as it needs them.
        assert context.cert_store_stats()["x509_ca"] > 0 or _has_ca_dir(ssl.get_default_verify_paths().capath)
    finally:
        shared_ssl_context.cache_clear()


def test_the_shared_tls_context_honours_ssl_cert_file(monkeypatch, tmp_path) -> None:
    import certifi

    [first, *_] = ssl.create_default_context(cafile=certifi.where()).get_ca_certs(binary_form=True)
    bundle = tmp_path / "one-ca.pem"
    bundle.write_text(ssl.DER_cert_to_PEM_cert(first))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    shared_ssl_context.cache_clear()
    try:
        assert shared_ssl_context().cert_store_stats()["x509_ca"] == 1  # that file, not the system's
    finally:
        shared_ssl_context.cache_clear()


def test_a_tls_failure_is_a_connection_error_worth_retrying() -> None:
    async def main() -> tuple[LLMError, int]:
        connections = 0

        async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(not_tls, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with LLMClient(config(f"https://127.0.0.1:{port}/v1", max_attempts=2), environ=ENV) as llm:
                with pytest.raises(LLMError) as info:
                    await llm.chat("worker", USER)
        finally:
            server.close()
        return info.value, connections

    error, connections = asyncio.run(main())
    assert connections == 2 and error.attempts == 2 and error.retryable
    assert "gave up after 2 attempts" in str(error) and "cannot reach https://127.0.0.1" in str(error)


def test_datetimes_in_the_body_are_sent_as_the_sdk_sends_them() -> None:
    when = datetime(2025, 3, 1, 12, 30, tzinfo=timezone.utc)
    with StandinLLM() as srv:

        async def main() -> None:
            async with LLMClient(config(srv.url), environ=ENV) as llm:
                await llm.chat("worker", USER, metadata={"at": when})

        asyncio.run(main())
        assert json.loads(srv.chat_requests()[0].body)["metadata"] == {"at": when.isoformat()}


def test_retries_after_a_first_failure_count_and_log_as_before(caplog) -> None:
    with StandinLLM() as srv:
        srv.push(server_error(500), server_error(502))
        with caplog.at_level("WARNING", logger="oresearch_cli.llm"):
            result = asyncio.run(_one(config(srv.url, max_attempts=4)))
        assert len(srv.chat_requests()) == 3
    assert result.attempts == 3
    assert "HTTP 500" in caplog.text and "(attempt 2 of 4)" in caplog.text
    assert "HTTP 502" in caplog.text and "(attempt 3 of 4)" in caplog.text


def test_a_single_attempt_gives_up_after_its_failure() -> None:
    with StandinLLM() as srv:
        srv.push(server_error(503))
        with pytest.raises(LLMError, match="gave up after 1 attempt,") as info:
            asyncio.run(_one(config(srv.url, max_attempts=1)))
        assert len(srv.chat_requests()) == 1
    assert info.value.status == 503 and info.value.attempts == 1


async def _one(cfg: Any):
    async with LLMClient(cfg, environ=ENV) as llm:
        return await llm.chat("worker", USER)
