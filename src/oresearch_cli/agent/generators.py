"""Generators: what writes the model's turns in the single-model research loop (`agent/single.py`).

The loop owns the token layout, so a generator takes token ids, never chat messages: the prompt is
the chat template applied locally (`ChatTokenizer.prompt_ids`, the same ids `ores sft` trains on),
and each call continues the partial assistant turn from the ids of everything so far (model turns
and observation blocks, each tokenized on its own). Two generators share the `Generator` protocol,
the way search backends share `tools.base.SearchBackend`:

* `EndpointGenerator`: an OpenAI-compatible server's `/v1/completions` with `prompt` as a list
  of token ids and `stop` strings. vLLM and `ores serve` (our CPU server) accept both (SGLang is
  meant to; untested here). `transformers serve` ignores `stop`, so a turn would run past its tool
  call and the model would write the observation itself: do not use it here. Servers drop the
  stop string from the text (OpenAI semantics) and most do not say which one matched: vLLM's
  `stop_reason` (and SGLang's `matched_stop`) is used when present, otherwise the stop is the
  closer of the tool or report tag the turn opened and left open (`matched_stop`).
  The text comes back, not the ids, so the loop re-encodes it; with `token_logprobs=True` (vLLM
  only: `logprobs` and `return_tokens_as_token_ids`) the ids and log probs come back too.
* `EngineGenerator`: in-process, on the batching `server.engine.Engine`. Many loops (asyncio tasks)
  share one engine, so their turns are decoded in the same forward passes. Its `Done` carries the
  sampled ids and each one's log probability (raw model distribution, see `engine.Done`).

`generate` raises `GeneratorError` (an `OresError`: one line, where, what, how to fix) when the
generator cannot answer; a turn cut by its token limit comes back with finish_reason "length",
never as if it had ended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from oresearch_cli.errors import OresError
from oresearch_cli.llm.redact import redact, safe_url
from oresearch_cli.server.engine import (
    FINISH_CANCELLED,
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Delta,
    GenerationRequest,
    SamplingParams,
)
from oresearch_cli.trace import tags

if TYPE_CHECKING:
    import openai

    from oresearch_cli.server.engine import Engine

__all__ = [
    "ChatTokenizer",
    "EndpointGenerator",
    "EngineGenerator",
    "Generation",
    "Generator",
    "GeneratorError",
    "SamplingParams",
    "load_engine_generator",
    "matched_stop",
]


class GeneratorError(OresError):
    """A generator that could not produce a turn: unreachable endpoint, refused request, failed engine."""


@dataclass(frozen=True)
class Generation:
    """One generator call: the text the model wrote, and how it ended.

    `text` never contains the stop string; `stop` names the one that ended the call when one did
    (None at the end-of-turn token or the token limit). `token_ids` are the ids the model sampled,
    when the generator knows them (they may run past the stop string: the last token can hold text
    after it); `logprobs` are theirs, aligned. `finish_reason` is "stop" or "length".
    """

    text: str
    finish_reason: str
    stop: str | None = None
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


@runtime_checkable
class Generator(Protocol):
    """Continues a token sequence. `context_length` (prompt and completion together) is None when unknown.

    `prompt_ids`, `encode` and `decode` follow `ChatTokenizer`'s conventions: the chat template with
    the generation prompt; segments encoded without special tokens; decoding that keeps special
    tokens and spaces as they are, so decoded ids give back exactly the text they were made from.
    """

    name: str
    context_length: int | None

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation: ...

    async def aclose(self) -> None: ...


class ChatTokenizer:
    """A Hugging Face tokenizer used the way `ores sft` uses it (train/examples.py `ChatFormat`).

    The prompt is the chat template rendered as text with the generation prompt, then encoded
    without special tokens (the template already wrote them); every later segment is encoded on its
    own, also without special tokens. Keeping to this makes rollouts tokenize as training did.
    """

    def __init__(self, tokenizer: Any, *, name: str = "tokenizer") -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise GeneratorError(
                f"{name}: the tokenizer has no chat template; use an instruct model's tokenizer or set "
                "`chat_template` in its tokenizer_config.json"
            )
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def from_path(cls, path: str | Path) -> ChatTokenizer:
        """Load a tokenizer from a local checkpoint folder (no download: offline is assumed)."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise GeneratorError(
                f"tokenizer {folder}: not a folder; give the local checkpoint folder of the served model "
                "(the one with tokenizer.json)"
            )
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise GeneratorError(
                f"tokenizer {folder}: cannot be loaded ({' '.join(str(exc).split())[:200]}); "
                "give a checkpoint folder with tokenizer files"
            ) from None
        return cls(tokenizer, name=str(folder))

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
        )
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return str(
            self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        )


