"""Announcer: the owned-IP set per interface, served by ARP/NDP responders on one thread.

The speaker calls `set_owned({"eth0": ["172.18.255.200", "fc00::c8"], ...})` with the
complete desired state whenever the plan changes; the announcer diffs it against the
current one:

* an interface gains its first IPv4 (IPv6) address: an ARP (NDP) responder is opened
  on it; it loses its last one: the responder is closed;
* an IP is *taken*: gratuitous ARP (both forms, as MetalLB) / unsolicited NA go out at
  once and again following `GARP_SCHEDULE` = 0, 0.25, 0.5, 1 and 2 s after taking it.
  Several copies because one can be lost, a client can be mid-resolution when the
  first arrives, and switches may learn the MAC late; two seconds covers the
  hard-failover window without chattering. A retake restarts the schedule;
* an IP is *lost*: when `set_owned` returns, no further answer or gratuitous frame is
  sent for it (the loop handles frames under the same lock, so at most the batch in
  progress finishes first, and its owned-set check already sees the new set).

Failure handling: an interface that cannot be opened (missing, no MAC) is reported in
`set_owned`'s return value and in `errors()`, and retried every `retry_interval`; a
socket that fails at run time (ENETDOWN when the link goes away) is closed and
re-opened the same way, and its IPs are announced again once it is back. `refresh`
does that on demand (the speaker calls it on netlink link events).

One thread, one selector: a responder costs a socket, not a thread, so many
interfaces do not multiply the context switches on a 2-core node.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from lbspeaker.l2.arp import ArpResponder
from lbspeaker.l2.ndp import NdpResponder
from lbspeaker.l2.packet import ResponderStats

log = logging.getLogger(__name__)

GARP_SCHEDULE: Final = (0.0, 0.25, 0.5, 1.0, 2.0)
RETRY_INTERVAL: Final = 1.0


class Responder(Protocol):
    """What the announcer needs from an ARP or NDP responder (fakeable in tests)."""

    ifname: str
    stats: ResponderStats

    def fileno(self) -> int: ...
    def set_owned(self, owned: Iterable[bytes]) -> None: ...
    def handle_readable(self, max_batch: int = ...) -> int: ...
    def send_gratuitous(self, ip: bytes) -> int: ...
    def close(self) -> None: ...


ResponderFactory = Callable[[str, Iterable[bytes], ResponderStats], Responder]


def _default_factory(family: int) -> ResponderFactory:
    if family == 4:
        return lambda ifname, owned, stats: ArpResponder(ifname, owned, stats)
    return lambda ifname, owned, stats: NdpResponder(ifname, owned, stats)


Key = tuple[str, int]  # (interface, family)


@functools.lru_cache(maxsize=65536)
def _parsed(ip: str) -> tuple[int, bytes]:
    """(version, packed) of an IP text; cached, as `set_owned` gets every owned IP on each change
    (parsing them was a tenth of a speaker's CPU at 10,000 Services). ValueError if unparsable."""
    addr = ipaddress.ip_address(ip)
    return addr.version, addr.packed


class Announcer:
    """Thread-safe owner of the per-interface responders. `start()`, `set_owned()`, `stop()`."""

    def __init__(
        self,
        garp_schedule: Iterable[float] = GARP_SCHEDULE,
        retry_interval: float = RETRY_INTERVAL,
        factories: Mapping[int, ResponderFactory] | None = None,
    ) -> None:
        self.garp_schedule = tuple(sorted(garp_schedule))
        self.retry_interval = retry_interval
        self._factories = dict(factories or {4: _default_factory(4), 6: _default_factory(6)})
        self._lock = threading.RLock()
        self._wanted: dict[Key, frozenset[bytes]] = {}
        self._responders: dict[Key, Responder] = {}
        self._stats: dict[Key, ResponderStats] = {}
        self._errors: dict[str, str] = {}
        self._links: dict[str, tuple[int, bool]] = {}  # last netlink view: ifindex, up
        self._take_gen: dict[tuple[Key, bytes], int] = {}
        self._gen = 0
        self._garps: list[tuple[float, int, Key, bytes, int]] = []
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_retry = 0.0

    # --- public API -----------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="l2-announcer", daemon=True)
                self._thread.start()

    def set_owned(self, ips_by_interface: Mapping[str, Iterable[str]]) -> dict[str, str]:
        """Make the announced set exactly `ips_by_interface` (interface -> IP texts).

        Returns the interfaces that could not be opened, with the reason (they are
        retried in the background). Raises ValueError for an unparsable IP.
        """
        wanted: dict[Key, frozenset[bytes]] = {}
        for ifname, ips in ips_by_interface.items():
            by_family: dict[int, set[bytes]] = {}
            for ip in ips:
                version, raw = _parsed(ip)
                by_family.setdefault(version, set()).add(raw)
            for family, packed in by_family.items():
                wanted[(ifname, family)] = frozenset(packed)
        now = time.monotonic()
        with self._lock:
            old = self._wanted
            self._wanted = wanted
            for key in set(old) | set(wanted):
                before, after = old.get(key, frozenset()), wanted.get(key, frozenset())
                if before == after and (key in self._responders or not after):
                    continue
                resp = self._responders.get(key)
                if not after:
                    if resp is not None:
                        self._close(key)
                    continue
                if resp is not None:
                    resp.set_owned(after)
                else:
                    self._open(key)
                for taken in after - before:
                    self._schedule_garps(key, taken, now)
                for lost in before - after:
                    self._take_gen.pop((key, lost), None)
            self._errors = {k: v for k, v in self._errors.items() if any(i == k for i, _ in wanted)}
            errors = dict(self._errors)
        self._wake()
        return errors

    def refresh(self, ifname: str) -> None:
        """Re-open the responders on `ifname` and announce its IPs again (link flapped)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k in self._wanted if k[0] == ifname]:
                if key in self._responders:
                    self._close(key)
                if self._open(key):
                    for ip in self._wanted[key]:
                        self._schedule_garps(key, ip, now)
        self._wake()

    def handle_link_event(self, event: str, ifname: str, index: int, up: bool) -> None:
        """Feed a netlink link event (netinfo.LinkWatcher's) to the announcer.

        A wanted interface that appears (new ifindex) or comes back up is re-opened
        and its IPs announced again at once (switches and clients may have lost
        state while it was down); one that is deleted is closed and reported, and
        picked up again when it reappears. Other events are ignored.
        """
        with self._lock:
            prev = self._links.get(ifname)
            if event == "DELLINK":
                self._links.pop(ifname, None)
            else:
                self._links[ifname] = (index, up)
            wanted = any(k[0] == ifname for k in self._wanted)
        if not wanted:
            return
        if event == "DELLINK":
            with self._lock:
                for key in [k for k in self._responders if k[0] == ifname]:
                    self._close(key)
                self._errors[ifname] = f"interface {ifname} was deleted"
                self._next_retry = time.monotonic() + self.retry_interval
            self._wake()
        elif up and (prev is None or prev[0] != index or not prev[1]):
            self.refresh(ifname)

    def totals(self) -> dict[str, Any]:
        """Counters summed over interfaces, per IP (what the Prometheus metrics export)."""
        out: dict[str, Any] = {
            "requests_received": {},
            "responses_sent": {},
            "gratuitous_sent": {},
            "malformed_dropped": 0,
            "ignored": 0,
            "send_errors": 0,
        }
        for snap in self.stats().values():
            for key in ("requests_received", "responses_sent", "gratuitous_sent"):
                for ip, n in snap[key].items():
                    out[key][ip] = out[key].get(ip, 0) + n
            for key in ("malformed_dropped", "ignored", "send_errors"):
                out[key] += snap[key]
        return out

    def owned(self) -> dict[str, list[str]]:
        """Currently wanted IPs per interface (text), whether or not the socket is up."""
        out: dict[str, list[str]] = {}
        with self._lock:
            for (ifname, _family), ips in self._wanted.items():
                out.setdefault(ifname, []).extend(str(ipaddress.ip_address(i)) for i in sorted(ips))
        return out

    def errors(self) -> dict[str, str]:
        """Interfaces currently failing to open, with the reason."""
        with self._lock:
            return dict(self._errors)

    def interfaces(self) -> list[str]:
        """Interfaces with an open responder."""
        with self._lock:
            return sorted({k[0] for k in self._responders})

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per "interface/ipv4|ipv6", cumulative across socket re-opens."""
        with self._lock:
            items = list(self._stats.items())
        return {f"{k[0]}/ipv{k[1]}": s.snapshot() for k, s in items}

    def stop(self) -> None:
        """Stop the loop and close every socket. Nothing is announced afterwards."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            for key in list(self._responders):
                self._close(key)
            self._wanted = {}
            self._garps.clear()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- internals (called with the lock held) --------------------------------

    def _open(self, key: Key) -> bool:
        ifname, family = key
        stats = self._stats.setdefault(key, ResponderStats())
        try:
            resp = self._factories[family](ifname, self._wanted.get(key, frozenset()), stats)
        except OSError as exc:
            msg = f"cannot open {'ARP' if family == 4 else 'NDP'} responder on {ifname}: {exc}"
            if self._errors.get(ifname) != msg:
                log.warning("%s", msg)
            self._errors[ifname] = msg
            return False
        self._responders[key] = resp
        self._sel.register(resp.fileno(), selectors.EVENT_READ, key)
        if not any(k[0] == ifname and k not in self._responders for k in self._wanted):
            self._errors.pop(ifname, None)
        return True

    def _close(self, key: Key) -> None:
        resp = self._responders.pop(key, None)
        if resp is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(resp.fileno())
        with contextlib.suppress(OSError):
            resp.close()

    def _schedule_garps(self, key: Key, ip: bytes, now: float) -> None:
        self._gen += 1
        gen = self._gen
        self._take_gen[(key, ip)] = gen
        for delay in self.garp_schedule:
            heapq.heappush(self._garps, (now + delay, gen, key, ip, gen))

    def _send_due_garps(self, now: float) -> None:
        while self._garps and self._garps[0][0] <= now:
            _due, _seq, key, ip, gen = heapq.heappop(self._garps)
            if self._take_gen.get((key, ip)) != gen or ip not in self._wanted.get(key, frozenset()):
                continue  # lost (or re-taken, with a fresh schedule) since
            resp = self._responders.get(key)
            if resp is not None:
                resp.send_gratuitous(ip)

    def _retry_missing(self, now: float) -> None:
        missing = [k for k in self._wanted if k not in self._responders]
        if not missing or now < self._next_retry:
            return
        self._next_retry = now + self.retry_interval
        for key in missing:
            if self._open(key):
                log.info("responder on %s (IPv%d) is back", key[0], key[1])
                for ip in self._wanted[key]:
                    self._schedule_garps(key, ip, now)

    def _timeout(self, now: float) -> float | None:
        deadlines = []
        if self._garps:
            deadlines.append(self._garps[0][0])
        if any(k not in self._responders for k in self._wanted):
            deadlines.append(max(self._next_retry, now))
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already pending, or closed during stop
            self._wake_w.send(b"\x00")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                self._send_due_garps(now)
                self._retry_missing(now)
                timeout = self._timeout(now)
            events = self._sel.select(timeout)
            with self._lock:
                if self._stopping:
                    return
                for sel_key, _mask in events:
                    if sel_key.data is None:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    key: Key = sel_key.data
                    resp = self._responders.get(key)
                    if resp is None or resp.fileno() != sel_key.fd:
                        continue
                    try:
                        resp.handle_readable()
                    except OSError as exc:
                        log.warning("responder on %s failed (%s); re-opening", key[0], exc)
                        self._errors[key[0]] = f"responder on {key[0]} failed: {exc}"
                        self._close(key)
                        self._next_retry = time.monotonic() + self.retry_interval
