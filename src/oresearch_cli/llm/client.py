"""`LLMClient`: async chat completions for the four roles, over any OpenAI-compatible endpoint.

    from oresearch_cli.llm import CallLog, LLMClient, load_config

    config = load_config(args.config, {"model": args.model}, require=["worker"])
    async with LLMClient(config, CallLog(run.dir / "llm_calls.jsonl", run.run_id)) as llm:
        result = await llm.chat("worker", messages, affinity=question_id, trace_id=question_id)
        result.text, result.truncated, result.usage.completion_tokens, result.cost_usd

Each call: pick a base URL (`routing`), wait for the rate limits and a concurrency slot (`limits`),
send it with the `openai` package (its own retries off; see `_Endpoint` for its connection
pools), and retry with tenacity what is worth retrying: 429 (waiting what Retry-After says), 5xx,
timeouts, dropped connections and bodies that are not a chat completion. 400/401/403/404 fail at
once with a line that says what to fix. Every call, failed or not, becomes one `CallRecord`
(tokens, latency, cost, attempts) for the recorder.

Faults should cost little. A call holds its concurrency slot only while a request is in flight:
the retry waits (backoff, Retry-After) and the waits for a paused endpoint happen without one, so
other calls use the slot meanwhile (`limits`); a retry then queues ahead of calls not yet sent. A
429's Retry-After is always waited out by the call that got it, and pauses the endpoint for every
caller unless the endpoint is plainly serving (few 429s among its recent answers; `Pauses.pause`).

Hedging (`hedge_after_s`, off by default): a request still unanswered after
max(HEDGE_MEDIAN_FACTOR x the median latency of the role's last answers from that endpoint,
`hedge_after_s`) gets an identical second request; the first answer wins and the other request is
cancelled (`hedges`, `hedge_wins` count them). It needs HEDGE_MIN_SAMPLES answers first and never
fires past `timeout_s`. The hedge waits for the endpoint's pause and rate limits but rides on its
call's concurrency slot (queued behind fresh calls it would come too late to help), so requests
in flight may exceed `max_concurrency` by the calls hedged at that moment.

It is off by default because an LLM call's latency grows with the length of its answer: a call
running long is far more often a long answer than a hung server, and a hedge of it pays for the
same tokens twice (hosted APIs bill a cancelled request's tokens too) and finishes no sooner. Turn
it on (`hedge_after_s: 5`, say) against an endpoint known to leave requests unanswered, where each
such request would otherwise cost a whole `timeout_s`; benchmarks/bench_faults.py measures both.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import functools
import logging
import math
import os
import random
import re
import ssl
import statistics
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from oresearch_cli.llm.config import LLMConfig, RoleConfig
from oresearch_cli.llm.errors import LLMError, MalformedOutput
from oresearch_cli.llm.jsonout import JSONExtractError, parse_json_output
from oresearch_cli.llm.limits import Limits, Pauses
from oresearch_cli.llm.logprob_scores import TokenLogprob, parse_logprobs
from oresearch_cli.llm.recorder import CallRecord, Recorder, Totals
from oresearch_cli.llm.redact import redact, safe_url
from oresearch_cli.llm.routing import Router
from oresearch_cli.llm.waiting import wait_out
from oresearch_cli.textutil.tokens import estimate_message_tokens, estimate_tokens
from oresearch_cli.workspace.records import Status

log = logging.getLogger("oresearch_cli.llm")

# Per-call overrides that change the role's settings rather than the request body.
_ROLE_OVERRIDES = {"model", "temperature", "max_tokens", "timeout_s", "max_attempts", "hedge_after_s"}
# Models that take `max_completion_tokens` instead of `max_tokens` (OpenAI reasoning models).
_COMPLETION_TOKENS_MODELS = re.compile(r"^(openai/)?(o\d|gpt-5)")
_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]+")
# OpenAI's bound on `top_logprobs` (alternatives per generated token).
MAX_TOP_LOGPROBS = 20
# Calls in flight per HTTP connection pool (see `_Endpoint`).
CONNECTIONS_PER_POOL = 16
# Hedging (module docstring): past this many times the recent median latency, and only once this
# many answers (of the last HEDGE_WINDOW) are known for the role at that endpoint.
HEDGE_MEDIAN_FACTOR = 3.0
HEDGE_MIN_SAMPLES = 8
HEDGE_WINDOW = 64

Message = Mapping[str, Any]
T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every connection pool of this process shares.

    Building one loads a CA bundle (~50 ms of CPU), and the SDK's HTTP client builds its own for
    every client; as one is opened per CONNECTIONS_PER_POOL calls in flight, without sharing the
    first calls of a run waited for several. It trusts what the SDK's HTTP client trusts by
    default: SSL_CERT_FILE or SSL_CERT_DIR when set, else the system's CA store (as httpx2, which
    openai >= 3 is built on, does on Linux), else, where the system has none (a python.org build
    on macOS, a container without ca-certificates), certifi's bundle (as httpx does).
    """
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    context = ssl.create_default_context()
    if not context.cert_store_stats()["x509_ca"] and not _has_ca_dir(ssl.get_default_verify_paths().capath):
        import certifi  # a dependency of httpx, which the project requires

        context.load_verify_locations(cafile=certifi.where())
    return context


