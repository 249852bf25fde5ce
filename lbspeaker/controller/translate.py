"""Pure translation between Kubernetes objects (plain JSON dicts) and the allocator.

* Service dict (+ its namespace's labels) -> ServiceInfo -> allocator ServiceRequest;
* IPAddressPool dicts (+ node InternalIPs + last valid configurations) -> allocator
  Pools and the problems the CRD schema could not catch (overlaps, node IPs,
  IPv6 start > end);
* pool status (counts + a `Valid` condition) to write back.

No I/O here: the reconciler feeds it what the caches hold, so every rule can be
tested with tables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbspeaker.api import constants as C
from lbspeaker.api.addresses import AddressRange, AddressSyntaxError
from lbspeaker.api.constants import class_matches
from lbspeaker.api.models import (
    CONDITION_NODE_ADDRESS,
    CONDITION_ORPHANS,
    CONDITION_OVERLAP,
    CONDITION_READY,
    MAX_ORPHANS,
    IPAddressPoolSpec,
)
from lbspeaker.controller.allocator import Pool, ServiceRequest

Obj = Mapping[str, Any]

FAMILY_OF = {"IPv4": 4, "IPv6": 6}


def key_of(obj: Obj) -> str:
    """`namespace/name` (or `name` for cluster-scoped objects), the queue and allocator key."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def is_load_balancer(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") == "LoadBalancer"


def wants_ip(svc: Obj, lb_class: str | None) -> bool:
    """Is this Service ours to give an IP to?"""
    return is_load_balancer(svc) and class_matches(svc, lb_class)


def ingress_ips(svc: Obj) -> list[str]:
    """IPs currently written in `status.loadBalancer.ingress` (the source of truth on restart)."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ingress if isinstance(i, Mapping) and i.get("ip")]


class ServiceError(ValueError):
    """A Service whose spec/annotations cannot be turned into a request (the message says why)."""


@dataclass(frozen=True)
class ServiceInfo:
    """What the allocator needs to know about one Service, independent of the allocator's types."""

    key: str
    namespace: str
    name: str
    families: tuple[int, ...]          # spec.ipFamilies order, e.g. (4,) or (4, 6)
    family_policy: str                 # SingleStack | PreferDualStack | RequireDualStack
    requested_ips: tuple[str, ...] = ()
    pool: str | None = None
    sharing_key: str | None = None
    ports: tuple[tuple[str, int], ...] = ()
    backend_key: str | None = None     # selector, only for externalTrafficPolicy Local (sharing rule)
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


def _families(spec: Mapping[str, Any]) -> tuple[tuple[int, ...], str]:
    """spec.ipFamilies (else the clusterIPs' families, else IPv4) and the policy, as the API gave them.

    The allocator applies the policy (SingleStack uses the first family) and refuses
    impossible combinations with a message, so nothing is second-guessed here.
    """
    policy = spec.get("ipFamilyPolicy") or "SingleStack"
    names = spec.get("ipFamilies") or []
    fams = [FAMILY_OF[n] for n in names if n in FAMILY_OF]
    if not fams:
        cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        for ip in cluster_ips:
            try:
                fams.append(ipaddress.ip_address(ip).version)
            except ValueError:
                continue
    if not fams:
        fams = [4]
    return tuple(dict.fromkeys(fams)), policy


