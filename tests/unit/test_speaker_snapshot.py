"""speaker/snapshot.py: which cache events can change a plan, and the snapshot both protocols read."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lbspeaker.speaker import snapshot as S
from lbspeaker.speaker.snapshot import FactsIndex, Snapshot, readings


def svc(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default", "resourceVersion": "1",
                         "annotations": {"lbspeaker.io/ip-allocated-from-pool": "pool"}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.200"}]}, **status}}


def node(ready: str = "True", heartbeat: str = "t0") -> dict[str, Any]:
    return {"metadata": {"name": "n1", "resourceVersion": "1", "labels": {"zone": "a"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                       "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}}


def peer(asn: int = 64512) -> dict[str, Any]:
    return {"metadata": {"name": "router", "namespace": "lbspeaker-system", "resourceVersion": "1"},
            "spec": {"myASN": 64513, "peerASN": asn, "peerAddress": "172.18.0.1"}}


def slice_(ready: bool) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "n1", "conditions": {"ready": ready}}]}


def bumped(obj: dict[str, Any], **meta: Any) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
    new["metadata"].update(meta)
    return new


def index() -> tuple[FactsIndex, list[str]]:
    woken: list[str] = []
    return FactsIndex("n1", readings(None), on_change=woken.append), woken


# (resource, first object, the same object after an event that changes no plan)
IGNORED = [
    ("resourceVersion bump", S.SERVICES, svc(), bumped(svc())),
    ("Service condition", S.SERVICES, svc(), bumped(svc(conditions=[{"type": "X", "status": "True"}]))),
    ("unrelated annotation", S.SERVICES, svc(), bumped(svc(), annotations={
        "lbspeaker.io/ip-allocated-from-pool": "pool", "team": "x"})),
    ("kubelet heartbeat", S.NODES, node(), bumped(node(heartbeat="t1"))),
    ("BGPPeer session status", S.BGPPEERS, peer(),
     {**bumped(peer()), "status": {"sessions": [{"node": "n1"}]}}),
    ("endpoint condition that keeps serving", S.ENDPOINTSLICES, slice_(True), bumped(slice_(True))),
]

CHANGED = [
    ("ingress IP", S.SERVICES, svc(), bumped(svc(loadBalancer={"ingress": [{"ip": "172.18.255.201"}]}))),
    ("pool annotation", S.SERVICES, svc(), bumped(svc(), annotations={})),
    ("Node not Ready", S.NODES, node(), bumped(node(ready="False"))),
    ("Node label", S.NODES, node(), bumped(node(), labels={"zone": "b"})),
    ("BGPPeer spec", S.BGPPEERS, peer(), bumped(peer(asn=64999))),
    ("endpoint not ready", S.ENDPOINTSLICES, slice_(True), bumped(slice_(False))),
]


@pytest.mark.parametrize(("what", "resource", "first", "then"), IGNORED, ids=[c[0] for c in IGNORED])
def test_events_that_change_no_plan_are_ignored(what: str, resource: str, first: dict[str, Any],
                                                then: dict[str, Any]) -> None:
    idx, woken = index()
    assert idx.update(resource, "ADDED", first)
    gen = idx.generation()
    assert not idx.update(resource, "MODIFIED", then), what
    assert idx.generation() == gen and woken == [resource]
    assert idx.ignored == {resource: 1}


@pytest.mark.parametrize(("what", "resource", "first", "then"), CHANGED, ids=[c[0] for c in CHANGED])
def test_events_that_can_change_a_plan_wake_the_loop(what: str, resource: str, first: dict[str, Any],
                                                     then: dict[str, Any]) -> None:
    idx, woken = index()
    idx.update(resource, "ADDED", first)
    gen = idx.generation()
    assert idx.update(resource, "MODIFIED", then), what
    assert idx.generation() > gen and woken == [resource, resource]
    assert idx.update(resource, "DELETED", then)
    assert not idx.update(resource, "DELETED", then)  # gone already: nothing moves


def test_other_class_and_non_lb_services_are_not_facts() -> None:
    idx, woken = index()
    other = svc()
    other["spec"]["loadBalancerClass"] = "someone-else"
    cluster_ip = svc()
    cluster_ip["spec"]["type"] = "ClusterIP"
    assert not idx.update(S.SERVICES, "ADDED", other)
    assert not idx.update(S.SERVICES, "ADDED", cluster_ip)
    assert woken == [] and idx.snapshot().services == ()


def test_node_local_inputs_move_only_when_they_change() -> None:
    idx, _ = index()
    assert idx.set(S.LIVE, frozenset({"n1"}))
    gen = idx.generation()
    assert not idx.set(S.LIVE, frozenset({"n1"}))
    assert idx.generation() == gen
    assert idx.set(S.LIVE, frozenset({"n1", "n2"}))


def test_snapshot_joins_endpoints_and_reads_this_node() -> None:
    idx, _ = index()
    idx.update(S.SERVICES, "ADDED", svc())
    idx.update(S.ENDPOINTSLICES, "ADDED", slice_(True))
    idx.update(S.NODES, "ADDED", node())
    idx.update(S.BGPPEERS, "ADDED", peer())
    aliases = [{"name": "no-export", "value": "65535:65281"}]
    idx.update(S.COMMUNITIES, "ADDED", {"metadata": {"name": "c", "namespace": "x"},
                                         "spec": {"communities": aliases}})
    idx.set(S.LIVE, frozenset({"n1"}))
    snap = idx.snapshot()
    (s,) = snap.services
    assert s.key == "default/web" and s.serving_endpoints == ("n1",) and s.pool == "pool"
    assert snap.node_addresses == ("172.18.0.2",) and [n.name for n in snap.nodes] == ["n1"]
    assert [p.name for p in snap.peers] == ["router"] and snap.aliases == {"no-export": "65535:65281"}
    assert snap.live_speakers == frozenset({"n1"}) and snap.strictarp.ok


def test_snapshot_changed_only_for_the_inputs_asked() -> None:
    a = Snapshot("n", generations={S.SERVICES: 1, S.LIVE: 1})
    b = Snapshot("n", generations={S.SERVICES: 1, S.LIVE: 2})
    assert b.changed(None, [S.SERVICES])
    assert not b.changed(a, [S.SERVICES, S.BGPPEERS])
    assert b.changed(a, [S.SERVICES, S.LIVE])
