"""Continuous batching over a transformers causal LM, with a grammar per request.

One thread owns the model. Requests join the running batch between decoding steps and leave it
the step they finish, so a short call never waits for a long one to end and parallel subtasks
share each forward pass. Every row of the batch carries its own sampling settings, stop strings
and (optionally) a grammar matcher that masks its logits (server/grammar.py): what
`transformers serve` cannot do, since its batching takes one generation config for all requests
and no logits processor per request.

The batch's KV cache is one `DynamicCache` whose rows are left-padded to a common length: a new
row is prefilled alone, then padded and concatenated to the batch; a finished row is dropped
with `batch_select_indices`, and columns that became padding in every row are cut. The attention
mask hides the padding and each row gets its own position ids. Models whose cache is not made of
plain full-attention layers (sliding windows, state-space layers) run one request at a time.

Results go back to the asyncio side as events on the request's queue (`Delta`, then one `Done`),
delivered with `loop.call_soon_threadsafe`. `Done` also carries the generated token ids, each
one's log probability and the stop string that ended the request, so an in-process caller (the
single-model research loop, RL rollouts) gets ids and log probs without re-tokenizing the text;
a request that asks for `top_logprobs` gets each position's likeliest tokens too (a top-k over
the rows that ask, nothing for the others).
A request whose client went away is `cancel()`ed and leaves the batch at the next step: no
generation keeps running for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("oresearch_cli.server.engine")

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    """One request's decoding settings. temperature 0 is greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # alternatives to report per generated token (0: none)


@dataclass(frozen=True)
class Delta:
    """New text of a request (already safe to show: no half character, no part of a stop string)."""

    text: str


@dataclass(frozen=True)
class Done:
    """The end of a request: why it finished, the token counts, and an error message if it failed.

    `token_ids` are the generated tokens (the end-of-sequence token that finished a request is not
    among them); a token that completed a stop string is, even when its text runs past the stop
    string, which the `Delta`s never show. `logprobs[i]` is the log probability of `token_ids[i]`
    under the model's raw distribution (log-softmax of the logits at temperature 1, before top-p
    and any grammar mask), as vLLM reports by default: the policy's own probability, whatever the
    sampling settings. `stop` is the stop string that ended the request, if one did.
    `top_logprobs[i]` are the `params.top_logprobs` likeliest tokens at position i as (id, log
    prob), best first, under the same raw distribution; empty when the request asked for none.
    """

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    stop: str | None = None
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()


class GenerationRequest:
    """A request handed to the engine; the asyncio side reads `events` until a `Done`."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        grammar: Any | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.grammar = grammar
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue[Delta | Done] = asyncio.Queue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _emit(self, event: Delta | Done) -> None:
        # a closed event loop raises RuntimeError: nobody is listening any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass
class _Row:
    request: GenerationRequest
    last_token: int = -1
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already emitted
    matcher: Any | None = None
    generator: Any | None = None
    finished: Done | None = None


@dataclass
class EngineStats:
    """Counters for /metrics-style logging and the benchmarks."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    steps: int = 0
    max_batch_seen: int = 0


