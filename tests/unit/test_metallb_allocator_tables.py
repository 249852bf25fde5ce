"""MetalLB's allocator test tables, ported to our API (issue 10).

Source: ``internal/allocator/allocator_test.go`` of metallb/metallb (the stored version, commit
bb2219b2, with the v0.16 API: ``Allocate``/``AllocateFromPool`` take an ipfamily, pools carry
``ServiceAllocations``, ``CountersForPool``), test by test:

* TestAssignment: ``Assign`` of explicit IPs (sharing, buggy IPs, dual-stack, pool pinned to a
  namespace and/or service selector) -> :func:`test_assignment`;
* TestPoolAllocation: ``AllocateFromPool`` (IPv4, IPv6, RequireDualStack, PreferDualStack) ->
  :func:`test_pool_allocation`;
* TestAllocation: ``Allocate`` over every autoAssign pool -> :func:`test_allocation`;
* TestBuggyIPs -> :func:`test_buggy_ips`;  TestConfigReload -> :func:`test_config_reload`;
* TestAutoAssign -> :func:`test_auto_assign`;  TestPoolCount -> :func:`test_pool_count`;
* TestPoolMetrics -> :func:`test_pool_metrics` (the counters; see "not ported" below).

MetalLB's tables are sequences (each row runs on the allocator the rows above it left). Here a
table is a list of ``pytest.param`` rows, and the test of row *i* replays rows 0..i-1 on a fresh
allocator, then checks row *i*: every row is its own test id, and a row can be an xfail.

How MetalLB's inputs map onto ours (adaptations, not differences):

* ``Assign(key, svc, ips, ports, sharingKey, backendKey)`` is ``allocate`` of a request whose
  ``requested_ips`` are the IPs (the loadBalancerIPs annotation); ``AllocateFromPool(..., pool)``
  is ``allocate`` with ``requested_pool`` (the address-pool annotation); ``Allocate`` is a plain
  ``allocate``; ``Unassign`` is ``release``; a sharing key "" is ``None``.
* The ipfamily argument plus the Service's ``ipFamilyPolicy`` become ``families`` and
  ``family_policy`` (see `FAMILIES`): IPv4 / IPv6 -> one family, SingleStack; DualStack -> both,
  RequireDualStack (MetalLB's ``Assign`` of two IPs ignores the policy, ours checks that the IPs
  fit the request, so those rows ask for both families); svcPreferDualStack -> PreferDualStack.
* MetalLB checks that an allocated IP is in a set of valid IPs; we check the same, plus the IP
  families the request gets and, with a requested pool, that the IPs come from it. Failures also
  name our machine-readable ``Reason`` and check that a failed call changed nothing.
* TestPoolAllocation's ``test-v4``, ``test-v6`` and ``test-dualstack`` repeat ranges of ``test``.
  MetalLB's configuration refuses overlapping pools, as ours does (`accept_pools`, checked in
  :func:`test_overlapping_pools_of_pool_allocation_are_refused`), so here they get ranges of their
  own: what those rows test (which families a PreferDualStack Service gets from a v4-only, a
  v6-only and a dual-stack pool) does not depend on the shared addresses.
* ``Pool(svc)`` (TestConfigReload) is ``assigned(key).pool``, "" when the Service holds nothing.
* ``poolCount`` and ``CountersForPool`` (TestPoolCount, TestPoolMetrics) are what the controller
  writes to the pool's status, ``PoolsAndAdvertisements.pool_counts`` (saturated at int64, like
  MetalLB), from ``pool_stats`` and ``pool_capacity``.

Not ported: TestPoolMetrics' ``countersChangedCallback`` count (our allocator has no callback;
the controller queues a pool status write after each allocation) and its Prometheus gauges
(``stats.poolActive``; ours are set from the same counts, `publish_pool_metrics`).

Differences from MetalLB that remain are ``xfail(strict=True)`` rows whose reason says why;
docs/metallb-compat.md lists them too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from _pytest.mark.structures import ParameterSet

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.controller.allocator import (
    Allocator,
    Pool,
    Reason,
    Result,
    ServiceRequest,
    accept_pools,
)
from lbspeaker.controller.pools import INT64_MAX, PoolsAndAdvertisements

SINGLE, PREFER, REQUIRE = "SingleStack", "PreferDualStack", "RequireDualStack"

# MetalLB's (Service template, ipfamily) -> our (spec.ipFamilies, ipFamilyPolicy)
FAMILIES: dict[str, tuple[tuple[int, ...], str]] = {
    "v4": ((4,), SINGLE),                 # svc, ipfamily.IPv4
    "v6": ((6,), SINGLE),                 # svc, ipfamily.IPv6
    "dual": ((4, 6), REQUIRE),            # svc or svcRequireDualStack, ipfamily.DualStack
    "prefer-v4": ((4,), PREFER),          # svcPreferDualStack, ipfamily.IPv4
    "prefer-v6": ((6,), PREFER),          # svcPreferDualStack, ipfamily.IPv6
    "prefer-dual": ((4, 6), PREFER),      # svcPreferDualStack, ipfamily.DualStack
}


def pool(name: str, *addresses: str, **kw: Any) -> Pool:
    return Pool(name=name, ranges=tuple(parse_address_range(a) for a in addresses), **kw)


def ports(spec: str) -> tuple[tuple[str, int], ...]:
    """MetalLB's ports("tcp/80", ...) as one string: "tcp/80 udp/53"."""
    out = []
    for item in spec.split():
        proto, _, port = item.partition("/")
        out.append((proto.upper(), int(port)))
    return tuple(out)


