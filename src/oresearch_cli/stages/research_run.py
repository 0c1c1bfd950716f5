"""The loop every research stage shares (`ores synth`, `ores eval run`): questions in, one trace row
per question, each appended (flushed) the moment it finishes.

A stage supplies what differs, a `Researcher` (question -> trace row: the multi-agent workflow,
or one model through the single-model loop) opened inside the run, and its config hash; this
module does the rest the same way for both: the input (a file, '-', or the latest `seeds`),
sharding by a stable hash of the id, resume (a rerun with the same config skips questions done
earlier, and failed ones unless `retry_failed`), `limit`, bounded concurrency, progress, the
summary, and stopping on a setup error (`FatalResearchError`) with every finished row kept.

Several processes on one workspace with the same stage and config share the questions: each
question is claimed through the catalog's leases (`workspace/leases.py`) just before it is
researched, so a question another live process holds or has finished is not paid for twice, and
the questions of a process that dies are taken over by the others, which wait for their
siblings' questions until each is settled or theirs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oresearch_cli.agent.authorship import Authorship, authorship_of
from oresearch_cli.errors import InputError, OresError
from oresearch_cli.llm.waiting import lend_while_waiting, reset_lend
from oresearch_cli.records import (
    ID_FIELDS,
    LANGUAGE_FIELDS,
    QUESTION_FIELDS,
    Record,
    first_value,
    id_of,
    pick_field,
    question_of,
    read_records,
    source_name,
)
from oresearch_cli.stages.seed import content_id
from oresearch_cli.textutil import detect_language
from oresearch_cli.workspace import ArtifactInfo, Progress, RunContext, StageSpec, Status, Workspace
from oresearch_cli.workspace.leases import Claim, ClaimResult, Lease, LeaseBook, renewing, utcnow
from oresearch_cli.workspace.run import iter_source

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
    n_elsewhere: int = 0  # settled meanwhile by a sibling process on the same workspace and config
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


def seeds_from_rows(
    rows: Sequence[dict[str, Any] | Record], name: str, field_name: str | None
) -> list[SeedItem]:
    """The questions of `rows` (first of each id; ids from the row or the question's text); a
    question that is not text or is too long, or an id of another type, is refused with file:line."""
    records = [r if isinstance(r, Record) else Record(r, f"{name}#{i}") for i, r in enumerate(rows, start=1)]
    qfield = pick_field(records, field_name, QUESTION_FIELDS, name)
    seen: set[str] = set()
    items = []
    for record in records:
        question = " ".join(question_of(record, qfield).split())
        given_id = id_of(record, ID_FIELDS)
        if not question:
            continue
        item_id = given_id or content_id(question)
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
    return seeds_from_rows(records, name, question_field), name


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
        planned = todo[: options.limit] if options.limit is not None else todo
        # Closed before the researcher (last in, first out): renewal stops, held leases are let go.
        book = stack.enter_context(run.leases())
        await stack.enter_async_context(renewing(book))
        summary = ResearchSummary(
            run_id=run.run_id,
            n_input=n_input,
            n_in_shard=len(seeds),
            n_skipped=n_skipped,
            n_skipped_failed=sum(
                1 for s in seeds if run.is_done(s.id, options.retry_failed) and run.prior[s.id] != Status.DONE
            ),
            n_todo=len(planned),
        )
        run.progress.start(
            spec.name,
            len(planned),
            f"{run.run_id}: {len(planned)} questions to research ({n_skipped} done earlier)",
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

        def elsewhere(seed: SeedItem, claim: Claim) -> None:
            summary.n_elsewhere += 1
            by = claim.previous.run_id if claim.previous is not None else "another run"
            run.progress.advance(item=f"{seed.id}: done by {by}", stats=summary.stats())

        shared = _Shared(run, book, options.retry_failed, options.limit, elsewhere)
        try:
            await _research_all(todo, researcher, options.concurrency, finished, shared)
            summary.n_todo = shared.n_claimed
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


@dataclass
class _Shared:
    """What the question loop needs to share a run's questions with sibling processes."""

    run: RunContext
    book: LeaseBook
    retry_failed: bool
    limit: int | None
    elsewhere: Callable[[SeedItem, Claim], None]  # a question settled by another process
    poll_s: float = 1.0  # how often questions a live sibling holds are looked at again
    n_claimed: int = 0  # questions this run took (researched, or in flight)
    # What siblings settled, read in one query at most every `poll_s`: a run that starts after
    # another skips the other's finished questions without a catalog transaction each.
    settled: dict[str, Lease] = field(default_factory=dict)
    settled_read: float = float("-inf")

    def settled_elsewhere(self, seed: SeedItem) -> Claim | None:
        """A claim's answer known without claiming: settled by a sibling (None: ask the catalog)."""
        if time.monotonic() - self.settled_read > self.poll_s:
            self.settled = self.book.settled()
            self.settled_read = time.monotonic()
        lease = self.settled.get(seed.id)
        if lease is None or self.book.judge(lease, utcnow(), self.retry_failed) is not ClaimResult.SETTLED:
            return None
        return Claim(seed.id, ClaimResult.SETTLED, lease)

    def written_by(self, run_id: str, item_id: str) -> dict[str, Any] | None:
        """The record of `item_id` a dead run wrote before it could settle its lease, if any."""
        path = self.run.ws.run_dir(self.run.stage, run_id) / f"{self.run.kind}.jsonl"
        found = None
        for record in iter_source(path):
            if str(record["id"]) == item_id:
                found = record
        return found


class _Place:
    """A question's place among the `concurrency` working ones, lent while all its waiting calls
    wait out a retry (a question's subtasks may wait at once: lent on the first, back after the last)."""

    def __init__(self, places: asyncio.Semaphore) -> None:
        self.places = places
        self.held = False
        self.n_waiting = 0
        self.taking_back = asyncio.Lock()

    async def __aenter__(self) -> _Place:
        await self.places.acquire()
        self.held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            self.places.release()

    @contextlib.asynccontextmanager
    async def lent(self) -> AsyncIterator[None]:
        self.n_waiting += 1
        if self.held:
            self.held = False
            self.places.release()
        try:
            yield
        except BaseException:  # cancelled (Ctrl-C, a fatal error): no place to take back
            self.n_waiting -= 1
            raise
        self.n_waiting -= 1
        # One coroutine takes the place back (a question's subtasks may end their waits together:
        # each acquiring would hold two places and leak one); the others find it held.
        async with self.taking_back:
            if self.n_waiting == 0 and not self.held:
                await self.places.acquire()
                self.held = True


async def _research_all(
    todo: list[SeedItem],
    researcher: Researcher,
    concurrency: int,
    finished: Callable[[TraceRecord], None],
    shared: _Shared,
) -> None:
    """`concurrency` workers take questions in order; each claims its question just before
    researching it. One a live sibling holds waits and is tried again (the sibling settles it, or
    dies and it is taken over); one a sibling settled is counted and left."""
    queue = collections.deque(todo)
    waiting: list[SeedItem] = []
    book = shared.book

    async def claim(seed: SeedItem) -> Claim | None:
        """The claim of `seed`, or None when another process has it (held: it waits)."""
        # On the loop's thread, as every catalog use of a run: DuckDB refuses a second connection
        # of one process to the file while a read-only one is open in another thread.
        got = shared.settled_elsewhere(seed) or book.claim(seed.id, retry_failed=shared.retry_failed)
        if got.result is ClaimResult.HELD:
            waiting.append(seed)
            await asyncio.sleep(0)  # a claim blocks the loop a moment: let the others run between
            return None
        if got.result is ClaimResult.SETTLED:
            shared.elsewhere(seed, got)
            await asyncio.sleep(0)
            return None
        dead = got.taken_over_from
        if dead is not None:
            # Its holder died between writing the record and settling the lease: settle it now.
            record = await asyncio.to_thread(shared.written_by, dead, seed.id)
            if record is not None:
                book.settle(seed.id, str(record.get("status") or Status.DONE))
                shared.elsewhere(seed, got)
                return None
        return got

    # `concurrency` places; a question waiting out a retry lends its place, so up to twice as many
    # questions are in flight, never more than `concurrency` of them working (llm/waiting.py).
    places = asyncio.Semaphore(max(1, concurrency))

    async def worker() -> None:
        while shared.limit is None or shared.n_claimed < shared.limit:
            if not queue:
                if not waiting:
                    return
                await asyncio.sleep(shared.poll_s)
                if not queue:
                    queue.extend(waiting)
                    waiting.clear()
                continue
            seed = queue.popleft()
            shared.n_claimed += 1  # counted before the claim's await, so `limit` holds across workers
            async with _Place(places) as place:
                if await claim(seed) is None:
                    shared.n_claimed -= 1
                    continue
                token = lend_while_waiting(place.lent)
                try:
                    record = await researcher(seed)
                finally:
                    reset_lend(token)
            finished(record)
            book.settle(seed.id, str(record.status))

    n_workers = max(1, min(2 * concurrency, len(todo)))
    tasks = [asyncio.ensure_future(worker()) for _ in range(n_workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancelled questions unwind before the HTTP clients and the toolbox close under
        # them (a fatal error or Ctrl-C ends the run with calls still in flight).
        await asyncio.gather(*tasks, return_exceptions=True)
