"""The HTTP face of `ores serve --agent`: the research agent (server/research_service.py) as an API.

Routes:

* `POST /v1/research`: `{"question", "language"?, "stream"?, "max_tool_calls"?, "max_steps"?,
  "max_tokens"?, "max_seconds"?, "temperature"?, "include_trace"?}` -> `{"id", "object": "research",
  "report", "sources", "trace", "stop_reason", "valid", "problems", "usage", "cost_usd"}`. With
  `stream: true`, server-sent events: `start`, then `subtasks`, `step`, `subtask_answer` as the
  research goes, `report` chunks, and `done` carrying the whole response (or `error`).
* `POST /v1/chat/completions` with `model: ores-agent`: the last user message is the question, the
  report is the answer; `max_tokens` is the research's token budget. Streamed in OpenAI's chunk
  format, the steps as `reasoning_content` deltas (what reasoning-aware chat UIs show) and the report
  as `content`. The research's id, sources and stop reason ride along under `ores`.
* `GET /v1/models` (lists `ores-agent`), `GET /health` (no key needed), `GET /metrics` (Prometheus).

Limits (server/limits.py): body size (413), question length (400), researches at once (429 with
`Retry-After`), and each research's budget (a request may lower it, never raise it: 400). A client
that disconnects cancels its research at its next await (the model's turn or a tool call), and the
research is recorded as failed with that reason. Every request gets an id (`X-Request-Id` on the
response, the research's id, the row's id) and one log line; the key and headers are never logged.
Each research, finished or not, is recorded through `recorder` (the server's workspace run).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from oresearch_cli.errors import ConfigError, OresError
from oresearch_cli.server.auth import BearerAuth
from oresearch_cli.server.limits import Admission, BodyTooLarge, Busy, ServeLimits, read_body
from oresearch_cli.server.metrics import CONTENT_TYPE, AgentMetrics
from oresearch_cli.server.research_service import (
    Research,
    ResearchAgent,
    ResearchBudget,
    ResearchEvent,
    ResearchRequest,
)
from oresearch_cli.stages.synth import TraceRecord

log = logging.getLogger("oresearch_cli.agent_server")

AGENT_MODEL = "ores-agent"
BUDGET_STOPS = {
    "max_tool_calls",
    "max_turns",
    "max_new_tokens",
    "max_turn_tokens",
    "max_seconds",
    "max_tokens",
    "context",
}
_RESEARCH_FIELDS = {
    "question",
    "language",
    "stream",
    "include_trace",
    "temperature",
    "max_tool_calls",
    "max_steps",
    "max_tokens",
    "max_seconds",
}
# chat fields asking for what the agent does not do; others (user, metadata, top_p...) are ignored
_CHAT_UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logprobs",
    "audio",
)


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "bad_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind  # the `ores_agent_errors` label
        self.headers = headers


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, so its client raises the right exception with our message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def new_id() -> str:
    return "res_" + secrets.token_hex(12)


def _sse(event: str, data: Mapping[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _int(body: Mapping[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise HTTPError(400, f"{name} must be an integer of at least {low}", name)
    return value


def _positive(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise HTTPError(400, f"{name} must be a number above 0", name)
    return float(value)


def _budget(body: Mapping[str, Any], max_tokens: str = "max_tokens") -> ResearchBudget:
    return ResearchBudget(
        max_tool_calls=_int(body, "max_tool_calls", 0),
        max_steps=_int(body, "max_steps", 1),
        max_tokens=_int(body, max_tokens, 1),
        max_seconds=_positive(body, "max_seconds"),
    )


def _temperature(body: Mapping[str, Any]) -> float | None:
    value = body.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise HTTPError(400, "temperature must be a number from 0 to 2", "temperature")
    return float(value)


def _language(body: Mapping[str, Any]) -> str | None:
    value = body.get("language")
    if value is None:
        return None
    if not isinstance(value, str) or not 2 <= len(value) <= 16:
        raise HTTPError(400, "language must be a language code such as 'en' or 'zh'", "language")
    return value


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise HTTPError(400, f"{name} must be true or false", name)
    return value


def chat_question(messages: Any) -> str:
    """The last user message's text (a string, or the text parts of a content list)."""
    if not isinstance(messages, list) or not messages:
        raise HTTPError(400, "messages must be a non-empty list of {role, content}", "messages")
    for message in reversed(messages):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(
                str(part.get("text") or "")
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
        if isinstance(content, str) and content.strip():
            return content
        break
    raise HTTPError(400, "messages: the last user message must hold the question as text", "messages")


def step_line(event: ResearchEvent) -> str:
    """A step as one line of `reasoning_content` in a streamed chat answer."""
    data = event.data
    where = f"[subtask {data['subtask']}] " if data.get("subtask") else ""
    if event.type == "subtasks":
        return "Subtasks:\n" + "".join(f"{n}. {s}\n" for n, s in enumerate(data["subtasks"], start=1))
    if event.type == "subtask_answer":
        return f"{where}answer: {' '.join(str(data['text']).split())[:300]}\n"
    kind = data.get("kind")
    if kind == "web_search":
        return f"{where}search: {' | '.join(data['queries'])}\n"
    if kind == "crawl_page":
        return f"{where}read: {' | '.join(data['urls'])}\n"
    if kind == "observation":
        return f"{where}observed ({data['chars']} chars): {data['summary']}\n"
    return f"{where}{kind}: {' '.join(str(data.get('text') or '').split())}\n"


class _Job:
    """One research running in its own task: recorded, counted and its slot freed however it ends."""

    def __init__(self, server: AgentServer, request: ResearchRequest, ticket: int, stream: bool) -> None:
        self.server = server
        self.request = request
        self.ticket = ticket
        self.events: asyncio.Queue[ResearchEvent | None] = asyncio.Queue()
        self.stream = stream
        self.client_gone = False
        self.task = asyncio.create_task(self._run(), name=f"research {request.id}")
        server.jobs.add(self.task)
        self.task.add_done_callback(server.jobs.discard)

    def _emit(self, event: ResearchEvent) -> None:
        if self.stream:
            self.events.put_nowait(event)

    async def _run(self) -> Research:
        server, request = self.server, self.request
        started = time.monotonic()
        server.metrics.in_flight.inc()
        record: TraceRecord | None = None
        try:
            research = await server.agent.research(request, self._emit)
            record = research.record
            server.metrics.research_done(
                research.prompt_tokens, research.completion_tokens, research.n_tool_calls
            )
            return research
        except asyncio.CancelledError as exc:
            reason = str(exc.args[0]) if exc.args else "cancelled"
            record = server.agent.failed_record(request, reason, time.monotonic() - started)
            server.metrics.errors.labels("disconnected").inc()
            raise
        except Exception as exc:
            if not isinstance(exc, OresError):
                log.exception("%s: research failed", request.id)
            message = str(exc) if isinstance(exc, OresError) else f"{type(exc).__name__}: {exc}"
            record = server.agent.failed_record(request, message, time.monotonic() - started)
            server.metrics.errors.labels("failed").inc()
            raise
        finally:
            server.metrics.in_flight.dec()
            server.admission.release(self.ticket)
            if record is not None:
                server.record(record)
            self.events.put_nowait(None)

    def cancel(self, reason: str) -> None:
        if not self.task.done():
            self.task.cancel(reason)


async def _until_disconnect(request: Request) -> None:
    """Returns when the client has gone (its body already read, the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
_KEEPALIVE = object()


async def _job_events(http: Request, job: _Job) -> AsyncIterator[ResearchEvent | object]:
    """The job's events as they come (`_KEEPALIVE` after a quiet spell), until it ends; when the
    client goes away the research is cancelled and this stops. Watching for the disconnect here,
    not only when a write fails, stops a research whose model is in the middle of a long turn."""
    gone = asyncio.ensure_future(_until_disconnect(http))
    try:
        while True:
            getter = asyncio.ensure_future(job.events.get())
            done, _ = await asyncio.wait(
                {getter, gone}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                if gone in done:
                    job.client_gone = True
                    job.cancel("cancelled: the client disconnected")
                    return
                yield _KEEPALIVE
                continue
            event = getter.result()
            if event is None:
                return
            yield event
    finally:
        gone.cancel()


class AgentServer:
    """The research agent behind HTTP: admission, limits, recording, metrics, and the routes."""

    def __init__(
        self,
        agent: ResearchAgent,
        limits: ServeLimits | None = None,
        *,
        recorder: Callable[[TraceRecord], None] | None = None,
        api_key: str | None = None,
        model_name: str = AGENT_MODEL,
    ) -> None:
        self.agent = agent
        self.limits = limits or ServeLimits()
        self.recorder = recorder
        self.api_key = api_key
        self.model_name = model_name
        self.admission = Admission(self.limits.max_concurrent)
        self.metrics = AgentMetrics()
        self.jobs: set[asyncio.Task[Research]] = set()
        self.created = int(time.time())
        self.n_recorded = 0

    def record(self, record: TraceRecord) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder(record)
            self.n_recorded += 1
        except Exception:  # noqa: BLE001 - a full disk must not turn an answer into an error
            log.exception("%s: could not record the research", record.id)

    # -- requests ------------------------------------------------------------------------------

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = await read_body(request, self.limits.max_body_bytes)
        except BodyTooLarge as exc:
            raise HTTPError(413, str(exc), kind="too_large") from None
        try:
            parsed = json.loads(body)
        except ValueError:
            raise HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return parsed

    def _research_request(
        self, ident: str, question: Any, body: Mapping[str, Any], budget: ResearchBudget
    ) -> ResearchRequest:
        if not isinstance(question, str) or not question.strip():
            raise HTTPError(400, "question must be a non-empty string", "question")
        cap = self.limits.max_question_chars
        if len(question) > cap:
            raise HTTPError(
                400,
                f"the question is {len(question):,} characters, over this server's limit of {cap:,}",
                "question",
            )
        try:
            budget.within(self.agent.limits)
        except ConfigError as exc:
            raise HTTPError(400, str(exc)) from None
        return ResearchRequest(
            ident, " ".join(question.split()), _language(body), budget, temperature=_temperature(body)
        )

    def _start(self, request: ResearchRequest, stream: bool) -> _Job:
        try:
            ticket = self.admission.acquire()
        except Busy as busy:
            # the wait the message names is the one the header gives
            raise HTTPError(
                429, str(busy), kind="busy", headers={"Retry-After": str(busy.retry_after)}
            ) from busy
        return _Job(self, request, ticket, stream)

    async def _wait(self, http: Request, job: _Job) -> Research | None:
        """The research, or None when the client left first (its research is cancelled)."""
        watcher = asyncio.ensure_future(_until_disconnect(http))
        try:
            await asyncio.wait({job.task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not job.task.done():  # the client left, or this handler was cancelled (shutdown)
                job.cancel("cancelled: the client disconnected")
            watcher.cancel()
        if not job.task.done() or job.task.cancelled():
            return None
        return job.task.result()  # raises what the research raised

    # -- routes --------------------------------------------------------------------------------

    async def research(self, http: Request, ident: str) -> Response:
        body = await self._body(http)
        unknown = sorted(set(body) - _RESEARCH_FIELDS)
        if unknown:
            raise HTTPError(
                400,
                f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_RESEARCH_FIELDS))}",
                unknown[0],
            )
        request = self._research_request(ident, body.get("question"), body, _budget(body))
        include_trace = _flag(body, "include_trace", True)
        stream = _flag(body, "stream", False)
        job = self._start(request, stream)
        if stream:
            return StreamingResponse(
                self._research_events(http, job, include_trace),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        research = await self._wait(http, job)
        if research is None:
            return Response(status_code=499)
        return JSONResponse(self._research_body(research, include_trace))

    def _research_body(self, research: Research, include_trace: bool) -> dict[str, Any]:
        return {
            "id": research.request.id,
            "object": "research",
            "created": int(time.time()),
            "model": self.agent.name,
            **research.to_dict(include_trace=include_trace),
        }

    async def _research_events(self, http: Request, job: _Job, include_trace: bool) -> AsyncIterator[str]:
        request = job.request
        try:
            yield _sse(
                "start",
                {
                    "id": request.id,
                    "question": request.question,
                    "language": request.seed.language,
                    "model": self.agent.name,
                },
            )
            async for event in _job_events(http, job):
                yield _sse(event.type, event.data) if isinstance(event, ResearchEvent) else ": keep-alive\n\n"
            if job.client_gone:
                return
            try:
                research = await job.task
            except OresError as exc:
                yield _sse("error", error_body(str(exc), 502))
                return
            except Exception as exc:  # noqa: BLE001 - logged by the job; the client gets one line
                yield _sse("error", error_body(f"the research failed: {type(exc).__name__}", 500))
                return
            yield _sse("done", self._research_body(research, include_trace))
        finally:
            job.cancel("cancelled: the client disconnected")  # a no-op once done

    async def chat_completions(self, http: Request, ident: str) -> Response:
        body = await self._body(http)
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise HTTPError(
                404, f"model {model!r} is not served here; this server serves {self.model_name!r}", "model"
            )
        for name in _CHAT_UNSUPPORTED:
            if body.get(name) not in (None, [], False, ""):
                raise HTTPError(400, f"{name}: not supported by the research agent; leave it out", name)
        if body.get("n", 1) != 1:
            raise HTTPError(400, "n: the agent writes one report per request; send n=1 or leave it out", "n")
        tokens = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        request = self._research_request(
            ident, chat_question(body.get("messages")), body, _budget(body, tokens)
        )
        stream = _flag(body, "stream", False)
        options = body.get("stream_options")
        include_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
        job = self._start(request, stream)
        if stream:
            return StreamingResponse(
                self._chat_chunks(http, job, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        research = await self._wait(http, job)
        if research is None:
            return Response(status_code=499)
        return JSONResponse(
            {
                "id": "chatcmpl-" + request.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": research.report or ""},
                        "finish_reason": _finish_reason(research),
                        "logprobs": None,
                    }
                ],
                "usage": _chat_usage(research),
                "ores": _ores_extra(research),
            }
        )

    async def _chat_chunks(self, http: Request, job: _Job, include_usage: bool) -> AsyncIterator[str]:
        ident = "chatcmpl-" + job.request.id
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra,
            }
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            async for event in _job_events(http, job):
                if not isinstance(event, ResearchEvent):
                    yield ": keep-alive\n\n"
                elif event.type == "report":
                    yield chunk({"content": event.data["delta"]})
                else:
                    yield chunk({"reasoning_content": step_line(event)})
            if job.client_gone:
                return
            try:
                research = await job.task
            except Exception as exc:  # noqa: BLE001 - OpenAI's stream has no status: an error object
                message = (
                    str(exc) if isinstance(exc, OresError) else f"the research failed: {type(exc).__name__}"
                )
                yield f"data: {json.dumps(error_body(message, 502))}\n\n"
                return
            yield chunk({}, _finish_reason(research), ores=_ores_extra(research))
            if include_usage:
                usage = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": self.model_name,
                    "choices": [],
                    "usage": _chat_usage(research),
                }
                yield f"data: {json.dumps(usage)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            job.cancel("cancelled: the client disconnected")

    async def models(self, http: Request) -> Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "ores",
            "root": self.agent.name,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def health(self, http: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": self.model_name,
                "agent": self.agent.name,
                "in_flight": self.admission.in_flight,
                "tasks": len(self.jobs),
                "max_concurrent": self.limits.max_concurrent,
                "recorded": self.n_recorded,
            }
        )

    async def metrics_route(self, http: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # -- the app -------------------------------------------------------------------------------

    def _route(self, name: str, handler: Callable[[Request, str], Any]) -> Callable[[Request], Any]:
        """A POST route: its id, its one log line, its metrics, and errors as OpenAI's JSON."""

        async def endpoint(http: Request) -> Response:
            ident = new_id()
            started = time.monotonic()
            try:
                response = await handler(http, ident)
            except HTTPError as exc:
                self.metrics.errors.labels(exc.kind).inc()
                response = JSONResponse(
                    error_body(exc.message, exc.status, exc.param), exc.status, exc.headers
                )
            except OresError as exc:  # the system could not answer at all (an endpoint, a key)
                response = JSONResponse(error_body(str(exc), 502), 502)
            except Exception as exc:  # noqa: BLE001 - logged; the client gets one line, not a traceback
                log.exception("%s %s failed", ident, name)
                response = JSONResponse(
                    error_body(f"internal error ({type(exc).__name__}); see the server log", 500), 500
                )
            response.headers["X-Request-Id"] = ident
            status = response.status_code

            def done(how: str = "") -> None:
                seconds = time.monotonic() - started
                self.metrics.requests.labels(name, str(status)).inc()
                self.metrics.latency.labels(name).observe(seconds)
                log.info("%s POST %s %d in %.2f s%s", ident, name, status, seconds, how)

            if isinstance(response, StreamingResponse):  # counted when the stream ends, not when it starts
                response.body_iterator = _then(response.body_iterator, lambda: done(" (streamed)"))
            else:
                done()
            return response

        return endpoint

    def app(self) -> Any:
        """The ASGI app; behind bearer auth on every route but /health when a key is set."""
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_route, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/research", self._route("/v1/research", self.research), methods=["POST"]),
            Route(
                "/v1/chat/completions",
                self._route("/v1/chat/completions", self.chat_completions),
                methods=["POST"],
            ),
        ]
        app: Any = Starlette(routes=routes)
        if self.api_key:
            app = BearerAuth(app, self.api_key, on_refused=self.metrics.errors.labels("auth").inc)
        return app


async def _then(body: AsyncIterable[Any], callback: Callable[[], None]) -> AsyncIterator[Any]:
    """`body`, then `callback` however it ends (done, or the client gone)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        callback()


def _finish_reason(research: Research) -> str:
    return "length" if research.report is None and research.stop_reason in BUDGET_STOPS else "stop"


def _chat_usage(research: Research) -> dict[str, int]:
    return {
        "prompt_tokens": research.prompt_tokens,
        "completion_tokens": research.completion_tokens,
        "total_tokens": research.prompt_tokens + research.completion_tokens,
    }


def _ores_extra(research: Research) -> dict[str, Any]:
    return {
        "research_id": research.request.id,
        "sources": research.sources,
        "stop_reason": research.stop_reason,
        "valid": research.valid,
        "tool_calls": research.n_tool_calls,
        "cost_usd": research.cost_usd,
    }