def team(value: str) -> tuple[Mapping[str, Any], ...]:
    """MetalLB's selector("team=<value>") as serviceSelectors."""
    return ({"matchLabels": {"team": value}},)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("'", "")).strip("-")


def row(section: str, desc: str, svc: str, marks: Any = (), **kw: Any) -> ParameterSet:
    """One row of a sequential table: (desc, service key, fields), id "<section>-<desc>"."""
    return pytest.param(desc, svc, kw, id=f"{section}-{slug(desc)}", marks=marks)


def indexed(rows: Sequence[ParameterSet]) -> list[ParameterSet]:
    """Parameters for "check row i after replaying the rows above it", with each row's id and marks."""
    return [pytest.param(i, id=r.id, marks=r.marks) for i, r in enumerate(rows)]


def replay(alloc: Allocator, rows: Sequence[ParameterSet], upto: int,
           apply: Callable[[Allocator, str, dict[str, Any]], Result | None]
           ) -> tuple[str, str, dict[str, Any], Any, Result | None]:
    """Run rows[:upto], then row `upto`; return its (desc, key, fields, assignment before, result)."""
    for r in rows[:upto]:
        apply(alloc, r.values[1], r.values[2])
    desc, key, kw = rows[upto].values
    before = alloc.assigned(key)
    return desc, key, kw, before, apply(alloc, key, kw)


def check_failure(alloc: Allocator, desc: str, key: str, before: Any, r: Result, want: str) -> None:
    assert not r.ok, f"{desc}: should have failed, got {r.ips}"
    assert r.reason == want, (desc, r.reason, r.message)
    assert alloc.assigned(key) == before, f"{desc}: a failed call changed the allocation"
    assert r.ips == (before.ips if before else ()), desc


def families_of(ips: Sequence[str]) -> set[int]:
    return {6 if ":" in ip else 4 for ip in ips}


# --- TestAssignment ------------------------------------------------------------------------------

ASSIGNMENT_POOLS = [
    pool("test", "1.2.3.4/31", "1000::4/127"),
    pool("test2", "1.2.4.0/24", "1000::4:0/120", avoid_buggy_ips=True),
    pool("test3", "1.2.5.0/24", "1000::5:0/120", avoid_buggy_ips=True, namespaces=("test-ns1",)),
    pool("test4", "1.2.6.0/24", "1000::6:0/120", avoid_buggy_ips=True, service_selectors=team("metallb")),
    pool("test5", "1.2.7.0/24", "1000::7:0/120", avoid_buggy_ips=True, priority=20,
         namespaces=("test-ns1",), service_selectors=team("metallb")),
    pool("test6", "1.2.8.0/24", "1000::9:0/120", avoid_buggy_ips=True, priority=20,
         namespaces=("test-ns2",), service_selectors=({"matchLabels": {"foo": "bar"}},)),
]


