"""Authenticated heartbeats (issue 13 #2): the codec and `verify` as tables, the parser fuzzed, the
key rotation rule, the Secret format, and the three attacks seen on loopback replayed against a
real Heartbeater on 127.0.0.x sockets (each passed, i.e. the attack worked, before heartbeats were
signed)."""

from __future__ import annotations

import base64
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.kube.memberlist import KEY_ID, SECRET_NAME, keys_of, new_key_id, new_secret
from lbspeaker.speaker.heartbeat import (
    HEADER,
    MAGIC,
    Heartbeater,
    Message,
    MsgType,
    PeerState,
    Reason,
    Rejected,
    RejectLog,
    encode,
    parse,
    signing_key,
    verify,
)
from tests.helpers import wait_for

KEY = b"k" * 32
OTHER = b"o" * 32
KEYS = {"key-1": KEY}
NOW = 1_800_000_000 * 10**9
PEERS = {"kind-worker": ["172.18.0.3"], "kind-worker2": ["172.18.0.4", "fc00:f853:ccd:e793::4"],
         "no-address": []}


def msg(node: str = "kind-worker", inc: int = NOW - 10**9, seq: int = 7, sent: int = NOW,
        kind: MsgType = MsgType.ALIVE) -> Message:
    return Message(kind, node, inc, seq, sent)


def dgram(m: Message | None = None, kid: str = "key-1", key: bytes = KEY) -> bytes:
    return encode(m or msg(), kid, key)


def old_v1(kind: MsgType, node: str, inc: int, seq: int) -> bytes:
    """The unauthenticated format speakers accepted before (what the attacks used)."""
    name = node.encode()
    return struct.pack("!4sBBQQH", b"LBHB", 1, int(kind), inc, seq, len(name)) + name


# --- codec + verification ------------------------------------------------------------------------


@given(st.sampled_from(list(MsgType)), st.text(min_size=1, max_size=60),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
       st.from_regex(KEY_ID, fullmatch=True), st.binary(min_size=16, max_size=64))
def test_roundtrip(kind: MsgType, node: str, inc: int, seq: int, sent: int, kid: str, key: bytes) -> None:
    m = Message(kind, node, inc, seq, sent)
    got, got_kid, signed, tag = parse(encode(m, kid, key))
    assert (got, got_kid) == (m, kid) and len(tag) == 32 and signed.startswith(MAGIC)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_parser_fuzz_only_rejected(data: bytes) -> None:
    """Anything at all: either a parse or Rejected(MALFORMED), never another exception."""
    try:
        parse(data)
    except Rejected as exc:
        assert exc.reason is Reason.MALFORMED


@settings(max_examples=300)
@given(st.data())
def test_any_changed_byte_is_refused(data: st.DataObject) -> None:
    """Flip, cut or extend a valid datagram anywhere: never accepted, never a crash."""
    good = dgram()
    op = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bit = data.draw(st.integers(0, 7))
        bad = good[:i] + bytes([good[i] ^ (1 << bit)]) + good[i + 1 :]
    elif op == "cut":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    else:
        bad = good + data.draw(st.binary(min_size=1, max_size=40))
    with pytest.raises(Rejected):
        verify(bad, "172.18.0.3", KEYS, PEERS, NOW)


@pytest.mark.parametrize("data, src, keys, reason", [
    (dgram(), "172.18.0.3", KEYS, None),
    (dgram(msg("kind-worker2")), "::ffff:172.18.0.4", KEYS, None),
    (dgram(msg("kind-worker2")), "fc00:f853:ccd:e793::4", KEYS, None),
    (dgram(msg("no-address")), "10.9.9.9", KEYS, None),  # a Node without addresses: the tag decides
    (dgram(msg(sent=NOW - 29 * 10**9)), "172.18.0.3", KEYS, None),
    (dgram(msg(kind=MsgType.LEAVING)), "172.18.0.3", KEYS, None),
    (b"", "172.18.0.3", KEYS, Reason.MALFORMED),
    (old_v1(MsgType.LEAVING, "kind-worker", 2**64 - 1, 1), "172.18.0.3", KEYS, Reason.MALFORMED),
    (dgram()[:-1], "172.18.0.3", KEYS, Reason.MALFORMED),
    (dgram(), "172.18.0.3", {}, Reason.NO_KEY),
    (dgram(kid="key-0"), "172.18.0.3", KEYS, Reason.UNKNOWN_KEY),
    (dgram(key=OTHER), "172.18.0.3", KEYS, Reason.BAD_MAC),
    (dgram()[:-1] + bytes([dgram()[-1] ^ 1]), "172.18.0.3", KEYS, Reason.BAD_MAC),
    (dgram(msg("fresh-name-1")), "172.18.0.3", KEYS, Reason.UNKNOWN_NODE),
    (dgram(), "172.18.0.4", KEYS, Reason.SOURCE),
    (dgram(msg(sent=NOW - 31 * 10**9)), "172.18.0.3", KEYS, Reason.STALE),  # a replay, later
    (dgram(msg(sent=NOW + 31 * 10**9)), "172.18.0.3", KEYS, Reason.STALE),
    (dgram(msg(inc=2**64 - 1)), "172.18.0.3", KEYS, Reason.INCARNATION),
    (dgram(msg(kind=MsgType.LEAVING, inc=2**64 - 1)), "172.18.0.3", KEYS, Reason.INCARNATION),
])
def test_verify_table(data: bytes, src: str, keys: dict[str, bytes], reason: Reason | None) -> None:
    if reason is None:
        assert verify(data, src, keys, PEERS, NOW).node in PEERS
        return
    with pytest.raises(Rejected) as err:
        verify(data, src, keys, PEERS, NOW)
    assert err.value.reason is reason


