"""What `lbctl status`, `pools` and `check` say, computed from a snapshot of cluster objects (pure).

The snapshot is plain API dicts (fetched by `lbspeaker.lbctl.snapshot`), so every
judgement here is table-testable without a server, and the CLI only prints rows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lbspeaker.api import constants as C
from lbspeaker.api.addresses import AddressRange, AddressSyntaxError, parse_address_range
from lbspeaker.kube.lease import lease_fresh, parse_time
from lbspeaker.selectors import label_selector_matches
from lbspeaker.speaker import strictarp
from lbspeaker.speaker.membership import LEASE_PREFIX

Obj = dict[str, Any]


@dataclass
class Snapshot:
    """Everything lbctl looks at, as the API returned it (missing kinds are empty lists)."""

    services: list[Obj] = field(default_factory=list)
    endpointslices: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    pools: list[Obj] = field(default_factory=list)
    l2advertisements: list[Obj] = field(default_factory=list)
    bgpadvertisements: list[Obj] = field(default_factory=list)
    bgppeers: list[Obj] = field(default_factory=list)
    l2statuses: list[Obj] = field(default_factory=list)
    bgpstatuses: list[Obj] = field(default_factory=list)
    leases: list[Obj] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)
    kube_proxy: Obj | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def key_of(obj: Mapping[str, Any]) -> str:
    return f"{meta(obj).get('namespace') or ''}/{name_of(obj)}"


def is_load_balancer(svc: Mapping[str, Any]) -> bool:
    return (svc.get("spec") or {}).get("type") == "LoadBalancer"


def ingress_ips(svc: Mapping[str, Any]) -> list[str]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(i["ip"]) for i in ingress if isinstance(i, Mapping) and i.get("ip")]


def pool_ranges(pool: Mapping[str, Any]) -> list[AddressRange]:
    out = []
    for entry in (pool.get("spec") or {}).get("addresses") or []:
        try:
            out.append(parse_address_range(str(entry)))
        except AddressSyntaxError:
            continue
    return out


def pool_of_ip(pools: Sequence[Obj], ip: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for pool in pools:
        if any(r.contains(addr) for r in pool_ranges(pool)):
            return name_of(pool)
    return None


def service_pool(svc: Mapping[str, Any], pools: Sequence[Obj]) -> str | None:
    """The pool the controller recorded (annotation), else the pool whose range holds the IP."""
    recorded = C.annotation(meta(svc).get("annotations"), C.IP_ALLOCATED_FROM_POOL)
    if recorded:
        return recorded
    for ip in ingress_ips(svc):
        found = pool_of_ip(pools, ip)
        if found:
            return found
    return None


def advertisement_covers_pool(adv: Mapping[str, Any], pool: Mapping[str, Any]) -> bool:
    """MetalLB semantics: named pools, or pools matching a selector; neither given means every pool."""
    spec = adv.get("spec") or {}
    names = spec.get("ipAddressPools") or []
    selectors = spec.get("ipAddressPoolSelectors") or []
    if not names and not selectors:
        return True
    if name_of(pool) in names:
        return True
    labels = meta(pool).get("labels") or {}
    return any(label_selector_matches(s, labels) for s in selectors)


def advertisement_nodes(adv: Mapping[str, Any], nodes: Sequence[Obj]) -> list[str]:
    selectors = (adv.get("spec") or {}).get("nodeSelectors") or []
    if not selectors:
        return [name_of(n) for n in nodes]
    return [
        name_of(n)
        for n in nodes
        if any(label_selector_matches(s, meta(n).get("labels") or {}) for s in selectors)
    ]


def modes_of_pool(snap: Snapshot, pool_name: str | None) -> list[str]:
    pool = next((p for p in snap.pools if name_of(p) == pool_name), None)
    if pool is None:
        return []
    modes = []
    if any(advertisement_covers_pool(a, pool) for a in snap.l2advertisements):
        modes.append("L2")
    if any(advertisement_covers_pool(a, pool) for a in snap.bgpadvertisements):
        modes.append("BGP")
    return modes


def ready_endpoints(snap: Snapshot, svc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(address, node) of the ready endpoints of a Service, from its EndpointSlices."""
    out = []
    ns = meta(svc).get("namespace")
    for sl in snap.endpointslices:
        m = meta(sl)
        if m.get("namespace") != ns or (m.get("labels") or {}).get(C.SERVICE_NAME_LABEL) != name_of(svc):
            continue
        for ep in sl.get("endpoints") or []:
            ready = (ep.get("conditions") or {}).get("ready")
            if ready is False:
                continue  # nil means ready (EndpointSlice API semantics)
            for addr in ep.get("addresses") or []:
                out.append((str(addr), str(ep.get("nodeName") or "")))
    return out


