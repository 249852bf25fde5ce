"""Link facts and interface selection (pure: plain `LinkInfo` records in, names out).

Which interfaces a node answers ARP/NDP on: MetalLB's rules (skip down, NOARP,
loopback, non-Ethernet, bond/bridge members, and by default virtual plumbing such as
`veth*`, `kube-ipvs*`, `cni*`, `docker*`); and the node's connected networks from the
text of /proc/net/route (where a TTL-1 eBGP peer can be). `lbspeaker.netinfo` is the
I/O shell that lists links over netlink, watches link events, reads /proc/net and
reads/writes the ARP sysctls.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

IFF_UP: Final = 0x1
IFF_LOOPBACK: Final = 0x8
IFF_NOARP: Final = 0x80
IFF_LOWER_UP: Final = 0x10000
ARPHRD_ETHER: Final = 1

# Interfaces that are never the node's uplink. Name prefixes are what kube-proxy,
# CNIs and container runtimes create; the kinds catch tunnels and the like under any
# name. veth is deliberately *not* a kind here: a kind node's own eth0 is a veth.
DEFAULT_SKIP_PREFIXES: Final = (
    "lo",
    "veth",
    "kube-ipvs",
    "kube-bridge",
    "cni",
    "docker",
    "flannel",
    "cali",
    "cilium",
    "lxc",
    "vxlan",
    "tunl",
    "weave",
    "vethwe",
    "datapath",
    "nodelocaldns",
    "genev",
    "antrea",
    "ovs-system",
    "virbr",
    "podman",
    "cni-podman",
    "tailscale",
    "wg",
    "zt",
)
DEFAULT_SKIP_KINDS: Final = frozenset(
    {
        "dummy",
        "ifb",
        "vxlan",
        "geneve",
        "ipip",
        "sit",
        "gre",
        "gretap",
        "ip6gre",
        "ip6tnl",
        "vti",
        "vti6",
        "wireguard",
        "tun",
        "nlmon",
        "openvswitch",
    }
)


@dataclass(frozen=True)
class LinkInfo:
    """The facts about one link that interface selection needs (plain data)."""

    name: str
    index: int = 0
    flags: int = IFF_UP | IFF_LOWER_UP
    kind: str | None = None
    master: int | None = None
    mac: str | None = None
    link_type: int = ARPHRD_ETHER
    oper_state: str | None = None

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP)."""
        return bool(self.flags & IFF_UP)

    @property
    def noarp(self) -> bool:
        """IFF_NOARP: no ARP on this link, so nothing for us to answer."""
        return bool(self.flags & IFF_NOARP)

    @property
    def loopback(self) -> bool:
        """IFF_LOOPBACK."""
        return bool(self.flags & IFF_LOOPBACK)


def link_usable(link: LinkInfo) -> bool:
    """Basic checks every announcing interface must pass, chosen or named by the user.

    Up, ARP-capable, Ethernet, not loopback, and not enslaved to a bond or bridge
    (its master answers for the segment; answering on the member too would make two
    MACs for one IP).
    """
    return (
        link.up
        and not link.noarp
        and not link.loopback
        and link.link_type == ARPHRD_ETHER
        and not link.master
    )


def is_virtual(
    link: LinkInfo,
    skip_prefixes: Sequence[str] = DEFAULT_SKIP_PREFIXES,
    skip_kinds: Iterable[str] = DEFAULT_SKIP_KINDS,
) -> bool:
    """Whether the default choice leaves this interface out as virtual plumbing."""
    return link.name.startswith(tuple(skip_prefixes)) or (link.kind or "") in set(skip_kinds)


def select_interfaces(
    links: Iterable[LinkInfo],
    allowed: Sequence[str] | None,
    skip_prefixes: Sequence[str] = DEFAULT_SKIP_PREFIXES,
    skip_kinds: Iterable[str] = DEFAULT_SKIP_KINDS,
) -> list[str]:
    """Names of the interfaces to announce on, sorted.

    `allowed` is an L2Advertisement's `interfaces` list: when given (non-empty), only
    those, and the virtual-name rules do not apply (the operator named them) but the
    basic `link_usable` checks do. When None or empty: every usable, non-virtual link.
    """
    kinds = frozenset(skip_kinds)
    out = []
    wanted = set(allowed) if allowed else None
    for link in links:
        if not link_usable(link):
            continue
        if wanted is not None:
            if link.name in wanted:
                out.append(link.name)
        elif not is_virtual(link, skip_prefixes, kinds):
            out.append(link.name)
    return sorted(set(out))


def missing_interfaces(links: Iterable[LinkInfo], allowed: Sequence[str] | None) -> list[str]:
    """Names in `allowed` that do not exist on this node (for a clear status/Event)."""
    if not allowed:
        return []
    present = {link.name for link in links}
    return sorted(set(allowed) - present)


# --- connected networks ---------------------------------------------------------------------------


def parse_proc_routes(route_v4: str, route_v6: str = "") -> list[str]:
    """Directly connected networks (no gateway) from /proc/net/route and /proc/net/ipv6_route (pure)."""
    out = []
    for line in route_v4.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or f[2] != "00000000" or f[0] == "lo":
            continue
        try:  # the kernel prints the addresses as host-order (little-endian) hex
            dest = ipaddress.IPv4Address(int(f[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(f[7], 16).to_bytes(4, "little"))
            out.append(str(ipaddress.ip_network(f"{dest}/{mask}", strict=False)))
        except ValueError:
            continue
    for line in route_v6.splitlines():
        f = line.split()
        if len(f) < 10 or f[4] != "0" * 32 or f[9] == "lo":
            continue
        plen = int(f[1], 16)
        if plen in (0, 128) or f[0].startswith("fe80") or f[0].startswith("ff"):
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(f[0]))
        out.append(str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)))
    return sorted(set(out))
