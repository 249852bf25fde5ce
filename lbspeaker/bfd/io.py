"""UDP adapter for BFD (RFC 5881 single hop): every session of the process in one selector thread.

Receiving: one socket per address family bound to port 3784 with IP_RECVTTL / IPV6_RECVHOPLIMIT,
so the TTL of each datagram is checked against the session's minimum (255 for single hop: a
packet from further away was forwarded, i.e. spoofed or misrouted). A packet is given to the
session its Your Discriminator names, or while that is zero, to the session of its source
address. Sending: one socket per session, bound to a source port in 49152-65535 (RFC 5881 4:
the same port for the whole session), TTL / hop limit 255.

Everything that changes sessions runs in the loop thread; the public methods only queue commands
and wake it, so callers never race the state machine. `on_change` runs in the loop thread and
must not block (put the change on a queue).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import queue
import random
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lbspeaker.bfd.packet import ParseError, State, decode, encode
from lbspeaker.bfd.session import Output, Session, SessionConfig, SessionKey, StateChange

__all__ = ["BFDRunner", "SessionInfo", "SessionKey"]

log = logging.getLogger(__name__)

CONTROL_PORT = 3784  # RFC 5881 section 4
SOURCE_PORTS = (49152, 65535)
TTL = 255
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux value; Python 3.11 lacks the constant
_CMSG_SPACE = socket.CMSG_SPACE(4) * 4
_MAX_WAIT = 1.0  # longest selector sleep: bounds how late a stop or a clock jump is seen


@dataclass(frozen=True)
class SessionInfo:
    """What status, metrics and logs show about one session."""

    key: SessionKey
    state: State
    diag: int
    remote_state: State
    local_discr: int
    remote_discr: int
    tx_interval_us: int
    detection_time_us: int
    source_port: int
    packets_in: int = 0
    packets_out: int = 0
    up_events: int = 0
    down_events: int = 0


@dataclass
class _Entry:
    session: Session
    sock: socket.socket
    min_ttl: int
    family: int
    packets_in: int = 0
    packets_out: int = 0
    up_events: int = 0
    down_events: int = 0


Callback = Callable[[SessionKey, StateChange], None]


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class BFDRunner:
    """All BFD sessions of one process: add/update/remove from any thread, `stop()` to end."""

    def __init__(
        self,
        on_change: Callback,
        port: int = CONTROL_PORT,
        peer_port: int = CONTROL_PORT,
        listen_v4: str | None = "0.0.0.0",
        listen_v6: str | None = "::",
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._on_change = on_change
        self._port = port
        self._peer_port = peer_port  # differs from `port` only in tests that run both ends on ::1
        self._clock = clock
        self._rng = rng or random.Random()
        self._sel = selectors.DefaultSelector()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._entries: dict[SessionKey, _Entry] = {}
        self._by_discr: dict[int, SessionKey] = {}
        self._receivers: list[socket.socket] = []
        self._stopping = threading.Event()
        self._info_lock = threading.Lock()
        self._info: dict[SessionKey, SessionInfo] = {}
        for family, address in ((socket.AF_INET, listen_v4), (socket.AF_INET6, listen_v6)):
            if address is not None:
                self._receivers.append(self._listen(family, address))
        self._thread = threading.Thread(target=self._loop, name="bfd", daemon=True)

    # --- public, any thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def add(self, key: SessionKey, config: SessionConfig, min_ttl: int = TTL) -> None:
        """Start a session (or reconfigure it if it exists)."""
        self._submit(lambda: self._add(key, config, min_ttl))

    def remove(self, key: SessionKey) -> None:
        """End a session, telling the peer AdminDown so it does not count as a failure."""
        self._submit(lambda: self._remove(key, admin_down=True))

    def sessions(self) -> dict[SessionKey, SessionInfo]:
        """A snapshot of every session (refreshed by the loop after each change)."""
        with self._info_lock:
            return dict(self._info)

    def stop(self, timeout: float = 2.0, admin_down: bool = True) -> bool:
        """End every session (AdminDown to the peers unless `admin_down` is False), close the
        sockets and join the thread; True when it ended within `timeout`."""

        def shutdown() -> None:
            for key in list(self._entries):
                self._remove(key, admin_down=admin_down)
            self._stopping.set()

        self._submit(shutdown)
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            shutdown()
        done = not self._thread.is_alive()
        if done:
            self._close()
        return done

    # --- loop thread -----------------------------------------------------------------------------

    def _submit(self, command: Callable[[], None]) -> None:
        self._commands.put(command)
        with contextlib.suppress(OSError):  # already closed: stop() ran
            self._wake_w.send(b"\0")

    def _listen(self, family: int, address: str) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        sock.bind((address, self._port))
        self._sel.register(sock, selectors.EVENT_READ, family)
        return sock

    def _sender(self, key: SessionKey) -> socket.socket:
        """A socket bound to a free source port in 49152-65535, TTL 255, connected to the peer."""
        family = _family(key.peer)
        first = self._rng.randint(*SOURCE_PORTS)
        span = SOURCE_PORTS[1] - SOURCE_PORTS[0] + 1
        for i in range(span):
            port = SOURCE_PORTS[0] + (first - SOURCE_PORTS[0] + i) % span
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
                sock.bind((key.local or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
                sock.connect((key.peer, self._peer_port))
                sock.setblocking(False)
                return sock
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, "no free BFD source port in 49152-65535")

    def _new_discr(self) -> int:
        while True:
            discr = self._rng.randint(1, 0xFFFFFFFF)
            if discr not in self._by_discr:
                return discr

    def _add(self, key: SessionKey, config: SessionConfig, min_ttl: int) -> None:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            entry.min_ttl = min_ttl
            self._apply(key, entry, entry.session.reconfigure(config, now))
            return
        try:
            sock = self._sender(key)
        except OSError as exc:
            log.error("BFD session to %s not started: %s", key.peer, exc)
            return
        discr = self._new_discr()
        session = Session(discr, config, now, self._rng.random)
        entry = _Entry(session, sock, min_ttl, _family(key.peer))
        self._entries[key] = entry
        self._by_discr[discr] = key
        log.info("BFD session to %s started (discriminator %d, source port %d)",
                 key.peer, discr, sock.getsockname()[1])
        self._apply(key, entry, Output())

    def _remove(self, key: SessionKey, admin_down: bool) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._by_discr.pop(entry.session.local_discr, None)
        if admin_down:
            self._send(key, entry, entry.session.admin_down(self._clock()).send)
        entry.sock.close()
        with self._info_lock:
            self._info.pop(key, None)

    def _send(self, key: SessionKey, entry: _Entry, packets: list) -> None:
        for pkt in packets:
            try:
                entry.sock.send(encode(pkt))
                entry.packets_out += 1
            except OSError as exc:  # unreachable peer, full buffer: BFD's own timers handle loss
                log.debug("BFD send to %s failed: %s", key.peer, exc)

    def _apply(self, key: SessionKey, entry: _Entry, out: Output) -> None:
        self._send(key, entry, out.send)
        for change in out.changes:
            if change.new == State.UP:
                entry.up_events += 1
            elif change.old == State.UP:
                entry.down_events += 1
        s = entry.session
        info = SessionInfo(
            key, s.state, s.local_diag, s.remote_state, s.local_discr, s.remote_discr,
            s.tx_interval_us, s.detection_time_us, entry.sock.getsockname()[1],
            entry.packets_in, entry.packets_out, entry.up_events, entry.down_events,
        )
        with self._info_lock:
            self._info[key] = info  # before the callbacks: a consumer reading sessions() agrees
        for change in out.changes:
            try:
                self._on_change(key, change)
            except Exception:  # a broken consumer must not stop BFD for every other session
                log.exception("BFD state change callback failed")

    def _receive(self, sock: socket.socket, family: int) -> None:
        for _ in range(64):  # bounded burst per wakeup, so timers are not starved by a flood
            try:
                data, ancdata, _flags, addr = sock.recvmsg(256, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("BFD receive failed: %s", exc)
                return
            ttl = None
            for level, ctype, cdata in ancdata:
                if (level, ctype) in ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6,
                                                                           socket.IPV6_HOPLIMIT)):
                    ttl = int.from_bytes(cdata[:4], sys.byteorder) if len(cdata) >= 4 else cdata[0]
            self._deliver(data, addr[0], ttl)

    def _deliver(self, data: bytes, source: str, ttl: int | None) -> None:
        try:
            pkt = decode(data)
        except ParseError as exc:
            log.debug("BFD packet from %s dropped: %s", source, exc)
            return
        key = self._by_discr.get(pkt.your_discr) if pkt.your_discr else self._by_source(source)
        entry = self._entries.get(key) if key else None
        if key is None or entry is None:
            log.debug("BFD packet from %s matches no session", source)
            return
        if ttl is None or ttl < entry.min_ttl:
            log.warning("BFD packet from %s dropped: TTL %s below %d", source, ttl, entry.min_ttl)
            return
        if ipaddress.ip_address(source) != ipaddress.ip_address(key.peer):
            log.debug("BFD packet for session %s came from %s", key.peer, source)
            return
        entry.packets_in += 1
        out = entry.session.receive(pkt, self._clock())
        if out.dropped:
            log.debug("BFD packet from %s dropped: %s", source, out.dropped)
        self._apply(key, entry, out)

    def _by_source(self, source: str) -> SessionKey | None:
        address = ipaddress.ip_address(source)
        for key in self._entries:
            if ipaddress.ip_address(key.peer) == address:
                return key
        return None

    def _run_timers(self) -> float:
        now = self._clock()
        wait = _MAX_WAIT
        for key, entry in list(self._entries.items()):
            deadline = entry.session.next_deadline()
            if deadline is not None and deadline <= now:
                self._apply(key, entry, entry.session.tick(now))
                deadline = entry.session.next_deadline()
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
        return wait

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = self._run_timers()
            for selkey, _events in self._sel.select(wait):
                if selkey.data is None:
                    self._drain_commands()
                else:
                    self._receive(selkey.fileobj, selkey.data)  # type: ignore[arg-type]
            self._drain_commands()

    def _drain_commands(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _close(self) -> None:
        for sock in self._receivers:
            sock.close()
        for entry in self._entries.values():
            entry.sock.close()
        self._entries.clear()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()
