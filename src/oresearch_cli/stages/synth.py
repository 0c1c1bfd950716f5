"""`ores synth`: seeds -> traces, one per seed, through the multi-agent workflow (`agent.research`).

Each finished trace is appended to the run's JSONL at once (flushed), so a killed run loses only
the traces in flight; a rerun with the same config skips seeds already done (and failed ones
unless `retry_failed`). The config hash covers what changes a trace (models, prompts version,
bounds, search and crawl backends, sequential mode), not concurrency or the shard. `shard=(i, n)`
keeps the seeds whose id hashes to shard i of n, so machines can split one seed set.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from oresearch_cli.agent import Meter, ResearchOptions, prompts_version, research
from oresearch_cli.errors import InputError, OresError
from oresearch_cli.llm import (
    CALL_LOG_FILE,
    CallLog,
    LLMClient,
    LLMConfig,
    LLMError,
    register_call_log,
    register_unlogged_calls,
)
from oresearch_cli.records import pick_field, read_records, source_name
from oresearch_cli.stages.seed import ID_FIELDS, LANGUAGE_FIELDS, QUESTION_FIELDS, content_id
from oresearch_cli.textutil import detect_language
from oresearch_cli.tools import Toolbox, open_toolbox
from oresearch_cli.trace import trace_stats
from oresearch_cli.workspace import ArtifactInfo, Workspace

log = logging.getLogger(__name__)

STAGE = "synth"
KIND = "traces"
ROLES = ("planner", "worker", "summarizer")

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("language", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("trace", pa.string()),
        ("report", pa.string()),
        ("valid", pa.bool_()),
        ("problems", pa.string()),
        ("n_subtasks", pa.int32()),
        ("n_tool_calls", pa.int32()),
        ("n_steps", pa.int32()),
        ("n_failures", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("seconds", pa.float64()),
        ("models", pa.string()),
        ("config_hash", pa.string()),
        ("steps", pa.string()),
    ]
)


@dataclass(frozen=True)
class SeedItem:
    id: str
    question: str
    language: str


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

    def add(self, record: dict[str, Any]) -> None:
        if record["status"] == "done":
            self.n_done += 1
            self.n_invalid += not record.get("valid")
        else:
            self.n_failed += 1
        self.prompt_tokens += record.get("prompt_tokens") or 0
        self.completion_tokens += record.get("completion_tokens") or 0
        if record.get("cost_usd") is not None:
            self.cost_usd = (self.cost_usd or 0.0) + record["cost_usd"]


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
    from oresearch_cli.records import Record

    records = [Record(r, f"{name}#{i}") for i, r in enumerate(rows, start=1)]
    qfield = pick_field(records, field_name, QUESTION_FIELDS, name)
    seen: set[str] = set()
    items = []
    for record in records:
        question = " ".join(str(record.data.get(qfield) or "").split())
        if not question:
            continue
        raw_id = next((record.data[f] for f in ID_FIELDS if record.data.get(f) not in (None, "")), None)
        item_id = str(raw_id) if raw_id is not None else content_id(question)
        if item_id in seen:
            continue
        seen.add(item_id)
        language = next((str(record.data[f]) for f in LANGUAGE_FIELDS if record.data.get(f)), None)
        items.append(SeedItem(item_id, question, language or detect_language(question)))
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

# What a recipe's `synth:` section may set, with the built-in defaults (an unset flag takes the
# recipe's value, then this one). The research bounds are `ResearchOptions` fields.
SYNTH_DEFAULTS: dict[str, Any] = {
    "search": "local",
    "crawl": "auto",
    "concurrency": 8,
    **ResearchOptions().to_dict(),
}


def read_synth_recipe(path: Path | None) -> dict[str, Any]:
    """The `synth:` section of a --config YAML ({} when there is none), each key checked."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read the config ({exc.strerror}); check the --config path"
        ) from None
    except yaml.YAMLError:
        raise InputError(f"{path}: invalid YAML; fix the file") from None
    section = data.get("synth") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise InputError(f"{path}: `synth:` must be a mapping of settings such as `max_steps: 10`")
    recipe: dict[str, Any] = {}
    for key, value in section.items():
        if key not in SYNTH_DEFAULTS:
            raise InputError(
                f"{path}: synth.{key} is not a synth setting; use one of {', '.join(SYNTH_DEFAULTS)}"
            )
        want = type(SYNTH_DEFAULTS[key])
        # bool is an int in Python: `max_steps: true` must not pass as 1.
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise InputError(f"{path}: synth.{key} must be {want.__name__}, got {value!r}; fix the value")
        recipe[key] = value
    return recipe


