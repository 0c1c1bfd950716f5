"""Rollouts on TRL's colocated vLLM engine (`use_vllm: true, vllm_mode: colocate`).

In colocate mode each training rank holds a `vllm.LLM` on its own GPU, sharing it with training;
TRL pushes the policy's weights into it before every generation batch. That engine has no
server: it takes `llm.generate(prompts, sampling_params)` calls, synchronous and batched. A
research rollout is many turns, each waiting on the previous one's tool calls, so the turns of
all rollouts of a batch are gathered here: each `generate()` queues its turn, and one drain task
hands everything queued to a single `llm.generate` (in a worker thread, so tools keep running on
the event loop), then the next lot. Turns that become ready together decode together, as on the
in-process engine.

Prompts go as token ids and come back as the sampled ids and their log probs (`logprobs=0`: the
sampled token's own), with stop strings cut from the text but the token that completed one kept
in the ids, as the loop expects of every generator. vLLM's own objects are read by attribute, and
`vllm` is imported only to build its `SamplingParams`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from oresearch_cli.agent.generators import (
    FINISH_LENGTH,
    FINISH_STOP,
    ChatTokenizer,
    Generation,
    _TokenizesLocally,
)
from oresearch_cli.server.engine import SamplingParams

# How long the drain task waits for the other rollouts' turns to join the batch.
GATHER_S = 0.005


def vllm_sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """The `vllm.SamplingParams` of one turn: the loop's limits and stop strings, the sampled
    token's log prob, the stop string left out of the text (vLLM's default)."""
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "logprobs": 0,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    return kwargs


def _vllm_sampling_params(params: SamplingParams) -> Any:
    from vllm import SamplingParams as VllmSamplingParams

    return VllmSamplingParams(**vllm_sampling_kwargs(params))


def generation_of(output: Any, stops: Sequence[str]) -> Generation:
    """A vLLM `RequestOutput` (one completion) as the loop's `Generation`."""
    completion = output.outputs[0]
    finish = FINISH_LENGTH if completion.finish_reason == FINISH_LENGTH else FINISH_STOP
    said = completion.stop_reason  # the stop string, a stop token id, or None (end of sequence)
    stop = said if isinstance(said, str) and said in stops else None
    ids = tuple(int(t) for t in completion.token_ids)
    logprobs: tuple[float, ...] | None = None
    steps = completion.logprobs
    if (
        steps is not None
        and len(steps) == len(ids)
        and all(t in step for step, t in zip(steps, ids, strict=True))
    ):
        logprobs = tuple(float(step[t].logprob) for step, t in zip(steps, ids, strict=True))
    return Generation(str(completion.text or ""), finish, stop, ids, logprobs)


class ColocatedVllmGenerator(_TokenizesLocally):
    """A `Generator` over an in-process `vllm.LLM` (see the module docstring). It does not own
    the engine: TRL created it and keeps it; `aclose()` only stops taking turns."""

    def __init__(
        self,
        llm: Any,
        tokenizer: ChatTokenizer,
        *,
        name: str = "policy",
        context_length: int | None = None,
        sampling: Callable[[SamplingParams], Any] = _vllm_sampling_params,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = context_length
        self.sampling = sampling
        self.calls = 0  # llm.generate calls: fewer than turns when turns were batched
        self._queue: list[tuple[list[int], SamplingParams, asyncio.Future[Generation]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
            self._drain = None

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        turn: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        self._queue.append(([int(i) for i in prompt_ids], params, turn))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_queue())
        return await turn

    async def _drain_queue(self) -> None:
        while self._queue:
            await asyncio.sleep(GATHER_S)  # let the turns that are ready together go together
            batch = [entry for entry in self._queue if not entry[2].done()]  # a cancelled turn is dropped
            self._queue = []
            if not batch:
                continue
            self.calls += 1
            try:
                outputs = await asyncio.to_thread(
                    self.llm.generate,
                    [{"prompt_token_ids": ids} for ids, _, _ in batch],
                    sampling_params=[self.sampling(params) for _, params, _ in batch],
                    use_tqdm=False,
                )
            except Exception as exc:  # the engine failed: every turn of the batch fails with it
                for _, _, turn in batch:
                    if not turn.done():
                        turn.set_exception(exc)
                continue
            for (_, params, turn), output in zip(batch, outputs, strict=True):
                if not turn.done():
                    turn.set_result(generation_of(output, params.stop))