def test_verify_accepts_every_key_of_a_rotation() -> None:
    keys = {"key-1": KEY, "key-2": OTHER}
    assert verify(dgram(kid="key-1"), "172.18.0.3", keys, PEERS, NOW)
    assert verify(dgram(kid="key-2", key=OTHER), "172.18.0.3", keys, PEERS, NOW)
    with pytest.raises(Rejected):  # the id names which key: the other key does not fit it
        verify(dgram(kid="key-2", key=KEY), "172.18.0.3", keys, PEERS, NOW)


def test_encode_refuses_what_does_not_fit() -> None:
    for bad in (lambda: encode(msg(""), "k", KEY), lambda: encode(msg("x" * 254), "k", KEY),
                lambda: encode(msg(), "", KEY), lambda: encode(msg(), "k" * 65, KEY)):
        with pytest.raises(ValueError):
            bad()
    assert HEADER.size == 33


@pytest.mark.parametrize("keys, seen, now, want", [
    ({}, {}, 100.0, None),
    ({"key-1": KEY}, {"key-1": 100.0}, 100.0, "key-1"),  # the only key: at once
    ({"key-1": KEY, "key-2": OTHER}, {"key-1": 0.0, "key-2": 95.0}, 100.0, "key-1"),  # new: not yet
    ({"key-1": KEY, "key-2": OTHER}, {"key-1": 0.0, "key-2": 90.0}, 100.0, "key-2"),  # known 10 s
    ({"key-1": KEY, "key-2": OTHER}, {"key-1": 100.0, "key-2": 100.0}, 100.0, "key-1"),  # fresh start
    ({"key-2": OTHER}, {"key-2": 99.0}, 100.0, "key-2"),  # the old one removed
    ({"a": KEY, "b": KEY, "c": KEY}, {"a": 0.0, "b": 0.0, "c": 99.0}, 100.0, "b"),
])
def test_signing_key(keys: dict[str, bytes], seen: dict[str, float], now: float, want: str | None) -> None:
    assert signing_key(keys, seen, now, delay=10.0) == want


def test_reject_log_is_rate_limited_per_reason() -> None:
    log = RejectLog(every=60.0)
    bad, stale = Rejected(Reason.BAD_MAC), Rejected(Reason.STALE)
    lines = [log.add(bad, "1.2.3.4", float(t)) for t in range(100)]
    assert lines[0] and sum(1 for line in lines if line) == 2  # t=0 and t=60
    assert "60 refused for bad_mac" in (lines[60] or "")
    assert log.add(stale, "1.2.3.4", 100.0)  # another reason: its own budget
    assert log.counts == {Reason.BAD_MAC: 100, Reason.STALE: 1}


# --- the Secret ------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("data, want", [
    ({"key-1": b64(KEY)}, {"key-1": KEY}),
    ({"key-1": b64(KEY), "key-2": b64(OTHER)}, {"key-1": KEY, "key-2": OTHER}),
    ({"short": b64(b"x" * 15)}, {}),  # too weak to count
    ({"not base64": b64(KEY), "key-1": "%%%"}, {}),
    ({"k/1": b64(KEY)}, {}),
    ({"k" * 65: b64(KEY)}, {}),
    ({}, {}),
])
def test_keys_of(data: dict[str, str], want: dict[str, bytes]) -> None:
    assert keys_of({"data": data}) == want


def test_new_secret() -> None:
    s1, s2 = new_secret("lbspeaker-system"), new_secret("lbspeaker-system")
    assert s1["metadata"]["name"] == SECRET_NAME and s1["type"] == "Opaque"
    k1, k2 = keys_of(s1), keys_of(s2)
    assert len(k1) == 1 and len(next(iter(k1.values()))) == 32 and k1 != k2
    assert keys_of(None) == {}
    assert new_key_id() < "key-99999999999999" and KEY_ID.fullmatch(new_key_id())


