"""The single-model research system, shared by `ores eval run --model` and `ores serve --agent`:
which model (`ModelSystem`), opening its generator (in process on the batching engine, or through an
OpenAI-compatible `/v1/completions` URL with the model's tokenizer), and an episode as a trace row.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from oresearch_cli.agent.generators import EndpointGenerator, Generator
from oresearch_cli.agent.single import Episode
from oresearch_cli.errors import InputError, OresError
from oresearch_cli.stages.research_run import SeedItem, check_reachable
from oresearch_cli.stages.synth import TraceRecord
from oresearch_cli.trace import trace_stats
from oresearch_cli.workspace import Status, Workspace

R = TypeVar("R", bound=TraceRecord)


@dataclass
class ModelSystem:
    """The single model that researches: `model` a checkpoint folder, run id, models/ name or
    `embedded` (decoded in process), or an http(s) base URL served with `tokenizer`'s ids."""

    model: str
    tokenizer: str | None = None  # a URL model's tokenizer: a folder, run id or `embedded`
    served_name: str | None = None  # a URL model's name on its server (default: the first it lists)
    threads: int | None = None

    @property
    def is_url(self) -> bool:
        return self.model.startswith(("http://", "https://"))


def episode_record(
    seed: SeedItem,
    episode: Episode,
    config_hash: str,
    model: str,
    record_type: type[R],
) -> R:
    """A finished episode as a trace row (of `record_type`: eval's `reports`, the server's `traces`):
    the trace, its report and problems, and its counts."""
    stats = trace_stats(episode.trace)
    environment_tokens = len(episode.completion_ids) - episode.n_model_tokens
    return record_type(
        seed.id,
        seed.question,
        seed.language,
        status=Status.DONE,
        trace=episode.text,
        report=episode.report,
        valid=episode.valid,
        problems=json.dumps([p.to_dict() for p in episode.problems], ensure_ascii=False),
        n_subtasks=stats.subtasks,
        n_tool_calls=episode.n_tool_calls,
        n_steps=stats.steps,
        n_failures=len(episode.tool_errors),
        # what the model read (its prompt and the observations) and what it wrote
        prompt_tokens=len(episode.prompt_ids) + environment_tokens,
        completion_tokens=episode.n_model_tokens,
        seconds=round(episode.seconds, 3),
        models=json.dumps({"model": model}),
        config_hash=config_hash,
        steps=json.dumps(
            {
                "stop_reason": episode.stop_reason,
                "n_turns": episode.n_turns,
                "tool_errors": episode.tool_errors,
                "generator": episode.generator,
            },
            ensure_ascii=False,
        ),
    )


async def served_model_name(base_url: str) -> str:
    """The first model a server lists on /v1/models."""
    from oresearch_cli.llm.discover import served_models
    from oresearch_cli.llm.redact import safe_url

    models = await served_models(base_url, timeout=10.0)
    if not models:
        raise OresError(f"--model {safe_url(base_url)}: /models lists no model; pass --served-model NAME")
    return models[0]


def local_model(ws: Workspace, name: str, what: str) -> str:
    from oresearch_cli.train.runs import resolve_base_model

    path = resolve_base_model(ws, name)
    if not Path(path).is_dir():
        raise InputError(
            f"{what} {name}: not a local checkpoint (hub ids cannot be downloaded here); pass a folder "
            "with config.json, a run id of `ores sft`/`ores rl`, or `embedded`"
        )
    return path


async def open_generator(
    ws: Workspace, system: ModelSystem, stack: contextlib.AsyncExitStack, max_batch: int
) -> tuple[Generator, str]:
    """(the generator, the model's name for the config): in process, or through a URL."""
    if system.is_url:
        if not system.tokenizer:
            raise InputError(
                f"--model {system.model}: a served model needs its tokenizer here (the loop sends token "
                "ids); pass --tokenizer with the checkpoint folder, run id or `embedded`"
            )
        base = system.model.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        await check_reachable([base], "--model", "--model")
        name = system.served_name or await served_model_name(base)
        tokenizer = local_model(ws, system.tokenizer, "--tokenizer")
        endpoint = EndpointGenerator(base, name, tokenizer)
        stack.push_async_callback(endpoint.aclose)
        return endpoint, name
    from oresearch_cli.agent.generators import load_engine_generator

    path = local_model(ws, system.model, "--model")
    engine = load_engine_generator(path, max_batch=max_batch, threads=system.threads)
    stack.push_async_callback(engine.aclose)
    return engine, Path(path).name
