"""Direct speaker-to-speaker UDP heartbeats: failure detection in about a second.

Why: a Lease can only say a speaker died after its duration (10 s by default), and
the hard-failure target is a p50 of 2 s. Every speaker sends a small datagram to
every other node's InternalIP(s) every `interval` (200 ms) on UDP `port` (7474 by
default; 7473 is the metrics port, both on the host network) and remembers when it
last heard from each. On SIGTERM it sends `LEAVING` three times, so the others hand
over at once instead of waiting for the Lease watch.

Wire format (network order), 26 bytes + name::

    magic "LBHB" | version u8 (1) | type u8 (1 alive, 2 leaving)
    | incarnation u64 (sender's start time, ns) | seq u64 | name length u16 | name (UTF-8)

`PeerTable` (pure, clock injected) turns messages into per-node states:
ALIVE (heard within `timeout`), SILENT (heard before, not within `timeout`), LEFT
(said LEAVING, nothing newer since), UNKNOWN (never heard: heartbeats blocked or
not yet started there). Old messages (lower incarnation, or same incarnation and
not a higher seq) are ignored, so a late datagram cannot revive a node that left.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

MAGIC: Final = b"LBHB"
VERSION: Final = 1
HEADER: Final = struct.Struct("!4sBBQQH")
MAX_NAME: Final = 253
DEFAULT_PORT: Final = 7474


class MsgType(enum.IntEnum):
    ALIVE = 1
    LEAVING = 2


@dataclass(frozen=True)
class Message:
    type: MsgType
    node: str
    incarnation: int
    seq: int


def encode(msg: Message) -> bytes:
    """Message -> datagram. Raises ValueError for a name that does not fit."""
    name = msg.node.encode()
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"bad node name {msg.node!r}")
    return HEADER.pack(MAGIC, VERSION, int(msg.type), msg.incarnation, msg.seq, len(name)) + name


def decode(data: bytes) -> Message:
    """Datagram -> Message. Raises ValueError for anything malformed (never anything else)."""
    if len(data) < HEADER.size:
        raise ValueError("short heartbeat")
    magic, version, mtype, inc, seq, n = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not a heartbeat of this version")
    if n == 0 or n > MAX_NAME or len(data) != HEADER.size + n:
        raise ValueError("bad name length")
    try:
        node = data[HEADER.size :].decode()
        kind = MsgType(mtype)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("bad heartbeat body") from None
    return Message(kind, node, inc, seq)


class PeerState(enum.Enum):
    ALIVE = "alive"
    SILENT = "silent"
    LEFT = "left"
    UNKNOWN = "unknown"


@dataclass
class _Peer:
    incarnation: int
    seq: int
    last_seen: float
    left: bool


class PeerTable:
    """Per-node heartbeat state from received messages (pure: `now` is passed in)."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._peers: dict[str, _Peer] = {}

    def observe(self, msg: Message, now: float) -> bool:
        """Record `msg`; True if it was newer than what we had (i.e. it counted)."""
        p = self._peers.get(msg.node)
        if p is not None and (msg.incarnation, msg.seq) <= (p.incarnation, p.seq):
            return False
        self._peers[msg.node] = _Peer(msg.incarnation, msg.seq, now, msg.type is MsgType.LEAVING)
        return True

    def state(self, node: str, now: float) -> PeerState:
        p = self._peers.get(node)
        if p is None:
            return PeerState.UNKNOWN
        if p.left:
            return PeerState.LEFT
        return PeerState.ALIVE if now - p.last_seen <= self.timeout else PeerState.SILENT

    def states(self, now: float) -> dict[str, PeerState]:
        return {n: self.state(n, now) for n in self._peers}

    def forget(self, node: str) -> None:
        self._peers.pop(node, None)


