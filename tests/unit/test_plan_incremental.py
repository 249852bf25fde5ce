"""The incremental planners equal the full plans after any sequence of changes.

`plan.L2Planner` and `bgp.plan.BGPPlanner` redo only the Services that changed (and
everything when the context changed); this is the test that makes that safe: each step
changes some Services and maybe the context (pools, advertisements, nodes, live speakers,
links), is planned incrementally with the changed keys (or without them), and must give
exactly what `compute_plan` / `compute_bgp_plan` give over the same facts from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.bgp.plan import BGPPlan, BGPPlanner, compute_bgp_plan
from lbspeaker.facts import (
    BGPAdvertisementFacts,
    L2AdvertisementFacts,
    NodeFacts,
    PeerFacts,
    Pool,
    ServiceFacts,
)
from lbspeaker.links import IFF_UP, LinkInfo
from lbspeaker.plan import L2Planner, Plan, compute_plan

NODE_NAMES = ["n1", "n2", "n3"]
KEYS = [f"s{i}" for i in range(6)]
POOLS = [
    Pool("a", (parse_address_range("10.0.0.0/29"),), labels={"env": "lab"}),
    Pool("b", (parse_address_range("10.0.1.0/29"), parse_address_range("fd00::/125")),
         labels={"env": "prod"}),
]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2", "fd00::1", "10.9.9.9"]  # the last: no pool
ADVS = [
    L2AdvertisementFacts("l2-all"),
    L2AdvertisementFacts("l2-a", ip_address_pools=("a",), interfaces=("eth1",)),
    L2AdvertisementFacts("l2-zone-b", node_selectors=({"matchLabels": {"zone": "b"}},)),
    L2AdvertisementFacts("l2-prod", ip_address_pool_selectors=({"matchLabels": {"env": "prod"}},),
                         interfaces=("nope0",)),
    L2AdvertisementFacts("l2-web", service_selectors=({"matchLabels": {"app": "web"}},),
                         preferred=((50, {"matchLabels": {"zone": "b"}}),)),
    L2AdvertisementFacts("l2-prefer-a", ip_address_pools=("a",), preferred=((10, {}),)),
]
LINK_SETS: list[tuple[LinkInfo, ...] | None] = [
    None, (LinkInfo("eth0", 2), LinkInfo("eth1", 3)), (LinkInfo("eth0", 2, flags=IFF_UP | 0x80),)]


@st.composite
def services(draw: st.DrawFn, key: str) -> ServiceFacts | None:
    if draw(st.integers(0, 4)) == 0:
        return None
    ips = tuple(dict.fromkeys(draw(st.lists(st.sampled_from(IPS), min_size=1, max_size=2))))
    eps = tuple(draw(st.lists(st.sampled_from([*NODE_NAMES, None]), max_size=3)))
    pool = draw(st.sampled_from([None, "a", "b", "gone"]))
    return ServiceFacts("ns", key, ips, pool, draw(st.booleans()), eps,
                        labels={"app": draw(st.sampled_from(["web", "db"]))},
                        sharing_key=draw(st.sampled_from([None, None, "k"])))


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    nodes = [NodeFacts(n, ready=draw(st.integers(0, 5)) > 0, network_unavailable=draw(st.integers(0, 7)) == 0,
                       labels={"zone": draw(st.sampled_from(["a", "b"]))})
             for n in NODE_NAMES if draw(st.integers(0, 6)) > 0]
    return {
        "pools": draw(st.lists(st.sampled_from(POOLS), unique_by=lambda p: p.name)),
        "advertisements": draw(st.lists(st.sampled_from(ADVS), unique_by=lambda a: a.name)),
        "nodes": nodes,
        "live_speakers": draw(st.frozensets(st.sampled_from(NODE_NAMES))),
        "links": draw(st.sampled_from(LINK_SETS)),
    }


@st.composite
def steps(draw: st.DrawFn) -> tuple[dict[str, ServiceFacts | None], dict[str, Any] | None, bool]:
    """(Services that change: key -> new facts or None, a new context or None, tell the keys?)"""
    return draw_step(draw, services, contexts)


Step = tuple[dict[str, ServiceFacts | None], dict[str, Any] | None, bool]


def draw_step(draw: st.DrawFn, facts: Callable[[str], st.SearchStrategy[ServiceFacts | None]],
              context: Callable[[], st.SearchStrategy[dict[str, Any]]]) -> Step:
    """One step of `steps` (layer 2) or `bgp_steps`: the same draws, from that protocol's strategies."""
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=4))
    changes = {k: draw(facts(k)) for k in keys}
    new_context = draw(context()) if draw(st.integers(0, 3)) == 0 else None
    return changes, new_context, draw(st.integers(0, 4)) > 0


