"""`ores serve --agent`: open the research system, its tools and the workspace run, and serve them
(server/agent_app.py) with uvicorn until Ctrl-C.

The system is one of three: a trained model through the single-model loop (`model`), the workflow on
configured endpoints (`workflow`), or, with neither, the workflow on the embedded SmolLM2 served by a
child `ores serve` with the embedded recipe (recipes/embedded-cpu.yaml). An untrained 135M model
cannot write a whole trace by itself (it ends its first turn without a call or a report); under the
workflow, with each piece's JSON schema enforced while decoding, it writes reports.

Everything opens in the server's one event loop and closes in reverse when it stops: uvicorn first
(requests in flight get `SHUTDOWN_TIMEOUT` seconds), then researches still running are cancelled and
recorded as such, then the workspace run is finished (its `traces` Parquet, registered like a synth
run's, so `ores filter RUN` can take served answers), the model and the tools last. A server killed
outright leaves its rows in the run's JSONL; the next `ores serve --agent` with the same config
carries them into its own run (the workspace's resume), so nothing served is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from oresearch_cli.agent.context import ResearchOptions
from oresearch_cli.agent.prompts import prompts_version
from oresearch_cli.llm import LLMConfig
from oresearch_cli.server.agent_app import AGENT_MODEL, AgentServer
from oresearch_cli.server.auth import exposure_warning
from oresearch_cli.server.limits import ServeLimits
from oresearch_cli.server.research_service import ResearchAgent, SingleModelAgent, WorkflowAgent
from oresearch_cli.stages.single_model import ModelSystem, open_generator
from oresearch_cli.stages.synth import TraceRecord
from oresearch_cli.tools import open_toolbox
from oresearch_cli.workspace import RunContext, StageSpec, Workspace

SERVE_AGENT = StageSpec.of("serve", TraceRecord)  # rows of kind `traces`: filterable like synth's
SHUTDOWN_TIMEOUT = 5


@dataclass
class AgentServeOptions:
    """How to serve: which system, its tools, where, behind which key and limits."""

    model: ModelSystem | None = None  # one model writing whole traces
    workflow: LLMConfig | None = None  # the multi-agent workflow on these endpoints
    # neither: the workflow on the embedded model (a child `ores serve`), `research` from its recipe
    research: ResearchOptions = field(default_factory=ResearchOptions)  # the workflow's bounds
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    limits: ServeLimits = field(default_factory=ServeLimits)
    record: bool = True
    served_model_name: str = AGENT_MODEL
    search: str = "local"
    crawl: str = "local"
    cache: bool = True
    cache_ttl: float | None = None
    allow_hosts: tuple[str, ...] = ()


def serve_config(
    system: str,
    options: AgentServeOptions,
    workflow: LLMConfig | None = None,
    research: ResearchOptions | None = None,
) -> dict[str, Any]:
    """What decides a served trace, hashed: a restart with the same config resumes the same rows."""
    config: dict[str, Any] = {
        "system": system,
        "prompts_version": prompts_version(),
        "budget": asdict(options.limits.budget),
        "search": options.search,
        "crawl": options.crawl,
    }
    if workflow is not None:
        from oresearch_cli.stages.synth import models_of

        config["roles"] = models_of(workflow)
        config["research"] = (research or options.research).to_dict()
    return config


async def _serve_embedded(
    ws: Workspace, stack: contextlib.AsyncExitStack, say: Callable[[str], None]
) -> tuple[LLMConfig, ResearchOptions]:
    """Start `ores serve` of the embedded model as a child (stopped with the stack); the workflow's
    endpoints and bounds on it, from the embedded recipe."""
    from oresearch_cli.llm import load_config
    from oresearch_cli.server.embedded import EMBEDDED_RECIPE
    from oresearch_cli.server.model_server import (
        ModelServer,
        ServeOptions,
        check_port,
        choose_backend,
        plan_serve,
        resolve_model,
    )
    from oresearch_cli.stages.synth import synth_options

    say("ores serve --agent: no --model or --workflow: the workflow on the embedded SmolLM2-135M-Instruct")
    checkpoint = resolve_model(None, ws.models_dir, prepare=True)
    plan = plan_serve(checkpoint, choose_backend("auto"), ServeOptions(port=check_port("127.0.0.1", 0)))
    log_path = ws.root / "logs" / f"serve-agent-model-{plan.port}.log"
    server = ModelServer(plan, log_path)
    stack.callback(server.stop)
    say(f"ores serve --agent: starting the model server (log: {log_path})")
    server.start()
    await asyncio.to_thread(server.wait_ready, 900.0)
    config = load_config(
        EMBEDDED_RECIPE,
        {"base_url": plan.base_url, "model": plan.model_name},
        require=["planner", "worker", "summarizer"],
    )
    return config, synth_options({}, EMBEDDED_RECIPE).research


class _Uvicorn:
    """uvicorn's server, stopping on Ctrl-C/SIGTERM without re-raising the signal afterwards
    (uvicorn re-raises it once it has stopped, which would interrupt our own orderly close)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield  # signals reach the main thread only (a server run from a test's thread)
                    return
                previous = {
                    sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
                }
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_TIMEOUT
        )
        self.server = Server(config)

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True  # uvicorn polls it; safe from any thread


