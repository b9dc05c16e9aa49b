"""Request time limits with shared timers (engine/deadlines.py): asyncio.timeout's
behaviour, one timer per tick."""

from __future__ import annotations

import asyncio
import time

import pytest

from prmtree.engine.deadlines import TICK_S, Deadlines


def test_a_body_past_its_limit_is_cancelled_and_raises_timeout_error():
    async def main():
        deadlines = Deadlines()
        deadline = deadlines.bound(0.2)
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with deadline:
                await asyncio.sleep(5)
        return deadline.expired, time.perf_counter() - start

    expired, took = asyncio.run(main())
    assert expired
    assert 0.2 <= took < 0.2 + 0.2 / 8 + 0.5  # never early; at most a tick (and scheduling) late


def test_a_body_in_time_is_left_alone_and_forgotten():
    async def main():
        deadlines = Deadlines()
        async with deadlines.bound(0.3) as deadline:
            await asyncio.sleep(0.01)
        assert all(not waiting for waiting in deadlines._due.values())  # nothing left to cancel
        await asyncio.sleep(0.45)  # the tick passes: nothing is cancelled
        return deadline.expired

    assert asyncio.run(main()) is False


def test_a_timeout_error_of_the_body_is_not_the_limits():
    async def main():
        deadline = Deadlines().bound(10)
        with pytest.raises(TimeoutError, match="the policy's own"):
            async with deadline:
                raise TimeoutError("the policy's own")
        return deadline.expired

    assert asyncio.run(main()) is False


def test_a_cancel_from_elsewhere_stays_a_cancel():
    async def body(deadlines):
        async with deadlines.bound(10):
            await asyncio.sleep(5)

    async def main():
        task = asyncio.create_task(body(Deadlines()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_requests_due_in_one_tick_share_one_timer():
    async def main():
        loop = asyncio.get_running_loop()
        timers = []
        call_at = loop.call_at
        def counted(when, cb, *args, **kw):
            if getattr(cb, "__name__", "") == "_expire":  # the limits' timers, not the sleeps'
                timers.append(when)
            return call_at(when, cb, *args, **kw)

        loop.call_at = counted
        deadlines = Deadlines()

        async def request(i):
            async with deadlines.bound(60):
                await asyncio.sleep(0.001 * (i % 3))

        await asyncio.gather(*(request(i) for i in range(1000)))
        return timers

    timers = asyncio.run(main())
    assert 1 <= len(timers) <= 2  # a thousand requests: one timer (two if they straddled a tick)
    assert all(abs(t / TICK_S - round(t / TICK_S)) < 1e-6 for t in timers)


def test_an_infinite_limit_sets_no_timer():
    async def main():
        deadlines = Deadlines()
        async with deadlines.bound(float("inf")) as deadline:
            await asyncio.sleep(0)
        return deadlines._due, deadline.expired

    assert asyncio.run(main()) == ({}, False)


def test_limits_past_thirty_years_or_near_zero_still_work():
    """``request_timeout_s`` accepts any positive float: 1e308 is no limit (a tick of it
    would overflow), 5e-324 expires at once (an eighth of it would be 0)."""
    async def main():
        deadlines = Deadlines()
        async with deadlines.bound(1e308) as forever:
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            async with deadlines.bound(5e-324) as instant:
                await asyncio.sleep(1)
        return forever.expired, instant.expired, deadlines._due

    assert asyncio.run(main()) == (False, True, {})


def test_one_deadlines_used_from_a_second_event_loop_still_fires():
    """A tick whose timer died with an earlier loop must not swallow a later loop's limit."""
    deadlines = Deadlines()

    async def quick():
        async with deadlines.bound(1.0):
            await asyncio.sleep(0)

    async def hangs():
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with deadlines.bound(1.0):
                await asyncio.sleep(10)
        return time.perf_counter() - start

    asyncio.run(quick())  # its tick's timer is gone with that loop
    assert asyncio.run(hangs()) < 2.0
