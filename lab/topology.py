"""The lab topology: a kind-like docker network built from network namespaces.

`plan()` is pure: from the options (workers, IPv6, kube-proxy mode, strictARP) it
derives every name, address, MAC, route and sysctl, so tests and helpers can
predict them without looking at the kernel. `apply()` is the thin shell that makes
the kernel match the plan; it is idempotent (`addr replace`, `route replace`,
existing links kept), so re-running `up` on a running lab is safe.

Layout (IPv6 mirrors IPv4 with `--ipv6`):

    kind-net   bridge br-kind (stp off, forward delay 0); one port v-<short> per namespace
    router     eth0 172.18.0.1/16 (the nodes' default gateway, like docker's)   eth1 203.0.113.1/24
    kind-control-plane 172.18.0.2, kind-worker 172.18.0.3, kind-worker2 172.18.0.4, ...
    client     172.18.0.100 (the "sidecar container")
    ext-client 203.0.113.2/24 behind the router (default via 203.0.113.1)

MACs follow docker: 02:42 + the IPv4 address in hex (172.18.0.3 -> 02:42:ac:12:00:03).
Node index N owns pod CIDR 10.244.N.0/24 (fd00:10:244:N::/64); every node, the
client and the router route each other node's pod CIDR via that node's IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from lab import netns as nsops

BRIDGE_NETNS = "kind-net"
BRIDGE = "br-kind"
CLIENT = "client"
ROUTER = "router"
EXT_CLIENT = "ext-client"
CONTROL_PLANE = "kind-control-plane"
POD_NETNS_PREFIX = "lbpod-"

NODE_SUBNET_V4 = "172.18.0.0/16"
NODE_SUBNET_V6 = "fc00:f853:ccd:e793::/64"
EXT_SUBNET_V4 = "203.0.113.0/24"
EXT_SUBNET_V6 = "2001:db8:1::/64"
POD_SUBNET_V4 = "10.244.0.0/16"
ROUTER_ASN = 64512
NODE_ASN = 64513
# eBGP (default): the router is AS 64512, nodes 64513. iBGP: the router joins the nodes' AS,
# which is the only way LOCAL_PREF reaches it (RFC 4271 strips it on eBGP), for localPref tests.
BGP_MODES = ("ebgp", "ibgp")


def router_asn(bgp_mode: str = "ebgp") -> int:
    """The router's AS for a BGP mode: its own (eBGP) or the nodes' (iBGP)."""
    if bgp_mode not in BGP_MODES:
        raise ValueError(f"bgp mode {bgp_mode!r}: expected one of {', '.join(BGP_MODES)}")
    return NODE_ASN if bgp_mode == "ibgp" else ROUTER_ASN

ROUTER_IP_V4 = "172.18.0.1"
ROUTER_IP_V6 = "fc00:f853:ccd:e793::1"
CLIENT_IP_V4 = "172.18.0.100"
CLIENT_IP_V6 = "fc00:f853:ccd:e793::100"
ROUTER_EXT_IP_V4 = "203.0.113.1"
ROUTER_EXT_IP_V6 = "2001:db8:1::1"
EXT_CLIENT_IP_V4 = "203.0.113.2"
EXT_CLIENT_IP_V6 = "2001:db8:1::2"

KUBE_PROXY_MODES = ("iptables", "ipvs", "nftables")


def node_name(index: int) -> str:
    """kind's node names: index 0 is the control plane, then kind-worker, kind-worker2, ..."""
    if index == 0:
        return CONTROL_PLANE
    return "kind-worker" if index == 1 else f"kind-worker{index}"


def node_short(index: int) -> str:
    """Short tag used in interface names (IFNAMSIZ is 15): cp, w1, w2, ..."""
    return "cp" if index == 0 else f"w{index}"


def docker_mac(ipv4: str) -> str:
    """docker's MAC scheme: 02:42 followed by the four IPv4 octets in hex."""
    octets = ipaddress.IPv4Address(ipv4).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