def _sharing_rows(section: str, ip: dict[str, str]) -> list[ParameterSet]:
    """The sharing rows of TestAssignment, once per family (`ip` names the addresses)."""
    s = section
    return [
        row(s, "s3 can grab another IP in that pool", "s3", ips=[ip["other"]]),
        row(s, "s4 takes an IP, with sharing", "s4", ips=[ip["shared"]], ports="tcp/80", share="sharing",
            backend="backend"),
        row(s, "s4 changes its sharing key in place", "s4", ips=[ip["shared"]], ports="tcp/80",
            share="share", backend="backend"),
        row(s, "s3 can't share with s4 (port conflict)", "s3", ips=[ip["shared"]], ports="tcp/80",
            share="share", backend="backend", want=Reason.PORT_CONFLICT),
        row(s, "s3 can't share with s4 (wrong sharing key)", "s3", ips=[ip["shared"]], ports="tcp/443",
            share="othershare", backend="backend", want=Reason.SHARING_KEY_MISMATCH),
        row(s, "s3 can't share with s4 (wrong backend key)", "s3", ips=[ip["shared"]], ports="tcp/443",
            share="share", backend="otherbackend", want=Reason.BACKEND_MISMATCH),
        row(s, "s3 takes the same IP as s4", "s3", ips=[ip["shared"]], ports="tcp/443", share="share",
            backend="backend"),
        row(s, "s3 can change its ports while keeping the same IP", "s3", ips=[ip["shared"]],
            ports="udp/53", share="share", backend="backend"),
        row(s, "s3 can't change its sharing key while keeping the same IP", "s3", ips=[ip["shared"]],
            ports="tcp/443", share="othershare", backend="backend", want=Reason.SHARING_KEY_MISMATCH),
        row(s, "s3 can't change its backend key while keeping the same IP", "s3", ips=[ip["shared"]],
            ports="tcp/443", share="share", backend="otherbackend", want=Reason.BACKEND_MISMATCH),
        row(s, "s4 takes s3's former IP", "s4", ips=[ip["other"]]),
    ]


def _take_rows(section: str, a: str, b: str) -> list[ParameterSet]:
    s = section
    return [
        row(s, "assign s1", "s1", ips=[a]),
        row(s, "s1 idempotent reassign", "s1", ips=[a]),
        row(s, "s2 can't grab s1's IP", "s2", ips=[a], want=Reason.IP_IN_USE),
        row(s, "s2 can get the other IP", "s2", ips=[b]),
        row(s, "s1 now can't grab s2's IP", "s1", ips=[b], want=Reason.IP_IN_USE),
        row(s, "s1 frees its IP", "s1", ips=[]),
        row(s, "s2 can grab s1's former IP", "s2", ips=[a]),
        row(s, "s1 can now grab s2's former IP", "s1", ips=[b]),
    ]


TEAM_METALLB = {"team": "metallb"}
ASSIGNMENT: list[ParameterSet] = [
    *_take_rows("v4", "1.2.3.4", "1.2.3.5"),
    row("v4", "s3 cannot grab a 0 buggy IP", "s3", ips=["1.2.4.0"], want=Reason.IP_AVOIDED),
    row("v4", "s3 cannot grab a 255 buggy IP", "s3", ips=["1.2.4.255"], want=Reason.IP_AVOIDED),
    *_sharing_rows("v4", {"other": "1.2.4.254", "shared": "1.2.4.3"}),
    # IPv6: the same, with IPv6 addresses (the buggy-IP rows do not apply)
    *_take_rows("v6", "1000::4", "1000::4:5"),
    *_sharing_rows("v6", {"other": "1000::4:ff", "shared": "1000::4:3"}),
    # dual-stack
    row("dual", "s2 frees its IP", "s2", ips=[]),
    row("dual", "ip dual-stack assign s1", "s1", ips=["1.2.3.4", "1000::4"]),
    row("dual", "ip dual-stack assign s1 from different pools", "s1", ips=["1.2.4.5", "1000::4"],
        want=Reason.INVALID_REQUEST),
    # pools pinned to namespaces and/or Services (serviceAllocation)
    row("pinned", "attempt to assign ip from pool pinned on same namespace", "s1", ns="test-ns1",
        ips=["1.2.5.10"]),
    row("pinned", "attempt to assign ip from pool pinned on different namespace", "s1",
        ns="testns-not-exist", ips=["1.2.5.10"], want=Reason.POOL_NOT_ALLOWED),
    row("pinned", "attempt to assign ip from pool pinned with same service label", "s1",
        ns="testns-not-exist", labels=TEAM_METALLB, ips=["1.2.6.10"]),
    row("pinned", "attempt to assign ip from pool pinned with different service label", "s1",
        ns="testns-not-exist", labels={"team": "red"}, ips=["1.2.6.10"], want=Reason.POOL_NOT_ALLOWED),
    row("pinned", "attempt to assign ip from pool pinned with namespace and service label", "s1",
        ns="test-ns1", labels=TEAM_METALLB, ips=["1.2.7.10"]),
    row("pinned", "attempt to assign ip from pool pinned with namespace and incompatible service label",
        "s1", ns="test-ns2", labels=TEAM_METALLB, ips=["1.2.8.10"], want=Reason.POOL_NOT_ALLOWED),
    row("pinned", "attempt to assign ip from pool pinned with service label and incompatible namespace",
        "s1", ns="testns-not-exist", labels={"foo": "bar"}, ips=["1.2.8.10"], want=Reason.POOL_NOT_ALLOWED),
]


