"""ExaBGP configuration rendering from BGPPeers (pure), checked by ExaBGP's own parser."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lbspeaker.api.models import BGPPeer
from lbspeaker.bgp.config import PeerSpec, eor_commands, is_fatal, peer_spec_from_bgppeer, render_config

RELAY = [sys.executable, "-m", "lbspeaker.bgp.relay", "--socket", "/run/lbspeaker/bgp.sock"]


def block(text: str, address: str) -> str:
    start = text.index(f"neighbor {address} {{")
    return text[start : text.index("\n}", start)]


def test_ebgp_peer_fields() -> None:
    peer = PeerSpec(
        "r1",
        "172.18.0.1",
        64513,
        64512,
        source_address="172.18.0.11",
        router_id="10.0.0.1",
        hold_time=9,
        peer_port=1179,
        graceful_restart=True,
    )
    out = render_config([peer], RELAY)
    b = block(out.text, "172.18.0.1")
    for line in (
        "router-id 10.0.0.1;",
        "local-address 172.18.0.11;",
        "local-as 64513;",
        "peer-as 64512;",
        "hold-time 9;",
        "connect 1179;",
        "outgoing-ttl 1;",
        "graceful-restart 120;",
        "manual-eor true;",  # End-of-RIB only once the speaker has re-announced
        "ipv4 unicast;",
        "processes [ lbspeaker ];",
        "neighbor-changes;",
        "fsm;",
    ):
        assert line in b, line
    assert f"run {' '.join(RELAY)};" in out.text
    assert out.problems == [] and out.peers == [peer]


def test_multihop_ibgp_dynamic_asn_and_defaults() -> None:
    multihop = PeerSpec("a", "10.1.0.1", 64513, 64512, ebgp_multihop=True)
    ibgp = PeerSpec("b", "10.1.0.2", 64512, 64512)
    internal = PeerSpec("c", "10.1.0.3", 64512, dynamic_asn="internal")
    external = PeerSpec("d", "10.1.0.4", 64512, dynamic_asn="external")
    text = render_config([multihop, ibgp, internal, external], RELAY).text
    assert "outgoing-ttl 255;" in block(text, "10.1.0.1")
    assert "ttl" not in block(text, "10.1.0.2") and "connect" not in block(text, "10.1.0.2")
    assert "peer-as 64512;" in block(text, "10.1.0.3") and "ttl" not in block(text, "10.1.0.3")
    assert "peer-as auto;" in block(text, "10.1.0.4") and "outgoing-ttl 1;" in block(text, "10.1.0.4")
    assert "hold-time 90;" in block(text, "10.1.0.2")


def test_password_is_base64_so_any_character_is_safe() -> None:
    pw = 'a b;c"d}{\\'
    text = render_config([PeerSpec("a", "10.1.0.1", 1, 2, password=pw)], RELAY).text
    encoded = base64.b64encode(pw.encode()).decode()
    assert f'md5-password "{encoded}";' in text and "md5-base64 true;" in text


def test_invalid_peers_are_left_out_with_problems() -> None:
    peers = [
        PeerSpec("ok", "10.1.0.1", 1, 2),
        PeerSpec("zdup", "10.1.0.1", 1, 3),  # same address and myASN as "ok": sorted after it
        PeerSpec("unnumbered", "", 1, 2, interface="eth1"),
        PeerSpec("fam", "10.1.0.5", 1, 2, source_address="fd00::1"),
        PeerSpec("v6-no-rid", "fd00::9", 1, 2),
        PeerSpec("longpw", "10.1.0.6", 1, 2, password="x" * 81),
        PeerSpec("ka", "10.1.0.7", 1, 2, hold_time=90, keepalive_time=10, bfd_profile="p"),
    ]
    out = render_config(peers, RELAY)
    assert [p.name for p in out.peers] == ["ka", "ok"]
    fatal = {p.name for p in out.problems if is_fatal(p)}
    assert fatal == {"zdup", "unnumbered", "fam", "v6-no-rid", "longpw"}
    warn = [p.message for p in out.problems if not is_fatal(p)]
    assert any("keepaliveTime" in m for m in warn)
    assert not any("bfdProfile" in m for m in warn)  # the speaker runs BFD itself
    assert "bfd " not in out.text.split("encoder json")[1]  # and ExaBGP's file has no part in it


def test_deterministic_and_dual_stack() -> None:
    a = PeerSpec("a", "10.1.0.1", 1, 2, dual_stack=True, router_id="1.1.1.1")
    b = PeerSpec("b", "fd00::1", 1, 2, router_id="1.1.1.1")
    assert render_config([a, b], RELAY).text == render_config([b, a], RELAY).text
    text = render_config([a, b], RELAY).text
    assert "ipv6 unicast;" in block(text, "10.1.0.1") and "ipv4 unicast;" in block(text, "10.1.0.1")
    assert "ipv4 unicast;" not in block(text, "fd00::1")


def test_relay_argv_must_be_writable() -> None:
    with pytest.raises(ValueError):
        render_config([], ["/path with space/python"])


def test_from_bgppeer_model() -> None:
    obj = BGPPeer.model_validate(
        {
            "metadata": {"name": "router"},
            "spec": {
                "myASN": 64513,
                "peerASN": 64512,
                "peerAddress": "172.18.0.1",
                "holdTime": "1m30s",
                "keepaliveTime": "30s",
                "ebgpMultiHop": True,
                "enableGracefulRestart": True,
                "sourceAddress": "172.18.0.11",
                "peerPort": 1790,
            },
        }
    )
    spec = peer_spec_from_bgppeer("router", obj.spec, default_router_id="172.18.0.11", password="pw")
    assert spec.hold_time == 90 and spec.keepalive_time == 30 and spec.router_id == "172.18.0.11"
    assert spec.password == "pw" and spec.graceful_restart and spec.ebgp_multihop and spec.peer_port == 1790
    assert render_config([spec], RELAY).problems == []


def test_exabgp_accepts_the_rendered_file(tmp_path: Path) -> None:
    peers = [
        PeerSpec(
            "a",
            "172.18.0.1",
            64513,
            64512,
            source_address="172.18.0.11",
            router_id="172.18.0.11",
            password='pw;"x',
            graceful_restart=True,
            peer_port=1179,
            hold_time=9,
        ),
        PeerSpec(
            "b",
            "172.18.0.2",
            64513,
            dynamic_asn="external",
            router_id="1.2.3.4",
            ebgp_multihop=True,
            dual_stack=True,
        ),
        PeerSpec("c", "fd00::1", 64513, dynamic_asn="internal", router_id="1.2.3.4", hold_time=0),
    ]
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config(peers, RELAY).text)
    env = dict(
        os.environ, exabgp_daemon_user="root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "exabgp", "validate", "-n", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for address in ("172.18.0.1", "172.18.0.2", "fd00::1"):
        assert f"neighbor  {address}" in out, out


def test_no_manual_eor_without_graceful_restart() -> None:
    text = render_config([PeerSpec("r", "172.18.0.1", 64513, 64512)], RELAY).text
    assert "manual-eor" not in text and "graceful-restart" not in text


@pytest.mark.parametrize(
    ("peer", "commands"),
    [
        (PeerSpec("a", "172.18.0.1", 64513, 64512, graceful_restart=True),
         ["neighbor 172.18.0.1 local-as 64513 announce eor ipv4 unicast"]),
        (PeerSpec("b", "fd00::1", 64513, 64512, router_id="1.1.1.1", graceful_restart=True),
         ["neighbor fd00::1 local-as 64513 announce eor ipv6 unicast"]),
        (PeerSpec("c", "172.18.0.1", 64513, 64512, dual_stack=True, graceful_restart=True),
         ["neighbor 172.18.0.1 local-as 64513 announce eor ipv4 unicast",
          "neighbor 172.18.0.1 local-as 64513 announce eor ipv6 unicast"]),
    ],
)
def test_eor_commands_per_family(peer: PeerSpec, commands: list[str]) -> None:
    assert eor_commands(peer) == commands


@pytest.mark.parametrize(
    ("peer", "problem"),
    [
        (PeerSpec("a", "172.18.0.1", 64513, 64512, dual_stack=True, node_addresses=("172.18.0.3",)),
         "IPv6 routes are not announced over this IPv4 session"),
        (PeerSpec("b", "fd00::1", 64513, 64512, router_id="1.1.1.1", dual_stack=True,
                  node_addresses=("fd00::3",)),
         "IPv4 routes are not announced over this IPv6 session"),
        (PeerSpec("c", "172.18.0.1", 64513, 64512, dual_stack=True, node_addresses=("172.18.0.3", "fd00::3")),
         None),
    ],
)
def test_dual_stack_needs_a_next_hop_of_the_other_family(peer: PeerSpec, problem: str | None) -> None:
    out = render_config([peer], RELAY)
    assert out.peers == [peer]  # never fatal: the session's own family still goes
    messages = [p.message for p in out.problems]
    if problem is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith(problem) and not is_fatal(out.problems[0])


def test_local_asn_is_this_neighbours_local_as() -> None:
    """MetalLB's localASN (FRR local-as <ASN> no-prepend replace-as): ExaBGP sets local-as per
    neighbour, so the OPEN and the AS_PATH of our routes carry localASN, and the API selector follows."""
    peer = PeerSpec("r", "172.18.0.1", 64513, 64512, local_asn=65010)
    out = render_config([peer], RELAY)
    assert "local-as 65010;" in block(out.text, "172.18.0.1") and "local-as 64513" not in out.text
    assert peer.selector == "neighbor 172.18.0.1 local-as 65010" and out.problems == []
    # two sessions to one router with different local ASNs are two neighbours ExaBGP can address
    other = PeerSpec("s", "172.18.0.1", 64513, 64512, local_asn=65011)
    assert [p.name for p in render_config([peer, other], RELAY).peers] == ["r", "s"]


@pytest.mark.parametrize(
    ("peer", "fatal", "fragment"),
    [
        (PeerSpec("i", "10.0.0.1", 64512, 64512, local_asn=65010), True, "localASN is for eBGP only"),
        (PeerSpec("i", "10.0.0.1", 64512, dynamic_asn="internal", local_asn=65010), True, "eBGP only"),
        (PeerSpec("i", "10.0.0.1", 64512, 64513, local_asn=64513), True, "localASN equals peerASN"),
        # stored before the CRD rule: the session keeps running, the field is reported as ignored
        (PeerSpec("i", "10.0.0.1", 64512, 64512, ebgp_multihop=True), False, "ebgpMultiHop is ignored"),
    ],
)
def test_ebgp_only_fields_on_ibgp(peer: PeerSpec, fatal: bool, fragment: str) -> None:
    out = render_config([peer], RELAY)
    assert [p for p in out.problems if fragment in p.message], out.problems
    assert any(map(is_fatal, out.problems)) == fatal and (out.peers == []) == fatal
