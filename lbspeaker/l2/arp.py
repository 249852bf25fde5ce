"""ARP responder for one interface: answers who-has for the owned IPv4 addresses only.

The receive loop is the hot path (tens of thousands of requests per second on a busy
or hostile LAN), so it works on raw frame bytes: one fixed-prefix compare, a set
lookup of the 4-byte target, and a reply assembled by slicing the request. Anything
that fails the fast check goes through the full parser only to be classified
(ignored vs malformed) for the counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from lbspeaker.l2.bpf import arp_request_filter, attach_filter
from lbspeaker.l2.frames import (
    ETH_P_ARP,
    MalformedFrame,
    arp_answerable,
    arp_reply_from_frame,
    build_gratuitous_arp,
    parse_arp_request,
)
from lbspeaker.l2.mmsg import MmsgIO
from lbspeaker.l2.packet import PacketResponder, ResponderStats, open_packet_socket, socket_mac

# ethertype ARP + htype 1 + ptype IPv4 + hlen 6 + plen 4 + op request
_REQUEST_PREFIX: Final = bytes.fromhex("08060001080006040001")
DEFAULT_BATCH: Final = 512


class ArpResponder(PacketResponder):
    """One AF_PACKET socket on `ifname`; `owned` is the set of 4-byte IPs we answer for.

    Not thread-safe by itself except for `set_owned`, which swaps an immutable set
    (atomic under the GIL) so that a lost IP stops being answered from the next frame.
    """

    family: Final = 4

    def __init__(self, ifname: str, owned: Iterable[bytes] = (), stats: ResponderStats | None = None) -> None:
        self.ifname = ifname
        self._owned: frozenset[bytes] = frozenset(owned)
        self.sock = open_packet_socket(ifname, ETH_P_ARP, arp_request_filter(sorted(self._owned)))
        try:
            self.mac = socket_mac(self.sock)
        except BaseException:
            self.sock.close()
            raise
        self.stats = stats if stats is not None else ResponderStats()
        self._io = MmsgIO(self.sock) if MmsgIO.available() else None

    def set_owned(self, owned: Iterable[bytes]) -> None:
        """Replace the owned set: Python check first (authoritative), then kernel filter."""
        new = frozenset(owned)
        if new == self._owned:
            return
        self._owned = new
        attach_filter(self.sock, arp_request_filter(sorted(new)))

    def handle_readable(self, max_batch: int = DEFAULT_BATCH) -> int:
        """Drain up to `max_batch` frames; return how many were read.

        Frames come and replies go in batches (recvmmsg/sendmmsg) where libc has them:
        two system calls per burst instead of two per request. OSError other than
        EAGAIN from receiving (e.g. ENETDOWN when the link goes away) propagates: the
        announcer re-opens the socket.
        """
        n = 0
        while n < max_batch:
            frames = self._receive()
            if not frames:
                break
            n += len(frames)
            answers = [(tpa, reply) for tpa, reply in map(self._answer, frames) if reply]
            if answers:
                self._send_answers(answers)
        return n

    def _receive(self) -> list[bytes]:
        if self._io is not None:
            return self._io.recv()
        while True:
            try:
                return [self.sock.recv(256)]
            except BlockingIOError:
                return []
            except InterruptedError:
                continue

    def _answer(self, frame: bytes) -> tuple[bytes, bytes | None]:
        """(target IP, reply frame) for a who-has of an owned IP; reply None for anything else."""
        if len(frame) < 42 or frame[12:22] != _REQUEST_PREFIX:
            self._classify(frame)
            return b"", None
        tpa = frame[38:42]
        if tpa not in self._owned:
            self.stats.ignored += 1
            return tpa, None
        if not arp_answerable(frame, self.mac):
            self.stats.ignored += 1
            return tpa, None
        self.stats.requests_received[tpa] += 1
        return tpa, arp_reply_from_frame(frame, self.mac)

    def _send_answers(self, answers: list[tuple[bytes, bytes]]) -> None:
        stats = self.stats
        if self._io is not None:
            try:
                sent = self._io.send([reply for _, reply in answers])
            except OSError:
                sent = 0
            stats.send_errors += len(answers) - sent
            for tpa, _ in answers[:sent]:
                stats.responses_sent[tpa] += 1
            return
        for tpa, reply in answers:
            self._send(reply, stats.responses_sent, tpa)

    def _classify(self, frame: bytes) -> None:
        try:
            parse_arp_request(frame)
        except MalformedFrame:
            self.stats.malformed_dropped += 1
        else:
            self.stats.ignored += 1

    def send_gratuitous(self, ip: bytes) -> int:
        """Send the request and the reply form of gratuitous ARP for `ip`; frames sent."""
        return sum(self._send(build_gratuitous_arp(self.mac, ip, reply), self.stats.gratuitous_sent, ip)
                   for reply in (False, True))
