"""`ores synth`: seeds -> traces, one per seed, through the multi-agent workflow (`agent.research`).

Each finished trace is appended to the run's JSONL at once (flushed), so a killed run loses only
the traces in flight; a rerun with the same config skips seeds already done (and failed ones
unless `retry_failed`). The config hash covers what changes a trace (models, prompts version,
bounds, search and crawl backends, sequential mode), not concurrency or the shard. `shard=(i, n)`
keeps the seeds whose id hashes to shard i of n, so machines can split one seed set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pyarrow as pa

from oresearch_cli.agent import Meter, ResearchOptions, prompts_version, research
from oresearch_cli.agent.authorship import Authorship, authorship_of
from oresearch_cli.config import load_recipe, resolve
from oresearch_cli.errors import InputError, OresError
from oresearch_cli.llm import CALLS_KIND, CallLog, LLMClient, LLMConfig, LLMError
from oresearch_cli.records import (
    ID_FIELDS,
    LANGUAGE_FIELDS,
    QUESTION_FIELDS,
    Record,
    first_value,
    pick_field,
    read_records,
    source_name,
)
from oresearch_cli.stages.seed import content_id
from oresearch_cli.textutil import detect_language
from oresearch_cli.tools import Toolbox, open_toolbox
from oresearch_cli.trace import trace_stats
from oresearch_cli.workspace import ArtifactInfo, ArtifactRecord, Progress, StageSpec, Status, Workspace

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
class SeedItem:
    id: str
    question: str
    language: str


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


@dataclass
class SynthSummary:
    run_id: str
    n_input: int
    n_in_shard: int
    n_skipped: int
    n_todo: int
    n_skipped_failed: int = 0  # of n_skipped: failed earlier; `retry_failed` redoes them
    n_done: int = 0
    n_failed: int = 0
    n_invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    artifact: ArtifactInfo | None = None
    # who wrote the pieces of the traces done this run: the model, or the orchestrator's fallbacks
    authorship: Authorship = field(default_factory=lambda: Authorship(traces=0))

    def add(self, record: TraceRecord) -> None:
        if record.status == Status.DONE:
            self.n_done += 1
            self.n_invalid += not record.valid
            written = authorship_of(record.steps)
            if written is not None:
                self.authorship += written
        else:
            self.n_failed += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        if record.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + record.cost_usd

    def stats(self) -> str:
        """The totals so far, as the progress line shows them."""
        cost = f"${self.cost_usd:.4f}" if self.cost_usd is not None else "$?"
        tokens = self.prompt_tokens + self.completion_tokens
        share = self.authorship.model_share
        written = f" | model-written {share:.0%}" if share is not None else ""
        return (
            f"done {self.n_done} (invalid {self.n_invalid}) failed {self.n_failed} | "
            f"{tokens:,} tokens | {cost}{written}"
        )


# -- input -----------------------------------------------------------------------------------------


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`i/n` (1-based) -> (i, n)."""
    if not text:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise OresError(f"--shard {text!r}: expected i/n such as 1/4; fix the value") from None
    if not (n >= 1 and 1 <= i <= n):
        raise OresError(f"--shard {text!r}: need 1 <= i <= n; e.g. --shard 1/2 and --shard 2/2")
    return i, n


