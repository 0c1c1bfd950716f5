"""`ores synth`: seeds -> traces, one per seed, through the multi-agent workflow (`agent.research`).

Each finished trace is appended to the run's JSONL at once (flushed), so a killed run loses only
the traces in flight; a rerun with the same config skips seeds already done (and failed ones
unless `retry_failed`). The config hash covers what changes a trace (models, prompts version,
bounds, search and crawl backends, sequential mode), not concurrency or the shard. `shard=(i, n)`
keeps the seeds whose id hashes to shard i of n, so machines can split one seed set. That loop
is `stages.research_run`, shared with `ores eval run`; this module is the workflow's part of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pyarrow as pa

from oresearch_cli.agent import Meter, ResearchOptions, prompts_version, research
from oresearch_cli.agent.workflow import ResearchResult
from oresearch_cli.config import load_recipe, resolve
from oresearch_cli.errors import OresError
from oresearch_cli.llm import CALLS_KIND, CallLog, LLMClient, LLMConfig, LLMError
from oresearch_cli.llm.discover import is_fatal
from oresearch_cli.stages.research_run import (
    FatalResearchError,
    Researcher,
    ResearchSummary,
    RunOptions,
    SeedItem,
    check_reachable,
    load_seeds,
    parse_shard,
    run_research,
    shard_of,
)
from oresearch_cli.tools import Toolbox, open_toolbox
from oresearch_cli.tools.errors import BackendAuthError
from oresearch_cli.trace import trace_stats
from oresearch_cli.workspace import ArtifactRecord, Progress, RunContext, StageSpec, Status, Workspace

# The shared research loop's names, under the ones synth's callers have always used.
SynthSummary = ResearchSummary
__all__ = [
    "SYNTH",
    "SeedItem",
    "SynthOptions",
    "SynthSettings",
    "SynthSummary",
    "TraceRecord",
    "is_fatal",
    "load_seeds",
    "parse_shard",
    "run_synth",
    "shard_of",
    "synth_options",
]

log = logging.getLogger(__name__)

ROLES = ("planner", "worker", "summarizer")
INT32 = Annotated[int, pa.int32()]


@dataclass
class TraceRecord(ArtifactRecord):
    """One seed's row of `traces`: done (valid or not, with its problems) or failed (error).
    `problems`, `models` and `steps` are JSON text, so the schema stays fixed whatever they hold."""

    KIND: ClassVar[str] = "traces"

    id: str
    question: str
    language: str
    status: Status = Status.FAILED
    error: str | None = None
    trace: str | None = None
    report: str | None = None
    valid: bool = False
    problems: str = "[]"
    n_subtasks: INT32 = 0
    n_tool_calls: INT32 = 0
    n_steps: INT32 = 0
    n_failures: INT32 = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    models: str = "{}"
    config_hash: str = ""
    steps: str = "{}"


SYNTH = StageSpec.of("synth", TraceRecord)
STAGE = SYNTH.name
KIND = SYNTH.kind


@dataclass(frozen=True)
class SynthSettings(ResearchOptions):
    """What a recipe's `synth:` section (or `ORES_SYNTH_<KEY>`) may set: the research bounds of
    `ResearchOptions` plus the backends and how many seeds run at once."""

    search: str = "local"
    crawl: str = "auto"
    concurrency: int = 8

    def research(self) -> ResearchOptions:
        return ResearchOptions(**{f.name: getattr(self, f.name) for f in fields(ResearchOptions)})


@dataclass
class SynthOptions:
    search: str = "local"
    crawl: str = "auto"
    cache: bool = True
    concurrency: int = 8  # seeds in flight
    shard: tuple[int, int] | None = None  # (i, n), 1-based
    retry_failed: bool = False
    limit: int | None = None
    question_field: str | None = None
    fmt: str | None = None
    research: ResearchOptions = field(default_factory=ResearchOptions)
    check_endpoints: bool = True


# -- configuration ---------------------------------------------------------------------------------


def synth_options(
    flags: dict[str, Any],
    config: str | Path | None = None,
    environ: dict[str, str] | None = None,
    **rest: Any,
) -> SynthOptions:
    """SynthOptions from flags (None: unset) over the recipe's `synth:` section over
    `ORES_SYNTH_<KEY>` over the defaults (`oresearch_cli.config`); `rest` are SynthOptions fields
    no recipe sets (cache, shard, retry_failed, limit, ...)."""
    recipe = load_recipe(config)
    settings = resolve(SynthSettings, recipe, "synth", flags, environ)
    research = settings.research()
    if "min_subtasks" not in recipe.section("synth"):
        research = ResearchOptions(**{**research.to_dict(), "min_subtasks": min(2, research.max_subtasks)})
    return SynthOptions(
        search=settings.search,
        crawl=settings.crawl,
        concurrency=settings.concurrency,
        research=research,
        **rest,
    )


def models_of(llm_config: LLMConfig) -> dict[str, str]:
    return {role: llm_config.role(role).model for role in ROLES}


def synth_config(llm_config: LLMConfig, options: SynthOptions) -> dict[str, Any]:
    """What decides a trace's content, hashed for resume: not concurrency, limit or shard."""
    roles = {}
    for role in ROLES:
        rc = llm_config.role(role)
        roles[role] = {
            "model": rc.model,
            "temperature": rc.temperature,
            "max_tokens": rc.max_tokens,
            "json_mode": rc.json_mode,
            "extra_body": dict(rc.extra_body),
        }
    research_options = options.research.to_dict()
    return {
        "roles": roles,
        "prompts_version": prompts_version(),
        "research": research_options,
        "search": options.search,
        "crawl": options.crawl,
    }