async def run_agent_server(
    ws: Workspace,
    options: AgentServeOptions,
    *,
    say: Callable[[str], None] = print,
    on_ready: Callable[[AgentServer, Callable[[], None]], object] | None = None,
) -> AgentServer:
    """Serve until stopped (Ctrl-C, SIGTERM, or the `stop` that `on_ready(server, stop)` is given,
    callable from any thread); returns the server (its counts) once everything is closed."""
    limits = options.limits
    async with contextlib.AsyncExitStack() as stack:
        toolbox = open_toolbox(
            ws,
            search=options.search,
            crawl=options.crawl,
            cache=options.cache,
            cache_ttl=options.cache_ttl,
            allow_hosts=options.allow_hosts,
        )
        await stack.enter_async_context(toolbox)
        agent: ResearchAgent
        run: RunContext | None = None

        def start_run(config: dict[str, Any]) -> RunContext | None:
            """The run served requests are recorded in (None with --no-record), closed with the stack."""
            if not options.record:
                return None
            return stack.enter_context(ws.start_run(SERVE_AGENT, config, inputs=["http"], resume=True))

        budget = limits.budget
        workflow = options.workflow
        research_options = options.research
        if options.model is None and workflow is None:
            workflow, research_options = await _serve_embedded(ws, stack, say)
        if workflow is not None:
            from oresearch_cli.llm import CALLS_KIND, CallLog, LLMClient
            from oresearch_cli.stages.synth import check_endpoints, models_of

            await check_endpoints(workflow)
            run = start_run(serve_config("workflow", options, workflow, research_options))
            calls = stack.enter_context(CallLog(run.open_log(CALLS_KIND), run.run_id)) if run else None
            llm = await stack.enter_async_context(LLMClient(workflow, calls))
            models = models_of(workflow)
            agent = WorkflowAgent(
                llm,
                toolbox,
                research_options,
                models,
                limits=budget,
                config_hash=run.config_hash if run else "",
            )
            what = f"the workflow ({', '.join(sorted(set(models.values())))})"
        else:
            assert options.model is not None
            say(f"ores serve --agent: loading {options.model.model} ...")
            generator, model = await open_generator(ws, options.model, stack, max_batch=limits.max_concurrent)
            run = start_run(serve_config(f"model:{model}", options))
            agent = SingleModelAgent(
                generator, toolbox, model, limits=budget, config_hash=run.config_hash if run else ""
            )
            what = f"model {model}"
        server = AgentServer(
            agent,
            limits,
            recorder=run.append if run is not None else None,
            api_key=options.api_key,
            model_name=options.served_model_name,
        )
        uvicorn_server = _Uvicorn(server.app(), options.host, options.port)
        warning = exposure_warning(options.host, options.api_key)
        if warning:
            say(f"ores serve --agent: warning: {warning}")
        base = f"http://{options.host}:{options.port}/v1"
        say(
            f"ores serve --agent: researching with {what}; tools: search {options.search}, crawl {options.crawl}"
        )
        say(
            f"ores serve --agent: recording requests in run {run.run_id}"
            if run is not None
            else "ores serve --agent: not recording requests (--no-record)"
        )
        serving = asyncio.ensure_future(uvicorn_server.serve())
        try:
            # "ready" only once the port is bound: a client that starts on that line connects.
            while not uvicorn_server.server.started and not serving.done():
                await asyncio.sleep(0.05)
            if uvicorn_server.server.started:
                say(
                    f"ores serve --agent: ready: model {options.served_model_name!r} at {base} (pid {os.getpid()})"
                )
                say(
                    "ores serve --agent: endpoints POST /v1/research, POST /v1/chat/completions, GET /v1/models /health /metrics"
                )
                say("ores serve --agent: point clients at it with:")
                say(f"  OPENAI_BASE_URL={base}")
                say(f"  ORES_LLM_MODEL={options.served_model_name}")
                say(f"  OPENAI_API_KEY={'<your --api-key>' if options.api_key else 'none'}")
                say("ores serve --agent: Ctrl-C to stop")
                if on_ready is not None:
                    on_ready(server, uvicorn_server.stop)
            await serving
        finally:
            if not serving.done():
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
            # Researches whose requests uvicorn gave up on: cancelled and recorded before the run ends.
            for task in list(server.jobs):
                task.cancel("cancelled: the server stopped")
            await asyncio.gather(*server.jobs, return_exceptions=True)
            say(f"ores serve --agent: stopped; {server.n_recorded} researches recorded")
    return server
