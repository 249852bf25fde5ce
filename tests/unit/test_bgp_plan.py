"""The BGP plan (pure): peers selecting the node, per-service decisions, routes, problems."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.bgp.plan import compute_bgp_plan, on_node_network
from lbspeaker.bgp.routes import RouteAttrs
from lbspeaker.facts import BGPAdvertisementFacts, NodeFacts, PeerFacts, Pool, ServiceFacts, community_aliases

NODE = "kind-worker"
NODE_IP = "172.18.0.3"
NETS = ["172.18.0.3/16"]
POOL = Pool("bgp", (parse_address_range("198.51.100.0/24"),), labels={"tier": "bgp"})
L2POOL = Pool("l2", (parse_address_range("172.18.255.200-172.18.255.250"),), labels={})


def peer(name: str = "router", **spec: Any) -> PeerFacts:
    base: dict[str, Any] = {"myASN": 64513, "peerASN": 64512, "peerAddress": "172.18.0.1"}
    base.update(spec)
    return PeerFacts.from_object({"metadata": {"name": name}, "spec": base})


def adv(name: str = "adv", **spec: Any) -> BGPAdvertisementFacts:
    return BGPAdvertisementFacts.from_object({"metadata": {"name": name}, "spec": spec})


def svc(name: str = "web", ip: str = "198.51.100.10", local: bool = False,
        endpoints: tuple[str | None, ...] = ("kind-worker2",), pool: str | None = None) -> ServiceFacts:
    return ServiceFacts("default", name, (ip,), pool=pool, etp_local=local, serving_endpoints=endpoints)


def node(labels: dict[str, str] | None = None, **kw: Any) -> NodeFacts:
    return NodeFacts(NODE, labels=labels or {"kubernetes.io/hostname": NODE}, **kw)


def plan(services: list[ServiceFacts], advs: list[BGPAdvertisementFacts] | None = None,
         peers: list[PeerFacts] | None = None, **kw: Any) -> Any:
    kw.setdefault("node_facts", node())
    return compute_bgp_plan(
        NODE, services=services, pools=[POOL, L2POOL],
        advertisements=advs if advs is not None else [adv(ipAddressPools=["bgp"])],
        peers=peers if peers is not None else [peer()], node_addresses=[NODE_IP], node_networks=NETS, **kw,
    )


@pytest.mark.parametrize(
    ("service", "announced"),
    [
        (svc(), True),  # ETP Cluster, endpoint elsewhere
        (svc(endpoints=()), False),  # no endpoint anywhere
        (svc(local=True, endpoints=("kind-worker2",)), False),  # Local, none here
        (svc(local=True, endpoints=(NODE, "kind-worker2")), True),  # Local, one here
        (svc(ip="172.18.255.201"), False),  # L2-only pool: not a BGP matter
        (svc(ip="203.0.113.9"), False),  # in no pool
    ],
)
def test_service_decision(service: ServiceFacts, announced: bool) -> None:
    p = plan([service])
    assert (service.key in p.announced) is announced
    if announced:
        assert p.routes == {"router": {f"{service.ips[0]}/32": RouteAttrs()}}
        assert p.service_peers == {service.key: ["router"]}
    else:
        assert p.routes == {}


@pytest.mark.parametrize(
    ("labels", "kw", "announces"),
    [
        ({}, {}, True),
        ({EXCLUDE_FROM_LB_LABEL: ""}, {}, False),
        ({EXCLUDE_FROM_LB_LABEL: ""}, {"ignore_exclude_label": True}, True),
    ],
)
def test_excluded_node_keeps_sessions_but_announces_nothing(
    labels: dict[str, str], kw: dict[str, Any], announces: bool
) -> None:
    p = plan([svc()], node_facts=node(labels), **kw)
    assert [x.name for x in p.peers] == ["router"]
    assert bool(p.routes) is announces


def test_network_unavailable_node_announces_nothing() -> None:
    assert plan([svc()], node_facts=node(network_unavailable=True)).routes == {}


@pytest.mark.parametrize(
    ("selectors", "selected"),
    [
        ([], True),
        ([{"matchLabels": {"kubernetes.io/hostname": NODE}}], True),
        ([{"matchLabels": {"kubernetes.io/hostname": "other"}}], False),
        ([{"matchExpressions": [{"key": "x", "operator": "Bogus"}]}], False),  # invalid: nothing
    ],
)
def test_peer_node_selectors(selectors: list[dict[str, Any]], selected: bool) -> None:
    p = plan([svc()], peers=[peer(nodeSelectors=selectors)])
    assert p.selected_peers == (["router"] if selected else [])


def test_advertisement_selection_pools_selectors_nodes_peers() -> None:
    peers = [peer("a"), peer("b", peerAddress="172.18.0.9")]
    advs = [
        adv("by-selector", ipAddressPoolSelectors=[{"matchLabels": {"tier": "bgp"}}], peers=["a"],
            communities=["65535:65282"]),
        adv("other-node", ipAddressPools=["bgp"], nodeSelectors=[{"matchLabels": {"x": "y"}}],
            communities=["1:1"]),
    ]
    p = plan([svc()], advs=advs, peers=peers)
    assert p.routes == {"a": {"198.51.100.10/32": RouteAttrs(communities=("65535:65282",))}}
    assert p.service_peers == {"default/web": ["a"]}


def test_all_pools_when_no_pool_named_and_aggregation() -> None:
    p = plan([svc(), svc("b", ip="198.51.100.77")], advs=[adv(aggregationLength=24)])
    assert p.routes == {"router": {"198.51.100.0/24": RouteAttrs()}}
    assert p.announced == {"default/b": ["198.51.100.77"], "default/web": ["198.51.100.10"]}


def test_local_pref_conflict_is_a_problem_and_stable() -> None:
    ibgp = peer(peerASN=64513)
    advs = [adv("z-adv", ipAddressPools=["bgp"], localPref=200),
            adv("a-adv", ipAddressPools=["bgp"], localPref=100)]
    p1 = plan([svc()], advs=advs, peers=[ibgp])
    p2 = plan([svc()], advs=list(reversed(advs)), peers=[ibgp])
    assert p1.routes == p2.routes == {"router": {"198.51.100.10/32": RouteAttrs(local_pref=100)}}
    (conflict,) = [x for x in p1.problems if x.reason == "LocalPrefConflict"]
    assert conflict.name == "default/web"
    assert "a-adv=100" in conflict.message and "z-adv=200" in conflict.message
    assert p1.problems == p2.problems


def test_local_pref_not_sent_to_ebgp_is_reported() -> None:
    p = plan([svc()], advs=[adv(localPref=50)])
    assert p.routes["router"]["198.51.100.10/32"].local_pref is None
    assert any(x.reason == "LocalPrefNotSent" for x in p.problems)


def test_community_aliases() -> None:
    aliases = community_aliases([{"metadata": {"name": "c"}, "spec": {"communities": [
        {"name": "no-advertise", "value": "65535:65282"}, {"name": "big", "value": "large:1:2:3"}]}}])
    p = plan([svc()], advs=[adv(communities=["no-advertise", "big", "missing"])], aliases=aliases)
    assert p.routes["router"]["198.51.100.10/32"] == RouteAttrs(
        communities=("65535:65282",), large_communities=("1:2:3",))
    assert any(x.reason == "UnknownCommunity" and x.name == "adv" for x in p.problems)


def test_password_secret_missing_leaves_peer_out_with_reason() -> None:
    pf = peer(passwordSecret={"name": "bgp-pw"})
    p = plan([svc()], peers=[pf])
    assert p.peers == [] and p.routes == {}
    assert "bgp-pw" in p.peer_reasons["router"]
    p2 = plan([svc()], peers=[pf], passwords={"router": "s3cret"})
    assert p2.peers[0].password == "s3cret"


def test_peer_not_on_node_network_reported_but_configured() -> None:
    p = plan([svc()], peers=[peer(peerAddress="10.99.0.1")])
    assert [x.name for x in p.peers] == ["router"]
    assert "10.99.0.1" in p.peer_reasons["router"]
    assert plan([svc()], peers=[peer(peerAddress="10.99.0.1", ebgpMultiHop=True)]).peer_reasons == {}


def test_bad_input_never_raises() -> None:
    bad_peer = PeerFacts.from_object({"metadata": {"name": "bad"}, "spec": {"myASN": "x"}})
    bad_adv = BGPAdvertisementFacts.from_object(
        {"metadata": {"name": "bad"}, "spec": {"aggregationLength": 99}})
    p = plan([svc()], advs=[bad_adv, adv("ok")], peers=[bad_peer, peer()])
    assert {(x.kind, x.name, x.reason) for x in p.problems} >= {
        ("BGPPeer", "bad", "InvalidPeer"), ("BGPAdvertisement", "bad", "InvalidAdvertisement")}
    assert p.routes == {"router": {"198.51.100.10/32": RouteAttrs()}}


def test_unnumbered_peer_is_not_configured() -> None:
    pf = PeerFacts.from_object(
        {"metadata": {"name": "u"}, "spec": {"myASN": 1, "peerASN": 2, "interface": "eth0"}})
    p = plan([svc()], peers=[pf])
    assert p.peers == [] and "unnumbered" in p.peer_reasons["u"]


def test_on_node_network() -> None:
    assert on_node_network("172.18.0.1", ["172.18.0.3/16"])
    assert not on_node_network("172.18.0.1", ["172.18.0.3/32", "10.0.0.1/8"])
    assert not on_node_network("bogus", ["172.18.0.3/16"])


names = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(names, st.integers(0, 255), st.booleans(),
                       st.lists(st.sampled_from([NODE, "kind-worker2", None]), max_size=3)),
             max_size=6, unique_by=lambda t: t[0]),
    st.lists(st.tuples(names, st.sampled_from([None, 100, 200]), st.sampled_from([32, 24])),
             max_size=3, unique_by=lambda t: t[0]),
    st.randoms(use_true_random=False),
)
def test_plan_is_order_independent_and_local_means_local(
    services: list[Any], adv_specs: list[Any], rnd: Any
) -> None:
    svcs = [svc(n, ip=f"198.51.100.{i}", local=loc, endpoints=tuple(eps)) for n, i, loc, eps in services]
    advs = [adv(n, **({"localPref": lp} if lp else {}), aggregationLength=agg) for n, lp, agg in adv_specs]
    p1 = plan(svcs, advs=advs, peers=[peer(peerASN=64513)])
    rnd.shuffle(svcs)
    rnd.shuffle(advs)
    p2 = plan(svcs, advs=advs, peers=[peer(peerASN=64513)])
    assert p1.routes == p2.routes and p1.problems == p2.problems and p1.service_peers == p2.service_peers
    for s in svcs:
        if s.key in p1.announced:
            assert advs and (NODE in s.serving_endpoints if s.etp_local else s.serving_endpoints)


# --- pure helpers of the BGP side (speaker/sessions.py, speaker/secrets.py, netinfo.py) ------------

def test_merge_session_replaces_only_this_node() -> None:
    from lbspeaker.speaker.sessions import SessionEntry, merge_session

    status = {"conditions": [{"type": "X"}], "sessions": [
        {"node": "b", "state": "Established", "reason": ""}, {"node": "a", "state": "Idle", "reason": "old"}]}
    new = merge_session(status, "a", SessionEntry("Active", "MD5", "2026-01-01T00:00:00Z"))
    assert new["conditions"] == [{"type": "X"}]
    assert new["sessions"] == [
        {"node": "a", "state": "Active", "reason": "MD5", "since": "2026-01-01T00:00:00Z"},
        {"node": "b", "state": "Established", "reason": ""}]
    assert merge_session(new, "a", None)["sessions"] == [{"node": "b", "state": "Established", "reason": ""}]
    assert merge_session(None, "a", None) == {"sessions": []}


def test_secret_password_and_proc_routes() -> None:
    from lbspeaker.links import parse_proc_routes
    from lbspeaker.speaker.secrets import secret_password

    assert secret_password({"data": {"password": "czNjcmV0"}}) == "s3cret"
    assert secret_password({"stringData": {"password": "pw"}}) == "pw"
    assert secret_password({"data": {"password": "!!"}}) is None
    assert secret_password({"data": {}}) is None and secret_password(None) is None
    v4 = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
          "eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
    v6 = ("fc000000000000000000000000000000 40 00000000000000000000000000000000 00 "
          "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n")
    assert parse_proc_routes(v4, v6) == ["172.18.0.0/16", "fc00::/64"]


def test_different_local_pref_per_zone_is_not_a_conflict() -> None:
    """Zone a prefers 100, zone b 200: each node sends its own zone's value, no problem reported."""
    ibgp = peer(peerASN=64513)
    advs = [adv(f"{zone}-zone", ipAddressPools=["bgp"], localPref=pref,
                nodeSelectors=[{"matchLabels": {"zone": zone}}]) for zone, pref in (("a", 100), ("b", 200))]
    p = plan([svc()], advs=advs, peers=[ibgp], node_facts=node({"zone": "b"}))
    assert p.routes == {"router": {"198.51.100.10/32": RouteAttrs(local_pref=200)}}
    assert not [x for x in p.problems if x.reason == "LocalPrefConflict"]


