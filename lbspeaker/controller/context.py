"""What the controller's parts share: caches, the current term's allocator, the queue, and the
leader-checked writes.

The pools-and-advertisements part (`controller.pools`) and the Service reconciler
(`controller.services`) both run on the one worker thread and both write; this is the
one place where a write checks leadership first, so nothing is written unless this
replica holds the Lease and has finished restoring (`ready_to_write`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lbspeaker import facts as F
from lbspeaker.controller.allocator import Allocator
from lbspeaker.controller.metrics import ControllerMetrics
from lbspeaker.controller.workqueue import WorkQueue
from lbspeaker.kube.cache import WatchCache
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.resources import Resource
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.kube.status import update_status

if TYPE_CHECKING:
    from lbspeaker.controller.reconciler import ControllerConfig

log = logging.getLogger("lbspeaker.controller")

SVC = "svc:"     # work item: reconcile one Service
POOL = "pool:"   # work item: write one pool's status
POOLS_KEY = "pools"
ADVERTISEMENTS_KEY = "advertisements"
CONFIG_STATE_KEY = "configstate"


class NotLeader(Exception):
    """Raised before a write when this replica no longer holds the Lease."""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Caches:
    services: WatchCache
    namespaces: WatchCache
    pools: WatchCache
    nodes: WatchCache
    l2advertisements: WatchCache
    bgpadvertisements: WatchCache

    def all(self) -> tuple[WatchCache, ...]:
        return (self.services, self.namespaces, self.pools, self.nodes, self.l2advertisements,
                self.bgpadvertisements)


@dataclass
class Context:
    """Shared by the worker's parts. `alloc` is replaced at the start of every term (restore)."""

    rest: Rest
    cfg: ControllerConfig
    queue: WorkQueue[str]
    metrics: ControllerMetrics
    events: EventRecorder
    caches: Caches
    lease_held: Callable[[], bool]               # the elector's last renewal is recent enough
    alloc: Allocator = field(default_factory=Allocator)
    ready_to_write: threading.Event = field(default_factory=threading.Event)   # leader AND restored
    stopping: threading.Event = field(default_factory=threading.Event)
    stats: dict[str, int] = field(default_factory=lambda: {
        "allocated": 0, "failed": 0, "released": 0, "writes": 0, "restored": 0})
    node_lock: threading.Lock = field(default_factory=threading.Lock)
    node_ips: dict[str, str] = field(default_factory=dict)   # guarded by node_lock

    def check_leader(self) -> None:
        if not self.ready_to_write.is_set() or self.stopping.is_set():
            raise NotLeader()
        if not self.lease_held():
            # Our last successful renewal is older than a lease duration: somebody may hold it now.
            raise NotLeader()

    def event(self, obj: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Events are best effort: a failed Event never fails a reconcile."""
        if not self.ready_to_write.is_set():
            return
        try:
            self.events.event(obj, etype, reason, message)
        except Exception as exc:  # any failure here must not undo the allocation
            log.debug("event %s on %s not written: %s", reason, F.key_of(obj), exc)

    def svc_by_key(self, key: str) -> dict[str, Any] | None:
        ns, _, name = key.partition("/")
        return self.caches.services.get(ns, name)

    def ns_labels(self, svc: Mapping[str, Any]) -> dict[str, str]:
        ns = (svc.get("metadata") or {}).get("namespace")
        obj = self.caches.namespaces.get(None, ns) if ns else None
        return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def write_status(ctx: Context, resource: Resource, obj: Mapping[str, Any],
                 mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """PUT /status from the cached copy (one request when it is current); on 409 fall back to
    update_status, which re-reads and re-applies `mutate` with backoff. Leader-checked first.

    A module-level function, so tools/rbac follows `resource` from every call site."""
    meta = obj.get("metadata") or {}
    ctx.check_leader()
    body = {k: v for k, v in obj.items() if k != "status"}
    body["status"] = mutate(dict(obj))
    try:
        ctx.rest.replace_status(resource, body)
        ctx.stats["writes"] += 1
        return
    except ApiError as exc:
        if not exc.conflict:
            raise
    ctx.check_leader()
    update_status(ctx.rest, resource, meta.get("namespace"), meta["name"], mutate)
    ctx.stats["writes"] += 1


def with_conditions(conditions: list[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A status mutator that sets `conditions` and keeps whatever else the status holds."""
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        return {**(obj.get("status") or {}), "conditions": conditions}
    return mutate


__all__ = ["ADVERTISEMENTS_KEY", "CONFIG_STATE_KEY", "POOL", "POOLS_KEY", "SVC", "Caches", "Context",
           "NotLeader", "now", "with_conditions", "write_status"]
