"""Speaker pure parts: strictARP parsing, heartbeat codec and peer table, liveness rules, status diff."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.api.constants import class_matches
from lbspeaker.kube.lease import micro_time
from lbspeaker.speaker import strictarp
from lbspeaker.speaker.heartbeat import Message, MsgType, PeerState, PeerTable, encode, parse
from lbspeaker.speaker.main import build_parser, node_addresses
from lbspeaker.speaker.membership import LeaseState, LeaseTracker, is_live, live_set, node_of_lease
from lbspeaker.speaker.status import BGP_STATUS, L2_STATUS, bgp_fields, diff_status, l2_fields

# --- strictARP -------------------------------------------------------------------------------------

IPVS_NO_STRICT = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n" \
                 "ipvs:\n  strictARP: false\n"


@pytest.mark.parametrize(
    "text, mode, strict, ok",
    [
        (IPVS_NO_STRICT, "ipvs", False, False),
        ("mode: ipvs\nipvs:\n  strictARP: true\n", "ipvs", True, True),
        ("mode: \"ipvs\"\n", "ipvs", False, False),
        ("mode: iptables\nipvs:\n  strictARP: false\n", "iptables", False, True),
        ("mode: ''\n", "iptables", False, True),  # kube-proxy's default mode
        ("", "iptables", False, True),
        ("mode: nftables\n", "nftables", False, True),
        ("mode: IPVS\nipvs: {strictARP: true}\n", "ipvs", True, True),
    ],
)
def test_strictarp_table(text: str, mode: str, strict: bool, ok: bool) -> None:
    state = strictarp.check({"data": {"config.conf": text}})
    assert (state.mode, state.strict_arp, state.ok, state.known) == (mode, strict, ok, True)
    if not ok:
        assert "strictARP" in state.detail and "--enforce-strict-arp" in state.detail


def test_strictarp_missing_or_garbage() -> None:
    assert strictarp.check(None).ok and not strictarp.check(None).known
    bad = strictarp.check({"data": {"config.conf": "mode: [unclosed"}})
    assert bad.ok and not bad.known and "unreadable" in bad.detail
    assert strictarp.check({"data": {"config.conf": "- a list"}}).known is False


# --- heartbeat codec + table -------------------------------------------------------------------------


@given(st.sampled_from(list(MsgType)), st.text(min_size=1, max_size=60), st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1))
def test_heartbeat_roundtrip(kind: MsgType, node: str, inc: int, seq: int) -> None:
    msg = Message(kind, node, inc, seq)
    assert parse(encode(msg, "key-1", b"k" * 32))[0] == msg


@given(st.binary(max_size=80))
def test_heartbeat_garbage_only_valueerror(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse(data)


def test_heartbeat_decode_rejects() -> None:
    good = encode(Message(MsgType.ALIVE, "kind-worker", 1, 1), "key-1", b"k" * 32)
    for bad in (good[:-1], good + b"x", b"XXXX" + good[4:], good[:4] + b"\x09" + good[5:],
                good[:5] + b"\x07" + good[6:]):
        with pytest.raises(ValueError):
            parse(bad)
    with pytest.raises(ValueError):
        encode(Message(MsgType.ALIVE, "", 1, 1), "key-1", b"k" * 32)


def test_peer_table_states() -> None:
    t = PeerTable(timeout=1.0)
    assert t.state("a", 0) is PeerState.UNKNOWN
    assert t.observe(Message(MsgType.ALIVE, "a", 5, 1), 10.0)
    assert t.state("a", 10.9) is PeerState.ALIVE
    assert t.state("a", 11.1) is PeerState.SILENT
    # Old or duplicate messages do not count.
    assert not t.observe(Message(MsgType.ALIVE, "a", 5, 1), 11.2)
    assert not t.observe(Message(MsgType.ALIVE, "a", 4, 99), 11.2)
    assert t.state("a", 11.2) is PeerState.SILENT
    assert t.observe(Message(MsgType.LEAVING, "a", 5, 2), 11.3)
    assert t.state("a", 11.3) is PeerState.LEFT
    # A late ALIVE of the same run cannot revive it; a new run (higher incarnation) does.
    assert not t.observe(Message(MsgType.ALIVE, "a", 5, 2), 11.4)
    assert t.state("a", 11.4) is PeerState.LEFT
    assert t.observe(Message(MsgType.ALIVE, "a", 6, 1), 12.0)
    assert t.state("a", 12.0) is PeerState.ALIVE


# --- liveness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lease, hb, live",
    [
        (LeaseState.FRESH, PeerState.UNKNOWN, True),
        (LeaseState.FRESH, PeerState.ALIVE, True),
        (LeaseState.FRESH, PeerState.SILENT, False),  # hard failure: dead within the heartbeat timeout
        (LeaseState.FRESH, PeerState.LEFT, False),  # SIGTERM: instant
        (LeaseState.EXPIRED, PeerState.UNKNOWN, False),
        (LeaseState.EXPIRED, PeerState.ALIVE, True),  # running (API trouble on its side): still announcing
        (LeaseState.RELEASED, PeerState.ALIVE, False),
        (LeaseState.RELEASED, PeerState.UNKNOWN, False),
    ],
)
def test_is_live_table(lease: LeaseState, hb: PeerState, live: bool) -> None:
    assert is_live(lease, hb) is live


def lease(node: str, holder: str | None, renew: datetime, duration: int = 10) -> dict:
    return {"metadata": {"name": f"speaker-{node}"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": micro_time(renew)}}


def test_lease_tracker() -> None:
    now = datetime.now(UTC)
    t = LeaseTracker(skew_s=2)
    t.update([lease("a", "a", now), lease("b", "", now), lease("c", "c", now - timedelta(seconds=60)),
              lease("d", "a", now),  # another node's Lease taken over (issue 13 #8): not d's
              {"metadata": {"name": "lbspeaker-controller"}, "spec": {"holderIdentity": "x"}}], 100.0)
    assert t.nodes() == ["a", "b", "c", "d"]
    assert t.state("d", 100.0, now) is LeaseState.RELEASED
    assert t.state("a", 100.0, now) is LeaseState.FRESH
    assert t.state("b", 100.0, now) is LeaseState.RELEASED
    assert t.state("c", 100.0, now) is LeaseState.EXPIRED  # stale renewTime at startup
    assert t.state("zz", 100.0, now) is LeaseState.RELEASED
    # Unchanged for longer than the duration on our clock: expired, whatever the wall clock says.
    t.update([lease("a", "a", now)], 111.0)
    assert t.state("a", 111.0, now) is LeaseState.EXPIRED
    # API view stale: expired reads as fresh (frozen), released stays released.
    assert t.state("a", 111.0, now, api_ok=False) is LeaseState.FRESH
    # Grace after the API came back: expired reads as fresh until then.
    t.grace(115.0)
    assert t.state("a", 114.0, now) is LeaseState.FRESH
    assert t.state("a", 115.5, now) is LeaseState.EXPIRED
    t.update([lease("a", "", now)], 112.0)
    assert t.state("a", 112.0, now, api_ok=False) is LeaseState.RELEASED
    assert node_of_lease("speaker-") is None and node_of_lease("speaker-x") == "x"


def test_live_set() -> None:
    states = {"me": LeaseState.EXPIRED, "a": LeaseState.FRESH, "b": LeaseState.FRESH}
    assert live_set("me", True, states, {"b": PeerState.SILENT}) == {"me", "a"}
    assert live_set("me", False, states, {}) == {"a", "b"}


# --- status + small helpers ------------------------------------------------------------------------------


def test_status_objects_and_diff() -> None:
    name = L2_STATUS.name("default/web", "kind-worker")
    assert name == L2_STATUS.name("default/web", "kind-worker")
    assert name != L2_STATUS.name("default/web", "kind-worker2")
    assert name.startswith("l2-") and len(name) == 19
    obj = L2_STATUS.object("default/web", "kind-worker", "lbspeaker-system", l2_fields(["eth1", "eth0"]))
    assert obj["status"] == {"node": "kind-worker", "serviceName": "web", "serviceNamespace": "default",
                             "interfaces": [{"name": "eth0"}, {"name": "eth1"}]}
    assert obj["metadata"]["labels"]["lbspeaker.io/node"] == "kind-worker"
    other = L2_STATUS.object("default/db", "kind-worker", "lbspeaker-system", l2_fields([]))
    stale = {**obj, "status": {**obj["status"], "interfaces": []}}
    create, update, delete = diff_status({name: obj}, {name: stale, "l2-old": other})
    assert create == [] and update == [obj] and delete == ["l2-old"]
    create, update, delete = diff_status({name: obj}, {})
    assert create == [obj] and update == [] and delete == []


def test_status_objects_live_in_the_namespace_given() -> None:
    """The speaker's own namespace (--namespace), never a hard-coded one."""
    for kind, fields in ((L2_STATUS, l2_fields(["eth0"])), (BGP_STATUS, bgp_fields(["r2", "r1"]))):
        obj = kind.object("default/web", "n", "lb", fields)
        assert obj["metadata"]["namespace"] == "lb" and obj["kind"] == kind.resource.kind
        assert obj["metadata"]["name"].startswith(kind.prefix + "-")
    bgp = BGP_STATUS.object("default/web", "n", "lb", bgp_fields(["r2", "r1"]))
    assert bgp["status"]["peers"] == ["r1", "r2"]
    assert BGP_STATUS.name("default/web", "n") != L2_STATUS.name("default/web", "n")