def matched_stop(text: str, stops: Sequence[str]) -> str | None:
    """The stop string a server stopped at but left out of `text`: the closer of the stop tag (a
    tool call or the report) that `text` opened last and did not close, if it is among `stops`.

    Only for servers that do not say which stop matched. A turn that opened a tool tag and then
    ended at the end-of-turn token reads as a closed call too; that turn meant a call anyway.
    """
    stop_tags = {tags.WEB_SEARCH, tags.CRAWL_PAGE, tags.SUGGESTED_ANSWER}
    open_tag: str | None = None
    for match in tags.TAG_RE.finditer(text):
        tag = match.lastgroup
        if tag not in stop_tags:
            continue
        if match.group("close"):
            if tag == open_tag:
                open_tag = None
        else:
            open_tag = tag
    if open_tag is None:
        return None
    closer = tags.close_tag(open_tag)
    return closer if closer in stops else None


def _context_length_of(folder: Path) -> int | None:
    """`max_position_embeddings` from a checkpoint's config.json, if it says."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    sources = [config, config.get("text_config") or {}] if isinstance(config, dict) else []
    for source in sources:
        value = source.get("max_position_embeddings") if isinstance(source, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


class _TokenizesLocally:
    """What both generators share: tokens come from a local `ChatTokenizer`, and `async with`
    closes the generator."""

    tokenizer: ChatTokenizer

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self.tokenizer.prompt_ids(messages)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)


class EndpointGenerator(_TokenizesLocally):
    """Continues turns through an OpenAI-compatible `/v1/completions` (vLLM, `ores serve`).

        gen = EndpointGenerator("http://127.0.0.1:8000/v1", "my-model", tokenizer="models/my-model")

    `tokenizer`: the served model's tokenizer, as a `ChatTokenizer` or its local folder; it must be
    the one the server uses, since the ids go over the wire. `context_length`: the server's limit in
    tokens (default: `max_position_embeddings` of the tokenizer folder's config.json, if any);
    the loop stops an episode at it instead of sending a request the server refuses.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: ChatTokenizer | str | Path,
        *,
        api_key: str | None = None,
        context_length: int | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 2,
        token_logprobs: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"{model}@{safe_url(self.base_url)}"
        if isinstance(tokenizer, ChatTokenizer):
            self.tokenizer = tokenizer
            self.context_length = context_length
        else:
            self.tokenizer = ChatTokenizer.from_path(tokenizer)
            self.context_length = context_length or _context_length_of(Path(tokenizer).expanduser())
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.token_logprobs = token_logprobs
        self._client: openai.AsyncOpenAI | None = None

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "EMPTY",  # local servers want no key, the SDK wants some string
                timeout=self.timeout_s,
                max_retries=self.max_retries,  # the SDK retries connection errors, 408/409/429/5xx
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        import openai

        where = safe_url(self.base_url)
        # fields left unset stay out of the body: a server may refuse what it does not do (logprobs)
        optional: dict[str, Any] = {}
        if params.seed is not None:
            optional["seed"] = params.seed
        if params.stop:
            optional["stop"] = list(params.stop)
        if self.token_logprobs:
            optional["logprobs"] = 0
            optional["extra_body"] = {"return_tokens_as_token_ids": True}
        try:
            response = await self._get_client().completions.create(
                model=self.model,
                prompt=[int(i) for i in prompt_ids],
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                **optional,
            )
        except openai.APITimeoutError:
            raise GeneratorError(
                f"generator {where}: no answer in {self.timeout_s:g} s; check that the server is not "
                "overloaded, or raise the timeout"
            ) from None
        except openai.APIConnectionError as exc:
            raise GeneratorError(
                f"generator {where}: cannot connect ({type(exc.__cause__ or exc).__name__}); start the "
                f"server (`ores serve --model ...` or vLLM) or fix the base URL"
            ) from None
        except openai.APIStatusError as exc:
            raise GeneratorError(self._status_message(exc, where)) from None
        if not response.choices:
            raise GeneratorError(f"generator {where}: the response has no choices; is it a completions API?")
        choice = response.choices[0]
        return self._generation(choice, params.stop)

    def _status_message(self, exc: Any, where: str) -> str:
        status = exc.status_code
        detail = ""
        body = exc.body
        if isinstance(body, Mapping):
            error = body.get("error", body)
            detail = str(error.get("message", "") if isinstance(error, Mapping) else error)
        detail = redact(" ".join((detail or str(exc)).split())[:300], [self.api_key or ""])
        if status == 401:
            fix = "set OPENAI_API_KEY (or pass api_key) to a key the server accepts"
        elif status == 404:
            fix = f"serve model {self.model!r} there, or name one listed at {where}/models; the base URL ends in /v1"
        elif status == 400:
            fix = "check the model's context length and the sampling settings"
        else:
            fix = "check the server's log"
        return f"generator {where}: HTTP {status} for model {self.model!r} ({detail}); {fix}"

    def _generation(self, choice: Any, stops: Sequence[str]) -> Generation:
        text = str(choice.text or "")
        finish = FINISH_LENGTH if choice.finish_reason == FINISH_LENGTH else FINISH_STOP
        extra = dict(getattr(choice, "model_extra", None) or {})
        said = extra.get("stop_reason", extra.get("matched_stop"))
        stop: str | None = None
        if isinstance(said, str) and said in stops:
            stop = said
        elif finish == FINISH_STOP and said is None:
            stop = matched_stop(text, stops)
        if stop is not None and text.endswith(stop):  # kept by the server (vLLM include_stop_str_in_output)
            text = text[: -len(stop)]
        ids, logprobs = self._token_logprobs(choice) if self.token_logprobs else (None, None)
        return Generation(text, finish, stop, ids, logprobs)

    def _token_logprobs(self, choice: Any) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
        """vLLM's `logprobs.tokens` as `token_id:N` (with `return_tokens_as_token_ids`) and their log probs."""
        lp = choice.logprobs
        tokens = getattr(lp, "tokens", None) if lp is not None else None
        values = getattr(lp, "token_logprobs", None) if lp is not None else None
        if not tokens or values is None or len(tokens) != len(values):
            return None, None
        try:
            ids = tuple(int(str(t).removeprefix("token_id:")) for t in tokens)
        except ValueError:
            return None, None  # plain token strings: the server ignored return_tokens_as_token_ids
        if any(v is None for v in values):
            return ids, None
        return ids, tuple(float(v) for v in values)


class EngineGenerator(_TokenizesLocally):
    """Continues turns on an in-process `Engine`; many loops may share one (their turns are batched).

    The engine must be started (`engine.start()`); `load_engine_generator` loads a checkpoint and
    starts one, and then `aclose()` stops it. A turn whose task is cancelled (the loop's wall-clock
    budget) cancels its request, which leaves the batch at the next decoding step.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        name: str = "engine",
        tokenizer: ChatTokenizer | None = None,
        owns: bool = False,
    ) -> None:
        self.engine = engine
        self.name = name
        self.tokenizer = tokenizer or ChatTokenizer(engine.tokenizer, name=name)
        known = [n for n in (engine.context_length, engine.cache_tokens) if n]
        self.context_length: int | None = min(known) if known else None
        self._owns = owns

    async def aclose(self) -> None:
        if self._owns:
            self.engine.stop()
            self._owns = False

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        request = GenerationRequest(list(prompt_ids), params)
        self.engine.submit(request)
        parts: list[str] = []
        try:
            while True:
                event = await request.events.get()
                if isinstance(event, Delta):
                    parts.append(event.text)
                    continue
                done = event
                break
        finally:
            request.cancel()  # a no-op once done; frees the batch row when this task was cancelled
        if done.finish_reason == FINISH_ERROR:
            raise GeneratorError(
                f"generator {self.name}: {done.error or 'generation failed'}; see the log for the traceback"
            )
        if done.finish_reason == FINISH_CANCELLED:
            raise GeneratorError(
                f"generator {self.name}: the engine stopped before the turn ended; keep it running "
                "until every research loop has finished"
            )
        return Generation("".join(parts), done.finish_reason, done.stop, done.token_ids, done.logprobs)


def load_engine_generator(
    path: str | Path,
    *,
    max_batch: int = 8,
    cache_tokens: int = 32768,
    threads: int | None = None,
    name: str | None = None,
) -> EngineGenerator:
    """An `EngineGenerator` over the checkpoint at `path` (transformers, float32 on CPU), started.

    `aclose()` (or `async with`) stops its engine. Imports torch: call it only where a model runs.
    """
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise GeneratorError(
            f"model {folder}: no config.json there; give a local transformers checkpoint folder "
            "(`ores sft` writes one under the workspace's models/)"
        )
    import torch

    from oresearch_cli.server.cpu_server import load
    from oresearch_cli.server.engine import Engine

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    model, tokenizer = load(folder, "float32", "cpu")
    engine = Engine(model, tokenizer, max_batch=max_batch, cache_tokens=cache_tokens)
    generator = EngineGenerator(engine, name=name or folder.name, owns=True)
    engine.start()
    return generator