def step_services(current: dict[str, ServiceFacts], changes: dict[str, ServiceFacts | None],
                  tell: bool) -> list[str] | None:
    """Apply one step's Service changes to `current`; the keys to tell the planner (None: not told)."""
    for key, facts in changes.items():
        if facts is None:
            current.pop(f"ns/{key}", None)
        else:
            current[f"ns/{key}"] = facts
    return [f"ns/{k}" for k in changes] if tell else None


def same_l2(a: Plan, b: Plan) -> None:
    assert a.owners == b.owners
    assert a.service_owners == b.service_owners
    assert a.announce == b.announce
    assert a.problems == b.problems
    assert a.by_interface() == b.by_interface() and a.services_announced() == b.services_announced()


def l2_tables(p: Plan) -> Any:
    """A plan's tables as plain data, copied (to compare with the same plan later)."""
    return (dict(p.owners), {k: dict(v) for k, v in p.service_owners.items()}, dict(p.announce))


def bgp_tables(p: BGPPlan) -> Any:
    return ({peer: dict(t) for peer, t in p.routes.items()},
            {k: list(v) for k, v in p.service_peers.items()}, {k: list(v) for k, v in p.announced.items()})


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NODE_NAMES), contexts(), st.lists(steps(), min_size=1, max_size=8),
       st.sampled_from([None, ["eth0"]]))
def test_l2_planner_equals_the_full_plan(node: str, context: dict[str, Any], seq: list[Any],
                                         default_interfaces: list[str] | None) -> None:
    planner = L2Planner(node, default_interfaces=default_interfaces)
    current: dict[str, ServiceFacts] = {}
    handed: list[tuple[Plan, Any]] = []
    for changes, new_context, tell in seq:
        told = step_services(current, changes, tell)
        context = new_context or context
        got = planner.plan(dict(current), told, **context)
        want = compute_plan(node, current.values(), default_interfaces=default_interfaces, **context)
        same_l2(got, want)
        handed.append((got, l2_tables(got)))
    for plan, tables in handed:  # a plan handed out never changes (copy on write, `cowmap`)
        assert l2_tables(plan) == tables


def test_l2_planner_redoes_only_the_changed_service() -> None:
    ctx = {"pools": POOLS, "advertisements": ADVS[:1], "nodes": [NodeFacts(n) for n in NODE_NAMES],
           "live_speakers": NODE_NAMES}
    planner = L2Planner("n1")
    services = {f"ns/s{i}": ServiceFacts("ns", f"s{i}", (f"10.0.0.{i + 1}",), "a", False, ("n1",))
                for i in range(5)}
    planner.plan(services, None, **ctx)
    assert planner.replanned == 5
    services["ns/s2"] = ServiceFacts("ns", "s2", ("10.0.0.3",), "a", False, ("n2",))
    got = planner.plan(services, ["ns/s2"], **ctx)
    assert planner.replanned == 1
    same_l2(got, compute_plan("n1", services.values(), **ctx))
    planner.plan(services, [], **{**ctx, "live_speakers": ["n1", "n2"]})  # the context moved: all of them
    assert planner.replanned == 5


# --- BGP ----------------------------------------------------------------------------------------------

BGP_NODE = "n1"
BGP_POOLS = [
    Pool("a", (parse_address_range("10.0.0.0/29"),), labels={"env": "lab"}),
    Pool("b", (parse_address_range("10.0.1.0/28"), parse_address_range("fd00::/124")),
         labels={"env": "prod"}),
]


def bgp_adv(name: str, **spec: Any) -> BGPAdvertisementFacts:
    return BGPAdvertisementFacts.from_object({"metadata": {"name": name}, "spec": spec})


def bgp_peer(name: str, **spec: Any) -> PeerFacts:
    base: dict[str, Any] = {"myASN": 64513, "peerASN": 64512, "peerAddress": "172.18.0.1", **spec}
    return PeerFacts.from_object({"metadata": {"name": name}, "spec": base})


BGP_ADVS = [
    bgp_adv("all"),
    bgp_adv("a-agg", ipAddressPools=["a"], aggregationLength=30, localPref=100, communities=["no-export"]),
    bgp_adv("a-pref", ipAddressPools=["a"], localPref=200, communities=["65000:1", "unknown-alias"]),
    bgp_adv("b-v6agg", ipAddressPools=["b"], aggregationLengthV6=120, peers=["ibgp", "nobody"]),
    bgp_adv("b-wide", ipAddressPoolSelectors=[{"matchLabels": {"env": "prod"}}], aggregationLength=24),
    bgp_adv("zone-b", nodeSelectors=[{"matchLabels": {"zone": "b"}}], communities=["large:1:2:3"]),
    bgp_adv("broken", aggregationLength="x"),
]
BGP_PEERS = [
    bgp_peer("ebgp"),
    bgp_peer("ibgp", peerASN=64513, peerAddress="172.18.0.9"),
    bgp_peer("v6", peerAddress="fd00:1::1"),
    bgp_peer("zone-a", nodeSelectors=[{"matchLabels": {"zone": "a"}}]),
    bgp_peer("secret", passwordSecret={"name": "s"}),
]


