"""The lab API server's per-watcher queue: FIFO, and a wait that ends on an item or at a deadline."""

from __future__ import annotations

import asyncio

import pytest

from lab.apiserver.store import WatchQueue


def test_fifo_and_empty() -> None:
    q = WatchQueue()
    assert q.empty()
    q.put_nowait(("ADDED", {"a": 1}))
    q.put_nowait(None)
    assert (q.qsize(), q.get_nowait(), q.get_nowait(), q.empty()) == (2, ("ADDED", {"a": 1}), None, True)
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


def test_wait_returns_at_the_deadline_without_an_item() -> None:
    async def run() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        q = WatchQueue()
        until = loop.time() + 0.05
        got = await q.wait(until)
        return got, loop.time() - until

    got, late = asyncio.run(run())
    assert got is False
    assert late >= 0  # never before the deadline


def test_wait_wakes_on_put_and_keeps_the_deadline_for_the_next_wait() -> None:
    async def run() -> list[object]:
        loop = asyncio.get_running_loop()
        q = WatchQueue()
        until = loop.time() + 30
        loop.call_soon(q.put_nowait, ("ADDED", {}))
        first = await q.wait(until)
        q.get_nowait()
        timer = q._timer
        loop.call_soon(q.put_nowait, ("MODIFIED", {}))
        second = await q.wait(until)
        same_timer = q._timer is timer
        q.close()
        return [first, second, same_timer, q._timer]

    assert asyncio.run(run()) == [True, True, True, None]


def test_wait_without_deadline_and_with_an_item_already_queued() -> None:
    async def run() -> bool:
        q = WatchQueue()
        q.put_nowait(("DELETED", {}))
        return await asyncio.wait_for(q.wait(None), 5)

    assert asyncio.run(run()) is True