def _status_for(objs: Iterable[Obj], svc: Mapping[str, Any]) -> list[Obj]:
    ns, name = meta(svc).get("namespace"), name_of(svc)
    return [
        o for o in objs
        if (o.get("status") or {}).get("serviceName") == name
        and (o.get("status") or {}).get("serviceNamespace") == ns
    ]


def last_event(snap: Snapshot, obj: Mapping[str, Any], reason: str) -> Obj | None:
    m = meta(obj)
    found = [
        e for e in snap.events
        if e.get("reason") == reason
        and (e.get("involvedObject") or {}).get("name") == m.get("name")
        and (e.get("involvedObject") or {}).get("namespace") == m.get("namespace")
        and (e.get("involvedObject") or {}).get("kind") == obj.get("kind", "Service")
    ]
    return max(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""), default=None)


def speaker_leases(snap: Snapshot) -> dict[str, Obj]:
    return {
        name_of(lease)[len(LEASE_PREFIX):]: lease
        for lease in snap.leases
        if name_of(lease).startswith(LEASE_PREFIX)
    }


def speaker_problem(lease: Mapping[str, Any] | None, now: datetime) -> str | None:
    """Why a node's speaker is not live (None when its Lease is fresh)."""
    if lease is None:
        return "no speaker Lease"
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return "speaker stopped (Lease released)"
    if lease_fresh(lease, now):
        return None
    renew = parse_time(spec.get("renewTime"))
    if renew is None:
        return "speaker Lease never renewed"
    age = (now - renew).total_seconds()
    return f"speaker Lease stale: last renewed {age:.0f}s ago (duration {spec.get('leaseDurationSeconds')}s)"


def bgp_session_states(snap: Snapshot) -> dict[tuple[str, str], str]:
    """(peer, node) -> session state, from the BGPPeers' `status.sessions`."""
    return {
        (name_of(peer), str(s.get("node") or "")): str(s.get("state") or "")
        for peer in snap.bgppeers
        for s in (peer.get("status") or {}).get("sessions") or []
        if isinstance(s, Mapping)
    }


# -- status -----------------------------------------------------------------------------------------

BGP_DOWN = "BGP session down"  # prefix of a Service problem that `check` reports per BGPPeer instead


@dataclass
class ServiceRow:
    namespace: str
    name: str
    ips: list[str]
    pool: str | None
    mode: str
    announced_by: list[str]
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "ips": self.ips,
            "pool": self.pool,
            "mode": self.mode,
            "announcedBy": self.announced_by,
            "problems": self.problems,
        }