def test_ipv6_service_over_dual_stack_ipv4_session_takes_the_node_ipv6_next_hop() -> None:
    pool6 = Pool("bgp6", (parse_address_range("fd00:5::/120"),), labels={})
    p = compute_bgp_plan(
        NODE, node_facts=node(), services=[svc(ip="fd00:5::10")], pools=[pool6],
        advertisements=[adv(ipAddressPools=["bgp6"])],
        peers=[peer("v4", dualStackAddressFamily=True), peer("v6only", peerAddress="fc00:f853:ccd:e793::1",
                                                           routerID="172.18.0.3")],
        node_addresses=[NODE_IP, "fc00:f853:ccd:e793::3"], node_networks=[*NETS, "fc00:f853:ccd:e793::3/64"],
    )
    assert p.routes == {"v4": {"fd00:5::10/128": RouteAttrs()}, "v6only": {"fd00:5::10/128": RouteAttrs()}}
    by_name = {s.name: s for s in p.peers}
    assert by_name["v4"].next_hop(6) == "fc00:f853:ccd:e793::3"
    assert by_name["v6only"].next_hop(6) == "self"
    assert p.problems == []

# --- serviceSelectors (MetalLB's bgpAdsForService, issue 10) ------------------------------------


def test_service_selectors_pick_the_advertisements_of_each_service() -> None:
    prod = adv("prod", ipAddressPools=["bgp"], communities=["65000:1"], serviceSelectors=[
        {"matchLabels": {"env": "prod"}}])
    staged = adv("staged", ipAddressPools=["bgp"], communities=["65000:2"], serviceSelectors=[
        {"matchExpressions": [{"key": "env", "operator": "In", "values": ["staged"]}]}])
    p_svc, s_svc, o_svc = (ServiceFacts("default", name, (ip,), serving_endpoints=("n",), labels={"env": env})
                           for name, ip, env in (("p", "198.51.100.10", "prod"),
                                                 ("s", "198.51.100.11", "staged"),
                                                 ("o", "198.51.100.12", "dev")))
    p = plan([p_svc, s_svc, o_svc], [prod, staged])
    routes = p.routes["router"]
    assert sorted(routes) == ["198.51.100.10/32", "198.51.100.11/32"]  # the unselected one: not announced
    assert routes["198.51.100.10/32"] != routes["198.51.100.11/32"]  # each with its own community
    assert "default/o" not in p.announced


def test_service_selectors_with_aggregation_is_invalid() -> None:
    bad = adv("bad", ipAddressPools=["bgp"], aggregationLength=24,
              serviceSelectors=[{"matchLabels": {"env": "prod"}}])
    assert "aggregationLength at 32" in bad.error
    p = plan([ServiceFacts("default", "p", ("198.51.100.10",), serving_endpoints=("n",),
                           labels={"env": "prod"})], [bad])
    assert p.routes == {}
    assert [x.reason for x in p.problems] == ["InvalidAdvertisement"]
