"""`ores serve --tools-only`: Search-R1 `/retrieve`, O-Researcher `/search` and `/crawl_page`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from oresearch_cli.cli import app, register
from oresearch_cli.server.tools_app import create_tools_app
from oresearch_cli.tools import open_toolbox
from oresearch_cli.tools.backends.web import RetrieverSearch
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.workspace import Workspace

from tools_support import loopback_only, write_jsonl  # noqa: F401

pytestmark = pytest.mark.usefixtures("loopback_only")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace.open(tmp_path / "ws")
    build_corpus(workspace, write_jsonl(tmp_path / "docs.jsonl"), "mini")
    return workspace


def _app(ws: Workspace) -> Any:
    return create_tools_app(lambda: open_toolbox(ws, search="local:mini", crawl="local", cache=False))


async def _post(ws: Workspace, calls: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    application = _app(ws)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://tools"
    ) as client:
        out = []
        for method, path, body in calls:
            out.append(await client.request(method, path, json=body))
        return out


def test_retrieve_is_search_r1_compatible(ws: Workspace) -> None:
    plain, scored, bad = asyncio.run(
        _post(ws, [
            ("POST", "/retrieve", {"queries": ["photosynthesis light", "amazon river"], "topk": 2}),
            ("POST", "/retrieve", {"queries": ["calvin cycle"], "topk": 1, "return_scores": True}),
            ("POST", "/retrieve", {"queries": 5}),
        ])
    )  # fmt: skip
    result = plain.json()["result"]
    assert len(result) == 2 and len(result[0]) == 2
    first = result[0][0]
    assert first["contents"].startswith('"Photosynthesis"\nPhotosynthesis converts light energy')
    assert first["url"] == "https://en.wikipedia.org/wiki/Photosynthesis" and first["id"] == "photo#0"
    # Search-R1's client reads the title from the first line of `contents`.
    assert result[1][0]["contents"].split("\n")[0].strip('"') == "Amazon River"
    hit = scored.json()["result"][0][0]
    assert (
        set(hit) == {"document", "score"} and hit["document"]["title"] == "Calvin cycle" and hit["score"] > 0
    )
    assert bad.status_code == 400


def test_search_and_crawl_are_o_researcher_compatible(ws: Workspace) -> None:
    text, structured, crawl, missing, health = asyncio.run(
        _post(ws, [
            ("POST", "/search", {"q": "photosynthesis | amazon", "num": 2}),
            ("POST", "/search", {"query": ["photosynthesis"], "serp_num": 1, "format": "json"}),
            ("POST", "/crawl_page", {"urls": ["corpus://mini/river"], "think_content": "t", "web_search_query": "q"}),
            ("POST", "/crawl_page", {"urls": ["https://example.org/elsewhere"]}),
            ("GET", "/health", None),
        ])
    )  # fmt: skip
    assert text.json() == (
        "## Query: 'photosynthesis'\n1. [Photosynthesis](https://en.wikipedia.org/wiki/Photosynthesis)\n"
        "Photosynthesis converts light energy into chemical energy. The light reactions run in the thylakoid membranes.\n"
        "## Query: 'amazon'\n2. [Amazon River](corpus://mini/river)\n"
        "The Amazon River in South America is the largest river by discharge volume of water."
    )
    assert structured.json()["search"]["results"][0]["hits"][0]["title"] == "Photosynthesis"
    body = crawl.json()
    assert (
        body["success"] is True
        and body["obs"].startswith("Amazon River\nThe Amazon River")
        and body["error_message"] is None
    )
    body = missing.json()
    assert body["success"] is False and "not in the local corpus" in body["error_message"]
    assert health.json() == {
        "status": "ok",
        "search": "local:mini",
        "corpus": "mini",
        "documents": 5,
        "passages": 5,
    }


def test_real_server_with_the_retriever_backend(ws: Workspace) -> None:
    """ores' own Search-R1 client against `ores serve --tools-only` on an ephemeral loopback port."""
    config = uvicorn.Config(_app(ws), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]

        async def search() -> Any:
            backend = RetrieverSearch.from_env({"RETRIEVER_URL": f"http://127.0.0.1:{port}"})
            try:
                return await backend.search("photosynthesis light reactions", 2)
            finally:
                await backend.aclose()

        hits = asyncio.run(search())
        assert (
            hits[0].title == "Photosynthesis"
            and hits[0].url == "https://en.wikipedia.org/wiki/Photosynthesis"
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_serve_without_tools_only_plans_a_model_server(tmp_path: Path) -> None:
    # Without --tools-only, `ores serve` serves a model; --dry-run shows the command without running it.
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    register([])
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--ws",
            str(tmp_path / "ws"),
            "--model",
            str(checkpoint),
            "--backend",
            "transformers",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "oresearch_cli.server.cpu_server" in result.output


def test_ores_serve_tools_only_command(ws: Workspace) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "oresearch_cli",
        "serve",
        "--tools-only",
        "--search",
        "local:mini",
        "--port",
        str(port),
        "--ws",
        str(ws.root),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "ORES_WS": str(ws.root)},
    )
    try:
        deadline = time.monotonic() + 20
        response = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, process.stderr.read().decode() if process.stderr else ""
        assert response.json()["corpus"] == "mini"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tools_behind_a_key_and_a_body_cap(ws: Workspace) -> None:
    """Issue: the tools server took a 41 MB body and any caller; now a key and a cap, /health open."""
    application = create_tools_app(
        lambda: open_toolbox(ws, search="local:mini", crawl="local", cache=False),
        api_key="sk-tools",
        max_body_bytes=2000,
    )

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://tools"
        ) as c:
            search = {"q": "photosynthesis", "num": 2}
            key = {"Authorization": "Bearer sk-tools"}
            return [
                await c.get("/health"),
                await c.post("/search", json=search),
                await c.post("/search", json=search, headers={"Authorization": "Bearer sk-other"}),
                await c.post("/search", json=search, headers=key),
                await c.post("/retrieve", json={"queries": ["x" * 3000]}, headers=key),
                await c.post(
                    "/retrieve", content=b"[" * 5000, headers={**key, "transfer-encoding": "chunked"}
                ),
            ]

    health, missing, wrong, fine, big, chunked = asyncio.run(calls())
    assert health.status_code == 200
    assert missing.status_code == wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert fine.status_code == 200 and "Photosynthesis" in fine.json()
    assert big.status_code == chunked.status_code == 413 and "2,000 bytes" in big.json()["error"]
