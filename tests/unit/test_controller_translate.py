"""Tables for the pure translation layer of the controller (Service/pool dicts -> allocator input)."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker.controller import translate as T


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


def pool(name: str, *addresses: str, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "lbspeaker-system", "creationTimestamp": created},
            "spec": {"addresses": list(addresses), **spec}}


@pytest.mark.parametrize(("obj", "flag", "expected"), [
    (svc(), None, True),
    (svc(typ="ClusterIP"), None, False),
    (svc(cls="other"), None, False),
    (svc(cls="lbspeaker.io/lb"), "lbspeaker.io/lb", True),
    (svc(), "lbspeaker.io/lb", False),
])
def test_wants_ip_honours_type_and_class(obj: dict[str, Any], flag: str | None, expected: bool) -> None:
    assert T.wants_ip(obj, flag) is expected


@pytest.mark.parametrize("prefix", ["lbspeaker.io/", "metallb.io/", "metallb.universe.tf/"])
def test_all_three_annotation_spellings(prefix: str) -> None:
    info = T.service_info(svc(ann={prefix + "loadBalancerIPs": "10.0.0.5", prefix + "address-pool": "p",
                                   prefix + "allow-shared-ip": "k"}))
    assert info.requested_ips == ("10.0.0.5",)
    assert info.pool == "p"
    assert info.sharing_key == "k"


def test_our_spelling_wins_over_metallb() -> None:
    info = T.service_info(svc(ann={"metallb.io/address-pool": "theirs", "lbspeaker.io/address-pool": "ours"}))
    assert info.pool == "ours"


@pytest.mark.parametrize(("obj", "fams", "policy"), [
    (svc(), (4,), "SingleStack"),
    (svc(families=["IPv6"]), (6,), "SingleStack"),
    (svc(families=["IPv6", "IPv4"], policy="RequireDualStack"), (6, 4), "RequireDualStack"),
    (svc(families=["IPv4", "IPv6"], policy="PreferDualStack"), (4, 6), "PreferDualStack"),
])
def test_families(obj: dict[str, Any], fams: tuple[int, ...], policy: str) -> None:
    info = T.service_info(obj)
    assert info.families == fams
    assert info.family_policy == policy
    req = T.to_request(info)
    assert req.families == fams and req.family_policy == policy


@pytest.mark.parametrize(("obj", "words"), [
    (svc(ann={"lbspeaker.io/loadBalancerIPs": "10.0.0.1"}, lb_ip="10.0.0.2"), "both"),
    (svc(ann={"lbspeaker.io/loadBalancerIPs": "banana"}), "not an IP"),
    (svc(ann={"lbspeaker.io/loadBalancerIPs": "10.0.0.1,10.0.0.2"}), "one family"),
])
def test_malformed_requests_raise_with_a_reason(obj: dict[str, Any], words: str) -> None:
    with pytest.raises(T.ServiceError, match=words):
        T.service_info(obj)


def test_backend_key_only_for_local() -> None:
    assert T.service_info(svc()).backend_key is None
    assert T.service_info(svc(etp="Local")).backend_key == "app=web"


def test_ingress_ips() -> None:
    assert T.ingress_ips(svc(ingress=["10.0.0.1", "fd00::1"])) == ["10.0.0.1", "fd00::1"]
    assert T.ingress_ips(svc()) == []


def test_pools_overlap_newcomer_refused_running_pool_kept() -> None:
    a = pool("a", "10.0.0.0/24", created="2026-01-01T00:00:00Z")
    b = pool("b", "10.0.0.128/25", created="2025-01-01T00:00:00Z")  # older but new to us
    first = T.validate_pools([a], {}, {})
    assert set(first.active) == {"a"}
    second = T.validate_pools([a, b], {}, first.active)
    assert set(second.active) == {"a"}
    assert second.problems["b"].reason == "Overlap"
    assert "pool a" in second.problems["b"].message


def test_changed_pool_that_now_overlaps_keeps_last_valid() -> None:
    a = pool("a", "10.0.0.0/25")
    b = pool("b", "10.0.0.128/25")
    first = T.validate_pools([a, b], {}, {})
    assert not first.problems
    a2 = pool("a", "10.0.0.0/24")
    second = T.validate_pools([a2, b], {}, first.active)
    assert second.active["a"] == first.active["a"]
    assert second.active["b"] == first.active["b"]
    assert second.stale("a") and not second.stale("b")


def test_pool_covering_node_ip_refused() -> None:
    nodes = [{"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": "n1"}]}}]
    ips = T.node_internal_ips(nodes)
    assert ips == {"172.18.0.2": "n1"}
    result = T.validate_pools([pool("p", "172.18.0.0/24")], ips, {})
    assert "p" not in result.active
    assert result.problems["p"].reason == "CoversNodeIP"
    assert "n1" in result.problems["p"].message


def test_ipv6_range_start_after_end_refused() -> None:
    result = T.validate_pools([pool("p", "fd00::10-fd00::1")], {}, {})
    assert result.problems["p"].reason == "InvalidSpec"
    assert not result.active


def test_pool_fields_parsed() -> None:
    spec = T.parse_pool(pool("p", "10.0.0.0/30", autoAssign=False, avoidBuggyIPs=True,
                             serviceAllocation={"priority": 5, "namespaces": ["a"]}))
    assert not spec.auto_assign and spec.avoid_buggy_ips
    assert spec.priority == 5 and spec.namespaces == ("a",)


def test_status_stable_and_transition_time_moves_only_on_flip() -> None:
    counts = {"assignedIPv4": 1, "availableIPv4": 3}
    s1 = T.pool_status(counts, None, False, [], 1, None, "t1")
    s2 = T.pool_status(counts, None, False, [], 1, s1, "t2")
    assert s1 == s2
    by_type = {c["type"]: c for c in s1["conditions"]}
    assert by_type["Ready"]["status"] == "True" and by_type["Overlap"]["status"] == "False"
    orphans = [("default/a", ("10.0.0.9",))]
    s3 = T.pool_status(counts, T.PoolProblem("Overlap", "x"), True, orphans, 2, s2, "t3")
    by_type = {c["type"]: c for c in s3["conditions"]}
    assert by_type["Ready"]["status"] == "False" and by_type["Ready"]["lastTransitionTime"] == "t3"
    assert by_type["Overlap"]["status"] == "True"
    assert "last valid configuration" in by_type["Ready"]["message"]
    assert by_type["ServicesOutsidePool"]["status"] == "True"
    assert "default/a" in by_type["ServicesOutsidePool"]["message"]
    assert s3["orphanedServices"] == [{"namespace": "default", "name": "a", "ips": ["10.0.0.9"]}]
    assert s3["orphanedServiceCount"] == 1