@st.composite
def bgp_contexts(draw: st.DrawFn) -> dict[str, Any]:
    labels = {"zone": draw(st.sampled_from(["a", "b"]))}
    if draw(st.integers(0, 6)) == 0:
        labels[EXCLUDE_FROM_LB_LABEL] = ""
    node_facts = None if draw(st.integers(0, 8)) == 0 else NodeFacts(
        BGP_NODE, labels=labels, network_unavailable=draw(st.integers(0, 8)) == 0)
    return {
        "node_facts": node_facts,
        "pools": draw(st.lists(st.sampled_from(BGP_POOLS), unique_by=lambda p: p.name)),
        "advertisements": draw(st.lists(st.sampled_from(BGP_ADVS), unique_by=lambda a: a.name)),
        "peers": draw(st.lists(st.sampled_from(BGP_PEERS), unique_by=lambda p: p.name, min_size=1)),
        "aliases": draw(st.sampled_from([{}, {"no-export": "65535:65281"}])),
        "passwords": draw(st.sampled_from([{}, {"secret": "pw"}])),
        "node_addresses": ("172.18.0.3",),
        "node_networks": draw(st.sampled_from([None, ["172.18.0.3/16"]])),
    }


@st.composite
def bgp_services(draw: st.DrawFn, key: str) -> ServiceFacts | None:
    if draw(st.integers(0, 4)) == 0:
        return None
    ips = tuple(dict.fromkeys(draw(st.lists(st.sampled_from(
        ["10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.1.1", "10.0.1.9", "fd00::1", "fd00::9", "10.9.9.9"]),
        min_size=1, max_size=2))))
    eps = tuple(draw(st.lists(st.sampled_from([BGP_NODE, "n2", None]), max_size=2)))
    return ServiceFacts("ns", key, ips, draw(st.sampled_from([None, "a", "b"])), draw(st.booleans()), eps)


@st.composite
def bgp_steps(draw: st.DrawFn) -> tuple[dict[str, ServiceFacts | None], dict[str, Any] | None, bool]:
    return draw_step(draw, bgp_services, bgp_contexts)


@settings(max_examples=150, deadline=None)
@given(bgp_contexts(), st.lists(bgp_steps(), min_size=1, max_size=8), st.booleans())
def test_bgp_planner_equals_the_full_plan(context: dict[str, Any], seq: list[Any], ignore: bool) -> None:
    planner = BGPPlanner(BGP_NODE, ignore_exclude_label=ignore)
    current: dict[str, ServiceFacts] = {}
    handed: list[tuple[BGPPlan, Any]] = []
    for changes, new_context, tell in seq:
        told = step_services(current, changes, tell)
        context = new_context or context
        got = planner.plan(dict(current), told, **context)
        want = compute_bgp_plan(BGP_NODE, services=current.values(), ignore_exclude_label=ignore, **context)
        assert got == want
        handed.append((got, bgp_tables(got)))
    for plan, tables in handed:  # a plan handed out never changes (copy on write, `cowmap`)
        assert bgp_tables(plan) == tables


def test_bgp_planner_redoes_only_the_changed_service_and_shares_aggregates() -> None:
    ctx = {"node_facts": NodeFacts(BGP_NODE), "pools": BGP_POOLS, "advertisements": [BGP_ADVS[1]],
           "peers": [BGP_PEERS[1]], "node_addresses": ("172.18.0.3",)}
    planner = BGPPlanner(BGP_NODE)
    services = {f"ns/s{i}": ServiceFacts("ns", f"s{i}", (f"10.0.0.{i + 1}",), "a", False, ("n2",))
                for i in range(3)}
    planner.plan(services, None, **ctx)
    assert planner.replanned == 3
    del services["ns/s0"]  # 10.0.0.1: the /30 stays, announced for s1 and s2
    got = planner.plan(services, ["ns/s0"], **ctx)
    assert planner.replanned == 1
    assert got == compute_bgp_plan(BGP_NODE, services=services.values(), **ctx)
    assert list(got.routes["ibgp"]) == ["10.0.0.0/30"]
