"""Kubernetes Events, recorded the way client-go's legacy recorder does, without ever blocking or raising.

Identical (object, type, reason, message) within a window bump `count` and
`lastTimestamp` on the existing Event instead of creating a new one, and a per-object
token bucket keeps a hot loop from flooding the API. Writes happen on a worker
thread: recording an Event never waits for the API server.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lbspeaker.kube.resources import EVENTS
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.queueworker import consume

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

DedupKey = tuple[str, str, str, str, str, str, str]


def now_rfc3339(now: datetime | None = None) -> str:
    """metav1.Time: RFC 3339 with second precision, UTC."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An ObjectReference for `obj` (a full object, or already a reference without `metadata`)."""
    if "metadata" not in obj:
        return {k: v for k, v in obj.items() if v is not None}
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {k: v for k, v in ref.items() if v}


def dedup_key(ref: Mapping[str, Any], type_: str, reason: str, message: str) -> DedupKey:
    """What makes two Events "the same": object identity (not its resourceVersion) + type, reason, message."""
    return (
        str(ref.get("kind") or ""),
        str(ref.get("namespace") or ""),
        str(ref.get("name") or ""),
        str(ref.get("uid") or ""),
        type_,
        reason,
        message,
    )


def event_namespace(ref: Mapping[str, Any]) -> str:
    """Events of cluster-scoped objects (Nodes) live in `default`, as client-go puts them."""
    return str(ref.get("namespace") or "default")


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; pure given the clock passed in."""

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first_timestamp: str
    last_mono: float


@dataclass
class _Pending:
    ref: dict[str, Any]
    type_: str
    reason: str
    message: str
    wall: datetime


class EventRecorder:
    """`.event(obj, type_, reason, message)`: fire and forget, never raises into the caller.

    `burst`/`refill_per_s` bound Events per involved object (client-go's spam filter
    uses 25 and 1 per 5 minutes); `dedup_window_s` is how long an Event is reused
    for repeats. `asynchronous=False` writes in the caller's thread (tests, CLIs).
    """

    def __init__(
        self,
        rest: Rest,
        component: str,
        host: str | None = None,
        *,
        burst: int = 25,
        refill_per_s: float = 1.0 / 300.0,
        dedup_window_s: float = 600.0,
        max_queue: int = 1000,
        asynchronous: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rest = rest
        self.component = component
        self.host = host or socket.gethostname()
        self.burst = burst
        self.refill_per_s = refill_per_s
        self.dedup_window_s = dedup_window_s
        self.asynchronous = asynchronous
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, str, str], TokenBucket] = {}
        self._seen: dict[DedupKey, _Seen] = {}
        self._queue: queue.Queue[_Pending | None] = queue.Queue(max_queue)
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        # Counters (metrics, tests).
        self.created = 0
        self.updated = 0
        self.dropped_rate_limited = 0
        self.dropped_queue_full = 0
        self.failed = 0

    # -- public ------------------------------------------------------------------------------

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event about `obj` (type_ is "Normal" or "Warning"). Never raises."""
        try:
            self._event(obj, type_, reason, message)
        except Exception:
            log.exception("recording event %s %s failed", reason, message)

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, NORMAL, reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, WARNING, reason, message)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued Event was written (or dropped); True if that happened in time."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout`) and stop the worker."""
        self.flush(timeout)
        self._closed = True
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout)

    # -- internals ---------------------------------------------------------------------------

    def _event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if self._closed:
            return
        ref = involved_object(obj)
        bucket_key = (
            str(ref.get("kind") or ""),
            str(ref.get("namespace") or ""),
            str(ref.get("name") or ""),
            str(ref.get("uid") or ""),
        )
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(bucket_key)
            if bucket is None:
                bucket = self._buckets[bucket_key] = TokenBucket(self.burst, self.refill_per_s, now)
                if len(self._buckets) > 10000:
                    self._prune(now)
            if not bucket.take(now):
                self.dropped_rate_limited += 1
                log.debug("event %s on %s dropped by the rate limit", reason, bucket_key)
                return
        pending = _Pending(ref, type_, reason, message[:1024], datetime.now(UTC))
        if not self.asynchronous:
            self._write(pending)
            return
        with self._lock:
            self._ensure_worker()
            self._pending += 1
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            self.dropped_queue_full += 1
            log.warning("event queue full; dropped %s %s", reason, message)

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=f"events-{self.component}", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        consume(self._queue.get, self._write, log=log, what="writing an event", after=self._written)

    def _written(self) -> None:
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def _prune(self, now: float) -> None:
        """Forget full buckets and stale dedup entries so memory stays bounded (lock held)."""
        self._buckets = {
            k: b for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * b.rate < b.burst
        }
        self._seen = {k: s for k, s in self._seen.items() if now - s.last_mono < self.dedup_window_s}

    def _write(self, p: _Pending) -> None:
        key = dedup_key(p.ref, p.type_, p.reason, p.message)
        now = self._clock()
        stamp = now_rfc3339(p.wall)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.last_mono > self.dedup_window_s:
                seen = None
        if seen is not None:
            try:
                self.rest.patch(
                    EVENTS,
                    seen.name,
                    {"count": seen.count + 1, "lastTimestamp": stamp},
                    seen.namespace,
                    "merge",
                )
                with self._lock:
                    seen.count += 1
                    seen.last_mono = now
                self.updated += 1
                return
            except ApiError as exc:
                if not exc.not_found:
                    self.failed += 1
                    log.warning("updating event %s/%s failed: %s", seen.namespace, seen.name, exc)
                    return
                # Someone deleted it (TTL): fall through and create a fresh one.
        namespace = event_namespace(p.ref)
        name = f"{p.ref.get('name') or 'unknown'}.{time.time_ns():x}"
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": p.ref,
            "reason": p.reason,
            "message": p.message,
            "type": p.type_,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.rest.create(EVENTS, body, namespace)
        except ApiError as exc:
            self.failed += 1
            log.warning("creating event %s for %s failed: %s", p.reason, p.ref.get("name"), exc)
            return
        self.created += 1
        with self._lock:
            self._seen[key] = _Seen(name, namespace, 1, stamp, now)
            if len(self._seen) > 10000:
                self._prune(now)