def _has_ca_dir(capath: str | None) -> bool:
    """Whether `capath` holds hashed CA certificates (OpenSSL reads those only when it needs one)."""
    if not capath or not os.path.isdir(capath):
        return False
    return any(re.fullmatch(r"[0-9a-fA-F]{8}\.\d+", name) for name in os.listdir(capath))


@dataclass(frozen=True)
class Usage:
    """Tokens of one call. `estimated`: the endpoint reported none, so these are characters / 4."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    """One answered call. `truncated` is True when the model hit `max_tokens` (finish_reason
    "length"): the text is cut off, and the caller decides what to do with it. `data` holds the
    parsed object for `chat_json`. `logprobs` holds the reply's tokens with their log probs and
    top alternatives when the call asked for them (`top_logprobs`) and the endpoint sent them;
    None otherwise (many endpoints send none)."""

    text: str
    finish_reason: str | None
    usage: Usage
    latency_s: float
    cost_usd: float | None
    model: str
    base_url: str
    attempts: int
    role: str = ""
    call_id: str = ""
    data: dict[str, Any] | None = field(default=None, compare=False)
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, compare=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class _Answer:
    """The parts of a chat completion body the client uses."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    logprobs: tuple[TokenLogprob, ...] | None = None

    @classmethod
    def parse(cls, data: object, *, logprobs: bool = False) -> _Answer | None:
        """None unless `data` is a chat completion with a message (a proxy's HTML page is not).
        With `logprobs`, the choice's token log probs are read too (None when it has none)."""
        if not isinstance(data, dict):
            return None
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        message = choices[0].get("message")
        if not isinstance(message, dict):
            return None
        content = message.get("content")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        finish = choices[0].get("finish_reason")
        model = data.get("model")
        return cls(
            text=content if isinstance(content, str) else "",
            finish_reason=finish if isinstance(finish, str) else None,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            completion_tokens=completion if isinstance(completion, int) else None,
            model=model if isinstance(model, str) else None,
            logprobs=parse_logprobs(choices[0].get("logprobs")) if logprobs else None,
        )


