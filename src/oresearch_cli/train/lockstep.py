"""Multi-turn generation that keeps distributed ranks in step (DeepSpeed ZeRO-3 without gathering).

Under ZeRO-3 every rank holds a shard of each weight, and a forward pass all-gathers the shards
layer by layer: a collective, so every rank must run the same number of forward passes. One
`generate()` call can keep that promise (transformers' `synced_gpus` pads the ranks that finish
early with dummy steps), but a research rollout is many calls separated by tool calls, and the
ranks' rollouts differ in turns, lengths and tool latency.

`LockstepEngine` is the batching `Engine` run in cycles that every rank takes together. Each
cycle starts with one small all-reduce of (busy, running) over the ranks:
  - no rank running: every rank's rollouts are done, and the loop ends on all ranks at once;
  - no rank busy (all wait on tools): nothing is run, the cycle repeats shortly;
  - some rank busy: every rank runs exactly one forward pass, its own next prefill or decoding
    step, or a one-token dummy pass when it has nothing to decode.
So the k-th forward pass of one rank always meets the k-th of every other. A rank whose rollouts
are done keeps running cycles (`stop()` marks it done and waits) until all ranks are done.

When the policy fits on one device, TRL's `ds3_gather_for_generation` (the default) gathers the
weights once per generation batch instead; forward passes are then local and the plain `Engine`
runs (see `rollouts.generation_policy`). This engine is the other case: a policy too big to gather.
"""

from __future__ import annotations

from typing import Any

from oresearch_cli.server.engine import FINISH_CANCELLED, Done, Engine

# How long a cycle waits when no rank has anything to decode (all are running tools).
IDLE_WAIT_S = 0.005


class LockstepEngine(Engine):
    """An `Engine` whose forward passes happen in step on every rank of the default process group
    (`torch.distributed`, already initialized by accelerate)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 8) -> None:
        super().__init__(model, tokenizer, max_batch=max_batch)
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("LockstepEngine needs an initialized torch.distributed process group")
        self._dist = dist
        self._done_here = False
        self.forward_passes = 0
        self.idle_passes = 0  # the dummy ones, run for the other ranks' sake

    def stop(self, timeout: float | None = None) -> None:
        """Mark this rank's rollouts done and keep stepping until every rank's are; then return."""
        with self._wake:
            self._done_here = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # no_grad, not inference_mode: ZeRO-3 writes the gathered weights into its parameters
        with self.torch.no_grad():
            while True:
                with self._wake:
                    busy = bool(self._pending or self._rows)
                    running = busy or not self._done_here
                try:
                    any_busy, any_running = self._sum_over_ranks(busy, running)
                except Exception:  # a rank died or timed out: nothing can run in step any more
                    self._guarded(_raise_out_of_step)
                    break
                if not any_running:
                    break
                if not any_busy:
                    with self._wake:
                        self._wake.wait(IDLE_WAIT_S)
                    continue
                self._guarded(self._one_forward_pass)
        self._shut_down()

    def _sum_over_ranks(self, busy: bool, running: bool) -> tuple[bool, bool]:
        flags = self.torch.tensor([int(busy), int(running)], dtype=self.torch.long, device=self.device)
        self._dist.all_reduce(flags)
        return bool(flags[0]), bool(flags[1])

    def _one_forward_pass(self) -> None:
        """Exactly one forward pass: prefill the next waiting request if it fits, else a decoding
        step of the batch, else a dummy pass."""
        with self._wake:
            request = None
            if self._pending and self._fits(len(self._pending[0].prompt_ids)):
                request = self._pending.popleft()
        self.forward_passes += 1
        if request is not None and not request.cancelled:
            self._prefill(request)
            return
        if request is not None:
            request._emit(Done(FINISH_CANCELLED, len(request.prompt_ids), 0))
        if self._rows:
            self._step()
            return
        self.idle_passes += 1
        token = next(iter(self.eos_ids), 0)
        ids = self.torch.tensor([[token]], dtype=self.torch.long, device=self.device)
        self.model(input_ids=ids, use_cache=False, logits_to_keep=1)


def _raise_out_of_step() -> None:
    raise RuntimeError("the ranks fell out of step (another rank failed or timed out)")
