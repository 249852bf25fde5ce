"""coordination.k8s.io Leases: a generic lock with client-go's leader-election semantics, and an elector.

Used for the controller's single active replica and for each speaker's membership
Lease (`speaker-<node>`). Expiry is judged like client-go: by how long *we* have
seen the same record unchanged on our own monotonic clock, never by comparing the
holder's renewTime with our wall clock, so clock skew between nodes cannot make
two holders. Writes carry the resourceVersion read, so of two contenders only one
write succeeds.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lbspeaker.kube.resources import LEASES
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger(__name__)


def micro_time(now: datetime | None = None) -> str:
    """metav1.MicroTime as the API server writes it: RFC 3339 with microseconds, UTC."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Action(enum.Enum):
    """What `try_acquire_or_renew` should do with the Lease it just read."""

    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it: bump renewTime
    ACQUIRE = "acquire"  # free (no holder) or expired: take it over
    WAIT = "wait"  # somebody else holds a valid Lease


@dataclass(frozen=True)
class Observation:
    """A Lease record and when (our monotonic clock) we first saw it in this exact state."""

    record: tuple[Any, ...]
    at: float


def record_of(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields whose change means the holder is alive (client-go compares the whole record)."""
    return (
        spec.get("holderIdentity") or "",
        spec.get("leaseDurationSeconds"),
        spec.get("acquireTime"),
        spec.get("renewTime"),
        spec.get("leaseTransitions"),
    )


def decide(
    lease: Mapping[str, Any] | None, identity: str, now: float, observed: Observation | None
) -> tuple[Action, Observation | None]:
    """Pure decision of client-go's tryAcquireOrRenew: what to do, and the updated observation.

    `now` is a monotonic clock reading. A holder other than us keeps the Lease until
    `leaseDurationSeconds` have passed on our clock since the record last changed, also when
    the Lease object disappears meanwhile.
    """
    if lease is None:
        # Gone (deleted, or the API server's store was reset) while another holder had it: that
        # holder may still be leading on its own clock, so it keeps the Lease for its duration
        # from our last sight of it, as if the object were still there (else two leaders).
        if observed is not None and observed.record[0] not in ("", identity) \
                and observed.at + float(observed.record[1] or 0) > now:
            return Action.WAIT, observed
        return Action.CREATE, None
    spec = lease.get("spec") or {}
    record = record_of(spec)
    if observed is None or observed.record != record:
        observed = Observation(record, now)
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        return Action.RENEW, observed
    if not holder:
        return Action.ACQUIRE, observed
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if observed.at + duration > now:
        return Action.WAIT, observed
    return Action.ACQUIRE, observed


def new_spec(
    old: Mapping[str, Any] | None, action: Action, identity: str, duration_s: int, now: datetime
) -> dict[str, Any]:
    """The spec to write for `action` (pure): renew keeps acquireTime, a takeover counts a transition."""
    stamp = micro_time(now)
    old = old or {}
    if action is Action.RENEW:
        return {
            **old,
            "holderIdentity": identity,
            "leaseDurationSeconds": duration_s,
            "acquireTime": old.get("acquireTime") or stamp,
            "renewTime": stamp,
        }
    transitions = int(old.get("leaseTransitions") or 0)
    if action is Action.ACQUIRE and (old.get("holderIdentity") or "") != identity:
        transitions += 1
    return {
        **old,
        "holderIdentity": identity,
        "leaseDurationSeconds": duration_s,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions if action is Action.ACQUIRE else 0,
    }


class LeaseLock:
    """One Lease used as a lock by `identity`; safe against any number of contenders."""

    def __init__(
        self,
        rest: Rest,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: int = 15,
        labels: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rest = rest
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration_s = int(lease_duration_s)
        self.labels = dict(labels or {})
        self._clock = clock
        self._observed: Observation | None = None
        self._held_since_mono: float | None = None  # when our last successful write started
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def held(self) -> bool:
        """We wrote the Lease as holder less than a lease duration ago (by our monotonic clock)."""
        since = self._held_since_mono
        return since is not None and self._clock() - since < self.lease_duration_s

    def get(self) -> dict[str, Any] | None:
        try:
            return self.rest.get(LEASES, self.name, self.namespace)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew; True if we hold the Lease afterwards."""
        with self._lock:
            try:
                return self._try()
            except ApiError as exc:
                self.last_error = str(exc)
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                return False

    def _try(self) -> bool:
        start = self._clock()
        lease = self.get()
        action, self._observed = decide(lease, self.identity, self._clock(), self._observed)
        if action is Action.WAIT:
            self._held_since_mono = None
            return False
        now = datetime.now(UTC)
        spec = new_spec((lease or {}).get("spec"), action, self.identity, self.lease_duration_s, now)
        try:
            if lease is None:
                meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
                if self.labels:
                    meta["labels"] = self.labels
                written = self.rest.create(LEASES, {"metadata": meta, "spec": spec}, self.namespace)
            else:
                body = {k: v for k, v in lease.items() if k != "spec"}
                body["spec"] = spec
                written = self.rest.replace(LEASES, body)
        except ApiError as exc:
            if exc.conflict:
                # Somebody else wrote first (AlreadyExists or a stale resourceVersion): they won.
                log.debug("lease %s/%s: lost the race (%s)", self.namespace, self.name, exc.reason)
                self._held_since_mono = None
                return False
            raise
        self._observed = Observation(record_of(written.get("spec") or spec), self._clock())
        self._held_since_mono = start
        if action is not Action.RENEW:
            log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
        return True

    def release(self) -> bool:
        """Give the Lease up at once (client-go's ReleaseOnCancel): empty holder, 1 s duration."""
        with self._lock:
            self._held_since_mono = None
            try:
                lease = self.get()
                if lease is None:
                    return False
                spec = dict(lease.get("spec") or {})
                if (spec.get("holderIdentity") or "") != self.identity:
                    return False
                stamp = micro_time()
                spec.update(
                    {
                        "holderIdentity": "",
                        "leaseDurationSeconds": 1,
                        "acquireTime": stamp,
                        "renewTime": stamp,
                    }
                )
                body = {k: v for k, v in lease.items() if k != "spec"}
                body["spec"] = spec
                self.rest.replace(LEASES, body)
                log.info("lease %s/%s released by %s", self.namespace, self.name, self.identity)
                return True
            except ApiError as exc:
                self.last_error = str(exc)
                log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, exc)
                return False