def assign(alloc: Allocator, key: str, kw: dict[str, Any]) -> Result | None:
    """MetalLB's Assign(key, svc, ips, ports, sharingKey, backendKey); no IPs: Unassign."""
    ips = tuple(kw.get("ips", ()))
    if not ips:
        alloc.release(key)
        return None
    fams = families_of(ips)
    families, policy = FAMILIES["dual"] if len(fams) == 2 else ((fams.pop(),), SINGLE)
    return alloc.allocate(ServiceRequest(
        key=key, namespace=kw.get("ns", ""), labels=kw.get("labels", {}), families=families,
        family_policy=policy, requested_ips=ips, ports=ports(kw.get("ports", "")),
        sharing_key=kw.get("share"), backend_key=kw.get("backend")))


Op = Callable[[Allocator, str, dict[str, Any]], Result | None]


def outcome(alloc: Allocator, rows: Sequence[ParameterSet], upto: int,
            op: Op) -> tuple[str, str, dict[str, Any], Result] | None:
    """Replay the rows up to `upto` and check the outcome of the last one when it is a release or an
    expected failure (None: nothing more to check); else (desc, key, kw, result) of a success."""
    desc, key, kw, before, r = replay(alloc, rows, upto, op)
    if r is None:
        assert alloc.assigned(key) is None, desc
        return None
    if kw.get("want"):
        check_failure(alloc, desc, key, before, r, kw["want"])
        return None
    assert r.ok, (desc, r.reason, r.message)
    return desc, key, kw, r


@pytest.mark.parametrize("upto", indexed(ASSIGNMENT))
def test_assignment(upto: int) -> None:
    alloc = Allocator(ASSIGNMENT_POOLS)
    done = outcome(alloc, ASSIGNMENT, upto, assign)
    if done is None:
        return
    desc, key, kw, r = done
    assert r.ips == tuple(kw["ips"]), desc
    assert alloc.assigned(key) is not None and alloc.assigned(key).ips == tuple(kw["ips"]), desc


# --- TestPoolAllocation, TestAllocation, TestAutoAssign, TestBuggyIPs: allocations -----------------


def request(alloc: Allocator, key: str, kw: dict[str, Any]) -> Result | None:
    """MetalLB's Allocate / AllocateFromPool (with `pool`); `release`: Unassign."""
    if kw.get("release"):
        alloc.release(key)
        return None
    families, policy = FAMILIES[kw.get("fam", "v4")]
    return alloc.allocate(ServiceRequest(
        key=key, families=families, family_policy=policy, requested_pool=kw.get("pool"),
        ports=ports(kw.get("ports", "")), sharing_key=kw.get("share")))


def check_allocation(alloc: Allocator, rows: Sequence[ParameterSet], upto: int,
                     valid: Callable[[dict[str, Any], str], bool]) -> None:
    done = outcome(alloc, rows, upto, request)
    if done is None:
        return
    desc, _key, kw, r = done
    assert r.ips, desc
    bad = [ip for ip in r.ips if not valid(kw, ip)]
    assert not bad, f"{desc}: allocated unexpected IP(s) {bad}"
    assert families_of(r.ips) == set(FAMILIES[kw.get("fam", "v4")][0]), (desc, r.ips)
    if kw.get("pool"):
        assert r.pool == kw["pool"], desc


def _exhaust_rows(section: str, fam: str, pool_name: str | None, unit: str) -> list[ParameterSet]:
    """The rows every allocation table repeats per family: four fit, two do not, then sharing."""
    s, p = section, ({"pool": pool_name} if pool_name else {})
    return [
        *[row(s, f"s{i} gets {unit}", f"s{i}", fam=fam, **p) for i in range(1, 5)],
        row(s, f"s5 can't get {unit}", "s5", fam=fam, want=Reason.POOL_EXHAUSTED, **p),
        row(s, f"s6 can't get {unit}", "s6", fam=fam, want=Reason.POOL_EXHAUSTED, **p),
        row(s, f"s1 releases {unit}", "s1", release=True),
    ]


def _clear_rows(section: str) -> list[ParameterSet]:
    return [row(section, f"s{i} clear old addresses", f"s{i}", release=True) for i in range(1, 7)]


