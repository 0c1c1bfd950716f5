"""A scripted stand-in for an OpenAI-compatible chat endpoint, for tests and benchmarks only.

    with StandinLLM() as srv:                       # http://127.0.0.1:<ephemeral>/v1
        srv.push(rate_limited(retry_after=0.3), server_error(), ok("hello"))
        ...                                          # the next three requests get these answers
        srv.requests[0].headers["authorization"]     # every request, with headers and JSON body

It is a small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) on 127.0.0.1 in a
daemon thread, so it answers hundreds of concurrent connections cheaply. Replies come from the
queue filled by `push`, else from `script(request)` if given, else an echo of the last user
message. It counts calls in flight (`max_in_flight`) and stops by itself after `lifetime` seconds.

`hold=predicate` keeps every chat request for which `predicate(request)` is true waiting (unanswered,
in flight) until the test calls `release()`; `wait_held(n)` waits until `n` are waiting. A test
thereby stops a client at a known point instead of racing it:

    planner_calls = itertools.count()
    with StandinLLM(script, hold=lambda r: is_planner(r) and next(planner_calls) >= 2) as srv:
        ...                                          # start the client
        assert srv.wait_held(2)                      # two calls answered, the next two held
        ...                                          # interrupt it, look at what it kept
        srv.release()                                # answer the held ones and hold no more

`python tests/standin_llm.py --latency 0.05` runs one in its own process (the benchmark uses
that, so the server does not share a core and the GIL with the client it measures); with
`--script synth_support:Teacher --script-kwargs '{"latency": 0.2}'` it answers from that script
(a module on this folder's path, called with the keyword arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip


@dataclass
class Received:
    """One request the stand-in received. `headers` have lowercase names."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    port: int

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def last_user_text(self) -> str:
        try:
            messages = self.json().get("messages") or []
        except (ValueError, AttributeError):
            return ""
        for message in reversed(messages):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                return message["content"]
        return ""


@dataclass
class Reply:
    """What to answer. A chat completion by default; `body` sends raw bytes instead; `drop`
    closes the connection without an answer; `delay` waits first (a slow or hung server)."""

    status: int = 200
    text: str | None = None  # None: echo the last user message
    finish_reason: str = "stop"
    usage: tuple[int, int] | None | bool = True  # True: chars/4; None/False: leave usage out
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes | None = None
    content_type: str = "application/json"
    drop: bool = False
    model: str | None = None


def ok(text: str | None = None, **kwargs: Any) -> Reply:
    return Reply(text=text, **kwargs)


def truncated(text: str = "The answer was cut off in the mid", **kwargs: Any) -> Reply:
    return Reply(text=text, finish_reason="length", **kwargs)


def slow(seconds: float, text: str | None = None) -> Reply:
    return Reply(text=text, delay=seconds)


def error(status: int, message: str = "error", code: str | None = None, **kwargs: Any) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return Reply(status=status, body=json.dumps(body).encode(), **kwargs)


def rate_limited(retry_after: float | str | None = 1, code: str | None = "rate_limit_exceeded") -> Reply:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return error(429, "Rate limit reached", code=code, headers=headers)


def server_error(status: int = 500) -> Reply:
    return error(status, "The server had an error while processing your request")


def raw(body: bytes | str, status: int = 200, content_type: str = "application/json") -> Reply:
    return Reply(
        status=status, body=body.encode() if isinstance(body, str) else body, content_type=content_type
    )


def dropped() -> Reply:
    return Reply(drop=True)