def test_node_addresses_and_class() -> None:
    node = {"status": {"addresses": [{"type": "Hostname", "address": "n"},
                                     {"type": "InternalIP", "address": "172.18.0.3"}]}}
    assert node_addresses(node) == ["172.18.0.3"]
    ext = {"status": {"addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]}}
    assert node_addresses(ext) == ["1.2.3.4"]
    assert class_matches({"spec": {}}, None)
    assert not class_matches({"spec": {"loadBalancerClass": "x"}}, None)
    assert class_matches({"spec": {"loadBalancerClass": "x"}}, "x")


def test_cli_defaults_documented() -> None:
    parser = build_parser()
    args = parser.parse_args(["--node-name", "n"])
    assert (args.lease_duration, args.renew_interval, args.heartbeat_timeout) == (10, 2.0, 1.0)
    assert args.metrics_addr == "0.0.0.0:7473" and args.heartbeat_port == 7474
    text = parser.format_help()
    for flag in ("--lease-duration", "--renew-interval", "--heartbeat-timeout", "--enforce-strict-arp",
                 "--interfaces", "--ignore-exclude-lb"):
        assert flag in text


# --- BGP session Events: once per transition ---------------------------------------------------------

@pytest.mark.parametrize(
    "told, now, news",
    [
        (None, (False, ""), False),  # a fresh session still connecting
        (None, (False, "connection refused"), True),
        (None, (True, ""), True),
        ((False, "MD5 authentication failed"), (False, ""), False),  # reason cleared: still the same outage
        ((False, "MD5 authentication failed"), (False, "MD5 authentication failed"), False),
        ((False, "connection refused"), (False, "router sent NOTIFICATION Cease"), True),
        ((False, ""), (True, ""), True),
        ((True, ""), (True, ""), False),
        ((True, ""), (False, ""), True),  # it was up: going down is news even without a reason
        ((True, ""), (False, "Hold Timer Expired"), True),
    ],
)
def test_session_event_is_news(told: tuple[bool, str] | None, now: tuple[bool, str], news: bool) -> None:
    from lbspeaker.speaker.sessions import is_news

    assert is_news(told, now) is news


def test_session_events_survive_a_stale_snapshot() -> None:
    """A snapshot taken before the error, applied after it, must not add a second BGPSessionDown."""
    from lbspeaker.bgp.session import PeerSession
    from lbspeaker.speaker.sessions import SessionStatus

    class Rep:
        def __init__(self) -> None:
            self.events: list[str] = []

        def normal(self, kind: str, name: str, reason: str, message: str) -> None:
            self.events.append(reason)

        def warning(self, kind: str, name: str, reason: str, message: str) -> None:
            self.events.append(reason)

    rep = Rep()
    st_ = SessionStatus(None, "ns", "node-a", rep)  # type: ignore[arg-type]
    idle = PeerSession("router", "Idle")
    down = PeerSession("router", "Active", last_error="MD5 authentication failed")
    for live in (down, idle, down, PeerSession("router", "Connect"), down):
        st_.update({"router": ""}, {"router": live})
    st_.update({"router": ""}, {"router": PeerSession("router", "Established")})
    assert rep.events == ["BGPSessionDown", "BGPSessionUp"]


def test_session_writer_does_not_wake_itself() -> None:
    """Each pass re-reads the live sessions through `refresh` (which calls `update`); that must
    not kick the writer again, or it spins (it did: 90 % of a speaker's CPU at 1,000 Services).
    What the pass read it writes itself; an update from elsewhere still wakes the writer."""
    from lbspeaker.bgp.session import PeerSession
    from lbspeaker.speaker.sessions import SessionStatus

    class Rest:
        def __init__(self) -> None:
            self.obj: dict[str, Any] = {"metadata": {"name": "router", "resourceVersion": "1"}, "status": {}}

        def get(self, *args: Any) -> dict[str, Any]:
            return self.obj

        def replace_status(self, resource: Any, obj: dict[str, Any]) -> dict[str, Any]:
            self.obj = obj
            return obj

    class Quiet:
        def normal(self, *args: str) -> None: ...
        def warning(self, *args: str) -> None: ...

    live = {"router": PeerSession("router", "Established", since=100.0)}
    st_ = SessionStatus(Rest(), "ns", "node-a", Quiet())  # type: ignore[arg-type]
    st_._refresh = lambda: st_.update({"router": ""}, live)
    st_.update({"router": ""}, live)
    assert st_._kick.is_set()  # the first reading is news
    for _ in range(3):
        st_._kick.clear()
        st_._pass()
        assert not st_._kick.is_set(), "a pass that changed nothing woke the writer again"
    rest: Rest = st_.rest  # type: ignore[assignment]
    assert [e["state"] for e in rest.obj["status"]["sessions"]] == ["Established"]
    live = {"router": PeerSession("router", "Idle", since=200.0, down_since=200.0)}
    st_._pass()  # the session went down: this pass reads it and writes it
    assert [e["state"] for e in rest.obj["status"]["sessions"]] == ["Idle"]
    st_.update({"router": ""}, live)
    assert st_._kick.is_set()  # an update from another thread (plan, ExaBGP's notifier) still wakes it


# --- BGP session entries: one write per outage ------------------------------------------------------

def test_session_entry_is_stable_through_connect_retries() -> None:
    """Every FSM cycle of a down peer keeps the entry's key; up, a new reason or a new outage change it."""
    from lbspeaker.bgp.session import PeerSession
    from lbspeaker.speaker.sessions import session_entry

    s = PeerSession("router", "Idle", since=100.0, down_since=100.0)
    s.set_error("connection refused", 101.0)
    first = session_entry(s, "")
    assert first.since == "1970-01-01T00:01:40Z"
    for i, state in enumerate(["Connect", "Active", "Idle"] * 10):
        s.set_state(state, 102.0 + i)
        assert session_entry(s, "").key == first.key, state
    s.set_error("router sent NOTIFICATION Cease", 140.0)
    assert session_entry(s, "").key != first.key  # a new reason is news
    s.set_state("Established", 150.0)
    up = session_entry(s, "")
    assert (up.state, up.reason, up.since) == ("Established", "", "1970-01-01T00:02:30Z")
    s.set_state("Idle", 160.0)
    assert session_entry(s, "").since == "1970-01-01T00:02:40Z"  # a new outage, a new since
    assert session_entry(None, "").key == (False, "not configured yet", None, None)