def _pool_allocation_family(section: str, fam: str, unit: str) -> list[ParameterSet]:
    s, p = section, {"pool": "test"}
    return [
        *_exhaust_rows(s, fam, "test", unit),
        row(s, f"s5 can now grab s1's former {unit}", "s5", fam=fam, **p),
        row(s, f"s6 still can't get {unit}", "s6", fam=fam, want=Reason.POOL_EXHAUSTED, **p),
        row(s, f"s5 unassigns in prep for enabling {unit} sharing", "s5", release=True),
        row(s, f"s5 enables {unit} sharing", "s5", fam=fam, ports="tcp/80", share="share", **p),
        row(s, f"s6 can get {unit} now, with sharing", "s6", fam=fam, ports="tcp/443", share="share", **p),
    ]


POOL_ALLOCATION_POOLS = [
    pool("not_this_one", "192.168.0.0/16", "fc00::1:0/112"),
    pool("test", "1.2.3.4/31", "1.2.3.10/31", "1000::/127", "2000::/127"),
    pool("test2", "10.20.30.0/24", "fc00::2:0/120"),
    # MetalLB gives these three the ranges of "test"; ours refuse overlaps (see the module docstring)
    pool("test-v4", "1.2.3.20/31", "1.2.3.30/31"),
    pool("test-v6", "1000::20/127", "2000::20/127"),
    pool("test-dualstack", "1.2.3.40/31", "1.2.3.50/31", "1000::40/127", "2000::40/127"),
]

POOL_ALLOCATION: list[ParameterSet] = [
    *_pool_allocation_family("v4", "v4", "an IPv4"),
    *_clear_rows("v4"),
    *_pool_allocation_family("v6", "v6", "an IPv6"),
    # MetalLB's "should-not-happen" case: a Service holding an IP of the other family. MetalLB's
    # AllocateFromPool refuses it outright; ours moves the Service when the pool has room (its
    # controller does too, by clearing the IP first). "test" has no free IPv6 left here (s2-s4,
    # and s5+s6 sharing one), so ours fails as well, keeping the IPv4.
    row("wrongfamily", "s1 clear", "s1", release=True),
    row("wrongfamily", "s1 get an IPv4", "s1", fam="v4", pool="test"),
    row("wrongfamily", "s1 get an IPv6", "s1", fam="v6", pool="test", want=Reason.POOL_EXHAUSTED),
    *_clear_rows("v6"),
    *_pool_allocation_family("dual", "dual", "dual-stack IPs"),
    *_clear_rows("dual"),
    row("prefer", "s1 gets dual-stack IPs", "s1", fam="prefer-dual", pool="test"),
    row("prefer", "s2 gets ipv4 IP", "s2", fam="prefer-v4", pool="test-v4"),
    row("prefer", "s3 gets ipv6 IP", "s3", fam="prefer-v6", pool="test-v6"),
    row("prefer", "s2 clear old ipv4 address", "s2", release=True),
    # MetalLB keeps s3's IPv6 (AllocateFromPool re-assigns what a PreferDualStack Service holds,
    # in the valid set either way); ours moves s3 to the pool it now requests, with both families.
    row("prefer", "s3 gets dualstack", "s3", fam="prefer-dual", pool="test-dualstack"),
    row("end", "s5 releases", "s5", release=True),
    row("end", "allocating from a non-existent pool fails", "s5", fam="v4", pool="nonexistentpool",
        want=Reason.POOL_NOT_FOUND),
]


@pytest.mark.parametrize("upto", indexed(POOL_ALLOCATION))
def test_pool_allocation(upto: int) -> None:
    by_name = {p.name: p for p in POOL_ALLOCATION_POOLS}
    check_allocation(Allocator(POOL_ALLOCATION_POOLS), POOL_ALLOCATION, upto,
                     lambda kw, ip: by_name[kw["pool"]].contains(ip))


def test_overlapping_pools_of_pool_allocation_are_refused() -> None:
    """TestPoolAllocation's pools as MetalLB writes them: the three copies of "test" are refused."""
    metallb = [
        *POOL_ALLOCATION_POOLS[:3],  # not_this_one, test, test2: as MetalLB writes them
        pool("test-v4", "1.2.3.4/31", "1.2.3.10/31"),
        pool("test-v6", "1000::/127", "2000::/127"),
        pool("test-dualstack", "1.2.3.4/31", "1.2.3.10/31", "1000::/127", "2000::/127"),
    ]
    accepted, rejected = accept_pools(metallb)
    assert [p.name for p in accepted] == ["not_this_one", "test", "test2"]
    assert sorted(rejected) == ["test-dualstack", "test-v4", "test-v6"]
    assert all("overlaps pool 'test'" in why for why in rejected.values())


