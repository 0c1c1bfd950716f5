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
    ws: WsOption = default_ws(),
) -> None:
    """Serve over HTTP. By default a model, OpenAI-compatible (/v1/chat/completions with streaming,
    /v1/models, /health): vLLM on a GPU, our transformers server on CPU (honours response_format); it prints the OPENAI_BASE_URL
    and model name to use and runs until Ctrl-C. With --tools-only: Search-R1's /retrieve and
    O-Researcher's /search and /crawl_page over the workspace corpus, so verl or Search-R1 can
    train against it."""
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
    application = create_tools_app(lambda: open_toolbox(workspace, **options))
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
