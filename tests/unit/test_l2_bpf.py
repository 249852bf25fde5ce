"""The hand-assembled BPF programs, run through the small interpreter in bpf.py."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether

from lbspeaker.l2 import bpf

VIP = "172.18.255.200"


def ip4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def arp(op: int = 1, pdst: str = VIP) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=op, psrc="172.18.0.9", pdst=pdst))


def test_generic_arp_filter() -> None:
    prog = bpf.arp_request_filter(None)
    assert bpf.run_filter(prog, arp()) == bpf.SNAPLEN
    assert bpf.run_filter(prog, arp(pdst="10.0.0.1")) == bpf.SNAPLEN
    assert bpf.run_filter(prog, arp(op=2)) == 0
    assert bpf.run_filter(prog, arp(), pkttype=bpf.PACKET_OUTGOING) == 0
    assert bpf.run_filter(prog, bytes(Ether() / IPv6())) == 0


def test_arp_filter_with_owned_ips() -> None:
    owned = [ip4(VIP), ip4("172.18.255.201"), ip4("10.1.2.3")]
    prog = bpf.arp_request_filter(owned)
    for ip in (VIP, "172.18.255.201", "10.1.2.3"):
        assert bpf.run_filter(prog, arp(pdst=ip)) == bpf.SNAPLEN
    assert bpf.run_filter(prog, arp(pdst="172.18.255.202")) == 0
    assert bpf.run_filter(prog, arp(op=2, pdst=VIP)) == 0
    assert bpf.run_filter(prog, arp(pdst=VIP), pkttype=bpf.PACKET_OUTGOING) == 0
    assert bpf.run_filter(prog, arp(pdst=VIP)[:40]) == 0  # truncated: out-of-bounds load drops


def test_empty_owned_drops_everything() -> None:
    prog = bpf.arp_request_filter([])
    assert bpf.run_filter(prog, arp()) == 0


def test_many_ips_fall_back_to_generic() -> None:
    many = [struct.pack("!I", 0x0A000000 + i) for i in range(bpf.MAX_FILTER_IPS + 1)]
    assert bpf.arp_request_filter(many) == bpf.arp_request_filter(None)
    at_limit = bpf.arp_request_filter(many[: bpf.MAX_FILTER_IPS])
    bpf.pack_program(at_limit)  # jump offsets fit in 8 bits
    assert bpf.run_filter(at_limit, arp(pdst="10.0.0.199")) == bpf.SNAPLEN
    assert bpf.run_filter(at_limit, arp(pdst="10.0.0.200")) == 0


@given(st.sets(st.integers(min_value=0, max_value=2**32 - 1), max_size=40), st.integers(0, 2**32 - 1))
def test_arp_filter_matches_set_membership(owned: set[int], probe: int) -> None:
    owned_b = [struct.pack("!I", x) for x in owned]
    prog = bpf.arp_request_filter(owned_b)
    target = str(ipaddress.IPv4Address(probe))
    expected = bpf.SNAPLEN if probe in owned else 0
    assert bpf.run_filter(prog, arp(pdst=target)) == expected


def test_ns_filter() -> None:
    prog = bpf.neighbor_solicitation_filter()
    ns = bytes(Ether() / IPv6(src="fe80::1", dst="ff02::1:ff00:c8", hlim=255) / ICMPv6ND_NS(tgt="fc00::c8"))
    assert bpf.run_filter(prog, ns) == bpf.SNAPLEN
    assert bpf.run_filter(prog, ns, pkttype=bpf.PACKET_OUTGOING) == 0
    na = bytes(Ether() / IPv6() / ICMPv6ND_NA(tgt="fc00::c8"))
    assert bpf.run_filter(prog, na) == 0
    echo = bytes(Ether() / IPv6() / ICMPv6EchoRequest())
    assert bpf.run_filter(prog, echo) == 0
    assert bpf.run_filter(prog, arp()) == 0


def test_pack_program_layout_and_range() -> None:
    raw = bpf.pack_program([(bpf.RET_K, 0, 0, 0xFFFF)])
    assert len(raw) == 8 and raw == struct.pack("HBBI", 6, 0, 0, 0xFFFF)
    with pytest.raises(ValueError):
        bpf.pack_program([(bpf.JEQ_K, 300, 0, 1)])
