"""lbspeaker.facts: the one reading of API objects, table-tested (Services, pools, nodes,
endpoints, advertisements, keys) and checked against the plans' entry points."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker import facts as F
from lbspeaker.facts import (
    BGPAdvertisementFacts,
    L2AdvertisementFacts,
    NodeFacts,
    Pool,
    endpoint_can_serve,
    read_pool,
    service_facts,
    serving_endpoint_nodes,
)


def svc(name: str = "web", ns: str = "default", *, ann: dict[str, str] | None = None, lb_ip: str = "",
        families: list[str] | None = None, policy: str | None = None, cls: str | None = None,
        typ: str = "LoadBalancer", ingress: list[str] | None = None, etp: str = "Cluster") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": typ, "ports": [{"port": 80, "protocol": "TCP"}],
                            "selector": {"app": name}, "externalTrafficPolicy": etp}
    if lb_ip:
        spec["loadBalancerIP"] = lb_ip
    if families is not None:
        spec["ipFamilies"] = families
    if policy:
        spec["ipFamilyPolicy"] = policy
    if cls:
        spec["loadBalancerClass"] = cls
    meta = {"name": name, "namespace": ns, "annotations": ann or {}}
    obj: dict[str, Any] = {"metadata": meta, "spec": spec}
    if ingress:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": i} for i in ingress]}}
    return obj


@pytest.mark.parametrize(("obj", "flag", "expected"), [
    (svc(), None, True),
    (svc(typ="ClusterIP"), None, False),
    (svc(cls="other"), None, False),
    (svc(cls="lbspeaker.io/lb"), "lbspeaker.io/lb", True),
    (svc(), "lbspeaker.io/lb", False),
])
def test_wants_ip_honours_type_and_class(obj: dict[str, Any], flag: str | None, expected: bool) -> None:
    assert F.wants_ip(obj, flag) is expected


@pytest.mark.parametrize("prefix", ["lbspeaker.io/", "metallb.io/", "metallb.universe.tf/"])
def test_all_three_annotation_spellings(prefix: str) -> None:
    req = F.service_request(svc(ann={prefix + "loadBalancerIPs": "10.0.0.5", prefix + "address-pool": "p",
                                   prefix + "allow-shared-ip": "k"}))
    assert req.requested_ips == ("10.0.0.5",)
    assert req.requested_pool == "p"
    assert req.sharing_key == "k"


def test_our_spelling_wins_over_metallb() -> None:
    req = F.service_request(svc(ann={"metallb.io/address-pool": "theirs",
                                     "lbspeaker.io/address-pool": "ours"}))
    assert req.requested_pool == "ours"


@pytest.mark.parametrize(("obj", "fams", "policy"), [
    (svc(), (4,), "SingleStack"),
    (svc(families=["IPv6"]), (6,), "SingleStack"),
    (svc(families=["IPv6", "IPv4"], policy="RequireDualStack"), (6, 4), "RequireDualStack"),
    (svc(families=["IPv4", "IPv6"], policy="PreferDualStack"), (4, 6), "PreferDualStack"),
])
def test_families(obj: dict[str, Any], fams: tuple[int, ...], policy: str) -> None:
    req = F.service_request(obj)
    assert req.families == fams
    assert req.family_policy == policy
    assert req.families == fams and req.family_policy == policy


@pytest.mark.parametrize(("obj", "words"), [
    (svc(ann={"lbspeaker.io/loadBalancerIPs": "10.0.0.1"}, lb_ip="10.0.0.2"), "both"),
    (svc(ann={"lbspeaker.io/loadBalancerIPs": "banana"}), "not an IP"),
    (svc(ann={"lbspeaker.io/loadBalancerIPs": "10.0.0.1,10.0.0.2"}), "one family"),
])
def test_malformed_requests_raise_with_a_reason(obj: dict[str, Any], words: str) -> None:
    with pytest.raises(F.ServiceError, match=words):
        F.service_request(obj)


def test_backend_key_only_for_local() -> None:
    assert F.service_request(svc()).backend_key is None
    assert F.service_request(svc(etp="Local")).backend_key == "app=web"


def test_ingress_ips() -> None:
    assert F.ingress_ips(svc(ingress=["10.0.0.1", "fd00::1"])) == ["10.0.0.1", "fd00::1"]
    assert F.ingress_ips(svc()) == []



def test_pool_fields_parsed() -> None:
    spec = F.parse_pool({"metadata": {"name": "p"}, "spec": {
        "addresses": ["10.0.0.0/30"], "autoAssign": False, "avoidBuggyIPs": True,
        "serviceAllocation": {"priority": 5, "namespaces": ["a"]}}})
    assert not spec.auto_assign and spec.avoid_buggy_ips
    assert spec.priority == 5 and spec.namespaces == ("a",)




def test_service_facts_extraction() -> None:
    obj = {
        "metadata": {"namespace": "ns", "name": "s",
                     "annotations": {"metallb.io/ip-allocated-from-pool": "pool"}},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
        "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.200"}, {"ip": "fc00::00c8"},
                                                {"hostname": "x"}]}},
    }
    slices = [{"endpoints": [
        {"nodeName": "kind-worker", "conditions": {"ready": True}},
        {"nodeName": "kind-worker2", "conditions": {"ready": False}},
        {"nodeName": "kind-worker3", "conditions": {"ready": False, "serving": True}},
    ]}]
    f = service_facts(obj, slices)
    assert f is not None
    assert f.ips == ("172.18.255.200", "fc00::c8")
    assert f.pool == "pool" and f.etp_local
    assert f.serving_endpoints == ("kind-worker", "kind-worker3")
    assert service_facts({**obj, "spec": {"type": "ClusterIP"}}) is None
    assert service_facts({**obj, "status": {}}) is None


def test_pool_facts_extraction() -> None:
    p = read_pool({"metadata": {"name": "p", "labels": {"a": "b"}},
                    "spec": {"addresses": ["172.18.255.200-172.18.255.250", "bad"]}})
    assert p.name == "p" and p.labels == {"a": "b"}
    assert p.contains("172.18.255.210") and not p.contains("172.18.255.251")



def test_node_facts_from_node() -> None:
    node = {
        "metadata": {"name": "w1", "labels": {"a": "b"}},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "NetworkUnavailable", "status": "False"},
            ]
        },
    }
    f = NodeFacts.from_node(node)
    assert f == NodeFacts("w1", True, False, {"a": "b"})
    assert not NodeFacts.from_node({"metadata": {"name": "x"}}).ready
    conds = [{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "True"}]
    down = {"metadata": {"name": "y"}, "status": {"conditions": conds}}
    assert NodeFacts.from_node(down).network_unavailable


def test_l2adv_from_object_and_pool_match() -> None:
    adv = L2AdvertisementFacts.from_object(
        {
            "metadata": {"name": "a"},
            "spec": {
                "ipAddressPools": ["p1"],
                "ipAddressPoolSelectors": [{"matchLabels": {"tier": "x"}}],
                "nodeSelectors": [{"matchLabels": {"role": "worker"}}],
                "interfaces": ["eth0"],
            },
        }
    )
    assert adv.interfaces == ("eth0",)
    assert adv.matches_pool(Pool("p1"))
    assert adv.matches_pool(Pool("p2", labels={"tier": "x"}))
    assert not adv.matches_pool(Pool("p2", labels={"tier": "y"}))
    assert L2AdvertisementFacts("any").matches_pool(Pool("whatever"))


def test_endpoint_can_serve_and_slices() -> None:
    assert endpoint_can_serve(None)
    assert endpoint_can_serve({"ready": True})
    assert not endpoint_can_serve({"ready": False})
    assert endpoint_can_serve({"ready": False, "serving": True})
    slices: list[dict[str, Any]] = [
        {
            "endpoints": [
                {"nodeName": "w1", "conditions": {"ready": True}},
                {"nodeName": "w2", "conditions": {"ready": False, "serving": False}},
            ]
        },
        {"endpoints": [{"conditions": {}}]},
        {"endpoints": None},
    ]
    assert serving_endpoint_nodes(slices) == ["w1", None]



@pytest.mark.parametrize(
    ("spec", "covers"),
    [
        ({}, True),
        ({"ipAddressPools": ["a"]}, True),
        ({"ipAddressPools": ["b"]}, False),
        ({"ipAddressPoolSelectors": [{"matchLabels": {"zone": "x"}}]}, True),
        ({"ipAddressPoolSelectors": [{"matchLabels": {"zone": "y"}}]}, False),
    ],
)
def test_advertisement_covers_pool(spec: dict[str, Any], covers: bool) -> None:
    zoned = read_pool({"metadata": {"name": "a", "labels": {"zone": "x"}},
                       "spec": {"addresses": ["10.0.0.0/30"]}})
    for kind in (L2AdvertisementFacts, BGPAdvertisementFacts):
        assert kind.from_object({"spec": spec}).matches_pool(zoned) is covers




def test_one_key_shape() -> None:
    assert F.key_of({"metadata": {"namespace": "ns", "name": "a"}}) == "ns/a"
    assert F.key_of({"metadata": {"name": "node1"}}) == "node1"
    facts = service_facts(svc("a", ingress=["10.0.0.1"]))
    assert facts is not None and facts.key == F.key_of(svc("a")) == F.service_request(svc("a")).key


def test_pool_of_does_not_trust_an_annotation_naming_no_pool() -> None:
    pools = {"p": read_pool({"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/30"]}})}
    ghost = F.ServiceFacts("ns", "s", ("10.0.0.1",), pool="gone")
    found = F.pool_of(ghost, "10.0.0.1", pools)
    assert found is not None and found.name == "p"
    assert F.pool_of(F.ServiceFacts("ns", "s", ("10.9.0.1",), pool="gone"), "10.9.0.1", pools) is None


def test_strict_and_lenient_pool_readings_agree_on_a_valid_pool() -> None:
    obj = {"metadata": {"name": "p", "labels": {"a": "b"}, "creationTimestamp": "t"},
           "spec": {"addresses": ["10.0.0.0/30"], "autoAssign": False,
                    "serviceAllocation": {"priority": 5, "namespaces": ["a"]}}}
    assert F.parse_pool(obj) == read_pool(obj)
    relabelled = read_pool({**obj, "metadata": {**obj["metadata"], "labels": {}}})
    assert relabelled != read_pool(obj) and relabelled.same_allocation(read_pool(obj))


def test_serving_endpoint_addresses_count_terminating_but_serving() -> None:
    slices = [{"endpoints": [
        {"addresses": ["10.244.1.2"], "nodeName": "n1", "conditions": {"ready": True}},
        {"addresses": ["10.244.1.3"], "nodeName": "n2", "conditions": {"ready": False, "serving": True}},
        {"addresses": ["10.244.1.4"], "nodeName": "n3", "conditions": {"ready": False, "serving": False}},
        {"addresses": ["10.244.1.5"], "conditions": {}},
    ]}]
    assert F.serving_endpoint_addresses(slices) == [("10.244.1.2", "n1"), ("10.244.1.3", "n2"),
                                                    ("10.244.1.5", "")]


def test_node_addresses() -> None:
    node = F.read_node({"metadata": {"name": "n"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.5"}, {"type": "ExternalIP", "address": "192.0.2.5"},
        {"type": "Hostname", "address": "n"}]}})
    assert node.internal_ips == ("10.0.0.5",) and node.external_ips == ("192.0.2.5",)


def test_invalid_bgp_advertisement_matches_nothing_but_keeps_its_names() -> None:
    adv = BGPAdvertisementFacts.from_object(
        {"metadata": {"name": "bad"}, "spec": {"aggregationLength": 99, "ipAddressPools": ["p"]}})
    assert adv.error and not adv.matches_pool(Pool("p")) and adv.ip_address_pools == ("p",)


def test_read_cluster() -> None:
    cluster = F.read_cluster(
        services=[svc("a", ingress=["10.0.0.1"]), svc("b", cls="other", ingress=["10.0.0.2"])],
        endpointslices=[{"metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
                         "endpoints": [{"nodeName": "n1"}]}],
        pools=[{"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/30"]}}],
        nodes=[{"metadata": {"name": "n1"}}],
        l2advertisements=[{"metadata": {"name": "l2"}, "spec": {}}],
        communities=[{"metadata": {"name": "c"}, "spec": {"communities": [{"name": "x", "value": "1:1"}]}}],
        live_speakers=["n1"],
    )
    assert [s.key for s in cluster.services] == ["default/a"]
    assert cluster.services[0].serving_endpoints == ("n1",)
    assert set(cluster.pools) == {"p"} and set(cluster.nodes) == {"n1"}
    assert cluster.l2_advertisements[0].name == "l2" and cluster.aliases == {"x": "1:1"}
    assert cluster.live_speakers == frozenset({"n1"})


def test_plans_take_one_snapshot() -> None:
    from lbspeaker.bgp.plan import bgp_plan
    from lbspeaker.plan import l2_plan

    cluster = F.read_cluster(
        services=[svc("a", ingress=["10.0.0.1"])],
        endpointslices=[{"metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
                         "endpoints": [{"nodeName": "n1"}]}],
        pools=[{"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/30"]}}],
        nodes=[{"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
               for n in ("n1", "n2")],
        l2advertisements=[{"metadata": {"name": "l2"}, "spec": {}}],
        live_speakers=["n1", "n2"],
    )
    plans = [l2_plan(cluster, n) for n in ("n1", "n2")]
    assert plans[0].owners == plans[1].owners and set(plans[0].owners) == {"10.0.0.1"}
    assert sum("10.0.0.1" in p.announce for p in plans) == 1
    assert bgp_plan(cluster, "n1").routes == {}


def test_service_facts_carry_labels_and_sharing_key() -> None:
    obj = {"metadata": {"namespace": "ns", "name": "s", "labels": {"app": "a"},
                        "annotations": {"metallb.universe.tf/allow-shared-ip": "k"}},
           "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}
    f = F.service_facts(obj)
    assert f is not None and f.labels == {"app": "a"} and f.sharing_key == "k"


def test_l2_advertisement_reads_service_selectors_and_preferences() -> None:
    a = F.L2AdvertisementFacts.from_object({"metadata": {"name": "a"}, "spec": {
        "nodeSelectors": [{"matchLabels": {"role": "lb"}}],
        "serviceSelectors": [{"matchLabels": {"app": "a"}}],
        "preferredNodeSelectors": [{"weight": 60, "preference": {"matchLabels": {"zone": "z1"}}},
                                   {"weight": 0, "preference": {}}, "junk"]}})
    assert a.matches_service({"app": "a"}) and not a.matches_service({"app": "b"})
    assert a.preferred == ((60, {"matchLabels": {"zone": "z1"}}),)  # what the schema refuses is skipped
    assert a.preference(F.NodeFacts("n", labels={"role": "lb", "zone": "z1"})) == 60
    assert a.preference(F.NodeFacts("n", labels={"zone": "z1"})) == 0  # not selected by its nodeSelectors
