"""Hypothesis properties of the allocator: random allocate/release/reconfigure/restart sequences.

Invariants checked after every step: no IP held by two incompatible Services; pool counts
agree with a brute-force recount; free intervals never contain an IP in use. Rules check:
requested free IPs are honoured, the lowest free address is chosen, failures change
nothing, and a restart (restore in any order) rebuilds the same state and the same next pick.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.controller.allocator import Allocator, Pool, ServiceRequest, is_buggy_ip


def _pool(name: str, *addresses: str, **kw: Any) -> Pool:
    return Pool(name=name, ranges=tuple(parse_address_range(a) for a in addresses), **kw)


CONFIGS = {
    "full": [
        _pool("p1", "10.0.0.0/30"),
        _pool("p2", "10.0.1.254-10.0.2.2", avoid_buggy_ips=True),
        _pool("p3", "10.0.3.0/30", "fd00::/126"),
        _pool("pin", "10.0.4.0/30", namespaces=("a",), priority=1),
        _pool("man", "10.0.5.0/31", "fd05::/127", auto_assign=False),
    ],
    "shrunk": [
        _pool("p1", "10.0.0.0/31"),
        _pool("p3", "10.0.3.0/31", "fd00::/127"),
        _pool("pin", "10.0.4.0/30", namespaces=("a",), priority=1),
        _pool("man", "10.0.5.0/31", "fd05::/127", auto_assign=False),
    ],
}
KEYS = [f"{ns}/s{i}" for ns in ("a", "b") for i in range(4)]
CANDIDATE_IPS = ["10.0.0.1", "10.0.0.3", "10.0.1.255", "10.0.2.1", "10.0.3.2", "fd00::2", "10.0.4.1",
                 "10.0.5.1", "fd05::1", "192.0.2.1"]
PORTS = [("TCP", 80), ("TCP", 81), ("UDP", 80)]


def requests() -> st.SearchStrategy[ServiceRequest]:
    @st.composite
    def build(draw: st.DrawFn) -> ServiceRequest:
        key = draw(st.sampled_from(KEYS))
        fams, policy = draw(st.sampled_from([((4,), "SingleStack"), ((6,), "SingleStack"),
                                             ((4, 6), "PreferDualStack"), ((6, 4), "PreferDualStack"),
                                             ((4, 6), "RequireDualStack")]))
        kind = draw(st.sampled_from(["auto", "auto", "ip", "pool", "pool"]))
        requested_ips: tuple[str, ...] = ()
        requested_pool = None
        if kind == "ip":
            requested_ips = (draw(st.sampled_from(CANDIDATE_IPS)),)
        elif kind == "pool":
            requested_pool = draw(st.sampled_from(["p1", "p2", "p2", "p3", "pin", "man", "nope"]))
        return ServiceRequest(
            key=key, namespace=key.split("/")[0], families=fams, family_policy=policy,
            requested_ips=requested_ips, requested_pool=requested_pool,
            sharing_key=draw(st.sampled_from([None, None, "k1", "k2"])),
            ports=tuple(draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))),
            backend_key=draw(st.sampled_from([None, None, "app=x"])),
        )
    return build()


def _usable_ips(pool: Pool, family: int) -> list[int]:
    out: list[int] = []
    for r in pool.ranges:
        if r.family == family:
            out.extend(v for v in range(r.first, r.last + 1)
                       if not (pool.avoid_buggy_ips and is_buggy_ip(family, v)))
    return sorted(set(out))


def _compatible(a: ServiceRequest, b: ServiceRequest) -> bool:
    return (a.sharing_key is not None and a.sharing_key == b.sharing_key and a.backend_key == b.backend_key
            and not set(a.ports) & set(b.ports))


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = "full"
        self.alloc = Allocator(CONFIGS["full"])
        self.model: dict[str, ServiceRequest] = {}     # request in effect for each holder

    def _in_use(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for key, ips in self.alloc.assignments().items():
            for ip in ips:
                users.setdefault(ip, []).append(key)
        return users

    @rule(r=requests())
    def allocate(self, r: ServiceRequest) -> None:
        before = self.alloc.assignments()
        in_use = self._in_use()
        expected_lowest = None
        pools = {p.name: p for p in CONFIGS[self.config]}
        if (r.key not in before and r.requested_pool in pools and not r.requested_ips and not r.sharing_key
                and r.family_policy == "SingleStack"):
            p = pools[r.requested_pool]
            if p.namespaces == () or r.namespace in p.namespaces:
                free = [v for v in _usable_ips(p, r.families[0])
                        if str(ipaddress.ip_address(v)) not in in_use]
                expected_lowest = str(ipaddress.ip_address(free[0])) if free else "none"
        res = self.alloc.allocate(r)
        if res.ok:
            self.model[r.key] = r
            assert res.ips == self.alloc.assignments()[r.key]
        else:
            assert res.reason and res.message
            assert self.alloc.assignments() == before, "a failure changed the state"
            assert res.ips == before.get(r.key, ())
        if res.ok and r.key not in before and not r.requested_ips:
            # lowest free address of the chosen pool, per family; never .0/.255 under avoidBuggyIPs
            chosen = pools[res.pool or ""]
            for ip in res.ips:
                addr = ipaddress.ip_address(ip)
                assert not (chosen.avoid_buggy_ips and is_buggy_ip(addr.version, int(addr)))
                free = [v for v in _usable_ips(chosen, addr.version)
                        if str(ipaddress.ip_address(v)) not in in_use]
                if ip in in_use:
                    assert r.sharing_key is not None
                    assert not free or int(addr) < free[0]
                else:
                    assert int(addr) == free[0], (ip, free[:3])
        if expected_lowest is not None:
            if expected_lowest == "none":
                assert not res.ok
            else:
                assert res.ok and res.ips == (expected_lowest,), (res, expected_lowest)
        # requested IPs are honoured when nobody holds them and the request is otherwise valid
        if r.requested_ips and r.family_policy == "SingleStack" and r.key not in before:
            ip = r.requested_ips[0]
            fam = 6 if ":" in ip else 4
            covering = [p for p in CONFIGS[self.config] if p.ranges and any(
                x.family == fam and x.first <= int(ipaddress.ip_address(ip)) <= x.last for x in p.ranges)]
            if (fam == r.families[0] and ip not in in_use and covering
                    and (not covering[0].namespaces or r.namespace in covering[0].namespaces)
                    and not (covering[0].avoid_buggy_ips
                             and is_buggy_ip(fam, int(ipaddress.ip_address(ip))))):
                assert res.ok and res.ips == (ip,), res

    @rule(key=st.sampled_from(KEYS))
    def release(self, key: str) -> None:
        held = self.alloc.assignments().get(key, ())
        assert self.alloc.release(key) == held
        self.model.pop(key, None)

    @rule(config=st.sampled_from(sorted(CONFIGS)))
    def reconfigure(self, config: str) -> None:
        before = self.alloc.assignments()
        self.config = config
        self.alloc.set_pools(CONFIGS[config])
        assert self.alloc.assignments() == before, "set_pools moved or dropped an IP"

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        order = data.draw(st.permutations(sorted(self.model)))
        fresh = Allocator(CONFIGS[self.config])
        for key in order:
            a = self.alloc.assigned(key)
            assert a is not None
            res = fresh.restore(key, list(a.ips), self.model[key], pool=a.pool)
            assert res.ok, res
        assert fresh.assignments() == self.alloc.assignments()
        for key in self.model:
            assert fresh.assigned(key) == self.alloc.assigned(key)
        for name in self.alloc.pools():
            assert fresh.pool_stats(name) == self.alloc.pool_stats(name)
        probe = ServiceRequest(key="probe/x", namespace="a", families=(4, 6), family_policy="PreferDualStack")
        r1, r2 = self.alloc.allocate(probe), fresh.allocate(probe)
        assert (r1.ok, r1.ips) == (r2.ok, r2.ips)
        self.alloc.release("probe/x")

    @invariant()
    def no_incompatible_holders(self) -> None:
        for ip, keys in self._in_use().items():
            for i, a in enumerate(keys):
                for b in keys[i + 1:]:
                    assert _compatible(self.model[a], self.model[b]), (ip, a, b)

    @invariant()
    def stats_match_recount(self) -> None:
        in_use = {ipaddress.ip_address(ip) for ip in self._in_use()}
        for p in CONFIGS[self.config]:
            stats = self.alloc.pool_stats(p.name)
            for fam, assigned, available in ((4, stats.assigned_v4, stats.available_v4),
                                             (6, stats.assigned_v6, stats.available_v6)):
                covered = {ip for ip in in_use if ip.version == fam
                           and any(r.family == fam and r.first <= int(ip) <= r.last for r in p.ranges)}
                usable = _usable_ips(p, fam)
                assert assigned == len(covered)
                assert available == len([v for v in usable if ipaddress.ip_address(v) not in covered])
                assert available + len([ip for ip in covered if int(ip) in set(usable)]) == len(usable)

    @invariant()
    def outside_is_exactly_the_ips_no_pool_covers(self) -> None:
        """`any_outside` (the controller skips its scan of the holders on False) tells the truth."""
        addrs = [ipaddress.ip_address(ip) for ip in self._in_use()]
        outside = [a for a in addrs if not any(r.family == a.version and r.first <= int(a) <= r.last
                                               for p in CONFIGS[self.config] for r in p.ranges)]
        assert self.alloc.any_outside() == bool(outside), outside

    @invariant()
    def free_sets_exclude_used(self) -> None:
        state = self.alloc._pools
        for ip in self._in_use():
            addr = ipaddress.ip_address(ip)
            for st_ in state.values():
                assert not st_.free[addr.version].contains(int(addr))


AllocatorMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestAllocatorMachine = AllocatorMachine.TestCase


@settings(max_examples=80, deadline=None)
@given(
    start=st.integers(min_value=250, max_value=262),
    size=st.integers(min_value=1, max_value=12),
    avoid=st.booleans(),
    ops=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=7),
                           st.sampled_from([None, "k"]), st.sampled_from(PORTS)), max_size=40),
)
def test_single_pool_matches_brute_force_model(
        start: int, size: int, avoid: bool, ops: list[tuple[bool, int, str | None, tuple[str, int]]]) -> None:
    """One pool across a /24 boundary: picks equal a brute-force model; counts stay exact."""
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    first, last = base + start, base + start + size - 1
    pool = _pool("p", f"{ipaddress.IPv4Address(first)}-{ipaddress.IPv4Address(last)}", avoid_buggy_ips=avoid)
    usable = _usable_ips(pool, 4)
    alloc = Allocator([pool])
    holders: dict[str, tuple[int, ServiceRequest]] = {}
    for is_alloc, n, key, port in ops:
        svc = f"ns/s{n}"
        if not is_alloc:
            alloc.release(svc)
            holders.pop(svc, None)
        else:
            r = ServiceRequest(key=svc, namespace="ns", sharing_key=key, ports=(port,))
            if svc in holders:
                # idempotent when nothing changed; otherwise just release and re-ask
                if holders[svc][1] == r:
                    res = alloc.allocate(r)
                    held_ip = str(ipaddress.IPv4Address(holders[svc][0]))
                    assert res.ok and not res.changed and res.ips == (held_ip,)
                    continue
                alloc.release(svc)
                del holders[svc]
            used = {v for v, _ in holders.values()}
            shareable = sorted(v for v, other in holders.values()
                               if all(_compatible(r, o) for v2, o in holders.values() if v2 == v))
            free = [v for v in usable if v not in used]
            candidates = sorted(set(free[:1] + shareable[:1]))
            res = alloc.allocate(r)
            if not candidates:
                assert not res.ok and res.reason == "PoolExhausted"
                continue
            assert res.ok and res.ips == (str(ipaddress.IPv4Address(candidates[0])),), (res, candidates)
            holders[svc] = (candidates[0], r)
        used = {v for v, _ in holders.values()}
        assert alloc.pool_stats("p") == (len(used), len(usable) - len(used & set(usable)), 0, 0)
