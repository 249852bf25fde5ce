"""ARP/NDP frame building and parsing, checked against scapy (scapy only here, never in the reply path)."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from lbspeaker.l2 import frames as f

OUR_MAC = "02:00:00:00:00:aa"
CLIENT_MAC = "02:00:00:00:00:01"
VIP = "172.18.255.200"
VIP6 = "fc00:f853:ccd:e793::c8"
CLIENT6 = "fc00:f853:ccd:e793::1"
LL6 = "fe80::aa"


def ip4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def ip6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def scapy_who_has(target: str = VIP, psrc: str = "172.18.0.9") -> bytes:
    eth = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
    return bytes(eth / ARP(op=1, hwsrc=CLIENT_MAC, psrc=psrc, pdst=target))


def test_mac_helpers() -> None:
    assert f.mac_str(f.mac_bytes(OUR_MAC)) == OUR_MAC
    assert f.mac_bytes("02-00-00-00-00-AA") == f.mac_bytes(OUR_MAC)
    with pytest.raises(ValueError):
        f.mac_bytes("02:00")
    with pytest.raises(ValueError):
        f.mac_bytes(b"\x00")


def test_parse_arp_request() -> None:
    req = f.parse_arp_request(scapy_who_has())
    assert req is not None
    assert req.target_ip == ip4(VIP)
    assert req.sender_ip == ip4("172.18.0.9")
    assert req.sender_mac == f.mac_bytes(CLIENT_MAC)
    assert req.eth_dst == f.BROADCAST_MAC
    assert not req.is_probe and not req.is_gratuitous
    probe = f.parse_arp_request(scapy_who_has(psrc="0.0.0.0"))
    assert probe is not None and probe.is_probe


def test_arp_reply_matches_scapy() -> None:
    frame = scapy_who_has()
    req = f.parse_arp_request(frame)
    assert req is not None
    reply = f.build_arp_reply(req, f.mac_bytes(OUR_MAC))
    assert reply == f.arp_reply_from_frame(frame, f.mac_bytes(OUR_MAC))
    p = Ether(reply)
    assert p.dst == CLIENT_MAC and p.src == OUR_MAC
    a = p[ARP]
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (2, OUR_MAC, VIP, CLIENT_MAC, "172.18.0.9")
    expected = Ether(src=OUR_MAC, dst=CLIENT_MAC) / ARP(
        op=2, hwsrc=OUR_MAC, psrc=VIP, hwdst=CLIENT_MAC, pdst="172.18.0.9"
    )
    assert reply == bytes(expected)


@pytest.mark.parametrize("reply", [False, True])
def test_gratuitous_arp(reply: bool) -> None:
    g = Ether(f.build_gratuitous_arp(f.mac_bytes(OUR_MAC), ip4(VIP), reply))
    assert g.dst == "ff:ff:ff:ff:ff:ff" and g.src == OUR_MAC
    a = g[ARP]
    assert a.op == (2 if reply else 1)
    assert a.psrc == a.pdst == VIP
    assert a.hwsrc == OUR_MAC and a.hwdst == "ff:ff:ff:ff:ff:ff"


def test_arp_non_request_and_malformed() -> None:
    reply = bytes(Ether() / ARP(op=2, psrc=VIP, pdst="172.18.0.9"))
    assert f.parse_arp_request(reply) is None
    with pytest.raises(f.MalformedFrame):
        f.parse_arp_request(scapy_who_has()[:30])
    with pytest.raises(f.MalformedFrame):
        f.parse_arp_request(bytes(Ether() / ARP(op=7)))
    with pytest.raises(f.MalformedFrame):
        f.parse_arp_request(bytes(Ether() / ARP(hwlen=8)))
    with pytest.raises(f.MalformedFrame):
        f.parse_arp_request(bytes(Ether(type=0x0800) / ARP()))


def scapy_ns(target: str = VIP6, src: str = CLIENT6, slla: bool = True) -> bytes:
    dst = str(ipaddress.IPv6Address(f.solicited_node_multicast(ip6(target))))
    pkt = (
        Ether(src=CLIENT_MAC, dst=f.mac_str(f.ipv6_multicast_mac(ip6(dst))))
        / IPv6(src=src, dst=dst, hlim=255)
        / ICMPv6ND_NS(tgt=target)
    )
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC)
    return bytes(pkt)


def test_solicited_node_and_mac() -> None:
    g = f.solicited_node_multicast(ip6(VIP6))
    assert str(ipaddress.IPv6Address(g)) == "ff02::1:ff00:c8"
    assert f.mac_str(f.ipv6_multicast_mac(g)) == "33:33:ff:00:00:c8"


def test_parse_ns() -> None:
    ns = f.parse_neighbor_solicitation(scapy_ns())
    assert ns is not None
    assert ns.target == ip6(VIP6)
    assert ns.source_ip == ip6(CLIENT6)
    assert ns.source_lladdr == f.mac_bytes(CLIENT_MAC)
    assert not ns.is_dad


def test_parse_dad_ns() -> None:
    ns = f.parse_neighbor_solicitation(scapy_ns(src="::", slla=False))
    assert ns is not None and ns.is_dad and ns.source_lladdr is None
    with pytest.raises(f.MalformedFrame):  # DAD must not carry SLLA
        f.parse_neighbor_solicitation(scapy_ns(src="::", slla=True))


def test_na_reply_matches_scapy() -> None:
    ns = f.parse_neighbor_solicitation(scapy_ns())
    assert ns is not None
    na = f.build_na_reply(ns, f.mac_bytes(OUR_MAC), ip6(LL6))
    p = Ether(na)
    assert p.dst == CLIENT_MAC and p.src == OUR_MAC
    assert p[IPv6].src == LL6 and p[IPv6].dst == CLIENT6 and p[IPv6].hlim == 255
    a = p[ICMPv6ND_NA]
    assert (a.R, a.S, a.O, a.tgt) == (0, 1, 1, VIP6)
    assert p[ICMPv6NDOptDstLLAddr].lladdr == OUR_MAC
    # checksum: scapy recomputes it identically
    rebuilt = Ether(na)
    del rebuilt[ICMPv6ND_NA].cksum
    assert bytes(rebuilt) == na


def test_na_reply_without_slla_uses_frame_source() -> None:
    ns = f.parse_neighbor_solicitation(scapy_ns(slla=False))
    assert ns is not None
    assert Ether(f.build_na_reply(ns, f.mac_bytes(OUR_MAC), ip6(LL6))).dst == CLIENT_MAC


def test_na_reply_to_dad_goes_to_all_nodes() -> None:
    ns = f.parse_neighbor_solicitation(scapy_ns(src="::", slla=False))
    assert ns is not None
    p = Ether(f.build_na_reply(ns, f.mac_bytes(OUR_MAC), ip6(LL6)))
    assert p.dst == "33:33:00:00:00:01" and p[IPv6].dst == "ff02::1"
    assert p[ICMPv6ND_NA].S == 0


def test_unsolicited_na() -> None:
    na = f.build_unsolicited_na(f.mac_bytes(OUR_MAC), ip6(LL6), ip6(VIP6))
    p = Ether(na)
    assert p.dst == "33:33:00:00:00:01" and p[IPv6].dst == "ff02::1"
    a = p[ICMPv6ND_NA]
    assert (a.S, a.O, a.tgt) == (0, 1, VIP6)
    rebuilt = Ether(na)
    del rebuilt[ICMPv6ND_NA].cksum
    assert bytes(rebuilt) == na


def test_ns_checksum_verified() -> None:
    frame = bytearray(scapy_ns())
    frame[-1] ^= 0xFF
    with pytest.raises(f.MalformedFrame):
        f.parse_neighbor_solicitation(bytes(frame))
    assert f.parse_neighbor_solicitation(bytes(frame), verify_checksum=False) is not None


def test_ns_rfc_checks() -> None:
    bad_hlim = bytes(Ether() / IPv6(src=CLIENT6, dst="ff02::1:ff00:c8", hlim=64) / ICMPv6ND_NS(tgt=VIP6))
    with pytest.raises(f.MalformedFrame):
        f.parse_neighbor_solicitation(bad_hlim)
    mcast_tgt = bytes(Ether() / IPv6(src=CLIENT6, dst="ff02::1", hlim=255) / ICMPv6ND_NS(tgt="ff02::1"))
    with pytest.raises(f.MalformedFrame):
        f.parse_neighbor_solicitation(mcast_tgt)
    zero_opt = bytearray(scapy_ns())
    zero_opt[-7] = 0  # option length 0
    with pytest.raises(f.MalformedFrame):
        f.parse_neighbor_solicitation(bytes(zero_opt), verify_checksum=False)
    with pytest.raises(f.MalformedFrame):
        f.parse_neighbor_solicitation(scapy_ns()[:60])
    na = f.build_unsolicited_na(f.mac_bytes(OUR_MAC), ip6(LL6), ip6(VIP6))
    assert f.parse_neighbor_solicitation(na) is None


@given(st.binary(max_size=120))
def test_garbage_never_crashes(data: bytes) -> None:
    for parse in (f.parse_arp_request, f.parse_neighbor_solicitation):
        with contextlib.suppress(f.MalformedFrame):
            parse(data)


@given(st.integers(min_value=0, max_value=85), st.binary(min_size=1, max_size=4))
def test_corrupted_ns_never_crashes(pos: int, junk: bytes) -> None:
    frame = bytearray(scapy_ns())
    frame[pos : pos + len(junk)] = junk
    with contextlib.suppress(f.MalformedFrame):
        f.parse_neighbor_solicitation(bytes(frame))


# -- who gets an answer (issue 13, NDP/ARP strictness): tables on the pure predicates --------------

OUR = f.mac_bytes(OUR_MAC)


def who_has(eth_src: str = CLIENT_MAC, eth_dst: str = "ff:ff:ff:ff:ff:ff", hwsrc: str = CLIENT_MAC,
            psrc: str = "172.18.0.9", target: str = VIP) -> bytes:
    return bytes(Ether(src=eth_src, dst=eth_dst) / ARP(op=1, hwsrc=hwsrc, psrc=psrc, pdst=target))


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        pytest.param(who_has(), True, id="ordinary"),
        pytest.param(who_has(eth_dst=OUR_MAC), True, id="unicast-to-us"),
        pytest.param(who_has(psrc="0.0.0.0"), True, id="rfc5227-probe-is-defended"),
        pytest.param(who_has(eth_dst="02:00:00:00:00:bb"), False, id="unicast-to-another"),
        pytest.param(who_has(hwsrc="01:00:5e:00:00:01"), False, id="multicast-sender-mac"),
        pytest.param(who_has(eth_src="01:00:5e:00:00:01"), False, id="multicast-ethernet-source"),
        pytest.param(who_has(hwsrc="00:00:00:00:00:00"), False, id="zero-sender-mac"),
        pytest.param(who_has(hwsrc=OUR_MAC), False, id="our-own-mac"),
        pytest.param(who_has(psrc="255.255.255.255"), False, id="broadcast-sender-ip"),
        pytest.param(who_has(psrc="224.0.0.1"), False, id="multicast-sender-ip"),
        pytest.param(who_has(psrc="239.255.255.250"), False, id="multicast-sender-ip-top"),
        pytest.param(who_has(psrc="240.0.0.1"), False, id="reserved-sender-ip"),
        pytest.param(who_has(psrc="127.0.0.1"), False, id="loopback-sender-ip"),
        pytest.param(who_has(psrc=VIP), False, id="someone-elses-gratuitous-arp"),
        pytest.param(who_has(psrc="223.255.255.255"), True, id="last-unicast-address"),
    ],
)
def test_arp_answerable(frame: bytes, answer: bool) -> None:
    assert f.arp_answerable(frame, OUR) is answer


def ns_frame(src: str = CLIENT6, dst: str | None = None, eth_src: str = CLIENT_MAC,
             eth_dst: str | None = None, slla: str | None = CLIENT_MAC, target: str = VIP6) -> bytes:
    group = str(ipaddress.IPv6Address(f.solicited_node_multicast(ip6(target))))
    dst = dst or group
    eth_dst = eth_dst or f.mac_str(f.ipv6_multicast_mac(ip6(group)))
    pkt = Ether(src=eth_src, dst=eth_dst) / IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NS(tgt=target)
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=slla)
    return bytes(pkt)


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        pytest.param(ns_frame(), True, id="address-resolution"),
        pytest.param(ns_frame(dst=VIP6, eth_dst=OUR_MAC), True, id="unicast-nud"),
        pytest.param(ns_frame(slla=None), True, id="no-slla"),
        pytest.param(ns_frame(src="::", slla=None), True, id="dad-is-defended"),
        pytest.param(ns_frame(dst="ff02::1"), False, id="to-all-nodes"),
        pytest.param(ns_frame(dst=CLIENT6, eth_dst=OUR_MAC), False, id="ip-dest-not-target"),
        pytest.param(ns_frame(eth_dst="33:33:00:00:00:01"), False, id="ethernet-dest-all-nodes"),
        pytest.param(ns_frame(dst=VIP6, eth_dst="02:00:00:00:00:bb"), False, id="unicast-to-another"),
        pytest.param(ns_frame(eth_src="33:33:00:00:00:01"), False, id="multicast-ethernet-source"),
        pytest.param(ns_frame(eth_src="00:00:00:00:00:00"), False, id="zero-ethernet-source"),
        pytest.param(ns_frame(eth_src=OUR_MAC), False, id="our-own-frame"),
        pytest.param(ns_frame(slla="33:33:00:00:00:01"), False, id="multicast-slla"),
        pytest.param(ns_frame(slla="00:00:00:00:00:00"), False, id="zero-slla"),
        pytest.param(ns_frame(slla=OUR_MAC), False, id="slla-is-ours"),
    ],
)
def test_ns_answerable(frame: bytes, answer: bool) -> None:
    ns = f.parse_neighbor_solicitation(frame)
    assert ns is not None
    assert f.ns_answerable(ns, OUR) is answer


@pytest.mark.parametrize("src", ["ff02::1", "ff05::2", "ff02::1:ff00:c8"])
def test_ns_from_a_multicast_source_is_malformed(src: str) -> None:
    """RFC 4291 2.7: a multicast address is never a source."""
    with pytest.raises(f.MalformedFrame, match="source is multicast"):
        f.parse_neighbor_solicitation(ns_frame(src=src))
