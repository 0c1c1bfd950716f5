"""`ores eval run`: a research system answers a benchmark's questions; its reports are what
`ores eval score` judges.

Two systems, one loop (`stages.research_run`, the one `ores synth` runs on, so a run is resumable,
sharded and reports progress the same way):

- `model`: one model writes the whole trace through the single-model research loop
  (`agent.single.research`), the way the trained model runs: a checkpoint, run id or `embedded`
  decoded in process, or an OpenAI-compatible `/v1/completions` URL (vLLM, `ores serve`) with the
  model's tokenizer folder.
- `workflow`: the multi-agent workflow of `ores synth` on any endpoints (the teacher).

Each question's row is a trace row (kind `reports`, so `ores filter` never takes an evaluation for
training data) with the full trace. When the run ends, `submission.jsonl` beside it holds DeepResearch
Bench's submission format, `{id, prompt, article}` for every question answered, which DRB's own
scorer reads as it is.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.agent.generators import Generator, GeneratorError
from oresearch_cli.agent.single import LoopBudget
from oresearch_cli.errors import InputError
from oresearch_cli.llm import LLMConfig
from oresearch_cli.records import write_jsonl
from oresearch_cli.scoring.drb import QUERY_FILE, default_data_dir
from oresearch_cli.stages.eval_settings import EvalSettings
from oresearch_cli.stages.research_run import (
    FatalResearchError,
    Researcher,
    ResearchSummary,
    RunOptions,
    SeedItem,
    load_seeds,
    run_research,
)
from oresearch_cli.stages.single_model import ModelSystem, episode_record, open_generator
from oresearch_cli.stages.synth import SynthOptions, TraceRecord, run_synth
from oresearch_cli.tools import Toolbox, open_toolbox
from oresearch_cli.tools.errors import BackendAuthError
from oresearch_cli.workspace import Progress, RunContext, StageSpec, Status, Workspace

SUBMISSION_FILE = "submission.jsonl"
SUBMISSION_KIND = "submission"
BENCHMARKS = {"drb": "DeepResearch Bench's 100 tasks (data/deepresearch_bench/query.jsonl)"}


@dataclass
class ReportRecord(TraceRecord):
    """One benchmark question's row of an eval run: a trace row under its own kind."""

    KIND: ClassVar[str] = "reports"


EVAL_RUN = StageSpec.of("eval", ReportRecord)


@dataclass
class EvalRunOptions:
    bench: str = "drb"
    language: str | None = None  # only the questions in this language (DRB: en or zh)
    run: RunOptions = field(default_factory=RunOptions)
    settings: EvalSettings = field(default_factory=EvalSettings)
    cache: bool = True
    question_field: str | None = None
    fmt: str | None = None


# -- the questions ---------------------------------------------------------------------------------


def bench_source(bench: str) -> str:
    """The seeds file of `bench`: a named benchmark's shipped file, or the path as given."""
    if bench in BENCHMARKS:
        return str(default_data_dir() / QUERY_FILE)
    if bench == "-" or Path(bench).expanduser().is_file():
        return bench
    raise InputError(
        f"--bench {bench}: neither a benchmark ({', '.join(BENCHMARKS)}) nor a file; pass `drb` or a "
        "JSONL/CSV/Parquet file of questions"
    )


def load_questions(ws: Workspace, options: EvalRunOptions) -> tuple[list[SeedItem], str]:
    seeds, name = load_seeds(ws, bench_source(options.bench), options.question_field, options.fmt)
    if options.bench in BENCHMARKS:
        name = options.bench
    if options.language:
        wanted = options.language.lower()
        seeds = [s for s in seeds if s.language.lower().split("-")[0] == wanted]
        if not seeds:
            raise InputError(f"--language {options.language}: no question of {name} is in that language")
    return seeds, name


# -- one model -------------------------------------------------------------------------------------