@dataclass(eq=False)
class LeaderElector:
    """Keeps trying to hold `lock`; calls back when leadership starts and stops. Runs in a thread.

    `on_started_leading()` runs in its own thread (it may block for the whole term);
    `on_stopped_leading()` runs in the elector thread once renewals failed for
    `renew_deadline_s`, or on `stop()`. After losing, the elector competes again.
    """

    lock: LeaseLock
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    on_started_leading: Callable[[], None] | None = None
    on_stopped_leading: Callable[[], None] | None = None
    release_on_cancel: bool = True
    transitions: int = field(default=0, init=False)  # times this elector became leader
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _leading: bool = field(default=False, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.retry_period_s < self.renew_deadline_s < self.lock.lease_duration_s:
            raise ValueError("need retry_period_s < renew_deadline_s < lease duration")

    @property
    def is_leader(self) -> bool:
        return self._leading and self.lock.held

    def start(self) -> LeaderElector:
        self._thread = threading.Thread(target=self.run, name=f"elector-{self.lock.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop competing; releases the Lease if we hold it (and release_on_cancel)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _sleep(self) -> None:
        self._stop.wait(self.retry_period_s * (1.0 + 0.2 * random.random()))

    def run(self) -> None:
        """The elector loop (what `start()` runs in a thread)."""
        while not self._stop.is_set():
            if not self.lock.try_acquire_or_renew():
                self._sleep()
                continue
            self._lead()
        if self.release_on_cancel:
            self.lock.release()

    def _lead(self) -> None:
        self._leading = True
        self.transitions += 1
        if self.on_started_leading is not None:
            threading.Thread(
                target=_safe(self.on_started_leading), name=f"leading-{self.lock.name}", daemon=True
            ).start()
        last_renew = time.monotonic()
        try:
            while not self._stop.wait(self.retry_period_s):
                if self.lock.try_acquire_or_renew():
                    last_renew = time.monotonic()
                    continue
                if time.monotonic() - last_renew >= self.renew_deadline_s or not self.lock.held:
                    log.warning("lease %s: failed to renew; leadership lost", self.lock.name)
                    break
        finally:
            self._leading = False
            if self._stop.is_set() and self.release_on_cancel:
                self.lock.release()
            if self.on_stopped_leading is not None:
                _safe(self.on_stopped_leading)()


def _safe(fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception:
            log.exception("leader election callback failed")

    return run
