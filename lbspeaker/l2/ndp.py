"""NDP responder for one interface: answers Neighbor Solicitations for owned IPv6 IPs.

NS for an address go to its solicited-node multicast group; real NICs filter
multicast in hardware, so for every owned address we join the group's MAC
(33:33:ff:xx:xx:xx) on the interface (refcounted: several addresses can share a
group). Replies carry Override=1 and our MAC as target link-layer address.

IPv6 source of our NAs: the target address itself, which is what the Linux kernel
does for addresses it owns (ndisc_send_na). MetalLB uses the link-local address;
receivers' kernels accept either, but some tools (ndisc6) only accept an answer
from the target, so we do as the kernel does. `source_ip` overrides it.

NS traffic is far lighter than ARP (only solicited-node groups we joined reach us),
so this path uses the full parser with checksum verification.
"""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Iterable
from typing import Final

from lbspeaker.l2.bpf import neighbor_solicitation_filter
from lbspeaker.l2.frames import (
    ETH_P_IPV6,
    MalformedFrame,
    build_na_reply,
    build_unsolicited_na,
    ipv6_multicast_mac,
    ns_answerable,
    parse_neighbor_solicitation,
    solicited_node_multicast,
)
from lbspeaker.l2.packet import (
    PacketResponder,
    ResponderStats,
    open_packet_socket,
    set_multicast_membership,
    socket_mac,
)

DEFAULT_BATCH: Final = 256


class NdpResponder(PacketResponder):
    """One AF_PACKET socket on `ifname` answering NS for `owned` (16-byte IPs)."""

    family: Final = 6

    def __init__(self, ifname: str, owned: Iterable[bytes] = (), stats: ResponderStats | None = None) -> None:
        self.ifname = ifname
        self.sock = open_packet_socket(ifname, ETH_P_IPV6, neighbor_solicitation_filter())
        self.stats = stats if stats is not None else ResponderStats()
        self._owned: frozenset[bytes] = frozenset()
        self._groups: Counter[bytes] = Counter()
        self.source_ip: bytes | None = None  # None = the target address, as Linux does
        try:
            self.ifindex = socket.if_nametoindex(ifname)
            self.mac = socket_mac(self.sock)
            self.set_owned(owned)
        except BaseException:
            self.sock.close()
            raise

    def set_owned(self, owned: Iterable[bytes]) -> None:
        """Replace the owned set, joining/leaving solicited-node groups as needed."""
        new = frozenset(owned)
        old = self._owned
        self._owned = new  # stop answering lost addresses first
        for ip in new - old:
            group = ipv6_multicast_mac(solicited_node_multicast(ip))
            if self._groups[group] == 0:
                set_multicast_membership(self.sock, self.ifindex, group, True)
            self._groups[group] += 1
        for ip in old - new:
            group = ipv6_multicast_mac(solicited_node_multicast(ip))
            self._groups[group] -= 1
            if self._groups[group] <= 0:
                del self._groups[group]
                with contextlib.suppress(OSError):  # already gone with the interface
                    set_multicast_membership(self.sock, self.ifindex, group, False)

    def handle_readable(self, max_batch: int = DEFAULT_BATCH) -> int:
        """Drain up to `max_batch` frames; return how many were read."""
        stats = self.stats
        n = 0
        while n < max_batch:
            try:
                frame = self.sock.recv(2048)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            n += 1
            try:
                ns = parse_neighbor_solicitation(frame)
            except MalformedFrame:
                stats.malformed_dropped += 1
                continue
            if ns is None or ns.target not in self._owned or not ns_answerable(ns, self.mac):
                stats.ignored += 1
                continue
            stats.requests_received[ns.target] += 1
            reply = build_na_reply(ns, self.mac, self.source_ip or ns.target)
            self._send(reply, stats.responses_sent, ns.target)
        return n

    def send_gratuitous(self, ip: bytes) -> int:
        """Send one unsolicited NA (Override) for `ip` to all-nodes; frames sent."""
        na = build_unsolicited_na(self.mac, self.source_ip or ip, ip)
        return int(self._send(na, self.stats.gratuitous_sent, ip))

    def close(self) -> None:
        """Close the socket (the kernel drops our multicast memberships with it)."""
        self._groups.clear()
        super().close()
