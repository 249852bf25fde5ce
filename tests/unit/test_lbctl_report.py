"""The pure judgements behind `lbctl status`, `pools` and `check`, table-tested on hand-made snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lbspeaker.lbctl.cli import table
from lbspeaker.lbctl.report import (
    Snapshot,
    check,
    pool_rows,
    service_rows,
    speaker_problem,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def stamp(age_s: float) -> str:
    return (NOW - timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(node: str, age_s: float, holder: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": f"speaker-{node}"},
            "spec": {"holderIdentity": node if holder is None else holder, "leaseDurationSeconds": 10,
                     "renewTime": stamp(age_s)}}


def pool(name: str, *addresses: str, labels: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"addresses": list(addresses)},
            "status": status}


def svc(name: str, ip: str | None = None, pool_name: str | None = None) -> dict[str, Any]:
    annotations = {"metallb.universe.tf/ip-allocated-from-pool": pool_name} if pool_name else {}
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"type": "LoadBalancer"},
    }
    if ip:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip}]}}
    return obj


def slice_(name: str, ready: bool | None) -> dict[str, Any]:
    cond = {} if ready is None else {"ready": ready}
    return {"metadata": {"name": f"{name}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "endpoints": [{"addresses": ["10.244.1.2"], "nodeName": "n1", "conditions": cond}]}


def l2(name: str, node: str) -> dict[str, Any]:
    return {"metadata": {"name": f"l2-{name}-{node}"},
            "status": {"node": node, "serviceName": name, "serviceNamespace": "default"}}


@pytest.mark.parametrize(
    ("lease_obj", "expected"),
    [
        (lease("n1", 1), None),
        (lease("n1", 11), "speaker Lease stale: last renewed 11s ago (duration 10s)"),
        (lease("n1", 1, holder=""), "speaker stopped (Lease released)"),
        (None, "no speaker Lease"),
    ],
)
def test_speaker_problem(lease_obj: dict[str, Any] | None, expected: str | None) -> None:
    assert speaker_problem(lease_obj, NOW) == expected


def test_service_rows_cover_every_case() -> None:
    snap = Snapshot(
        services=[
            svc("ok", "10.0.0.1", "p"),
            svc("noip"),
            svc("noeps", "10.0.0.2"),  # pool found from the address range
            svc("silent", "10.0.0.3", "p"),
            svc("twice", "10.0.0.4", "p"),
            {"metadata": {"name": "cip", "namespace": "default"}, "spec": {"type": "ClusterIP"}},
        ],
        endpointslices=[slice_("ok", True), slice_("noeps", False), slice_("silent", None),
                        slice_("twice", True)],
        pools=[pool("p", "10.0.0.0/29")],
        l2advertisements=[{"metadata": {"name": "l2"}, "spec": {}}],
        l2statuses=[l2("ok", "n1"), l2("twice", "n1"), l2("twice", "n2")],
        leases=[lease("n1", 1), lease("n2", 30)],
        events=[{"reason": "AllocationFailed", "message": "pool p is full", "lastTimestamp": stamp(5),
                 "involvedObject": {"kind": "Service", "name": "noip", "namespace": "default"}}],
        now=NOW,
    )
    rows = {r.name: r for r in service_rows(snap)}
    assert set(rows) == {"ok", "noip", "noeps", "silent", "twice"}
    assert rows["ok"].as_dict() == {"namespace": "default", "name": "ok", "ips": ["10.0.0.1"], "pool": "p",
                                    "mode": "L2", "announcedBy": ["n1"], "problems": []}
    assert rows["noip"].problems == ["no IP: pool p is full", "no ready endpoint"]
    assert rows["noeps"].pool == "p" and rows["noeps"].problems == ["no ready endpoint"]
    assert rows["silent"].problems == ["not announced: no speaker reports it"]
    assert rows["twice"].problems == [
        "announced in L2 by 2 nodes at once: n1, n2",
        "announcing node n2: speaker Lease stale: last renewed 30s ago (duration 10s)",
    ]


def test_service_not_covered_by_any_advertisement() -> None:
    snap = Snapshot(services=[svc("a", "10.0.0.1", "p")], endpointslices=[slice_("a", True)],
                    pools=[pool("p", "10.0.0.0/29")], now=NOW)
    (row,) = service_rows(snap)
    assert row.mode == "-" and row.problems == [
        "not announced: no L2Advertisement or BGPAdvertisement covers pool p"
    ]


def test_pool_rows_prefer_the_controllers_counts() -> None:
    snap = Snapshot(
        services=[svc("a", "10.0.0.1", "p"), svc("b", "10.0.1.1", "q")],
        pools=[
            pool("p", "10.0.0.0/29", assignedIPv4=5, availableIPv4=3,
                 conditions=[{"type": "Ready", "status": "True", "reason": "Accepted"}]),
            pool("q", "10.0.1.0/30"),
        ],
    )
    rows = {r.name: r for r in pool_rows(snap)}
    assert (rows["p"].assigned, rows["p"].available) == (5, 3)
    assert rows["p"].conditions == ["Ready=True (Accepted)"]
    assert (rows["q"].assigned, rows["q"].available) == (1, 3)


def test_check_lists_each_mistake_once() -> None:
    snap = Snapshot(
        nodes=[{"metadata": {"name": "n1", "labels": {}},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}}],
        pools=[pool("p", "10.0.0.0/29", conditions=[
            {"type": "Overlap", "status": "True", "reason": "Overlaps", "message": "q"}])],
        l2advertisements=[{"metadata": {"name": "ghost"}, "spec": {
            "ipAddressPools": ["nope"], "nodeSelectors": [{"matchLabels": {"a": "b"}}]}}],
        bgppeers=[{"metadata": {"name": "r"}, "status": {"sessions": [
            {"node": "n1", "state": "Established"}, {"node": "n2", "state": "Idle"}]}}],
        leases=[lease("n1", 60)],
        kube_proxy={"data": {"config.conf": "mode: ipvs\n"}},
        now=NOW,
    )
    got = [(p.check, p.object) for p in check(snap)]
    assert got == [
        ("strictARP", "ConfigMap kube-system/kube-proxy"),
        ("pool-covers-node", "IPAddressPool p"),
        ("pool-condition", "IPAddressPool p"),
        ("advertisement-no-node", "L2Advertisement ghost"),
        ("advertisement-unknown-pool", "L2Advertisement ghost"),
        ("bgp-session", "BGPPeer r"),
        ("speaker", "node n1"),
    ]


def test_check_clean() -> None:
    assert check(Snapshot(now=NOW)) == []


def test_table() -> None:
    assert table(["A", "BB"], [["xyz", "1"], ["", "22"]]) == "A    BB\nxyz  1\n     22\n"


def bgpstatus(name: str, node: str, *peers: str) -> dict[str, Any]:
    return {"metadata": {"name": f"bgp-{name}-{node}"},
            "status": {"node": node, "serviceName": name, "serviceNamespace": "default",
                       "peers": list(peers)}}


def test_announced_by_lists_only_peers_whose_session_is_up() -> None:
    """Was: a peer whose session was down was listed under "announced by"."""
    peers = [{"metadata": {"name": "r1"}, "status": {"sessions": [
                 {"node": "n1", "state": "Established"}, {"node": "n2", "state": "Active"}]}},
             {"metadata": {"name": "r2"}, "status": {"sessions": [{"node": "n1", "state": "Idle"}]}}]
    snap = Snapshot(services=[svc("a", "10.0.0.1", "p")], endpointslices=[slice_("a", True)],
                    pools=[pool("p", "10.0.0.0/29")],
                    bgpadvertisements=[{"metadata": {"name": "b"}, "spec": {}}], bgppeers=peers,
                    bgpstatuses=[bgpstatus("a", "n1", "r1", "r2"), bgpstatus("a", "n2", "r1")], now=NOW)
    (row,) = service_rows(snap)
    assert row.announced_by == ["n1->r1"]
    assert row.problems == [
        "BGP session down: n1->r2 is Idle, the route is not announced there",
        "BGP session down: n2->r1 is Active, the route is not announced there",
    ]
    # check reports each session once, per BGPPeer, not again per Service
    found = [(p.check, p.object) for p in check(snap)]
    assert found.count(("bgp-session", "BGPPeer r1")) == 1 and found.count(("bgp-session", "BGPPeer r2")) == 1
    assert not [f for f in found if f[0] == "service"]


def test_check_reports_advertisement_node_problems_and_ready_false() -> None:
    """Was: `lbctl check` ignored the advertisements' status.nodeProblems."""
    adv = {"metadata": {"name": "l2"}, "spec": {}, "status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "UnknownPool",
                        "message": "pool x missing"}],
        "nodeProblems": [{"node": "n2", "reason": "InterfaceNotFound",
                          "message": "interface eth9 does not exist on this node"}]}}
    snap = Snapshot(l2advertisements=[adv], nodes=[{"metadata": {"name": "n2"}}], now=NOW)
    got = {(p.check, p.object, p.message) for p in check(snap)}
    assert ("advertisement-node", "L2Advertisement l2",
            "on node n2: InterfaceNotFound: interface eth9 does not exist on this node") in got
    assert ("advertisement-condition", "L2Advertisement l2", "Ready=False: UnknownPool pool x missing") in got


