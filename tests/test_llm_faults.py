"""Faults cost little: a call waiting to retry holds no concurrency slot, a stray 429 does not stall
every caller, retries go first, and hedging answers a hung request from a second one. Against the
stand-in endpoint. What is asserted is ordering (which request reached a server first) and, where a
wait is the point, a lower bound (Retry-After honoured); never speed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from oresearch_cli.llm import LLMClient, LLMError, load_config
from oresearch_cli.llm.limits import PAUSE_MIN_ANSWERS, Pauses, Slots

from standin_llm import Received, StandinLLM, error, rate_limited

ENV = {"OPENAI_API_KEY": "sk-test-faults"}


def config(url: str, **settings: Any):
    base = {"model": "gpt-4o-mini", "base_url": url, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    return load_config(overrides={**base, **settings}, environ=ENV)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def sent(srv: StandinLLM, text: str) -> list[Received]:
    """The chat requests `srv` received whose last user message is `text`, in arrival order."""
    return [r for r in srv.chat_requests() if r.last_user_text() == text]


async def until(predicate: Any) -> None:
    """Yield to the event loop until `predicate()` holds (failing, rather than hanging, if it never does)."""
    for _ in range(6000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("what the test waits for did not happen")


# -- slots are held only while a request is in flight -----------------------------------------------


def test_a_call_waiting_out_retry_after_holds_no_slot(caplog: pytest.LogCaptureFixture) -> None:
    """Concurrency 1, an endpoint that has been answering: while the first call waits out its
    429's Retry-After, a second call is sent and answered (a stray 429 pauses no one else); the
    first is retried after, having waited what was asked."""
    caplog.set_level("WARNING", logger="oresearch_cli.llm")
    with StandinLLM() as srv:
        cfg = config(srv.url, max_concurrency=1)

        async def main() -> tuple[Any, Any]:
            async with LLMClient(cfg, environ=ENV) as llm:
                for i in range(PAUSE_MIN_ANSWERS):  # an endpoint known to serve
                    await llm.chat("worker", user(f"warm-up {i}"))
                srv.push(rate_limited(retry_after=1))
                first = asyncio.create_task(llm.chat("worker", user("first")))
                await until(lambda: "HTTP 429" in caplog.text)  # the client has the 429: it waits
                assert llm.pauses.remaining(srv.url) == 0  # ... alone
                second = await llm.chat("worker", user("second"))
                assert len(sent(srv, "first")) == 1  # the first has not been retried yet
                return await first, second

        first, second = asyncio.run(main())
        refused, retried = sent(srv, "first")
        (answered,) = sent(srv, "second")
    assert first.attempts == 2 and second.attempts == 1
    assert refused.at < answered.at < retried.at
    assert retried.at - refused.at >= 1.0  # Retry-After honoured by the call that got the 429


def test_a_call_that_backs_off_after_a_5xx_holds_no_slot(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="oresearch_cli.llm")
    with StandinLLM() as srv:
        cfg = config(srv.url, max_concurrency=1)
        srv.push(error(503, "busy", headers={"Retry-After": "1"}))

        async def main() -> None:
            async with LLMClient(cfg, environ=ENV) as llm:
                first = asyncio.create_task(llm.chat("worker", user("first")))
                await until(lambda: "HTTP 503" in caplog.text)
                await llm.chat("worker", user("second"))
                assert len(sent(srv, "first")) == 1
                await first

        asyncio.run(main())
        refused, retried = sent(srv, "first")
        (answered,) = sent(srv, "second")
    assert refused.at < answered.at < retried.at


def test_a_queued_call_whose_endpoint_pauses_gives_its_slot_back() -> None:
    """Concurrency 1; the worker's endpoint A pauses (429) while a worker call and a planner call
    (endpoint B) queue for the slot, the worker call first. It must not sit on the slot through A's
    pause: the planner call reaches B before the queued worker call reaches A."""
    with StandinLLM(hold=lambda r: True) as a, StandinLLM() as b:
        cfg = config(a.url, max_concurrency=1, **{"planner.base_url": b.url})
        a.push(rate_limited(retry_after=1))

        async def main() -> None:
            async with LLMClient(cfg, environ=ENV) as llm:
                x = asyncio.create_task(llm.chat("worker", user("x")))
                assert await asyncio.to_thread(a.wait_held, 1, 10.0)  # x is in flight, held
                y = asyncio.create_task(llm.chat("worker", user("y")))
                await asyncio.sleep(0.05)  # y queues on the slot before z
                z = asyncio.create_task(llm.chat("planner", user("z")))
                await asyncio.sleep(0.05)
                a.release()  # x gets its 429: A pauses for 1 s with y and z queued
                await asyncio.gather(x, y, z)

        asyncio.run(main())
        (y_sent,) = sent(a, "y")
        (z_sent,) = sent(b, "z")
        refused, _retried = sent(a, "x")
    assert z_sent.at < y_sent.at
    assert y_sent.at - refused.at >= 1.0  # y still waited out A's pause


# -- who a 429 pauses ---------------------------------------------------------------------------------


def test_a_429_pauses_every_caller_unless_the_endpoint_answers_most_calls() -> None:
    url = "http://a.test/v1"
    fresh = Pauses()
    assert fresh.pause(url, 5.0) and fresh.remaining(url) > 4  # nothing known: everyone waits

    serving = Pauses()
    for _ in range(PAUSE_MIN_ANSWERS):
        serving.answered(url)
    assert not serving.pause(url, 5.0) and serving.remaining(url) == 0  # 1 of 9: a stray refusal
    assert not serving.pause(url, 5.0)  # 2 of 10
    assert serving.pause(url, 5.0) and serving.remaining(url) > 4  # 3 of 11: it is rate limiting


# -- hedging ------------------------------------------------------------------------------------------


def hold_first(text: str):
    """For `StandinLLM(hold=...)`: the first request asking `text` gets no answer until release()."""
    held = False

    def predicate(request: Received) -> bool:
        nonlocal held
        if held or request.last_user_text() != text:
            return False
        held = True
        return True

    return predicate


async def warm_up(llm: LLMClient, n: int = 8) -> None:
    """`n` answered calls: the latencies a hedge threshold is drawn from."""
    for i in range(n):
        await llm.chat("worker", user(f"warm-up {i}"))


def test_hedging_answers_a_hung_request_from_a_second_one() -> None:
    # One attempt of 10 s: without a hedge the hung request would fail the call.
    with StandinLLM(hold=hold_first("hung")) as srv:
        cfg = config(srv.url, hedge_after_s=0.2, timeout_s=10, max_attempts=1)

        async def main() -> tuple[Any, LLMClient]:
            async with LLMClient(cfg, environ=ENV) as llm:
                await warm_up(llm)
                result = await llm.chat("worker", user("hung"))
                assert llm.max_in_flight == 1  # the hedge rode on its call's slot
                return result, llm

        result, llm = asyncio.run(main())
        srv.release()
        hung, hedge = sent(srv, "hung")
    assert result.text == "echo: hung" and result.attempts == 1
    assert llm.hedges == 1 and llm.hedge_wins == 1
    assert hedge.json() == hung.json()  # an identical request
    assert llm.router.health[srv.url].in_flight == 0  # the abandoned request left no bookkeeping


def test_hedging_is_off_by_default() -> None:
    with StandinLLM(hold=hold_first("hung")) as srv:
        cfg = config(srv.url, timeout_s=0.5, max_attempts=1)

        async def main() -> LLMClient:
            async with LLMClient(cfg, environ=ENV) as llm:
                await warm_up(llm)
                with pytest.raises(LLMError, match="within 0.5s"):
                    await llm.chat("worker", user("hung"))
                return llm

        llm = asyncio.run(main())
        srv.release()
        assert len(sent(srv, "hung")) == 1 and llm.hedges == 0


def test_no_hedge_before_the_endpoint_latency_is_known() -> None:
    with StandinLLM(hold=hold_first("hung")) as srv:  # the very first request hangs
        cfg = config(srv.url, hedge_after_s=0.1, timeout_s=0.5, max_attempts=1)

        async def main() -> LLMClient:
            async with LLMClient(cfg, environ=ENV) as llm:
                with pytest.raises(LLMError, match="within 0.5s"):
                    await llm.chat("worker", user("hung"))
                return llm

        llm = asyncio.run(main())
        srv.release()
        assert len(sent(srv, "hung")) == 1 and llm.hedges == 0


@pytest.mark.parametrize(("value", "expected"), [("2.5", 2.5), ("0", None), ("none", None)])
def test_hedge_after_s_is_a_setting_zero_or_none_turns_it_off(value: str, expected: float | None) -> None:
    assert config("http://a.test/v1", hedge_after_s=value).role("worker").hedge_after_s == expected


# -- retries go first ---------------------------------------------------------------------------------


def test_a_retry_queues_for_a_slot_ahead_of_calls_not_yet_sent() -> None:
    async def main() -> list[str]:
        slots = Slots(1)
        await slots.acquire()  # the one slot is taken
        order: list[str] = []

        async def wait(name: str, first: bool) -> None:
            await slots.acquire(first)
            order.append(name)
            slots.release()

        tasks = [asyncio.create_task(wait("new 1", False)), asyncio.create_task(wait("new 2", False))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(wait("retry", True)))
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == ["retry", "new 1", "new 2"]


def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    async def main() -> list[str]:
        slots = Slots(1)
        await slots.acquire()
        order: list[str] = []

        async def wait(name: str) -> None:
            await slots.acquire()
            order.append(name)
            slots.release()

        doomed = asyncio.create_task(wait("doomed"))
        other = asyncio.create_task(wait("other"))
        await asyncio.sleep(0)
        slots.release()  # handed to `doomed`, which is cancelled before it runs
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        await other
        await slots.acquire()  # and the slot came back afterwards
        return order

    assert asyncio.run(main()) == ["other"]


def test_a_question_waiting_out_a_retry_lends_its_place(tmp_path: Any) -> None:
    """`ores synth --concurrency 1`: while seed 1's planner call waits out a 503's Retry-After, seed 2
    is researched in its place (without lending, seed 2's planner would come after seed 1's retry)."""
    from oresearch_cli.stages.synth import SynthOptions, run_synth
    from oresearch_cli.workspace import Workspace

    from synth_support import Teacher, build_test_corpus, llm_config, planner_question, write_seeds

    ws = Workspace.open(tmp_path / "ws")
    build_test_corpus(ws, tmp_path)
    first, second = write_seeds(tmp_path / "q.jsonl", 2)
    teacher = Teacher(faults={"planner": [error(503, "busy", headers={"Retry-After": "1"})]})
    with StandinLLM(teacher, lifetime=300) as srv:
        options = SynthOptions(search="local:mini", crawl="local", concurrency=1)
        summary = asyncio.run(run_synth(ws, str(tmp_path / "q.jsonl"), options, llm_config(srv.url)))
        planners = [q for r in srv.chat_requests() if (q := planner_question(r))]
    assert planners == [first["question"], second["question"], first["question"]]
    assert summary.n_done == 2 and summary.n_failed == 0


def test_a_place_lent_by_two_waits_of_one_question_is_taken_back_once() -> None:
    """Two subtasks of one question end their retry waits while another question holds the place:
    the question takes one place back, not two (two leaked a place each time and, with 20% faults,
    hung a 64-seed synth once every few runs)."""
    from oresearch_cli.stages.research_run import _Place

    async def main() -> None:
        places = asyncio.Semaphore(1)
        async with _Place(places) as place:
            other_holds = asyncio.Event()

            async def first() -> None:
                async with place.lent():
                    await places.acquire()  # another question takes the lent place meanwhile
                    other_holds.set()

            async def second() -> None:
                await other_holds.wait()
                async with place.lent():
                    await asyncio.sleep(0.01)

            waits = asyncio.gather(first(), second())
            await asyncio.sleep(0.05)  # both waits over; both want the place back
            places.release()  # the other question ends
            await asyncio.wait_for(waits, 5)
            assert place.held and places.locked()
        assert not places.locked()  # given back once: nothing leaked, nothing taken twice

    asyncio.run(main())