class Engine:
    """Generates for many requests at once on one model. `start()` runs the loop thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        grammars: Any | None = None,
        max_batch: int = 8,
        cache_tokens: int = 32768,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.grammars = grammars
        self.cache_tokens = cache_tokens
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        # inputs go where the weights are (a GPU for an in-process policy); sampling stays on the CPU
        self.device = next(iter(model.parameters())).device
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if tokenizer.eos_token_id is not None:
            eos_ids.append(tokenizer.eos_token_id)
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.max_batch = max(1, max_batch) if self._cache_is_mergeable() else 1
        self.default_sampling = _default_sampling(model.generation_config)
        self.stats = EngineStats()
        self._pending: deque[GenerationRequest] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None

    # -- public --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ores-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> None:
        with self._wake:
            self._pending.append(request)
            self._wake.notify_all()

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def encode_text(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def token_texts(self, ids: list[int]) -> list[str]:
        """Each token's text on its own (special tokens written out; a token holding part of a
        multi-byte character decodes to U+FFFD)."""
        return [str(t) for t in self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)]

    @property
    def in_flight(self) -> int:
        return len(self._rows) + len(self._pending)

    # -- the loop ------------------------------------------------------------------------------

    def _cache_is_mergeable(self) -> bool:
        try:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            layers = DynamicCache(config=self.model.config).layers
        except Exception:
            return False
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def _run(self) -> None:
        with self.torch.inference_mode():
            while True:
                with self._wake:
                    while not self._stopping and not self._pending and not self._rows:
                        self._wake.wait()
                    if self._stopping:
                        break
                self._guarded(self._cycle)
        self._shut_down()

    def _cycle(self) -> None:
        self._admit()
        if self._rows:
            self._step()

    def _guarded(self, work: Any) -> None:
        """Run `work`; a broken forward pass fails the batch, not the server."""
        try:
            work()
        except Exception as exc:
            log.exception("generation failed")
            for row in self._rows:
                self._finish(row, FINISH_ERROR, error=f"generation failed: {exc}")
            self._rows, self._cache, self._mask = [], None, None

    def _shut_down(self) -> None:
        """Cancel what is still in the batch or waiting: the engine is stopping."""
        for row in self._rows:
            self._finish(row, FINISH_CANCELLED, error="the server is shutting down")
        with self._wake:
            while self._pending:
                request = self._pending.popleft()
                request._emit(
                    Done(FINISH_CANCELLED, len(request.prompt_ids), 0, "the server is shutting down")
                )

    def _fits(self, prompt_len: int) -> bool:
        if not self._rows:
            return True
        if len(self._rows) >= self.max_batch:
            return False
        width = max(int(self._mask.shape[1]), prompt_len)
        return (len(self._rows) + 1) * width <= self.cache_tokens

    def _admit(self) -> None:
        """Prefill waiting requests into the batch while it has room (at least one per step)."""
        while True:
            with self._wake:
                if not self._pending or not self._fits(len(self._pending[0].prompt_ids)):
                    return
                request = self._pending.popleft()
            if request.cancelled:
                request._emit(Done(FINISH_CANCELLED, len(request.prompt_ids), 0))
                continue
            self._prefill(request)

    def _prefill(self, request: GenerationRequest) -> None:
        torch = self.torch
        self.stats.requests += 1
        self.stats.prompt_tokens += len(request.prompt_ids)
        row = _Row(request=request)
        if request.grammar is not None and self.grammars is not None:
            row.matcher = self.grammars.matcher(request.grammar)
        if request.params.seed is not None:
            row.generator = torch.Generator().manual_seed(request.params.seed)
        ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float().cpu()
        self._choose([row], logits)
        if row.finished is not None:
            return
        mask = torch.ones((1, len(request.prompt_ids)), dtype=torch.long, device=self.device)
        self._merge(row, out["cache"], mask)

    def _merge(self, row: _Row, cache: Any, mask: Any) -> None:
        torch = self.torch
        if not self._rows:
            self._rows, self._cache, self._mask = [row], cache, mask
            return
        width = max(int(self._mask.shape[1]), int(mask.shape[1]))

        def pad_left(tensor: Any, to: int, dim: int) -> Any:
            missing = to - int(tensor.shape[dim])
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        for ours, theirs in zip(self._cache.layers, cache.layers, strict=True):
            ours.keys = torch.cat([pad_left(ours.keys, width, 2), pad_left(theirs.keys, width, 2)], dim=0)
            ours.values = torch.cat(
                [pad_left(ours.values, width, 2), pad_left(theirs.values, width, 2)], dim=0
            )
        self._mask = torch.cat([pad_left(self._mask, width, 1), pad_left(mask, width, 1)], dim=0)
        self._rows.append(row)

    def _step(self) -> None:
        torch = self.torch
        rows = self._rows
        self.stats.steps += 1
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(rows))
        ids = torch.tensor([[row.last_token] for row in rows], dtype=torch.long, device=self.device)
        # the token fed now is the last one chosen: its position follows the prompt and the rest
        positions = torch.tensor(
            [[len(row.request.prompt_ids) + len(row.tokens) - 1] for row in rows],
            dtype=torch.long,
            device=self.device,
        )
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        self._cache = out["cache"]
        self._choose(rows, out.logits[:, -1, :].float().cpu())
        keep = [i for i, row in enumerate(rows) if row.finished is None]
        if len(keep) == len(rows):
            return
        self._rows = [rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        # columns that are padding in every remaining row cost attention for nothing
        used = self._mask.sum(dim=0) > 0
        first = int(used.to(torch.int8).argmax())
        if first > 0:
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
            self._mask = self._mask[:, first:]

    # -- choosing tokens -----------------------------------------------------------------------

    def _choose(self, rows: list[_Row], logits: Any) -> None:
        """Pick each row's next token (grammar-masked, sampled) and emit what it adds."""
        # the normalizer of the raw distribution, before a grammar mask changes the logits: one
        # reduction over the batch, then one subtraction per row for the chosen token's log prob
        log_norm = self.torch.logsumexp(logits, dim=-1)
        # the alternatives a row asked for, from the raw distribution too: before the mask
        tops = {
            i: self._top(logits[i], log_norm[i], row.request.params.top_logprobs)
            for i, row in enumerate(rows)
            if row.request.params.top_logprobs > 0
        }
        matchers = {i: row.matcher for i, row in enumerate(rows) if row.matcher is not None}
        constrained = list(matchers)
        if constrained and self.grammars is not None:
            bitmask = self.grammars.allocate_bitmask(len(rows))
            for i, matcher in matchers.items():
                matcher.fill_next_token_bitmask(bitmask, i)
            self.grammars.apply_bitmask(logits, bitmask, constrained)
        for i, row in enumerate(rows):
            if row.request.cancelled:
                self._finish(row, FINISH_CANCELLED)
                continue
            token = self._sample(logits[i], row)
            # a mask only sets other tokens to -inf: the chosen token's logit is still the raw one
            self._advance(row, token, float(logits[i, token] - log_norm[i]), tops.get(i, ()))

    def _top(self, logits: Any, log_norm: Any, k: int) -> tuple[tuple[int, float], ...]:
        values, ids = self.torch.topk(logits, min(k, int(logits.shape[-1])))
        return tuple(zip(ids.tolist(), (values - log_norm).tolist(), strict=True))

    def _sample(self, logits: Any, row: _Row) -> int:
        torch = self.torch
        params = row.request.params
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            beyond = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > params.top_p
            sorted_probs[beyond] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _advance(
        self, row: _Row, token: int, logprob: float, top: tuple[tuple[int, float], ...] = ()
    ) -> None:
        params = row.request.params
        if row.matcher is not None:
            if not row.matcher.accept_token(token):
                self._finish(row, FINISH_ERROR, error="the grammar rejected a token it had allowed")
                return
            if row.matcher.is_terminated():  # the JSON is complete and this is the stop token
                self._end(row)
                return
        elif token in self.eos_ids:
            self._end(row)
            return
        row.tokens.append(token)
        row.logprobs.append(logprob)
        if row.request.params.top_logprobs > 0:
            row.top.append(top)
        row.last_token = token
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if params.stop:
            hit = _first_stop(text, params.stop, max(0, row.sent - max(map(len, params.stop))))
            if hit is not None:
                self._send(row, text[: hit[0]], final=True)
                self._finish(row, FINISH_STOP, stop=hit[1])
                return
        if len(row.tokens) >= params.max_tokens:
            self._send(row, text, final=True)
            self._finish(row, FINISH_LENGTH)
            return
        self._send(row, text, final=False)

    def _end(self, row: _Row) -> None:
        """Finish a row at its stop token, sending the text held back for stop strings."""
        if row.tokens:
            self._send(row, self.tokenizer.decode(row.tokens, skip_special_tokens=True), final=True)
        self._finish(row, FINISH_STOP)

    def _send(self, row: _Row, text: str, *, final: bool) -> None:
        end = len(text)
        if not final:
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return
            if row.request.params.stop:  # hold back what could be the start of a stop string
                end -= max(map(len, row.request.params.stop)) - 1
        if end > row.sent:
            row.request._emit(Delta(text[row.sent : end]))
            row.sent = end

    def _finish(self, row: _Row, reason: str, *, error: str | None = None, stop: str | None = None) -> None:
        if row.finished is not None:
            return
        self.stats.completion_tokens += len(row.tokens)
        row.finished = Done(
            reason,
            len(row.request.prompt_ids),
            len(row.tokens),
            error,
            token_ids=tuple(row.tokens),
            logprobs=tuple(row.logprobs),
            stop=stop,
            top_logprobs=tuple(row.top),
        )
        row.request._emit(row.finished)


def _first_stop(text: str, stops: tuple[str, ...], start: int) -> tuple[int, str] | None:
    """(where, which) of the earliest stop string in `text` from `start`; the longer one at a tie."""
    found = [(i, -len(stop), stop) for stop in stops if stop and (i := text.find(stop, start)) >= 0]
    if not found:
        return None
    at, _, stop = min(found)
    return at, stop


def _default_sampling(config: Any) -> tuple[float, float]:
    """(temperature, top_p) a request gets when it names none: the checkpoint's generation_config,
    as vLLM applies it; greedy when that config does not sample."""
    if config is None:
        return 1.0, 1.0
    if not getattr(config, "do_sample", False):
        return 0.0, 1.0
    temperature = getattr(config, "temperature", None)
    top_p = getattr(config, "top_p", None)
    return (1.0 if temperature is None else float(temperature)), (1.0 if top_p is None else float(top_p))
