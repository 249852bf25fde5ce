"""`lab up`'s cluster objects on an API server that answers as kube-apiserver does.

Found on a real kube-apiserver: `up` replaced the lbspeaker-system Namespace with a bare object
(dropping the Pod Security labels of the manifests), and Nodes kept the not-ready taint that
kube-apiserver's TaintNodesByCondition admission puts on every new Node, since nothing played
the node lifecycle controller.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import topology as topo
from lab.agents.kubeapi import Informer, KubeApi
from lab.agents.kubelet import Kubelet
from lab.agents.nodes import NOT_READY_TAINT, node_info
from lab.commands import Kube, bootstrap_cluster

pytestmark = pytest.mark.component
PSA = "pod-security.kubernetes.io/enforce"


def test_up_merges_into_the_namespace_the_manifests_made(kubeconfig: Path) -> None:
    kube = Kube(kubeconfig)
    kube.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "lbspeaker-system", "labels": {PSA: "privileged", "team": "net"}},
    })
    bootstrap_cluster(kubeconfig, topo.plan(1, False, "iptables", False))
    labels = kube.request("GET", "/api/v1/namespaces/lbspeaker-system")["metadata"]["labels"]
    assert labels[PSA] == "privileged" and labels["team"] == "net"


def test_up_on_a_fresh_server_sets_the_manifests_labels(kubeconfig: Path) -> None:
    bootstrap_cluster(kubeconfig, topo.plan(1, False, "iptables", False))
    labels = Kube(kubeconfig).request("GET", "/api/v1/namespaces/lbspeaker-system")["metadata"]["labels"]
    assert labels[PSA] == "privileged"


def test_kubelet_lifts_the_not_ready_taint_of_ready_nodes(kubeconfig: Path, tmp_path: Path) -> None:
    bootstrap_cluster(kubeconfig, topo.plan(1, False, "iptables", False))
    api = KubeApi(str(kubeconfig))
    nodes = api.get("/api/v1/nodes")["items"]
    # as kube-apiserver's admission does on create
    assert all(any(t["key"] == NOT_READY_TAINT for t in n["spec"]["taints"]) for n in nodes)
    kubelet = Kubelet(api, Informer(api, "/api/v1/pods"), Informer(api, "/api/v1/nodes"), tmp_path)
    view = {n["metadata"]["name"]: (node_info(n), n) for n in nodes}
    kubelet.lift_not_ready_taints(view)  # type: ignore[arg-type]
    after = {n["metadata"]["name"]: n["spec"].get("taints") or [] for n in api.get("/api/v1/nodes")["items"]}
    assert after["kind-worker"] == []
    assert [t["key"] for t in after["kind-control-plane"]] == ["node-role.kubernetes.io/control-plane"]
    assert view["kind-worker"][1]["spec"].get("taints") == []  # the scheduler sees it at once