class Heartbeater:
    """The socket side: send ALIVE to every peer address every `interval`, receive into a PeerTable.

    `peers()` returns {node: [addresses]} (refreshed each round, from the Node cache);
    `on_change()` is called (from the heartbeat thread) whenever a peer's state changes.
    """

    def __init__(
        self,
        node: str,
        peers: Callable[[], Mapping[str, Iterable[str]]],
        on_change: Callable[[], None],
        port: int = DEFAULT_PORT,
        bind: str = "",
        interval: float = 0.2,
        timeout: float = 1.0,
    ) -> None:
        self.node = node
        self.port = port
        self.interval = interval
        self.table = PeerTable(timeout)
        self._peers = peers
        self._on_change = on_change
        self._incarnation = time.time_ns()
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.malformed = 0
        self.spoofed = 0
        self.received = 0
        self.send_errors = 0
        self._socks: list[socket.socket] = []
        s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s4.bind((bind or "0.0.0.0", port))
        s4.settimeout(0.1)
        self._socks.append(s4)
        self._sock6: socket.socket | None = None
        if not bind:
            with contextlib.suppress(OSError):
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s6.bind(("::", port))
                s6.settimeout(0.1)
                self._socks.append(s6)
                self._sock6 = s6
        self._last_states: dict[str, PeerState] = {}
        self._change_lock = threading.Lock()

    def start(self) -> None:
        for i, s in enumerate(self._socks):
            t = threading.Thread(target=self._recv_loop, args=(s,), name=f"hb-recv{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._send_loop, name="hb-send", daemon=True)
        t.start()
        self._threads.append(t)

    def states(self) -> dict[str, PeerState]:
        with self._lock:
            return self.table.states(time.monotonic())

    def state(self, node: str) -> PeerState:
        with self._lock:
            return self.table.state(node, time.monotonic())

    def _next(self, kind: MsgType) -> bytes:
        with self._lock:
            self._seq += 1
            return encode(Message(kind, self.node, self._incarnation, self._seq))

    def _send_all(self, data: bytes) -> None:
        try:
            peers = self._peers()
        except Exception:
            log.exception("heartbeat peer list failed")
            return
        for node, addrs in peers.items():
            if node == self.node:
                continue
            for addr in addrs:
                sock = self._sock6 if ":" in addr else self._socks[0]
                if sock is None:
                    continue
                try:
                    sock.sendto(data, (addr, self.port))
                except OSError:
                    self.send_errors += 1

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._send_all(self._next(MsgType.ALIVE))
            self._check_changes()
            self._stop.wait(self.interval / 2 if self.interval > 0.1 else self.interval)
            self._check_changes()
            self._stop.wait(self.interval / 2 if self.interval > 0.1 else 0)

    def _check_changes(self) -> None:
        with self._change_lock:
            states = self.states()
            if states == self._last_states:
                return
            self._last_states = states
            try:
                self._on_change()
            except Exception:
                log.exception("heartbeat change callback failed")

    def _recv_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, src = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.1)
                continue
            try:
                msg = decode(data)
            except ValueError:
                self.malformed += 1
                continue
            if msg.node == self.node:
                continue
            known = self._known_addrs(msg.node)
            if known is not None and src[0] not in known:
                self.spoofed += 1
                continue
            self.received += 1
            with self._lock:
                now = time.monotonic()
                was_left = self.table.state(msg.node, now) is PeerState.LEFT
                counted = self.table.observe(msg, now)
            if counted and msg.type is MsgType.LEAVING:
                if not was_left:
                    log.info("speaker on %s is leaving", msg.node)
                self._check_changes()
            elif counted and self._last_states.get(msg.node) is not PeerState.ALIVE:
                self._check_changes()

    def _known_addrs(self, node: str) -> set[str] | None:
        try:
            addrs = self._peers().get(node)
        except Exception:
            return None
        if not addrs:
            return None
        out = set()
        for a in addrs:
            out.add(a)
            out.add(f"::ffff:{a}")
        return out

    def leave(self, repeats: int = 3) -> None:
        """Tell every peer we are going (SIGTERM): they hand our IPs over at once."""
        for _ in range(repeats):
            self._send_all(self._next(MsgType.LEAVING))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
