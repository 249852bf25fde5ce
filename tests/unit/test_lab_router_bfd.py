"""`lbspeaker-lab up --bfd`: the router configs it renders and the router views it parses."""

from __future__ import annotations

import json

from lab import router as rtr
from lab import topology as topo


def test_frr_bfd_profile_peers_and_bgp_follow_it() -> None:
    lab = topo.plan(2, True, "iptables", False)
    conf = rtr.render_frr_bfdd(lab)
    assert "bfd\n profile lbspeaker-lab\n  transmit-interval 300\n  receive-interval 300\n" in conf
    for n in lab.nodes:
        assert f" peer {n.ipv4}\n  profile lbspeaker-lab\n" in conf
        assert f" peer {n.ipv6}\n" in conf
    assert "router bgp" not in conf
    bgpd = rtr.render_frr(lab, bfd=True)
    assert " neighbor NODES bfd profile lbspeaker-lab" in bgpd
    assert " neighbor NODES6 bfd profile lbspeaker-lab" in bgpd
    # bgpd has no `bfd` node: in its file, the block's `exit` would end config mode and every
    # line after it (router bgp included) would fail
    assert "\nbfd\n" not in bgpd and bgpd.index("router bgp") < bgpd.index("\nexit\n")
    assert "bfd" not in rtr.render_frr(lab)


def test_frr_runs_bfdd_only_with_bfd_and_before_bgpd(tmp_path: object) -> None:
    paths = rtr.RouterPaths(tmp_path)  # type: ignore[arg-type]
    names = [n for n, _ in rtr.router_processes("frr", paths, bfd=True)]
    assert names == ["router-zebra", "router-bfdd", "router-bgpd"]
    bfdd = dict(rtr.router_processes("frr", paths, bfd=True))["router-bfdd"]
    assert bfdd[bfdd.index("--bfdctl") + 1].startswith(str(tmp_path))
    assert bfdd[bfdd.index("-f") + 1] == str(paths.bfdd_conf)
    bgpd = dict(rtr.router_processes("frr", paths, bfd=True))["router-bgpd"]
    assert bgpd[bgpd.index("-f") + 1] == str(paths.frr_conf)
    assert "router-bfdd" not in dict(rtr.router_processes("frr", paths))


def test_bird_bfd_protocol_and_bgp_bfd_on() -> None:
    lab = topo.plan(2, False, "iptables", False)
    conf = rtr.render_bird(lab, bfd=True)
    assert "protocol bfd labbfd {" in conf and "multiplier 3;" in conf
    assert all(f"  neighbor {n.ipv4};" in conf for n in lab.nodes)
    assert conf.count("bfd on;") == 1  # in the template every node protocol derives from
    assert "bfd" not in rtr.render_bird(lab)


def test_parse_frr_bfd_peers() -> None:
    text = json.dumps([
        {"multihop": False, "peer": "172.18.0.3", "local": "172.18.0.1", "status": "up", "id": 1},
        {"multihop": False, "peer": "172.18.0.4", "status": "down", "id": 2},
    ])
    assert rtr.parse_frr_bfd_peers(text) == {"172.18.0.3": "up", "172.18.0.4": "down"}
    assert rtr.parse_frr_bfd_peers("") == {}


def test_parse_bird_bfd_sessions() -> None:
    text = (
        "BIRD 2.0.12 ready.\n"
        "labbfd:\n"
        "IP address                Interface  State      Since         Interval  Timeout\n"
        "172.18.0.3                eth0       Up         15:01:02.345    0.300    0.900\n"
        "fc00:f853:ccd:e793::4     eth0       Down       15:01:02.345    1.000    0.000\n"
    )
    assert rtr.parse_bird_bfd_sessions(text) == {"172.18.0.3": "up", "fc00:f853:ccd:e793::4": "down"}
