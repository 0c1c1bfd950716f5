"""The OpenAI API over the batching engine: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
`/health`. What `ores serve` runs on a CPU (server/cpu_server.py starts it).

Requests are read the way OpenAI and vLLM read them: `max_tokens` (or `max_completion_tokens`),
`temperature`, `top_p` (defaults from the checkpoint's generation_config, as vLLM takes them:
greedy when it does not sample), `seed`, `stop` (honoured: the text ends before the stop string),
`stream` with `stream_options.include_usage`, and `response_format` (`json_object`, or
`json_schema` enforced token by token: server/grammar.py), and on chat completions `logprobs`
with `top_logprobs` (0-20): each generated token's log prob and its likeliest alternatives under
the model's raw distribution (before temperature, top-p and any grammar mask, as vLLM reports
them), in OpenAI's `choices[0].logprobs.content` shape. A field the server cannot honour (`n` > 1,
`logprobs` on /v1/completions or with `stream`, `tools`, penalties) is refused with a 400 that
names it, never ignored; errors have OpenAI's shape, so the `openai` client raises them with the
message.

A client that disconnects cancels its generation at the next decoding step.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from oresearch_cli.server.engine import (
    FINISH_CANCELLED,
    FINISH_ERROR,
    Delta,
    Done,
    Engine,
    GenerationRequest,
    SamplingParams,
)
from oresearch_cli.server.grammar import ResponseFormatError

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
LOGPROB_FLOOR = -9999.0  # what OpenAI reports for a token the model rules out (JSON has no -inf)
DISCONNECT_POLL_S = 0.5
# Fields asking for what this server does not do; anything else unknown (user, metadata) is ignored.
_UNSUPPORTED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "logit_bias": "logit_bias",
    "audio": "audio output",
    "modalities": "other modalities",
    "prediction": "predicted outputs",
    "suffix": "suffix",
    "echo": "echo",
    "best_of": "best_of",
}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def _error(message: str, *, status: int = 400, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = "model_not_found" if status == 404 else None
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


@dataclass(frozen=True)
class Parsed:
    """A validated request: what the engine needs and how to answer."""

    prompt_ids: list[int]
    params: SamplingParams
    grammar: Any | None
    stream: bool
    include_usage: bool
    logprobs: bool = False


class OpenAIServer:
    """Binds one engine to one served model name."""

    def __init__(self, engine: Engine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self.created = int(time.time())

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self, body: Any, *, chat: bool) -> Parsed:
        if not isinstance(body, Mapping):
            raise BadRequest("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise BadRequest(
                f"model {model!r} is not served here; this server serves {self.model_name!r}",
                "model",
                404,
            )
        for name, what in _UNSUPPORTED.items():
            if body.get(name) not in (None, [], False, ""):
                raise BadRequest(f"{name}: {what} is not supported by this server; leave it out", name)
        if body.get("n", 1) != 1:
            raise BadRequest("n: only one choice per request is supported; send n=1 or leave it out", "n")
        logprobs, top_logprobs = _logprobs(body, chat=chat)
        for name in ("presence_penalty", "frequency_penalty"):
            if body.get(name) not in (None, 0, 0.0):
                raise BadRequest(f"{name}: not supported by this server; leave it out or send 0", name)
        if chat:
            prompt_ids = self._chat_prompt(body.get("messages"))
        else:
            prompt_ids = self._text_prompt(body.get("prompt"))
        params = self._sampling(body, len(prompt_ids), top_logprobs)
        grammar = None
        if body.get("response_format") is not None:
            if self.engine.grammars is None:
                raise BadRequest(
                    "response_format: this server was started without xgrammar", "response_format"
                )
            try:
                grammar = self.engine.grammars.for_response_format(body["response_format"])
            except ResponseFormatError as exc:
                raise BadRequest(str(exc), "response_format") from None
        options = body.get("stream_options") or {}
        return Parsed(
            prompt_ids=prompt_ids,
            params=params,
            grammar=grammar,
            stream=bool(body.get("stream")),
            include_usage=bool(isinstance(options, Mapping) and options.get("include_usage")),
            logprobs=logprobs,
        )

    def _chat_prompt(self, messages: Any) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list of {role, content}", "messages")
        flat = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise BadRequest(f"messages[{i}] must be an object with a role and content", "messages")
            content = message.get("content")
            if isinstance(content, list):  # content parts: only text is understood here
                texts = []
                for part in content:
                    if not isinstance(part, Mapping) or part.get("type") != "text":
                        raise BadRequest(f"messages[{i}]: only text content parts are supported", "messages")
                    texts.append(str(part.get("text", "")))
                content = "".join(texts)
            elif content is None:
                content = ""
            elif not isinstance(content, str):
                raise BadRequest(
                    f"messages[{i}].content must be a string or a list of text parts", "messages"
                )
            flat.append({"role": message["role"], "content": content})
        try:
            return self.engine.encode_chat(flat)
        except Exception as exc:  # the chat template raises on an order it does not accept
            raise BadRequest(
                f"messages: the model's chat template refused them ({exc})", "messages"
            ) from None

    def _text_prompt(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return [int(t) for t in prompt]
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest(
                "prompt must be a non-empty string (or one string, or a list of token ids)", "prompt"
            )
        return self.engine.encode_text(prompt)

    def _sampling(self, body: Mapping[str, Any], prompt_len: int, top_logprobs: int = 0) -> SamplingParams:
        context = self.engine.context_length
        if prompt_len >= self.engine.cache_tokens or (context and prompt_len >= context):
            limit = min(x for x in (self.engine.cache_tokens, context) if x)
            raise BadRequest(
                f"the prompt has {prompt_len} tokens; this server holds at most {limit - 1}: shorten it "
                "(or start the server with a larger --max-model-len)",
                "messages",
            )
        room = (context or self.engine.cache_tokens) - prompt_len
        asked = body.get("max_completion_tokens", body.get("max_tokens"))
        if asked is None:
            max_tokens = room
        elif isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
            raise BadRequest("max_tokens must be a positive integer", "max_tokens")
        else:
            max_tokens = min(asked, room)
        default_temperature, default_top_p = self.engine.default_sampling
        temperature = _number(body, "temperature", default_temperature, 0.0, 2.0)
        top_p = _number(body, "top_p", default_top_p, 0.0, 1.0)
        if top_p == 0:
            raise BadRequest("top_p must be above 0", "top_p")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest("seed must be an integer", "seed")
        stop = body.get("stop")
        stops: tuple[str, ...]
        if stop is None:
            stops = ()
        elif isinstance(stop, str):
            stops = (stop,) if stop else ()
        elif (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP_STRINGS
        ):
            stops = tuple(s for s in stop if s)
        else:
            raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings", "stop")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stops,
            top_logprobs=top_logprobs,
        )

    # -- routes ----------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        # requests generating or waiting: lets a client (and the tests) see cancellations land
        return JSONResponse({"status": "ok", "in_flight": self.engine.in_flight})

    async def models(self, request: Request) -> Response:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "ores"}
        return JSONResponse({"object": "list", "data": [card]})

    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def _complete(self, request: Request, *, chat: bool) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error("the request body is not valid JSON")
        try:
            parsed = self._parse(body, chat=chat)
        except BadRequest as exc:
            return _error(exc.message, status=exc.status, param=exc.param)
        generation = GenerationRequest(parsed.prompt_ids, parsed.params, grammar=parsed.grammar)
        kind = "chat.completion" if chat else "text_completion"
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.engine.submit(generation)
        if parsed.stream:
            return StreamingResponse(
                self._stream(request, generation, ident, chat=chat, include_usage=parsed.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        text, done = await self._collect(request, generation)
        if done.finish_reason == FINISH_CANCELLED:
            return Response(status_code=499)
        if done.finish_reason == FINISH_ERROR:
            return _error(done.error or "generation failed", status=500)
        choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason, "logprobs": None}
        if parsed.logprobs:
            choice["logprobs"] = {"content": self._logprob_content(done)}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse(
            {
                "id": ident,
                "object": kind,
                "created": int(time.time()),
                "model": self.model_name,
                "choices": [choice],
                "usage": _usage(done),
            }
        )

    def _logprob_content(self, done: Done) -> list[dict[str, Any]]:
        """OpenAI's `logprobs.content`: per generated token its text, log prob, bytes (null for
        a token that is part of a multi-byte character) and the alternatives asked for."""
        ids = list(done.token_ids)
        for top in done.top_logprobs:
            ids.extend(i for i, _ in top)
        unique = list(dict.fromkeys(ids))
        texts = dict(zip(unique, self.engine.token_texts(unique), strict=True)) if unique else {}

        def entry(token: int, logprob: float) -> dict[str, Any]:
            text = texts[token]
            raw = None if "\ufffd" in text else list(text.encode("utf-8"))
            value = logprob if math.isfinite(logprob) else LOGPROB_FLOOR
            return {"token": text, "logprob": max(value, LOGPROB_FLOOR), "bytes": raw}

        content = []
        for n, (token, logprob) in enumerate(zip(done.token_ids, done.logprobs, strict=True)):
            item = entry(token, logprob)
            top = done.top_logprobs[n] if n < len(done.top_logprobs) else ()
            item["top_logprobs"] = [entry(i, lp) for i, lp in top]
            content.append(item)
        return content

    async def _collect(self, request: Request, generation: GenerationRequest) -> tuple[str, Done]:
        parts: list[str] = []
        watcher = asyncio.create_task(_cancel_on_disconnect(request, generation))
        try:
            while True:
                event = await generation.events.get()
                if isinstance(event, Delta):
                    parts.append(event.text)
                else:
                    return "".join(parts), event
        finally:  # also when this handler is cancelled (server shutdown)
            generation.cancel()
            watcher.cancel()

    async def _stream(
        self, request: Request, generation: GenerationRequest, ident: str, *, chat: bool, include_usage: bool
    ) -> AsyncIterator[str]:
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, *, first: bool = False) -> str:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                content: dict[str, Any] = {"role": "assistant"} if first else {}
                if delta is not None:
                    content["content"] = delta
                choice["delta"] = content
            else:
                choice["text"] = delta or ""
            payload: dict[str, Any] = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": self.model_name,
                "choices": [choice],
            }
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        try:
            if chat:
                yield chunk("", None, first=True)
            while True:
                event = await generation.events.get()
                if isinstance(event, Delta):
                    yield chunk(event.text, None)
                    continue
                if event.finish_reason == FINISH_ERROR:
                    error = {"error": {"message": event.error or "generation failed", "type": "server_error"}}
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                yield chunk(None, event.finish_reason)
                if include_usage:
                    usage = {
                        "id": ident,
                        "object": kind,
                        "created": created,
                        "model": self.model_name,
                        "choices": [],
                        "usage": _usage(event),
                    }
                    yield f"data: {json.dumps(usage)}\n\n"
                yield "data: [DONE]\n\n"
                return
        finally:
            generation.cancel()  # a no-op once done; stops the generation when the client left

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
            ]
        )


async def _cancel_on_disconnect(request: Request, generation: GenerationRequest) -> None:
    """Cancel `generation` once its client has gone (polled: a plain response has no other signal)."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    generation.cancel()


def _usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _logprobs(body: Mapping[str, Any], *, chat: bool) -> tuple[bool, int]:
    """(whether to return log probs, how many alternatives per token) as the request asks."""
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if not chat:
        if logprobs not in (None, False) or top not in (None, 0):
            raise BadRequest(
                "logprobs: not supported on /v1/completions by this server; use /v1/chat/completions "
                "with logprobs: true, or leave it out",
                "logprobs",
            )
        return False, 0
    if logprobs is not None and not isinstance(logprobs, bool):
        raise BadRequest("logprobs must be true or false", "logprobs")
    if top is not None and (
        isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS
    ):
        raise BadRequest(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}", "top_logprobs")
    if top and not logprobs:
        raise BadRequest("top_logprobs needs logprobs: true; send both or leave both out", "top_logprobs")
    if logprobs and body.get("stream"):
        raise BadRequest(
            "logprobs: not supported with stream by this server; leave one of them out", "logprobs"
        )
    return bool(logprobs), int(top or 0)


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}", name)
    return float(value)
