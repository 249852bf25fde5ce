"""The BFD UDP adapter end to end on loopback: two runners bring a session Up, one goes silent."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator

import pytest

from lbspeaker.bfd.io import BFDRunner, SessionKey
from lbspeaker.bfd.packet import ControlPacket, Diag, State, encode
from lbspeaker.bfd.session import SessionConfig, StateChange

FAST = SessionConfig(desired_min_tx_us=50_000, required_min_rx_us=50_000, detect_mult=3)
Changes = "queue.Queue[tuple[SessionKey, StateChange]]"


def free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_state(changes: queue.Queue, state: State, timeout: float = 10.0) -> StateChange:
    deadline = time.monotonic() + timeout
    while True:
        _key, change = changes.get(timeout=max(deadline - time.monotonic(), 0.01))
        if change.new == state:
            return change


def runner(changes: queue.Queue, **kw: object) -> BFDRunner:
    r = BFDRunner(lambda key, change: changes.put((key, change)), **kw)  # type: ignore[arg-type]
    r.start()
    return r


@pytest.fixture
def pair_v4() -> Iterator[tuple[BFDRunner, queue.Queue, BFDRunner, queue.Queue]]:
    port = free_port("127.0.0.1")
    qa: queue.Queue = queue.Queue()
    qb: queue.Queue = queue.Queue()
    a = runner(qa, port=port, peer_port=port, listen_v4="127.0.0.1", listen_v6=None)
    b = runner(qb, port=port, peer_port=port, listen_v4="127.0.0.2", listen_v6=None)
    yield a, qa, b, qb
    assert a.stop() and b.stop()


def test_session_comes_up_and_a_silent_peer_is_detected(pair_v4: tuple) -> None:
    a, qa, b, qb = pair_v4
    a.add(SessionKey("127.0.0.2", "127.0.0.1"), FAST)
    b.add(SessionKey("127.0.0.1", "127.0.0.2"), FAST)
    wait_state(qa, State.UP)
    wait_state(qb, State.UP)
    info = a.sessions()[SessionKey("127.0.0.2", "127.0.0.1")]
    assert info.state == State.UP and 49152 <= info.source_port <= 65535
    assert b.stop(admin_down=False)  # a frozen peer: no AdminDown, just silence
    down = wait_state(qa, State.DOWN)
    assert down.diag == Diag.CONTROL_DETECTION_TIME_EXPIRED


def test_removed_session_tells_the_peer_admin_down(pair_v4: tuple) -> None:
    a, _qa, b, qb = pair_v4
    a.add(SessionKey("127.0.0.2", "127.0.0.1"), FAST)
    b.add(SessionKey("127.0.0.1", "127.0.0.2"), FAST)
    wait_state(qb, State.UP)
    a.remove(SessionKey("127.0.0.2", "127.0.0.1"))
    assert wait_state(qb, State.DOWN).diag == Diag.NEIGHBOR_SIGNALED_DOWN


def test_ipv6_session_comes_up() -> None:
    pa, pb = free_port("::1"), free_port("::1")
    qa: queue.Queue = queue.Queue()
    qb: queue.Queue = queue.Queue()
    a = runner(qa, port=pa, peer_port=pb, listen_v4=None, listen_v6="::1")
    b = runner(qb, port=pb, peer_port=pa, listen_v4=None, listen_v6="::1")
    try:
        a.add(SessionKey("::1"), FAST)
        b.add(SessionKey("::1"), FAST)
        wait_state(qa, State.UP)
        wait_state(qb, State.UP)
    finally:
        assert a.stop() and b.stop()


def test_packet_with_low_ttl_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port("127.0.0.1")
    q: queue.Queue = queue.Queue()
    r = runner(q, port=port, peer_port=port, listen_v4="127.0.0.1", listen_v6=None)
    key = SessionKey("127.0.0.2", "127.0.0.1")
    try:
        r.add(key, FAST)
        pkt = encode(ControlPacket(State.DOWN, 3, 77, 0, 50_000, 50_000))
        for ttl in (254, 255):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                s.bind(("127.0.0.2", 0))
                s.sendto(pkt, ("127.0.0.1", port))
            if ttl == 254:
                deadline = time.monotonic() + 10
                while "TTL 254 below 255" not in caplog.text:
                    assert time.monotonic() < deadline, "the low-TTL packet was never seen"
                    time.sleep(0.01)
                assert r.sessions()[key].state == State.DOWN and q.empty()
        assert wait_state(q, State.INIT).new == State.INIT
        assert r.sessions()[key].remote_discr == 77
    finally:
        assert r.stop()


def test_manager_reports_bgp_peers_down_and_up_and_exports_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from lbspeaker.api.models import BFDProfileSpec
    from lbspeaker.bfd.manager import BFDManager
    from lbspeaker.bgp.config import PeerSpec

    port = free_port("127.0.0.1")
    events: queue.Queue[tuple[str, bool, str]] = queue.Queue()
    manager = BFDManager(
        lambda e: events.put((e.peer, e.up, e.reason)),
        runner=lambda cb: BFDRunner(cb, port=port, peer_port=port, listen_v4="127.0.0.1", listen_v6=None),
    )
    qb: queue.Queue = queue.Queue()
    router = runner(qb, port=port, peer_port=port, listen_v4="127.0.0.2", listen_v6=None)
    try:
        router.add(SessionKey("127.0.0.1", "127.0.0.2"), FAST)
        peers = [
            PeerSpec("router", "127.0.0.2", 64513, 64512, source_address="127.0.0.1", bfd_profile="fast"),
            PeerSpec("other", "127.0.0.9", 64513, 64512),
        ]
        problems = manager.apply(peers, {"fast": BFDProfileSpec(transmitInterval=50, receiveInterval=50)})
        assert problems == []
        peer, up, reason = events.get(timeout=10)
        assert (peer, up) == ("router", True) and reason.endswith("-> Up")  # from Down or Init: a race
        assert manager.peer_states() == {"router": "Up"}
        registry = CollectorRegistry()
        registry.register(manager.collector())
        text = generate_latest(registry).decode()
        assert 'lbspeaker_bfd_session_up{peer="127.0.0.2"} 1.0' in text
        assert 'lbspeaker_bfd_session_up_events_total{peer="127.0.0.2"} 1.0' in text
        assert router.stop(admin_down=False)
        assert events.get(timeout=10) == ("router", False, "BFD Up -> Down (control detection time expired)")
        assert manager.apply([], {}) == [] and manager.peer_states() == {}
    finally:
        assert manager.stop()
        router.stop()
