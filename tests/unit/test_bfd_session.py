"""BFD session state machine (RFC 5880 6.2, 6.8.3-6.8.7) as tables and a simulated pair."""

from __future__ import annotations

import random

import pytest

from lbspeaker.bfd.packet import Authentication, AuthType, ControlPacket, Diag, State
from lbspeaker.bfd.session import SLOW_TX_US, Output, Session, SessionConfig

FAST = SessionConfig(desired_min_tx_us=300_000, required_min_rx_us=300_000, detect_mult=3)


def session(config: SessionConfig = FAST, state: State = State.DOWN, rng: float = 0.0) -> Session:
    s = Session(local_discr=10, config=config, now=0.0, rng=lambda: rng)
    if state == State.ADMIN_DOWN:
        s.admin_down(0.0)
    elif state in (State.INIT, State.UP):
        s.receive(peer(State.DOWN, your=0), 0.0)
        if state == State.UP:
            s.receive(peer(State.UP), 0.0)
    assert s.state == state
    return s


def peer(state: State, your: int = 10, **kw: object) -> ControlPacket:
    fields: dict[str, object] = {
        "state": state, "detect_mult": 3, "my_discr": 99, "your_discr": your,
        "desired_min_tx_us": 300_000, "required_min_rx_us": 300_000,
    }
    fields.update(kw)
    return ControlPacket(**fields)  # type: ignore[arg-type]


# RFC 5880 6.2 / 6.8.6: (local state, received state) -> (new local state, diag of the change)
TRANSITIONS = [
    (State.DOWN, State.DOWN, State.INIT, Diag.NONE),
    (State.DOWN, State.INIT, State.UP, Diag.NONE),
    (State.DOWN, State.UP, State.DOWN, None),
    (State.DOWN, State.ADMIN_DOWN, State.DOWN, None),
    (State.INIT, State.DOWN, State.INIT, None),
    (State.INIT, State.INIT, State.UP, Diag.NONE),
    (State.INIT, State.UP, State.UP, Diag.NONE),
    (State.INIT, State.ADMIN_DOWN, State.DOWN, Diag.NEIGHBOR_SIGNALED_DOWN),
    (State.UP, State.DOWN, State.DOWN, Diag.NEIGHBOR_SIGNALED_DOWN),
    (State.UP, State.INIT, State.UP, None),
    (State.UP, State.UP, State.UP, None),
    (State.UP, State.ADMIN_DOWN, State.DOWN, Diag.NEIGHBOR_SIGNALED_DOWN),
    (State.ADMIN_DOWN, State.DOWN, State.ADMIN_DOWN, None),
    (State.ADMIN_DOWN, State.UP, State.ADMIN_DOWN, None),
]


@pytest.mark.parametrize(("local", "received", "new", "diag"), TRANSITIONS)
def test_state_transitions(local: State, received: State, new: State, diag: Diag | None) -> None:
    s = session(state=local)
    your = 0 if received in (State.DOWN, State.ADMIN_DOWN) and local == State.DOWN else 10
    out = s.receive(peer(received, your=your), 1.0)
    assert s.state == new
    if diag is None:
        assert out.changes == []
    else:
        assert [(c.old, c.new, c.diag) for c in out.changes] == [(local, new, diag)]
        assert s.local_diag == diag


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (peer(State.UP, your=11), "not this session's 10"),
        (peer(State.DOWN, auth=Authentication(AuthType.KEYED_MD5, bytes(22))), "KEYED_MD5 authentication"),
    ],
)
def test_dropped_packets_change_nothing(pkt: ControlPacket, reason: str) -> None:
    s = session(state=State.UP)
    deadline = s.detect_deadline
    out = s.receive(pkt, 0.5)
    assert out.dropped is not None and reason in out.dropped
    assert (s.state, s.detect_deadline, out.send) == (State.UP, deadline, [])


# Timer negotiation: (our desired tx, our required rx, peer's desired tx, peer's required rx,
#                     peer's mult) -> (tx interval, detection time) once Up and polls are done
NEGOTIATION = [
    (300_000, 300_000, 300_000, 300_000, 3, 300_000, 900_000),
    (100_000, 300_000, 50_000, 200_000, 3, 200_000, 900_000),
    (300_000, 100_000, 500_000, 50_000, 5, 300_000, 2_500_000),
    (50_000, 50_000, 50_000, 50_000, 2, 50_000, 100_000),
]


