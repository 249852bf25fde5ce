"""Announcer logic with fake responders (no sockets): diffing, GARP schedule, release, retry."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from lbspeaker.l2.packet import ResponderStats
from lbspeaker.l2.responder import Announcer, ResponderFactory
from tests.helpers import wait_for


class FakeResponder:
    instances: list[FakeResponder] = []

    def __init__(self, ifname: str, owned: Iterable[bytes], stats: ResponderStats, family: int) -> None:
        self.ifname = ifname
        self.family = family
        self.owned = frozenset(owned)
        self.stats = stats
        self.garps: list[tuple[float, bytes]] = []
        self.closed = False
        self._r, self._w = socket.socketpair()
        FakeResponder.instances.append(self)

    def fileno(self) -> int:
        return self._r.fileno()

    def set_owned(self, owned: Iterable[bytes]) -> None:
        self.owned = frozenset(owned)

    def handle_readable(self, max_batch: int = 1) -> int:
        self._r.recv(100)
        return 1

    def send_gratuitous(self, ip: bytes) -> int:
        assert ip in self.owned
        self.garps.append((time.monotonic(), ip))
        self.stats.gratuitous_sent[ip] += 1
        return 1

    def close(self) -> None:
        self.closed = True
        self._r.close()
        self._w.close()


MISSING: set[str] = set()
LOCK = threading.Lock()


def factory(family: int) -> ResponderFactory:
    def make(ifname: str, owned: Iterable[bytes], stats: ResponderStats) -> FakeResponder:
        with LOCK:
            if ifname in MISSING:
                raise OSError(19, "No such device")
        return FakeResponder(ifname, owned, stats, family)

    return make


def packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def garp_count(ifname: str, family: int = 4) -> int:
    """GARPs sent by the one live responder for (ifname, family); -1 while there is none."""
    found = [r for r in FakeResponder.instances if r.ifname == ifname and r.family == family and not r.closed]
    return len(found[0].garps) if len(found) == 1 else -1


def make_announcer(schedule: tuple[float, ...] = (0.0, 0.05, 0.1)) -> Announcer:
    FakeResponder.instances.clear()
    MISSING.clear()
    return Announcer(garp_schedule=schedule, retry_interval=0.05, factories={4: factory(4), 6: factory(6)})


@contextlib.contextmanager
def running(schedule: tuple[float, ...] = (0.0, 0.05, 0.1),
            setup: Callable[[], object] | None = None) -> Iterator[Announcer]:
    """A started `make_announcer`, stopped however the test ends; `setup` runs between the two
    (after the fakes are cleared, before the first open)."""
    a = make_announcer(schedule)
    if setup is not None:
        setup()
    a.start()
    try:
        yield a
    finally:
        a.stop()


def live(ifname: str, family: int) -> FakeResponder:
    found = [r for r in FakeResponder.instances if r.ifname == ifname and r.family == family and not r.closed]
    assert len(found) == 1, found
    return found[0]


def test_take_sends_garp_schedule_and_release_stops() -> None:
    with running() as a:
        assert a.set_owned({"eth0": ["172.18.255.200", "fc00::c8"]}) == {}
        wait_for(lambda: garp_count("eth0", 4) == 3 and garp_count("eth0", 6) == 3, 5)
        v4, v6 = live("eth0", 4), live("eth0", 6)
        assert v4.owned == {packed("172.18.255.200")}
        assert v6.owned == {packed("fc00::c8")}
        assert len(v4.garps) == 3 and len(v6.garps) == 3
        gaps = [b[0] - a_[0] for a_, b in zip(v4.garps, v4.garps[1:], strict=False)]
        assert all(g >= 0.03 for g in gaps)
        assert a.owned() == {"eth0": ["172.18.255.200", "fc00::c8"]}
        # release v4 only: ARP responder closed, NDP untouched
        a.set_owned({"eth0": ["fc00::c8"]})
        assert v4.closed and not v6.closed
        assert a.interfaces() == ["eth0"]
        st = a.stats()
        assert st["eth0/ipv4"]["gratuitous_sent"] == {"172.18.255.200": 3}
    assert all(r.closed for r in FakeResponder.instances)


def test_release_cancels_pending_garps() -> None:
    with running(schedule=(0.0, 0.2, 0.4)) as a:
        a.set_owned({"eth0": ["172.18.255.200", "172.18.255.201"]})
        time.sleep(0.05)
        a.set_owned({"eth0": ["172.18.255.201"]})
        time.sleep(0.6)
        r = live("eth0", 4)
        ips = [ip for _, ip in r.garps]
        assert ips.count(packed("172.18.255.200")) == 1  # only the immediate one
        assert ips.count(packed("172.18.255.201")) == 3


def test_retake_restarts_schedule_without_duplicates() -> None:
    with running(schedule=(0.0, 0.15)) as a:
        a.set_owned({"eth0": ["172.18.255.200", "172.18.255.9"]})
        time.sleep(0.05)
        a.set_owned({"eth0": ["172.18.255.9"]})
        a.set_owned({"eth0": ["172.18.255.200", "172.18.255.9"]})
        time.sleep(0.4)
        ips = [ip for _, ip in live("eth0", 4).garps]
        # first take: 1 sent before release; retake: full schedule (2); stale entry skipped
        assert ips.count(packed("172.18.255.200")) == 3


def test_missing_interface_reported_and_retried() -> None:
    with running(setup=lambda: MISSING.add("eth9")) as a:
        errors = a.set_owned({"eth9": ["172.18.255.200"]})
        assert "eth9" in errors and "No such device" in errors["eth9"]
        assert a.interfaces() == []
        with LOCK:
            MISSING.discard("eth9")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and a.interfaces() != ["eth9"]:
            time.sleep(0.02)
        assert a.interfaces() == ["eth9"]
        wait_for(lambda: garp_count("eth9") == 3, 5)
        assert a.errors() == {}
        assert len(live("eth9", 4).garps) == 3  # announced once it came back


def test_refresh_reopens_and_reannounces() -> None:
    with running(schedule=(0.0,)) as a:
        a.set_owned({"eth0": ["172.18.255.200"]})
        wait_for(lambda: garp_count("eth0") == 1, 5)
        first = live("eth0", 4)
        a.refresh("eth0")
        wait_for(lambda: first.closed and garp_count("eth0") == 1, 5)
        second = live("eth0", 4)
        assert second is not first and len(second.garps) == 1
        # cumulative stats across the re-open
        assert a.stats()["eth0/ipv4"]["gratuitous_sent"] == {"172.18.255.200": 2}


def test_multiple_interfaces_and_unchanged_set_is_noop() -> None:
    with running(schedule=(0.0,)) as a:
        a.set_owned({"eth0": ["172.18.255.200"], "eth1": ["172.18.255.200"]})
        wait_for(lambda: garp_count("eth0") == 1 and garp_count("eth1") == 1, 5)
        e0, e1 = live("eth0", 4), live("eth1", 4)
        a.set_owned({"eth0": ["172.18.255.200"], "eth1": ["172.18.255.200"]})
        time.sleep(0.1)
        assert live("eth0", 4) is e0 and live("eth1", 4) is e1
        assert len(e0.garps) == 1 and len(e1.garps) == 1
        a.set_owned({})
        assert e0.closed and e1.closed and a.owned() == {}


def test_link_events_reopen_and_reannounce() -> None:
    with running(schedule=(0.0,)) as a:
        a.set_owned({"eth0": ["172.18.255.200"]})
        wait_for(lambda: garp_count("eth0") == 1, 5)
        first = live("eth0", 4)
        a.handle_link_event("NEWLINK", "eth0", 2, True)  # first sighting: treated as new
        a.handle_link_event("NEWLINK", "eth0", 2, True)  # no change: nothing
        time.sleep(0.1)
        second = live("eth0", 4)
        assert first.closed and len(second.garps) == 1
        a.handle_link_event("NEWLINK", "eth0", 2, False)  # went down: keep the socket
        a.handle_link_event("NEWLINK", "eth0", 2, True)  # back up: re-announce
        time.sleep(0.1)
        third = live("eth0", 4)
        assert second.closed and len(third.garps) == 1
        a.handle_link_event("NEWLINK", "eth9", 5, True)  # not ours: ignored
        with LOCK:
            MISSING.add("eth0")
        a.handle_link_event("DELLINK", "eth0", 2, False)
        assert third.closed and "deleted" in a.errors()["eth0"]
        with LOCK:
            MISSING.discard("eth0")
        a.handle_link_event("NEWLINK", "eth0", 7, True)  # re-created with a new index
        wait_for(lambda: garp_count("eth0") == 1, 5)
        assert a.errors() == {}
        assert a.totals()["gratuitous_sent"] == {"172.18.255.200": 4}
