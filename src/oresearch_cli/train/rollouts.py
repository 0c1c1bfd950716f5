"""GRPO rollouts: the policy researches each prompt with real tool calls (`agent.single.research`).

TRL's `GRPOTrainer` calls `PolicyRollouts(prompts, trainer)` once per generation batch with its
prompts (each question already repeated `num_generations` times, a group). Every prompt becomes
one research episode on the policy itself: an in-process batching `Engine` over the trainer's
current weights decodes all episodes' turns in the same forward passes, while their tool calls
run concurrently on asyncio (a group never waits on one slow page in turn).

It returns what TRL needs: prompt and completion ids, the sampled log probs (None, which TRL
reads as NaN, where a turn was re-encoded) and `env_mask` (0 on every observation token, so
observations carry no loss), plus per-rollout extras the reward functions read: `trace_text`,
`n_tool_calls`, `rollout_id`.

Every episode goes to the `RolloutBook`, which writes it as a trace row (`rollouts` log) once its
rewards are known, so `ores trace show`, `ores filter` and `ores ws sql` work on rollouts. Only
rank 0 writes the workspace: the other ranks' scored rollouts reach it at the start of the next
generation batch (a point every rank passes in step) and at the end of training.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oresearch_cli.agent.generators import ChatTokenizer, EngineGenerator
from oresearch_cli.agent.single import Episode, LoopBudget, research
from oresearch_cli.train.rl_settings import RolloutBudget

ROLLOUTS_KIND = "rollouts"


@dataclass(frozen=True)
class PromptInfo:
    """What a prompt of the dataset stands for: its question, id and protocol language."""

    id: str
    question: str
    language: str | None


class RolloutBook:
    """Rollouts waiting for their rewards; each is written (one JSONL line, flushed) as soon as
    every reward component has scored it, so a killed run keeps the rollouts it scored.

    Reward functions run on TRL's threads (async ones on its event loop thread): a lock keeps the
    book consistent. A rank other than 0 (`path` None) keeps its scored rows in an outbox that
    `share` hands to rank 0."""

    def __init__(self, path: Path | None, reward_names: Sequence[str]) -> None:
        self.path = path
        self.reward_names = tuple(reward_names)
        self._pending: dict[str, dict[str, Any]] = {}
        self._outbox: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.written = 0
        self._tool_calls = 0

    @property
    def mean_tool_calls(self) -> float | None:
        """Tool calls run per written rollout."""
        return self._tool_calls / self.written if self.written else None

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._pending[row["id"]] = {**row, "rewards": {}}

    def score(self, name: str, rollout_ids: Sequence[str], values: Sequence[float | None]) -> None:
        with self._lock:
            for rollout_id, value in zip(rollout_ids, values, strict=True):
                row = self._pending.get(rollout_id)
                if row is None:
                    continue
                row["rewards"][name] = value
                if all(n in row["rewards"] for n in self.reward_names):
                    self._write(self._pending.pop(rollout_id))

    def share(self, accelerator: Any) -> None:
        """Hand every rank's scored rows to rank 0, which writes them. A collective: every rank
        must call it at the same point (see the module docstring)."""
        if accelerator.num_processes == 1:
            return
        from accelerate.utils import gather_object

        with self._lock:
            outbox, self._outbox = self._outbox, []
        gathered = gather_object([outbox])  # one list per rank, in rank order
        if self.path is None:
            return
        with self._lock:
            for rows in gathered:
                for row in rows:
                    self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        if self.path is None:
            self._outbox.append(row)
            return
        self.written += 1
        self._tool_calls += int(row.get("n_tool_calls", 0))
        flat = {**row, **{f"reward_{k}": v for k, v in row.pop("rewards").items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(flat, ensure_ascii=False) + "\n")


def recorded(name: str, reward: Callable[..., Any], book: RolloutBook) -> Callable[..., Any]:
    """`reward` that also books its values per rollout; TRL logs it under `name`."""
    if inspect.iscoroutinefunction(reward) or inspect.iscoroutinefunction(type(reward).__call__):

        async def booked_async(*args: Any, **kwargs: Any) -> list[float | None]:
            values = await reward(*args, **kwargs)
            book.score(name, kwargs["rollout_id"], values)
            return list(values)

        booked_async.__name__ = name
        return booked_async

    def booked(*args: Any, **kwargs: Any) -> list[float | None]:
        values = reward(*args, **kwargs)
        book.score(name, kwargs["rollout_id"], values)
        return list(values)

    booked.__name__ = name
    return booked


@dataclass
class PolicyRollouts:
    """The `rollout_func` of `GRPOTrainer` (see the module docstring).

    `open_tools` opens the toolbox inside each batch's event loop (its HTTP clients and caches
    belong to one loop); `prompts` maps a prompt's user text to its question's id and language.
    """

    open_tools: Callable[[], Any]
    prompts: dict[str, PromptInfo]
    budget: RolloutBudget
    book: RolloutBook
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    # (trainer, tokenizer, batch size) -> an open Generator; None: an Engine over the policy's weights
    make_generator: Callable[[Any, Any, int], Any] | None = None
    batches: int = field(default=0, init=False)
    lockstep_batches: int = field(default=0, init=False)  # decoded by `LockstepEngine` (ZeRO-3)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        self.book.share(trainer.accelerator)  # the last batch's rollouts of the other ranks
        infos = [self._info(p) for p in prompts]
        step = int(trainer.state.global_step)
        with generation_policy(trainer, local=self.make_generator is None) as (model, lockstep):
            self.lockstep_batches += int(lockstep)
            was_training = model.training
            model.eval()  # no dropout while sampling, and the KV cache on (checkpointing turns it off)
            try:
                episodes = asyncio.run(
                    self._research_all(trainer, model, trainer.processing_class, infos, step, lockstep)
                )
            finally:
                model.train(was_training)
        self.batches += 1
        rank = f"r{trainer.accelerator.process_index}-" if trainer.accelerator.num_processes > 1 else ""
        ids = [f"s{step}-b{self.batches}-{rank}{i}" for i in range(len(episodes))]
        for index, (rollout_id, info, episode) in enumerate(zip(ids, infos, episodes, strict=True)):
            self.book.add(rollout_row(rollout_id, step, index, info, episode))
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids for e in episodes],
            "logprobs": [e.logprobs for e in episodes],
            "env_mask": [e.env_mask for e in episodes],
            "trace_text": [e.text for e in episodes],
            "n_tool_calls": [e.n_tool_calls for e in episodes],
            "rollout_id": ids,
        }

    def _info(self, prompt: Any) -> PromptInfo:
        text = user_text(prompt)
        found = self.prompts.get(text)
        return found if found is not None else PromptInfo("", text, None)

    async def _research_all(
        self, trainer: Any, model: Any, tokenizer: Any, infos: list[PromptInfo], step: int, lockstep: bool
    ) -> list[Episode]:
        async with contextlib.AsyncExitStack() as stack:
            if self.make_generator is not None:
                generator = self.make_generator(trainer, tokenizer, len(infos))
            else:
                generator = _engine_generator(model, tokenizer, len(infos), lockstep=lockstep)
            stack.push_async_callback(generator.aclose)
            tools = await stack.enter_async_context(self.open_tools())
            episodes = await asyncio.gather(
                *(
                    research(
                        info.question,
                        generator,
                        tools,
                        language=info.language,
                        budget=self._loop_budget(step, index),
                    )
                    for index, info in enumerate(infos)
                )
            )
            return list(episodes)

    def _loop_budget(self, step: int, index: int) -> LoopBudget:
        b = self.budget
        return LoopBudget(
            max_tool_calls=b.max_tool_calls,
            max_turns=b.max_turns,
            max_new_tokens=b.max_new_tokens,
            max_turn_tokens=b.max_turn_tokens,
            max_seconds=b.max_seconds,
            max_context_tokens=b.max_context_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            # distinct per rollout (a group's members must differ), repeatable per run
            seed=(self.seed * 1_000_003 + step * 10_007 + index * 101) % (2**31),
        )


@contextlib.contextmanager
def generation_policy(trainer: Any, *, local: bool) -> Iterator[tuple[Any, bool]]:
    """The policy to decode rollouts with, and whether its forward passes are collective.

    Under DeepSpeed ZeRO-3 with local generation, TRL's `unwrap_model_for_generation` either
    gathers the full weights on every rank for the whole batch (`ds3_gather_for_generation`, the
    default: forward passes are then local) or leaves them sharded, and then every forward pass
    is a collective the ranks must run in step (`lockstep.LockstepEngine`). Generation on a vLLM
    server (`local` false) needs neither: the weights are never gathered here."""
    if not (local and _zero_stage(trainer) == 3):
        yield trainer.accelerator.unwrap_model(trainer.model), False
        return
    from trl.models import unwrap_model_for_generation

    gather = bool(trainer.args.ds3_gather_for_generation)
    with unwrap_model_for_generation(
        trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=gather
    ) as model:
        yield model, not gather


def _zero_stage(trainer: Any) -> int | None:
    plugin = getattr(getattr(trainer.accelerator, "state", None), "deepspeed_plugin", None)
    return getattr(plugin, "zero_stage", None)


def _engine_generator(model: Any, tokenizer: Any, batch: int, *, lockstep: bool) -> EngineGenerator:
    """A started `Engine` over the policy's own weights (stopped by the generator's `aclose`); a
    `LockstepEngine` when every forward pass is a collective of all ranks."""
    from oresearch_cli.server.engine import Engine
    from oresearch_cli.train.lockstep import LockstepEngine

    engine = (LockstepEngine if lockstep else Engine)(model, tokenizer, max_batch=max(1, batch))
    generator = EngineGenerator(
        engine, name="policy", tokenizer=ChatTokenizer(tokenizer, name="policy"), owns=True
    )
    engine.start()
    return generator


def user_text(prompt: Any) -> str:
    """The question of a dataset prompt: the last user message of a conversation, or the text."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(list(prompt)):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else str(content)
    return ""


def rollout_row(rollout_id: str, step: int, index: int, info: PromptInfo, episode: Episode) -> dict[str, Any]:
    """A rollout as a trace row: the trace fields `ores filter` and `ores trace show` read, plus
    where it came from in training."""
    return {
        "id": rollout_id,
        "seed_id": info.id,
        "question": episode.question,
        "language": episode.language,
        "trace": episode.text,
        "step": step,
        "group": info.id,
        "index": index,
        "valid": episode.valid,
        "stop_reason": episode.stop_reason,
        "n_tool_calls": episode.n_tool_calls,
        "n_turns": episode.n_turns,
        "model_tokens": episode.n_model_tokens,
        "completion_tokens": len(episode.completion_ids),
        "seconds": round(episode.seconds, 3),
        "tool_errors": len(episode.tool_errors),
    }