async def check_endpoints(llm_config: LLMConfig, timeout: float = 5.0) -> None:
    """Fail before the run starts when a role's endpoint does not answer at all."""
    urls = [url for role in ROLES for url in llm_config.role(role).base_urls]
    await check_reachable(urls, "llm endpoint", "--base-url / OPENAI_BASE_URL", timeout)


# -- one seed --------------------------------------------------------------------------------------


def fill_from_result(record: TraceRecord, result: ResearchResult) -> None:
    """A finished workflow trace into its row: done, the trace, report, problems, counts, steps."""
    stats = trace_stats(result.trace)
    record.status = Status.DONE
    record.trace = result.text
    record.report = result.report
    record.valid = result.valid
    record.problems = json.dumps([p.to_dict() for p in result.problems], ensure_ascii=False)
    record.n_subtasks = stats.subtasks
    record.n_tool_calls = stats.tool_calls
    record.n_steps = stats.steps
    record.n_failures = len(result.failures)
    record.steps = json.dumps(
        {**result.steps, "failures": [f.to_dict() for f in result.failures]}, ensure_ascii=False
    )


def fill_usage(record: TraceRecord, meter: Meter, models: dict[str, str], seconds: float) -> None:
    """What a trace cost, done or not: tokens, dollars, seconds, and the model of each role."""
    record.prompt_tokens = meter.prompt_tokens
    record.completion_tokens = meter.completion_tokens
    record.cost_usd = meter.cost_usd
    record.seconds = round(seconds, 3)
    record.models = json.dumps({**models, **meter.models}, sort_keys=True)


async def synth_one(
    seed: SeedItem,
    llm: LLMClient,
    toolbox: Toolbox,
    options: ResearchOptions,
    config_hash: str,
    models: dict[str, str],
) -> TraceRecord:
    """The `traces` record of one seed: done (valid or not, with its problems) or failed (error).

    An endpoint error that is the user's setup (`is_fatal`: a rejected key, an unknown model) or a
    search or crawl API that rejects its key (`BackendAuthError`) would fail every other seed the
    same way, and recording them all as failed would make a plain rerun after the fix skip them:
    those raise `FatalResearchError`, which stops the run."""
    record = TraceRecord(seed.id, seed.question, seed.language, config_hash=config_hash)
    meter = Meter()
    started = time.perf_counter()
    try:
        result = await research(
            seed.question, seed.language, llm, toolbox, options, trace_id=seed.id, meter=meter
        )
    except LLMError as exc:
        if is_fatal(exc):
            raise FatalResearchError(exc) from None
        record.error = str(exc)
    except BackendAuthError as exc:  # a search or crawl API rejected its key
        raise FatalResearchError(exc) from None
    except OresError as exc:
        record.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one seed's bug must not end the run; it is recorded
        log.exception("synth %s failed", seed.id)
        record.error = f"{type(exc).__name__}: {exc}"
    else:
        fill_from_result(record, result)
    fill_usage(record, meter, models, time.perf_counter() - started)
    return record


# -- the run ---------------------------------------------------------------------------------------


async def run_synth(
    ws: Workspace,
    source: str | None,
    options: SynthOptions,
    llm_config: LLMConfig,
    *,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    spec: StageSpec = SYNTH,
    seeds: tuple[list[SeedItem], str] | None = None,
    config_extra: dict[str, Any] | None = None,
    on_finished: Callable[[RunContext], None] | None = None,
) -> SynthSummary:
    """Synthesize a trace per seed not yet done; returns the summary with the `traces` artifact.

    Everything a user can get wrong (no seeds, unknown corpus or backend, no model, unreachable
    endpoint) raises `OresError` before the run is registered. An endpoint that rejects the key or
    does not know the model (`is_fatal`), or a search or crawl API that rejects its key
    (`BackendAuthError`), stops the run with an `OresError`, the run marked failed.
    Ctrl-C abandons the traces in flight. Either way, finished traces are kept for the rerun and
    the run is marked interrupted or failed, and its LLM calls are registered.

    `spec`, `seeds` ((items, input name), instead of `source`), `config_extra` (hashed with the
    config) and `on_finished` let `ores eval run --workflow` run the same workflow on a benchmark
    into its own stage and kind."""
    options.research.check()
    for role in ROLES:
        llm_config.role(role)
    items, input_name = seeds or load_seeds(ws, source, options.question_field, options.fmt)
    async with contextlib.AsyncExitStack() as stack:
        toolbox = open_toolbox(ws, search=options.search, crawl=options.crawl, cache=options.cache)
        await stack.enter_async_context(toolbox)  # closed last: after the run and its LLM client
        if options.check_endpoints:
            await check_endpoints(llm_config)
        config = {**synth_config(llm_config, options), **(config_extra or {})}
        models = models_of(llm_config)

        async def open_workflow(run: RunContext, inner: contextlib.AsyncExitStack) -> Researcher:
            # Closed last in, first out: the LLM client before the call log it writes to, the call
            # log before the run registers it.
            calls = inner.enter_context(CallLog(run.open_log(CALLS_KIND), run.run_id))
            llm = await inner.enter_async_context(LLMClient(llm_config, calls))

            async def researcher(seed: SeedItem) -> TraceRecord:
                return await synth_one(seed, llm, toolbox, options.research, run.config_hash, models)

            return researcher

        run_options = RunOptions(options.concurrency, options.shard, options.retry_failed, options.limit)
        return await run_research(
            ws,
            spec,
            config,
            items,
            input_name,
            run_options,
            open_workflow,
            progress=progress,
            on_record=on_record,
            on_finished=on_finished,
        )
