"""Pools and advertisements: validate the IPAddressPools and feed the allocator, write pool status
(counts + conditions, batched), and the L2/BGPAdvertisements' Ready condition.

Runs on the controller's one worker (`controller.reconciler`), writes through the
leader-checked `Context`. A pool that becomes invalid keeps running on its last valid
spec (`translate.validate_pools`); problems are reported once as an Event and a log line.
"""

from __future__ import annotations

import logging

from lbspeaker import facts as F
from lbspeaker.controller import translate as T
from lbspeaker.controller.advertisements import advertisement_conditions
from lbspeaker.controller.context import POOL, Context, now, with_conditions, write_status
from lbspeaker.kube.cache import WatchCache
from lbspeaker.kube.resources import BGPADVERTISEMENTS, IPADDRESSPOOLS, L2ADVERTISEMENTS, Resource

log = logging.getLogger("lbspeaker.controller")

# Allocator keys the Service reconciler holds IPs under while a status still names them
# (see `controller.services`); they are not Services of a pool.
OLD_STATUS = " (old status)"
INT64_MAX = 2**63 - 1

__all__ = ["OLD_STATUS", "PoolsAndAdvertisements"]


class PoolsAndAdvertisements:
    """Worker-owned state of the pools: the last valid spec of each, the active set, reported problems."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._last_valid: dict[str, F.Pool] = {}
        self.poolset = T.PoolSet(active={}, problems={})
        self._reported_problems: dict[str, str] = {}
        self._pool_status_pending: set[str] = set()
        self.pool_status_delay = 0.2  # batch pool status writes: at most ~5 per second per pool
        self.pools_loaded = False
        # (kind, name) -> the advertisement's Ready=False as a Problem (the ConfigurationState reads it)
        self.advertisement_problems: dict[tuple[str, str], F.Problem] = {}

    def reset(self) -> None:
        """A new term: every problem is reported again, every pool status rechecked."""
        self._pool_status_pending.clear()
        self._reported_problems.clear()

    def apply_pools(self) -> bool:
        """Validate every pool, feed the allocator, report problems; True if the active pools changed."""
        with self.ctx.node_lock:
            self.ctx.node_ips = F.node_internal_ips(self.ctx.caches.nodes.items())
            node_ips = dict(self.ctx.node_ips)
        objs = self.ctx.caches.pools.items()
        result = T.validate_pools(objs, node_ips, self._last_valid)
        current_names = {str((o.get("metadata") or {}).get("name")) for o in objs}
        # Remember the last valid spec of every pool that is valid now; forget deleted pools.
        for name, spec in result.active.items():
            if name not in result.problems:
                self._last_valid[name] = spec
        for name in list(self._last_valid):
            if name not in current_names:
                del self._last_valid[name]
        changed = result.active != self.poolset.active
        old_names = set(self.poolset.active)
        self.poolset = result
        ordered = sorted(result.active.values(), key=lambda p: (p.created, p.name))
        refused = {name: problem.message for name, problem in result.problems.items()
                   if name not in result.active}
        report = self.ctx.alloc.set_pools(list(ordered), refused)
        for name, why in report.rejected.items():  # validate_pools already refused overlaps
            log.warning("pool=%s refused by the allocator: %s", name, why)
        self.pools_loaded = True
        self.ctx.metrics.config_loaded.set(1)
        self.ctx.metrics.config_stale.set(1 if result.problems else 0)
        for name in current_names:
            self.ctx.metrics.pool_valid.labels(pool=name).set(0 if name in result.problems else 1)
        for name in old_names - set(result.active) - current_names:
            self.ctx.metrics.forget_pool(name)
        # Report newly found problems once (Event + log); clear the ones that went away.
        by_name = {str((o.get("metadata") or {}).get("name")): o for o in objs}
        for name, problem in result.problems.items():
            if self._reported_problems.get(name) == problem.message or not self.ctx.ready_to_write.is_set():
                continue  # before restore is done, the POOLS_KEY queued by _restore reports it
            self._reported_problems[name] = problem.message
            stale = result.stale(name)
            log.warning("pool=%s invalid reason=%s: %s%s", name, problem.reason, problem.message,
                        " (running on its last valid configuration)" if stale else "")
            obj = by_name.get(name)
            if obj is not None:
                self.ctx.event(obj, "Warning", "InvalidConfiguration",
                               f"{problem.message}." + (" The last valid configuration keeps running."
                                                        if stale else " The pool is not used."))
        for name in list(self._reported_problems):
            if name not in result.problems:
                del self._reported_problems[name]
                if name in by_name:
                    log.info("pool=%s is valid again", name)
        for name in current_names | old_names:
            self.queue_pool_status(name)
        if changed:
            log.info("pools now %s", ", ".join(
                f"{n}[{' '.join(str(r) for r in s.ranges)}]" for n, s in sorted(result.active.items()))
                or "<none>")
        self.publish_pool_metrics()
        return changed

    def pool_counts(self, name: str) -> dict[str, int]:
        try:
            st = self.ctx.alloc.pool_stats(name)
            cap4, cap6 = self.ctx.alloc.pool_capacity(name)
        except KeyError:
            return {"assignedIPv4": 0, "assignedIPv6": 0, "availableIPv4": 0, "availableIPv6": 0,
                    "totalIPv4": 0, "totalIPv6": 0}
        counts = {"assignedIPv4": st.assigned_v4, "assignedIPv6": st.assigned_v6,
                  "availableIPv4": st.available_v4, "availableIPv6": st.available_v6,
                  "totalIPv4": cap4, "totalIPv6": cap6}
        # Kubernetes integers are int64: a /64 has 2^64 addresses. MetalLB saturates; so do we.
        return {k: min(v, INT64_MAX) for k, v in counts.items()}

    def holders_outside(self, name: str) -> list[tuple[str, tuple[str, ...]]]:
        """Services recorded on pool `name` holding IPs no pool covers now (the pool shrank)."""
        out: list[tuple[str, tuple[str, ...]]] = []
        if not self.ctx.alloc.any_outside():  # the common case, without a pass over every holder
            return out
        pools = self.poolset.active.values()
        for key in self.ctx.alloc.holders(name):
            if OLD_STATUS in key:  # the Service reconciler's status claims
                continue
            a = self.ctx.alloc.assigned(key)
            if a is not None and a.orphaned:
                out.append((key, tuple(ip for ip in a.ips if not any(p.contains(ip) for p in pools))))
        return out

    def publish_pool_metrics(self) -> None:
        for name in self.poolset.active:
            counts = self.pool_counts(name)
            self.ctx.metrics.set_pool(name, counts["assignedIPv4"] + counts["assignedIPv6"],
                                  counts["totalIPv4"] + counts["totalIPv6"])

    def queue_pool_status(self, name: str | None) -> None:
        """Schedule a status write for the pool, batched: many allocations make one write."""
        if not name or name in self._pool_status_pending:
            return
        self._pool_status_pending.add(name)
        self.ctx.queue.add_after(POOL + name, self.pool_status_delay)

    def sync_pool_status(self, name: str) -> None:
        self._pool_status_pending.discard(name)
        obj = self.ctx.caches.pools.get(self.ctx.cfg.namespace, name)
        if obj is None:
            return
        counts = self.pool_counts(name)
        problem = self.poolset.problems.get(name)
        outside = self.holders_outside(name)
        meta = obj.get("metadata") or {}
        old_status = obj.get("status") or {}
        desired = T.pool_status(counts, problem, self.poolset.stale(name), outside, meta.get("generation"),
                                old_status, now())
        if all(old_status.get(k) == v for k, v in desired.items()):
            return
        self.ctx.check_leader()
        write_status(self.ctx, IPADDRESSPOOLS, obj, lambda o: {**(o.get("status") or {}), **desired})
        log.info("pool=%s status assigned(v4/v6)=%d/%d available=%d/%d%s", name, desired["assignedIPv4"],
                 desired["assignedIPv6"], desired["availableIPv4"], desired["availableIPv6"],
                 f" outside={len(outside)}" if outside else "")

    def sync_advertisements(self) -> None:
        """Write each advertisement's Ready condition when it changed (unknown pool, selectors that
        match nothing, or what it announces from where)."""
        self.sync_advertisement_status(L2ADVERTISEMENTS, self.ctx.caches.l2advertisements)
        self.sync_advertisement_status(BGPADVERTISEMENTS, self.ctx.caches.bgpadvertisements)

    def sync_advertisement_status(self, resource: Resource, cache: WatchCache) -> None:
        pools, nodes = self.ctx.caches.pools.items(), self.ctx.caches.nodes.items()
        for key in [k for k in self.advertisement_problems if k[0] == resource.kind]:
            del self.advertisement_problems[key]
        for adv in cache.items():
            old = adv.get("status") or {}
            conditions = advertisement_conditions(
                adv, pools, nodes, old.get("conditions"), now(),
                bgp_advertisements=cache.items() if resource is BGPADVERTISEMENTS else None)
            ready = conditions[0]
            if ready["status"] == "False":
                name = str(adv["metadata"]["name"])
                self.advertisement_problems[(resource.kind, name)] = F.Problem(
                    resource.kind, name, str(ready["reason"]), str(ready["message"]))
            if old.get("conditions") == conditions:
                continue
            was = {c.get("type"): c for c in old.get("conditions") or []}.get("Ready") or {}
            if ready["status"] == "False" and was.get("message") != ready["message"]:
                self.ctx.event(adv, "Warning", ready["reason"], ready["message"])
            log.info("%s=%s ready=%s reason=%s: %s", resource.kind, adv["metadata"]["name"], ready["status"],
                     ready["reason"], ready["message"])
            write_status(self.ctx, resource, adv, with_conditions(conditions))
