"""Build and parse the few Ethernet frames the layer-2 announcer speaks: ARP and NDP.

Pure (no sockets) and scapy-free on purpose: this code sits in the reply path, which
has to keep up with tens of thousands of requests per second, and scapy's packet
objects cost tens of microseconds each. Everything here is ``struct`` and bytes
slicing over whole frames as they come off an AF_PACKET socket (Ethernet header
included; no VLAN tag, Linux strips it before the packet socket sees it).

Parsers return None for well-formed frames that are simply not what we answer
(an ARP reply, another ICMPv6 type) and raise `MalformedFrame` for frames that are
broken (truncated, wrong lengths, bad checksum, RFC violations). The announcer counts
the latter and never lets them escape.

Addresses are passed as raw bytes (4/16-byte IPs, 6-byte MACs) so the hot path never
converts to text; `mac_bytes`/`mac_str` help at the edges.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD
ETH_HLEN: Final = 14
BROADCAST_MAC: Final = b"\xff" * 6
ZERO_MAC: Final = b"\x00" * 6

ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2
ARP_LEN: Final = 28  # Ethernet/IPv4 ARP payload
_ARP_FIXED: Final = struct.pack("!HHBB", 1, 0x0800, 6, 4)  # htype, ptype, hlen, plen
_ETH_ARP: Final = struct.pack("!H", ETH_P_ARP)
_ETH_IPV6: Final = struct.pack("!H", ETH_P_IPV6)

IPPROTO_ICMPV6: Final = 58
ICMPV6_NS: Final = 135
ICMPV6_NA: Final = 136
NDP_OPT_SLLA: Final = 1
NDP_OPT_TLLA: Final = 2
NA_FLAG_ROUTER: Final = 0x80
NA_FLAG_SOLICITED: Final = 0x40
NA_FLAG_OVERRIDE: Final = 0x20
IPV6_UNSPECIFIED: Final = b"\x00" * 16
ALL_NODES: Final = ipaddress.IPv6Address("ff02::1").packed
ALL_NODES_MAC: Final = b"\x33\x33\x00\x00\x00\x01"
_SOLICITED_NODE_PREFIX: Final = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13]


class MalformedFrame(ValueError):
    """A frame of a type we handle that is broken; counted and dropped."""


# --- helpers ----------------------------------------------------------------------


def mac_bytes(mac: str | bytes) -> bytes:
    """'aa:bb:cc:dd:ee:ff' (or '-' separated, or 6 raw bytes) -> 6 bytes."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
        return mac
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(mac: bytes) -> str:
    """6 bytes -> 'aa:bb:cc:dd:ee:ff'."""
    return ":".join(f"{b:02x}" for b in mac)


def solicited_node_multicast(addr: bytes) -> bytes:
    """ff02::1:ffXX:XXXX for a 16-byte IPv6 address (RFC 4291 2.7.1)."""
    return _SOLICITED_NODE_PREFIX + addr[13:]


def ipv6_multicast_mac(group: bytes) -> bytes:
    """33:33 + low 32 bits of an IPv6 multicast group (RFC 2464 7)."""
    return b"\x33\x33" + group[12:]


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    # struct.unpack over 16-bit words is much faster than a Python loop.
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """ICMPv6 checksum over the IPv6 pseudo-header (RFC 8200 8.1) and the message.

    `icmp` must carry zero in its checksum field when computing, or its real value
    when verifying (then a correct message yields 0).
    """
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), IPPROTO_ICMPV6)
    return (~_ones_complement_sum(pseudo + icmp)) & 0xFFFF


# --- ARP --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArpRequest:
    """A who-has: `sender_ip` (0.0.0.0 for an RFC 5227 probe) asks for `target_ip`."""

    eth_src: bytes
    eth_dst: bytes
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    @property
    def is_probe(self) -> bool:
        """RFC 5227 probe (duplicate address detection): sender IP all zeroes."""
        return self.sender_ip == b"\x00\x00\x00\x00"

    @property
    def is_gratuitous(self) -> bool:
        """Someone announcing its own address (sender == target): nothing to answer."""
        return self.sender_ip == self.target_ip


def parse_arp_request(frame: bytes) -> ArpRequest | None:
    """Parse an Ethernet/IPv4 ARP request; None for other ARP ops, raise on garbage."""
    if len(frame) < ETH_HLEN + ARP_LEN:
        raise MalformedFrame(f"short ARP frame ({len(frame)} bytes)")
    if frame[12:14] != _ETH_ARP:
        raise MalformedFrame("not an ARP frame")
    if frame[14:20] != _ARP_FIXED:
        raise MalformedFrame("ARP is not Ethernet/IPv4")
    op = (frame[20] << 8) | frame[21]
    if op != ARP_REQUEST:
        if op == ARP_REPLY:
            return None
        raise MalformedFrame(f"unknown ARP operation {op}")
    return ArpRequest(
        eth_dst=frame[0:6],
        eth_src=frame[6:12],
        sender_mac=frame[22:28],
        sender_ip=frame[28:32],
        target_mac=frame[32:38],
        target_ip=frame[38:42],
    )


