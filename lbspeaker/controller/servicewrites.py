"""Service writes in flight while the worker goes on deciding: the controller's pipeline.

Why: a Service's allocation takes the worker well under a millisecond, but its two writes
(status, then the pool annotation) are two round trips to the API server. Waiting for them
one Service at a time made the controller the stage that limited bench/scale.py (about 100
Services a second on the lab, with the controller process 85 % idle). Here `writers` threads
carry the writes while the worker allocates the next Services.

What keeps an IP from being given twice is unchanged: the allocator records the allocation on
the worker before the write is handed over, and every IP the Service's status still names
stays claimed until a later reconcile sees the written status (`ServiceReconciler._track_status`).
What keeps one Service's writes in order: the work queue hands out a key only once its last
item is done, and a handed-over key is done only when its write finished (`WorkQueue.done` is
called here, not by the worker), so a Service is never decided on while its write is in flight.
A failed write is retried as any failed reconcile (`add_rate_limited`). A new leadership term
waits for the writes of the last one (`flush`) before it restores from the caches.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from lbspeaker.controller.context import SVC, Context, NotLeader
from lbspeaker.queueworker import consume

log = logging.getLogger("lbspeaker.controller")

Write = tuple[str, Callable[[], None]]  # (Service key "ns/name", the write)


class ServiceWrites:
    """`writers` threads, each with its own FIFO; one Service always goes to the same thread."""

    def __init__(self, ctx: Context, writers: int) -> None:
        self.ctx = ctx
        self._queues: list[queue.SimpleQueue[Write | None]] = [queue.SimpleQueue() for _ in range(writers)]
        self._threads = [threading.Thread(target=self._run, args=(q,), name=f"ctl-writer-{i}", daemon=True)
                         for i, q in enumerate(self._queues)]
        self._cond = threading.Condition()
        self._pending = 0

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)

    def submit(self, key: str, write: Callable[[], None]) -> None:
        """Run `write` for Service `key`; the work queue's item `svc:<key>` is done when it has run."""
        with self._cond:
            self._pending += 1
        self._queues[hash(key) % len(self._queues)].put((key, write))

    def flush(self, timeout: float) -> bool:
        """Wait until every write handed over has run (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _run(self, q: queue.SimpleQueue[Write | None]) -> None:
        consume(q.get, self._write, log=log, what="Service write", after=self._one_done)

    def _write(self, item: Write) -> None:
        key, write = item
        item_key = SVC + key
        try:
            write()
            self.ctx.queue.forget(item_key)
        except NotLeader:
            log.info("dropped the write of %s: not the leader any more", key)
        except Exception as exc:
            self.ctx.metrics.update_errors.inc()
            delay = self.ctx.queue.add_rate_limited(item_key)
            log.warning("%s: write failed: %s; retrying in %.2fs", item_key, exc, delay)
        finally:
            self.ctx.queue.done(item_key)

    def _one_done(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()


__all__ = ["ServiceWrites"]
