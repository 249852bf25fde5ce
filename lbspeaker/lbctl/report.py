"""What `lbctl status`, `pools` and `check` say, computed from a snapshot of cluster objects (pure).

The snapshot is plain API dicts (fetched by `lbspeaker.lbctl.snapshot`), so every
judgement here is table-testable without a server, and the CLI only prints rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from lbspeaker.facts import (
    BGPAdvertisementFacts,
    L2AdvertisementFacts,
    Pool,
    ingress_ips,
    is_load_balancer,
    key_of,
    lease_fresh,
    name_of,
    parse_time,
    pool_of,
    read_node,
    read_pool,
    service_facts,
    serving_endpoint_addresses,
    slices_by_service,
    speaker_of_lease,
)
from lbspeaker.speaker import strictarp

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


def pool_map(snap: Snapshot) -> dict[str, Pool]:
    return {p.name: p for p in map(read_pool, snap.pools)}


def service_pool(svc: Mapping[str, Any], pools: Mapping[str, Pool]) -> str | None:
    """The pool the speakers tie the Service to (`facts.pool_of` of its first IP that has one):
    the recorded `ip-allocated-from-pool` when that pool exists, else the pool holding the IP."""
    facts = service_facts(svc)
    if facts is None:
        return None
    for ip in facts.ips:
        found = pool_of(facts, ip, pools)
        if found is not None:
            return found.name
    return None


def modes_of_pool(snap: Snapshot, pool: Pool | None) -> list[str]:
    if pool is None:
        return []
    modes = []
    if any(L2AdvertisementFacts.from_object(a).matches_pool(pool) for a in snap.l2advertisements):
        modes.append("L2")
    if any(BGPAdvertisementFacts.from_object(a).matches_pool(pool) for a in snap.bgpadvertisements):
        modes.append("BGP")
    return modes


def ready_endpoints(snap: Snapshot, svc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(address, node) of the endpoints of a Service that can serve (`facts.endpoint_can_serve`:
    ready, or terminating but still serving), from its EndpointSlices."""
    return serving_endpoint_addresses(slices_by_service(snap.endpointslices).get(key_of(svc), []))


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
    out: dict[str, Obj] = {}
    for lease in snap.leases:
        node = speaker_of_lease(name_of(lease))
        if node is not None:
            out[node] = lease
    return out


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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class Row:
    """A table row of `lbctl`; `as_dict()` is its JSON/YAML form, camelCase names as the API writes them."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every row is a dataclass

    def as_dict(self) -> dict[str, Any]:
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}


@dataclass
class ServiceRow(Row):
    namespace: str
    name: str
    ips: list[str]
    pool: str | None
    mode: str
    announced_by: list[str]
    problems: list[str]



def service_rows(snap: Snapshot) -> list[ServiceRow]:
    rows = []
    leases = speaker_leases(snap)
    sessions = bgp_session_states(snap)
    pools = pool_map(snap)
    for svc in sorted(filter(is_load_balancer, snap.services), key=key_of):
        ips = ingress_ips(svc)
        pool = service_pool(svc, pools) if ips else None
        l2 = _status_for(snap.l2statuses, svc)
        bgp = _status_for(snap.bgpstatuses, svc)
        modes = modes_of_pool(snap, pools.get(pool) if pool else None)
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
class PoolRow(Row):
    name: str
    addresses: list[str]
    auto_assign: bool
    assigned: int
    available: int
    conditions: list[str]



def pool_rows(snap: Snapshot) -> list[PoolRow]:
    """Counts from the pool's status when the controller wrote them, else counted from the Services."""
    rows = []
    held: dict[str, set[str]] = {}
    pools = pool_map(snap)
    for svc in filter(is_load_balancer, snap.services):
        for ip in ingress_ips(svc):
            p = service_pool(svc, pools)
            if p:
                held.setdefault(p, set()).add(ip)
    for pool in sorted(snap.pools, key=name_of):
        spec = pool.get("spec") or {}
        status = pool.get("status") or {}
        size = sum(r.size for r in read_pool(pool).ranges)
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
class Finding(Row):
    """One finding of `lbctl check`: what is wrong, with which object, and what to do."""

    check: str
    object: str
    message: str