class _Retryable(Exception):
    """A failed attempt worth another; `wait` overrides the backoff (Retry-After)."""

    def __init__(self, message: str, *, status: int | None = None, wait: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.wait = wait


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _error_detail(exc: openai.APIStatusError) -> tuple[str, str]:
    """(message, code) from an OpenAI-style error body, else the start of the body text."""
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return str(inner.get("message") or "")[:300], str(inner.get("code") or inner.get("type") or "")
        if isinstance(inner, str):
            return inner[:300], ""
    try:
        text = exc.response.text
    except Exception:  # noqa: BLE001 - a body that cannot be read has no detail to give
        text = ""
    return " ".join(text.split())[:300], ""


class _Endpoint:
    """The SDK clients of one base URL and key, each with its own connection pool.

    httpx's connection pool does work proportional to its open connections on every request, so
    one pool serving 256 calls at once costs ~6 ms of CPU per call, and pools of 16 cost ~1.7 ms
    (measured on the stand-in, benchmarks/bench_llm.py). So calls are spread over SDK clients of
    up to CONNECTIONS_PER_POOL calls each; one is opened when every open one is full, not up
    front, so a run's first calls do not wait for clients it may never need. They all share one
    TLS context (`shared_ssl_context`).
    """

    def __init__(self, url: str, key: str | None, max_pools: int) -> None:
        self.url = url
        self.key = key
        self.max_pools = max(1, max_pools)
        self.clients: list[openai.AsyncOpenAI] = []
        self.in_flight: list[int] = []
        # Seconds from send to answer of the last HEDGE_WINDOW answered requests, per role.
        self.latencies: dict[str, collections.deque[float]] = {}

    def record_latency(self, role: str, seconds: float) -> None:
        window = self.latencies.get(role)
        if window is None:
            window = self.latencies[role] = collections.deque(maxlen=HEDGE_WINDOW)
        window.append(seconds)

    def hedge_after(self, role: str, floor: float | None, timeout: float) -> float | None:
        """Seconds after which a request of `role` gets a hedge; None: no hedge (off, too few
        answers known yet, or not before the timeout)."""
        if floor is None:
            return None
        window = self.latencies.get(role)
        if window is None or len(window) < HEDGE_MIN_SAMPLES:
            return None
        after = max(HEDGE_MEDIAN_FACTOR * statistics.median(window), floor)
        return after if after < timeout else None

    def pick(self) -> int:
        """The client for the next call: the least busy, or a new one when every open one is full."""
        n = len(self.clients)
        if n:
            best = 0 if n == 1 else min(range(n), key=self.in_flight.__getitem__)
            if self.in_flight[best] < CONNECTIONS_PER_POOL or n >= self.max_pools:
                return best
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
            max_connections=1000, max_keepalive_connections=2 * CONNECTIONS_PER_POOL
        )
        client = openai.AsyncOpenAI(
            base_url=self.url,
            api_key=self.key or "EMPTY",  # local servers want no key, the SDK wants some string
            max_retries=0,  # retries are ours
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, verify=shared_ssl_context()),
        )
        self.clients.append(client)
        self.in_flight.append(0)
        return n

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


class _LoopState:
    """What belongs to one event loop: the limiters and the HTTP clients (per base URL and key)."""

    def __init__(self, config: LLMConfig, pauses: Pauses) -> None:
        self.limits = Limits(config, pauses)
        self.endpoints: dict[tuple[str, str | None], _Endpoint] = {}