def shard_of(item_id: str, n: int) -> int:
    """The 1-based shard of `item_id` among n: a stable hash, so every machine agrees."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def _seeds_from_rows(rows: list[dict[str, Any]], name: str, field_name: str | None) -> list[SeedItem]:
    records = [Record(r, f"{name}#{i}") for i, r in enumerate(rows, start=1)]
    qfield = pick_field(records, field_name, QUESTION_FIELDS, name)
    seen: set[str] = set()
    items = []
    for record in records:
        question = " ".join(str(record.data.get(qfield) or "").split())
        if not question:
            continue
        raw_id = first_value(record.data, ID_FIELDS)
        item_id = str(raw_id) if raw_id is not None else content_id(question)
        if item_id in seen:
            continue
        seen.add(item_id)
        language = first_value(record.data, LANGUAGE_FIELDS)
        items.append(SeedItem(item_id, question, str(language) if language else detect_language(question)))
    if not items:
        raise InputError(f"{name}: no non-empty questions in field {qfield!r}; check the input")
    return items


def load_seeds(ws: Workspace, source: str | None, options: SynthOptions) -> tuple[list[SeedItem], str]:
    """(seeds, the input's name for the run): a file, '-', or the latest `seeds` artifact."""
    if source is None:
        artifact = ws.require_latest("seeds", "seed")
        rows = ws.read_artifact(artifact)
        if not rows:
            raise InputError(f"{artifact.path}: the seeds artifact is empty; run `ores seed` with questions")
        return _seeds_from_rows(rows, str(artifact.path), options.question_field), artifact.run_id
    records = read_records(source, options.fmt)
    name = source_name(source)
    return _seeds_from_rows([r.data for r in records], name, options.question_field), name


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
    import httpx

    urls = dict.fromkeys(url for role in ROLES for url in llm_config.role(role).base_urls)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for url in urls:
            try:
                await client.get(url.rstrip("/") + "/models")
            except httpx.HTTPError as exc:
                from oresearch_cli.llm.redact import safe_url

                raise OresError(
                    f"llm endpoint {safe_url(url)} is unreachable ({type(exc).__name__}); start it "
                    "(e.g. `ores serve`) or point --base-url / OPENAI_BASE_URL at a running one"
                ) from None


# -- one seed --------------------------------------------------------------------------------------

# HTTP statuses that say the configuration is wrong (key, permissions, model name, base URL), not
# this seed: every other seed would fail the same way, and recording them all as failed would make
# a plain rerun after the fix skip them. So they stop the run instead (see `_Fatal`).
_FATAL_STATUSES = (401, 403, 404)


def is_fatal(exc: LLMError) -> bool:
    """Whether an endpoint error is the user's setup (stop the run) rather than this seed's."""
    quota = exc.status == 429 and not exc.retryable  # insufficient_quota: no retry will help
    return exc.status in _FATAL_STATUSES or quota


class _Fatal(Exception):
    """Carries a fatal `LLMError` out of the seed loop without recording the seed as failed."""

    def __init__(self, error: LLMError) -> None:
        super().__init__(str(error))
        self.error = error


async def synth_one(
    seed: SeedItem,
    llm: LLMClient,
    toolbox: Toolbox,
    options: ResearchOptions,
    config_hash: str,
    models: dict[str, str],
) -> TraceRecord:
    """The `traces` record of one seed: done (valid or not, with its problems) or failed (error)."""
    record = TraceRecord(seed.id, seed.question, seed.language, config_hash=config_hash)
    meter = Meter()
    started = time.perf_counter()
    try:
        result = await research(
            seed.question, seed.language, llm, toolbox, options, trace_id=seed.id, meter=meter
        )
    except LLMError as exc:
        if is_fatal(exc):
            raise _Fatal(exc) from None
        record.error = str(exc)
    except OresError as exc:
        record.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one seed's bug must not end the run; it is recorded
        log.exception("synth %s failed", seed.id)
        record.error = f"{type(exc).__name__}: {exc}"
    else:
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
    record.prompt_tokens = meter.prompt_tokens
    record.completion_tokens = meter.completion_tokens
    record.cost_usd = meter.cost_usd
    record.seconds = round(time.perf_counter() - started, 3)
    record.models = json.dumps({**models, **meter.models}, sort_keys=True)
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
) -> SynthSummary:
    """Synthesize a trace per seed not yet done; returns the summary with the `traces` artifact.

    Everything a user can get wrong (no seeds, unknown corpus or backend, no model, unreachable
    endpoint) raises `OresError` before the run is registered. An endpoint that rejects the key or
    does not know the model (`is_fatal`) stops the run with an `OresError`, the run marked failed.
    Ctrl-C abandons the traces in flight. Either way, finished traces are kept for the rerun and
    the run is marked interrupted or failed, and its LLM calls are registered."""
    options.research.check()
    for role in ROLES:
        llm_config.role(role)
    seeds, input_name = load_seeds(ws, source, options)
    n_input = len(seeds)
    if options.shard is not None:
        i, n = options.shard
        seeds = [s for s in seeds if shard_of(s.id, n) == i]
    async with contextlib.AsyncExitStack() as stack:
        # Closed last in, first out: the LLM client before the call log it writes to, the call
        # log before the run registers it, the toolbox last.
        toolbox = open_toolbox(ws, search=options.search, crawl=options.crawl, cache=options.cache)
        await stack.enter_async_context(toolbox)
        if options.check_endpoints:
            await check_endpoints(llm_config)
        config = synth_config(llm_config, options)
        models = models_of(llm_config)
        run = stack.enter_context(
            ws.start_run(SYNTH, config, inputs=[input_name], resume=True, progress=progress)
        )
        calls = stack.enter_context(CallLog(run.open_log(CALLS_KIND), run.run_id))
        llm = await stack.enter_async_context(LLMClient(llm_config, calls))

        todo = [s for s in seeds if not run.is_done(s.id, options.retry_failed)]
        n_skipped = len(seeds) - len(todo)
        if options.limit is not None:
            todo = todo[: options.limit]
        summary = SynthSummary(
            run_id=run.run_id,
            n_input=n_input,
            n_in_shard=len(seeds),
            n_skipped=n_skipped,
            n_skipped_failed=sum(
                1 for s in seeds if run.is_done(s.id, options.retry_failed) and run.prior[s.id] != Status.DONE
            ),
            n_todo=len(todo),
        )
        run.progress.start(
            "synth", len(todo), f"{run.run_id}: {len(todo)} seeds to research ({n_skipped} done earlier)"
        )
        started = time.perf_counter()

        def finished(record: TraceRecord) -> None:
            run.append(record)
            summary.add(record)
            if on_record is not None:
                on_record(record.to_row())
            state = (
                record.status if record.status != Status.DONE else ("valid" if record.valid else "invalid")
            )
            run.progress.advance(
                item=f"{record.id}: {state} in {record.seconds:.0f} s", stats=summary.stats()
            )

        try:
            await _synth_all(todo, llm, toolbox, options, run.config_hash, models, finished)
        except _Fatal as fatal:
            # One line for the CLI; the run is marked failed, the JSONL stays for the rerun.
            raise OresError(
                f"{fatal.error} (synth stopped: {summary.n_done + summary.n_failed} traces of this "
                "run are kept; fix it and rerun the same command to do the rest)"
            ) from None
        finally:
            summary.seconds = time.perf_counter() - started
    # Leaving the stack closed the client and the call log, then finished the run (its Parquet,
    # and the complete call log registered beside it).
    summary.artifact = run.artifact
    return summary


async def _synth_all(
    todo: list[SeedItem],
    llm: LLMClient,
    toolbox: Toolbox,
    options: SynthOptions,
    config_hash: str,
    models: dict[str, str],
    finished: Callable[[TraceRecord], None],
) -> None:
    slots = asyncio.Semaphore(max(1, options.concurrency))

    async def one(seed: SeedItem) -> None:
        async with slots:
            record = await synth_one(seed, llm, toolbox, options.research, config_hash, models)
        finished(record)

    tasks = [asyncio.ensure_future(one(seed)) for seed in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancelled seeds unwind before the HTTP clients and the toolbox close under them
        # (a fatal error or Ctrl-C ends the run with calls still in flight).
        await asyncio.gather(*tasks, return_exceptions=True)
