"""`ores serve`: serve the research tools over HTTP (`--tools-only`); model serving comes later."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import WsOption, default_ws, err
from oresearch_cli.tools import parse_ttl


@app.command()
def serve(
    tools_only: Annotated[
        bool, typer.Option("--tools-only", help="Serve only the tools: /retrieve, /search, /crawl_page.")
    ] = False,
    search: Annotated[
        str, typer.Option("--search", help="Search backend behind the endpoints (local[:NAME], serper, ...).")
    ] = "local",
    crawl: Annotated[
        str,
        typer.Option(
            "--crawl", help="Crawl backend for /crawl_page: local (corpus only), auto, direct, jina."
        ),
    ] = "local",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    allow_host: Annotated[
        list[str] | None, typer.Option("--allow-host", help="Hosts crawls may reach although private.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use the workspace tool cache.")
    ] = False,
    cache_ttl: Annotated[
        str | None, typer.Option("--cache-ttl", help="Ignore cached results older than this.")
    ] = None,
    ws: WsOption = default_ws(),
) -> None:
    """Serve over HTTP. With --tools-only: Search-R1's /retrieve and O-Researcher's /search and
    /crawl_page over the workspace corpus, so verl or Search-R1 can train against it."""
    if not tools_only:
        err.print(
            "error: model serving is not available yet; pass --tools-only to serve the search and crawl tools",
            highlight=False,
        )
        raise typer.Exit(2)
    import uvicorn

    from oresearch_cli.server.tools_app import create_tools_app
    from oresearch_cli.tools import open_toolbox
    from oresearch_cli.workspace import Workspace

    workspace = Workspace.open(ws)
    ttl = parse_ttl(cache_ttl)
    options = dict(
        search=search, crawl=crawl, cache=not no_cache, cache_ttl=ttl, allow_hosts=allow_host or ()
    )
    # Fail fast on a bad --search/--crawl (one clear line, exit 2) before binding the port.
    asyncio.run(open_toolbox(workspace, **options).aclose())
    application = create_tools_app(lambda: open_toolbox(workspace, **options))
    err.print(
        f"serving tools ({search}, crawl {crawl}) on http://{host}:{port}  (endpoints /retrieve /search /crawl_page /health)",
        highlight=False,
        markup=False,
    )
    uvicorn.run(application, host=host, port=port, log_level="warning")