def _completion(reply: Reply, request: Received, counter: int) -> dict[str, Any]:
    try:
        model = reply.model or request.json().get("model") or "standin"
    except (ValueError, AttributeError):
        model = "standin"
    text = reply.text if reply.text is not None else f"echo: {request.last_user_text()}"
    data: dict[str, Any] = {
        "id": f"chatcmpl-standin-{counter}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    if reply.usage is True:
        prompt = math.ceil(len(request.body) / 4)
        completion = math.ceil(len(text) / 4)
        data["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    elif isinstance(reply.usage, tuple):
        prompt, completion = reply.usage
        data["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return data


class StandinLLM:
    """The stand-in endpoint. `url` is its base URL (ending in /v1)."""

    def __init__(
        self,
        script: Callable[[Received], Reply] | None = None,
        *,
        latency: float = 0.0,
        lifetime: float = 60.0,
        record: bool = True,
        hold: Callable[[Received], bool] | None = None,
    ) -> None:
        self.script = script
        self.latency = latency
        self.lifetime = lifetime
        self.record = record
        # chat requests it says yes to wait until release(); called in arrival order, one at a time
        self.hold = hold
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.n_requests = 0
        self.held = 0  # requests waiting for release() now
        self._released = False
        self._queue: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # -- control ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: Reply) -> StandinLLM:
        """Answer the next requests with these, in order (then fall back to the script or echo)."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def wait_held(self, n: int, timeout: float = 60.0) -> bool:
        """Wait until at least `n` requests are held; False if that did not happen within `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= n, timeout)

    def release(self) -> None:
        """Answer the held requests now and hold no more."""
        with self._lock:
            self._released = True
        if self._loop is not None and self._gate is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._gate.set)

    def chat_requests(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def __enter__(self) -> StandinLLM:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stand-in LLM server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=5)

    # -- serving ---------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._gate = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=1 << 22, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    def _next_reply(self, request: Received) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.script is not None:
            return self.script(request)
        return Reply(delay=self.latency)

    async def _hold_if_asked(self, request: Received) -> None:
        if self.hold is None or self._released or self._gate is None or not self.hold(request):
            return
        with self._changed:
            self.held += 1
            self._changed.notify_all()
        try:
            await self._gate.wait()
        finally:
            with self._changed:
                self.held -= 1
                self._changed.notify_all()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                request = Received(method, path, headers, body, time.monotonic(), self.port)
                keep_alive = headers.get("connection", "").lower() != "close"
                if not await self._answer(request, writer):
                    return
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, request: Received, writer: asyncio.StreamWriter) -> bool:
        with self._lock:
            self.n_requests += 1
            counter = self.n_requests
            if self.record:
                self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.path.rstrip("/").endswith("/models"):
                reply = raw(json.dumps({"object": "list", "data": [{"id": "standin", "object": "model"}]}))
            elif request.path.rstrip("/").endswith("/chat/completions"):
                await self._hold_if_asked(request)
                reply = self._next_reply(request)
            else:
                reply = error(404, f"no route {request.path}")
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                return False
            body = (
                reply.body
                if reply.body is not None
                else json.dumps(_completion(reply, request, counter)).encode()
            )
            head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}",
                    f"Content-Type: {reply.content_type}", f"Content-Length: {len(body)}"]  # fmt: skip
            head += [f"{k}: {v}" for k, v in reply.headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            return True
        finally:
            with self._lock:
                self.in_flight -= 1


# -- in its own process (benchmarks) ---------------------------------------------------------------


@contextlib.contextmanager
def standin_process(
    latency: float = 0.05,
    lifetime: float = 300.0,
    script: str | None = None,
    script_kwargs: dict[str, Any] | None = None,
    *,
    import_path: Sequence[str | Path] = (),
    quiet: bool = False,
) -> Iterator[str]:
    """A stand-in with a fixed latency in a child process; yields its base URL, stops it on exit.
    `script` ("module:factory") answers instead, built as `factory(**script_kwargs)` in the child;
    `import_path` are folders the child imports it from besides tests/. `quiet` drops the child's
    stderr (hung replies, cancelled when it stops, print tracebacks)."""
    command = [sys.executable, __file__, "--latency", str(latency), "--lifetime", str(lifetime)]
    if script:
        command += ["--script", script, "--script-kwargs", json.dumps(script_kwargs or {})]
    env = None
    if import_path:
        paths = [*map(str, import_path), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("http://"):
            raise RuntimeError(f"the stand-in process did not start: {line!r}")
        yield line.strip()
    finally:
        if proc.stdin:
            proc.stdin.close()  # the child stops when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--lifetime", type=float, default=300.0)
    parser.add_argument("--script", help="module:factory whose result answers (e.g. synth_support:Teacher)")
    parser.add_argument("--script-kwargs", default="{}", help="JSON keyword arguments of the factory")
    args = parser.parse_args()
    script = None
    if args.script:
        module, _, name = args.script.partition(":")
        script = getattr(importlib.import_module(module), name)(**json.loads(args.script_kwargs))
    with StandinLLM(script, latency=args.latency, lifetime=args.lifetime, record=False) as srv:
        print(srv.url, flush=True)
        watcher = threading.Thread(target=lambda: (sys.stdin.read(), srv.stop()), daemon=True)
        watcher.start()
        srv._thread.join()


if __name__ == "__main__":
    main()