def _allocation_family(section: str, fam: str, unit: str, want: str = Reason.POOL_EXHAUSTED
                       ) -> list[ParameterSet]:
    s = section
    return [
        *_exhaust_rows(s, fam, None, unit),
        row(s, f"s5 can now get {unit}", "s5", fam=fam, ports="tcp/80", share="share"),
        row(s, f"s6 still can't get {unit}", "s6", fam=fam, want=want),
        row(s, f"s6 can get {unit} with sharing", "s6", fam=fam, ports="tcp/443", share="share"),
    ]


ALLOCATION_POOLS = [
    pool("test1", "1.2.3.4/31", "1000::4/127"),
    pool("test2", "1.2.3.10/31", "1000::10/127"),
]
ALLOCATION_VALID = {"1.2.3.4", "1.2.3.5", "1.2.3.10", "1.2.3.11",
                    "1000::4", "1000::5", "1000::10", "1000::11"}
ALLOCATION: list[ParameterSet] = [
    *_allocation_family("v4", "v4", "an IPv4"),
    *_clear_rows("v4"),
    *_allocation_family("v6", "v6", "an IPv6"),
    *_clear_rows("v6"),
    *_allocation_family("dual", "dual", "dual-stack IPs"),
]


@pytest.mark.parametrize("upto", indexed(ALLOCATION))
def test_allocation(upto: int) -> None:
    check_allocation(Allocator(ALLOCATION_POOLS), ALLOCATION, upto, lambda kw, ip: ip in ALLOCATION_VALID)


BUGGY_POOLS = [
    pool("test", "1.2.3.0/31"),
    pool("test2", "1.2.3.254/31"),
    pool("test3", "1.2.4.0/31", avoid_buggy_ips=True),
    pool("test4", "1.2.4.254/31", avoid_buggy_ips=True),
]
BUGGY_VALID = {"1.2.3.0", "1.2.3.1", "1.2.3.254", "1.2.3.255", "1.2.4.1", "1.2.4.254"}
BUGGY: list[ParameterSet] = [
    *[row("buggy", f"s{i} gets an IP", f"s{i}") for i in range(1, 7)],
    row("buggy", "s7 can't get an IP", "s7", want=Reason.POOL_EXHAUSTED),
]


@pytest.mark.parametrize("upto", indexed(BUGGY))
def test_buggy_ips(upto: int) -> None:
    alloc = Allocator(BUGGY_POOLS)
    check_allocation(alloc, BUGGY, upto, lambda kw, ip: ip in BUGGY_VALID)
    if upto == len(BUGGY) - 1:  # the six services hold exactly the six usable addresses
        assert {ip for ips in alloc.assignments().values() for ip in ips} == BUGGY_VALID


AUTO_ASSIGN_POOLS = [
    pool("test1", "1.2.3.4/31", "1000::4/127", auto_assign=False),
    pool("test2", "1.2.3.10/31", "1000::10/127"),
]
AUTO_ASSIGN_VALID = {"1.2.3.10", "1.2.3.11", "1000::10", "1000::11"}


def _auto_assign_family(section: str, fam: str) -> list[ParameterSet]:
    return [
        row(section, "s1 gets an IP", "s1", fam=fam),
        row(section, "s2 gets an IP", "s2", fam=fam),
        *[row(section, f"s{i} can't get an IP", f"s{i}", fam=fam, want=Reason.POOL_EXHAUSTED)
          for i in range(3, 6)],
    ]


AUTO_ASSIGN: list[ParameterSet] = [
    *_auto_assign_family("v4", "v4"),
    *_clear_rows("v4"),
    *_auto_assign_family("v6", "v6"),
    # MetalLB does not clear the IPv6 addresses here: its Allocate re-assigns what s1 and s2 hold
    # (one IPv6 each, in the valid set); ours moves them to a dual-stack pair of test2.
    *_auto_assign_family("dual", "dual"),
]


@pytest.mark.parametrize("upto", indexed(AUTO_ASSIGN))
def test_auto_assign(upto: int) -> None:
    check_allocation(Allocator(AUTO_ASSIGN_POOLS), AUTO_ASSIGN, upto, lambda kw, ip: ip in AUTO_ASSIGN_VALID)


# --- TestConfigReload -------------------------------------------------------------------------------

