"""The one reading of Kubernetes objects into plain, frozen facts (pure: no I/O).

The caches hold API objects as plain JSON dicts. Everything that decides
something (the controller's allocation, the layer-2 and BGP plans, `lbctl`)
reads them through this module only, so two binaries can never disagree on what
an object means. MetalLB's `internal/config` (`config.For`) plays this role there.

Facts API (every type is a frozen dataclass; every reader takes one dict):

* keys: `key_of(obj)` -> ``"namespace/name"`` (``"name"`` when cluster-scoped), the one key
  shape of queues, allocator and plans (`ServiceKey`); `canonical_ip(text)`;
  `ingress_ips(svc)` (as written in status), `is_load_balancer(svc)`, `wants_ip(svc, lb_class)`.
* selectors: `selector_matches` / `selectors_match`: an invalid selector matches nothing
  (reading stays total on bad input; the schema and the Ready conditions report it).
* `Problem(kind, name, reason, message)`: something for status/Events, shared by both plans,
  the controller's pool checks and the speaker's reporting.
* `Pool`: one IPAddressPool (name, labels, parsed ranges, serviceAllocation, autoAssign,
  avoidBuggyIPs, creationTimestamp). `parse_pool(obj)` is strict (raises ValueError /
  AddressSyntaxError with a message for the user: the controller's reading);
  `read_pool(obj)` is lenient (skips what the schema would refuse: the readers that only
  announce). `pool_of(service, ip, pools)`: the pool a Service's IP belongs to.
* `NodeFacts` (`read_node` / `NodeFacts.from_node`): Ready, NetworkUnavailable, labels,
  InternalIPs and ExternalIPs.
* `ServiceFacts` (`service_facts`, `services_facts`): a LoadBalancer Service with ingress IPs,
  as the plans see it, with the nodes of its serving endpoints.
  `ServiceRequest` (`service_request`, `service_request_lenient`): what it asks the
  allocator for; `ServiceError` when that request is malformed.
* endpoints: `endpoint_can_serve` (MetalLB's rule: ready unset or true, or serving true),
  `serving_endpoint_nodes`, `serving_endpoint_addresses`, `slices_by_service`.
* advertisements: `L2AdvertisementFacts` (with `preference(node)`), `BGPAdvertisementFacts` (with
  its route-shaping part `AdvertisementSpec`), both `Advertisement`s with the one matching:
  `matches_pool(pool)`, `matches_service(service_or_labels)` and `selects_node(node_or_labels)`.
  `PeerFacts` (BGPPeer), `community_aliases(objs)`.
* speaker Leases: `SPEAKER_LEASE_PREFIX`, `speaker_of_lease(name)`, `lease_fresh(lease, now)`,
  `parse_time`.
* `ClusterFacts` (`read_cluster(...)`): one snapshot of all of the above, what
  `plan.l2_plan(facts, node)` and `bgp.plan.bgp_plan(facts, node)` take.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lbspeaker.api import constants as C
from lbspeaker.api.addresses import AddressRange, AddressSyntaxError, parse_address_range
from lbspeaker.api.models import BGPAdvertisementSpec, BGPPeerSpec, IPAddressPoolSpec
from lbspeaker.selectors import label_selector_matches

Obj = Mapping[str, Any]
ServiceKey = str  # "namespace/name"

FAMILY_OF = {"IPv4": 4, "IPv6": 6}


# --- keys, IPs ------------------------------------------------------------------------------------


def key_of(obj: Obj) -> str:
    """`namespace/name` (or `name` for cluster-scoped objects): the key of queues, allocator, plans."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def canonical_ip(text: str) -> str | None:
    """The text every speaker hashes and compares (`ipaddress` form), None when not an IP."""
    addr = _address(text.strip())
    return None if addr is None else str(addr)


