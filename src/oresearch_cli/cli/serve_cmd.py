"""`ores serve`: an OpenAI-compatible server for a model (default: the embedded SmolLM2), or with
`--tools-only` the research tools over HTTP. The logic lives in oresearch_cli.server."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from oresearch_cli.cli import app
from oresearch_cli.cli.common import WsOption, default_ws, err, out
from oresearch_cli.errors import InputError
from oresearch_cli.records import MAX_QUESTION_CHARS
from oresearch_cli.tools import parse_ttl


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Checkpoint directory (config.json + weights), a .gguf file (converted into the workspace's "
            "models/), a name under models/, or an `ores sft` run id. Default: the embedded SmolLM2-135M-Instruct.",
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto (vLLM when installed and a GPU is present, else transformers), vllm, transformers.",
        ),
    ] = "auto",
    served_model_name: Annotated[
        str | None,
        typer.Option(
            "--served-model-name", help="Model name clients send. Default: the checkpoint directory's name."
        ),
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(
            "--max-model-len",
            min=1,
            help="vLLM: context length. transformers on a CPU: KV cache capacity in tokens, all requests together (default 32768).",
        ),
    ] = None,
    tensor_parallel_size: Annotated[
        int | None, typer.Option("--tensor-parallel-size", min=1, help="vLLM: GPUs to shard over.")
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            "--gpu-memory-utilization", min=0.05, max=1.0, help="vLLM: fraction of GPU memory to use."
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="Weights dtype (float32, bfloat16, ...). Default: the checkpoint's."),
    ] = None,
    continuous_batching: Annotated[
        bool,
        typer.Option(
            "--continuous-batching/--no-continuous-batching",
            help="transformers: batch concurrent requests (parallel subtasks run ~3x faster on CPU).",
        ),
    ] = True,
    ready_timeout: Annotated[
        float,
        typer.Option("--ready-timeout", min=1, help="Seconds to wait for the server to answer /health."),
    ] = 900.0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the server command (stdout) and the client settings; start nothing."
        ),
    ] = False,
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
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: pick a free one).")
    ] = 8000,
    allow_host: Annotated[
        list[str] | None, typer.Option("--allow-host", help="Hosts crawls may reach although private.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use the workspace tool cache.")
    ] = False,
    cache_ttl: Annotated[
        str | None, typer.Option("--cache-ttl", help="Ignore cached results older than this.")
    ] = None,
    agent: Annotated[
        bool,
        typer.Option(
            "--agent",
            help="Serve the research agent: POST /v1/research (SSE with stream), `ores-agent` on "
            "/v1/chat/completions, /metrics. With --model (a checkpoint, run id, `embedded` or URL) that model "
            "writes whole traces; with --workflow the multi-agent workflow on your endpoints; with neither, "
            "the workflow on the embedded SmolLM2.",
        ),
    ] = False,
    workflow: Annotated[
        bool,
        typer.Option(
            "--workflow",
            help="With --agent: planner/workers/summarizer over the configured endpoints (--config, --base-url, "
            "OPENAI_BASE_URL; --model then names every role's model).",
        ),
    ] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="With --agent --model URL: the served model's tokenizer (folder, run id, embedded).",
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="With --agent --workflow: OpenAI-compatible base URL(s).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="With --agent --workflow: YAML recipe (`llm:` roles, `synth:` bounds)."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="ORES_SERVE_API_KEY",
            show_envvar=True,
            help="With --agent or --tools-only: require `Authorization: Bearer KEY` on every route but /health.",
        ),
    ] = None,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", min=1, help="With --agent: researches at once; more get 429.")
    ] = 8,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes",
            min=1,
            help="With --agent or --tools-only: largest request body (413 past it).",
        ),
    ] = 1_000_000,
    max_question_chars: Annotated[
        int, typer.Option("--max-question-chars", min=1, help="With --agent: longest question.")
    ] = MAX_QUESTION_CHARS,
    max_tool_calls: Annotated[
        int,
        typer.Option(
            "--max-tool-calls", min=0, help="With --agent: tool calls per research (workflow: per subtask)."
        ),
    ] = 16,
    max_steps: Annotated[
        int,
        typer.Option(
            "--max-steps", min=1, help="With --agent: model turns per research (workflow: steps per subtask)."
        ),
    ] = 40,
    max_tokens: Annotated[
        int,
        typer.Option("--max-tokens", min=1, help="With --agent: tokens the model(s) may write per research."),
    ] = 8192,
    max_seconds: Annotated[
        float, typer.Option("--max-seconds", min=1, help="With --agent: wall-clock seconds per research.")
    ] = 900.0,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="With --agent: do not record requests in the workspace.")
    ] = False,
    ws: WsOption = default_ws(),
) -> None:
    """Serve over HTTP. By default a model, OpenAI-compatible (/v1/chat/completions with streaming,
    /v1/models, /health): vLLM on a GPU, our transformers server on CPU (honours response_format); it prints the OPENAI_BASE_URL
    and model name to use and runs until Ctrl-C. With --tools-only: Search-R1's /retrieve and
    O-Researcher's /search and /crawl_page over the workspace corpus, so verl or Search-R1 can
    train against it."""
    if agent:
        _serve_agent(
            model=model,
            workflow=workflow,
            tokenizer=tokenizer,
            base_url=base_url,
            config=config,
            api_key=api_key,
            served_model_name=served_model_name,
            limits=dict(
                max_concurrent=max_concurrent,
                max_body_bytes=max_body_bytes,
                max_question_chars=max_question_chars,
                budget=dict(
                    max_tool_calls=max_tool_calls,
                    max_steps=max_steps,
                    max_tokens=max_tokens,
                    max_seconds=max_seconds,
                ),
            ),
            record=not no_record,
            search=search,
            crawl=crawl,
            host=host,
            port=port,
            allow_host=allow_host,
            no_cache=no_cache,
            cache_ttl=cache_ttl,
            ws=ws,
        )
        return
    if workflow:
        raise InputError("ores serve: --workflow serves the multi-agent workflow; pass it with --agent")
    if not tools_only:
        _serve_model(
            model=model,
            backend=backend,
            host=host,
            port=port,
            served_model_name=served_model_name,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            continuous_batching=continuous_batching,
            ready_timeout=ready_timeout,
            dry_run=dry_run,
            ws=ws,
        )
        return
    import uvicorn

    from oresearch_cli.server.tools_app import create_tools_app
    from oresearch_cli.tools import open_toolbox
    from oresearch_cli.workspace import Workspace

    workspace = Workspace.open(ws)
    ttl = parse_ttl(cache_ttl)
    options: dict[str, Any] = dict(
        search=search, crawl=crawl, cache=not no_cache, cache_ttl=ttl, allow_hosts=allow_host or ()
    )
    # Fail fast on a bad --search/--crawl (one clear line, exit 2) before binding the port.
    asyncio.run(open_toolbox(workspace, **options).aclose())
    from oresearch_cli.server.auth import exposure_warning

    application = create_tools_app(
        lambda: open_toolbox(workspace, **options), api_key=api_key or None, max_body_bytes=max_body_bytes
    )
    warning = exposure_warning(host, api_key or None)
    if warning:
        err.print(f"ores serve --tools-only: warning: {warning}", highlight=False, markup=False)
    err.print(
        f"serving tools ({search}, crawl {crawl}) on http://{host}:{port}  (endpoints /retrieve /search /crawl_page /health)",
        highlight=False,
        markup=False,
    )
    from oresearch_cli.server.model_server import SHUTDOWN_TIMEOUT

    # Ctrl-C gives requests in flight (a slow crawl) a moment, not forever.
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT),
    )


def _say(text: str) -> None:
    err.print(text, highlight=False, markup=False)


def _serve_agent(
    *,
    model: str | None,
    workflow: bool,
    tokenizer: str | None,
    base_url: str | None,
    config: Path | None,
    api_key: str | None,
    served_model_name: str | None,
    limits: dict[str, Any],
    record: bool,
    search: str,
    crawl: str,
    host: str,
    port: int,
    allow_host: list[str] | None,
    no_cache: bool,
    cache_ttl: str | None,
    ws: Path,
) -> None:
    import logging

    from oresearch_cli.server.agent_app import AGENT_MODEL
    from oresearch_cli.server.agent_server import AgentServeOptions, run_agent_server
    from oresearch_cli.server.limits import ServeLimits
    from oresearch_cli.server.model_server import check_port
    from oresearch_cli.server.research_service import ResearchBudget
    from oresearch_cli.stages.single_model import ModelSystem
    from oresearch_cli.workspace import Workspace

    workspace = Workspace.open(ws)
    options = AgentServeOptions(
        host=host,
        api_key=api_key or None,
        limits=ServeLimits(**{**limits, "budget": ResearchBudget(**limits["budget"])}),
        record=record,
        served_model_name=served_model_name or AGENT_MODEL,
        search=search,
        crawl=crawl,
        cache=not no_cache,
        cache_ttl=parse_ttl(cache_ttl),
        allow_hosts=tuple(allow_host or ()),
    )
    if workflow:
        from oresearch_cli.llm import load_config
        from oresearch_cli.stages.synth import synth_options

        overrides = {"model": model, "base_url": base_url}
        options.workflow = load_config(config, overrides, require=["planner", "worker", "summarizer"])
        options.research = synth_options({}, config).research
    else:
        if base_url is not None or config is not None:
            raise InputError(
                "ores serve --agent: --base-url and --config configure --workflow; add --workflow, or drop them for a single --model"
            )
        options.model = ModelSystem(model, tokenizer=tokenizer) if model is not None else None
    options.port = check_port(host, port)
    # One line per request (its id, route, status, seconds) on stderr; never a header or key.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("oresearch_cli.agent_server").setLevel(logging.INFO)
    try:
        asyncio.run(run_agent_server(workspace, options, say=_say))
    except KeyboardInterrupt:
        _say("ores serve --agent: stopped")


def _serve_model(
    *,
    model: str | None,
    backend: str,
    host: str,
    port: int,
    served_model_name: str | None,
    max_model_len: int | None,
    tensor_parallel_size: int | None,
    gpu_memory_utilization: float | None,
    dtype: str | None,
    continuous_batching: bool,
    ready_timeout: float,
    dry_run: bool,
    ws: Path,
) -> None:
    from oresearch_cli.errors import OresError
    from oresearch_cli.server.model_server import (
        ModelServer,
        ServeOptions,
        check_port,
        choose_backend,
        format_env_lines,
        plan_serve,
        resolve_model,
        serve_command_env,
    )
    from oresearch_cli.workspace import Workspace

    workspace = Workspace.open(ws)
    chosen = choose_backend(backend)
    if not dry_run:
        port = check_port(host, port)
    if model is None and not dry_run:
        _say("ores serve: preparing the embedded SmolLM2-135M-Instruct (converted once into models/) ...")
    if (
        model is not None
        and not Path(model).expanduser().exists()
        and not (workspace.models_dir / model).exists()
    ):
        from oresearch_cli.train.runs import model_of_run

        model = model_of_run(workspace, model) or model  # an sft run id: the model it trained
    checkpoint = resolve_model(model, workspace.models_dir, prepare=not dry_run)
    options = ServeOptions(
        host=host,
        port=port,
        served_model_name=served_model_name,
        max_model_len=max_model_len,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        dtype=dtype,
        continuous_batching=continuous_batching,
    )
    plan = plan_serve(checkpoint, chosen, options)
    env_lines = format_env_lines(serve_command_env(plan))
    if dry_run:
        out.print(plan.shell_command(), highlight=False, markup=False, soft_wrap=True)
        _say(
            f"ores serve: would serve {plan.model_name} ({plan.backend}) from {plan.checkpoint}; clients use:"
        )
        for line in env_lines:
            _say(f"  {line}")
        return

    log_path = workspace.root / "logs" / f"serve-{port}.log"
    server = ModelServer(plan, log_path)

    def _interrupt(signum, frame):  # SIGTERM/SIGHUP end us like Ctrl-C: the child goes too
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        _say(f"ores serve: starting {plan.backend} for {plan.checkpoint} (log: {log_path})")
        server.start()
        server.wait_ready(timeout=ready_timeout)
        _say(f"ores serve: ready: model {plan.model_name!r} at {plan.base_url} (pid {server.pid})")
        _say("ores serve: point clients at it with:")
        for line in env_lines:
            _say(f"  {line}")
        _say("ores serve: Ctrl-C to stop")
        code = server.wait()
        raise OresError(
            f"the {plan.backend} server exited with code {code}: {server.log_tail()}; full log in {log_path}"
        )
    except KeyboardInterrupt:
        _say("ores serve: stopping")
    finally:
        # The server gives requests in flight a few seconds (its bounded graceful shutdown), then
        # exits; stop() kills its process group if it has not by then. A second Ctrl-C kills at once.
        forced = False
        try:
            server.stop()
        except KeyboardInterrupt:
            forced = True
            server.stop(grace=0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server.killed and not forced:
            _say(f"ores serve: the server did not stop within {server.stop_grace:g} s; killed it")