NEVER_MOVE = ("configuration changes never move an IP: MetalLB's SetPools unassigns a Service whose "
              "IP no pool covers any more (or that an avoidBuggyIPs pool now avoids) and it gets a new "
              "address; ours keeps it and reports it (docs/metallb-compat.md, 'A pool changed so that a "
              "Service's IP leaves it')")
RELOAD_START = [
    pool("test", "1.2.3.0/30", "1000::/126"),
    pool("unused", "1.2.4.0/30", "1001::/126"),
]


@pytest.mark.parametrize(("pools", "pool_s1", "pool_s2"), [
    pytest.param([pool("test", "1.2.3.0/30", "1000::/126")], "test", "test",
                 id="set-same-config-is-no-op"),
    pytest.param([pool("test", "1.2.3.0/24", "1000::/120")], "test", "test", id="expand-pool"),
    pytest.param([pool("test", "1.2.3.0/30", "1000::/126")], "test", "test", id="shrink-pool"),
    pytest.param([pool("test", "1.2.3.2/31", "1000::0/126")], "", "test",
                 id="cant-shrink-further-removing-the-service-allocation",
                 marks=pytest.mark.xfail(strict=True, reason=NEVER_MOVE)),
    pytest.param([pool("test", "1.2.3.0/30", "1000::2/127")], "test", "",
                 id="cant-shrink-further-ipv6-removing-the-service-allocation",
                 marks=pytest.mark.xfail(strict=True, reason=NEVER_MOVE)),
    pytest.param([pool("test2", "1.2.3.0/30", "1000::0/126")], "test2", "test2", id="rename-the-pool"),
    pytest.param([pool("test", "1.2.3.0/31", "1000::2/127"), pool("test2", "1.2.3.2/31", "1000::/127")],
                 "test", "test2", id="split-pool"),
    pytest.param([pool("test2", "1.2.3.0/31", "1000::/127", avoid_buggy_ips=True)], "", "test2",
                 id="enable-buggy-ips-not-allowed",
                 marks=pytest.mark.xfail(strict=True, reason=NEVER_MOVE)),
])
def test_config_reload(pools: list[Pool], pool_s1: str, pool_s2: str) -> None:
    alloc = reloaded(pools)
    got = {k: (a.pool or "") if (a := alloc.assigned(k)) is not None else "" for k in ("s1", "s2")}
    assert got == {"s1": pool_s1, "s2": pool_s2}


def reloaded(pools: list[Pool]) -> Allocator:
    alloc = Allocator(RELOAD_START)
    assert alloc.allocate(ServiceRequest("s1", requested_ips=("1.2.3.0",))).ok
    assert alloc.allocate(ServiceRequest("s2", families=(6,), requested_ips=("1000::",))).ok
    alloc.set_pools(pools)
    return alloc


@pytest.mark.parametrize(("pools", "outside", "s1_reusable"), [
    pytest.param([pool("test", "1.2.3.2/31", "1000::0/126")], {"s1": ("1.2.3.0",)}, False, id="shrink-v4"),
    pytest.param([pool("test", "1.2.3.0/30", "1000::2/127")], {"s2": ("1000::",)}, True, id="shrink-v6"),
    pytest.param([pool("test2", "1.2.3.0/31", "1000::/127", avoid_buggy_ips=True)], {}, False, id="buggy"),
])
def test_config_reload_keeps_ips(pools: list[Pool], outside: dict[str, tuple[str, ...]],
                                 s1_reusable: bool) -> None:
    """What we do on the xfail rows above: both Services keep their IPs; those outside every pool
    are reported (the controller's ServicesOutsidePool condition and IPOutsidePools Event)."""
    alloc = Allocator(RELOAD_START)
    alloc.allocate(ServiceRequest("s1", requested_ips=("1.2.3.0",)))
    alloc.allocate(ServiceRequest("s2", families=(6,), requested_ips=("1000::",)))
    report = alloc.set_pools(pools)
    assert alloc.assignments() == {"s1": ("1.2.3.0",), "s2": ("1000::",)}
    assert dict(report.orphaned) == outside
    for key in ("s1", "s2"):
        a = alloc.assigned(key)
        assert a is not None and a.orphaned == (key in outside)
    # once released, an address the new pools avoid or do not cover is not handed out again
    alloc.release("s1")
    assert (alloc.allocate(ServiceRequest("s3")).ips == ("1.2.3.0",)) == s1_reusable


# --- TestPoolCount ----------------------------------------------------------------------------------


