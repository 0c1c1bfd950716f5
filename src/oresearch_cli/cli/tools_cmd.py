"""`ores tools`: run web_search / crawl_page by hand and print exactly what the agent would see."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from oresearch_cli.cli import app
from oresearch_cli.cli.common import JsonOption, WsOption, default_ws, err, out, print_json, table
from oresearch_cli.errors import InputError
from oresearch_cli.tools import BACKENDS, Observation, SummaryContext, open_toolbox, parse_ttl
from oresearch_cli.tools.backends.fetch import FetchLimits
from oresearch_cli.tools.corpus import list_corpora
from oresearch_cli.tools.registry import backend_configured
from oresearch_cli.tools.summarize import ChatSummarizer
from oresearch_cli.tools.toolbox import Toolbox, ToolConfig
from oresearch_cli.workspace import Workspace

tools_app = typer.Typer(
    help="Run the agent's tools by hand (debug backends): search, crawl, backends.", no_args_is_help=True
)
app.add_typer(tools_app, name="tools")

SearchOption = Annotated[
    str,
    typer.Option(
        "--search", help="Search backend: local[:NAME], serper, tavily, searxng[:URL], retriever[:URL]."
    ),
]
CrawlOption = Annotated[str, typer.Option("--crawl", help="Crawl backend: auto, direct, jina, local.")]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor write the workspace tool cache.")
]
CacheTtlOption = Annotated[
    str | None,
    typer.Option("--cache-ttl", help="Ignore cached results older than this (e.g. 3600, 30m, 12h, 7d)."),
]
AllowHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host", help="Let crawls reach this host even if it is private/loopback (repeatable)."
    ),
]


def _emit(observation: Observation, tools: Toolbox, as_json: bool) -> None:
    if as_json:
        print_json({**observation.to_dict(), "stats": tools.stats.to_dict()})
    else:
        sys.stdout.write(observation.text + "\n")
    if observation.errors:
        for error in observation.errors:
            err.print(f"[bold red]error:[/] {escape(error)}", highlight=False)
        raise typer.Exit(2)


@tools_app.command("search")
def search(
    query: Annotated[
        str, typer.Argument(help="Queries as the agent writes them: 'q1 | q2' (optionally '&serp_num=N').")
    ],
    num: Annotated[
        int | None, typer.Option("-n", "--num", min=1, help="Results in all (default 10, at most 20).")
    ] = None,
    search_spec: SearchOption = "local",
    no_cache: NoCacheOption = False,
    cache_ttl: CacheTtlOption = None,
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """Print the web_search observation for QUERY."""
    workspace = Workspace.open(ws)
    ttl = parse_ttl(cache_ttl)

    async def run() -> None:
        async with open_toolbox(
            workspace, search=search_spec, crawl="local", cache=not no_cache, cache_ttl=ttl
        ) as tools:
            _emit(await tools.web_search(query, num=num), tools, as_json)

    asyncio.run(run())


@tools_app.command("crawl")
def crawl(
    urls: Annotated[list[str], typer.Argument(help="URLs (or one 'u1 | u2' argument).")],
    crawl_spec: CrawlOption = "auto",
    allow_host: AllowHostOption = None,
    max_chars: Annotated[
        int, typer.Option("--max-chars", min=0, help="Characters of each page shown (0: all).")
    ] = 8000,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", min=1, help="Largest page body fetched.")
    ] = 5_000_000,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds for a whole page.")] = 20.0,
    summarize: Annotated[
        bool, typer.Option("--summarize", help="Show an LLM summary instead of the page text.")
    ] = False,
    summary_model: Annotated[
        str | None, typer.Option("--summary-model", help="Model for --summarize.")
    ] = None,
    summary_base_url: Annotated[
        str | None,
        typer.Option(
            "--summary-base-url",
            help="OpenAI-compatible base URL for --summarize (or ORES_SUMMARIZER_BASE_URL).",
        ),
    ] = None,
    think: Annotated[
        str, typer.Option("--think", help="The agent's current thinking, for --summarize.")
    ] = "",
    about: Annotated[
        str, typer.Option("--query", help="The current web search query, for --summarize.")
    ] = "",
    no_cache: NoCacheOption = False,
    cache_ttl: CacheTtlOption = None,
    ws: WsOption = default_ws(),
    as_json: JsonOption = False,
) -> None:
    """Print the crawl_page observation for URLS (corpus URLs are read from the workspace corpora)."""
    workspace = Workspace.open(ws)
    ttl = parse_ttl(cache_ttl)
    summarizer = None
    if summarize:
        base_url = (
            summary_base_url
            or os.environ.get("ORES_SUMMARIZER_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
        )
        model = summary_model or os.environ.get("ORES_SUMMARIZER_MODEL")
        if not base_url or not model:
            raise InputError(
                "--summarize: no endpoint; pass --summary-base-url and --summary-model (or set ORES_SUMMARIZER_BASE_URL/_MODEL)"
            )
        api_key = os.environ.get("ORES_SUMMARIZER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        summarizer = ChatSummarizer.create(base_url, model, api_key)
    # An out-of-date corpus is left out here (its corpus:// URLs still get the rebuild error), so
    # one stale corpus does not stop crawling web pages or the other corpora.
    corpora = (
        [c.name for c in list_corpora(workspace) if not c.needs_rebuild]
        if crawl_spec in ("auto", "local")
        else []
    )

    async def run() -> None:
        async with open_toolbox(
            workspace,
            search=None,
            crawl=crawl_spec,
            cache=not no_cache,
            cache_ttl=ttl,
            allow_hosts=allow_host or (),
            limits=FetchLimits(max_bytes=max_bytes, timeout=timeout),
            summarizer=summarizer,
            config=ToolConfig(crawl_max_chars=max_chars),
            corpora=corpora,
        ) as tools:
            observation = await tools.crawl_page(urls, SummaryContext(think=think, query=about))
            _emit(observation, tools, as_json)

    asyncio.run(run())


@tools_app.command("backends")
def backends(as_json: JsonOption = False) -> None:
    """The backends, the environment variables each reads, and whether it is configured."""
    rows: list[dict[str, Any]] = [
        {
            "spec": b.spec,
            "kind": b.kind,
            "configured": backend_configured(b),
            "env": list(b.env),
            "description": b.description,
        }
        for b in BACKENDS
    ]
    if as_json:
        print_json(rows)
        return
    out.print(
        table(
            None,
            ["backend", "kind", "ready", "environment", "what"],
            [
                [
                    r["spec"],
                    r["kind"],
                    "yes" if r["configured"] else "no",
                    " ".join(r["env"]),
                    r["description"],
                ]
                for r in rows
            ],
        )
    )
