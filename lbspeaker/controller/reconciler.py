"""The controller shell: caches -> allocator -> Service status, pool status, Events.

Threads: one WatchCache thread per resource (their handlers only enqueue keys),
the leader elector, and ONE worker that owns the allocator and does every write.
Nothing is written unless this replica holds the Lease; every leadership term
starts from a fresh allocator rebuilt from the IPs already in Service statuses
(restore) before a single new IP is handed out, so neither a restart nor a
failover moves an IP.

Work items (strings, coalesced by the queue):
  ``svc:<ns>/<name>``  reconcile one Service;
  ``pools``            re-validate every pool, feed the allocator, report problems;
  ``pool:<name>``      write one pool's status (counts + conditions) if it changed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from lbspeaker.api import constants as C
from lbspeaker.controller import translate as T
from lbspeaker.controller.advertisements import advertisement_conditions
from lbspeaker.controller.allocator import Allocator, ServiceRequest
from lbspeaker.controller.metrics import ControllerMetrics
from lbspeaker.health import HealthServer
from lbspeaker.kube.cache import WatchCache, wait_all_synced
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.lease import LeaderElector, LeaseLock
from lbspeaker.kube.resources import (
    BGPADVERTISEMENTS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    NAMESPACES,
    NODES,
    SERVICES,
    Resource,
)
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.kube.status import patch_annotations, update_status

log = logging.getLogger("lbspeaker.controller")

# The allocator key under which IPs still named by a Service's status, but not (or no longer)
# allocated to it, stay taken until the status stops naming them: nothing new is handed out
# on top of an IP some Service's status still names (a failed write, a type or class change
# while the controller was down, another implementation's Service). Not a valid object name.
OLD_STATUS = " (old status)"

POOLS_KEY = "pools"
ADVERTISEMENTS_KEY = "advertisements"
SVC = "svc:"
POOL = "pool:"


# ---------------------------------------------------------------------------------------------
# Work queue (client-go's workqueue semantics, in small): handlers on cache threads only
# enqueue keys; one worker takes them. A key added many times while waiting is processed
# once; a key added while being processed is processed again afterwards (never twice at
# once); failed keys come back after an exponential per-key delay.

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Thread-safe queue of keys; `get()` blocks until a key is ready or the queue shuts down."""

    def __init__(self, base_delay: float = 0.05, max_delay: float = 30.0) -> None:
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._base = base_delay
        self._max = max_delay
        self._shutdown = False

    def add(self, key: K) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` once `delay` seconds have passed (used for retries)."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: K) -> float:
        """Requeue a failed key after base*2^failures (capped); return the delay chosen."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self._base * (2**n), self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset the failure count of a key that has now succeeded."""
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def get(self, timeout: float | None = None) -> K | None:
        """Next ready key (mark it processing), or None on timeout/shutdown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, key = heapq.heappop(self._delayed)
                    self._add_locked(key)
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                wait: float | None = None
                if self._delayed:
                    wait = self._delayed[0][0] - now
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        """Mark `key` finished; if it was re-added meanwhile it goes back in the queue."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._delayed)

    def idle(self) -> bool:
        """True when nothing is queued, delayed or being processed."""
        with self._cond:
            return not self._queue and not self._processing and not self._delayed

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()


# ---------------------------------------------------------------------------------------------
# The controller


@dataclass
class ControllerConfig:
    """Everything the command line sets; defaults match `lbspeaker-controller`'s."""

    namespace: str = C.NAMESPACE
    lb_class: str | None = None
    identity: str = "lbspeaker-controller"
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    metrics_addr: str | None = None
    lease_name: str = C.CONTROLLER_LEASE
    cache_sync_timeout: float = 60.0
    resync_period: float = 600.0  # seconds; 0 disables the periodic re-check of every Service


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotLeader(Exception):
    """Raised before a write when this replica no longer holds the Lease."""


class Controller:
    """One controller replica; `start()`/`stop()` make it usable in-process (tests) and from main."""

    def __init__(self, rest: Rest, config: ControllerConfig | None = None,
                 on_lost_leadership: Callable[[], None] | None = None) -> None:
        self.rest = rest
        self.cfg = config or ControllerConfig()
        self.metrics = ControllerMetrics()
        self._on_lost = on_lost_leadership
        self.alloc = Allocator()
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=30.0)
        self.events = EventRecorder(rest, component=C.CONTROLLER_NAME, host=self.cfg.identity)

        self.services = WatchCache(rest, SERVICES, on_event=self._on_service, name="ctl-services")
        self.namespaces = WatchCache(rest, NAMESPACES, on_event=self._on_namespace, name="ctl-namespaces")
        self.pools = WatchCache(rest, IPADDRESSPOOLS, namespace=self.cfg.namespace, on_event=self._on_pool,
                                name="ctl-pools")
        self.nodes = WatchCache(rest, NODES, on_event=self._on_node, name="ctl-nodes")
        self.l2advertisements = WatchCache(rest, L2ADVERTISEMENTS, namespace=self.cfg.namespace,
                                           on_event=self._on_advertisement, name="ctl-l2advertisements")
        self.bgpadvertisements = WatchCache(rest, BGPADVERTISEMENTS, namespace=self.cfg.namespace,
                                            on_event=self._on_advertisement, name="ctl-bgpadvertisements")
        self._caches = (self.services, self.namespaces, self.pools, self.nodes, self.l2advertisements,
                        self.bgpadvertisements)

        # Worker-owned state (only the worker thread touches these).
        self._last_valid: dict[str, T.PoolSpec] = {}
        self._poolset = T.PoolSet(active={}, problems={})
        self._reported_problems: dict[str, str] = {}
        self._failed: dict[str, str] = {}          # key -> last failure message (Event sent once)
        self._orphans: dict[str, tuple[str, ...]] = {}  # key -> IPs no pool covers (Event sent once)
        self._claims: dict[str, dict[str, str | None]] = {}  # key -> its status claims (-> pool)
        self._pools_loaded = False

        self._node_ips: dict[str, str] = {}
        self._node_labels: dict[str, dict[str, str]] = {}
        self._advertisement_specs: dict[tuple[str, str], Any] = {}
        self._pool_specs: dict[str, Any] = {}
        self._node_lock = threading.Lock()
        self._pool_status_pending: set[str] = set()
        self.pool_status_delay = 0.2  # batch pool status writes: at most ~5 per second per pool

        self._leading = threading.Event()
        self._ready_to_write = threading.Event()   # leader AND restored
        self._term = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._elector: LeaderElector | None = None
        self._http: HealthServer | None = None
        self.stats = {"allocated": 0, "failed": 0, "released": 0, "writes": 0, "restored": 0}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for cache in self._caches:
            cache.start()
        if self.cfg.metrics_addr:
            self._http = HealthServer(self.cfg.metrics_addr, self.metrics.registry, self.healthz, self.readyz)
            self._http.start()
            log.info("metrics and probes on port %d", self._http.port)
        self._worker = threading.Thread(target=self._work, name="ctl-worker", daemon=True)
        self._worker.start()
        if self.cfg.leader_elect:
            lock = LeaseLock(self.rest, self.cfg.namespace, self.cfg.lease_name, self.cfg.identity,
                             lease_duration_s=max(1, round(self.cfg.lease_duration)))
            self._elector = LeaderElector(
                lock,
                renew_deadline_s=self.cfg.renew_deadline,
                retry_period_s=self.cfg.retry_period,
                on_started_leading=self._started_leading,
                on_stopped_leading=self._stopped_leading,
            )
            self._elector.start()
        else:
            self._started_leading()

    def stop(self, release: bool = True) -> None:
        """Stop writing at once, then release the Lease (so a standby takes over without waiting).

        `release=False` behaves like a crash as far as the Lease goes: a standby must
        wait for it to expire (tests use it to prove that nobody writes meanwhile).
        """
        self._stop.set()
        self._ready_to_write.clear()
        self._leading.clear()
        self.queue.shutdown()
        if self._worker is not None:
            self._worker.join(10)
        if self._elector is not None:
            self._elector.release_on_cancel = release
            self._elector.stop()
        self.events.close(timeout=2.0)
        for cache in self._caches:
            cache.stop()
        if self._http is not None:
            self._http.stop()
        self.metrics.is_leader.set(0)

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    @property
    def active(self) -> bool:
        """Leader and done restoring: new allocations happen only in this state."""
        return self._ready_to_write.is_set()

    def wait_active(self, timeout: float) -> bool:
        return self._ready_to_write.wait(timeout)

    def idle(self) -> bool:
        """Nothing queued or in flight (tests use it to wait for quiescence)."""
        return self.queue.idle()

    # ------------------------------------------------------------------ probes

    def healthz(self) -> tuple[bool, str]:
        if self._worker is not None and not self._worker.is_alive() and not self._stop.is_set():
            return False, "worker thread died"
        dead = [c.name for c in self._caches if c._thread is not None and not c._thread.is_alive()]
        if dead and not self._stop.is_set():
            return False, "cache threads died: " + ", ".join(dead)
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        unsynced = [c.name for c in self._caches if not c.synced]
        if unsynced:
            return False, "caches not synced: " + ", ".join(unsynced)
        if self.is_leader and not self.active:
            return False, "leader, restoring allocations"
        return True, "leader" if self.is_leader else "standby"

    # ------------------------------------------------------------------ leadership

    def _started_leading(self) -> None:
        log.info("became leader (identity %s): rebuilding allocations from Service statuses",
                 self.cfg.identity)
        self._term += 1
        self._leading.set()
        self.metrics.is_leader.set(1)
        self.queue.add(f"__restore__:{self._term}")

    def _stopped_leading(self) -> None:
        was = self._leading.is_set()
        self._ready_to_write.clear()
        self._leading.clear()
        self.metrics.is_leader.set(0)
        if was and not self._stop.is_set():
            log.error("lost the controller Lease: no more writes from this replica")
            if self._on_lost is not None:
                self._on_lost()

    def _check_leader(self) -> None:
        if not self._ready_to_write.is_set() or self._stop.is_set():
            raise NotLeader()
        if self._elector is not None and not self._elector.lock.held:
            # Our last successful renewal is older than a lease duration: somebody may hold it now.
            raise NotLeader()

    # ------------------------------------------------------------------ event handlers (cache threads)

    def _on_service(self, _type: str, obj: dict[str, Any]) -> None:
        self.queue.add(SVC + T.key_of(obj))

    def _on_namespace(self, _type: str, obj: dict[str, Any]) -> None:
        # New labels may make a pool's namespaceSelector match: retry the Services still without an IP.
        ns = (obj.get("metadata") or {}).get("name")
        for key in list(self._failed):
            if key.startswith(f"{ns}/"):
                self.queue.add(SVC + key)

    def _on_pool(self, type_: str, obj: dict[str, Any]) -> None:
        # Our own status writes come back as MODIFIED: only a spec change or a deletion matters.
        name = str((obj.get("metadata") or {}).get("name"))
        spec = None if type_ == "DELETED" else obj.get("spec")
        with self._node_lock:
            if name in self._pool_specs and self._pool_specs[name] == spec:
                return
            if spec is None:
                self._pool_specs.pop(name, None)
            else:
                self._pool_specs[name] = spec
        self.queue.add(POOLS_KEY)

    def _on_node(self, _type: str, obj: dict[str, Any]) -> None:
        nodes = self.nodes.items()
        ips = T.node_internal_ips(nodes)
        labels = {str(n["metadata"]["name"]): dict(n["metadata"].get("labels") or {}) for n in nodes}
        with self._node_lock:
            changed = ips != self._node_ips
            self._node_ips = ips
            relabelled = labels != self._node_labels
            self._node_labels = labels
        if changed:
            self.queue.add(POOLS_KEY)
        if relabelled:
            self.queue.add(ADVERTISEMENTS_KEY)  # nodeSelectors may now match more or fewer nodes

    def _on_advertisement(self, type_: str, obj: dict[str, Any]) -> None:
        # Like pools: our own status writes come back as MODIFIED and change nothing.
        key = (str(obj.get("kind")), str((obj.get("metadata") or {}).get("name")))
        spec = None if type_ == "DELETED" else obj.get("spec")
        with self._node_lock:
            if self._advertisement_specs.get(key) == spec and type_ != "ADDED":
                return
            self._advertisement_specs[key] = spec
        # a deletion matters too: a deleted BGPAdvertisement may have won a localPref conflict
        self.queue.add(ADVERTISEMENTS_KEY)

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        next_resync = time.monotonic() + self.cfg.resync_period
        while not self._stop.is_set():
            self.metrics.queue_depth.set(len(self.queue))
            if self.cfg.resync_period > 0 and time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.cfg.resync_period
                if self._ready_to_write.is_set():
                    # Belt and braces against a lost event (informers' resync): re-check everything
                    # from the caches; unchanged objects cost no API call.
                    self.queue.add(POOLS_KEY)
                    for svc in self.services.items():
                        self.queue.add(SVC + T.key_of(svc))
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            started = time.perf_counter()
            try:
                if key.startswith("__restore__:"):
                    if int(key.split(":", 1)[1]) == self._term and self._leading.is_set():
                        self._restore()
                elif not self._leading.is_set() or not self._ready_to_write.is_set():
                    pass  # standby: the next term enqueues everything again
                elif key == POOLS_KEY:
                    self._sync_pools()
                    self.queue.add(ADVERTISEMENTS_KEY)  # pool names and labels decide what they select
                elif key == ADVERTISEMENTS_KEY:
                    self._sync_advertisements()
                elif key.startswith(POOL):
                    self._sync_pool_status(key[len(POOL):])
                elif key.startswith(SVC):
                    self._sync_service(key[len(SVC):])
                self.queue.forget(key)
                self.metrics.updates.inc()
            except NotLeader:
                log.info("dropped %s: not the leader any more", key)
            except ApiError as exc:
                self.metrics.update_errors.inc()
                delay = self.queue.add_rate_limited(key)
                log.warning("%s: API error %s; retrying in %.2fs", key, exc, delay)
            except Exception:
                self.metrics.update_errors.inc()
                delay = self.queue.add_rate_limited(key)
                log.exception("%s: reconcile failed; retrying in %.2fs", key, delay)
            finally:
                self.queue.done(key)
                self.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    def _restore(self) -> None:
        """Start a term: wait for the caches, load pools, then re-take every IP already in a status."""
        deadline = time.monotonic() + self.cfg.cache_sync_timeout
        while not wait_all_synced(self._caches, 0.5):
            if self._stop.is_set() or not self._leading.is_set():
                return
            if time.monotonic() > deadline:
                log.warning("caches not synced after %.0fs; still waiting before allocating anything",
                            self.cfg.cache_sync_timeout)
                deadline = time.monotonic() + self.cfg.cache_sync_timeout
        self.alloc = Allocator()
        self._claims.clear()
        self._pool_status_pending.clear()
        self._failed.clear()
        self._orphans.clear()
        self._reported_problems.clear()
        self._apply_pools(requeue=False)
        restored = 0
        conflicts: list[tuple[dict[str, Any], str]] = []
        services = sorted(self.services.items(), key=lambda s: ((s.get("metadata") or {}).get(
            "creationTimestamp") or "", T.key_of(s)))
        for svc in services:
            ips = T.ingress_ips(svc)
            if not ips or not T.wants_ip(svc, self.cfg.lb_class):
                continue
            key = T.key_of(svc)
            info = T.service_info_lenient(svc, self._ns_labels(svc))
            # The annotation names the pool even when that pool is gone or shrunk, so holders() still
            # lists the Service for the operator's Event.
            out = self.alloc.restore(key, ips, T.to_request(info), pool=self._allocated_from(svc))
            if out.ok:
                restored += 1
                for warning in out.warnings:
                    log.warning("restore: service=%s ips=%s: %s", key, ",".join(ips), warning)
            else:
                log.warning("restore: service=%s ips=%s not kept: %s (%s)", key, ",".join(ips), out.message,
                            out.reason)
                conflicts.append((svc, out.message))
        # Then every IP a status names that restore did not give to that Service (a Service no
        # longer for us, or in conflict): taken until the status stops naming it.
        for svc in services:
            if T.ingress_ips(svc):
                self._track_status(T.key_of(svc), svc, T.ingress_ips(svc), {})
        self.stats["restored"] = restored
        log.info("restored %d Service allocations from their status; now allocating", restored)
        self._ready_to_write.set()
        for svc, message in conflicts:
            self._event(svc, "Warning", "IPConflict", message)
        self._publish_pool_metrics()
        self.queue.add(POOLS_KEY)
        for svc in services:
            self.queue.add(SVC + T.key_of(svc))
        for name in self._poolset.active.keys() | {p["metadata"]["name"] for p in self.pools.items()}:
            self._queue_pool_status(name)
        # Services restored outside every pool (their pool was deleted while we were down): say so.
        self._report_orphans()

    # ------------------------------------------------------------------ pools

    def _sync_pools(self) -> None:
        self._apply_pools(requeue=True)

    def _apply_pools(self, requeue: bool) -> None:
        with self._node_lock:
            self._node_ips = T.node_internal_ips(self.nodes.items())
            node_ips = dict(self._node_ips)
        objs = self.pools.items()
        result = T.validate_pools(objs, node_ips, self._last_valid)
        current_names = {str((o.get("metadata") or {}).get("name")) for o in objs}
        # Remember the last valid spec of every pool that is valid now; forget deleted pools.
        for name, spec in result.active.items():
            if name not in result.problems:
                self._last_valid[name] = spec
        for name in list(self._last_valid):
            if name not in current_names:
                del self._last_valid[name]
        changed = result.active != self._poolset.active
        old_names = set(self._poolset.active)
        self._poolset = result
        ordered = sorted(result.active.values(), key=lambda p: (p.created, p.name))
        report = self.alloc.set_pools(list(ordered))
        for name, why in report.rejected.items():  # validate_pools already refused overlaps
            log.warning("pool=%s refused by the allocator: %s", name, why)
        self._pools_loaded = True
        self.metrics.config_loaded.set(1)
        self.metrics.config_stale.set(1 if result.problems else 0)
        for name in current_names:
            self.metrics.pool_valid.labels(pool=name).set(0 if name in result.problems else 1)
        for name in old_names - set(result.active) - current_names:
            self.metrics.forget_pool(name)
        # Report newly found problems once (Event + log); clear the ones that went away.
        by_name = {str((o.get("metadata") or {}).get("name")): o for o in objs}
        for name, problem in result.problems.items():
            if self._reported_problems.get(name) == problem.message or not self._ready_to_write.is_set():
                continue  # before restore is done, the POOLS_KEY queued by _restore reports it
            self._reported_problems[name] = problem.message
            stale = result.stale(name)
            log.warning("pool=%s invalid reason=%s: %s%s", name, problem.reason, problem.message,
                        " (running on its last valid configuration)" if stale else "")
            obj = by_name.get(name)
            if obj is not None:
                self._event(obj, "Warning", "InvalidConfiguration",
                            f"{problem.message}." + (" The last valid configuration keeps running."
                                                     if stale else " The pool is not used."))
        for name in list(self._reported_problems):
            if name not in result.problems:
                del self._reported_problems[name]
                if name in by_name:
                    log.info("pool=%s is valid again", name)
        for name in current_names | old_names:
            self._queue_pool_status(name)
        if changed:
            log.info("pools now %s", ", ".join(
                f"{n}[{' '.join(str(r) for r in s.ranges)}]" for n, s in sorted(result.active.items()))
                or "<none>")
        self._publish_pool_metrics()
        if requeue:
            self._report_orphans()
            if changed:
                for key in list(self._failed):
                    self.queue.add(SVC + key)
                # A pool annotation may now point to an existing pool; Services with no IP at all too.
                for svc in self.services.items():
                    if T.wants_ip(svc, self.cfg.lb_class) and not T.ingress_ips(svc):
                        self.queue.add(SVC + T.key_of(svc))

    def _outside_pools(self) -> dict[str, tuple[str, ...]]:
        """Service key -> its IPs that no current pool covers."""
        out: dict[str, tuple[str, ...]] = {}
        for key, ips in self.alloc.assignments().items():
            if OLD_STATUS in key:
                continue
            a = self.alloc.assigned(key)
            if a is not None and a.orphaned:
                pools = self._poolset.active.values()
                out[key] = tuple(ip for ip in ips if not any(p.covers(ip) for p in pools))
        return out

    def _pool_counts(self, name: str) -> dict[str, int]:
        try:
            st = self.alloc.pool_stats(name)
            cap4, cap6 = self.alloc.pool_capacity(name)
        except KeyError:
            return {"assignedIPv4": 0, "assignedIPv6": 0, "availableIPv4": 0, "availableIPv6": 0,
                    "totalIPv4": 0, "totalIPv6": 0}
        return {"assignedIPv4": st.assigned_v4, "assignedIPv6": st.assigned_v6,
                "availableIPv4": st.available_v4, "availableIPv6": st.available_v6,
                "totalIPv4": cap4, "totalIPv6": cap6}

    def _holders_outside(self, name: str) -> list[tuple[str, tuple[str, ...]]]:
        """Services recorded on pool `name` holding IPs no pool covers now (the pool shrank)."""
        out = []
        pools = self._poolset.active.values()
        for key in self.alloc.holders(name):
            if OLD_STATUS in key:
                continue
            a = self.alloc.assigned(key)
            if a is not None and a.orphaned:
                out.append((key, tuple(ip for ip in a.ips if not any(p.covers(ip) for p in pools))))
        return out

    def _report_orphans(self) -> None:
        """Event + log once for every Service that holds IPs no current pool covers."""
        now = self._outside_pools()
        for key, ips in now.items():
            if self._orphans.get(key) == ips:
                continue
            self._orphans[key] = ips
            a = self.alloc.assigned(key)
            was_pool = (a.pool if a else None) or "?"
            msg = (f"IP(s) {','.join(ips)} of this Service are no longer in any IPAddressPool "
                   f"(was {was_pool}). The Service keeps them and nothing is moved. To keep them, "
                   "re-add the addresses to a pool; to move the Service, re-create it or set "
                   f"{C.ANNOTATION_LOADBALANCER_IPS} to an address inside a pool")
            log.warning("service=%s ips=%s pool=%s reason=OutsideAllPools: kept; operator action needed",
                        key, ",".join(ips), was_pool)
            svc = self._svc_by_key(key)
            if svc is not None and self._ready_to_write.is_set():
                self._event(svc, "Warning", "IPOutsidePools", msg)
        for key in list(self._orphans):
            if key not in now:
                del self._orphans[key]
                log.info("service=%s ips back inside a pool", key)
        self.metrics.orphaned_services.set(len(self._orphans))

    def _publish_pool_metrics(self) -> None:
        for name in self._poolset.active:
            counts = self._pool_counts(name)
            self.metrics.set_pool(name, counts["assignedIPv4"] + counts["assignedIPv6"],
                                  counts["totalIPv4"] + counts["totalIPv6"])

    def _queue_pool_status(self, name: str | None) -> None:
        """Schedule a status write for the pool, batched: many allocations make one write."""
        if not name or name in self._pool_status_pending:
            return
        self._pool_status_pending.add(name)
        self.queue.add_after(POOL + name, self.pool_status_delay)

    def _sync_pool_status(self, name: str) -> None:
        self._pool_status_pending.discard(name)
        obj = self.pools.get(self.cfg.namespace, name)
        if obj is None:
            return
        counts = self._pool_counts(name)
        problem = self._poolset.problems.get(name)
        outside = self._holders_outside(name)
        meta = obj.get("metadata") or {}
        old_status = obj.get("status") or {}
        desired = T.pool_status(counts, problem, self._poolset.stale(name), outside, meta.get("generation"),
                                old_status, _now())
        if all(old_status.get(k) == v for k, v in desired.items()):
            return
        self._check_leader()
        self._write_status(IPADDRESSPOOLS, obj, lambda o: {**(o.get("status") or {}), **desired})
        log.info("pool=%s status assigned(v4/v6)=%d/%d available=%d/%d%s", name, desired["assignedIPv4"],
                 desired["assignedIPv6"], desired["availableIPv4"], desired["availableIPv6"],
                 f" outside={len(outside)}" if outside else "")

    def _sync_advertisements(self) -> None:
        """Write each advertisement's Ready condition when it changed (unknown pool, selectors that
        match nothing, or what it announces from where)."""
        self._sync_advertisement_status(L2ADVERTISEMENTS, self.l2advertisements)
        self._sync_advertisement_status(BGPADVERTISEMENTS, self.bgpadvertisements)

    def _sync_advertisement_status(self, resource: Resource, cache: WatchCache) -> None:
        pools, nodes = self.pools.items(), self.nodes.items()
        for adv in cache.items():
            old = adv.get("status") or {}
            conditions = advertisement_conditions(
                adv, pools, nodes, old.get("conditions"), _now(),
                bgp_advertisements=cache.items() if resource is BGPADVERTISEMENTS else None)
            if old.get("conditions") == conditions:
                continue
            ready = conditions[0]
            was = {c.get("type"): c for c in old.get("conditions") or []}.get("Ready") or {}
            if ready["status"] == "False" and was.get("message") != ready["message"]:
                self._event(adv, "Warning", ready["reason"], ready["message"])
            log.info("%s=%s ready=%s reason=%s: %s", resource.kind, adv["metadata"]["name"], ready["status"],
                     ready["reason"], ready["message"])
            self._write_status(resource, adv, _with_conditions(conditions))

    # ------------------------------------------------------------------ services

    def _svc_by_key(self, key: str) -> dict[str, Any] | None:
        ns, _, name = key.partition("/")
        return self.services.get(ns, name)

    def _ns_labels(self, svc: Mapping[str, Any]) -> dict[str, str]:
        ns = (svc.get("metadata") or {}).get("namespace")
        obj = self.namespaces.get(None, ns) if ns else None
        return dict(((obj or {}).get("metadata") or {}).get("labels") or {})

    def _sync_service(self, key: str) -> None:
        svc = self._svc_by_key(key)
        # The Service may take back an IP its own old status names: lift its claims meanwhile.
        before = self._claims.pop(key, {})
        for claim in before:
            self.alloc.release(claim)
        named = T.ingress_ips(svc) if svc is not None else []
        try:
            named = self._converge_service(key, svc)
        finally:
            # whatever happened (a write may have failed), the IPs its status names stay taken
            self._track_status(key, svc, named, before)

    def _converge_service(self, key: str, svc: dict[str, Any] | None) -> list[str]:
        """Allocate or release for one Service and write it; return the IPs its status now names."""
        assignment = self.alloc.assigned(key)
        held = list(assignment.ips) if assignment else []
        pool = assignment.pool if assignment else None
        if svc is None:
            self._failed.pop(key, None)
            if held:
                self.alloc.release(key)
                self._orphans.pop(key, None)
                self.metrics.allocations.labels(result="released").inc()
                self.stats["released"] += 1
                log.info("service=%s ips=%s pool=%s reason=ServiceDeleted: released",
                         key, ",".join(held), pool)
                self._after_release(pool)
            return []
        if not T.wants_ip(svc, self.cfg.lb_class):
            self._failed.pop(key, None)
            named = T.ingress_ips(svc)
            if self._ours_to_clear(svc, held):
                # Status first: if the write fails the IP stays held and the retry clears it.
                self._check_leader()
                self._write_service(svc, [], None)
                named = []
            if held:
                self.alloc.release(key)
                self._orphans.pop(key, None)
                why = "NotLoadBalancer" if not T.is_load_balancer(svc) else "OtherLoadBalancerClass"
                self.metrics.allocations.labels(result="released").inc()
                self.stats["released"] += 1
                log.info("service=%s ips=%s pool=%s reason=%s: released", key, ",".join(held), pool, why)
                self._after_release(pool)
            return named
        try:
            info = T.service_info(svc, self._ns_labels(svc))
        except T.ServiceError as exc:
            self._fail(svc, key, "InvalidRequest", str(exc))
            return self._status_to_holdings(svc, held, pool)
        out = self.alloc.allocate(T.to_request(info))
        if not out.ok:
            self._fail(svc, key, out.reason, out.message)
            return self._status_to_holdings(svc, list(out.ips), out.pool)
        self._failed.pop(key, None)
        new_ips = list(out.ips)
        current = T.ingress_ips(svc)
        old_pool, pool = pool, out.pool
        moved = set(new_ips) != set(current)
        named = current
        if moved or self._pool_annotation(svc) != pool or not self._ingress_is_ours(svc, new_ips):
            self._check_leader()
            self._write_service(svc, new_ips, pool)
            named = new_ips
        if moved:
            result = "allocated"
            self.stats["allocated"] += 1
            self.metrics.allocations.labels(result=result).inc()
            log.info("service=%s ips=%s pool=%s reason=%s: allocated%s", key, ",".join(new_ips), pool,
                     out.reason or "Allocated", f" (was {','.join(current)})" if current else "")
            self._event(svc, "Normal", "IPAllocated", f"Assigned IP {', '.join(new_ips)} from pool {pool}")
            if held and held != new_ips:
                self._after_release(old_pool)
            self._queue_pool_status(pool)
            self._publish_pool_metrics()
        for warning in out.warnings:
            log.warning("service=%s ips=%s pool=%s: %s", key, ",".join(new_ips), pool, warning)
        return named

    def _after_release(self, pool: str | None) -> None:
        """Freed space may satisfy a Service that failed; the pool's counts changed."""
        if pool:
            self._queue_pool_status(pool)
        for other in list(self._failed):
            self.queue.add(SVC + other)
        self._publish_pool_metrics()

    def _status_to_holdings(self, svc: Mapping[str, Any], held: list[str], pool: str | None) -> list[str]:
        """After a failed allocation: a status naming IPs the Service does not hold (a restore
        conflict, a status written by hand) is set back to what it holds, as MetalLB clears it;
        return the IPs the status names now."""
        current = T.ingress_ips(svc)
        if set(current) <= set(held):
            return current
        self._check_leader()
        self._write_service(svc, held, pool if held else None)
        log.info("service=%s ips=%s: status named %s, which it does not hold; set to what it holds",
                 T.key_of(svc), ",".join(held) or "-", ",".join(current))
        return held

    def _ours_to_clear(self, svc: Mapping[str, Any], held: list[str]) -> bool:
        """Should the status and pool annotation of a Service that is not for us be cleared?

        A Service that is not type LoadBalancer: always (MetalLB's clearServiceState does the
        same; its ingress means nothing). Another loadBalancerClass: only what we wrote (our
        pool annotation, or the IPs we hold), never another implementation's status.
        """
        if not T.is_load_balancer(svc):
            return bool(T.ingress_ips(svc)) or self._pool_annotation(svc) is not None
        if self._pool_annotation(svc) is not None:
            return True
        return bool(held) and set(T.ingress_ips(svc)) == set(held)

    def _track_status(self, key: str, svc: Mapping[str, Any] | None, named: list[str],
                      before: Mapping[str, str | None]) -> None:
        """Keep every IP that the status of `key` names (`named`) but `key` does not hold taken.

        Each under its own allocator key `<key> (old status) <ip>`, with the Service's own
        sharing settings, so only a Service that could share with it anyway may use the IP
        meanwhile. Released as soon as the status stops naming the IP. `before`: the claims
        lifted for this reconcile (claim key -> pool).
        """
        assignment = self.alloc.assigned(key)
        mine = assignment.ips if assignment else ()
        extra = [ip for ip in dict.fromkeys(named) if ip not in mine]
        kept: dict[str, str | None] = {}
        if extra and svc is not None:
            try:
                request = T.to_request(T.service_info_lenient(svc, self._ns_labels(svc)))
            except T.ServiceError:
                request = ServiceRequest(key=key)
            for ip in extra:
                claim = f"{key}{OLD_STATUS} {ip}"
                out = self.alloc.restore(claim, [ip], replace(request, key=claim), lazy=False)
                if out.ok:  # else another Service holds it already, which keeps it just as taken
                    kept[claim] = out.pool
                    if claim not in before:
                        log.info("service=%s ip=%s: still named in its status, kept out of allocation "
                                 "until the status stops naming it", key, ip)
                        self._queue_pool_status(out.pool)
        if kept:
            self._claims[key] = kept
        for claim, pool in before.items():
            if claim not in kept:
                self._after_release(pool)

    def _fail(self, svc: Mapping[str, Any], key: str, reason: str, message: str) -> None:
        self.metrics.allocations.labels(result="failed").inc()
        if self._failed.get(key) == message:
            return
        self._failed[key] = message
        self.stats["failed"] += 1
        log.warning("service=%s ip=- pool=%s reason=%s: allocation failed: %s", key,
                    C.annotation((svc.get("metadata") or {}).get("annotations"), C.ADDRESS_POOL) or "-",
                    reason, message)
        self._event(svc, "Warning", "AllocationFailed", f"Failed to allocate IP for {key}: {message}")

    @staticmethod
    def _pool_annotation(svc: Mapping[str, Any]) -> str | None:
        ann = (svc.get("metadata") or {}).get("annotations") or {}
        return ann.get(C.ANNOTATION_IP_ALLOCATED_FROM_POOL)

    @staticmethod
    def _allocated_from(svc: Mapping[str, Any]) -> str | None:
        """The pool a Service's IPs came from, under any of the accepted annotation spellings."""
        return C.annotation((svc.get("metadata") or {}).get("annotations"), C.IP_ALLOCATED_FROM_POOL)

    @staticmethod
    def _ingress_is_ours(svc: Mapping[str, Any], ips: list[str]) -> bool:
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return ingress == [{"ip": ip, "ipMode": "VIP"} for ip in ips]

    def _write_service(self, svc: Mapping[str, Any], ips: list[str], pool: str | None) -> None:
        """Status first (that is what users wait for), then the pool annotation."""
        ingress = [{"ip": ip, "ipMode": "VIP"} for ip in ips]

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            status = dict(obj.get("status") or {})
            lb = dict(status.get("loadBalancer") or {})
            if ingress:
                lb["ingress"] = ingress
            else:
                lb.pop("ingress", None)
            return {**status, "loadBalancer": lb}

        if not self._ingress_is_ours(svc, ips):
            self._write_status(SERVICES, svc, mutate)
        if self._pool_annotation(svc) != pool:
            meta = svc.get("metadata") or {}
            self._check_leader()
            changes: dict[str, str | None] = {C.ANNOTATION_IP_ALLOCATED_FROM_POOL: pool}
            ann = meta.get("annotations") or {}
            for prefix in C.ANNOTATION_PREFIXES[1:]:  # MetalLB's copies would contradict ours
                if prefix + C.IP_ALLOCATED_FROM_POOL in ann:
                    changes[prefix + C.IP_ALLOCATED_FROM_POOL] = None
            patch_annotations(self.rest, SERVICES, meta.get("namespace"), meta["name"], changes)
            self.stats["writes"] += 1

    def _write_status(self, resource: Resource, obj: Mapping[str, Any],
                      mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """PUT /status from the cached copy (one request when it is current); on 409 fall back to
        update_status, which re-reads and re-applies `mutate` with backoff."""
        meta = obj.get("metadata") or {}
        self._check_leader()
        body = {k: v for k, v in obj.items() if k != "status"}
        body["status"] = mutate(dict(obj))
        try:
            self.rest.replace_status(resource, body)
            self.stats["writes"] += 1
            return
        except ApiError as exc:
            if not exc.conflict:
                raise
        self._check_leader()
        update_status(self.rest, resource, meta.get("namespace"), meta["name"], mutate)
        self.stats["writes"] += 1

    def _event(self, obj: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Events are best effort: a failed Event never fails a reconcile."""
        if not self._ready_to_write.is_set():
            return
        try:
            self.events.event(obj, etype, reason, message)
        except Exception as exc:  # any failure here must not undo the allocation
            log.debug("event %s on %s not written: %s", reason, T.key_of(obj), exc)


def start_controller(rest: Rest, config: ControllerConfig | None = None, **kwargs: Any) -> Controller:
    """Build and start a Controller (convenience for tests and benches)."""
    ctrl = Controller(rest, config, **kwargs)
    ctrl.start()
    return ctrl


__all__ = ["Controller", "ControllerConfig", "WorkQueue", "start_controller"]


def _with_conditions(conditions: list[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A status mutator that sets `conditions` and keeps whatever else the status holds."""
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        return {**(obj.get("status") or {}), "conditions": conditions}
    return mutate