def test_a_terminating_but_serving_endpoint_is_an_endpoint() -> None:
    labels = {"kubernetes.io/service-name": "a"}
    slices = [{"metadata": {"name": "a-x", "namespace": "default", "labels": labels},
               "endpoints": [{"addresses": ["10.244.1.2"], "nodeName": "n1",
                              "conditions": {"ready": False, "serving": True, "terminating": True}}]}]
    snap = Snapshot(services=[svc("a", "10.0.0.1", "p")], endpointslices=slices,
                    pools=[pool("p", "10.0.0.0/29")],
                    l2advertisements=[{"metadata": {"name": "l2"}, "spec": {}}],
                    l2statuses=[l2("a", "n1")], leases=[lease("n1", 1)], now=NOW)
    (row,) = service_rows(snap)
    assert row.problems == []


def test_a_pool_annotation_naming_no_pool_is_not_trusted() -> None:
    snap = Snapshot(services=[svc("a", "10.0.0.1", "gone"), svc("b", "10.9.0.1", "gone")],
                    endpointslices=[slice_("a", True), slice_("b", True)], pools=[pool("p", "10.0.0.0/29")],
                    l2advertisements=[{"metadata": {"name": "l2"}, "spec": {"ipAddressPools": ["p"]}}],
                    now=NOW)
    rows = {r.name: r for r in service_rows(snap)}
    assert rows["a"].pool == "p" and rows["a"].mode == "L2"
    assert rows["b"].pool is None and rows["b"].mode == "-"
    assert {r.name: (r.assigned, r.available) for r in pool_rows(snap)} == {"p": (1, 7)}
