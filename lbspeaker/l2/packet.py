"""AF_PACKET plumbing shared by the ARP and NDP responders.

Sockets are opened with protocol 0 (receive nothing), get their BPF filter, and only
then are bound to the interface and the real protocol; binding first would let frames
from every interface, unfiltered, queue up in the gap. The socket is non-blocking so
one thread can serve many of them from a selector and drain each in batches.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from lbspeaker.l2.bpf import Insn, attach_filter

SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_DROP_MEMBERSHIP: Final = 2
PACKET_MR_MULTICAST: Final = 0
PACKET_QDISC_BYPASS: Final = 20
SO_RCVBUFFORCE: Final = 33
RCVBUF_BYTES: Final = 4 * 1024 * 1024


def open_packet_socket(ifname: str, proto: int, prog: Sequence[Insn]) -> socket.socket:
    """A non-blocking AF_PACKET/SOCK_RAW socket on `ifname` with `prog` attached.

    Raises OSError (e.g. ENODEV for a missing interface); the caller reports it.
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_filter(sock, prog)
        try:
            # A burst of requests must not overflow the default ~200 KiB buffer while
            # the loop is busy elsewhere; FORCE works for root / CAP_NET_ADMIN.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        with contextlib.suppress(OSError):
            # Replies skip the qdisc layer (as AF_PACKET generators do): less work per
            # frame, and a tc shaper on the uplink cannot delay an ARP answer.
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        sock.bind((ifname, proto))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_mac(sock: socket.socket) -> bytes:
    """The hardware address of the interface a packet socket is bound to."""
    addr = sock.getsockname()
    mac = addr[4] if len(addr) > 4 else b""
    if len(mac) != 6:
        raise OSError(f"interface {addr[0]} has no Ethernet address ({mac!r})")
    return bytes(mac)


def set_multicast_membership(sock: socket.socket, ifindex: int, mac: bytes, join: bool) -> None:
    """Add/drop a link-layer multicast address on the interface for this socket.

    This programs the NIC's multicast filter (so frames to 33:33:ff:xx:xx:xx reach
    us at all on real hardware); the kernel refcounts it per socket and drops it when
    the socket closes.
    """
    mreq = struct.pack("iHH8s", ifindex, PACKET_MR_MULTICAST, len(mac), mac)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP if join else PACKET_DROP_MEMBERSHIP, mreq)


def _ip_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


@dataclass
class ResponderStats:
    """Counters of one responder; per-IP counters keyed by the raw address bytes.

    Raw bytes because the hot path must not format text per packet. Written only by
    the responder's thread; `snapshot()` copies (dict copies are atomic under the GIL)
    and converts keys to text for metrics and logs.
    """

    requests_received: Counter[bytes] = field(default_factory=Counter)
    responses_sent: Counter[bytes] = field(default_factory=Counter)
    gratuitous_sent: Counter[bytes] = field(default_factory=Counter)
    malformed_dropped: int = 0
    ignored: int = 0
    send_errors: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy with IPs as text."""
        return {
            "requests_received": {_ip_text(k): v for k, v in dict(self.requests_received).items()},
            "responses_sent": {_ip_text(k): v for k, v in dict(self.responses_sent).items()},
            "gratuitous_sent": {_ip_text(k): v for k, v in dict(self.gratuitous_sent).items()},
            "malformed_dropped": self.malformed_dropped,
            "ignored": self.ignored,
            "send_errors": self.send_errors,
        }


class PacketResponder:
    """What the ARP and NDP responders share: one packet socket on `ifname`, its MAC, the owned
    set (raw address bytes: 4 for ARP, 16 for NDP) and the counters.

    `_owned` is an immutable set swapped whole (atomic under the GIL), so a lost IP stops
    being answered from the next frame.
    """

    ifname: str
    sock: socket.socket
    mac: bytes
    stats: ResponderStats
    _owned: frozenset[bytes]

    def fileno(self) -> int:
        """For selectors."""
        return self.sock.fileno()

    @property
    def owned(self) -> frozenset[bytes]:
        """The addresses (raw bytes) currently answered for."""
        return self._owned

    def _send(self, frame: bytes, sent: Counter[bytes], ip: bytes) -> bool:
        """Send one frame; count it for `ip` in `sent`, or as a send error. True when it went."""
        try:
            self.sock.send(frame)
        except OSError:
            self.stats.send_errors += 1
            return False
        sent[ip] += 1
        return True

    def close(self) -> None:
        """Close the socket; no more answers from this responder."""
        self._owned = frozenset()
        self.sock.close()