# --- the attacks, over real sockets ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pair() -> Iterator[tuple[Heartbeater, Heartbeater]]:
    """`me` on 127.0.0.1 and `victim` on 127.0.0.2, same key, heartbeating each other."""
    port = free_port()
    me = Heartbeater("me", lambda: {"victim": ["127.0.0.2"]}, lambda: None, port=port, bind="127.0.0.1",
                     interval=0.05, timeout=0.5, keys=lambda: KEYS)
    victim = Heartbeater("victim", lambda: {"me": ["127.0.0.1"]}, lambda: None, port=port,
                         bind="127.0.0.2", interval=0.05, timeout=0.5, keys=lambda: KEYS)
    me.start()
    victim.start()
    wait_for(lambda: me.state("victim") is PeerState.ALIVE, timeout=10)
    yield me, victim
    me.stop()
    victim.stop()


def forge(port: int, datagrams: list[bytes]) -> None:
    """Send from the victim's address, as anyone on the node network can."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


def rejected(hb: Heartbeater) -> int:
    return sum(hb.rejects.counts.values())


def test_attack_forged_leaving_cannot_evict_a_live_node(pair: tuple[Heartbeater, Heartbeater]) -> None:
    me, _ = pair
    forged = [
        old_v1(MsgType.LEAVING, "victim", 2**64 - 1, 2**64 - 1),  # the attack as it was
        encode(Message(MsgType.LEAVING, "victim", 2**64 - 1, 1, time.time_ns()), "key-1", OTHER),
        encode(Message(MsgType.LEAVING, "victim", 2**64 - 1, 1, time.time_ns()), "key-1", KEY),  # insider
    ]
    forge(me.port, forged)
    wait_for(lambda: rejected(me) >= 3, timeout=10, message=lambda: f"{me.rejects.counts}")
    assert me.rejects.counts == {Reason.MALFORMED: 1, Reason.BAD_MAC: 1, Reason.INCARNATION: 1}
    got = me.received
    wait_for(lambda: me.received > got + 2, timeout=10)  # real heartbeats still count
    assert me.state("victim") is PeerState.ALIVE


def test_attack_forged_alive_cannot_keep_a_crashed_node_live(pair: tuple[Heartbeater, Heartbeater]) -> None:
    me, victim = pair
    victim.stop()  # crash: no LEAVING
    seq = 10**6
    inc = victim._incarnation
    deadline = time.monotonic() + 10
    while me.state("victim") is PeerState.ALIVE and time.monotonic() < deadline:  # bounded
        seq += 1
        forge(me.port, [old_v1(MsgType.ALIVE, "victim", inc, seq),
                        encode(Message(MsgType.ALIVE, "victim", inc, seq, time.time_ns()), "key-1", OTHER)])
        time.sleep(0.02)  # the attacker's pace, not a wait for a condition
    assert me.state("victim") is PeerState.SILENT
    assert me.rejects.counts.get(Reason.MALFORMED, 0) >= 1 and me.rejects.counts.get(Reason.BAD_MAC, 0) >= 1


def test_attack_fresh_names_do_not_grow_the_table(pair: tuple[Heartbeater, Heartbeater]) -> None:
    me, _ = pair
    now = time.time_ns()
    for i in range(20_000):
        me.handle(old_v1(MsgType.ALIVE, f"n{i}", 1, 1), "127.0.0.2")
        me.handle(encode(Message(MsgType.ALIVE, f"n{i}", now, 1, now), "key-1", KEY), "127.0.0.2")
    assert len(me.table) == 1 and set(me.states()) == {"victim"}
    assert me.rejects.counts[Reason.UNKNOWN_NODE] == 20_000
    assert me.rejects.counts[Reason.MALFORMED] >= 20_000


def test_without_a_key_nothing_is_trusted_and_peers_are_forgotten() -> None:
    """Fail safe: losing the key must not turn every peer SILENT (that would elect everyone)."""
    port = free_port()
    keys = {"key-1": KEY}
    me = Heartbeater("me", lambda: {"victim": ["127.0.0.2"]}, lambda: None, port=port, bind="127.0.0.1",
                     interval=0.05, timeout=0.5, keys=lambda: dict(keys))
    victim = Heartbeater("victim", lambda: {"me": ["127.0.0.1"]}, lambda: None, port=port,
                         bind="127.0.0.2", interval=0.05, timeout=0.5, keys=lambda: {"key-1": KEY})
    me.start()
    victim.start()
    try:
        wait_for(lambda: me.state("victim") is PeerState.ALIVE, timeout=10)
        keys.clear()
        wait_for(lambda: not me.authenticated, timeout=10)
        assert me.state("victim") is PeerState.UNKNOWN  # Lease-only, not SILENT
        wait_for(lambda: me.rejects.counts.get(Reason.NO_KEY, 0) >= 3, timeout=10)
        assert me.state("victim") is PeerState.UNKNOWN
        assert me.stats()["keys"] == 0
        keys["key-1"] = KEY
        wait_for(lambda: me.state("victim") is PeerState.ALIVE, timeout=10)
    finally:
        me.stop()
        victim.stop()