def service_rows(snap: Snapshot) -> list[ServiceRow]:
    rows = []
    leases = speaker_leases(snap)
    sessions = bgp_session_states(snap)
    for svc in sorted(filter(is_load_balancer, snap.services), key=key_of):
        ips = ingress_ips(svc)
        pool = service_pool(svc, snap.pools) if ips else None
        l2 = _status_for(snap.l2statuses, svc)
        bgp = _status_for(snap.bgpstatuses, svc)
        modes = modes_of_pool(snap, pool)
        if l2 and "L2" not in modes:
            modes.append("L2")
        if bgp and "BGP" not in modes:
            modes.append("BGP")
        announced = sorted({str((s.get("status") or {}).get("node") or "?") for s in l2})
        problems: list[str] = []
        for st in bgp:  # a route is only announced over a session that is up
            status = st.get("status") or {}
            node = str(status.get("node") or "?")
            peers = [str(p) for p in status.get("peers") or []]
            up = [p for p in peers if sessions.get((p, node)) == "Established"]
            if up:
                announced.append(f"{node}->{','.join(up)}")
            for p in peers:
                if p not in up:
                    state = sessions.get((p, node)) or "not reported"
                    problems.append(f"{BGP_DOWN}: {node}->{p} is {state}, the route is not announced there")
        if not ips:
            failed = last_event(snap, {**svc, "kind": "Service"}, "AllocationFailed")
            problems.append(
                "no IP" + (f": {failed.get('message')}" if failed and failed.get("message") else "")
            )
        has_endpoints = bool(ready_endpoints(snap, svc))
        if not has_endpoints:
            problems.append("no ready endpoint")
        if ips and has_endpoints:
            if not modes:
                problems.append(f"not announced: no L2Advertisement or BGPAdvertisement covers pool {pool}")
            elif not l2 and not bgp:
                problems.append("not announced: no speaker reports it")
        l2_nodes = sorted({str((s.get("status") or {}).get("node") or "") for s in l2})
        if len(l2_nodes) > 1:
            problems.append(f"announced in L2 by {len(l2_nodes)} nodes at once: {', '.join(l2_nodes)}")
        for node in l2_nodes:
            why = speaker_problem(leases.get(node), snap.now)
            if why:
                problems.append(f"announcing node {node}: {why}")
        rows.append(
            ServiceRow(
                str(meta(svc).get("namespace") or ""),
                name_of(svc),
                ips,
                pool,
                "+".join(modes) or "-",
                announced,
                problems,
            )
        )
    return rows


# -- pools ------------------------------------------------------------------------------------------


@dataclass
class PoolRow:
    name: str
    addresses: list[str]
    auto_assign: bool
    assigned: int
    available: int
    conditions: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "addresses": self.addresses,
            "autoAssign": self.auto_assign,
            "assigned": self.assigned,
            "available": self.available,
            "conditions": self.conditions,
        }


def pool_rows(snap: Snapshot) -> list[PoolRow]:
    """Counts from the pool's status when the controller wrote them, else counted from the Services."""
    rows = []
    held: dict[str, set[str]] = {}
    for svc in filter(is_load_balancer, snap.services):
        for ip in ingress_ips(svc):
            p = service_pool(svc, snap.pools)
            if p:
                held.setdefault(p, set()).add(ip)
    for pool in sorted(snap.pools, key=name_of):
        spec = pool.get("spec") or {}
        status = pool.get("status") or {}
        size = sum(r.size for r in pool_ranges(pool))
        if any(k in status for k in ("assignedIPv4", "assignedIPv6", "availableIPv4", "availableIPv6")):
            assigned = int(status.get("assignedIPv4") or 0) + int(status.get("assignedIPv6") or 0)
            available = int(status.get("availableIPv4") or 0) + int(status.get("availableIPv6") or 0)
        else:
            assigned = len(held.get(name_of(pool), ()))
            available = max(size - assigned, 0)
        conditions = [
            f"{c.get('type')}={c.get('status')}" + (f" ({c.get('reason')})" if c.get("reason") else "")
            for c in status.get("conditions") or []
        ]
        rows.append(
            PoolRow(
                name_of(pool),
                [str(a) for a in spec.get("addresses") or []],
                bool(spec.get("autoAssign", True)),
                assigned,
                available,
                conditions,
            )
        )
    return rows


# -- check ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding of `lbctl check`: what is wrong, with which object, and what to do."""

    check: str
    object: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "object": self.object, "message": self.message}


def node_addresses(node: Mapping[str, Any]) -> list[str]:
    return [
        str(a.get("address"))
        for a in (node.get("status") or {}).get("addresses") or []
        if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address")
    ]


# Pool conditions that mean trouble when True, and Ready meaning trouble when False.
BAD_WHEN_TRUE = {"Overlap", "CoversNodeAddress", "ServicesOutsidePool"}


