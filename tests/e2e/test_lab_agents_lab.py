"""Issue 3's "done when" for the cluster agents, on the real lab (`lbspeaker-lab up`).

Same checks as `test_lab_agents.py` but through helper F's `lab` fixture: kind's node
names, the lab's own API server and the agents `up` starts. Services use a
`loadBalancerClass` nobody implements, so lbspeaker's controller and speakers (when the
lab runs them) leave the hand-written ingress IP alone.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from typing import Any

import pytest

from lab import netns as nsops
from lab import topology as topo
from lab.agents.kubeapi import ApiError, KubeApi
from tests.e2e.conftest import Lab
from tests.e2e.test_lab_agents import parse_host, wait_for

pytestmark = pytest.mark.e2e

LB_IP = "172.18.255.201"
NS = "agents-e2e"
CLIENT = topo.CLIENT
CLIENT_IP = topo.CLIENT_IP_V4


def curl(url: str, timeout: float = 3) -> Any:
    return nsops.run_in(
        CLIENT, ["curl", "-gsS", "--max-time", str(timeout), url], check=False, timeout=timeout + 5
    )


def arp_responders() -> set[str]:
    out = nsops.run_in(
        CLIENT, ["arping", "-c", "3", "-W", "0.3", "-i", "eth0", LB_IP], check=False, timeout=20
    ).stdout
    return set(re.findall(r"from ([0-9a-f]{2}(?::[0-9a-f]{2}){5})", out))


def test_pods_services_and_kube_proxy_on_the_lab(lab: Lab) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nftables")
    plan = lab.plan
    workers = [n for n in plan.nodes if n.index > 0]
    api = KubeApi(str(lab.kubeconfig))
    base = f"/api/v1/namespaces/{NS}"
    try:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        for i in range(len(workers) * 2):
            api.create(
                f"{base}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"web-{i}", "labels": {"app": "web"}},
                    "spec": {
                        "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]
                    },
                },
            )

        def ready() -> list[dict[str, Any]] | None:
            pods = api.get(f"{base}/pods")["items"]
            ok = [
                p
                for p in pods
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions", [])
                )
            ]
            return ok if len(ok) == len(workers) * 2 else None

        pods = wait_for("pods ready", ready, timeout=60)
        assert {p["spec"]["nodeName"] for p in pods} == {w.name for w in workers}  # not the control plane
        for p in pods:
            got = parse_host(curl(f"http://{p['status']['podIP']}:8080/host").stdout)
            assert got == {"node": p["spec"]["nodeName"], "pod": p["status"]["podIP"], "client": CLIENT_IP}

        svc = api.create(
            f"{base}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {
                    "type": "LoadBalancer",
                    "loadBalancerClass": "lab.lbspeaker.io/none",
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            },
        )
        api.merge_patch(
            f"{base}/services/web/status", {"status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}}
        )
        node_port = svc["spec"]["ports"][0]["nodePort"]
        first = workers[0]
        out = wait_for("nodePort", lambda: curl(f"http://{first.ipv4}:{node_port}/host").stdout)
        assert parse_host(out)["node"] in {w.name for w in workers}

        nsops.run_in(
            CLIENT, ["ip", "neigh", "replace", LB_IP, "lladdr", first.mac, "dev", "eth0", "nud", "permanent"]
        )
        wait_for("LB IP", lambda: curl(f"http://{LB_IP}/host").returncode == 0)
        answers = [parse_host(curl(f"http://{LB_IP}/host").stdout) for _ in range(16)]
        assert len({a["node"] for a in answers}) > 1 and {a["client"] for a in answers} == {first.ipv4}

        api.merge_patch(f"{base}/services/web", {"spec": {"externalTrafficPolicy": "Local"}})

        def local() -> list[dict[str, str]] | None:
            got = [parse_host(curl(f"http://{LB_IP}/host").stdout) for _ in range(8)]
            return got if {a["client"] for a in got} == {CLIENT_IP} else None

        answers = wait_for("ETP Local", local)
        assert {a["node"] for a in answers} == {first.name}
        nsops.run_in(CLIENT, ["ip", "neigh", "del", LB_IP, "dev", "eth0"], check=False)

        if shutil.which("arping") is None:
            return
        assert arp_responders() == set()
        lab.up(kube_proxy_mode="ipvs", strict_arp=False)
        wait_for(
            "kube-ipvs0 bound",
            lambda: all(
                LB_IP in nsops.run_in(n.name, ["ip", "addr", "show", "dev", "kube-ipvs0"], check=False).stdout
                for n in plan.nodes
            ),
        )
        assert len(arp_responders()) >= 2
        lab.up(kube_proxy_mode="ipvs", strict_arp=True)
        wait_for(
            "strictARP",
            lambda: all(
                nsops.run_in(n.name, ["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"]).stdout.strip() == "1"
                for n in plan.nodes
            ),
        )
        assert arp_responders() == set()
    finally:
        nsops.run_in(CLIENT, ["ip", "neigh", "del", LB_IP, "dev", "eth0"], check=False)
        for path in [f"{base}/services/web"] + [f"{base}/pods/web-{i}" for i in range(len(workers) * 2)]:
            with contextlib.suppress(ApiError):
                api.delete(path)
        with contextlib.suppress(ApiError):
            api.delete(f"/api/v1/namespaces/{NS}")
        if lab.options.get("kube_proxy_mode") != "iptables" or lab.options.get("strict_arp"):
            lab.up(kube_proxy_mode="iptables", strict_arp=False)