class LLMClient:
    """Chat calls for the configured roles. Use `async with LLMClient(config) as llm:` (or call
    `aclose()`), from any number of tasks; an instance may serve several event loops in turn."""

    def __init__(
        self,
        config: LLMConfig,
        recorder: Recorder | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self._environ = os.environ if environ is None else environ
        self.router = Router(config.cooldown_s, config.failures_to_cooldown)
        self.pauses = Pauses()
        self.totals = Totals()  # every call of this client, in memory
        self.hedges = 0  # second requests sent for calls running long (module docstring)
        self.hedge_wins = 0  # of those, the ones that answered first
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._secrets: set[str] = set()

    # -- plumbing ----------------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(self.config, self.pauses)
        return state

    @property
    def max_in_flight(self) -> int:
        """The most calls this client had in flight at once on any one event loop."""
        return max((s.limits.max_in_flight for s in self._states.values()), default=0)

    def _endpoint(self, state: _LoopState, url: str, rc: RoleConfig) -> _Endpoint:
        endpoint = state.endpoints.get((url, rc.api_key_env))
        if endpoint is None:
            key = self._environ.get(rc.api_key_env) if rc.api_key_env else None
            if key:
                self._secrets.add(key)
            expected = min(self.config.max_concurrency or 256, rc.max_concurrency or 256)
            pools = math.ceil(expected / CONNECTIONS_PER_POOL)
            endpoint = state.endpoints[(url, rc.api_key_env)] = _Endpoint(url, key, pools)
        return endpoint

    async def aclose(self) -> None:
        """Close the HTTP clients opened on the current event loop."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop, None)
        if state is not None:
            for endpoint in state.endpoints.values():
                await endpoint.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    # -- calls -------------------------------------------------------------------------------------

    async def chat(
        self,
        role: str,
        messages: Sequence[Message],
        *,
        affinity: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
        top_logprobs: int | None = None,
        **overrides: Any,
    ) -> ChatResult:
        """One chat completion for `role`.

        `affinity` keeps calls with the same key (a question id) on one base URL. `json_schema`
        asks for structured output where the role's `json_mode` says the endpoint supports it.
        `overrides` replace the role's `model`, `temperature`, `max_tokens`, `timeout_s`,
        `max_attempts`; anything else (`stop`, `top_p`, `seed`, ...) goes into the request body.
        `top_logprobs=k` (0-20) asks for each generated token's log prob and its `k` likeliest
        alternatives (`logprobs: true, top_logprobs: k`); they come back in `result.logprobs`, None
        when the endpoint sent none. An endpoint that refuses the fields answers 400 (`LLMError`).
        Raises `LLMError` when the endpoint refuses the call or the retries run out.
        """
        if top_logprobs is not None and (
            isinstance(top_logprobs, bool)
            or not isinstance(top_logprobs, int)
            or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS
        ):
            raise ValueError(
                f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top_logprobs!r}"
            )
        rc = self.config.role(role)
        settings = {k: v for k, v in overrides.items() if k in _ROLE_OVERRIDES}
        if settings:
            rc = replace(rc, **settings)
        extra = {k: v for k, v in overrides.items() if k not in _ROLE_OVERRIDES}
        if top_logprobs is not None:
            extra.update(logprobs=True, top_logprobs=top_logprobs)
        body = self._body(rc, messages, json_schema, extra)
        estimated = estimate_message_tokens(messages) + (rc.max_tokens or 0)

        call_id = uuid.uuid4().hex
        started_at = datetime.now(timezone.utc)
        started = time.perf_counter()
        attempts = 0
        url = rc.base_urls[0]

        async def attempt() -> tuple[_Answer, str]:
            nonlocal attempts, url
            attempts += 1
            url = self.router.route(rc.base_urls, affinity)
            return await self._attempt(role, rc, url, body, estimated, retry=attempts > 1), url

        try:
            try:
                answer, url = await attempt()
            except _Retryable as first:
                answer, url = await self._retry(role, rc, first, attempt)
        except (_Retryable, LLMError) as exc:
            latency = time.perf_counter() - started
            error = self._final_error(exc, role, rc, url, attempts)
            self._record(
                CallRecord(
                    call_id=call_id,
                    run_id=None,
                    trace_id=trace_id,
                    role=role,
                    model=rc.model,
                    base_url=safe_url(url),
                    prompt_tokens=0,
                    completion_tokens=0,
                    latency_s=latency,
                    cost_usd=None,
                    attempts=attempts,
                    status=Status.FAILED,
                    error=str(error),
                    started_at=started_at.isoformat(),
                )
            )
            raise error from None
        latency = time.perf_counter() - started
        text, finish_reason = answer.text, answer.finish_reason
        if answer.prompt_tokens is not None and answer.completion_tokens is not None:
            usage = Usage(answer.prompt_tokens, answer.completion_tokens)
        else:
            usage = Usage(estimate_message_tokens(messages), estimate_tokens(text), estimated=True)
        cost = self.config.prices.cost(rc.model, usage.prompt_tokens, usage.completion_tokens, url)
        if cost is None and answer.model:
            cost = self.config.prices.cost(answer.model, usage.prompt_tokens, usage.completion_tokens, url)
        result = ChatResult(
            text=text,
            finish_reason=finish_reason,
            usage=usage,
            latency_s=latency,
            cost_usd=cost,
            model=rc.model,
            base_url=safe_url(url),
            attempts=attempts,
            role=role,
            call_id=call_id,
            logprobs=answer.logprobs,
        )
        self._record(
            CallRecord(
                call_id=call_id,
                run_id=None,
                trace_id=trace_id,
                role=role,
                model=rc.model,
                base_url=result.base_url,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_s=latency,
                cost_usd=cost,
                attempts=attempts,
                status=Status.DONE,
                error=None,
                started_at=started_at.isoformat(),
                finish_reason=finish_reason,
            )
        )
        return result

    async def chat_json(
        self,
        role: str,
        messages: Sequence[Message],
        schema: Mapping[str, Any],
        *,
        affinity: str | None = None,
        trace_id: str | None = None,
        **overrides: Any,
    ) -> ChatResult:
        """A chat call whose answer must be a JSON object fitting `schema` (its `required` keys and
        top-level property types); the object is in `result.data`.

        The text is read leniently (code fences, thinking, prose around it). If no fitting object
        is there, raises `MalformedOutput` with the raw text; the caller may retry with a
        stricter prompt.
        """
        result = await self.chat(
            role, messages, affinity=affinity, json_schema=schema, trace_id=trace_id, **overrides
        )
        try:
            data = parse_json_output(result.text, schema)
        except JSONExtractError as exc:
            cut = " (the answer was cut off at max_tokens; raise it)" if result.truncated else ""
            raise MalformedOutput(
                f"llm {role}: {exc}{cut}; ask for the JSON more strictly or retry",
                raw=result.text,
                result=result,
                reason=str(exc),
            ) from None
        return replace(result, data=data)

    # -- one attempt -------------------------------------------------------------------------------

    def _body(
        self,
        rc: RoleConfig,
        messages: Sequence[Message],
        json_schema: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": rc.model, "messages": list(messages)}
        if rc.temperature is not None:
            body["temperature"] = rc.temperature
        if rc.max_tokens is not None:
            limit_name = (
                "max_completion_tokens" if _COMPLETION_TOKENS_MODELS.match(rc.model) else "max_tokens"
            )
            body[limit_name] = rc.max_tokens
        if json_schema is not None and rc.json_mode != "none":
            if rc.json_mode == "json_schema":
                name = _SCHEMA_NAME.sub("_", str(json_schema.get("title") or "output"))[:64] or "output"
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": dict(json_schema), "strict": False},
                }
            else:
                body["response_format"] = {"type": "json_object"}
        body.update(rc.extra_body)
        body.update(extra)
        return body

    async def _attempt(
        self, role: str, rc: RoleConfig, url: str, body: dict[str, Any], estimated: int, *, retry: bool
    ) -> _Answer:
        """One attempt; a `retry` queues for its slot ahead of calls not yet sent (`limits`)."""
        state = self._state()
        endpoint = self._endpoint(state, url, rc)
        hedge_after = endpoint.hedge_after(role, rc.hedge_after_s, rc.timeout_s)
        if hedge_after is None:
            return await self._send(state, endpoint, role, rc, url, body, estimated, first=retry)
        return await self._hedged(hedge_after, state, endpoint, role, rc, url, body, estimated, retry)

    async def _hedged(
        self,
        hedge_after: float,
        state: _LoopState,
        endpoint: _Endpoint,
        role: str,
        rc: RoleConfig,
        url: str,
        body: dict[str, Any],
        estimated: int,
        retry: bool,
    ) -> _Answer:
        """One attempt as up to two identical requests: the second sent if the first is still
        unanswered `hedge_after` seconds after it was sent (time queued for a slot does not count);
        the first answer wins and the other is cancelled. When both fail, the first failure is
        raised (the one that says what happened first)."""
        sent = asyncio.Event()
        request = self._send(state, endpoint, role, rc, url, body, estimated, sent, first=retry)
        tasks: list[asyncio.Task[_Answer]] = [asyncio.create_task(request)]
        try:
            if not sent.is_set():
                waiter = asyncio.create_task(sent.wait())
                try:
                    await asyncio.wait((tasks[0], waiter), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            if (await asyncio.wait(tasks, timeout=hedge_after))[0]:
                return tasks[0].result()
            self.hedges += 1
            log.debug("llm %s: no answer from %s after %.1fs; hedging", role, safe_url(url), hedge_after)
            hedge = self._send(state, endpoint, role, rc, url, body, estimated, hedge=True)
            tasks.append(asyncio.create_task(hedge))
            pending = set(tasks)
            failure: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.index):
                    exc = task.exception()
                    if exc is None:
                        if task is tasks[1]:
                            self.hedge_wins += 1
                        return task.result()
                    failure = failure or exc
            assert failure is not None
            raise failure
        finally:
            for task in tasks:
                task.cancel()
            # Let the losers unwind (their slot, router and pool bookkeeping) and collect their errors.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(
        self,
        state: _LoopState,
        endpoint: _Endpoint,
        role: str,
        rc: RoleConfig,
        url: str,
        body: dict[str, Any],
        estimated: int,
        sent_event: asyncio.Event | None = None,
        *,
        first: bool = False,
        hedge: bool = False,
    ) -> _Answer:
        """One request: wait for the limits and a slot (`first`: ahead of calls without one; a
        `hedge` rides on its call's), send (setting `sent_event`), read the answer."""
        async with state.limits.slot(role, url, estimated, first=first, hedge=hedge) as grant:
            self.router.begin(url)
            pool = endpoint.pick()
            endpoint.in_flight[pool] += 1
            ok = False
            fault = False
            sent = time.monotonic()
            if sent_event is not None:
                sent_event.set()
            try:
                # `post` with the body as is: the typed `chat.completions.create` would spend about
                # a millisecond of CPU per call transforming the params and building models.
                data = await endpoint.clients[pool].post(
                    "/chat/completions", cast_to=object, body=body, options={"timeout": rc.timeout_s}
                )
                answer = _Answer.parse(data, logprobs=body.get("logprobs") is True)
                if answer is None:
                    fault = True
                    raise _Retryable(f"{safe_url(url)} answered without a chat completion")
                known = answer.prompt_tokens is not None and answer.completion_tokens is not None
                grant.settle(answer.prompt_tokens + answer.completion_tokens if known else None)  # type: ignore[operator]
                endpoint.record_latency(role, time.monotonic() - sent)
                self.pauses.answered(url)
                ok = True
                return answer
            except openai.APITimeoutError:
                fault = True
                raise _Retryable(f"no answer from {safe_url(url)} within {rc.timeout_s:g}s") from None
            except openai.APIConnectionError as exc:
                fault = True
                cause = exc.__cause__ or exc.__context__
                detail = f" ({type(cause).__name__})" if cause is not None else ""
                raise _Retryable(f"cannot reach {safe_url(url)}{detail}") from None
            except openai.APIStatusError as exc:
                fault = exc.status_code >= 500
                if exc.status_code != 429:
                    self.pauses.answered(url)
                raise self._status_error(exc, role, rc, url) from None
            except ValueError as exc:
                # A body that says it is JSON but is not.
                fault = True
                raise _Retryable(
                    f"{safe_url(url)} sent a malformed response ({type(exc).__name__})"
                ) from None
            finally:
                endpoint.in_flight[pool] -= 1
                self.router.end(url, ok=ok, endpoint_fault=fault)

    def _status_error(self, exc: openai.APIStatusError, role: str, rc: RoleConfig, url: str) -> Exception:
        status = exc.status_code
        where = safe_url(url)
        detail, code = _error_detail(exc)
        detail = self._redact(detail)
        retry_after = parse_retry_after(exc.response.headers)
        if status == 429:
            if retry_after is None or code == "insufficient_quota" or retry_after > rc.max_retry_after_s:
                self.pauses.answered(url, refused=True)  # no pause asked for (or given)
            if code == "insufficient_quota":
                return LLMError(
                    f"llm {role}: {where} says the account's quota is used up (HTTP 429 insufficient_quota); "
                    "add credit or use another key or endpoint",
                    role=role, base_url=where, status=status,
                )  # fmt: skip
            if retry_after is not None:
                if retry_after > rc.max_retry_after_s:
                    return LLMError(
                        f"llm {role}: {where} is rate limiting (HTTP 429) and asks to wait {retry_after:.0f}s, "
                        f"more than max_retry_after_s={rc.max_retry_after_s:g}; lower rpm/tpm or try later",
                        role=role, base_url=where, status=status, retryable=True,
                    )  # fmt: skip
                if not self.pauses.pause(url, retry_after):
                    log.debug(
                        "llm %s: %s asked to wait %.1fs (HTTP 429) but answers most calls; only this call waits",
                        role, where, retry_after,
                    )  # fmt: skip
            return _Retryable(f"HTTP 429 from {where}", status=status, wait=retry_after)
        if status >= 500 or status in (408, 409):
            return _Retryable(f"HTTP {status} from {where}", status=status, wait=retry_after)
        upper = role.upper()
        if status == 401:
            key_hint = (
                f"set {rc.api_key_env} to a valid key"
                if rc.api_key_env
                else f"set OPENAI_API_KEY or ORES_{upper}_API_KEY_ENV to the variable holding the key"
            )
            message = f"llm {role}: {where} rejected the API key (HTTP 401); {key_hint}"
        elif status == 403:
            message = f"llm {role}: {where} refused access (HTTP 403: {detail or 'forbidden'}); check the key's permissions for model {rc.model!r}"
        elif status == 404:
            message = (
                f"llm {role}: model {rc.model!r} not found at {where} (HTTP 404); set ORES_{upper}_MODEL "
                f"or --model to a model listed at {where}/models, and check that the base URL ends in /v1"
            )
        else:
            message = (
                f"llm {role}: {where} refused the request (HTTP {status}: {detail or 'no detail'}); "
                f"check the request parameters and the prompt length for model {rc.model!r}"
            )
        return LLMError(message, role=role, base_url=where, status=status)

    def _final_error(
        self, exc: BaseException, role: str, rc: RoleConfig, url: str, attempts: int
    ) -> LLMError:
        if isinstance(exc, LLMError):
            exc.attempts = attempts
            return exc
        where = safe_url(url)
        status = exc.status if isinstance(exc, _Retryable) else None
        return LLMError(
            f"llm {role}: gave up after {attempts} attempt{'s' * (attempts != 1)}, the last: {self._redact(str(exc))}; "
            f"check that {where} is up and serves {rc.model!r}, or raise timeout_s / max_attempts",
            role=role,
            base_url=where,
            status=status,
            attempts=attempts,
            retryable=True,
        )

    # -- retry policy and bookkeeping --------------------------------------------------------------

    async def _retry(
        self, role: str, rc: RoleConfig, first: _Retryable, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """The attempts after a first one that failed with `first`.

        Tenacity starts only here: on the happy path its machinery cost ~50 us of CPU per call,
        a third of the client's own bookkeeping. Its loop begins by replaying `first` as attempt
        1, so the waits (Retry-After, backoff by attempt number), the stop and the log lines are
        what they would be had tenacity made the first attempt itself.
        """
        replay: _Retryable | None = first

        async def again() -> T:
            nonlocal replay
            if replay is not None:
                failed, replay = replay, None
                raise failed
            return await attempt()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(rc.max_attempts),
            wait=self._waiter(rc),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry(role, rc),
            sleep=wait_out,  # a question waiting here lends its place (llm/waiting.py)
            reraise=True,
        )
        return await retrying(again)

    @staticmethod
    def _waiter(rc: RoleConfig) -> Any:
        backoff = wait_random_exponential(multiplier=rc.backoff_base_s, max=rc.backoff_max_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, _Retryable) and exc.wait is not None:
                # Not before the server asked; a little jitter so callers do not return in a herd.
                return exc.wait * (1.0 + 0.1 * random.random())
            return backoff(state)

        return wait

    def _log_retry(self, role: str, rc: RoleConfig) -> Any:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "llm %s: %s; retrying in %.1fs (attempt %d of %d)",
                role,
                self._redact(str(exc)),
                wait,
                state.attempt_number + 1,
                rc.max_attempts,
            )

        return before_sleep

    def _record(self, record: CallRecord) -> None:
        self.totals.add(record)
        if self.recorder is not None:
            self.recorder.append(record)
