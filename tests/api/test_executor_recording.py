"""The executor writes a run's progress on a chain of its own: in order, no more than ``AHEAD`` writes behind the
engine, the first failure raised to whoever waits for the writes, and every write awaited before the run ends."""

from __future__ import annotations

import asyncio

import pytest

from odata_sync.executor.worker import _Recording


async def test_writes_happen_in_order_and_hold_the_engine_back_when_too_many_wait():
    done: list[int] = []
    gate = asyncio.Event()

    async def write(n: int) -> None:
        if n == 0:
            await gate.wait()  # the store is stuck on the first write
        await asyncio.sleep(0)
        done.append(n)

    recording = _Recording(write(0))
    for n in range(1, _Recording.AHEAD):
        await recording.then(write(n))  # (queued behind the first: returns at once)
    blocked = asyncio.ensure_future(recording.then(write(_Recording.AHEAD)))
    await asyncio.sleep(0.01)
    assert not blocked.done() and done == []  # AHEAD writes wait: the next one waits for them
    gate.set()
    await blocked
    await recording.done()
    assert done == list(range(_Recording.AHEAD + 1))


async def test_the_first_failure_is_raised_and_later_writes_are_not_made():
    made: list[str] = []

    async def fail() -> None:
        raise RuntimeError("store unavailable")

    async def later() -> None:
        made.append("later")

    recording = _Recording(fail())
    await recording.then(later())
    with pytest.raises(RuntimeError, match="store unavailable"):
        await recording.done()
    await recording.settle()  # (settling swallows it)
    assert made == []


async def test_cancelling_a_waiter_does_not_cancel_the_writes():
    made: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        made.append("slow")

    recording = _Recording(slow())
    waiter = asyncio.ensure_future(recording.done())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await recording.settle()
    assert made == ["slow"]