# Pool conditions that mean trouble when True, and Ready meaning trouble when False.
BAD_WHEN_TRUE = {"Overlap", "CoversNodeAddress", "ServicesOutsidePool"}


def check(snap: Snapshot) -> list[Finding]:
    problems: list[Finding] = []
    # kube-proxy IPVS without strictARP.
    state = strictarp.check(snap.kube_proxy)
    if not state.ok:
        problems.append(Finding("strictARP", "ConfigMap kube-system/kube-proxy", state.detail))
    # Pools covering node addresses; pool conditions.
    nodes = [read_node(n) for n in snap.nodes]
    for pool in snap.pools:
        facts = read_pool(pool)
        for node in nodes:
            for addr in (*node.internal_ips, *node.external_ips):
                if facts.contains(addr):
                    problems.append(
                        Finding(
                            "pool-covers-node",
                            f"IPAddressPool {name_of(pool)}",
                            f"covers {addr}, an address of node {node.name}: a Service given it "
                            "would steal the node's traffic",
                        )
                    )
        for cond in (pool.get("status") or {}).get("conditions") or []:
            ctype, cstatus = cond.get("type"), cond.get("status")
            if (ctype in BAD_WHEN_TRUE and cstatus == "True") or (ctype == "Ready" and cstatus == "False"):
                problems.append(
                    Finding(
                        "pool-condition",
                        f"IPAddressPool {name_of(pool)}",
                        f"{ctype}={cstatus}: {cond.get('reason') or ''} {cond.get('message') or ''}".strip(),
                    )
                )
    # Advertisements that no node can serve, or that name pools that do not exist.
    pool_names = {name_of(p) for p in snap.pools}
    advertisements = (
        ("L2Advertisement", [(a, L2AdvertisementFacts.from_object(a)) for a in snap.l2advertisements]),
        ("BGPAdvertisement", [(a, BGPAdvertisementFacts.from_object(a)) for a in snap.bgpadvertisements]),
    )
    for kind, advs in advertisements:
        for obj, adv in advs:
            if not any(adv.selects_node(n) for n in nodes):
                problems.append(
                    Finding("advertisement-no-node", f"{kind} {adv.name}",
                            "its nodeSelectors match no node: nothing will announce its pools")
                )
            missing = [p for p in adv.ip_address_pools if p not in pool_names]
            if missing:
                problems.append(
                    Finding("advertisement-unknown-pool", f"{kind} {adv.name}",
                            f"names pools that do not exist: {', '.join(missing)}")
                )
            status = obj.get("status") or {}
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") == "False":
                    detail = f"{cond.get('reason') or ''} {cond.get('message') or ''}".strip()
                    problems.append(
                        Finding("advertisement-condition", f"{kind} {adv.name}", f"Ready=False: {detail}")
                    )
            for entry in status.get("nodeProblems") or []:  # what only that node's speaker can see
                problems.append(
                    Finding("advertisement-node", f"{kind} {adv.name}",
                            f"on node {entry.get('node')}: {entry.get('reason')}: {entry.get('message')}")
                )
    # Services.
    for row in service_rows(snap):
        for msg in row.problems:
            if msg.startswith(("announcing node", BGP_DOWN)):
                continue  # reported once per speaker / per BGPPeer below
            check_name = "service-no-endpoint" if msg == "no ready endpoint" else "service"
            problems.append(Finding(check_name, f"Service {row.namespace}/{row.name}", msg))
    # BGP sessions.
    for peer in snap.bgppeers:
        for session in (peer.get("status") or {}).get("sessions") or []:
            if session.get("state") != "Established":
                reason = f": {session['reason']}" if session.get("reason") else ""
                problems.append(
                    Finding(
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
        problems.append(Finding("speaker", f"node {node_name}", why))
    return problems