def arp_answerable(frame: bytes, our_mac: bytes) -> bool:
    """Whether a who-has (for an address we own) deserves an answer; the frame is 42+ bytes.

    Not when it is not for us at Ethernet level; when the sender's MAC (Ethernet or ARP) is
    multicast, all-zero or our own; when the sender's IP is loopback, multicast, reserved or
    broadcast (no host has it: the kernel drops these, RFC 1122 3.2.1.3 / RFC 5735); nor for
    someone else's gratuitous ARP for the address (a conflict we must not feed). A probe
    (sender 0.0.0.0, RFC 5227) is answered: that is how an address is defended.
    Kept to a few byte compares: it runs for every request of an owned address.
    """
    dst = frame[0:6]
    if dst != BROADCAST_MAC and dst != our_mac:
        return False
    sha = frame[22:28]
    if frame[6] & 1 or sha[0] & 1 or sha in (ZERO_MAC, our_mac):
        return False
    spa0 = frame[28]
    if spa0 == 127 or spa0 >= 224:
        return False
    return frame[28:32] != frame[38:42]


def build_arp(
    op: int,
    eth_src: bytes,
    eth_dst: bytes,
    sender_mac: bytes,
    sender_ip: bytes,
    target_mac: bytes,
    target_ip: bytes,
) -> bytes:
    """A complete Ethernet/IPv4 ARP frame (42 bytes; the NIC pads to 60)."""
    return (
        eth_dst
        + eth_src
        + _ETH_ARP
        + _ARP_FIXED
        + op.to_bytes(2, "big")
        + sender_mac
        + sender_ip
        + target_mac
        + target_ip
    )


def build_arp_reply(req: ArpRequest, our_mac: bytes) -> bytes:
    """is-at answer to `req`: `req.target_ip` is at `our_mac`, sent to the asker only."""
    return build_arp(
        ARP_REPLY, our_mac, req.sender_mac, our_mac, req.target_ip, req.sender_mac, req.sender_ip
    )


def arp_reply_from_frame(frame: bytes, our_mac: bytes) -> bytes:
    """Hot-path twin of `build_arp_reply` for an already-validated request frame.

    Slices the request instead of building an `ArpRequest`; about twice as fast.
    """
    sha = frame[22:28]
    return sha + our_mac + frame[12:20] + b"\x00\x02" + our_mac + frame[38:42] + sha + frame[28:32]


def build_gratuitous_arp(our_mac: bytes, ip: bytes, reply: bool) -> bytes:
    """Gratuitous ARP as MetalLB sends it: to broadcast, sender = target = `ip`,
    target hardware address broadcast; MetalLB sends both the request and the reply
    form because hosts differ in which one updates an existing neighbour entry."""
    return build_arp(
        ARP_REPLY if reply else ARP_REQUEST, our_mac, BROADCAST_MAC, our_mac, ip, BROADCAST_MAC, ip
    )


# --- NDP --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """A parsed NS. `source_ip` is :: for DAD; `source_lladdr` from the SLLA option."""

    eth_src: bytes
    eth_dst: bytes
    source_ip: bytes
    dest_ip: bytes
    target: bytes
    source_lladdr: bytes | None

    @property
    def is_dad(self) -> bool:
        """Duplicate address detection probe (RFC 4862 5.4.2): unspecified source."""
        return self.source_ip == IPV6_UNSPECIFIED