def bridge_port_mac(ipv4: str) -> str:
    """MAC of a namespace's bridge-side veth end (02:6b + IPv4 octets), deterministic too."""
    octets = ipaddress.IPv4Address(ipv4).packed
    return "02:6b:" + ":".join(f"{b:02x}" for b in octets)


@dataclass(frozen=True)
class Iface:
    """One interface inside a lab namespace; `peer` is the other veth end (namespace, name)."""

    name: str
    mac: str
    addresses: tuple[str, ...]  # CIDR notation
    peer_netns: str
    peer_name: str
    peer_mac: str
    on_bridge: bool  # peer end is a port of br-kind


@dataclass(frozen=True)
class NamespacePlan:
    """Everything one namespace needs: links, routes and sysctls."""

    name: str
    role: str  # node | client | router | ext-client
    ifaces: tuple[Iface, ...]
    routes: tuple[str, ...]  # `ip route replace` arguments, e.g. "default via 172.18.0.1"
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodePlan:
    """A kind node: its namespace, addresses and pod CIDR (what Node objects report)."""

    name: str
    index: int
    ipv4: str
    ipv6: str | None
    mac: str
    pod_cidr: str
    pod_cidr_v6: str | None
    control_plane: bool


@dataclass(frozen=True)
class LabPlan:
    """The whole topology as plain data (serialised into the state file for other tools)."""

    workers: int
    ipv6: bool
    kube_proxy_mode: str
    strict_arp: bool
    nodes: tuple[NodePlan, ...]
    namespaces: tuple[NamespacePlan, ...]

    def node(self, name: str) -> NodePlan:
        """The node named `name` (KeyError if it is not in the plan)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def namespace(self, name: str) -> NamespacePlan:
        """The namespace plan named `name` (KeyError if absent)."""
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        raise KeyError(name)

    @property
    def netns_names(self) -> list[str]:
        """All namespaces the plan creates, bridge namespace first (creation order)."""
        return [BRIDGE_NETNS] + [ns.name for ns in self.namespaces]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (the state file's `topology`)."""
        return asdict(self)


def node_ipv4(index: int) -> str:
    """Node index N sits at 172.18.0.(N+2), as kind's containers do."""
    return str(ipaddress.IPv4Address("172.18.0.2") + index)


def node_ipv6(index: int) -> str:
    """IPv6 mirrors the IPv4 last octet: fc00:f853:ccd:e793::<N+2>."""
    return f"fc00:f853:ccd:e793::{index + 2}"


def pod_cidr(index: int) -> str:
    """Pod CIDR of node index N: 10.244.N.0/24 (kind's default podSubnet split per node)."""
    return f"10.244.{index}.0/24"


def pod_cidr_v6(index: int) -> str:
    """IPv6 pod CIDR of node index N: fd00:10:244:N::/64."""
    return f"fd00:10:244:{index:x}::/64"


def node_sysctls(kube_proxy_mode: str, strict_arp: bool, ipv6: bool) -> dict[str, str]:
    """What a real node has: forwarding on, loose rp_filter, and ARP behaviour per strictARP.

    kube-proxy in IPVS mode with strictARP sets arp_ignore=1 / arp_announce=2; otherwise the
    kernel defaults (0/0) stay, which is what makes every node answer ARP for IPVS-bound VIPs.
    """
    values = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.rp_filter": "2",
        "net.ipv4.conf.default.rp_filter": "2",
        "net.ipv4.conf.eth0.rp_filter": "2",
        "net.ipv6.conf.all.forwarding": "1" if ipv6 else "0",
    }
    strict = kube_proxy_mode == "ipvs" and strict_arp
    for scope in ("all", "eth0"):
        values[f"net.ipv4.conf.{scope}.arp_ignore"] = "1" if strict else "0"
        values[f"net.ipv4.conf.{scope}.arp_announce"] = "2" if strict else "0"
    return values


