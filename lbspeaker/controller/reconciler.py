"""The controller: caches -> the Service reconciler and the pools part -> Service status, pool status,
Events. This module is the thin shell: lifecycle, probes, leadership, cache handlers, the worker.

Threads: one WatchCache thread per resource (their handlers only enqueue keys),
the leader elector, ONE worker that owns the allocator and decides everything, and
`service_writers` threads that carry an allocation's Service writes while the worker goes
on (`controller.servicewrites`; a Service's work item ends when its write has).
Nothing is written unless this replica holds the Lease; every leadership term
starts from a fresh allocator rebuilt from the IPs already in Service statuses
(restore, `controller.services`) before a single new IP is handed out, so neither a
restart nor a failover moves an IP.

Work items (strings, coalesced by the queue, `controller.workqueue`):
  ``svc:<ns>/<name>``  reconcile one Service (`controller.services`);
  ``pools``            re-validate every pool, feed the allocator, report problems (`controller.pools`);
  ``pool:<name>``      write one pool's status (counts + conditions) if it changed;
  ``advertisements``   write the advertisements' Ready condition if it changed;
  ``configstate``      write the ConfigurationState `controller` if it changed, delete speakers'
                       ones whose node is gone (`controller.configstate`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbspeaker import facts as F
from lbspeaker.api import constants as C
from lbspeaker.controller.allocator import Allocator
from lbspeaker.controller.configstate import ConfigurationStates
from lbspeaker.controller.context import (
    ADVERTISEMENTS_KEY,
    CONFIG_STATE_KEY,
    POOL,
    POOLS_KEY,
    SVC,
    Caches,
    Context,
    NotLeader,
)
from lbspeaker.controller.metrics import ControllerMetrics
from lbspeaker.controller.pools import PoolsAndAdvertisements
from lbspeaker.controller.services import ServiceReconciler
from lbspeaker.controller.servicewrites import ServiceWrites
from lbspeaker.controller.workqueue import WorkQueue
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
)
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger("lbspeaker.controller")

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
    service_writers: int = 4  # threads carrying allocations' writes (controller.servicewrites)


class Controller:
    """One controller replica; `start()`/`stop()` make it usable in-process (tests) and from main."""

    def __init__(self, rest: Rest, config: ControllerConfig | None = None,
                 on_lost_leadership: Callable[[], None] | None = None) -> None:
        self.rest = rest
        self.cfg = config or ControllerConfig()
        self.metrics = ControllerMetrics()
        self._on_lost = on_lost_leadership
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
        caches = Caches(self.services, self.namespaces, self.pools, self.nodes, self.l2advertisements,
                        self.bgpadvertisements)
        self._caches = caches.all()

        self._leading = threading.Event()
        self._stop = threading.Event()
        self._elector: LeaderElector | None = None
        self.ctx = Context(rest, self.cfg, self.queue, self.metrics, self.events, caches,
                           lease_held=lambda: self._elector is None or self._elector.lock.held,
                           stopping=self._stop)
        self._ready_to_write = self.ctx.ready_to_write   # leader AND restored
        # Worker-owned parts (only the worker thread calls them).
        self.pool_part = PoolsAndAdvertisements(self.ctx)
        self.service_part = ServiceReconciler(self.ctx, self.pool_part)
        self.writes = ServiceWrites(self.ctx, self.cfg.service_writers) if self.cfg.service_writers else None
        self.service_part.writes = self.writes
        self.config_state = ConfigurationStates(self.ctx, self.pool_part)

        self._node_labels: dict[str, dict[str, str]] = {}
        self._advertisement_specs: dict[tuple[str, str], Any] = {}
        self._pool_specs: dict[str, Any] = {}
        self._term = 0
        self._worker: threading.Thread | None = None
        self._http: HealthServer | None = None

    @property
    def alloc(self) -> Allocator:
        """The allocator of the current term (replaced by every restore)."""
        return self.ctx.alloc

    @property
    def stats(self) -> dict[str, int]:
        return self.ctx.stats

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for cache in self._caches:
            cache.start()
        if self.cfg.metrics_addr:
            self._http = HealthServer(self.cfg.metrics_addr, self.metrics.registry, self.healthz, self.readyz)
            self._http.start()
            log.info("metrics and probes on port %d", self._http.port)
        if self.writes is not None:
            self.writes.start()
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
        if self.writes is not None:
            self.writes.stop()  # what is still queued fails its leader check: nothing more is written
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

    # ------------------------------------------------------------------ event handlers (cache threads)

    def _on_service(self, _type: str, obj: dict[str, Any]) -> None:
        self.queue.add(SVC + F.key_of(obj))

    def _on_namespace(self, _type: str, obj: dict[str, Any]) -> None:
        # New labels may make a pool's namespaceSelector match: retry the Services still without an IP.
        ns = (obj.get("metadata") or {}).get("name")
        for key in self.service_part.failed_keys():
            if key.startswith(f"{ns}/"):
                self.queue.add(SVC + key)

    def _on_pool(self, type_: str, obj: dict[str, Any]) -> None:
        # Our own status writes come back as MODIFIED: only a spec change or a deletion matters.
        name = str((obj.get("metadata") or {}).get("name"))
        spec = None if type_ == "DELETED" else obj.get("spec")
        with self.ctx.node_lock:
            if name in self._pool_specs and self._pool_specs[name] == spec:
                return
            if spec is None:
                self._pool_specs.pop(name, None)
            else:
                self._pool_specs[name] = spec
        self.queue.add(POOLS_KEY)

    def _on_node(self, _type: str, obj: dict[str, Any]) -> None:
        nodes = self.nodes.items()
        ips = F.node_internal_ips(nodes)
        labels = {str(n["metadata"]["name"]): dict(n["metadata"].get("labels") or {}) for n in nodes}
        with self.ctx.node_lock:
            changed = ips != self.ctx.node_ips
            self.ctx.node_ips = ips
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
        with self.ctx.node_lock:
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
                        self.queue.add(SVC + F.key_of(svc))
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            started = time.perf_counter()
            handed_over = False  # a Service's write went to self.writes, which finishes the item
            try:
                if key.startswith("__restore__:"):
                    if int(key.split(":", 1)[1]) == self._term and self._leading.is_set():
                        self._restore()
                elif not self._leading.is_set() or not self._ready_to_write.is_set():
                    pass  # standby: the next term enqueues everything again
                elif key == POOLS_KEY:
                    self.service_part.after_pools(self.pool_part.apply_pools())
                    self.queue.add(ADVERTISEMENTS_KEY)  # pool names and labels decide what they select
                elif key == ADVERTISEMENTS_KEY:
                    self.pool_part.sync_advertisements()
                    self.queue.add(CONFIG_STATE_KEY)  # after both: pools and advertisements are known
                elif key == CONFIG_STATE_KEY:
                    self.config_state.sync()
                elif key.startswith(POOL):
                    self.pool_part.sync_pool_status(key[len(POOL):])
                elif key.startswith(SVC):
                    handed_over = self.service_part.sync_service(key[len(SVC):])
                if not handed_over:
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
                if not handed_over:
                    self.queue.done(key)
                self.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    def _restore(self) -> None:
        """Start a term: wait for the caches, then the Service reconciler restores every IP in a status."""
        deadline = time.monotonic() + self.cfg.cache_sync_timeout
        while not wait_all_synced(self._caches, 0.5):
            if self._stop.is_set() or not self._leading.is_set():
                return
            if time.monotonic() > deadline:
                log.warning("caches not synced after %.0fs; still waiting before allocating anything",
                            self.cfg.cache_sync_timeout)
                deadline = time.monotonic() + self.cfg.cache_sync_timeout
        # The last term's writes land (or fail their leader check) before statuses are read.
        if self.writes is not None and not self.writes.flush(self.cfg.cache_sync_timeout):
            log.warning("Service writes of the last term still in flight after %.0fs; restoring anyway",
                        self.cfg.cache_sync_timeout)
        self.config_state.reset()
        self.service_part.restore()


def start_controller(rest: Rest, config: ControllerConfig | None = None, **kwargs: Any) -> Controller:
    """Build and start a Controller (convenience for tests and benches)."""
    ctrl = Controller(rest, config, **kwargs)
    ctrl.start()
    return ctrl


__all__ = ["Controller", "ControllerConfig", "start_controller"]