@functools.lru_cache(maxsize=65536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Cached: every event of a Service reads its IPs again, and pools test them."""
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def is_load_balancer(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") == "LoadBalancer"


def wants_ip(svc: Obj, lb_class: str | None) -> bool:
    """Is this Service ours (type LoadBalancer, our `loadBalancerClass`)?"""
    return is_load_balancer(svc) and C.class_matches(svc, lb_class)


def ingress_ips(svc: Obj) -> list[str]:
    """IPs as written in `status.loadBalancer.ingress` (the source of truth on restart)."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(i["ip"]) for i in ingress if isinstance(i, Mapping) and i.get("ip")]


# --- selectors ------------------------------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; a selector that cannot be evaluated matches nothing."""
    try:
        return label_selector_matches(selector, labels)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def selectors_match(selectors: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> bool:
    """MetalLB's list rule (nodeSelectors, ...): an empty list selects everything, else any match."""
    return not selectors or any(selector_matches(s, labels) for s in selectors)


# --- problems -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something the operator should hear about: `kind` is the object kind ("L2Advertisement",
    "Service", "IPAddressPool", ...), `name` its [namespace/]name, `reason` a CamelCase
    Event/condition reason, `message` what is wrong and what to do."""

    kind: str
    name: str
    reason: str
    message: str


# --- pools ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """One IPAddressPool (ranges parsed): what the allocator hands out and the plans match on.

    Equal pools compare equal (the controller spots changes that way; `same_allocation`
    leaves out `labels`, which only advertisement matching reads).
    """

    name: str
    ranges: tuple[AddressRange, ...] = ()
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    priority: int | None = None
    namespaces: tuple[str, ...] = ()
    namespace_selectors: tuple[Mapping[str, Any], ...] = ()
    service_selectors: tuple[Mapping[str, Any], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # creationTimestamp: an overlap goes to the older pool

    @property
    def pinned(self) -> bool:
        """Has serviceAllocation selectors: serves only matching Services."""
        return bool(self.namespaces or self.namespace_selectors or self.service_selectors)

    @property
    def allocation_tier(self) -> bool:
        """Tried before the plain autoAssign pools, by priority: pinned, or a serviceAllocation priority.

        A pool whose serviceAllocation sets only `priority` matches every Service and competes by
        priority with the pools pinned to the Service (see docs/metallb-compat.md).
        """
        return self.pinned or bool(self.priority and self.priority > 0)

    @property
    def families(self) -> frozenset[int]:
        return frozenset(r.family for r in self.ranges)

    def contains(self, ip: str) -> bool:
        """Whether `ip` is one of this pool's addresses (False for a non-IP)."""
        addr = _address(ip)
        return addr is not None and any(r.contains(addr) for r in self.ranges)

    def same_allocation(self, other: Pool | None) -> bool:
        """Equal but for labels: the allocator would hand out the same addresses to the same Services."""
        return other is not None and self == replace(other, labels=self.labels)

    def overlaps(self, other: Pool) -> list[tuple[AddressRange, AddressRange]]:
        return [(a, b) for a in self.ranges for b in other.ranges if a.overlaps(b)]


def _pool(meta: Obj, spec: Obj, ranges: Sequence[AddressRange]) -> Pool:
    alloc = spec.get("serviceAllocation") or {}
    prio = alloc.get("priority")
    return Pool(
        name=str(meta.get("name")),
        ranges=tuple(ranges),
        auto_assign=bool(spec.get("autoAssign", True)),
        avoid_buggy_ips=bool(spec.get("avoidBuggyIPs", False)),
        priority=int(prio) if isinstance(prio, int) else None,
        namespaces=tuple(alloc.get("namespaces") or ()),
        namespace_selectors=tuple(alloc.get("namespaceSelectors") or ()),
        service_selectors=tuple(alloc.get("serviceSelectors") or ()),
        labels=dict(meta.get("labels") or {}),
        created=str(meta.get("creationTimestamp") or ""),
    )


def parse_pool(obj: Obj) -> Pool:
    """Strict reading: raise AddressSyntaxError/ValueError (pydantic's ValidationError is one)
    with a user-facing message when the spec is not usable."""
    meta = obj.get("metadata") or {}
    # The shared model checks what the CRD schema checks (and what CEL cannot, e.g. IPv6 order).
    model = IPAddressPoolSpec.model_validate(obj.get("spec") or {})
    if not model.addresses:
        raise ValueError("spec.addresses is empty: list at least one CIDR or start-end range")
    ranges = tuple(model.ranges())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            if a.overlaps(b):
                raise ValueError(f"addresses {a} and {b} of this pool overlap: list each address once")
    return _pool(meta, model.model_dump(), ranges)


def read_pool(obj: Obj) -> Pool:
    """Lenient reading: address entries that do not parse are skipped (the schema rejects them).

    A bare address (10.1.0.1) is read as its /32 here: the CRD and the controller refuse it now
    (MetalLB's rule), but a pool stored before that rule keeps its announced IPs announced.
    """
    spec = obj.get("spec") or {}
    ranges = []
    for entry in spec.get("addresses") or ():
        try:
            ranges.append(parse_address_range(str(entry), allow_bare=True))
        except AddressSyntaxError:
            continue
    return _pool(obj.get("metadata") or {}, spec, ranges)


# --- nodes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    """What election, planning and the pool checks need to know about one Node."""

    name: str
    ready: bool = True
    network_unavailable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    internal_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()

    @classmethod
    def from_node(cls, node: Obj) -> NodeFacts:
        return read_node(node)


def read_node(node: Obj) -> NodeFacts:
    """A Node dict -> NodeFacts (a condition that is not "True" counts as false)."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    by_type = {c.get("type"): c.get("status") for c in conditions}
    addrs = [a for a in status.get("addresses") or [] if isinstance(a, Mapping) and a.get("address")]
    return NodeFacts(
        name=str(meta.get("name", "")),
        ready=by_type.get("Ready") == "True",
        network_unavailable=by_type.get("NetworkUnavailable") == "True",
        labels=dict(meta.get("labels") or {}),
        internal_ips=tuple(str(a["address"]) for a in addrs if a.get("type") == "InternalIP"),
        external_ips=tuple(str(a["address"]) for a in addrs if a.get("type") == "ExternalIP"),
    )


def node_internal_ips(nodes: Iterable[Obj]) -> dict[str, str]:
    """InternalIP address -> node name of Node dicts, for the 'pool covers a node' check."""
    return {ip: n.name for n in map(read_node, nodes) for ip in n.internal_ips}


# --- endpoints ------------------------------------------------------------------------------------


def endpoint_can_serve(conditions: Mapping[str, Any] | None) -> bool:
    """MetalLB's EndpointCanServe: ready unset or true, or serving true."""
    conditions = conditions or {}
    ready = conditions.get("ready")
    if ready is None or ready is True:
        return True
    return conditions.get("serving") is True


def serving_endpoint_nodes(slices: Iterable[Obj]) -> list[str | None]:
    """Node names of the serving endpoints in EndpointSlice dicts (None = no nodeName).

    One entry per serving endpoint, so ``len(...) > 0`` answers "is any endpoint serving
    anywhere", and the non-None entries are the nodes with a local serving endpoint.
    """
    out: list[str | None] = []
    for sl in slices:
        for ep in sl.get("endpoints") or ():
            if endpoint_can_serve(ep.get("conditions")):
                name = ep.get("nodeName")
                out.append(str(name) if name else None)
    return out


def serving_endpoint_addresses(slices: Iterable[Obj]) -> list[tuple[str, str]]:
    """(address, node or "") of every serving endpoint address in EndpointSlice dicts."""
    out: list[tuple[str, str]] = []
    for sl in slices:
        for ep in sl.get("endpoints") or ():
            if endpoint_can_serve(ep.get("conditions")):
                out.extend((str(a), str(ep.get("nodeName") or "")) for a in ep.get("addresses") or ())
    return out


def slices_by_service(slices: Iterable[Obj]) -> dict[ServiceKey, list[Obj]]:
    """EndpointSlices grouped by their Service's key (the `kubernetes.io/service-name` label)."""
    out: dict[ServiceKey, list[Obj]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(C.SERVICE_NAME_LABEL)
        if svc:
            ns = meta.get("namespace")
            out.setdefault(f"{ns}/{svc}" if ns else str(svc), []).append(sl)
    return out


# --- Services: what the plans see -----------------------------------------------------------------


@dataclass(frozen=True)
class ServiceFacts:
    """A LoadBalancer Service that holds IPs, as the plans need it (+ its EndpointSlices)."""

    namespace: str
    name: str
    ips: tuple[str, ...]  # canonical text, in status order
    pool: str | None = None  # the `ip-allocated-from-pool` annotation, as written
    etp_local: bool = False
    serving_endpoints: tuple[str | None, ...] = ()  # see serving_endpoint_nodes
    labels: Mapping[str, str] = field(default_factory=dict)  # advertisements' serviceSelectors match these
    sharing_key: str | None = None  # the allow-shared-ip annotation (any spelling)

    @property
    def key(self) -> ServiceKey:
        return f"{self.namespace}/{self.name}"


def service_facts(svc: Obj, slices: Iterable[Obj] = ()) -> ServiceFacts | None:
    """A Service dict (+ its EndpointSlices) -> ServiceFacts; None when it is not a LoadBalancer
    or holds no IP. `loadBalancerClass` filtering is the caller's (see `services_facts`)."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return None
    ips: list[str] = []
    for text in ingress_ips(svc):
        ip = canonical_ip(text)
        if ip and ip not in ips:
            ips.append(ip)
    if not ips:
        return None
    return ServiceFacts(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        ips=tuple(ips),
        pool=C.annotation(meta.get("annotations"), C.IP_ALLOCATED_FROM_POOL),
        etp_local=spec.get("externalTrafficPolicy") == "Local",
        serving_endpoints=tuple(serving_endpoint_nodes(slices)),
        labels=dict(meta.get("labels") or {}),
        sharing_key=C.annotation(meta.get("annotations"), C.ALLOW_SHARED_IP) or None,
    )


def services_facts(services: Iterable[Obj], slices: Iterable[Obj],
                   lb_class: str | None) -> list[ServiceFacts]:
    """ServiceFacts of every Service of our class that holds IPs, each with its EndpointSlices."""
    by_svc = slices_by_service(slices)
    out = []
    for svc in services:
        if not C.class_matches(svc, lb_class):
            continue
        facts = service_facts(svc, by_svc.get(key_of(svc), []))
        if facts is not None:
            out.append(facts)
    return out


def pool_of(svc: ServiceFacts, ip: str, pools: Mapping[str, Pool]) -> Pool | None:
    """The pool a Service's IP belongs to: the one it was allocated from when that pool exists,
    else the one containing the IP (first by name). An annotation naming no pool is not trusted."""
    if svc.pool and svc.pool in pools:
        return pools[svc.pool]
    for name in sorted(pools):
        if pools[name].contains(ip):
            return pools[name]
    return None


# --- Services: what they ask the allocator for ----------------------------------------------------


class ServiceError(ValueError):
    """A Service whose spec/annotations cannot be turned into a request (the message says why)."""


@dataclass(frozen=True)
class ServiceRequest:
    """What one LoadBalancer Service asks the allocator for."""

    key: ServiceKey
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    families: tuple[int, ...] = (4,)            # spec.ipFamilies, primary first
    family_policy: str = "SingleStack"          # SingleStack | PreferDualStack | RequireDualStack
    requested_ips: tuple[str, ...] = ()
    requested_pool: str | None = None
    sharing_key: str | None = None
    ports: tuple[tuple[str, int], ...] = ()     # (protocol, port)
    backend_key: str | None = None              # pod-selector identity, only for ETP Local


def _families(spec: Obj) -> tuple[tuple[int, ...], str]:
    """spec.ipFamilies (else the clusterIPs' families, else IPv4) and the policy, as the API gave them.

    The allocator applies the policy (SingleStack uses the first family) and refuses
    impossible combinations with a message, so nothing is second-guessed here.
    """
    policy = spec.get("ipFamilyPolicy") or "SingleStack"
    fams = [FAMILY_OF[n] for n in spec.get("ipFamilies") or [] if n in FAMILY_OF]
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


def service_request(svc: Obj, namespace_labels: Mapping[str, str] | None = None) -> ServiceRequest:
    """Read one Service's request; raise ServiceError if it is malformed."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    ann = meta.get("annotations") or {}
    fams, policy = _families(spec)
    ports = tuple(sorted(
        (str(p.get("protocol") or "TCP"), int(p.get("port") or 0)) for p in spec.get("ports") or []))
    backend = None
    if spec.get("externalTrafficPolicy") == "Local":
        sel = spec.get("selector") or {}
        backend = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    return ServiceRequest(
        key=key_of(svc),
        namespace=str(meta.get("namespace") or ""),
        labels=dict(meta.get("labels") or {}),
        namespace_labels=dict(namespace_labels or {}),
        families=fams,
        family_policy=policy,
        requested_ips=requested_ips(svc),
        requested_pool=C.annotation(ann, C.ADDRESS_POOL) or None,
        sharing_key=C.annotation(ann, C.ALLOW_SHARED_IP) or None,
        ports=ports,
        backend_key=backend,
    )


def service_request_lenient(svc: Obj, namespace_labels: Mapping[str, str] | None = None) -> ServiceRequest:
    """Like service_request but ignores a malformed IP request (restore: keep what is in status)."""
    try:
        return service_request(svc, namespace_labels)
    except ServiceError:
        meta = dict(svc.get("metadata") or {})
        ann = {k: v for k, v in (meta.get("annotations") or {}).items()
               if not k.endswith("/" + C.LOADBALANCER_IPS)}
        spec = {k: v for k, v in (svc.get("spec") or {}).items() if k != "loadBalancerIP"}
        return service_request({**svc, "metadata": {**meta, "annotations": ann}, "spec": spec},
                               namespace_labels)


# --- advertisements and peers ---------------------------------------------------------------------


def validation_text(exc: ValidationError) -> str:
    """The first errors of a pydantic ValidationError on one line."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


_Spec = TypeVar("_Spec", bound=BaseModel)


def _parsed(obj: Obj, model: type[_Spec]) -> tuple[str, Obj, _Spec | None, str]:
    """(name, spec as written, the spec parsed by `model` or None, why it did not parse): one
    reading of a BGPAdvertisement or BGPPeer, so a bad one is still kept by name, with the reason."""
    name = name_of(obj)
    raw = obj.get("spec") or {}
    try:
        return name, raw, model.model_validate(raw), ""
    except ValidationError as exc:
        return name, raw, None, validation_text(exc)


def _listed(spec: Obj, key: str, kind: type) -> tuple[Any, ...]:
    """The entries of type `kind` of list field `key`, as written (for an object that does not parse)."""
    value = spec.get(key)
    return tuple(v for v in value if isinstance(v, kind)) if isinstance(value, list) else ()


@dataclass(frozen=True)
class Advertisement:
    """Which pools, Services and nodes an L2Advertisement or BGPAdvertisement applies to (MetalLB's rules).

    Selectors are Kubernetes LabelSelector dicts; an object whose spec does not parse
    (`error` says why) applies to nothing. An advertisement applies to a Service's IP when it
    matches the IP's pool (`matches_pool`) and the Service (`matches_service`), and lets a node
    announce it when it selects the node (`selects_node`): MetalLB's `l2AdsForService` /
    `bgpAdsForService`.
    """

    name: str
    node_selectors: tuple[Mapping[str, Any], ...] = ()
    ip_address_pools: tuple[str, ...] = ()
    ip_address_pool_selectors: tuple[Mapping[str, Any], ...] = ()
    error: str = ""
    service_selectors: tuple[Mapping[str, Any], ...] = ()

    def matches_pool(self, pool: Pool) -> bool:
        """Named in ipAddressPools, selected by one of ipAddressPoolSelectors, or both empty (every pool)."""
        if self.error:
            return False
        if not self.ip_address_pools and not self.ip_address_pool_selectors:
            return True
        if pool.name in self.ip_address_pools:
            return True
        return any(selector_matches(sel, pool.labels) for sel in self.ip_address_pool_selectors)

    def selects_node(self, node: NodeFacts | Mapping[str, str]) -> bool:
        """Whether it lets the node (or a node with these labels) announce: no nodeSelectors = all nodes."""
        labels = node.labels if isinstance(node, NodeFacts) else node
        return selectors_match(self.node_selectors, labels)

    def matches_service(self, service: ServiceFacts | Mapping[str, str]) -> bool:
        """Whether it applies to the Service (or one with these labels): no serviceSelectors = every
        Service, else any selector matches (an invalid one matches nothing)."""
        if self.error:
            return False
        labels = service.labels if isinstance(service, ServiceFacts) else service
        return selectors_match(self.service_selectors, labels)


@dataclass(frozen=True)
class L2AdvertisementFacts(Advertisement):
    """An L2Advertisement; `interfaces` (empty = the default choice) does not affect election,
    `preferred` ((weight, selector) from preferredNodeSelectors) orders it (`preference`)."""

    interfaces: tuple[str, ...] = ()
    preferred: tuple[tuple[int, Mapping[str, Any]], ...] = ()

    def preference(self, node: NodeFacts) -> int:
        """This advertisement's score for `node`: the summed weights of the preferences that select
        it, counted only for nodes its own nodeSelectors select (MetalLB: scores are ad-scoped, so an
        advertisement never lifts a node that another advertisement made eligible)."""
        if not self.preferred or not self.selects_node(node):
            return 0
        return sum(w for w, sel in self.preferred if selector_matches(sel, node.labels))

    @classmethod
    def from_object(cls, obj: Obj) -> L2AdvertisementFacts:
        spec = obj.get("spec") or {}
        return cls(
            name=name_of(obj),
            node_selectors=tuple(spec.get("nodeSelectors") or ()),
            interfaces=tuple(spec.get("interfaces") or ()),
            ip_address_pools=tuple(spec.get("ipAddressPools") or ()),
            ip_address_pool_selectors=tuple(spec.get("ipAddressPoolSelectors") or ()),
            service_selectors=tuple(spec.get("serviceSelectors") or ()),
            preferred=_preferences(spec.get("preferredNodeSelectors")),
        )


def _preferences(entries: Any) -> tuple[tuple[int, Mapping[str, Any]], ...]:
    """(weight, selector) of preferredNodeSelectors; entries the schema would refuse are skipped."""
    out: list[tuple[int, Mapping[str, Any]]] = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping):
            continue
        weight, pref = entry.get("weight"), entry.get("preference")
        if isinstance(weight, int) and not isinstance(weight, bool) and 1 <= weight <= 100 \
                and isinstance(pref, Mapping):
            out.append((weight, pref))
    return tuple(out)


@dataclass(frozen=True)
class AdvertisementSpec:
    """The parts of a BGPAdvertisement that shape a route (selection is `Advertisement`'s)."""

    name: str
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int | None = None
    communities: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()  # BGPPeer names; empty: every peer


def advertisement_from_model(name: str, spec: BGPAdvertisementSpec) -> AdvertisementSpec:
    """AdvertisementSpec from an `api.models.BGPAdvertisementSpec`."""
    return AdvertisementSpec(
        name=name,
        aggregation_length=spec.aggregationLength,
        aggregation_length_v6=spec.aggregationLengthV6,
        local_pref=spec.localPref,
        communities=tuple(spec.communities),
        peers=tuple(spec.peers),
    )


@dataclass(frozen=True)
class BGPAdvertisementFacts(Advertisement):
    """A BGPAdvertisement: selection (`Advertisement`) plus the route-shaping part."""

    route: AdvertisementSpec = field(default_factory=lambda: AdvertisementSpec(""))

    @classmethod
    def from_object(cls, obj: Obj) -> BGPAdvertisementFacts:
        """Facts of one object; an object that does not parse selects nothing (and says why)."""
        name, raw, spec, error = _parsed(obj, BGPAdvertisementSpec)
        if spec is None:
            # kept as written so lbctl can still name them; `error` makes it match nothing
            return cls(name, route=AdvertisementSpec(name), error=error,
                       node_selectors=_listed(raw, "nodeSelectors", Mapping),
                       ip_address_pools=_listed(raw, "ipAddressPools", str))
        return cls(
            name=name,
            route=advertisement_from_model(name, spec),
            node_selectors=tuple(raw.get("nodeSelectors") or ()),
            ip_address_pools=tuple(spec.ipAddressPools),
            ip_address_pool_selectors=tuple(raw.get("ipAddressPoolSelectors") or ()),
            service_selectors=tuple(raw.get("serviceSelectors") or ()),
        )


@dataclass(frozen=True)
class PeerFacts:
    """A BGPPeer; `spec` None when the object does not parse (`error` says why)."""

    name: str
    spec: BGPPeerSpec | None
    error: str = ""
    node_selectors: tuple[Mapping[str, Any], ...] = ()  # as written (plain dicts)

    @property
    def secret_ref(self) -> tuple[str | None, str] | None:
        """(namespace or None for the speaker's namespace, name) of `passwordSecret`, if any."""
        if self.spec is None or self.spec.passwordSecret is None or not self.spec.passwordSecret.name:
            return None
        return (self.spec.passwordSecret.namespace, self.spec.passwordSecret.name)

    def selects_node(self, labels: Mapping[str, str]) -> bool:
        return selectors_match(self.node_selectors, labels)

    @classmethod
    def from_object(cls, obj: Obj) -> PeerFacts:
        name, raw, spec, error = _parsed(obj, BGPPeerSpec)
        if spec is None:
            return cls(name, None, error)
        return cls(name, spec, node_selectors=tuple(raw.get("nodeSelectors") or ()))


def community_aliases(objects: Iterable[Obj]) -> dict[str, str]:
    """{alias: value} from Community objects (first object by name wins on a duplicate alias)."""
    out: dict[str, str] = {}
    for obj in sorted(objects, key=name_of):
        for entry in ((obj.get("spec") or {}).get("communities") or ()):
            if isinstance(entry, Mapping) and entry.get("name") and entry.get("value"):
                out.setdefault(str(entry["name"]), str(entry["value"]))
    return out


# --- speaker Leases -------------------------------------------------------------------------------

SPEAKER_LEASE_PREFIX = "speaker-"  # each speaker holds the Lease speaker-<node> in its namespace


def speaker_of_lease(name: str) -> str | None:
    """The node whose speaker holds Lease `name` (None: not a speaker Lease)."""
    if name.startswith(SPEAKER_LEASE_PREFIX) and len(name) > len(SPEAKER_LEASE_PREFIX):
        return name[len(SPEAKER_LEASE_PREFIX):]
    return None


def parse_time(value: str | None) -> datetime | None:
    """Parse metav1.Time / MicroTime ("...Z", with or without fractional seconds)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_fresh(lease: Obj, now: datetime | None = None, skew_s: float = 0.0) -> bool:
    """Wall-clock freshness (holder set, renewTime + duration + skew >= now) for membership checks.

    This is what other components use to call a speaker live; it trusts the writer's
    clock, so pass a `skew_s` allowance. The Lease lock itself never relies on it.
    """
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return False
    renew = parse_time(spec.get("renewTime"))
    if renew is None:
        return False
    duration = float(spec.get("leaseDurationSeconds") or 0)
    now = now or datetime.now(UTC)
    return (now - renew).total_seconds() <= duration + skew_s


# --- one snapshot ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterFacts:
    """Everything both plans read, from one moment of the caches."""

    services: tuple[ServiceFacts, ...] = ()
    pools: Mapping[str, Pool] = field(default_factory=dict)
    nodes: Mapping[str, NodeFacts] = field(default_factory=dict)
    l2_advertisements: tuple[L2AdvertisementFacts, ...] = ()
    bgp_advertisements: tuple[BGPAdvertisementFacts, ...] = ()
    peers: tuple[PeerFacts, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    live_speakers: frozenset[str] = frozenset()


def read_cluster(
    *,
    services: Iterable[Obj] = (),
    endpointslices: Iterable[Obj] = (),
    pools: Iterable[Obj] = (),
    nodes: Iterable[Obj] = (),
    l2advertisements: Iterable[Obj] = (),
    bgpadvertisements: Iterable[Obj] = (),
    bgppeers: Iterable[Obj] = (),
    communities: Iterable[Obj] = (),
    lb_class: str | None = None,
    live_speakers: Iterable[str] = (),
) -> ClusterFacts:
    """The cache contents (plain dicts) -> ClusterFacts, the input of `l2_plan` and `bgp_plan`."""
    node_facts = [read_node(n) for n in nodes]
    pool_facts = [read_pool(p) for p in pools]
    return ClusterFacts(
        services=tuple(services_facts(services, endpointslices, lb_class)),
        pools={p.name: p for p in pool_facts},
        nodes={n.name: n for n in node_facts},
        l2_advertisements=tuple(L2AdvertisementFacts.from_object(a) for a in l2advertisements),
        bgp_advertisements=tuple(BGPAdvertisementFacts.from_object(a) for a in bgpadvertisements),
        peers=tuple(PeerFacts.from_object(p) for p in bgppeers),
        aliases=community_aliases(communities),
        live_speakers=frozenset(live_speakers),
    )