def plan(
    workers: int = 3,
    ipv6: bool = False,
    kube_proxy_mode: str = "iptables",
    strict_arp: bool = False,
) -> LabPlan:
    """Derive the full topology from the options; pure, deterministic."""
    if workers < 0 or workers > 90:
        raise ValueError("workers must be between 0 and 90")
    if kube_proxy_mode not in KUBE_PROXY_MODES:
        raise ValueError(f"kube-proxy mode must be one of {KUBE_PROXY_MODES}")
    nodes = tuple(
        NodePlan(
            name=node_name(i),
            index=i,
            ipv4=node_ipv4(i),
            ipv6=node_ipv6(i) if ipv6 else None,
            mac=docker_mac(node_ipv4(i)),
            pod_cidr=pod_cidr(i),
            pod_cidr_v6=pod_cidr_v6(i) if ipv6 else None,
            control_plane=i == 0,
        )
        for i in range(workers + 1)
    )

    def pod_routes(exclude: str | None) -> list[str]:
        routes = [f"{n.pod_cidr} via {n.ipv4}" for n in nodes if n.name != exclude]
        if ipv6:
            routes += [f"{n.pod_cidr_v6} via {n.ipv6}" for n in nodes if n.name != exclude]
        return routes

    def bridge_iface(ipv4: str, v6: str | None, short: str) -> Iface:
        addrs = [f"{ipv4}/16"] + ([f"{v6}/64"] if v6 else [])
        return Iface(
            name="eth0",
            mac=docker_mac(ipv4),
            addresses=tuple(addrs),
            peer_netns=BRIDGE_NETNS,
            peer_name=f"v-{short}",
            peer_mac=bridge_port_mac(ipv4),
            on_bridge=True,
        )

    default_routes = [f"default via {ROUTER_IP_V4}"] + ([f"default via {ROUTER_IP_V6}"] if ipv6 else [])
    namespaces: list[NamespacePlan] = []

    router_ifaces = [
        bridge_iface(ROUTER_IP_V4, ROUTER_IP_V6 if ipv6 else None, "router"),
        Iface(
            name="eth1",
            mac=docker_mac(ROUTER_EXT_IP_V4),
            addresses=(f"{ROUTER_EXT_IP_V4}/24",) + ((f"{ROUTER_EXT_IP_V6}/64",) if ipv6 else ()),
            peer_netns=EXT_CLIENT,
            peer_name="eth0",
            peer_mac=docker_mac(EXT_CLIENT_IP_V4),
            on_bridge=False,
        ),
    ]
    router_sysctls = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"}
    if ipv6:
        router_sysctls["net.ipv6.conf.all.forwarding"] = "1"
    namespaces.append(
        NamespacePlan(ROUTER, "router", tuple(router_ifaces), tuple(pod_routes(None)), router_sysctls)
    )

    # ext-client's only link is the router's eth1 peer; the router creates that veth.
    ext_routes = [f"default via {ROUTER_EXT_IP_V4}"] + ([f"default via {ROUTER_EXT_IP_V6}"] if ipv6 else [])
    ext_iface = Iface(
        name="eth0",
        mac=docker_mac(EXT_CLIENT_IP_V4),
        addresses=(f"{EXT_CLIENT_IP_V4}/24",) + ((f"{EXT_CLIENT_IP_V6}/64",) if ipv6 else ()),
        peer_netns=ROUTER,
        peer_name="eth1",
        peer_mac=docker_mac(ROUTER_EXT_IP_V4),
        on_bridge=False,
    )
    namespaces.append(NamespacePlan(EXT_CLIENT, "ext-client", (ext_iface,), tuple(ext_routes)))

    for n in nodes:
        namespaces.append(
            NamespacePlan(
                n.name,
                "node",
                (bridge_iface(n.ipv4, n.ipv6, node_short(n.index)),),
                tuple(default_routes + pod_routes(n.name)),
                node_sysctls(kube_proxy_mode, strict_arp, ipv6),
            )
        )
    namespaces.append(
        NamespacePlan(
            CLIENT,
            "client",
            (bridge_iface(CLIENT_IP_V4, CLIENT_IP_V6 if ipv6 else None, "client"),),
            tuple(default_routes + pod_routes(None)),
        )
    )
    return LabPlan(workers, ipv6, kube_proxy_mode, strict_arp, nodes, tuple(namespaces))


