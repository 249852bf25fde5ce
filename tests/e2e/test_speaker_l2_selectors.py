"""Issue 10 on the lab: L2Advertisement serviceSelectors and preferredNodeSelectors behave as documented.

One pool, one L2Advertisement that selects Services labelled `expose: l2` and prefers nodes
labelled `lbspeaker-e2e/edge: "true"` (weight 100). A selected Service is answered by exactly
one node: the sha256 winner among the workers while no node is preferred, the preferred node
once a worker (not the winner) gets the label, the winner again when the label goes. A Service
of the same pool that the selector does not match gets an IP and no ARP answer at all.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agents.kubeapi import KubeApi
from lbspeaker.election import elect_l2
from tests.e2e.conftest import Lab
from tests.e2e.test_speaker_l2 import (
    SYS,
    answering_node,
    arp_responders,
    ensure,
    wait_for,
    workers,
)

pytestmark = pytest.mark.e2e

NS = "l2-sel-e2e"
POOL = "l2-sel-pool"
ADV = "l2-sel"
EDGE = "lbspeaker-e2e/edge"


def lb_ip(api: KubeApi, name: str) -> str | None:
    svc = api.get(f"/api/v1/namespaces/{NS}/services/{name}")
    ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return ing[0]["ip"] if ing else None


def make_service(api: KubeApi, name: str, labels: dict[str, str]) -> str:
    base = f"/api/v1/namespaces/{NS}"
    for i in range(2):
        ensure(api, f"{base}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-{i}", "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}})
    ensure(api, f"{base}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels, "annotations": {"lbspeaker.io/address-pool": POOL}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    return wait_for(f"an IP for {name}", lambda: lb_ip(api, name), timeout=60)


def label_node(api: KubeApi, node: str, value: str | None) -> None:
    api.merge_patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {EDGE: value}}})


@pytest.fixture(scope="module")
def setup(lab_session: Lab) -> Iterator[tuple[Lab, KubeApi]]:
    if shutil.which("arping") is None:
        pytest.skip("needs arping")
    lab_session.ensure_up()
    api = KubeApi(str(lab_session.kubeconfig))
    ensure(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    ensure(api, f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/ipaddresspools", {
        "apiVersion": "lbspeaker.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": POOL},
        "spec": {"addresses": ["172.18.254.10-172.18.254.30"], "autoAssign": False}})
    ensure(api, f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/l2advertisements", {
        "apiVersion": "lbspeaker.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": ADV},
        "spec": {"ipAddressPools": [POOL],
                 "serviceSelectors": [{"matchLabels": {"expose": "l2"}}],
                 "preferredNodeSelectors": [{"weight": 100, "preference": {"matchLabels": {EDGE: "true"}}}]}})
    yield lab_session, api
    with contextlib.suppress(Exception):
        for w in workers(lab_session):
            label_node(api, w.name, None)
    for path in (f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/l2advertisements/{ADV}",
                 f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/ipaddresspools/{POOL}",
                 f"/api/v1/namespaces/{NS}"):
        with contextlib.suppress(Exception):
            api.delete(path)


def l2_status_nodes(api: KubeApi, service: str) -> set[str]:
    items: list[dict[str, Any]] = api.get(
        f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/servicel2statuses")["items"]
    return {s["status"]["node"] for s in items
            if s["status"].get("serviceName") == service and s["status"].get("serviceNamespace", NS) == NS}


def test_service_selectors_and_preferred_nodes(setup: tuple[Lab, KubeApi]) -> None:
    lab, api = setup
    ip = make_service(api, "selected", {"expose": "l2"})
    other_ip = make_service(api, "not-selected", {"expose": "none"})
    names = [w.name for w in workers(lab)]
    winner = elect_l2(ip, names)
    assert winner is not None and len(names) >= 2

    # No node preferred yet: MetalLB's sha256 order picks the node.
    wait_for(f"{winner} answering {ip}", lambda: answering_node(lab, ip) == winner, timeout=30)
    wait_for("ServiceL2Status names the owner", lambda: l2_status_nodes(api, "selected") == {winner},
             timeout=30)
    # The Service the serviceSelectors do not match is not announced by anybody.
    assert arp_responders(other_ip) == set()
    assert l2_status_nodes(api, "not-selected") == set()

    # Prefer a worker that would not win the hash: it takes the IP, alone.
    preferred = next(n for n in sorted(names) if n != winner)
    label_node(api, preferred, "true")
    wait_for(f"preferred {preferred} answering {ip}", lambda: answering_node(lab, ip) == preferred,
             timeout=30)
    assert arp_responders(ip) == {lab.plan.node(preferred).mac}
    wait_for("ServiceL2Status follows", lambda: l2_status_nodes(api, "selected") == {preferred}, timeout=30)

    # The preference goes: back to the sha256 winner.
    label_node(api, preferred, None)
    wait_for(f"{winner} answering {ip} again", lambda: answering_node(lab, ip) == winner, timeout=30)
    assert arp_responders(other_ip) == set()