async def answer_alone(
    seed: SeedItem, generator: Generator, toolbox: Toolbox, budget: LoopBudget, config_hash: str, model: str
) -> ReportRecord:
    """One question through the single-model loop; a generator that fails is this row's error."""
    from oresearch_cli.agent.single import research

    started = time.perf_counter()
    try:
        episode = await research(seed.question, generator, toolbox, language=seed.language, budget=budget)
    except BackendAuthError as exc:  # a rejected search key: every question would fail the same way
        raise FatalResearchError(exc) from None
    except GeneratorError as exc:
        record = ReportRecord(seed.id, seed.question, seed.language, config_hash=config_hash, error=str(exc))
        record.models = json.dumps({"model": model})
        record.seconds = round(time.perf_counter() - started, 3)
        return record
    return episode_record(seed, episode, config_hash, model, ReportRecord)


def model_config(model: str, options: EvalRunOptions, settings: EvalSettings) -> dict[str, Any]:
    """What decides a report, hashed for resume: not concurrency, the shard or the limit."""
    from oresearch_cli.agent.prompts import prompts_version

    return {
        "system": "model",
        "model": model,
        "bench": options.bench,
        "prompts_version": prompts_version(),
        "budget": asdict(settings.budget()),
        "search": settings.search,
        "crawl": settings.crawl,
    }


# -- the run ---------------------------------------------------------------------------------------


def write_submission(run: RunContext) -> None:
    """DRB's `{id, prompt, article}` for every answered question, beside the run's reports."""
    assert run.artifact is not None
    rows = []
    for row in run.ws.read_artifact(run.artifact):
        if row.get("status") != Status.DONE:
            continue
        raw_id = str(row["id"])
        rows.append(
            {
                "id": int(raw_id) if raw_id.isdigit() else raw_id,
                "prompt": row["question"],
                "article": row.get("report") or "",
            }
        )
    path = run.dir / SUBMISSION_FILE
    with path.open("w", encoding="utf-8") as fh:
        write_jsonl(rows, fh)
    run.add_artifact(SUBMISSION_KIND, path, len(rows), format="jsonl")


async def run_model_eval(
    ws: Workspace,
    system: ModelSystem,
    options: EvalRunOptions,
    *,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> ResearchSummary:
    """Answer every question of the benchmark with one model; see the module docstring."""
    settings = options.settings
    seeds, input_name = load_questions(ws, options)
    async with contextlib.AsyncExitStack() as stack:
        toolbox = open_toolbox(ws, search=settings.search, crawl=settings.crawl, cache=options.cache)
        await stack.enter_async_context(toolbox)
        generator, model = await open_generator(ws, system, stack, max_batch=options.run.concurrency)
        config = model_config(model, options, settings)
        budget = settings.budget()

        async def open_model(run: RunContext, inner: contextlib.AsyncExitStack) -> Researcher:
            async def researcher(seed: SeedItem) -> TraceRecord:
                return await answer_alone(seed, generator, toolbox, budget, run.config_hash, model)

            return researcher

        return await run_research(
            ws,
            EVAL_RUN,
            config,
            seeds,
            input_name,
            options.run,
            open_model,
            progress=progress,
            on_record=on_record,
            on_finished=write_submission,
        )


async def run_workflow_eval(
    ws: Workspace,
    options: EvalRunOptions,
    synth: SynthOptions,
    llm_config: LLMConfig,
    *,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> ResearchSummary:
    """Answer every question of the benchmark with the multi-agent workflow of `ores synth`."""
    seeds = load_questions(ws, options)
    synth.shard, synth.retry_failed, synth.limit = (
        options.run.shard,
        options.run.retry_failed,
        options.run.limit,
    )
    synth.concurrency = options.run.concurrency
    return await run_synth(
        ws,
        None,
        synth,
        llm_config,
        progress=progress,
        on_record=on_record,
        spec=EVAL_RUN,
        seeds=seeds,
        config_extra={"system": "workflow", "bench": options.bench},
        on_finished=write_submission,
    )
