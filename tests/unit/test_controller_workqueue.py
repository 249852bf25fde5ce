"""The controller's work queue: coalescing, no concurrent processing of a key, rate-limited retries."""

from __future__ import annotations

import time

from lbspeaker.controller.workqueue import WorkQueue


def test_duplicates_coalesce() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert q.get(0.1) == "a"
    assert q.get(0.1) == "b"
    assert q.get(0.01) is None


def test_key_added_while_processing_comes_back_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(0.1) == "a"
    q.add("a")
    assert q.get(0.01) is None  # not handed out twice at once
    q.done("a")
    assert q.get(0.1) == "a"
    q.done("a")
    assert q.idle()


def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.04)
    delays = [q.add_rate_limited("a") for _ in range(4)]
    assert delays == [0.01, 0.02, 0.04, 0.04]
    start = time.monotonic()
    assert q.get(1.0) == "a"
    assert time.monotonic() - start >= 0.009
    q.forget("a")
    assert q.failures("a") == 0


def test_shutdown_unblocks_get() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.shutdown()
    assert q.get(5) is None