@pytest.mark.parametrize(("tx", "rx", "ptx", "prx", "pmult", "interval", "detect"), NEGOTIATION)
def test_timer_negotiation(
    tx: int, rx: int, ptx: int, prx: int, pmult: int, interval: int, detect: int
) -> None:
    s = session(SessionConfig(tx, rx, 3))
    kw = {"desired_min_tx_us": ptx, "required_min_rx_us": prx, "detect_mult": pmult}
    s.receive(peer(State.DOWN, your=0, **kw), 0.0)
    s.receive(peer(State.UP, **kw), 0.0)
    s.receive(peer(State.UP, final=True, **kw), 0.0)
    assert not s.poll_active
    assert (s.tx_interval_us, s.detection_time_us) == (interval, detect)


def test_slow_transmission_while_not_up() -> None:
    s = session()
    out = s.tick(0.0)
    assert [p.desired_min_tx_us for p in out.send] == [SLOW_TX_US]
    assert s.next_tx == pytest.approx(1.0)  # rng 0 -> full interval
    assert s.tick(0.99).send == []
    assert len(s.tick(1.0).send) == 1


@pytest.mark.parametrize(
    ("mult", "rng", "fraction"), [(3, 0.0, 1.0), (3, 1.0, 0.75), (1, 0.0, 0.9), (1, 1.0, 0.75)]
)
def test_jitter(mult: int, rng: float, fraction: float) -> None:
    s = session(SessionConfig(300_000, 300_000, mult), rng=rng)
    s.tick(0.0)
    assert s.next_tx == pytest.approx(1.0 * fraction)


def test_coming_up_polls_for_the_fast_interval_and_final_ends_it() -> None:
    s = session(state=State.INIT)
    out = s.receive(peer(State.UP), 2.0)
    assert s.state == State.UP and s.poll_active
    assert s.next_tx == 2.0  # the state change is sent at once
    sent = s.tick(2.0).send
    assert sent[0].poll and sent[0].desired_min_tx_us == 300_000 and sent[0].state == State.UP
    assert out.changes[0].new == State.UP
    s.receive(peer(State.UP, final=True), 2.01)
    assert not s.poll_active
    assert not s.tick(s.next_tx or 0.0).send[0].poll


def test_poll_from_peer_is_answered_with_final_at_once() -> None:
    s = session(state=State.UP)
    out = s.receive(peer(State.UP, poll=True), 1.0)
    assert [(p.final, p.poll) for p in out.send] == [(True, False)]


def test_increased_tx_interval_waits_for_the_final() -> None:
    s = session(state=State.UP)
    s.receive(peer(State.UP, final=True), 0.0)
    s.reconfigure(SessionConfig(600_000, 300_000, 3), 1.0)
    assert s.poll_active and s.tx_interval_us == 300_000
    assert s.packet().desired_min_tx_us == 600_000
    s.receive(peer(State.UP, final=True), 1.1)
    assert s.tx_interval_us == 600_000


def test_reduced_rx_interval_keeps_old_detection_time_until_final() -> None:
    s = session(state=State.UP)
    s.receive(peer(State.UP, final=True, desired_min_tx_us=100_000), 0.0)
    assert s.detection_time_us == 900_000
    s.reconfigure(SessionConfig(300_000, 100_000, 3), 1.0)
    assert s.detection_time_us == 900_000
    s.receive(peer(State.UP, final=True, desired_min_tx_us=100_000), 1.1)
    assert s.detection_time_us == 300_000


def test_detection_timeout_takes_the_session_down_and_forgets_the_peer() -> None:
    s = session(state=State.UP)
    s.receive(peer(State.UP, final=True), 5.0)
    assert s.tick(5.89).changes == []
    out = s.tick(5.9)
    assert [(c.old, c.new, c.diag) for c in out.changes] == [
        (State.UP, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED)
    ]
    assert (s.remote_discr, s.detect_deadline) == (0, None)
    assert out.send[0].state == State.DOWN and out.send[0].your_discr == 0
    assert out.send[0].desired_min_tx_us == SLOW_TX_US


