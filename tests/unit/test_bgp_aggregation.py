"""Aggregation never reaches outside the pool: MetalLB's rule for the controller, a hard refusal in
the speaker's plan, and a property over every configuration, valid or not (issue 13 #3, issue 10)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.bgp.aggregation import aggregation_problems, prefix_within
from lbspeaker.bgp.plan import compute_bgp_plan
from lbspeaker.controller.advertisements import advertisement_conditions
from lbspeaker.facts import BGPAdvertisementFacts, NodeFacts, PeerFacts, Pool, ServiceFacts

NODE = "kind-worker"


def ranges(*texts: str) -> tuple[Any, ...]:
    return tuple(parse_address_range(t) for t in texts)


@pytest.mark.parametrize(("prefix", "pool", "inside"), [
    ("10.0.0.0/28", ("10.0.0.0/28",), True),
    ("10.0.0.0/26", ("10.0.0.0/28",), False),
    ("10.0.0.0/28", ("10.0.0.0/29", "10.0.0.8/29"), True),        # two adjacent ranges cover it
    ("10.0.0.0/28", ("10.0.0.0/29", "10.0.0.9-10.0.0.15"), False),  # 10.0.0.8 is missing
    ("10.0.0.0/28", ("10.0.0.0-10.0.0.20",), True),
    ("0.0.0.0/0", ("0.0.0.0/1", "128.0.0.0/1"), True),
    ("0.0.0.0/0", ("10.0.0.0/8",), False),
    ("10.9.9.9/32", ("10.0.0.0/28",), True),        # a host route is the Service's own IP
    ("fd00::/120", ("fd00::/112",), True),
    ("fd00::/104", ("fd00::/112",), False),
    ("fd00::/120", ("10.0.0.0/8",), False),         # other family covers nothing
])
def test_prefix_within(prefix: str, pool: tuple[str, ...], inside: bool) -> None:
    assert prefix_within(ipaddress.ip_network(prefix), ranges(*pool)) is inside


@pytest.mark.parametrize(("pool", "v4", "v6", "fragments"), [
    (("1.1.1.0/28",), 26, 128, ["aggregationLength 26 is shorter than prefix 1.1.1.0/28", "at least 28"]),
    (("1.1.1.0/28",), 28, 128, []),
    (("1.1.1.0/28",), 0, 128, ["aggregationLength 0 is shorter"]),
    (("1.1.1.0/24", "1.1.2.0/28"), 24, 128, ["prefix 1.1.2.0/28", "at least 28"]),
    (("10.0.0.1-10.0.0.5",), 31, 128, ["prefix 10.0.0.1/32", "at least 32"]),  # MetalLB splits ranges
    (("fd00::/64",), 32, 48, ["aggregationLengthV6 48 is shorter than prefix fd00::/64", "at least 64"]),
    (("fd00::/64",), 1, 64, []),   # no IPv4 in the pool: the IPv4 length does not matter
])
def test_aggregation_problems_metallb_rule(pool: tuple[str, ...], v4: int, v6: int,
                                           fragments: list[str]) -> None:
    text = " | ".join(aggregation_problems("p", ranges(*pool), v4, v6))
    assert all(f in text for f in fragments) and bool(text) is bool(fragments), text


def _pool_obj(name: str, *addresses: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"addresses": list(addresses)}}


def _bgp_adv(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "BGPAdvertisement", "metadata": {"name": name, "generation": 1}, "spec": spec}


def test_controller_marks_only_the_too_short_advertisement_not_ready() -> None:
    pools = [_pool_obj("small", "10.0.0.0/28"), _pool_obj("big", "10.1.0.0/24")]
    nodes = [{"metadata": {"name": NODE, "labels": {}}}]
    wide = _bgp_adv("wide", aggregationLength=26)
    per_ip = _bgp_adv("per-ip", ipAddressPools=["small"])
    big_only = _bgp_adv("big-only", aggregationLength=24, ipAddressPools=["big"])
    every = [wide, per_ip, big_only]
    [ready] = advertisement_conditions(wide, pools, nodes, None, "now", bgp_advertisements=every)
    assert (ready["status"], ready["reason"]) == ("False", "AggregationLengthTooShort")
    assert "prefix 10.0.0.0/28 of pool 'small'" in ready["message"]
    assert "set aggregationLength to at least 28" in ready["message"]
    assert "'big'" not in ready["message"]      # /24 aggregation of a /24 pool is fine
    for ok in (per_ip, big_only):
        [ready] = advertisement_conditions(ok, pools, nodes, None, "now", bgp_advertisements=every)
        assert ready["status"] == "True", ready


def _plan(pools: list[Pool], services: list[ServiceFacts], advs: list[dict[str, Any]]) -> Any:
    peer = PeerFacts.from_object({"metadata": {"name": "router"}, "spec": {
        "myASN": 64512, "peerASN": 64512, "peerAddress": "172.18.0.1", "dualStackAddressFamily": True}})
    return compute_bgp_plan(
        NODE, NodeFacts(NODE, labels={}), services, pools,
        [BGPAdvertisementFacts.from_object(a) for a in advs], [peer],
        node_addresses=["172.18.0.3"], node_networks=["172.18.0.3/16"])


def test_speaker_refuses_a_too_wide_prefix_and_keeps_the_other_advertisements() -> None:
    pool = Pool("small", ranges("10.0.0.0/28"))
    svc = ServiceFacts("default", "web", ("10.0.0.5",), pool="small", serving_endpoints=(NODE,))
    advs = [_bgp_adv("wide", aggregationLength=26), _bgp_adv("exact", aggregationLength=28),
            _bgp_adv("per-ip")]
    plan = _plan([pool], [svc], advs)
    assert sorted(plan.routes["router"]) == ["10.0.0.0/28", "10.0.0.5/32"]
    [problem] = [p for p in plan.problems if p.reason == "AggregationOutsidePool"]
    assert problem.name == "wide" and "not announcing 10.0.0.0/26" in problem.message


# --- the property: no configuration, valid or not, announces an address outside the pool ---------------

V4_POOLS = st.builds(lambda a, n: f"10.{a}.0.0/{n}", st.integers(0, 3), st.integers(16, 32)) | st.builds(
    lambda a, lo, span: f"10.{a}.1.{lo}-10.{a}.1.{min(255, lo + span)}",
    st.integers(0, 3), st.integers(0, 255), st.integers(0, 40))
V6_POOLS = st.builds(lambda a, n: f"fd00:{a}::/{n}", st.integers(0, 3), st.integers(96, 128))


@st.composite
def configurations(draw: st.DrawFn) -> tuple[list[Pool], list[ServiceFacts], list[dict[str, Any]]]:
    pools = []
    for i in range(draw(st.integers(1, 3))):
        texts = draw(st.lists(V4_POOLS | V6_POOLS, min_size=1, max_size=3))
        pools.append(Pool(f"p{i}", ranges(*texts)))
    services = []
    for i in range(draw(st.integers(1, 6))):
        pool = draw(st.sampled_from(pools))
        r = draw(st.sampled_from(pool.ranges))
        value = draw(st.integers(r.first, r.last))
        ip = str(ipaddress.ip_address(value) if r.family == 4 else ipaddress.IPv6Address(value))
        if draw(st.booleans()):  # sometimes an IP its pool no longer covers (the controller keeps it)
            ip = draw(st.sampled_from(["10.200.0.1", "fd00:ff::1", ip]))
        services.append(ServiceFacts("default", f"s{i}", (ip,), pool=pool.name, serving_endpoints=(NODE,)))
    advs = []
    for i in range(draw(st.integers(1, 4))):
        spec: dict[str, Any] = {}
        if draw(st.booleans()):
            spec["aggregationLength"] = draw(st.integers(-2, 40))
        if draw(st.booleans()):
            spec["aggregationLengthV6"] = draw(st.integers(-2, 140))
        if draw(st.booleans()):
            spec["ipAddressPools"] = [draw(st.sampled_from([p.name for p in pools]))]
        advs.append(_bgp_adv(f"a{i}", **spec))
    return pools, services, advs


def _covered(prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, pool: Pool) -> bool:
    """Independent of prefix_within: the pool's ranges as canonical CIDR blocks."""
    nets = [n for r in pool.ranges if r.family == prefix.version
            for n in ipaddress.summarize_address_range(r.start_ip(), r.end_ip())]  # type: ignore[arg-type]
    return any(prefix.subnet_of(n) for n in ipaddress.collapse_addresses(nets))  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(configurations())
def test_no_announced_prefix_reaches_outside_its_pool(config: Any) -> None:
    pools, services, advs = config
    by_name = {p.name: p for p in pools}
    plan = _plan(pools, services, advs)
    for routes in plan.routes.values():
        for text in routes:
            prefix = ipaddress.ip_network(text)
            sources = [(s, ip) for s in services for ip in s.ips if ipaddress.ip_address(ip) in prefix]
            assert sources, f"{prefix} announced for no Service IP"
            if prefix.prefixlen == prefix.max_prefixlen:
                continue  # the Service's own address
            # one route may carry several Services' IPs (overlapping pools): it must lie inside the
            # pool of at least one of them, the one whose advertisement announced it
            pools_of = sorted({s.pool for s, _ip in sources})
            assert any(_covered(prefix, by_name[p]) for p in pools_of), f"{prefix} reaches outside {pools_of}"