def parse_neighbor_solicitation(frame: bytes, verify_checksum: bool = True) -> NeighborSolicitation | None:
    """Parse an Ethernet/IPv6/ICMPv6 Neighbor Solicitation with RFC 4861 7.1.1 checks.

    None for a well-formed IPv6 packet that is not an NS (other next header / type).
    """
    n = len(frame)
    if n < ETH_HLEN + 40:
        raise MalformedFrame(f"short IPv6 frame ({n} bytes)")
    if frame[12:14] != _ETH_IPV6:
        raise MalformedFrame("not an IPv6 frame")
    if frame[14] >> 4 != 6:
        raise MalformedFrame("IP version is not 6")
    payload_len = (frame[18] << 8) | frame[19]
    if frame[20] != IPPROTO_ICMPV6:
        return None
    if n < ETH_HLEN + 40 + payload_len:
        raise MalformedFrame("IPv6 payload length beyond frame")
    icmp = frame[54 : 54 + payload_len]
    if len(icmp) < 1:
        raise MalformedFrame("empty ICMPv6")
    if icmp[0] != ICMPV6_NS:
        return None
    if len(icmp) < 24:
        raise MalformedFrame("short Neighbor Solicitation")
    if frame[21] != 255:
        raise MalformedFrame("NS hop limit is not 255")
    if icmp[1] != 0:
        raise MalformedFrame("NS code is not 0")
    src, dst = frame[22:38], frame[38:54]
    if src[0] == 0xFF:
        raise MalformedFrame("NS source is multicast (RFC 4291 2.7: never a source address)")
    if verify_checksum and icmpv6_checksum(src, dst, icmp) != 0:
        raise MalformedFrame("bad ICMPv6 checksum")
    target = icmp[8:24]
    if target[0] == 0xFF:
        raise MalformedFrame("NS target is multicast")
    slla: bytes | None = None
    i = 24
    while i < len(icmp):
        if i + 2 > len(icmp):
            raise MalformedFrame("truncated NDP option")
        opt_type, opt_len = icmp[i], icmp[i + 1] * 8
        if opt_len == 0 or i + opt_len > len(icmp):
            raise MalformedFrame("bad NDP option length")
        if opt_type == NDP_OPT_SLLA and opt_len >= 8:
            slla = icmp[i + 2 : i + 8]
        i += opt_len
    if src == IPV6_UNSPECIFIED:
        if dst[:13] != _SOLICITED_NODE_PREFIX:
            raise MalformedFrame("DAD NS not sent to a solicited-node group")
        if slla is not None:
            raise MalformedFrame("DAD NS carries a source link-layer option")
    return NeighborSolicitation(
        eth_dst=frame[0:6],
        eth_src=frame[6:12],
        source_ip=src,
        dest_ip=dst,
        target=target,
        source_lladdr=slla,
    )


def ns_answerable(ns: NeighborSolicitation, our_mac: bytes) -> bool:
    """Whether a valid NS (for an address we own) deserves an answer: as strict as the ARP path.

    It must be addressed as RFC 4861 4.3 says, to the target's solicited-node group or to
    the target itself, at IPv6 and at Ethernet level (our MAC or the group's); and neither
    the Ethernet source nor the source link-layer address may be multicast, all-zero or ours.
    """
    group = solicited_node_multicast(ns.target)
    if ns.dest_ip != group and ns.dest_ip != ns.target:
        return False
    if ns.eth_dst != our_mac and ns.eth_dst != ipv6_multicast_mac(group):
        return False
    for mac in (ns.eth_src, ns.source_lladdr):
        if mac is not None and (mac[0] & 1 or mac in (ZERO_MAC, our_mac)):
            return False
    return True


def build_neighbor_advertisement(
    our_mac: bytes,
    src_ip: bytes,
    target: bytes,
    dst_ip: bytes,
    dst_mac: bytes,
    solicited: bool,
    override: bool = True,
) -> bytes:
    """A complete Ethernet/IPv6 NA for `target` with a target link-layer option.

    `src_ip`: the announcer passes the target itself, as Linux does for its own
    addresses; the interface's link-local address (MetalLB's choice) also works.
    """
    flags = (NA_FLAG_SOLICITED if solicited else 0) | (NA_FLAG_OVERRIDE if override else 0)
    body = bytes((ICMPV6_NA, 0, 0, 0, flags, 0, 0, 0)) + target + bytes((NDP_OPT_TLLA, 1)) + our_mac
    csum = icmpv6_checksum(src_ip, dst_ip, body)
    icmp = body[:2] + csum.to_bytes(2, "big") + body[4:]
    ip6 = b"\x60\x00\x00\x00" + len(icmp).to_bytes(2, "big") + bytes((IPPROTO_ICMPV6, 255)) + src_ip + dst_ip
    return dst_mac + our_mac + _ETH_IPV6 + ip6 + icmp


def build_na_reply(ns: NeighborSolicitation, our_mac: bytes, src_ip: bytes, override: bool = True) -> bytes:
    """Answer an NS for an owned target (RFC 4861 7.2.4).

    DAD (unspecified source): to all-nodes, Solicited=0, so the prober sees the
    address is taken. Otherwise unicast to the asker, Solicited=1, to the MAC in its
    SLLA option or, failing that (unicast NUD probes omit it), the frame's source.
    Override defaults to 1: the address is this node's own for as long as it owns it
    (a VIP, not a proxied address), and O=1 lets a failover take effect at once.
    """
    if ns.is_dad:
        return build_neighbor_advertisement(
            our_mac, src_ip, ns.target, ALL_NODES, ALL_NODES_MAC, solicited=False, override=override
        )
    dst_mac = ns.source_lladdr or ns.eth_src
    return build_neighbor_advertisement(
        our_mac, src_ip, ns.target, ns.source_ip, dst_mac, solicited=True, override=override
    )


def build_unsolicited_na(our_mac: bytes, src_ip: bytes, target: bytes) -> bytes:
    """Unsolicited NA to all-nodes with Override (RFC 4861 7.2.6): the IPv6 GARP."""
    return build_neighbor_advertisement(
        our_mac, src_ip, target, ALL_NODES, ALL_NODES_MAC, solicited=False, override=True
    )