def requested_ips(svc: Obj) -> tuple[str, ...]:
    """The IPs the user asked for; raise ServiceError on the combinations MetalLB rejects."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    ann = C.annotation(meta.get("annotations"), C.LOADBALANCER_IPS)
    legacy = spec.get("loadBalancerIP") or ""
    if ann and legacy:
        raise ServiceError(
            f"both the {C.ANNOTATION_LOADBALANCER_IPS} annotation and spec.loadBalancerIP are set: "
            "keep only the annotation")
    text = ann or legacy
    if not text:
        return ()
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ServiceError(
                f"requested IP {part!r} is not an IP address: fix {C.ANNOTATION_LOADBALANCER_IPS} "
                "(comma-separated addresses, at most one per family)") from None
    fams = [ipaddress.ip_address(i).version for i in out]
    if len(fams) != len(set(fams)):
        raise ServiceError(f"requested IPs {','.join(out)} name two addresses of one family: "
                           "ask for at most one IPv4 and one IPv6 address")
    return tuple(out)


def service_info(svc: Obj, namespace_labels: Mapping[str, str] | None = None) -> ServiceInfo:
    """Read one Service; raise ServiceError if its request is malformed."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    ann = meta.get("annotations") or {}
    fams, policy = _families(spec)
    req = requested_ips(svc)
    ports = tuple(sorted(
        (str(p.get("protocol") or "TCP"), int(p.get("port") or 0)) for p in spec.get("ports") or []))
    backend = None
    if spec.get("externalTrafficPolicy") == "Local":
        sel = spec.get("selector") or {}
        backend = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    sharing = C.annotation(ann, C.ALLOW_SHARED_IP) or None
    pool = C.annotation(ann, C.ADDRESS_POOL) or None
    return ServiceInfo(
        key=key_of(svc),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        families=fams,
        family_policy=policy,
        requested_ips=req,
        pool=pool,
        sharing_key=sharing,
        ports=ports,
        backend_key=backend,
        labels=dict(meta.get("labels") or {}),
        namespace_labels=dict(namespace_labels or {}),
    )


def service_info_lenient(svc: Obj, namespace_labels: Mapping[str, str] | None = None) -> ServiceInfo:
    """Like service_info but ignores a malformed IP request (used on restore: keep what is in status)."""
    try:
        return service_info(svc, namespace_labels)
    except ServiceError:
        meta = dict(svc.get("metadata") or {})
        ann = {k: v for k, v in (meta.get("annotations") or {}).items()
               if not k.endswith("/" + C.LOADBALANCER_IPS)}
        spec = {k: v for k, v in (svc.get("spec") or {}).items() if k != "loadBalancerIP"}
        return service_info({**svc, "metadata": {**meta, "annotations": ann}, "spec": spec}, namespace_labels)


def to_request(info: ServiceInfo) -> ServiceRequest:
    """ServiceInfo -> the allocator's ServiceRequest."""
    return ServiceRequest(
        key=info.key,
        namespace=info.namespace,
        labels=info.labels,
        namespace_labels=info.namespace_labels,
        families=info.families,
        family_policy=info.family_policy,
        requested_ips=info.requested_ips,
        requested_pool=info.pool,
        sharing_key=info.sharing_key,
        ports=info.ports,
        backend_key=info.backend_key,
    )


# ---------------------------------------------------------------------------------------------
# Pools


