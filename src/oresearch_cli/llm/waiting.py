"""Waiting out a retry, and telling whoever runs the call.

A call that must wait before it is tried again (a backoff, a 429's Retry-After, a paused endpoint)
sleeps through `wait_out`. A caller that holds something scarce for the call's sake can lend it
out meanwhile: `ores synth` and `ores eval run` let another question research while one waits out
a retry (stages/research_run.py), so 20% failing calls do not leave most of the run's places
asleep. The hook is a context variable, so it follows the question's tasks (a question's parallel
subtasks inherit it) and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar, Token

LendHook = Callable[[], AbstractAsyncContextManager[None]]
_LEND: ContextVar[LendHook | None] = ContextVar("ores_lend_while_waiting", default=None)


def lend_while_waiting(hook: LendHook | None) -> Token[LendHook | None]:
    """Set the hook that retry waits in this context run inside; `reset_lend(token)` undoes it."""
    return _LEND.set(hook)


def reset_lend(token: Token[LendHook | None]) -> None:
    _LEND.reset(token)


async def wait_out(seconds: float) -> None:
    """Sleep `seconds` before a call is tried again, inside the context's hook if there is one."""
    hook = _LEND.get()
    if hook is None or seconds <= 0:
        await asyncio.sleep(max(0.0, seconds))
        return
    async with hook():
        await asyncio.sleep(seconds)
