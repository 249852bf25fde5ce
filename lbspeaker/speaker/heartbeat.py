"""Direct speaker-to-speaker UDP heartbeats: failure detection in about a second, authenticated.

Why: a Lease can only say a speaker died after its duration (10 s by default), and
the hard-failure target is a p50 of 2 s. Every speaker sends a small datagram to
every other node's InternalIP(s) every `interval` (200 ms) on UDP `port` (7474 by
default; 7473 is the metrics port, both on the host network) and remembers when it
last heard from each. On SIGTERM it sends `LEAVING` three times, so the others hand
over at once instead of waiting for the Lease watch.

Every datagram is signed (HMAC-SHA256 over all the bytes before the tag) with a key
from the Secret `lbspeaker-memberlist` (`lbspeaker.kube.memberlist`): the source
address of a UDP datagram is trivially forged on the node network, so it proves
nothing. Wire format (network order), 33 bytes + key id + name + 32-byte tag::

    magic "LBHB" | version u8 (2) | type u8 (1 alive, 2 leaving)
    | incarnation u64 (sender's start time, ns) | seq u64 (per-incarnation counter)
    | sent_at u64 (sender's wall clock, ns) | key id length u8 | name length u16
    | key id (ASCII) | name (UTF-8) | HMAC-SHA256(key, everything before)

`verify()` (pure) accepts a datagram only if, in this order: it parses; its key id is
one of ours and the tag matches; the sender is a Node we know (so forged names cannot
grow the table) and the source address is one of its addresses; `sent_at` is within
`max_skew` of our clock (a recorded datagram cannot be replayed later, e.g. after we
restarted and forgot the sequence numbers); and the incarnation is not after `sent_at`
(no jump to 2^64-1 that would outrank every later real heartbeat). Each refusal has a
`Reason`, counted per reason and logged at most once a minute per reason.

Without any key (Secret not there yet, or not readable) a speaker neither sends nor
trusts heartbeats: it forgets what it heard (every peer UNKNOWN) and membership falls
back to Leases alone, slower but never fooled.

Keys rotate without an outage (`signing_key`): every key of the Secret is accepted;
a speaker signs with the newest one (the last name in sort order) that it has known
for `key_delay` seconds, so every other speaker has seen a new key before anyone
signs with it.

`PeerTable` (pure, clock injected) turns messages into per-node states:
ALIVE (heard within its timeout: `timeout`, or longer for a peer whose heartbeats came
further apart lately), SILENT (heard before, not within that timeout), LEFT
(said LEAVING, nothing newer since), UNKNOWN (never heard: heartbeats blocked or
not yet started there). Old messages (lower incarnation, or same incarnation and
not a higher seq) are ignored, so a late datagram cannot revive a node that left.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import hashlib
import hmac
import json
import logging
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger(__name__)

MAGIC: Final = b"LBHB"
VERSION: Final = 2
HEADER: Final = struct.Struct("!4sBBQQQBH")
TAG_SIZE: Final = hashlib.sha256().digest_size
MAX_NAME: Final = 253
MAX_KEY_ID: Final = 64
DEFAULT_PORT: Final = 7474
DEFAULT_MAX_SKEW_S: Final = 30.0
DEFAULT_KEY_DELAY_S: Final = 10.0
LOG_EVERY_S: Final = 60.0
# Linux's SO_TIMESTAMPNS (Python does not name it): the kernel stamps each datagram on arrival.
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC: Final = struct.Struct("@qq")
SENDER_SEQ_BLOCK: Final = 2**40  # sequence numbers left to one sender process (7,000 years of them)


class MsgType(enum.IntEnum):
    ALIVE = 1
    LEAVING = 2


class Reason(enum.Enum):
    """Why a datagram was refused (the `reason` label of the rejected counter)."""

    MALFORMED = "malformed"  # not a heartbeat of this version, or truncated/garbled
    NO_KEY = "no_key"  # we have no key at all: Lease-only membership
    UNKNOWN_KEY = "unknown_key"  # signed with a key id we do not hold
    BAD_MAC = "bad_mac"  # tag does not match: forged or corrupted
    UNKNOWN_NODE = "unknown_node"  # no Node of that name
    SOURCE = "source"  # not sent from one of the node's addresses
    STALE = "stale"  # sent_at too far from our clock: a replay, or clocks far apart
    INCARNATION = "incarnation"  # incarnation later than the send time


class Rejected(ValueError):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    type: MsgType
    node: str
    incarnation: int
    seq: int
    sent_at: int = 0  # sender's wall clock, ns


Keys = Mapping[str, bytes]  # key id -> secret bytes


def encode(msg: Message, key_id: str, key: bytes) -> bytes:
    """Message -> signed datagram. Raises ValueError for a name or key id that does not fit."""
    name = msg.node.encode()
    kid = key_id.encode("ascii")
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"bad node name {msg.node!r}")
    if not kid or len(kid) > MAX_KEY_ID:
        raise ValueError(f"bad key id {key_id!r}")
    body = HEADER.pack(MAGIC, VERSION, int(msg.type), msg.incarnation, msg.seq, msg.sent_at,
                       len(kid), len(name)) + kid + name
    return body + hmac.new(key, body, hashlib.sha256).digest()


def parse(data: bytes) -> tuple[Message, str, bytes, bytes]:
    """Datagram -> (message, key id, signed bytes, tag), unverified. Raises Rejected(MALFORMED) only."""
    if len(data) < HEADER.size + TAG_SIZE:
        raise Rejected(Reason.MALFORMED, "short datagram")
    magic, version, mtype, inc, seq, sent_at, nk, nn = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise Rejected(Reason.MALFORMED, "not a heartbeat of this version")
    if not 0 < nk <= MAX_KEY_ID or not 0 < nn <= MAX_NAME or len(data) != HEADER.size + nk + nn + TAG_SIZE:
        raise Rejected(Reason.MALFORMED, "bad lengths")
    end = HEADER.size + nk + nn
    try:
        kid = data[HEADER.size : HEADER.size + nk].decode("ascii")
        node = data[HEADER.size + nk : end].decode()
        kind = MsgType(mtype)
    except (UnicodeDecodeError, ValueError):
        raise Rejected(Reason.MALFORMED, "bad body") from None
    return Message(kind, node, inc, seq, sent_at), kid, data[:end], data[end:]


def verify(
    data: bytes,
    src: str,
    keys: Keys,
    peers: Mapping[str, Iterable[str]],
    now_ns: int,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> Message:
    """The authenticated message in `data` from address `src`, or Rejected with the reason (pure).

    `peers` maps every known Node name to its addresses (an empty list: any source).
    """
    msg, kid, signed, tag = parse(data)
    if not keys:
        raise Rejected(Reason.NO_KEY)
    key = keys.get(kid)
    if key is None:
        raise Rejected(Reason.UNKNOWN_KEY, kid)
    if not hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), tag):
        raise Rejected(Reason.BAD_MAC)
    addrs = peers.get(msg.node)
    if addrs is None:
        raise Rejected(Reason.UNKNOWN_NODE, msg.node)
    allowed = set(addrs)
    if allowed and src not in allowed and src.removeprefix("::ffff:") not in allowed:
        raise Rejected(Reason.SOURCE, f"{msg.node} from {src}")
    skew = int(max_skew_s * 1e9)
    if abs(now_ns - msg.sent_at) > skew:
        raise Rejected(Reason.STALE, f"{msg.node} sent {(now_ns - msg.sent_at) / 1e9:.1f}s ago")
    if msg.incarnation > msg.sent_at + skew:
        raise Rejected(Reason.INCARNATION, msg.node)
    return msg


def signing_key(keys: Keys, first_seen: Mapping[str, float], now: float,
                delay: float = DEFAULT_KEY_DELAY_S) -> str | None:
    """The key id to sign with (pure): the newest (last in name order) known for `delay` seconds,
    else the oldest, so a speaker never signs with a key the others may not have loaded yet."""
    if not keys:
        return None
    names = sorted(keys)
    aged = [n for n in names if now - first_seen.get(n, now) >= delay]
    return aged[-1] if aged else names[0]


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
    gaps: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=GAP_WINDOW))


GAP_WINDOW: Final = 50  # arrivals whose gaps set a peer's timeout (10 s of heartbeats at 200 ms)
JITTER_FACTOR: Final = 2.0  # a peer is silent after this many times its longest recent gap


class PeerTable:
    """Per-node heartbeat state from received messages (pure: `now` is passed in).

    Why the timeout adapts: on a starved machine (a 2-core lab at load 25, a node under a CPU
    storm) a live speaker's heartbeats arrive up to seconds apart, and a fixed 1 s timeout
    declared it dead and moved its IPs, and back, several times a minute. So a peer is SILENT
    after `timeout`, or `JITTER_FACTOR` times the longest gap among its last `GAP_WINDOW`
    arrivals if that is longer, at most `max_timeout`: a healthy cluster (gaps of one interval)
    keeps the 1 s failover, a jittery peer gets what its own history shows it needs. (Our own
    stalls are not anyone's silence either: arrivals carry the kernel's receive time, and
    `Heartbeater` reads what is waiting before it judges.)
    """

    def __init__(self, timeout: float = 1.0, max_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.max_timeout = max(timeout, max_timeout if max_timeout is not None else 4 * timeout)
        self._peers: dict[str, _Peer] = {}

    def observe(self, msg: Message, now: float) -> bool:
        """Record `msg` (received at `now`); True if it was newer than what we had (i.e. it counted)."""
        p = self._peers.get(msg.node)
        if p is not None and (msg.incarnation, msg.seq) <= (p.incarnation, p.seq):
            return False
        left = msg.type is MsgType.LEAVING
        if p is None or p.incarnation != msg.incarnation:
            self._peers[msg.node] = _Peer(msg.incarnation, msg.seq, now, left)
            return True
        if now > p.last_seen:
            p.gaps.append(now - p.last_seen)
        p.seq, p.left = msg.seq, left
        p.last_seen = max(p.last_seen, now)
        return True

    def timeout_of(self, node: str) -> float:
        """How long `node` may stay unheard before it is SILENT (see the class docstring)."""
        p = self._peers.get(node)
        longest = max(p.gaps, default=0.0) if p is not None else 0.0
        return min(self.max_timeout, max(self.timeout, JITTER_FACTOR * longest))

    def state(self, node: str, now: float) -> PeerState:
        p = self._peers.get(node)
        if p is None:
            return PeerState.UNKNOWN
        if p.left:
            return PeerState.LEFT
        return PeerState.ALIVE if now - p.last_seen <= self.timeout_of(node) else PeerState.SILENT

    def states(self, now: float) -> dict[str, PeerState]:
        return {n: self.state(n, now) for n in self._peers}

    def __len__(self) -> int:
        return len(self._peers)

    def forget(self, node: str) -> None:
        self._peers.pop(node, None)

    def retain(self, nodes: Iterable[str]) -> None:
        """Forget every node not in `nodes` (deleted Nodes): the table stays as big as the cluster."""
        keep = set(nodes)
        for n in [n for n in self._peers if n not in keep]:
            del self._peers[n]

    def clear(self) -> None:
        self._peers.clear()


@dataclass
class RejectLog:
    """Counts refusals per reason; says so in the log at most once per `every` seconds per reason."""

    every: float = LOG_EVERY_S
    counts: dict[Reason, int] = field(default_factory=dict)
    _last_log: dict[Reason, float] = field(default_factory=dict)
    _since_log: dict[Reason, int] = field(default_factory=dict)

    def add(self, exc: Rejected, src: str, now: float) -> str | None:
        """Count it; the log line to print now, if one is due (pure: the caller logs)."""
        r = exc.reason
        self.counts[r] = self.counts.get(r, 0) + 1
        self._since_log[r] = self._since_log.get(r, 0) + 1
        last = self._last_log.get(r)
        if last is not None and now - last < self.every:
            return None
        n = self._since_log.pop(r)
        self._last_log[r] = now
        return f"heartbeat refused ({exc}) from {src}; {n} refused for {r.value} since the last such line"


def send_to_peers(data: bytes, peers: Mapping[str, Iterable[str]], port: int, sock4: socket.socket,
                  sock6: socket.socket | None) -> int:
    """Send `data` to every address of every peer (IPv6 ones through `sock6`, skipped without
    one); returns how many sends failed. The speaker's thread and `hbsender` both send this way."""
    errors = 0
    for addrs in peers.values():
        for addr in addrs:
            sock = sock6 if ":" in addr else sock4
            if sock is None:
                continue
            try:
                sock.sendto(data, (addr, port))
            except OSError:
                errors += 1
    return errors