def status_counts(alloc: Allocator, name: str) -> dict[str, int]:
    """The counts the controller writes to the pool's status (PoolsAndAdvertisements.pool_counts)."""
    return PoolsAndAdvertisements.pool_counts(cast(Any, SimpleNamespace(ctx=SimpleNamespace(alloc=alloc))),
                                              name)


@pytest.mark.parametrize(("addresses", "avoid", "total", "ipv4", "ipv6"), [
    pytest.param(("1.2.3.0/24",), False, 256, 256, 0, id="bgp-24"),
    pytest.param(("1.2.3.0/24", "2.3.4.128/25"), False, 384, 384, 0, id="bgp-24-and-25"),
    pytest.param(("1.2.3.0/24", "2.3.4.128/25"), True, 381, 381, 0, id="bgp-24-and-25-no-buggy-ips"),
    pytest.param(("1.2.3.0/24", "2.3.4.128/25", "1000::/64"), True, INT64_MAX, 381, INT64_MAX,
                 id="bgp-a-big-ipv6-range"),
    pytest.param(("1.2.3.0/31", "1000::/127"), True, 3, 1, 2, id="ipv4-and-ipv6-range"),
])
def test_pool_count(addresses: tuple[str, ...], avoid: bool, total: int, ipv4: int, ipv6: int) -> None:
    alloc = Allocator([pool("p", *addresses, avoid_buggy_ips=avoid)])
    counts = status_counts(alloc, "p")
    assert (counts["totalIPv4"], counts["totalIPv6"]) == (ipv4, ipv6)
    assert min(counts["totalIPv4"] + counts["totalIPv6"], INT64_MAX) == total  # MetalLB's saturated total
    # the allocator itself counts exactly (a /64 is 2^64 addresses); only the status saturates
    exact4, exact6 = alloc.pool_capacity("p")
    assert exact4 == ipv4 and min(exact6, INT64_MAX) == ipv6
    assert status_counts(alloc, "p")["availableIPv4"] == ipv4


# --- TestPoolMetrics (counters) ---------------------------------------------------------------------

METRICS: list[ParameterSet] = [
    row("metrics", "assign s1", "s1", ips=["1.2.3.4"], in_use=1),
    row("metrics", "assign s2", "s2", ips=["1.2.3.5"], in_use=2),
    row("metrics", "unassign s1", "s1", in_use=1),
    row("metrics", "unassign s2", "s2", in_use=0),
    row("metrics", "assign s1 shared", "s1", ips=["1.2.3.4"], share="key", ports="tcp/80", in_use=1),
    row("metrics", "assign s2 shared", "s2", ips=["1.2.3.4"], share="key", ports="tcp/443", in_use=1),
    row("metrics", "assign s3 shared", "s3", ips=["1.2.3.4"], share="key", ports="tcp/23", in_use=1),
    row("metrics", "unassign s1 shared", "s1", in_use=1),
    row("metrics", "unassign s2 shared", "s2", in_use=1),
    row("metrics", "unassign s3 shared", "s3", in_use=0),
]
METRICS_POOLS = [pool("test", "1.2.3.4/30", "1000::4/126")]


def counters(alloc: Allocator, name: str) -> tuple[int, int, int, int]:
    """MetalLB's PoolCounters (AvailableIPv4, AvailableIPv6, AssignedIPv4, AssignedIPv6)."""
    c = status_counts(alloc, name)
    return c["availableIPv4"], c["availableIPv6"], c["assignedIPv4"], c["assignedIPv6"]


def test_pool_metrics_initial() -> None:
    alloc = Allocator(METRICS_POOLS)
    assert sum(alloc.pool_capacity("test")) == 8  # stats.poolCapacity: 4 + 4
    assert counters(alloc, "test") == (4, 4, 0, 0)


@pytest.mark.parametrize("upto", indexed(METRICS))
def test_pool_metrics(upto: int) -> None:
    alloc = Allocator(METRICS_POOLS)
    desc, _key, kw, _, r = replay(alloc, METRICS, upto, assign)
    if r is not None:
        assert r.ok and r.ips == tuple(kw["ips"]), (desc, r.message)
    n = kw["in_use"]
    assert counters(alloc, "test") == (4 - n, 4, n, 0), desc


def test_pool_metrics_pool_removed() -> None:
    """Last step of TestPoolMetrics: with the pool gone, its counters are all zero."""
    alloc = Allocator(METRICS_POOLS)
    assert alloc.allocate(ServiceRequest("s1", requested_ips=("1.2.3.4",))).ok
    alloc.set_pools([])
    assert "test" not in alloc.pools()
    assert counters(alloc, "test") == (0, 0, 0, 0)
