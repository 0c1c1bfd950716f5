"""The loop every research stage shares (`ores synth`, `ores eval run`): questions in, one trace row
per question, each appended (flushed) the moment it finishes.

A stage supplies what differs, a `Researcher` (question -> trace row: the multi-agent workflow,
or one model through the single-model loop) opened inside the run, and its config hash; this
module does the rest the same way for both: the input (a file, '-', or the latest `seeds`),
sharding by a stable hash of the id, resume (a rerun with the same config skips questions done
earlier, and failed ones unless `retry_failed`), `limit`, bounded concurrency, progress, the
summary, and stopping on a setup error (`FatalResearchError`) with every finished row kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oresearch_cli.agent.authorship import Authorship, authorship_of
from oresearch_cli.errors import InputError, OresError
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
from oresearch_cli.workspace import ArtifactInfo, Progress, RunContext, StageSpec, Status, Workspace

if TYPE_CHECKING:
    from oresearch_cli.stages.synth import TraceRecord


@dataclass(frozen=True)
class SeedItem:
    id: str
    question: str
    language: str


Researcher = Callable[[SeedItem], Awaitable["TraceRecord"]]
# Called once the run is registered (so it can open the run's call log) and before any question
# starts; what it enters on the stack is closed when the run ends, before the run is finished.
OpenResearcher = Callable[[RunContext, contextlib.AsyncExitStack], Awaitable[Researcher]]


@dataclass(frozen=True)
class RunOptions:
    """How a research run goes through its questions; none of it changes a trace (not hashed)."""

    concurrency: int = 8  # questions in flight
    shard: tuple[int, int] | None = None  # (i, n), 1-based
    retry_failed: bool = False
    limit: int | None = None


class FatalResearchError(Exception):
    """Raised by a `Researcher` for an error every other question would hit too (a rejected key,
    an unknown model): the run stops instead of recording each question as failed, which would
    make a plain rerun after the fix skip them all."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class ResearchSummary:
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


def seeds_from_rows(rows: list[dict[str, Any]], name: str, field_name: str | None) -> list[SeedItem]:
    """The questions of `rows` (first of each id; ids from the row or the question's text)."""
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


def load_seeds(
    ws: Workspace, source: str | None, question_field: str | None = None, fmt: str | None = None
) -> tuple[list[SeedItem], str]:
    """(seeds, the input's name for the run): a file, '-', or the latest `seeds` artifact."""
    if source is None:
        artifact = ws.require_latest("seeds", "seed")
        rows = ws.read_artifact(artifact)
        if not rows:
            raise InputError(f"{artifact.path}: the seeds artifact is empty; run `ores seed` with questions")
        return seeds_from_rows(rows, str(artifact.path), question_field), artifact.run_id
    records = read_records(source, fmt)
    name = source_name(source)
    return seeds_from_rows([r.data for r in records], name, question_field), name


async def check_reachable(urls: list[str], what: str, fix: str, timeout: float = 5.0) -> None:
    """Fail before a run starts when an OpenAI-compatible base URL does not answer at all;
    `fix` ends the line (which flag or variable names the URL)."""
    import httpx

    from oresearch_cli.llm.redact import safe_url

    async with httpx.AsyncClient(timeout=timeout) as client:
        for url in dict.fromkeys(urls):
            try:
                await client.get(url.rstrip("/") + "/models")
            except httpx.HTTPError as exc:
                raise OresError(
                    f"{what} {safe_url(url)} is unreachable ({type(exc).__name__}); start it "
                    f"(e.g. `ores serve`) or point {fix} at a running one"
                ) from None


# -- the run ---------------------------------------------------------------------------------------


async def run_research(
    ws: Workspace,
    spec: StageSpec,
    config: dict[str, Any],
    seeds: list[SeedItem],
    input_name: str,
    options: RunOptions,
    open_researcher: OpenResearcher,
    *,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_finished: Callable[[RunContext], None] | None = None,
) -> ResearchSummary:
    """Research every seed of the shard not done earlier under the same config; returns the summary
    with the run's artifact. `on_finished` gets the finished run (its artifact written) to add files
    made from it. A `FatalResearchError` stops the run with an `OresError` (the run
    marked failed); Ctrl-C abandons the questions in flight. Either way, finished rows are kept
    for the rerun."""
    n_input = len(seeds)
    if options.shard is not None:
        i, n = options.shard
        seeds = [s for s in seeds if shard_of(s.id, n) == i]
    async with contextlib.AsyncExitStack() as stack:
        run = stack.enter_context(
            ws.start_run(spec, config, inputs=[input_name], resume=True, progress=progress)
        )
        researcher = await open_researcher(run, stack)
        todo = [s for s in seeds if not run.is_done(s.id, options.retry_failed)]
        n_skipped = len(seeds) - len(todo)
        if options.limit is not None:
            todo = todo[: options.limit]
        summary = ResearchSummary(
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
            spec.name,
            len(todo),
            f"{run.run_id}: {len(todo)} questions to research ({n_skipped} done earlier)",
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
            await _research_all(todo, researcher, options.concurrency, finished)
        except FatalResearchError as fatal:
            # One line for the CLI; the run is marked failed, the JSONL stays for the rerun.
            raise OresError(
                f"{fatal.error} ({spec.name} stopped: {summary.n_done + summary.n_failed} traces of this "
                "run are kept; fix it and rerun the same command to do the rest)"
            ) from None
        finally:
            summary.seconds = time.perf_counter() - started
    # Leaving the stack closed what the researcher opened, then finished the run (its Parquet,
    # and the complete call log registered beside it).
    summary.artifact = run.artifact
    if on_finished is not None:
        on_finished(run)
    return summary


async def _research_all(
    todo: list[SeedItem], researcher: Researcher, concurrency: int, finished: Callable[[TraceRecord], None]
) -> None:
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(seed: SeedItem) -> None:
        async with slots:
            record = await researcher(seed)
        finished(record)

    tasks = [asyncio.ensure_future(one(seed)) for seed in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancelled questions unwind before the HTTP clients and the toolbox close under
        # them (a fatal error or Ctrl-C ends the run with calls still in flight).
        await asyncio.gather(*tasks, return_exceptions=True)
