"""The Service reconciler: restore at the start of a term, then allocate or release per Service and
write its status and pool annotation.

Restore rebuilds the allocator from the IPs in Service statuses before anything new is
handed out, so a restart or failover moves no IP. Beyond what the allocator holds for a
Service, every IP its status still names stays taken (a "status claim", allocator key
`<key> (old status) <ip>`) until the status stops naming it, and a status naming an IP the
Service must not keep is cleared: an IP is never in two statuses without a common
sharing key (issue 13). Runs on the controller's one worker; writes through `Context`, an
allocation's writes in flight on `controller.servicewrites` while the worker goes on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from lbspeaker import facts as F
from lbspeaker.api import constants as C
from lbspeaker.controller.allocator import Allocator
from lbspeaker.controller.context import POOLS_KEY, SVC, Context, write_status
from lbspeaker.controller.pools import OLD_STATUS, PoolsAndAdvertisements
from lbspeaker.controller.servicewrites import ServiceWrites
from lbspeaker.kube.resources import SERVICES
from lbspeaker.kube.status import patch_annotations

log = logging.getLogger("lbspeaker.controller")

__all__ = ["OLD_STATUS", "ServiceReconciler"]


class ServiceReconciler:
    """Worker-owned state of the Services: failures (Event sent once), orphans, status claims."""

    def __init__(self, ctx: Context, pools: PoolsAndAdvertisements) -> None:
        self.ctx = ctx
        self.pools = pools
        self._failed: dict[str, str] = {}          # key -> last failure message (Event sent once)
        self._orphans: dict[str, tuple[str, ...]] = {}  # key -> IPs no pool covers (Event sent once)
        self._claims: dict[str, dict[str, str | None]] = {}  # key -> its status claims (-> pool)
        # Where allocations' writes go while the worker goes on (`controller.servicewrites`);
        # None, or not running (tests that call `sync_service` directly): written inline.
        self.writes: ServiceWrites | None = None
        self._handover: Callable[[], None] | None = None  # this reconcile's write, handed over after it

    def failed_keys(self) -> list[str]:
        """Services whose allocation failed (retried when something they may need changes)."""
        return list(self._failed)

    def after_pools(self, changed: bool) -> None:
        """After a pool sync: say which IPs are outside every pool; retry what may now succeed."""
        self.report_orphans()
        if changed:
            for key in list(self._failed):
                self.ctx.queue.add(SVC + key)
            # A pool annotation may now point to an existing pool; Services with no IP at all too.
            for svc in self.ctx.caches.services.items():
                if F.wants_ip(svc, self.ctx.cfg.lb_class) and not F.ingress_ips(svc):
                    self.ctx.queue.add(SVC + F.key_of(svc))

    def restore(self) -> None:
        """Start a term (caches synced): load pools, then re-take every IP already in a status."""
        self.ctx.alloc = Allocator()
        self._claims.clear()
        self._failed.clear()
        self._orphans.clear()
        self.pools.reset()
        self.pools.apply_pools()
        restored = 0
        conflicts: list[tuple[dict[str, Any], str]] = []
        services = sorted(self.ctx.caches.services.items(), key=lambda s: ((s.get("metadata") or {}).get(
            "creationTimestamp") or "", F.key_of(s)))
        for svc in services:
            ips = F.ingress_ips(svc)
            if not ips or not F.wants_ip(svc, self.ctx.cfg.lb_class):
                continue
            key = F.key_of(svc)
            request = F.service_request_lenient(svc, self.ctx.ns_labels(svc))
            # The annotation names the pool even when that pool is gone or shrunk, so holders() still
            # lists the Service for the operator's Event.
            out = self.ctx.alloc.restore(key, ips, request, pool=self._allocated_from(svc))
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
            if F.ingress_ips(svc):
                self._track_status(F.key_of(svc), svc, F.ingress_ips(svc), {})
        self.ctx.stats["restored"] = restored
        log.info("restored %d Service allocations from their status; now allocating", restored)
        self.ctx.ready_to_write.set()
        for svc, message in conflicts:
            self.ctx.event(svc, "Warning", "IPConflict", message)
        self.pools.publish_pool_metrics()
        self.ctx.queue.add(POOLS_KEY)
        for svc in services:
            self.ctx.queue.add(SVC + F.key_of(svc))
        cached = {p["metadata"]["name"] for p in self.ctx.caches.pools.items()}
        for name in self.pools.poolset.active.keys() | cached:
            self.pools.queue_pool_status(name)
        # Services restored outside every pool (their pool was deleted while we were down): say so.
        self.report_orphans()

    def _outside_pools(self) -> dict[str, tuple[str, ...]]:
        """Service key -> its IPs that no current pool covers."""
        out: dict[str, tuple[str, ...]] = {}
        for key, ips in self.ctx.alloc.assignments().items():
            if OLD_STATUS in key:
                continue
            a = self.ctx.alloc.assigned(key)
            if a is not None and a.orphaned:
                pools = self.pools.poolset.active.values()
                out[key] = tuple(ip for ip in ips if not any(p.contains(ip) for p in pools))
        return out

    def report_orphans(self) -> None:
        """Event + log once for every Service that holds IPs no current pool covers."""
        now = self._outside_pools()
        for key, ips in now.items():
            if self._orphans.get(key) == ips:
                continue
            self._orphans[key] = ips
            a = self.ctx.alloc.assigned(key)
            was_pool = (a.pool if a else None) or "?"
            msg = (f"IP(s) {','.join(ips)} of this Service are no longer in any IPAddressPool "
                   f"(was {was_pool}). The Service keeps them and nothing is moved. To keep them, "
                   "re-add the addresses to a pool; to move the Service, re-create it or set "
                   f"{C.ANNOTATION_LOADBALANCER_IPS} to an address inside a pool")
            log.warning("service=%s ips=%s pool=%s reason=OutsideAllPools: kept; operator action needed",
                        key, ",".join(ips), was_pool)
            svc = self.ctx.svc_by_key(key)
            if svc is not None and self.ctx.ready_to_write.is_set():
                self.ctx.event(svc, "Warning", "IPOutsidePools", msg)
        for key in list(self._orphans):
            if key not in now:
                del self._orphans[key]
                log.info("service=%s ips back inside a pool", key)
        self.ctx.metrics.orphaned_services.set(len(self._orphans))

    def sync_service(self, key: str) -> bool:
        """Reconcile one Service; True when its write was handed to `writes`, which then finishes
        the work item (the worker must not mark it done)."""
        svc = self.ctx.svc_by_key(key)
        # The Service may take back an IP its own old status names: lift its claims meanwhile.
        before = self._claims.pop(key, {})
        for claim in before:
            self.ctx.alloc.release(claim)
        named = F.ingress_ips(svc) if svc is not None else []
        self._handover = None
        try:
            named = self._converge_service(key, svc)
        finally:
            # whatever happened (a write may have failed), the IPs its status names stay taken
            self._track_status(key, svc, named, before)
        write, self._handover = self._handover, None
        if write is None:
            return False
        assert self.writes is not None
        self.writes.submit(key, write)
        return True

    def _converge_service(self, key: str, svc: dict[str, Any] | None) -> list[str]:
        """Allocate or release for one Service and write it; return the IPs its status now names."""
        assignment = self.ctx.alloc.assigned(key)
        held = list(assignment.ips) if assignment else []
        pool = assignment.pool if assignment else None
        if svc is None:
            self._failed.pop(key, None)
            if held:
                self.ctx.alloc.release(key)
                self._orphans.pop(key, None)
                self.ctx.metrics.allocations.labels(result="released").inc()
                self.ctx.stats["released"] += 1
                log.info("service=%s ips=%s pool=%s reason=ServiceDeleted: released",
                         key, ",".join(held), pool)
                self._after_release(pool)
            return []
        if not F.wants_ip(svc, self.ctx.cfg.lb_class):
            self._failed.pop(key, None)
            named = F.ingress_ips(svc)
            if self._ours_to_clear(svc, held):
                # Status first: if the write fails the IP stays held and the retry clears it.
                self.ctx.check_leader()
                self._write_service(svc, [], None)
                named = []
            if held:
                self.ctx.alloc.release(key)
                self._orphans.pop(key, None)
                why = "NotLoadBalancer" if not F.is_load_balancer(svc) else "OtherLoadBalancerClass"
                self.ctx.metrics.allocations.labels(result="released").inc()
                self.ctx.stats["released"] += 1
                log.info("service=%s ips=%s pool=%s reason=%s: released", key, ",".join(held), pool, why)
                self._after_release(pool)
            return named
        try:
            request = F.service_request(svc, self.ctx.ns_labels(svc))
        except F.ServiceError as exc:
            self._fail(svc, key, "InvalidRequest", str(exc))
            return self._status_to_holdings(svc, held, pool)
        out = self.ctx.alloc.allocate(request)
        if not out.ok:
            self._fail(svc, key, out.reason, out.message)
            return self._status_to_holdings(svc, list(out.ips), out.pool)
        self._failed.pop(key, None)
        new_ips = list(out.ips)
        current = F.ingress_ips(svc)
        old_pool, pool = pool, out.pool
        moved = set(new_ips) != set(current)
        named = current
        if moved or self._pool_annotation(svc) != pool or not self._ingress_is_ours(svc, new_ips):
            self.ctx.check_leader()
            if self.writes is not None and self.writes.running:
                # In flight, the status names the old IPs or the new ones: both stay taken.
                self._handover = functools.partial(self._write_service, svc, new_ips, pool)
                named = list(dict.fromkeys([*current, *new_ips]))
            else:
                self._write_service(svc, new_ips, pool)
                named = new_ips
        if moved:
            result = "allocated"
            self.ctx.stats["allocated"] += 1
            self.ctx.metrics.allocations.labels(result=result).inc()
            log.info("service=%s ips=%s pool=%s reason=%s: allocated%s", key, ",".join(new_ips), pool,
                     out.reason or "Allocated", f" (was {','.join(current)})" if current else "")
            self.ctx.event(svc, "Normal", "IPAllocated", f"Assigned IP {', '.join(new_ips)} from pool {pool}")
            if held and held != new_ips:
                self._after_release(old_pool)
            self.pools.queue_pool_status(pool)
            self.pools.publish_pool_metrics()
        for warning in out.warnings:
            log.warning("service=%s ips=%s pool=%s: %s", key, ",".join(new_ips), pool, warning)
        return named

    def _after_release(self, pool: str | None) -> None:
        """Freed space may satisfy a Service that failed; the pool's counts changed."""
        if pool:
            self.pools.queue_pool_status(pool)
        for other in list(self._failed):
            self.ctx.queue.add(SVC + other)
        self.pools.publish_pool_metrics()

    def _status_to_holdings(self, svc: Mapping[str, Any], held: list[str], pool: str | None) -> list[str]:
        """After a failed allocation: a status naming IPs the Service does not hold (a restore
        conflict, a status written by hand) is set back to what it holds, as MetalLB clears it;
        return the IPs the status names now."""
        current = F.ingress_ips(svc)
        if set(current) <= set(held):
            return current
        self.ctx.check_leader()
        self._write_service(svc, held, pool if held else None)
        log.info("service=%s ips=%s: status named %s, which it does not hold; set to what it holds",
                 F.key_of(svc), ",".join(held) or "-", ",".join(current))
        return held

    def _ours_to_clear(self, svc: Mapping[str, Any], held: list[str]) -> bool:
        """Should the status and pool annotation of a Service that is not for us be cleared?

        A Service that is not type LoadBalancer: always (MetalLB's clearServiceState does the
        same; its ingress means nothing). Another loadBalancerClass: only what we wrote (our
        pool annotation, or the IPs we hold), never another implementation's status.
        """
        if not F.is_load_balancer(svc):
            return bool(F.ingress_ips(svc)) or self._pool_annotation(svc) is not None
        if self._pool_annotation(svc) is not None:
            return True
        return bool(held) and set(F.ingress_ips(svc)) == set(held)

    def _track_status(self, key: str, svc: Mapping[str, Any] | None, named: list[str],
                      before: Mapping[str, str | None]) -> None:
        """Keep every IP that the status of `key` names (`named`) but `key` does not hold taken.

        Each under its own allocator key `<key> (old status) <ip>`, with the Service's own
        sharing settings, so only a Service that could share with it anyway may use the IP
        meanwhile. Released as soon as the status stops naming the IP. `before`: the claims
        lifted for this reconcile (claim key -> pool).
        """
        assignment = self.ctx.alloc.assigned(key)
        mine = assignment.ips if assignment else ()
        extra = [ip for ip in dict.fromkeys(named) if ip not in mine]
        kept: dict[str, str | None] = {}
        if extra and svc is not None:
            try:
                request = F.service_request_lenient(svc, self.ctx.ns_labels(svc))
            except F.ServiceError:
                request = F.ServiceRequest(key=key)
            for ip in extra:
                claim = f"{key}{OLD_STATUS} {ip}"
                out = self.ctx.alloc.restore(claim, [ip], replace(request, key=claim), lazy=False)
                if out.ok:  # else another Service holds it already, which keeps it just as taken
                    kept[claim] = out.pool
                    if claim not in before:
                        log.info("service=%s ip=%s: still named in its status, kept out of allocation "
                                 "until the status stops naming it", key, ip)
                        self.pools.queue_pool_status(out.pool)
        if kept:
            self._claims[key] = kept
        for claim, pool in before.items():
            if claim not in kept:
                self._after_release(pool)

    def _fail(self, svc: Mapping[str, Any], key: str, reason: str, message: str) -> None:
        self.ctx.metrics.allocations.labels(result="failed").inc()
        if self._failed.get(key) == message:
            return
        self._failed[key] = message
        self.ctx.stats["failed"] += 1
        log.warning("service=%s ip=- pool=%s reason=%s: allocation failed: %s", key,
                    C.annotation((svc.get("metadata") or {}).get("annotations"), C.ADDRESS_POOL) or "-",
                    reason, message)
        self.ctx.event(svc, "Warning", "AllocationFailed", f"Failed to allocate IP for {key}: {message}")

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
            write_status(self.ctx, SERVICES, svc, mutate)
        if self._pool_annotation(svc) != pool:
            meta = svc.get("metadata") or {}
            self.ctx.check_leader()
            changes: dict[str, str | None] = {C.ANNOTATION_IP_ALLOCATED_FROM_POOL: pool}
            ann = meta.get("annotations") or {}
            for prefix in C.ANNOTATION_PREFIXES[1:]:  # MetalLB's copies would contradict ours
                if prefix + C.IP_ALLOCATED_FROM_POOL in ann:
                    changes[prefix + C.IP_ALLOCATED_FROM_POOL] = None
            patch_annotations(self.ctx.rest, SERVICES, meta.get("namespace"), meta["name"], changes)
            self.ctx.stats["writes"] += 1