def check(snap: Snapshot) -> list[Problem]:
    problems: list[Problem] = []
    # kube-proxy IPVS without strictARP.
    state = strictarp.check(snap.kube_proxy)
    if not state.ok:
        problems.append(Problem("strictARP", "ConfigMap kube-system/kube-proxy", state.detail))
    # Pools covering node addresses; pool conditions.
    for pool in snap.pools:
        ranges = pool_ranges(pool)
        for node in snap.nodes:
            for addr in node_addresses(node):
                try:
                    ip = ipaddress.ip_address(addr)
                except ValueError:
                    continue
                if any(r.contains(ip) for r in ranges):
                    problems.append(
                        Problem(
                            "pool-covers-node",
                            f"IPAddressPool {name_of(pool)}",
                            f"covers {addr}, an address of node {name_of(node)}: a Service given it "
                            "would steal the node's traffic",
                        )
                    )
        for cond in (pool.get("status") or {}).get("conditions") or []:
            ctype, cstatus = cond.get("type"), cond.get("status")
            if (ctype in BAD_WHEN_TRUE and cstatus == "True") or (ctype == "Ready" and cstatus == "False"):
                problems.append(
                    Problem(
                        "pool-condition",
                        f"IPAddressPool {name_of(pool)}",
                        f"{ctype}={cstatus}: {cond.get('reason') or ''} {cond.get('message') or ''}".strip(),
                    )
                )
    # Advertisements that no node can serve, or that name pools that do not exist.
    pool_names = {name_of(p) for p in snap.pools}
    advertisements = (
        ("L2Advertisement", snap.l2advertisements),
        ("BGPAdvertisement", snap.bgpadvertisements),
    )
    for kind, advs in advertisements:
        for adv in advs:
            if not advertisement_nodes(adv, snap.nodes):
                problems.append(
                    Problem("advertisement-no-node", f"{kind} {name_of(adv)}",
                            "its nodeSelectors match no node: nothing will announce its pools")
                )
            missing = [p for p in (adv.get("spec") or {}).get("ipAddressPools") or [] if p not in pool_names]
            if missing:
                problems.append(
                    Problem("advertisement-unknown-pool", f"{kind} {name_of(adv)}",
                            f"names pools that do not exist: {', '.join(missing)}")
                )
            status = adv.get("status") or {}
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") == "False":
                    detail = f"{cond.get('reason') or ''} {cond.get('message') or ''}".strip()
                    problems.append(
                        Problem("advertisement-condition", f"{kind} {name_of(adv)}", f"Ready=False: {detail}")
                    )
            for entry in status.get("nodeProblems") or []:  # what only that node's speaker can see
                problems.append(
                    Problem("advertisement-node", f"{kind} {name_of(adv)}",
                            f"on node {entry.get('node')}: {entry.get('reason')}: {entry.get('message')}")
                )
    # Services.
    for row in service_rows(snap):
        for msg in row.problems:
            if msg.startswith(("announcing node", BGP_DOWN)):
                continue  # reported once per speaker / per BGPPeer below
            check_name = "service-no-endpoint" if msg == "no ready endpoint" else "service"
            problems.append(Problem(check_name, f"Service {row.namespace}/{row.name}", msg))
    # BGP sessions.
    for peer in snap.bgppeers:
        for session in (peer.get("status") or {}).get("sessions") or []:
            if session.get("state") != "Established":
                reason = f": {session['reason']}" if session.get("reason") else ""
                problems.append(
                    Problem(
                        "bgp-session",
                        f"BGPPeer {name_of(peer)}",
                        f"session from node {session.get('node')} is {session.get('state')}{reason}",
                    )
                )
    # Speakers.
    leases = speaker_leases(snap)
    node_names = {name_of(n) for n in snap.nodes}
    for node_name in sorted(set(leases) | (node_names if leases else set())):
        why = speaker_problem(leases.get(node_name), snap.now)
        if why is None:
            continue
        if node_name not in node_names and why.startswith("speaker stopped"):
            continue  # a node that left the cluster: its released Lease is history
        problems.append(Problem("speaker", f"node {node_name}", why))
    return problems