@dataclass(frozen=True)
class PoolSpec(Pool):
    """One IPAddressPool as the allocator takes it, plus its creationTimestamp (an overlap goes
    to the older pool); equal specs compare equal (used to spot changes)."""

    created: str = ""

    def overlaps(self, other: PoolSpec) -> list[tuple[AddressRange, AddressRange]]:
        return [(a, b) for a in self.ranges for b in other.ranges if a.overlaps(b)]

    def covers(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(r.contains(addr) for r in self.ranges)


def parse_pool(obj: Obj) -> PoolSpec:
    """Parse an IPAddressPool dict; raise AddressSyntaxError/ValueError with a user-facing message."""
    meta = obj.get("metadata") or {}
    # The shared model checks what the CRD schema checks (and what CEL cannot, e.g. IPv6 order).
    model = IPAddressPoolSpec.model_validate(obj.get("spec") or {})
    spec = model.model_dump()
    if not model.addresses:
        raise ValueError("spec.addresses is empty: list at least one CIDR or start-end range")
    ranges = tuple(model.ranges())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            if a.overlaps(b):
                raise ValueError(f"addresses {a} and {b} of this pool overlap: list each address once")
    alloc = spec.get("serviceAllocation") or {}
    prio = alloc.get("priority")
    return PoolSpec(
        name=str(meta.get("name")),
        ranges=ranges,
        auto_assign=bool(spec.get("autoAssign", True)),
        avoid_buggy_ips=bool(spec.get("avoidBuggyIPs", False)),
        priority=int(prio) if prio is not None else None,
        namespaces=tuple(alloc.get("namespaces") or ()),
        namespace_selectors=tuple(alloc.get("namespaceSelectors") or ()),
        service_selectors=tuple(alloc.get("serviceSelectors") or ()),
        created=str(meta.get("creationTimestamp") or ""),
    )


@dataclass
class PoolProblem:
    """Why a pool's current spec is not in use (reason is a CamelCase condition reason)."""

    reason: str
    message: str


@dataclass
class PoolSet:
    """The outcome of validating all pools together.

    `active` is what the allocator runs on: each pool's current spec when valid,
    else its last valid spec (if it ever had one). `problems` explains every pool
    whose current spec was refused.
    """

    active: dict[str, PoolSpec]
    problems: dict[str, PoolProblem]

    def stale(self, name: str) -> bool:
        """True when the pool runs on an older configuration than its current spec."""
        return name in self.problems and name in self.active


def node_internal_ips(nodes: Iterable[Obj]) -> dict[str, str]:
    """InternalIP address -> node name, for the 'pool covers a node' check."""
    out: dict[str, str] = {}
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name"))
        for addr in (node.get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP" and addr.get("address"):
                out[str(addr["address"])] = name
    return out


def _short_error(exc: Exception) -> str:
    """One line from a pydantic ValidationError (or any error), for a condition message."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = []
            for e in errors():
                loc = ".".join(str(x) for x in e.get("loc", ()))
                parts.append(f"spec.{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
            return "; ".join(parts)
        except Exception:  # a non-pydantic exception with an errors attribute
            pass
    return str(exc)


def validate_pools(pool_objs: Iterable[Obj], node_ips: Mapping[str, str],
                   last_valid: Mapping[str, PoolSpec]) -> PoolSet:
    """Accept pools one by one against the ones accepted so far; refuse overlaps and node IPs.

    Order decides who wins an overlap: pools whose spec did not change since it
    was last accepted first (a running pool is never pushed out by a newcomer),
    then changed pools, then new ones, each by creation time and name. A refused
    pool keeps its last valid spec when that still fits.
    """
    parsed: dict[str, PoolSpec] = {}
    problems: dict[str, PoolProblem] = {}
    created: dict[str, str] = {}
    for obj in pool_objs:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        created[name] = str(meta.get("creationTimestamp") or "")
        try:
            parsed[name] = parse_pool(obj)
        except (AddressSyntaxError, ValueError, TypeError) as exc:
            problems[name] = PoolProblem("InvalidSpec", _short_error(exc))

    def rank(name: str) -> tuple[int, str, str]:
        prev = last_valid.get(name)
        cur = parsed.get(name)
        group = 0 if prev is not None and cur == prev else 1 if prev is not None else 2
        return group, created.get(name, ""), name

    active: dict[str, PoolSpec] = {}

    def conflict(spec: PoolSpec) -> PoolProblem | None:
        for other in active.values():
            pairs = spec.overlaps(other)
            if pairs:
                a, b = pairs[0]
                return PoolProblem(
                    "Overlap",
                    f"addresses {a} overlap {b} of pool {other.name}: an address may belong to one pool "
                    f"only; shrink or remove one of the two")
        for ip, node in sorted(node_ips.items()):
            if spec.covers(ip):
                return PoolProblem(
                    "CoversNodeIP",
                    f"addresses include {ip}, the InternalIP of node {node}: handing it out would break "
                    "that node; exclude it from spec.addresses")
        return None

    for name in sorted(set(parsed) | set(problems), key=rank):
        cur = parsed.get(name)
        if cur is not None:
            problem = conflict(cur)
            if problem is None:
                active[name] = cur
                continue
            problems[name] = problem
        prev = last_valid.get(name)
        if prev is not None and conflict(prev) is None:
            active[name] = prev
    return PoolSet(active=active, problems=problems)


# ---------------------------------------------------------------------------------------------
# Pool status


def condition(prev: Mapping[str, Mapping[str, Any]], ctype: str, status: bool, reason: str, message: str,
               generation: int | None, now: str) -> dict[str, Any]:
    """A metav1.Condition whose lastTransitionTime only moves when `status` flips (no write storms)."""
    old = prev.get(ctype)
    st = "True" if status else "False"
    ltt = old.get("lastTransitionTime") if old and old.get("status") == st else None
    out: dict[str, Any] = {"type": ctype, "status": st, "reason": reason, "message": message,
                           "lastTransitionTime": ltt or now}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def pool_conditions(problem: PoolProblem | None, stale: bool, orphans: Sequence[tuple[str, Sequence[str]]],
                    generation: int | None, previous: Sequence[Mapping[str, Any]] | None,
                    now: str) -> list[dict[str, Any]]:
    """The pool's conditions (types from lbspeaker.api.models): Ready, Overlap, CoversNodeAddress,
    ServicesOutsidePool. Recomputing an unchanged state yields equal dicts."""
    prev = {str(c.get("type")): c for c in previous or [] if isinstance(c, Mapping)}
    if problem is None:
        ready = condition(prev, CONDITION_READY, True, "Accepted", "the pool's addresses are in use",
                           generation, now)
    else:
        tail = (" The last valid configuration of this pool keeps running." if stale
                else " The pool is not used until this is fixed.")
        message = problem.message if problem.message.endswith(".") else problem.message + "."
        ready = condition(prev, CONDITION_READY, False, problem.reason, message + tail,
                           generation, now)
    overlap = problem is not None and problem.reason == "Overlap"
    covers = problem is not None and problem.reason == "CoversNodeIP"
    conds = [
        ready,
        condition(prev, CONDITION_OVERLAP, overlap, "Overlap" if overlap else "NoOverlap",
                   problem.message if overlap and problem else "no other pool shares these addresses",
                   generation, now),
        condition(prev, CONDITION_NODE_ADDRESS, covers, "CoversNodeIP" if covers else "NoNodeAddress",
                   problem.message if covers and problem else "no node InternalIP is inside this pool",
                   generation, now),
    ]
    if orphans:
        shown = ", ".join(f"{k} ({','.join(ips)})" for k, ips in orphans[:20])
        more = f" and {len(orphans) - 20} more" if len(orphans) > 20 else ""
        conds.append(condition(
            prev, CONDITION_ORPHANS, True, "IPsKept",
            f"{len(orphans)} Service(s) hold IPs this pool no longer covers: {shown}{more}. They keep "
            "their IPs; re-add the addresses to keep them, or re-create those Services (or change their "
            "requested IP) to move them.", generation, now))
    else:
        conds.append(condition(prev, CONDITION_ORPHANS, False, "NoOrphans",
                                "every IP handed out from this pool is inside it", generation, now))
    return conds


def pool_status(counts: Mapping[str, int], problem: PoolProblem | None, stale: bool,
                orphans: Sequence[tuple[str, Sequence[str]]], generation: int | None,
                previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status of an IPAddressPool (IPAddressPoolStatus in lbspeaker.api.models)."""
    previous = previous or {}
    listed = []
    for key, ips in sorted(orphans)[:MAX_ORPHANS]:
        ns, _, name = key.partition("/")
        listed.append({"namespace": ns, "name": name, "ips": list(ips)[:8]})
    return {
        "assignedIPv4": counts.get("assignedIPv4", 0),
        "assignedIPv6": counts.get("assignedIPv6", 0),
        "availableIPv4": counts.get("availableIPv4", 0),
        "availableIPv6": counts.get("availableIPv6", 0),
        "conditions": pool_conditions(problem, stale, sorted(orphans), generation,
                                      previous.get("conditions"), now),
        "orphanedServices": listed,
        "orphanedServiceCount": len(orphans),
    }