def synth_options(flags: dict[str, Any], config: Path | None = None, **rest: Any) -> SynthOptions:
    """SynthOptions from flags (None: unset) over the recipe's `synth:` section over the defaults;
    `rest` are SynthOptions fields no recipe sets (cache, shard, retry_failed, limit, ...)."""
    recipe = read_synth_recipe(config)
    values = {
        k: flags[k] if flags.get(k) is not None else recipe.get(k, d) for k, d in SYNTH_DEFAULTS.items()
    }
    research_fields = ResearchOptions().to_dict()
    research = {k: values[k] for k in research_fields}
    if "min_subtasks" not in recipe:
        research["min_subtasks"] = min(2, research["max_subtasks"])
    return SynthOptions(
        search=values["search"],
        crawl=values["crawl"],
        concurrency=values["concurrency"],
        research=ResearchOptions(**research),
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


def check_endpoints(llm_config: LLMConfig, timeout: float = 5.0) -> None:
    """Fail before the run starts when a role's endpoint does not answer at all."""
    import httpx

    urls = dict.fromkeys(url for role in ROLES for url in llm_config.role(role).base_urls)
    for url in urls:
        try:
            httpx.get(url.rstrip("/") + "/models", timeout=timeout)
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


def _record(seed: SeedItem, config_hash: str, models: dict[str, str]) -> dict[str, Any]:
    return {
        "id": seed.id,
        "question": seed.question,
        "language": seed.language,
        "status": "failed",
        "error": None,
        "trace": None,
        "report": None,
        "valid": False,
        "problems": "[]",
        "n_subtasks": 0,
        "n_tool_calls": 0,
        "n_steps": 0,
        "n_failures": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": None,
        "seconds": 0.0,
        "models": json.dumps(models, sort_keys=True),
        "config_hash": config_hash,
        "steps": "{}",
    }


async def synth_one(
    seed: SeedItem,
    llm: LLMClient,
    toolbox: Toolbox,
    options: ResearchOptions,
    config_hash: str,
    models: dict[str, str],
) -> dict[str, Any]:
    """The `traces` record of one seed: done (valid or not, with its problems) or failed (error)."""
    record = _record(seed, config_hash, models)
    meter = Meter()
    started = time.perf_counter()
    try:
        result = await research(
            seed.question, seed.language, llm, toolbox, options, trace_id=seed.id, meter=meter
        )
    except LLMError as exc:
        if is_fatal(exc):
            raise _Fatal(exc) from None
        record["error"] = str(exc)
    except OresError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - one seed's bug must not end the run; it is recorded
        log.exception("synth %s failed", seed.id)
        record["error"] = f"{type(exc).__name__}: {exc}"
    else:
        stats = trace_stats(result.trace)
        record.update(
            status="done",
            trace=result.text,
            report=result.report,
            valid=result.valid,
            problems=json.dumps([p.to_dict() for p in result.problems], ensure_ascii=False),
            n_subtasks=stats.subtasks,
            n_tool_calls=stats.tool_calls,
            n_steps=stats.steps,
            n_failures=len(result.failures),
            steps=json.dumps(
                {**result.steps, "failures": [f.to_dict() for f in result.failures]}, ensure_ascii=False
            ),
        )
    record.update(
        prompt_tokens=meter.prompt_tokens,
        completion_tokens=meter.completion_tokens,
        cost_usd=meter.cost_usd,
        seconds=round(time.perf_counter() - started, 3),
        models=json.dumps({**models, **meter.models}, sort_keys=True),
    )
    return record


# -- the run ---------------------------------------------------------------------------------------


class Progress:
    """Callbacks of a synth run; the CLI draws a progress bar from them."""

    def start(self, summary: SynthSummary) -> None: ...

    def finished(self, record: dict[str, Any], summary: SynthSummary) -> None: ...


def run_synth(
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
    the run is marked interrupted or failed."""
    options.research.check()
    for role in ROLES:
        llm_config.role(role)
    seeds, input_name = load_seeds(ws, source, options)
    n_input = len(seeds)
    if options.shard is not None:
        i, n = options.shard
        seeds = [s for s in seeds if shard_of(s.id, n) == i]
    toolbox = open_toolbox(ws, search=options.search, crawl=options.crawl, cache=options.cache)
    closed = False
    try:
        if options.check_endpoints:
            check_endpoints(llm_config)
        config = synth_config(llm_config, options)
        models = models_of(llm_config)
        progress = progress or Progress()
        register_unlogged_calls(ws, STAGE)
        with ws.start_run(STAGE, KIND, config, inputs=[input_name], resume=True) as run:
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
                    1 for s in seeds if run.is_done(s.id, options.retry_failed) and run.prior[s.id] != "done"
                ),
                n_todo=len(todo),
            )
            progress.start(summary)
            calls_path = run.dir / CALL_LOG_FILE
            started = time.perf_counter()

            def finished(record: dict[str, Any]) -> None:
                run.append(record)
                summary.add(record)
                if on_record is not None:
                    on_record(record)
                progress.finished(record, summary)

            try:
                with CallLog(calls_path, run.run_id) as calls:
                    closed = True  # _synth_all closes it on its own event loop
                    asyncio.run(
                        _synth_all(
                            todo, llm_config, calls, toolbox, options, run.config_hash, models, finished
                        )
                    )
            except _Fatal as fatal:
                # One line for the CLI; `start_run` marks the run failed, the JSONL stays for the rerun.
                raise OresError(
                    f"{fatal.error} (synth stopped: {summary.n_done + summary.n_failed} traces of this "
                    "run are kept; fix it and rerun the same command to do the rest)"
                ) from None
            finally:
                summary.seconds = time.perf_counter() - started
                _register_calls(ws, run.run_id, calls_path)
            summary.artifact = run.finish(SCHEMA)
        return summary
    finally:
        if not closed:
            _close(toolbox)


def _register_calls(ws: Workspace, run_id: str, path: Path) -> None:
    try:
        register_call_log(ws, run_id, path)
    except Exception:  # noqa: BLE001 - the call log is bookkeeping; the traces matter more
        log.exception("could not register the llm call log %s", path)


def _close(toolbox: Toolbox) -> None:
    try:
        asyncio.run(toolbox.aclose())
    except Exception:  # noqa: BLE001
        log.debug("closing the toolbox failed", exc_info=True)


async def _synth_all(
    todo: list[SeedItem],
    llm_config: LLMConfig,
    calls: CallLog,
    toolbox: Toolbox,
    options: SynthOptions,
    config_hash: str,
    models: dict[str, str],
    finished: Callable[[dict[str, Any]], None],
) -> None:
    slots = asyncio.Semaphore(max(1, options.concurrency))
    async with toolbox, LLMClient(llm_config, calls) as llm:

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