def is_lab_netns(name: str) -> bool:
    """Whether a namespace name belongs to the lab (what `down` may delete without a record)."""
    return (
        name in (BRIDGE_NETNS, CLIENT, ROUTER, EXT_CLIENT)
        or name.startswith("kind-")
        or name.startswith(POD_NETNS_PREFIX)
    )


def _ensure_bridge() -> None:
    """The bridge namespace and br-kind: STP off, no forward delay, no IPv6 chatter."""
    nsops.create_netns(BRIDGE_NETNS)
    nsops.set_sysctls(
        BRIDGE_NETNS, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    )
    if not nsops.link_exists(BRIDGE_NETNS, BRIDGE):
        nsops.run_in(
            None,
            [
                "ip",
                "-n",
                BRIDGE_NETNS,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        )
    nsops.ip_batch(BRIDGE_NETNS, [f"link set {BRIDGE} address 02:6b:ac:12:ff:ff", f"link set {BRIDGE} up"])


def _apply_iface(ns: NamespacePlan, iface: Iface) -> None:
    """Create the veth (if missing), pin MACs, enslave the bridge end, add addresses."""
    if not (nsops.link_exists(ns.name, iface.name) and nsops.link_exists(iface.peer_netns, iface.peer_name)):
        nsops.add_veth(
            ns.name, iface.name, iface.peer_netns, iface.peer_name, mac_a=iface.mac, mac_b=iface.peer_mac
        )
    if iface.on_bridge:
        nsops.ip_batch(
            iface.peer_netns,
            [f"link set {iface.peer_name} master {BRIDGE}", f"link set {iface.peer_name} up"],
        )
    cmds = [f"link set {iface.name} address {iface.mac}", f"link set {iface.name} up"]
    for addr in iface.addresses:
        extra = " nodad" if ":" in addr else ""
        cmds.append(f"addr replace {addr} dev {iface.name}{extra}")
    nsops.ip_batch(ns.name, cmds)


def apply(lab: LabPlan, record_netns: Callable[[str], None] | None = None) -> list[str]:
    """Make the kernel match the plan; returns the namespaces that had to be created.

    `record_netns(name)` runs *before* each namespace is created so that `down` can remove
    it even if we crash right after.
    """
    record = record_netns or (lambda _name: None)
    created = [n for n in lab.netns_names if not nsops.netns_exists(n)]
    record(BRIDGE_NETNS)
    _ensure_bridge()
    for ns in lab.namespaces:
        record(ns.name)
        nsops.create_netns(ns.name)
        if lab.ipv6:
            # No DAD: link-local and global addresses usable at once (no first-ping loss).
            nsops.set_sysctls(
                ns.name, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
            )
    for ns in lab.namespaces:
        # The router's eth1 <-> ext-client's eth0 is one veth: create it once, from the router.
        for iface in ns.ifaces:
            if ns.role == "ext-client":
                continue
            _apply_iface(ns, iface)
    ext = [ns for ns in lab.namespaces if ns.role == "ext-client"]
    for ns in ext:
        for iface in ns.ifaces:
            cmds = [f"link set {iface.name} address {iface.mac}", f"link set {iface.name} up"]
            cmds += [
                f"addr replace {a} dev {iface.name}{' nodad' if ':' in a else ''}" for a in iface.addresses
            ]
            nsops.ip_batch(ns.name, cmds)
    for ns in lab.namespaces:
        if ns.sysctls:
            nsops.set_sysctls(ns.name, ns.sysctls)
        nsops.ip_batch(ns.name, [f"route replace {r}" for r in ns.routes])
    return created
