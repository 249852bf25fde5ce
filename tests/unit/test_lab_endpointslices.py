"""EndpointSlice controller stand-in and kubelet helpers: the pure parts."""

from __future__ import annotations

from typing import Any

from lab.agents.kubelet import PodRecord, desired_status, pick_ip, pod_netns_name, status_differs, tcp_ports
from lab.agents.nodes import NodeInfo, is_schedulable, node_info, readiness_wanted
from lab.agents.slices import MANAGED_BY_LABEL, SERVICE_NAME_LABEL, canonical, desired_slices


def service(
    ports: list[dict[str, Any]], selector: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": "web", "uid": "svc-uid"},
        "spec": {"selector": {"app": "web"} if selector is None else selector, "ports": ports, **spec},
    }


def pod(
    name: str,
    ip: str | None,
    node: str = "kind-worker",
    ready: bool = True,
    labels: dict | None = None,
    ports: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    phase: str = "Running",
) -> dict:
    md: dict[str, Any] = {
        "namespace": "default",
        "name": name,
        "uid": f"uid-{name}",
        "labels": {"app": "web"} if labels is None else labels,
    }
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "metadata": md,
        "spec": {"nodeName": node, "containers": [{"name": "app", "ports": ports or []}]},
        "status": status,
    }


HTTP = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]


def test_slice_contents() -> None:
    pods = [
        pod("b", "10.244.2.2", "kind-worker2"),
        pod("a", "10.244.1.2"),
        pod("other", "10.244.1.9", labels={}),
    ]
    (s,) = desired_slices(service(HTTP), pods)
    assert s["addressType"] == "IPv4"
    assert s["metadata"]["labels"] == {SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: "lab"}
    assert s["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert [e["addresses"] for e in s["endpoints"]] == [["10.244.1.2"], ["10.244.2.2"]]
    e = s["endpoints"][0]
    assert e["nodeName"] == "kind-worker"
    assert e["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert e["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}


def test_conditions_unready_terminating_and_skipped_pods() -> None:
    pods = [
        pod("unready", "10.244.1.2", ready=False),
        pod("leaving", "10.244.1.3", deleting=True),
        pod("noip", None),
        pod("done", "10.244.1.4", phase="Succeeded"),
    ]
    (s,) = desired_slices(service(HTTP), pods)
    conds = {e["targetRef"]["name"]: e["conditions"] for e in s["endpoints"]}
    assert conds == {
        "unready": {"ready": False, "serving": False, "terminating": False},
        "leaving": {"ready": False, "serving": True, "terminating": True},
    }
    (p,) = desired_slices(
        service(HTTP, publishNotReadyAddresses=True), [pod("unready", "10.244.1.2", ready=False)]
    )
    assert p["endpoints"][0]["conditions"]["ready"] is True


def test_named_target_ports_split_slices_by_resolved_port() -> None:
    ports = [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]
    pods = [
        pod("a", "10.244.1.2", ports=[{"name": "web", "containerPort": 8080}]),
        pod("b", "10.244.1.3", ports=[{"name": "web", "containerPort": 9090}]),
        pod("c", "10.244.1.4", ports=[{"name": "other", "containerPort": 7070}]),
    ]
    slices = desired_slices(service(ports), pods)
    got = sorted(
        (s["ports"][0]["port"] if s["ports"] else 0, [e["targetRef"]["name"] for e in s["endpoints"]])
        for s in slices
    )
    # a pod whose named port does not resolve still gets an endpoint, in a slice without that port
    assert got == [(0, ["c"]), (8080, ["a"]), (9090, ["b"])]
    assert len({s["metadata"]["name"] for s in slices}) == len(slices)


def test_empty_and_selectorless_services() -> None:
    (empty,) = desired_slices(service(HTTP), [])
    assert empty["endpoints"] == [] and empty["ports"][0]["port"] == 8080
    assert desired_slices(service(HTTP, selector={}), [pod("a", "10.244.1.2")]) == []
    assert desired_slices(service(HTTP, type="ExternalName"), [pod("a", "10.244.1.2")]) == []


def test_canonical_ignores_server_metadata_but_sees_conditions() -> None:
    (s,) = desired_slices(service(HTTP), [pod("a", "10.244.1.2")])
    stored = {**s, "metadata": {**s["metadata"], "resourceVersion": "7", "uid": "x", "generation": 3}}
    assert canonical(stored) == canonical(s)
    (unready,) = desired_slices(service(HTTP), [pod("a", "10.244.1.2", ready=False)])
    assert canonical(unready) != canonical(s)
    assert unready["metadata"]["name"] == s["metadata"]["name"]


def test_node_info_and_scheduling() -> None:
    n = {
        "metadata": {"name": "kind-worker2"},
        "spec": {"podCIDR": "10.244.2.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.4"}]},
    }
    assert node_info(n) == NodeInfo("kind-worker2", 2, "172.18.0.4", "10.244.2.0/24")
    assert node_info(n) and node_info(n).gateway == "10.244.2.1"  # type: ignore[union-attr]
    by_ip = {
        "metadata": {"name": "x"},
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.5"}]},
    }
    assert node_info(by_ip) == NodeInfo("x", 3, "172.18.0.5", "10.244.3.0/24")
    cp = {"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}
    assert not is_schedulable(cp)
    tolerant = {
        "spec": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}
    }
    assert is_schedulable(cp, tolerant)
    assert not is_schedulable({"spec": {"unschedulable": True}})


def test_kubelet_helpers() -> None:
    assert pick_ip("10.244.1.0/24", set()) == "10.244.1.2"
    assert pick_ip("10.244.1.0/24", {"10.244.1.2", "10.244.1.3"}) == "10.244.1.4"
    assert pick_ip("10.244.1.0/24", {"10.244.1.2"}, wanted="10.244.1.9") == "10.244.1.9"
    assert pick_ip("10.244.1.0/24", {"10.244.1.9"}, wanted="10.244.1.9") == "10.244.1.2"
    assert pick_ip("10.244.1.0/24", set(), wanted="10.244.2.9") == "10.244.1.2"
    assert pod_netns_name("1234abcd-ef00-0000") == "lbpod-1234abcd"
    assert tcp_ports(
        pod("a", None, ports=[{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}])
    ) == [80]
    assert tcp_ports(pod("a", None)) == [8080]


def test_readiness_annotation_drives_status() -> None:
    p = pod("a", None)
    info = NodeInfo("kind-worker", 1, "172.18.0.3", "10.244.1.0/24")
    rec = PodRecord(
        "uid-a",
        "default",
        "a",
        "kind-worker",
        "lbpod-x",
        "vethx",
        "10.244.1.2",
        [8080],
        pid=42,
        started_at="2024-01-01T00:00:00Z",
    )
    st = desired_status(p, rec, info, running=True)
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["Ready"] == "True" and st["podIP"] == "10.244.1.2" and st["hostIP"] == "172.18.0.3"
    assert status_differs(p["status"], st)
    assert not status_differs(st, desired_status({**p, "status": st}, rec, info, running=True))
    p["metadata"]["annotations"] = {"lab.lbspeaker.io/ready": "false"}
    assert not readiness_wanted(p)
    st2 = desired_status({**p, "status": st}, rec, info, running=True)
    assert {c["type"]: c["status"] for c in st2["conditions"]}["Ready"] == "False"
    assert status_differs(st, st2)
    assert {c["type"]: c["status"] for c in desired_status(p, rec, info, running=False)["conditions"]}[
        "Ready"
    ] == "False"
