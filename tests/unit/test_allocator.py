"""Allocator rules as tables (several borrowed from MetalLB's allocator_test.go)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.controller.allocator import (
    Allocator,
    Pool,
    Reason,
    ServiceRequest,
    _FreeSet,
    accept_pools,
    is_buggy_ip,
    pool_covers,
    pool_overlaps,
)


def pool(name: str, *addresses: str, **kw: Any) -> Pool:
    return Pool(name=name, ranges=tuple(parse_address_range(a) for a in addresses), **kw)


def req(key: str, **kw: Any) -> ServiceRequest:
    ns = key.split("/")[0] if "/" in key else "default"
    return ServiceRequest(key=key, namespace=ns, **kw)


def ports(*specs: str) -> tuple[tuple[str, int], ...]:
    out = []
    for spec in specs:
        proto, _, port = spec.partition("/")
        out.append((proto.upper(), int(port)))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# MetalLB TestAssignment: requested IPs, buggy IPs, sharing rules (IPv4 and IPv6)

ASSIGN_STEPS: list[tuple[str, str, str, tuple[tuple[str, int], ...], str | None, str | None, str]] = [
    # desc, svc, ip ("" = release), ports, sharing key, backend key, expected reason ("" = ok)
    ("assign s1", "s1", "1.2.3.4", (), None, None, ""),
    ("s1 idempotent reassign", "s1", "1.2.3.4", (), None, None, ""),
    ("s2 can't grab s1's IP", "s2", "1.2.3.4", (), None, None, Reason.IP_IN_USE),
    ("s2 can get the other IP", "s2", "1.2.3.5", (), None, None, ""),
    ("s1 now can't grab s2's IP", "s1", "1.2.3.5", (), None, None, Reason.IP_IN_USE),
    ("s1 frees its IP", "s1", "", (), None, None, ""),
    ("s2 can grab s1's former IP", "s2", "1.2.3.4", (), None, None, ""),
    ("s1 can now grab s2's former IP", "s1", "1.2.3.5", (), None, None, ""),
    ("s3 cannot grab a 0 buggy IP", "s3", "1.2.4.0", (), None, None, Reason.IP_AVOIDED),
    ("s3 cannot grab a 255 buggy IP", "s3", "1.2.4.255", (), None, None, Reason.IP_AVOIDED),
    ("s3 can grab another IP in that pool", "s3", "1.2.4.254", (), None, None, ""),
    ("s4 takes an IP, with sharing", "s4", "1.2.4.3", ports("tcp/80"), "sharing", "backend", ""),
    ("s4 changes its sharing key in place", "s4", "1.2.4.3", ports("tcp/80"), "share", "backend", ""),
    ("s3 can't share with s4 (port conflict)", "s3", "1.2.4.3", ports("tcp/80"), "share", "backend",
     Reason.PORT_CONFLICT),
    ("s3 can't share with s4 (wrong sharing key)", "s3", "1.2.4.3", ports("tcp/443"), "othershare",
     "backend", Reason.SHARING_KEY_MISMATCH),
    ("s3 can't share with s4 (wrong backend key)", "s3", "1.2.4.3", ports("tcp/443"), "share",
     "otherbackend", Reason.BACKEND_MISMATCH),
    ("s3 takes the same IP as s4", "s3", "1.2.4.3", ports("tcp/443"), "share", "backend", ""),
    ("s3 can change its ports while keeping the same IP", "s3", "1.2.4.3", ports("udp/53"), "share",
     "backend", ""),
    ("s3 can't change its sharing key while keeping the same IP", "s3", "1.2.4.3", ports("tcp/443"),
     "othershare", "backend", Reason.SHARING_KEY_MISMATCH),
    ("s3 can't change its backend key while keeping the same IP", "s3", "1.2.4.3", ports("tcp/443"),
     "share", "otherbackend", Reason.BACKEND_MISMATCH),
    ("s4 takes s3's former IP", "s4", "1.2.4.254", (), None, None, ""),
]


def _v6(step: tuple[Any, ...]) -> tuple[Any, ...]:
    mapping = {"1.2.3.4": "1000::4", "1.2.3.5": "1000::5", "1.2.4.254": "1000::4:ff", "1.2.4.3": "1000::4:3"}
    return (step[0], step[1], mapping.get(step[2], step[2]), *step[3:])


V6_STEPS = [_v6(s) for s in ASSIGN_STEPS if s[2] not in ("1.2.4.0", "1.2.4.255")]


@pytest.mark.parametrize("steps", [ASSIGN_STEPS, V6_STEPS], ids=["ipv4", "ipv6"])
def test_metallb_assignment_table(steps: list[tuple[Any, ...]]) -> None:
    alloc = Allocator([
        pool("test", "1.2.3.4/31", "1000::4/127"),
        pool("test2", "1.2.4.0/24", "1000::4:0/120", avoid_buggy_ips=True),
    ])
    for desc, svc, ip, prts, share, backend, want in steps:
        if not ip:
            alloc.release(svc)
            continue
        before = alloc.assigned(svc)
        fam = 6 if ":" in ip else 4
        r = alloc.allocate(req(svc, families=(fam,), requested_ips=(ip,), ports=prts, sharing_key=share,
                               backend_key=backend))
        if want:
            assert not r.ok, desc
            assert r.reason == want, (desc, r.message)
            # state unchanged: the service keeps what it had
            assert alloc.assigned(svc) == before, desc
            assert r.ips == (before.ips if before else ()), desc
        else:
            assert r.ok, (desc, r.message)
            assert r.ips == (ip,), desc


# --------------------------------------------------------------------------------------------
# MetalLB TestPoolAllocation / TestAllocation: exhaustion, release, sharing when full


@pytest.mark.parametrize("fam", [4, 6])
def test_metallb_pool_allocation_table(fam: int) -> None:
    alloc = Allocator([
        pool("not_this_one", "192.168.0.0/16", "fc00::1:0/112"),
        pool("test", "1.2.3.4/31", "1.2.3.10/31", "1000::/127", "2000::/127"),
        pool("test2", "10.20.30.0/24", "fc00::2:0/120"),
    ])
    valid = {4: {"1.2.3.4", "1.2.3.5", "1.2.3.10", "1.2.3.11"},
             6: {"1000::", "1000::1", "2000::", "2000::1"}}[fam]

    def get(svc: str, **kw: Any) -> Any:
        return alloc.allocate(req(svc, families=(fam,), requested_pool="test", **kw))

    got = [get(s) for s in ("s1", "s2", "s3", "s4")]
    assert all(r.ok for r in got)
    assert {r.ips[0] for r in got} == valid
    assert [r.ips[0] for r in got] == sorted(valid, key=lambda t: int(ipaddress.ip_address(t)))
    assert get("s5").reason == Reason.POOL_EXHAUSTED
    assert get("s6").reason == Reason.POOL_EXHAUSTED
    alloc.release("s1")
    assert get("s5").ips == got[0].ips            # lowest free again: s1's former IP
    assert get("s6").reason == Reason.POOL_EXHAUSTED
    alloc.release("s5")
    r5 = get("s5", ports=ports("tcp/80"), sharing_key="share")
    r6 = get("s6", ports=ports("tcp/443"), sharing_key="share")
    assert r5.ok and r6.ok and r5.ips == r6.ips
    assert alloc.services_on(r5.ips[0]) == ["s5", "s6"]
    # same key but same port: no room
    assert get("s7", ports=ports("tcp/443"), sharing_key="share").reason == Reason.POOL_EXHAUSTED
    r = alloc.allocate(req("s8", families=(fam,), requested_pool="nonexistentpool"))
    assert r.reason == Reason.POOL_NOT_FOUND and "nonexistentpool" in r.message


def test_shared_ip_stays_until_last_holder_releases() -> None:
    alloc = Allocator([pool("p", "10.0.0.1-10.0.0.2")])
    a = alloc.allocate(req("a", sharing_key="k", ports=ports("tcp/80")))
    b = alloc.allocate(req("b", sharing_key="k", ports=ports("tcp/81")))
    assert a.ips == b.ips == ("10.0.0.1",)
    assert alloc.pool_stats("p") == (1, 1, 0, 0)
    alloc.release("a")
    assert alloc.pool_stats("p") == (1, 1, 0, 0)
    assert alloc.allocate(req("c")).ips == ("10.0.0.2",)
    alloc.release("b")
    assert alloc.pool_stats("p") == (1, 1, 0, 0)
    assert alloc.allocate(req("d")).ips == ("10.0.0.1",)


def test_sharing_picks_lowest_compatible_or_free() -> None:
    alloc = Allocator([pool("p", "10.0.0.0/29")])
    assert alloc.allocate(req("a")).ips == ("10.0.0.0",)
    assert alloc.allocate(req("b", sharing_key="k", ports=ports("tcp/80"))).ips == ("10.0.0.1",)
    assert alloc.allocate(req("c", sharing_key="other", ports=ports("tcp/80"))).ips == ("10.0.0.2",)
    # same key, different port: joins b
    assert alloc.allocate(req("d", sharing_key="k", ports=ports("udp/80"))).ips == ("10.0.0.1",)
    # same key, port clash: next free
    assert alloc.allocate(req("e", sharing_key="k", ports=ports("tcp/80"))).ips == ("10.0.0.3",)
    # same key, ETP Local with another selector: cannot join b/d/e
    assert alloc.allocate(req("f", sharing_key="k", ports=ports("tcp/90"), backend_key="app=x")).ips \
        == ("10.0.0.4",)


def test_port_index_follows_port_changes_and_releases() -> None:
    """The per-IP port index (what makes sharing linear) agrees with the holders at every step."""
    alloc = Allocator([pool("p", "10.0.0.1-10.0.0.3")])
    assert alloc.allocate(req("a", sharing_key="k", ports=ports("tcp/80", "tcp/443"))).ips == ("10.0.0.1",)
    assert alloc.allocate(req("b", sharing_key="k", ports=ports("tcp/81"))).ips == ("10.0.0.1",)
    clash = alloc.allocate(req("x", sharing_key="k", ports=ports("tcp/443"), requested_ips=("10.0.0.1",)))
    assert clash.reason == Reason.PORT_CONFLICT
    assert "port TCP/443 is already used on 10.0.0.1 by a" in clash.message
    # both a and b clash with x: the message names the first by name, with a's clashing ports only
    both = alloc.allocate(req("x", sharing_key="k", ports=ports("tcp/81", "tcp/80"),
                              requested_ips=("10.0.0.1",)))
    assert both.reason == Reason.PORT_CONFLICT
    assert "port TCP/80 is already used on 10.0.0.1 by a;" in both.message
    # a moves off 443 (same IP, new ports): 443 is free on the IP again
    assert alloc.allocate(req("a", sharing_key="k", ports=ports("tcp/80"))).ips == ("10.0.0.1",)
    assert alloc.allocate(req("x", sharing_key="k", ports=ports("tcp/443"))).ips == ("10.0.0.1",)
    # b's release frees 81; a restore records ports as well
    alloc.release("b")
    assert alloc.allocate(req("y", sharing_key="k", ports=ports("tcp/81"))).ips == ("10.0.0.1",)
    fresh = Allocator([pool("p", "10.0.0.1-10.0.0.3")])
    for key, p in (("a", "tcp/80"), ("x", "tcp/443"), ("y", "tcp/81")):
        assert fresh.restore(key, ["10.0.0.1"], req(key, sharing_key="k", ports=ports(p))).ok
    assert fresh.allocate(req("z", sharing_key="k", ports=ports("tcp/81"))).ips == ("10.0.0.2",)
    assert fresh.allocate(req("w", sharing_key="k", ports=ports("tcp/82"))).ips == ("10.0.0.1",)
    assert fresh.services_on("10.0.0.1") == ["a", "w", "x", "y"]


@pytest.mark.parametrize(("cidr", "first", "capacity"), [
    ("0.0.0.0/0", "0.0.0.1", (2**32 - 1, 0)),
    ("0.0.0.0/30", "0.0.0.1", (3, 0)),
    ("0.0.0.0-0.0.0.0", None, (0, 0)),
    ("::/0", "::1", (0, 2**128 - 1)),
    ("::/127", "::1", (0, 1)),
    ("10.0.0.0/30", "10.0.0.0", (4, 0)),   # a network address is handed out, as MetalLB does
])
def test_unspecified_address_is_never_handed_out(cidr: str, first: str | None,
                                                 capacity: tuple[int, int]) -> None:
    fam = 6 if ":" in cidr else 4
    alloc = Allocator([pool("p", cidr)])
    assert alloc.pool_capacity("p") == capacity
    got = alloc.allocate(req("a", families=(fam,)))
    assert (got.ips[0] if got.ok else None) == first
    unspecified = "::" if fam == 6 else "0.0.0.0"
    asked = alloc.allocate(req("b", families=(fam,), requested_ips=(unspecified,)))
    assert asked.reason == Reason.INVALID_REQUEST and "unspecified address" in asked.message


# --------------------------------------------------------------------------------------------
# avoidBuggyIPs, lowest-free-first, stats


def test_is_buggy_ip_rule() -> None:
    v = int(ipaddress.ip_address("10.1.2.0"))
    assert is_buggy_ip(4, v) and is_buggy_ip(4, v + 255) and not is_buggy_ip(4, v + 1)
    assert not is_buggy_ip(6, 0) and not is_buggy_ip(6, 255)


@pytest.mark.parametrize(
    ("addresses", "avoid", "expected_first", "capacity"),
    [
        (("10.0.0.0/24",), True, "10.0.0.1", 254),
        (("10.0.0.0/24",), False, "10.0.0.0", 256),
        (("10.0.0.0/23",), True, "10.0.0.1", 508),
        (("10.0.0.0/16",), True, "10.0.0.1", 65536 - 512),
        # a range crossing a /24 boundary loses x.255 and x+1.0 inside it, not only at its edges
        (("10.0.0.250-10.0.1.5",), True, "10.0.0.250", 12 - 2),
        (("10.0.0.255-10.0.1.1",), True, "10.0.1.1", 1),
        (("10.0.0.255-10.0.1.0",), True, None, 0),
        (("10.0.0.64/26",), True, "10.0.0.64", 64),
        (("10.0.0.192/26",), True, "10.0.0.192", 63),
        (("fd00::/120",), True, "fd00::", 256),      # IPv6 is never "buggy"
    ],
)
def test_avoid_buggy_ips(addresses: tuple[str, ...], avoid: bool, expected_first: str | None,
                         capacity: int) -> None:
    p = pool("p", *addresses, avoid_buggy_ips=avoid)
    alloc = Allocator([p])
    fam = 6 if ":" in addresses[0] else 4
    cap4, cap6 = alloc.pool_capacity("p")
    assert (cap4 if fam == 4 else cap6) == capacity
    r = alloc.allocate(req("a", families=(fam,)))
    if expected_first is None:
        assert r.reason == Reason.POOL_EXHAUSTED
    else:
        assert r.ips == (expected_first,)


def test_avoid_buggy_skips_across_boundary_and_exhausts_exactly() -> None:
    alloc = Allocator([pool("p", "10.0.0.253-10.0.1.2", avoid_buggy_ips=True)])
    got = [alloc.allocate(req(f"s{i}")).ips[0] for i in range(4)]
    assert got == ["10.0.0.253", "10.0.0.254", "10.0.1.1", "10.0.1.2"]
    assert alloc.allocate(req("s9")).reason == Reason.POOL_EXHAUSTED
    assert alloc.pool_stats("p") == (4, 0, 0, 0)


def test_lowest_free_first_across_ranges_and_after_release() -> None:
    alloc = Allocator([pool("p", "10.0.5.0/30", "10.0.1.0/30")])
    got = [alloc.allocate(req(f"s{i}")).ips[0] for i in range(8)]
    assert got == [f"10.0.1.{i}" for i in range(4)] + [f"10.0.5.{i}" for i in range(4)]
    alloc.release("s5")
    alloc.release("s2")
    assert alloc.allocate(req("n1")).ips == ("10.0.1.2",)
    assert alloc.allocate(req("n2")).ips == ("10.0.5.1",)


def test_free_set_split_and_merge() -> None:
    fs = _FreeSet(4, [(0, 9)], False, [3, 7])
    assert list(zip(fs.starts, fs.ends, strict=True)) == [(0, 2), (4, 6), (8, 9)]
    fs.give(3)
    assert list(zip(fs.starts, fs.ends, strict=True)) == [(0, 6), (8, 9)]
    fs.take(0)
    fs.take(9)
    fs.take(5)
    assert list(zip(fs.starts, fs.ends, strict=True)) == [(1, 4), (6, 6), (8, 8)]
    fs.give(7)
    assert list(zip(fs.starts, fs.ends, strict=True)) == [(1, 4), (6, 8)]
    assert fs.free_usable == 7 and fs.lowest() == 1 and fs.contains(8) and not fs.contains(5)


def test_huge_ipv6_pool_is_not_materialised() -> None:
    alloc = Allocator([pool("v6", "2001:db8::/32")])
    ips = [alloc.allocate(req(f"s{i}", families=(6,))).ips[0] for i in range(3)]
    assert ips == ["2001:db8::", "2001:db8::1", "2001:db8::2"]
    assert alloc.pool_stats("v6") == (0, 0, 3, 2**96 - 3)
    r = alloc.allocate(req("x", families=(6,), requested_ips=("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",)))
    assert r.ok
    assert alloc.pool_stats("v6").available_v6 == 2**96 - 4


# --------------------------------------------------------------------------------------------
# pools: priorities, selectors, autoAssign, requested pool


def test_pinned_pools_by_priority_then_plain_autoassign_pools() -> None:
    alloc = Allocator([
        pool("plain", "10.0.0.0/30"),
        pool("low", "10.1.0.0/31", namespaces=("team",), priority=20),
        pool("high", "10.2.0.0/31", namespaces=("team",), priority=10),
        pool("noprio", "10.3.0.0/31", namespaces=("team",)),
        pool("manual", "10.4.0.0/30", auto_assign=False),
    ])
    got = [alloc.allocate(req(f"team/s{i}")) for i in range(9)]
    assert [r.pool for r in got] == ["high"] * 2 + ["low"] * 2 + ["noprio"] * 2 + ["plain"] * 3
    # other namespaces never see the pinned pools
    assert alloc.allocate(req("other/x")).pool == "plain"
    assert alloc.allocate(req("other/y")).reason == Reason.POOL_EXHAUSTED
    # autoAssign off: only on request
    assert alloc.allocate(req("other/z", requested_pool="manual")).ips == ("10.4.0.0",)


def test_priority_only_pool_matches_everyone_and_competes_with_pinned_pools() -> None:
    """serviceAllocation with only a priority: matches every Service and is ranked with the pools
    pinned to the Service (see docs/metallb-compat.md); plain pools stay last."""
    alloc = Allocator([
        pool("plain", "10.0.0.0/31"),
        pool("team", "10.1.0.0/32", namespaces=("team",), priority=20),
        pool("everyone", "10.2.0.0/32", priority=10),
        pool("everyone-late", "10.3.0.0/32", priority=30),
    ])
    assert [alloc.allocate(req(f"team/s{i}")).pool for i in range(4)] == [
        "everyone", "team", "everyone-late", "plain"]
    assert alloc.allocate(req("other/x")).pool == "plain"   # the priority pools are taken
    fresh = Allocator([pool("plain", "10.0.0.0/31"), pool("everyone", "10.2.0.0/32", priority=10)])
    assert fresh.allocate(req("other/x")).pool == "everyone"


def test_priority_zero_means_unset_and_ties_break_by_name() -> None:
    alloc = Allocator([
        pool("b", "10.2.0.0/32", namespaces=("ns",), priority=0),
        pool("a", "10.1.0.0/32", namespaces=("ns",)),
        pool("c", "10.3.0.0/32", namespaces=("ns",), priority=5),
    ])
    assert [alloc.allocate(req(f"ns/s{i}")).pool for i in range(3)] == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("pool_kw", "svc_ns", "svc_labels", "ns_labels", "allowed"),
    [
        ({"namespaces": ("a",)}, "a", {}, {}, True),
        ({"namespaces": ("a",)}, "b", {}, {}, False),
        ({"namespace_selectors": ({"matchLabels": {"team": "x"}},)}, "b", {}, {"team": "x"}, True),
        ({"namespace_selectors": ({"matchLabels": {"team": "x"}},)}, "b", {}, {"team": "y"}, False),
        ({"namespaces": ("a",), "namespace_selectors": ({"matchLabels": {"team": "x"}},)}, "b", {},
         {"team": "x"}, True),
        ({"service_selectors": ({"matchLabels": {"app": "web"}},)}, "b", {"app": "web"}, {}, True),
        ({"service_selectors": ({"matchLabels": {"app": "web"}},)}, "b", {"app": "db"}, {}, False),
        ({"service_selectors": ({"matchExpressions": [{"key": "app", "operator": "Exists"}]},)}, "b",
         {"app": "db"}, {}, True),
        # namespace AND service selectors both must hold
        ({"namespaces": ("a",), "service_selectors": ({"matchLabels": {"app": "web"}},)}, "a",
         {"app": "db"}, {}, False),
        ({"namespaces": ("a",), "service_selectors": ({"matchLabels": {"app": "web"}},)}, "b",
         {"app": "web"}, {}, False),
        ({"namespaces": ("a",), "service_selectors": ({"matchLabels": {"app": "web"}},)}, "a",
         {"app": "web"}, {}, True),
    ],
)
def test_service_allocation_selectors(pool_kw: dict[str, Any], svc_ns: str, svc_labels: dict[str, str],
                                      ns_labels: dict[str, str], allowed: bool) -> None:
    alloc = Allocator([pool("pinned", "10.0.0.0/30", **pool_kw)])
    base: dict[str, Any] = {"namespace": svc_ns, "labels": svc_labels, "namespace_labels": ns_labels}
    auto = alloc.allocate(ServiceRequest(key=f"{svc_ns}/auto", **base))
    asked = alloc.allocate(ServiceRequest(key=f"{svc_ns}/asked", requested_pool="pinned", **base))
    ip = alloc.allocate(ServiceRequest(key=f"{svc_ns}/ip", requested_ips=("10.0.0.3",), **base))
    if allowed:
        assert auto.pool == asked.pool == ip.pool == "pinned"
    else:
        assert auto.reason == Reason.NO_POOL_AVAILABLE
        assert asked.reason == ip.reason == Reason.POOL_NOT_ALLOWED
        assert "pinned" in asked.message
        assert alloc.pool_stats("pinned").assigned_v4 == 0


def test_pinned_pool_exhausted_falls_back_to_plain_pool() -> None:
    alloc = Allocator([pool("pin", "10.0.0.1/32", namespaces=("a",)), pool("plain", "10.9.0.1/32")])
    assert alloc.allocate(req("a/1")).pool == "pin"
    assert alloc.allocate(req("a/2")).pool == "plain"
    r = alloc.allocate(req("a/3"))
    assert r.reason == Reason.POOL_EXHAUSTED and "'pin'" in r.message and "'plain'" in r.message


# --------------------------------------------------------------------------------------------
# dual-stack


def dual_alloc() -> Allocator:
    return Allocator([
        pool("v4only", "10.0.0.0/31", priority=1),
        pool("v6only", "fd00::/127", priority=2),
        pool("dual", "10.1.0.0/31", "fd01::/127", priority=3),
    ])


@pytest.mark.parametrize(
    ("families", "policy", "want_ips", "want_pool"),
    [
        ((4,), "SingleStack", ("10.0.0.0",), "v4only"),
        ((6,), "SingleStack", ("fd00::",), "v6only"),
        ((4, 6), "SingleStack", ("10.0.0.0",), "v4only"),
        ((4, 6), "RequireDualStack", ("10.1.0.0", "fd01::"), "dual"),
        ((6, 4), "RequireDualStack", ("10.1.0.0", "fd01::"), "dual"),  # IPv4 first, as MetalLB
        ((4, 6), "PreferDualStack", ("10.1.0.0", "fd01::"), "dual"),
        ((6, 4), "PreferDualStack", ("10.1.0.0", "fd01::"), "dual"),
        ((4,), "PreferDualStack", ("10.0.0.0",), "v4only"),
    ],
)
def test_dual_stack_policies(families: tuple[int, ...], policy: str, want_ips: tuple[str, ...],
                             want_pool: str) -> None:
    r = dual_alloc().allocate(req("s", families=families, family_policy=policy))
    assert r.ok, r.message
    assert (r.ips, r.pool) == (want_ips, want_pool)


def test_prefer_dual_stack_falls_back_to_primary_then_secondary() -> None:
    alloc = Allocator([pool("v4", "10.0.0.0/32", priority=2), pool("v6", "fd00::/128", priority=1)])
    assert alloc.allocate(req("a", families=(4, 6), family_policy="PreferDualStack")).ips == ("10.0.0.0",)
    assert alloc.allocate(req("b", families=(4, 6), family_policy="PreferDualStack")).ips == ("fd00::",)
    r = alloc.allocate(req("c", families=(4, 6), family_policy="PreferDualStack"))
    assert r.reason == Reason.POOL_EXHAUSTED


def test_require_dual_stack_needs_one_pool_with_both() -> None:
    alloc = Allocator([pool("v4", "10.0.0.0/30"), pool("v6", "fd00::/126")])
    r = alloc.allocate(req("a", families=(4, 6), family_policy="RequireDualStack"))
    assert r.reason == Reason.FAMILY_NOT_OFFERED and "one pool" in r.message
    r = alloc.allocate(req("b", families=(6,)))
    assert r.ok
    alloc2 = Allocator([pool("v4", "10.0.0.0/30")])
    r = alloc2.allocate(req("c", families=(6,)))
    assert r.reason == Reason.FAMILY_NOT_OFFERED and "IPv6" in r.message


def test_prefer_dual_stack_gets_missing_family_added_later() -> None:
    alloc = Allocator([pool("p", "10.0.0.0/32", "fd00::/128")])
    assert alloc.allocate(req("x", families=(6,))).ips == ("fd00::",)
    r = alloc.allocate(req("a", families=(4, 6), family_policy="PreferDualStack"))
    assert r.ips == ("10.0.0.0",)
    alloc.release("x")
    r = alloc.allocate(req("a", families=(4, 6), family_policy="PreferDualStack"))
    assert r.ok and r.changed and r.ips == ("10.0.0.0", "fd00::")


@pytest.mark.parametrize(
    ("families", "policy", "ips", "ok"),
    [
        ((4,), "SingleStack", ("10.1.0.1",), True),
        ((4,), "SingleStack", ("fd01::1",), False),
        ((4, 6), "RequireDualStack", ("10.1.0.1",), False),
        ((4, 6), "RequireDualStack", ("fd01::1", "10.1.0.1"), True),
        ((4, 6), "PreferDualStack", ("fd01::1",), True),
        ((4,), "SingleStack", ("10.1.0.1", "10.1.0.0"), False),
        ((4,), "SingleStack", ("not-an-ip",), False),
        ((4, 6), "RequireDualStack", ("10.0.0.1", "fd01::1"), False),   # two pools
    ],
)
def test_requested_ips_family_rules(families: tuple[int, ...], policy: str, ips: tuple[str, ...],
                                    ok: bool) -> None:
    r = dual_alloc().allocate(req("s", families=families, family_policy=policy, requested_ips=ips))
    assert r.ok is ok, r.message
    if ok:
        order = {f: i for i, f in enumerate(families)}
        assert r.ips == tuple(sorted(ips, key=lambda t: order[6 if ":" in t else 4]))
    else:
        assert r.reason == Reason.INVALID_REQUEST and r.ips == ()


# --------------------------------------------------------------------------------------------
# bad input: clear answer, nothing disturbed


@pytest.mark.parametrize(
    ("kw", "reason", "fragment"),
    [
        ({"requested_ips": ("192.168.9.9",)}, Reason.IP_OUTSIDE_POOLS, "not inside any IPAddressPool"),
        ({"requested_ips": ("10.0.0.1",)}, Reason.IP_IN_USE, "does not allow sharing"),
        ({"requested_ips": ("10.0.0.1",), "sharing_key": "k"}, Reason.IP_IN_USE, "does not allow sharing"),
        ({"requested_ips": ("10.0.0.2",)}, Reason.IP_IN_USE, "set allow-shared-ip: 'k'"),
        ({"requested_ips": ("10.0.0.2",), "sharing_key": "z"}, Reason.SHARING_KEY_MISMATCH, "'k'"),
        ({"requested_ips": ("10.0.0.2",), "sharing_key": "k", "ports": ports("tcp/80")},
         Reason.PORT_CONFLICT, "TCP/80"),
        ({"requested_pool": "nope"}, Reason.POOL_NOT_FOUND, "does not exist"),
        ({"requested_ips": ("10.0.0.3",), "requested_pool": "other"}, Reason.POOL_MISMATCH, "'other'"),
        ({"families": (6,)}, Reason.FAMILY_NOT_OFFERED, "IPv6"),
        ({"requested_pool": "full"}, Reason.POOL_EXHAUSTED, "no free IPv4"),
        ({"family_policy": "Whatever"}, Reason.INVALID_REQUEST, "ipFamilyPolicy"),
        ({"families": (4,), "family_policy": "RequireDualStack"}, Reason.INVALID_REQUEST, "RequireDualStack"),
    ],
)
def test_bad_input_reasons_and_nothing_disturbed(kw: dict[str, Any], reason: str, fragment: str) -> None:
    alloc = Allocator([pool("main", "10.0.0.1-10.0.0.3"), pool("other", "10.5.0.0/30"),
                       pool("full", "10.6.0.1/32", auto_assign=False)])
    assert alloc.allocate(req("ns/holder")).ips == ("10.0.0.1",)
    assert alloc.allocate(req("ns/sharer", sharing_key="k", ports=ports("tcp/80"))).ips == ("10.0.0.2",)
    assert alloc.allocate(req("ns/filler", requested_pool="full")).ok
    before = alloc.assignments()
    stats = {p: alloc.pool_stats(p) for p in alloc.pools()}
    r = alloc.allocate(req("ns/new", **kw))
    assert not r.ok
    assert r.reason == reason, r.message
    assert fragment in r.message, r.message
    assert r.ips == ()
    assert alloc.assignments() == before
    assert {p: alloc.pool_stats(p) for p in alloc.pools()} == stats


def test_no_pools_and_no_autoassign() -> None:
    assert Allocator().allocate(req("a")).reason == Reason.NO_POOLS
    alloc = Allocator([pool("manual", "10.0.0.0/30", auto_assign=False)])
    r = alloc.allocate(req("a"))
    assert r.reason == Reason.NO_POOL_AVAILABLE and "address-pool" in r.message


def test_changed_request_moves_or_keeps_old_ips_on_failure() -> None:
    alloc = Allocator([pool("a", "10.0.0.0/30"), pool("b", "10.1.0.0/30")])
    assert alloc.allocate(req("s")).ips == ("10.0.0.0",)
    # idempotent
    r = alloc.allocate(req("s"))
    assert r.ok and not r.changed and r.ips == ("10.0.0.0",)
    # pool annotation changed -> moved
    r = alloc.allocate(req("s", requested_pool="b"))
    assert r.ok and r.changed and r.ips == ("10.1.0.0",)
    assert alloc.pool_stats("a").assigned_v4 == 0
    # requested IP outside pools -> failure, keeps the current IP
    r = alloc.allocate(req("s", requested_ips=("192.0.2.1",)))
    assert not r.ok and r.reason == Reason.IP_OUTSIDE_POOLS and r.ips == ("10.1.0.0",)
    assert "keeps 10.1.0.0" in r.message
    assert alloc.assigned("s") is not None and alloc.assigned("s").ips == ("10.1.0.0",)  # type: ignore[union-attr]
    # requested IP inside -> moved
    r = alloc.allocate(req("s", requested_ips=("10.0.0.3",)))
    assert r.ok and r.ips == ("10.0.0.3",) and r.pool == "a"


def test_sharing_change_with_clash_moves_service() -> None:
    alloc = Allocator([pool("p", "10.0.0.0/30")])
    assert alloc.allocate(req("a", sharing_key="k", ports=ports("tcp/80"))).ips == ("10.0.0.0",)
    assert alloc.allocate(req("b", sharing_key="k", ports=ports("tcp/81"))).ips == ("10.0.0.0",)
    # b now wants port 80 too: it cannot stay, it moves to the next address
    r = alloc.allocate(req("b", sharing_key="k", ports=ports("tcp/80")))
    assert r.ok and r.changed and r.ips == ("10.0.0.1",)
    # a alone on its IP may change its sharing key in place
    r = alloc.allocate(req("a", sharing_key="other", ports=ports("tcp/80")))
    assert r.ok and not r.changed and r.ips == ("10.0.0.0",)


# --------------------------------------------------------------------------------------------
# configuration changes and restart


def test_set_pools_never_drops_ips_and_reports_orphans() -> None:
    alloc = Allocator([pool("a", "10.0.0.0/29"), pool("b", "10.1.0.0/30")])
    for i in range(4):
        alloc.allocate(req(f"s{i}"))
    alloc.allocate(req("t", requested_pool="b"))
    assert alloc.assignments()["s3"] == ("10.0.0.3",)
    report = alloc.set_pools([pool("a", "10.0.0.0/31")])   # shrink a, delete b
    assert report.orphaned == {"s2": ("10.0.0.2",), "s3": ("10.0.0.3",), "t": ("10.1.0.0",)}
    assert report.missing_pools == {"b": ("t",)}
    assert alloc.holders("b") == ["t"]
    assert alloc.holders("a") == ["s0", "s1", "s2", "s3"]
    assert alloc.pool_stats("a") == (2, 0, 0, 0)
    # orphans keep their IPs on re-allocation, flagged
    r = alloc.allocate(req("s3"))
    assert r.ok and not r.changed and r.orphaned and r.ips == ("10.0.0.3",)
    r = alloc.allocate(req("t", requested_pool="b"))
    assert r.ok and r.ips == ("10.1.0.0",)
    # growing the pool back: orphans are covered again and their IPs are not handed out twice
    report = alloc.set_pools([pool("a", "10.0.0.0/29")])
    assert report.orphaned == {"t": ("10.1.0.0",)}
    assert alloc.pool_stats("a") == (4, 4, 0, 0)
    assert alloc.allocate(req("new")).ips == ("10.0.0.4",)
    # released orphan outside every pool simply disappears
    assert alloc.release("t") == ("10.1.0.0",)
    assert alloc.holders("b") == []


def test_renamed_pool_reports_moved() -> None:
    alloc = Allocator([pool("old", "10.0.0.0/30")])
    alloc.allocate(req("s"))
    report = alloc.set_pools([pool("new", "10.0.0.0/30")])
    assert report.moved == {"s": ("old", "new")} and report.orphaned == {}
    assert alloc.assigned("s") is not None and alloc.assigned("s").pool == "new"  # type: ignore[union-attr]


def test_restore_accepts_ip_outside_pools_and_flags_conflicts() -> None:
    alloc = Allocator([pool("p", "10.0.0.0/30")])
    r = alloc.restore("a", ["10.0.0.2"], req("a"))
    assert r.ok and r.pool == "p" and not r.orphaned
    r = alloc.restore("gone", ["192.0.2.7"], req("gone"), pool="deleted")
    assert r.ok and r.orphaned and r.pool == "deleted" and r.warnings
    assert alloc.holders("deleted") == ["gone"]
    # a later allocate naming the deleted pool keeps it
    assert alloc.allocate(req("gone", requested_pool="deleted")).ips == ("192.0.2.7",)
    r = alloc.restore("b", ["10.0.0.2"], req("b"))
    assert not r.ok and r.reason == Reason.CONFLICT and "a" in r.message
    # shared restore is fine
    alloc.restore("c", ["10.0.0.1"], req("c", sharing_key="k", ports=ports("tcp/1")))
    assert alloc.restore("d", ["10.0.0.1"], req("d", sharing_key="k", ports=ports("tcp/2"))).ok
    assert alloc.allocate(req("e")).ips == ("10.0.0.0",)
    assert alloc.allocate(req("f")).ips == ("10.0.0.3",)


def test_overlaps_and_covers() -> None:
    a = pool("a", "10.0.0.0/24")
    b = pool("b", "10.0.0.128/25", "fd00::/64")
    c = pool("c", "10.0.1.0/24")
    d = pool("d", "fd00::1-fd00::5")
    assert pool_overlaps([a, b, c, d]) == [("a", "b"), ("b", "d")]
    accepted, rejected = accept_pools([a, b, c, d, pool("a", "10.9.0.0/24")])
    assert [p.name for p in accepted] == ["a", "c", "d"]
    assert set(rejected) == {"b", "a"}
    assert "overlaps pool 'a'" in rejected["b"]
    assert "defined twice" in rejected["a"]
    assert pool_covers(a, ["10.0.0.5", "10.0.1.5", "fd00::1", "junk"]) == ["10.0.0.5"]
    alloc = Allocator()
    report = alloc.set_pools([a, b])
    assert set(report.rejected) == {"b"} and alloc.pools() == ["a"]


def test_config_change_excluding_namespace_keeps_ip_with_warning() -> None:
    alloc = Allocator([pool("p", "10.0.0.0/30", namespaces=("a",))])
    assert alloc.allocate(req("a/x")).ips == ("10.0.0.0",)
    alloc.set_pools([pool("p", "10.0.0.0/30", namespaces=("b",))])
    r = alloc.allocate(req("a/x"))
    assert r.ok and not r.changed and r.ips == ("10.0.0.0",)
    assert r.warnings and "serves only namespaces ['b']" in r.warnings[0]
    assert alloc.allocate(req("b/y")).ips == ("10.0.0.1",)


def test_service_relabelled_out_of_pool_selectors_moves() -> None:
    gold = {"matchLabels": {"tier": "gold"}}
    alloc = Allocator([pool("gold", "10.0.1.0/30", service_selectors=(gold,)), pool("plain", "10.0.2.0/30")])
    assert alloc.allocate(req("a/x", labels={"tier": "gold"})).ips == ("10.0.1.0",)
    moved = alloc.allocate(req("a/x", labels={}))
    assert moved.ok and moved.changed and moved.ips == ("10.0.2.0",) and moved.pool == "plain"
    assert alloc.allocate(req("a/y", labels={"tier": "gold"})).ips == ("10.0.1.0",)  # freed
    # nowhere to go: the Service keeps its address and is told why
    only = Allocator([pool("gold", "10.0.1.0/30", service_selectors=(gold,))])
    assert only.allocate(req("a/x", labels={"tier": "gold"})).ips == ("10.0.1.0",)
    kept = only.allocate(req("a/x", labels={}))
    assert not kept.ok and kept.ips == ("10.0.1.0",)
    assert "no longer matches the serviceAllocation of pool 'gold'" in kept.message


def test_restore_order_does_not_matter_and_next_pick_is_stable() -> None:
    pools = [pool("p", "10.0.0.0/28", "fd00::/124")]
    alloc = Allocator(pools)
    reqs = [req(f"s{i}", families=(4, 6), family_policy="PreferDualStack",
                sharing_key="k" if i % 3 == 0 else None, ports=ports(f"tcp/{80 + i}")) for i in range(9)]
    for r in reqs:
        alloc.allocate(r)
    for r in reqs[::2]:
        alloc.release(r.key)
    state = alloc.assignments()
    live = [r for r in reqs if r.key in state]
    for order in (live, live[::-1], sorted(live, key=lambda r: state[r.key])):
        fresh = Allocator(pools)
        for r in order:
            assert fresh.restore(r.key, state[r.key], r).ok
        assert fresh.assignments() == state
        assert fresh.pool_stats("p") == alloc.pool_stats("p")
        probe = req("probe", families=(4, 6), family_policy="RequireDualStack")
        assert fresh.allocate(probe).ips == alloc.allocate(probe).ips
        alloc.release("probe")


def test_invalid_selector_and_rejected_pool_give_clear_failures() -> None:
    bad_selector = {"matchExpressions": [{"key": "a", "operator": "Gt"}]}
    bad = pool("bad", "10.0.0.0/30", service_selectors=(bad_selector,))
    alloc = Allocator([bad, pool("dup", "10.0.0.2/31")])
    r = alloc.allocate(req("s", requested_pool="bad"))
    assert r.reason == Reason.POOL_NOT_ALLOWED and "invalid serviceAllocation selector" in r.message
    r = alloc.allocate(req("s", requested_pool="dup"))
    assert r.reason == Reason.POOL_NOT_FOUND and "overlaps pool 'bad'" in r.message


def test_avoid_buggy_many_blocks_parked_and_restored_buggy_ip() -> None:
    alloc = Allocator([pool("p", "10.0.0.0/22", avoid_buggy_ips=True)])
    got = [alloc.allocate(req(f"s{i}")).ips[0] for i in range(4 * 254)]
    assert len(set(got)) == 4 * 254
    assert not any(ip.endswith((".0", ".255")) for ip in got)
    assert alloc.allocate(req("full")).reason == Reason.POOL_EXHAUSTED
    assert alloc.pool_stats("p") == (1016, 0, 0, 0)
    # a .0 address found in a status is accepted (with a warning), counted, never handed out again
    r = alloc.restore("old", ["10.0.1.0"], req("old"))
    assert r.ok and r.warnings and alloc.pool_stats("p") == (1017, 0, 0, 0)
    alloc.release("old")
    assert alloc.pool_stats("p") == (1016, 0, 0, 0)
    alloc.release("s300")
    assert alloc.allocate(req("again")).ips == (got[300],)
    assert alloc.allocate(req("full")).reason == Reason.POOL_EXHAUSTED
    # the restore-then-allocate path (bulk rebuild) agrees
    fresh = Allocator([pool("p", "10.0.0.0/22", avoid_buggy_ips=True)])
    for key, ips in alloc.assignments().items():
        fresh.restore(key, ips, req(key))
    assert fresh.pool_stats("p") == alloc.pool_stats("p")
    fresh.release("s0")
    assert fresh.allocate(req("n")).ips == ("10.0.0.1",)


def test_a_pool_refused_upstream_is_named_with_its_reason() -> None:
    """validate_pools keeps an invalid pool out of the allocator; a Service requesting it hears why."""
    alloc = Allocator([])
    alloc.set_pools([pool("main", "10.0.0.0/30")], {"second": "addresses overlap pool main"})
    r = alloc.allocate(req("ns/a", requested_pool="second"))
    assert r.reason == Reason.POOL_NOT_FOUND
    assert "'second' is not in use: addresses overlap pool main" in r.message
    r = alloc.allocate(req("ns/b", requested_pool="nope"))
    assert "does not exist" in r.message
    alloc.set_pools([pool("main", "10.0.0.0/30")])  # fixed (or deleted): no stale reason
    assert "does not exist" in alloc.allocate(req("ns/a", requested_pool="second")).message