def _stamp_arrivals(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # without it, arrival = when we read it
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def _receive(sock: socket.socket) -> tuple[bytes, str, float]:
    """One datagram: (data, source address, arrival on our monotonic clock). The arrival is the
    kernel's stamp, not when this thread got to it: on a starved machine a datagram can wait in
    the socket for a second, and that second is not the sender's silence."""
    data, anc, _flags, src = sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
    now = time.monotonic()
    at = now
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(raw)
            at = min(now, now - (time.time() - (sec + nsec / 1e9)))
    return data, str(src[0]), at


def _bind_sockets(bind: str, port: int) -> tuple[list[socket.socket], socket.socket | None]:
    """The UDP sockets heartbeats use: IPv4 on `bind` (all addresses when empty) and, when
    unbound, an IPv6-only one on `::` where the host has IPv6. Returns (all, the IPv6 one)."""
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s4.bind((bind or "0.0.0.0", port))
    _stamp_arrivals(s4)
    s4.settimeout(0.1)
    socks = [s4]
    sock6: socket.socket | None = None
    if not bind:
        with contextlib.suppress(OSError):
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s6.bind(("::", port))
            _stamp_arrivals(s6)
            s6.settimeout(0.1)
            socks.append(s6)
            sock6 = s6
    return socks, sock6


@dataclass(eq=False)
class Heartbeater:
    """The socket side: send ALIVE to every peer address every `interval`, receive into a PeerTable.

    `peers()` returns {node: [addresses]} of every other Node (refreshed each round, from the
    Node cache); `keys()` the current heartbeat keys ({} = none: Lease-only, see the module
    docstring); `on_change()` is called (from the heartbeat thread) whenever a peer's state changes.
    """

    node: str
    peers: Callable[[], Mapping[str, Iterable[str]]]
    on_change: Callable[[], None]
    port: int = DEFAULT_PORT
    bind: str = ""
    interval: float = 0.2
    timeout: float = 1.0
    keys: Callable[[], Keys] = dict
    key_delay: float = DEFAULT_KEY_DELAY_S
    max_skew: float = DEFAULT_MAX_SKEW_S
    table: PeerTable = field(init=False)
    rejects: RejectLog = field(default_factory=RejectLog, init=False)
    received: int = field(default=0, init=False)
    send_errors: int = field(default=0, init=False)
    _keys: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _key_first_seen: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _peer_view: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _incarnation: int = field(default_factory=time.time_ns, init=False, repr=False)
    _seq: int = field(default=0, init=False, repr=False)
    # Send from a process of its own (`hbsender`; None: from a thread of ours, as tests do).
    sender_command: Sequence[str] | None = None
    _child: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _child_started: float = field(default=float("-inf"), init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False, repr=False)
    _socks: list[socket.socket] = field(init=False, repr=False)
    _sock6: socket.socket | None = field(init=False, repr=False)
    _last_states: dict[str, PeerState] = field(default_factory=dict, init=False, repr=False)
    _change_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.table = PeerTable(self.timeout)
        self._socks, self._sock6 = _bind_sockets(self.bind, self.port)
        self.refresh()

    @property
    def authenticated(self) -> bool:
        """True while we hold a key (heartbeats flow); False: Lease-only membership."""
        return bool(self._keys)

    @property
    def signing_key_id(self) -> str | None:
        """The key id our heartbeats are signed with now (None: no key, not sending)."""
        with self._lock:
            return signing_key(self._keys, self._key_first_seen, time.monotonic(), self.key_delay)

    def stats(self) -> dict[str, object]:
        """Counters for the metrics collector (`rejected` per reason)."""
        return {
            "received": self.received,
            "send_errors": self.send_errors,
            "keys": len(self._keys),
            "peers_alive": sum(1 for s in self.states().values() if s is PeerState.ALIVE),
            "rejected": {r.value: self.rejects.counts.get(r, 0) for r in Reason},
        }

    def refresh(self) -> None:
        """Re-read peers and keys (each send round). Losing every key forgets every peer: fail safe."""
        try:
            view = {n: list(a) for n, a in self.peers().items() if n != self.node}
        except Exception:
            log.exception("heartbeat peer list failed; keeping the last one")
            view = self._peer_view
        try:
            keys = dict(self.keys())
        except Exception:
            log.exception("reading the heartbeat keys failed; keeping the last ones")
            keys = self._keys
        now = time.monotonic()
        with self._lock:
            had = bool(self._keys)
            for kid in keys:
                self._key_first_seen.setdefault(kid, now)
            for kid in set(self._key_first_seen) - set(keys):
                del self._key_first_seen[kid]
            self._keys = keys
            self._peer_view = view
            self.table.retain(view)
            if had and not keys:
                self.table.clear()
        if had != bool(keys):
            if keys:
                log.info("heartbeat keys loaded (%d): heartbeats authenticated", len(keys))
            else:
                log.warning("no heartbeat key (Secret missing, empty or unreadable): heartbeats off, "
                            "failure detection falls back to Leases alone")
            self._check_changes()

    def start(self) -> None:
        for i, s in enumerate(self._socks):
            t = threading.Thread(target=self._recv_loop, args=(s,), name=f"hb-recv{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._send_loop, name="hb-send", daemon=True)
        t.start()
        self._threads.append(t)

    def states(self) -> dict[str, PeerState]:
        self.drain()
        return self._judge()

    def _judge(self) -> dict[str, PeerState]:
        with self._lock:
            return self.table.states(time.monotonic())

    def state(self, node: str) -> PeerState:
        self.drain()
        with self._lock:
            return self.table.state(node, time.monotonic())

    def drain(self) -> None:
        """Handle every datagram already waiting in our sockets, so nobody is judged silent on a
        heartbeat that arrived while our receive threads waited for a CPU."""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(self._socks, [], [], 0)
            except (OSError, ValueError):  # closed by stop()
                return
            if not ready:
                return
            for sock in ready:
                try:
                    data, src, at = _receive(sock)
                except (BlockingIOError, TimeoutError):
                    continue  # a receive thread took it first
                except OSError:
                    return
                self.handle(data, src, at, notify=False)  # callers judge (and notify) next

    def _next(self, kind: MsgType) -> bytes | None:
        with self._lock:
            kid = signing_key(self._keys, self._key_first_seen, time.monotonic(), self.key_delay)
            if kid is None:
                return None
            self._seq += 1
            msg = Message(kind, self.node, self._incarnation, self._seq, time.time_ns())
            return encode(msg, kid, self._keys[kid])

    def _send_all(self, data: bytes | None) -> None:
        if data is None:
            return
        with self._lock:
            peers = self._peer_view
        self.send_errors += send_to_peers(data, peers, self.port, self._socks[0], self._sock6)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            if self.sender_command is None:
                self._send_all(self._next(MsgType.ALIVE))
            else:
                self._tell_sender()
            self._check_changes()
            self._stop.wait(self.interval / 2 if self.interval > 0.1 else self.interval)
            self._check_changes()
            self._stop.wait(self.interval / 2 if self.interval > 0.1 else 0)

    def _check_changes(self) -> None:
        self.drain()
        with self._change_lock:
            states = self._judge()
            if states == self._last_states:
                return
            self._last_states = states
            try:
                self.on_change()
            except Exception:
                log.exception("heartbeat change callback failed")

    def _recv_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, src, at = _receive(sock)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.1)
                continue
            self.handle(data, src, at)

    def handle(self, data: bytes, src: str, at: float | None = None, notify: bool = True) -> None:
        """One received datagram (arrived at `at`, monotonic; default now): verify, then record
        (the receive threads and `drain` call this); `notify`: tell `on_change` if a peer moved."""
        with self._lock:
            keys, peers = self._keys, self._peer_view
        try:
            msg = verify(data, src, keys, peers, time.time_ns(), self.max_skew)
        except Rejected as exc:
            line = self.rejects.add(exc, src, time.monotonic())
            if line is not None:
                log.warning("%s", line)
            return
        self.received += 1
        with self._lock:
            now = time.monotonic()
            was_left = self.table.state(msg.node, now) is PeerState.LEFT
            counted = self.table.observe(msg, now if at is None else min(at, now))
        if counted and msg.type is MsgType.LEAVING and not was_left:
            log.info("speaker on %s is leaving", msg.node)
        if notify and counted and (msg.type is MsgType.LEAVING
                                   or self._last_states.get(msg.node) is not PeerState.ALIVE):
            self._check_changes()

    def _sender(self) -> subprocess.Popen[bytes] | None:
        """The sender process, (re)started when it is not running (at most once a second)."""
        child = self._child
        if child is not None and child.poll() is None:
            return child
        now = time.monotonic()
        if now - self._child_started < 1.0 or self.sender_command is None:
            return None
        if child is not None:
            log.warning("heartbeat sender exited (%s); starting it again", child.returncode)
        with self._lock:
            self._seq += SENDER_SEQ_BLOCK  # its numbers start above ours and above the last one's
        try:
            child = subprocess.Popen([*self.sender_command, self.bind], stdin=subprocess.PIPE)
        except OSError as exc:
            log.error("cannot start the heartbeat sender (%s): sending from a thread", exc)
            self.sender_command = None
            return None
        assert child.stdin is not None
        os.set_blocking(child.stdin.fileno(), False)
        self._child, self._child_started = child, now
        return child

    def _tell_sender(self, extra: Mapping[str, object] | None = None) -> bool:
        """Hand the sender our state (every round: it also proves we still run); False if it is not
        running or its pipe is full."""
        from lbspeaker.speaker.hbsender import State, state_line

        child = self._sender()
        if child is None or child.stdin is None:
            return False
        with self._lock:
            kid = signing_key(self._keys, self._key_first_seen, time.monotonic(), self.key_delay)
            state = State(self.node, self._incarnation, self._seq, self.interval, self.port, kid,
                          self._keys.get(kid, b"") if kid else b"", dict(self._peer_view))
        line = state_line(state) if extra is None else json.dumps(dict(extra)) + "\n"
        try:
            os.write(child.stdin.fileno(), line.encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            return False
        return True

    def leave(self, repeats: int = 3) -> None:
        """Tell every peer we are going (SIGTERM): they hand our IPs over at once."""
        child = self._child
        if child is not None and child.poll() is None and self._tell_sender() and \
                self._tell_sender({"leave": repeats}):
            with contextlib.suppress(subprocess.TimeoutExpired):
                if child.wait(timeout=0.3) == 0:
                    return
        with self._lock:
            self._seq += SENDER_SEQ_BLOCK  # above anything the sender sent
        for _ in range(repeats):
            self._send_all(self._next(MsgType.LEAVING))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                if child.stdin is not None:
                    child.stdin.close()  # EOF: it exits
            try:
                child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
