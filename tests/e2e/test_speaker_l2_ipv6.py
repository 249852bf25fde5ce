"""IPv6 in layer 2 (`--ipv6` lab): curl over an IPv6 LoadBalancer IP works through NDP, and the
client's neighbour entry holds the MAC of the node the election names."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator

import pytest

from lab import netns as nsops
from lab.agents.kubeapi import KubeApi
from tests.e2e.conftest import Lab
from tests.e2e.test_speaker_l2 import (
    CLIENT,
    NS,
    SYS,
    ensure,
    ensure_l2_pool,
    expected_owner,
    parse_host,
    wait_for,
)

pytestmark = pytest.mark.e2e

POOL6 = "l2-e2e-pool6"


@pytest.fixture
def ipv6_lab(lab_session: Lab) -> Iterator[Lab]:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    if lab_session.is_up and not lab_session.options.get("ipv6"):
        lab_session.down()
    lab_session.options["ipv6"] = True
    lab_session.up()
    try:
        yield lab_session
    finally:
        lab_session.down()  # the next test gets the default (IPv4) lab back


def neighbour6(ip: str) -> str | None:
    out = nsops.run_in(CLIENT, ["ip", "-6", "neigh", "show", ip, "dev", "eth0"], check=False).stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else None


def test_ipv6_curl_through_ndp(ipv6_lab: Lab) -> None:
    lab = ipv6_lab
    api = KubeApi(str(lab.kubeconfig))
    base = f"/api/v1/namespaces/{NS}"
    ensure_l2_pool(api, POOL6, "fc00:f853:ccd:e793::c8-fc00:f853:ccd:e793::fa", "l2-e2e6")
    for i in range(4):
        ensure(api, f"{base}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web6-{i}", "labels": {"app": "web6"}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}})
    ensure(api, f"{base}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web6"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web6"}, "ipFamilies": ["IPv6"],
                 "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})

    def lb_ip() -> str | None:
        svc = api.get(f"{base}/services/web6")
        ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return ing[0]["ip"] if ing else None

    ip = wait_for("IPv6 LoadBalancer IP", lb_ip, timeout=60)
    assert ":" in ip
    owner = expected_owner(lab, ip)

    def announcers() -> set[str]:
        items = api.get(f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/servicel2statuses")["items"]
        return {(s.get("status") or {}).get("node") for s in items
                if (s.get("status") or {}).get("serviceName") == "web6"}

    # The lab was just brought up: until every speaker's Lease is seen, the first speakers
    # rightly announce for nodes not yet live, and the client may have met one of them. Once
    # the speakers agree on the owner, the client's entry is made afresh and must name it.
    wait_for("the speakers agree on the owner", lambda: announcers() == {owner}, timeout=40)
    nsops.run_in(CLIENT, ["ip", "-6", "neigh", "del", ip, "dev", "eth0"], check=False)

    def curl6() -> str:
        return nsops.run_in(CLIENT, ["curl", "-gsS", "--max-time", "2", f"http://[{ip}]/host"],
                            check=False, timeout=10).stdout

    out = wait_for("curl over IPv6", curl6, timeout=40)
    assert parse_host(out).get("node")
    assert neighbour6(ip) == lab.plan.node(owner).mac
    with contextlib.suppress(Exception):
        api.delete(f"{base}/services/web6")
