"""The LLM token bucket on a fake clock: refill stops at capacity however long the idle, and a call
that fails gives its whole token estimate back.

The clock of `oresearch_cli.llm.limits` is replaced by one that moves only when told, so no
assertion depends on how fast this machine is: a bucket that should be empty stays empty (a
waiter never gets through, caught by a short timeout), and a bucket that should be full lets a
full-size request through at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from oresearch_cli.llm import limits as limits_module
from oresearch_cli.llm.config import LLMConfig, RoleConfig
from oresearch_cli.llm.limits import Limits, Pauses, TokenBucket

URL = "http://llm.test/v1"


class FrozenClock:
    """Stands in for the `time` module in `oresearch_cli.llm.limits`: monotonic() moves only on advance()."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(limits_module, "time", frozen)
    return frozen


async def _goes_at_once(waiter: Awaitable[object]) -> bool:
    """True if `waiter` completes without the (frozen) clock moving; False if it has to wait."""
    try:
        await asyncio.wait_for(waiter, timeout=0.5)
    except TimeoutError:
        return False
    return True


def test_a_long_idle_refills_only_up_to_capacity(clock: FrozenClock) -> None:
    async def main() -> tuple[bool, bool]:
        bucket = TokenBucket(per_minute=60)  # 1 token a second, 60 at most
        await bucket.acquire(60)  # empty it
        clock.advance(3600)  # an hour idle: 3,600 tokens' worth of refill, but the cap is 60
        full = await _goes_at_once(bucket.acquire(60))
        burst_beyond = await _goes_at_once(bucket.acquire(1))
        return full, burst_beyond

    full, burst_beyond = asyncio.run(main())
    assert full, "after an idle hour a full bucket's worth must go at once"
    assert not burst_beyond, "an idle period let a burst above the bucket's capacity through"


def test_refill_is_proportional_below_capacity(clock: FrozenClock) -> None:
    async def main() -> tuple[bool, bool]:
        bucket = TokenBucket(per_minute=60)
        await bucket.acquire(60)
        clock.advance(10)  # 10 tokens back
        ten = await _goes_at_once(bucket.acquire(10))
        one_more = await _goes_at_once(bucket.acquire(1))
        return ten, one_more

    assert asyncio.run(main()) == (True, False)


def test_a_give_back_never_lifts_the_bucket_above_capacity(clock: FrozenClock) -> None:
    async def main() -> tuple[bool, bool]:
        bucket = TokenBucket(per_minute=60)
        bucket.adjust(-500)  # a call used far fewer tokens than estimated, while the bucket was full
        full = await _goes_at_once(bucket.acquire(60))
        beyond = await _goes_at_once(bucket.acquire(1))
        return full, beyond

    assert asyncio.run(main()) == (True, False)


def _limits(tpm: float) -> Limits:
    role = RoleConfig(name="worker", model="m", base_urls=(URL,), api_key_env=None, tpm=tpm)
    return Limits(LLMConfig(roles={"worker": role}, max_concurrency=None), Pauses())


def test_a_failed_call_gives_its_whole_estimate_back(clock: FrozenClock) -> None:
    limits = _limits(tpm=600)

    async def call(estimate: int, fail: bool = False, used: int | None = None) -> None:
        async with limits.slot("worker", URL, estimate) as grant:
            if fail:
                raise ConnectionError("the endpoint dropped the call")
            grant.settle(used)

    async def main() -> tuple[bool, bool]:
        with pytest.raises(ConnectionError):
            await call(600, fail=True)  # takes the whole minute's budget, then fails
        # Nothing was used: the budget is whole again, with the clock standing still.
        whole_again = await _goes_at_once(call(600, used=600))
        # A call that did use its tokens keeps them: the next one has to wait.
        after_success = await _goes_at_once(call(1, used=1))
        return whole_again, after_success

    whole_again, after_success = asyncio.run(main())
    assert whole_again, "a failed call kept (part of) its token estimate"
    assert not after_success


def test_a_call_settles_to_its_reported_usage(clock: FrozenClock) -> None:
    limits = _limits(tpm=600)

    async def call(estimate: int, used: int | None) -> None:
        async with limits.slot("worker", URL, estimate) as grant:
            grant.settle(used)

    async def main() -> tuple[bool, bool]:
        await call(600, used=100)  # estimated the whole budget, used a sixth: 500 come back
        fits = await _goes_at_once(call(500, used=500))
        over = await _goes_at_once(call(1, used=1))
        return fits, over

    assert asyncio.run(main()) == (True, False)
