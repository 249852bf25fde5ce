"""lbspeaker.plan: tables for the L2Advertisement/ETP/node rules, and order-independence properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.election import elect_l2
from lbspeaker.facts import L2AdvertisementFacts, NodeFacts, Pool, ServiceFacts
from lbspeaker.links import IFF_NOARP, IFF_UP, LinkInfo
from lbspeaker.plan import compute_plan

POOL = Pool("pool", (parse_address_range("172.18.255.200-172.18.255.250"),), labels={"env": "lab"})
OTHER = Pool("other", (parse_address_range("10.9.0.0/24"),), labels={"env": "prod"})
NODES = [NodeFacts("kind-worker"), NodeFacts("kind-worker2"), NodeFacts("kind-worker3")]
ALL = {"kind-worker", "kind-worker2", "kind-worker3"}
LINKS = [LinkInfo("lo", 1, flags=IFF_UP | 0x8), LinkInfo("eth0", 2), LinkInfo("eth1", 3),
         LinkInfo("veth123", 4), LinkInfo("eth2", 5, flags=IFF_UP | IFF_NOARP)]
IP = "172.18.255.200"


def svc(name: str = "web", ips: tuple[str, ...] = (IP,), pool: str | None = "pool", local: bool = False,
        eps: tuple[str | None, ...] = ("kind-worker", "kind-worker2", "kind-worker3")) -> ServiceFacts:
    return ServiceFacts("default", name, ips, pool, local, eps)


def adv(name: str = "l2", **kw: object) -> L2AdvertisementFacts:
    return L2AdvertisementFacts(name, **kw)  # type: ignore[arg-type]


def owner(ip: str, nodes: set[str]) -> str:
    got = elect_l2(ip, nodes)
    assert got is not None
    return got


def plan_for(node: str, services=None, advs=None, nodes=None, live=None, links=LINKS, **kw):
    return compute_plan(node, services if services is not None else [svc()], [POOL, OTHER],
                        advs if advs is not None else [adv()], nodes if nodes is not None else NODES,
                        live if live is not None else ALL, links, **kw)


def test_basic_one_owner_default_interfaces() -> None:
    expected = owner(IP, ALL)
    for n in ALL:
        p = plan_for(n)
        assert p.owners == {IP: expected}
        assert p.service_owners == {"default/web": {IP: expected}}
        if n == expected:
            assert p.by_interface() == {"eth0": [IP], "eth1": [IP]}
            assert p.services_announced() == {"default/web": ["eth0", "eth1"]}
        else:
            assert p.announce == {}


@pytest.mark.parametrize(
    "case, advs, services, expect_candidates",
    [
        ("no advertisement", [], None, None),
        ("advertisement for another pool", [adv(ip_address_pools=("other",))], None, None),
        ("named pool", [adv(ip_address_pools=("pool",))], None, ALL),
        ("pool selector", [adv(ip_address_pool_selectors=({"matchLabels": {"env": "lab"}},))], None, ALL),
        ("pool selector no match", [adv(ip_address_pool_selectors=({"matchLabels": {"env": "x"}},))],
         None, None),
        ("node selector",
         [adv(node_selectors=({"matchLabels": {"kubernetes.io/hostname": "kind-worker2"}},))], None,
         {"kind-worker2"}),
        ("two advs union",
         [adv("a", node_selectors=({"matchLabels": {"kubernetes.io/hostname": "kind-worker2"}},)),
          adv("b", node_selectors=({"matchLabels": {"kubernetes.io/hostname": "kind-worker3"}},))],
         None, {"kind-worker2", "kind-worker3"}),
        ("no endpoints: nobody", None, [svc(eps=())], set()),
        ("ETP local", None, [svc(local=True, eps=("kind-worker3",))], {"kind-worker3"}),
        ("ETP local none local", None, [svc(local=True, eps=(None,))], set()),
        ("pool found by address", None, [svc(pool=None)], ALL),
        ("unknown pool annotation falls back to address", None, [svc(pool="gone")], ALL),
        ("IP in no pool", None, [svc(ips=("192.0.2.1",), pool=None)], None),
    ],
)
def test_candidate_table(case: str, advs, services, expect_candidates) -> None:
    nodes = [NodeFacts(n.name, labels={"kubernetes.io/hostname": n.name}) for n in NODES]
    p = plan_for("kind-worker", services=services, advs=advs, nodes=nodes)
    ip = (services or [svc()])[0].ips[0]
    if expect_candidates is None:
        assert ip not in p.owners, case
    else:
        assert p.owners[ip] == elect_l2(ip, expect_candidates), case


@pytest.mark.parametrize(
    "node, live, expect_excluded",
    [
        (NodeFacts("kind-worker", ready=False), ALL, False),  # Ready is not read, as in MetalLB
        (NodeFacts("kind-worker", network_unavailable=True), ALL, True),
        (NodeFacts("kind-worker", labels={EXCLUDE_FROM_LB_LABEL: ""}), ALL, True),
        (NodeFacts("kind-worker"), ALL - {"kind-worker"}, True),
        (NodeFacts("kind-worker"), ALL, False),
    ],
)
def test_node_conditions(node: NodeFacts, live: set[str], expect_excluded: bool) -> None:
    nodes = [node, *NODES[1:]]
    # Pick an IP that kind-worker would win, to see the exclusion.
    ip = next(f"172.18.255.{i}" for i in range(200, 251) if owner(f"172.18.255.{i}", ALL) == "kind-worker")
    p = plan_for("kind-worker2", services=[svc(ips=(ip,))], nodes=nodes, live=live)
    assert (p.owners[ip] != "kind-worker") == expect_excluded


def test_ignore_exclude_label() -> None:
    nodes = [NodeFacts(n.name, labels={EXCLUDE_FROM_LB_LABEL: ""}) for n in NODES]
    assert plan_for("kind-worker", nodes=nodes).owners[IP] is None
    assert plan_for("kind-worker", nodes=nodes, ignore_exclude_label=True).owners[IP] == owner(IP, ALL)


def test_unknown_node_not_candidate() -> None:
    p = plan_for("kind-worker", nodes=NODES[:1], live=ALL)
    assert p.owners[IP] == "kind-worker"


def test_interfaces_from_advertisement_and_missing_reported() -> None:
    me = owner(IP, ALL)
    assert me is not None
    p = plan_for(me, advs=[adv(interfaces=("eth1", "bond9"))])
    assert p.by_interface() == {"eth1": [IP]}
    assert [(x.reason, x.name) for x in p.problems] == [("InterfaceNotFound", "l2")]
    assert "bond9" in p.problems[0].message
    # Interfaces that exist but are unusable (NOARP) give nothing: reported as NoInterface.
    p = plan_for(me, advs=[adv(interfaces=("eth2",))])
    assert p.announce[IP].interfaces == ()
    assert [x.reason for x in p.problems] == ["NoInterface"]


def test_interfaces_on_non_owner_still_reports_missing() -> None:
    other = sorted(ALL - {owner(IP, ALL)})[0]
    p = plan_for(other, advs=[adv(interfaces=("nope",))])
    assert [x.reason for x in p.problems] == ["InterfaceNotFound"]


def test_default_interfaces_override() -> None:
    me = owner(IP, ALL)
    p = plan_for(me, default_interfaces=["eth1"])
    assert p.by_interface() == {"eth1": [IP]}
    # An advertisement with its own list is honoured as is.
    p = plan_for(me, advs=[adv(interfaces=("eth0",))], default_interfaces=["eth1"])
    assert p.by_interface() == {"eth0": [IP]}


def test_selector_problems() -> None:
    p = plan_for("kind-worker", advs=[
        adv("a", node_selectors=({"matchLabels": {"zone": "mars"}},)),
        adv("b", ip_address_pools=("missing",)),
        adv("c", ip_address_pool_selectors=({"matchLabels": {"env": "none"}},)),
    ])
    assert {(x.name, x.reason) for x in p.problems} == {
        ("a", "NodeSelectorMatchesNothing"), ("b", "UnknownPool"), ("c", "PoolSelectorMatchesNothing")}


def test_shared_ip_one_announcement() -> None:
    services = [svc("a"), svc("b"), svc("c", ips=("172.18.255.201",))]
    me = owner(IP, ALL)
    p = plan_for(me, services=services)
    assert p.announce[IP].services == ("default/a", "default/b")
    assert p.by_interface()["eth0"].count(IP) == 1
    assert p.service_owners["default/a"] == p.service_owners["default/b"] == {IP: me}


def test_shared_ip_union_of_candidates() -> None:
    # ETP Local sharers normally select the same pods; if they do not, any node serving one of them.
    services = [svc("a", local=True, eps=("kind-worker",)), svc("b", local=True, eps=("kind-worker3",))]
    p = plan_for("kind-worker", services=services)
    assert p.owners[IP] == owner(IP, {"kind-worker", "kind-worker3"})


def test_dual_stack_uses_first_ip() -> None:
    v6pool = Pool("v6", (parse_address_range("fc00:f853:ccd:e793::/64"),), labels={})
    s = ServiceFacts("default", "ds", (IP, "fc00:f853:ccd:e793::c8"), None, False, ("kind-worker",))
    p = compute_plan("kind-worker", [s], [POOL, v6pool], [adv()], NODES, ALL, LINKS)
    assert p.owners[IP] == p.owners["fc00:f853:ccd:e793::c8"] == owner(IP, ALL)


def test_no_links_known() -> None:
    me = owner(IP, ALL)
    p = plan_for(me, links=None)
    assert p.announce[IP].interfaces == ()
    assert p.problems == []


# --- properties -------------------------------------------------------------------------------------

NODE_NAMES = [f"node-{i}" for i in range(6)]


@st.composite
def worlds(draw):
    nodes = [
        NodeFacts(n, ready=draw(st.booleans()) or draw(st.booleans()),
                  network_unavailable=draw(st.booleans()) and draw(st.booleans()),
                  labels={"zone": draw(st.sampled_from(["a", "b"]))})
        for n in NODE_NAMES
    ]
    live = draw(st.sets(st.sampled_from(NODE_NAMES)))
    n_svc = draw(st.integers(1, 8))
    services = []
    for i in range(n_svc):
        ip = f"172.18.255.{draw(st.integers(200, 206))}"
        eps = tuple(draw(st.lists(st.sampled_from([*NODE_NAMES, None]), max_size=4)))
        services.append(ServiceFacts("ns", f"s{i}", (ip,), "pool", draw(st.booleans()), eps))
    advs = draw(st.lists(st.sampled_from([
        adv("all"), adv("za", node_selectors=({"matchLabels": {"zone": "a"}},)),
        adv("zb", node_selectors=({"matchLabels": {"zone": "b"}},)),
        adv("other", ip_address_pools=("other",)),
    ]), max_size=3, unique_by=lambda a: a.name))
    return nodes, live, services, advs


@settings(max_examples=150, deadline=None)
@given(worlds(), st.randoms(use_true_random=False))
def test_every_node_agrees_and_at_most_one_owner(world, rnd: random.Random) -> None:
    nodes, live, services, advs = world
    plans = {}
    for n in NODE_NAMES:
        s, nd, a = list(services), list(nodes), list(advs)
        rnd.shuffle(s)
        rnd.shuffle(nd)
        rnd.shuffle(a)
        lv = list(live)
        rnd.shuffle(lv)
        plans[n] = compute_plan(n, s, [POOL, OTHER], a, nd, lv, LINKS)
    first = plans[NODE_NAMES[0]]
    for p in plans.values():
        assert p.owners == first.owners
        assert p.service_owners == first.service_owners
    for ip, own in first.owners.items():
        announcers = [n for n, p in plans.items() if ip in p.announce]
        assert announcers == ([own] if own else [])
        if own is not None:
            assert own in live