def test_passive_session_waits_for_the_peer_and_stops_when_it_goes() -> None:
    s = session(SessionConfig(300_000, 300_000, 3, passive=True))
    assert s.next_deadline() is None and s.tick(100.0).send == []
    s.receive(peer(State.DOWN, your=0), 100.0)
    assert s.state == State.INIT and s.tick(100.0).send
    s.tick(200.0)  # detection time passed: peer forgotten
    assert s.remote_discr == 0 and s.tick(300.0).send == []


def test_peer_asking_for_no_packets_gets_none() -> None:
    s = session(state=State.UP)
    s.receive(peer(State.UP, required_min_rx_us=0), 1.0)
    assert s.next_tx is None and s.tick(10.0).send[0:0] == []


def test_admin_down_and_back() -> None:
    s = session(state=State.UP)
    out = s.admin_down(1.0)
    assert out.send[0].state == State.ADMIN_DOWN and out.send[0].diag == Diag.ADMINISTRATIVELY_DOWN
    assert s.detect_deadline is None and s.packet().desired_min_tx_us == SLOW_TX_US
    assert s.receive(peer(State.UP), 1.1).dropped == "session is AdminDown"
    s.admin_up(2.0)
    assert s.state == State.DOWN


def run_pair(
    a: Session, b: Session, until: float, start: float = 0.0, cut_at: float | None = None
) -> list[tuple[str, float, State]]:
    """Deliver every packet at once (no loss) until `cut_at`, then drop everything."""
    log: list[tuple[str, float, State]] = []
    t, step = start, 0.001
    while t <= until:
        for name, me, other in (("a", a, b), ("b", b, a)):
            out: Output = me.tick(t)
            log += [(name, c.at, c.new) for c in out.changes]
            pending = list(out.send)
            while pending and (cut_at is None or t < cut_at):
                reply = other.receive(pending.pop(0), t)
                log += [("b" if name == "a" else "a", c.at, c.new) for c in reply.changes]
                back = [me.receive(p, t) for p in reply.send]
                log += [(name, c.at, c.new) for o in back for c in o.changes]
        t = round(t + step, 6)
    return log


def test_two_sessions_come_up_and_detect_a_cut() -> None:
    rng = random.Random(1)
    a = Session(1, FAST, 0.0, rng.random)
    b = Session(2, SessionConfig(300_000, 300_000, 3, passive=True), 0.0, rng.random)
    log = run_pair(a, b, until=3.0)
    assert a.state == b.state == State.UP
    assert not a.poll_active and not b.poll_active
    assert a.tx_interval_us == b.tx_interval_us == 300_000
    up = max(t for _, t, st in log if st == State.UP)
    assert up < 0.01  # Down -> Init -> Up on the first exchange
    log = run_pair(a, b, until=5.0, start=3.001, cut_at=3.001)
    downs = {n: t for n, t, st in log if st == State.DOWN}
    assert set(downs) == {"a", "b"}
    # Last packets were received before 3.0: detection (3 x 300 ms) fires before 3.0 + 0.9.
    assert all(3.0 < t <= 3.9 for t in downs.values())


def test_admin_down_from_the_peer_is_not_a_failure() -> None:
    def pkt(state: State, your: int) -> ControlPacket:
        return ControlPacket(state=state, detect_mult=3, my_discr=9, your_discr=your,
                             desired_min_tx_us=300_000, required_min_rx_us=300_000)

    s = Session(1, SessionConfig(), 0.0, lambda: 0.5)
    s.receive(pkt(State.DOWN, 0), 0.1)
    s.receive(pkt(State.UP, 1), 0.2)
    assert s.state == State.UP
    (change,) = s.receive(pkt(State.ADMIN_DOWN, 1), 0.3).changes
    assert change.peer_admin_down and not change.failure
    s.receive(pkt(State.DOWN, 1), 0.4)
    s.receive(pkt(State.UP, 1), 0.5)
    assert s.state == State.UP
    (expired,) = s.tick(10.0).changes
    assert expired.failure and not expired.peer_admin_down
