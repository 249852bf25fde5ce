"""Session state from ExaBGP JSON messages (pure); the messages are ExaBGP 5's own format."""

from __future__ import annotations

from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.session import Ack, ExaEvent, SessionTable, notification_text, parse_line

HEAD = '{ "exabgp": "5.0.0", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 1, '
NEI = (
    '"neighbor": { "address": { "local": "172.18.0.11", "peer": "172.18.0.1" }, '
    '"asn": { "local": 64513, "peer": 64512 }'
)


def fsm(state: str) -> str:
    return HEAD + f'"type": "fsm", {NEI}, "router-id": "172.18.0.11" , "state": "{state}" }} }}'


def state(value: str, reason: str = "") -> str:
    extra = f', "reason": "{reason}"' if value == "down" else ""
    return HEAD + f'"type": "state", {NEI}, "router-id": "172.18.0.11" , "state": "{value}"{extra} }} }}'


def notification(direction: str, code: int, sub: int) -> str:
    return (
        HEAD + f'"type": "notification", {NEI}, "router-id": "172.18.0.11" , "direction": "{direction}", '
        f'"notification": {{ "code": {code}, "subcode": {sub}, "data": "", "message": "" }} }} }}'
    )


def table(**kw: object) -> SessionTable:
    t = SessionTable()
    t.configure([PeerSpec("frr", "172.18.0.1", 64513, 64512, **kw)], now=0.0)  # type: ignore[arg-type]
    return t


def apply(t: SessionTable, line: str, now: float) -> list[str]:
    msg = parse_line(line)
    assert isinstance(msg, ExaEvent), line
    return t.apply(msg, now)


def test_acks_and_noise() -> None:
    assert parse_line("done\n") == Ack(True)
    assert parse_line("error") == Ack(False)
    assert parse_line('{ "answer": "done", "message": "command completed" }') == Ack(True)
    assert parse_line("reactor   loaded new configuration") is None
    assert parse_line("{not json") is None


def test_fsm_up_down_and_reasons() -> None:
    t = table()
    s = t.sessions["frr"]
    assert s.state == "Idle" and s.since == 0.0
    assert apply(t, fsm("CONNECT"), 1.0) == ["frr"]
    assert apply(t, fsm("CONNECT"), 2.0) == []  # no change, no report
    assert s.state == "Connect" and s.since == 1.0
    apply(t, fsm("OPENSENT"), 2.0)
    apply(t, state("up"), 3.0)
    assert s.state == "Established" and s.established_count == 1 and s.reason == ""
    apply(t, notification("receive", 6, 2), 4.0)
    apply(t, state("down", "notification received (6,2)"), 4.0)
    assert s.state == "Idle"
    assert s.reason == "router sent NOTIFICATION Cease / Administrative Shutdown"
    apply(t, state("up"), 5.0)
    assert s.reason == "" and s.last_error.startswith("router sent")  # kept for history, not reported


def test_down_reason_spelled_out() -> None:
    t = table()
    apply(t, state("down", "notification sent (2,2)"), 1.0)
    assert t.sessions["frr"].reason == "we sent NOTIFICATION OPEN Message Error / Bad Peer AS"
    apply(t, state("down", "closing connection"), 2.0)  # same outage: the precise reason stays
    assert t.sessions["frr"].reason == "we sent NOTIFICATION OPEN Message Error / Bad Peer AS"
    apply(t, state("up"), 3.0)
    apply(t, state("down", "closing connection"), 4.0)  # a new outage
    assert t.sessions["frr"].reason == "session down: closing connection"


def test_open_error_reason() -> None:
    t = table()
    apply(t, notification("send", 2, 2), 1.0)
    assert t.sessions["frr"].reason == "we sent NOTIFICATION OPEN Message Error / Bad Peer AS"
    assert notification_text(4, 0) == "Hold Timer Expired"


def test_other_peer_events_are_ignored_and_shutdown_affects_all() -> None:
    t = table()
    other = fsm("ESTABLISHED").replace('"peer": "172.18.0.1"', '"peer": "172.18.0.9"')
    assert apply(t, other, 1.0) == []
    apply(t, fsm("ESTABLISHED"), 1.0)
    msg = parse_line(HEAD + '"type": "notification", "notification": "shutdown" }')
    assert isinstance(msg, ExaEvent) and msg.type == "shutdown"
    assert t.apply(msg, 2.0) == ["frr"] and t.sessions["frr"].state == "Idle"


def test_silence_becomes_a_reason_after_a_while() -> None:
    t = table(password="pw")
    assert t.stalled(5.0, after=10) == []
    assert t.stalled(10.0, after=10) == ["frr"]
    assert "MD5" in t.sessions["frr"].reason and "172.18.0.1:179" in t.sessions["frr"].reason
    assert t.stalled(20.0, after=10) == []  # reported once per outage


def test_precise_reason_not_overwritten_by_silence() -> None:
    t = table()
    apply(t, fsm("ESTABLISHED"), 1.0)
    apply(t, notification("receive", 4, 0), 2.0)
    apply(t, fsm("IDLE"), 2.0)
    assert t.stalled(30.0, after=10) == []
    assert "Hold Timer Expired" in t.sessions["frr"].reason


def test_reconfiguration_drop_is_not_the_reason_the_session_stays_down() -> None:
    """A BGPPeer change (e.g. a new, wrong password) reloads the session: "we sent Cease /
    Peer De-configured" explains the drop, not why the new session never comes up."""
    t = table(password="wrong")
    apply(t, fsm("ESTABLISHED"), 1.0)
    apply(t, notification("send", 6, 3), 2.0)
    apply(t, fsm("IDLE"), 2.0)
    assert "De-configured" in t.sessions["frr"].reason
    assert t.stalled(15.0, after=10) == ["frr"]
    assert "MD5" in t.sessions["frr"].reason


def test_process_exit_and_reconfigure() -> None:
    t = table()
    apply(t, fsm("ESTABLISHED"), 1.0)
    assert t.all_down("ExaBGP exited (status -9)", 2.0) == ["frr"]
    assert t.sessions["frr"].state == "Idle" and "exited" in t.sessions["frr"].reason
    t.configure([], 3.0)
    assert t.sessions == {}


def test_dynamic_asn_external_check() -> None:
    t = SessionTable()
    t.configure([PeerSpec("frr", "172.18.0.1", 64513, dynamic_asn="external")], 0.0)
    line = (
        HEAD + f'"type": "open", {NEI}, "router-id": "172.18.0.11" , "direction": "receive", "open": '
        '{ "version": 4, "asn": 64513, "hold_time": 9, "router_id": "1.1.1.1", "capabilities": {} } } }'
    )
    apply(t, line, 1.0)
    assert "dynamicASN external" in t.sessions["frr"].reason
