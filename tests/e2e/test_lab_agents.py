"""The lab's cluster agents (kubelet, EndpointSlice controller, kube-proxy) end to end.

Builds its own small kind-shaped network in namespaces named `lbt-g-*` (bridge, a
tainted control-plane node, two workers, a client) so it can run next to a full lab
and never collides with one; Node objects carry the namespaces' names. The lab API
server runs in-process and `python -m lab.agents` as a real process. Everything the
module starts is ended by PID and every namespace removed, even after failures.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import netns as nsops
from lab.agents.kubeapi import ApiError, KubeApi

pytestmark = pytest.mark.e2e

PREFIX = "lbt-g-"
NET = "lbt-g-net"
CLIENT = "lbt-g-client"
POD_PREFIX = "lbt-g-p-"
CLIENT_IP = "172.18.0.100"
LB_IP = "172.18.255.200"
NODES = [("lbt-g-cp", 0), ("lbt-g-w1", 1), ("lbt-g-w2", 2)]
WORKERS = ["lbt-g-w1", "lbt-g-w2"]


CLIENT_IP6 = "fc00:f853:ccd:e793::100"
LB_IP6 = "fc00:f853:ccd:e793:ffff::200"


def node_ip(index: int) -> str:
    return f"172.18.0.{index + 2}"


def node_ip6(index: int) -> str:
    return f"fc00:f853:ccd:e793::{index + 2:x}"


def pod_cidr6(index: int) -> str:
    return f"fd00:10:244:{index:x}::/64"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # transient: API or namespace not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def cleanup_namespaces() -> None:
    for name in sorted(nsops.list_netns(), key=lambda n: (n == NET, n)):
        if name.startswith(PREFIX):
            for pid in _pids_in(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            nsops.delete_netns(name)


def _pids_in(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


def build_topology() -> dict[str, str]:
    """Bridge + nodes + client; returns node name -> eth0 MAC."""
    nsops.create_netns(NET)
    nsops.run_in(NET, ["ip", "link", "add", "br0", "type", "bridge"])
    nsops.run_in(NET, ["ip", "link", "set", "br0", "up"])
    macs = {}
    members = [(name, node_ip(i), node_ip6(i), f"p{i}") for name, i in NODES]
    members.append((CLIENT, CLIENT_IP, CLIENT_IP6, "pc"))
    for name, ip, ip6, port in members:
        nsops.create_netns(name)
        nsops.add_veth(name, "eth0", NET, port)
        nsops.run_in(NET, ["ip", "link", "set", port, "master", "br0"])
        nsops.ip_batch(name, [f"addr add {ip}/16 dev eth0", f"addr add {ip6}/64 dev eth0 nodad"])
        info = json.loads(nsops.run_in(name, ["ip", "-j", "link", "show", "dev", "eth0"]).stdout)
        macs[name] = info[0]["address"]
    for name, i in NODES:
        nsops.set_sysctls(
            name,
            {
                "net.ipv4.ip_forward": "1",
                "net.ipv6.conf.all.forwarding": "1",
                "net.ipv4.conf.all.rp_filter": "0",
                "net.ipv4.conf.default.rp_filter": "0",
            },
        )
        routes = [f"route replace 10.244.{j}.0/24 via {node_ip(j)}" for _, j in NODES if j != i]
        routes += [f"route replace {pod_cidr6(j)} via {node_ip6(j)}" for _, j in NODES if j != i]
        nsops.ip_batch(name, routes)
    routes = [f"route replace 10.244.{j}.0/24 via {node_ip(j)}" for _, j in NODES]
    routes += [f"route replace {pod_cidr6(j)} via {node_ip6(j)}" for _, j in NODES]
    nsops.ip_batch(CLIENT, routes)
    return macs


@dataclass
class Env:
    api: KubeApi
    kubeconfig: Path
    state_dir: Path
    macs: dict[str, str]
    agents: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start_agents(self) -> None:
        self.log_path = self.state_dir / "agents-stderr.log"
        logf = open(self.log_path, "ab")  # noqa: SIM115
        self.agents = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.agents",
                "--kubeconfig",
                str(self.kubeconfig),
                "--state-dir",
                str(self.state_dir),
                "--nodes",
                *[n for n, _ in NODES],
                "--pod-netns-prefix",
                POD_PREFIX,
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        logf.close()

    def stop_agents(self) -> None:
        if self.agents is not None and self.agents.poll() is None:
            self.agents.send_signal(signal.SIGTERM)
            try:
                self.agents.wait(10)
            except subprocess.TimeoutExpired:
                self.agents.kill()
                self.agents.wait(5)
        self.agents = None

    def curl(self, url: str, timeout: float = 3) -> subprocess.CompletedProcess[str]:
        return nsops.run_in(
            CLIENT, ["curl", "-gsS", "--max-time", str(timeout), url], check=False, timeout=timeout + 5
        )

    def pods(self) -> list[dict[str, Any]]:
        return self.api.get("/api/v1/namespaces/default/pods")["items"]

    def slices(self, service: str) -> list[dict[str, Any]]:
        return self.api.get(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            labelSelector=f"kubernetes.io/service-name={service}",
        )["items"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from lab.agents.kubelet import teardown
    from lab.apiserver import LabApiServer

    state_dir = tmp_path_factory.mktemp("agents-state")
    server = LabApiServer(port=0)
    server.start()
    e: Env | None = None
    try:
        cleanup_namespaces()
        macs = build_topology()
        kubeconfig = server.write_kubeconfig(state_dir / "kubeconfig")
        api = KubeApi(str(kubeconfig))
        for ns in ("kube-system", "default"):
            with contextlib.suppress(ApiError):
                api.create(
                    "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                )
        for name, i in NODES:
            spec: dict[str, Any] = {
                "podCIDR": f"10.244.{i}.0/24",
                "podCIDRs": [f"10.244.{i}.0/24", pod_cidr6(i)],
            }
            if i == 0:
                spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": spec,
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": node_ip(i)},
                        {"type": "InternalIP", "address": node_ip6(i)},
                    ],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            api.create("/api/v1/nodes", node)
            with contextlib.suppress(ApiError):
                api.replace(
                    f"/api/v1/nodes/{name}/status",
                    {**api.get(f"/api/v1/nodes/{name}"), "status": node["status"]},
                )
        api.create(
            "/api/v1/namespaces/kube-system/configmaps",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                "data": {"config.conf": "mode: iptables\nipvs:\n  strictARP: false\n"},
            },
        )
        e = Env(api=api, kubeconfig=kubeconfig, state_dir=state_dir, macs=macs)
        e.start_agents()
        yield e
    finally:
        if e is not None:
            e.stop_agents()
            if e.log_path and e.log_path.exists():
                sys.stderr.write(e.log_path.read_text()[-6000:])
        teardown(state_dir)
        cleanup_namespaces()
        server.stop()


def make_pod(name: str, app: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {
            "containers": [
                {"name": "app", "image": "lab/podserver", "ports": [{"name": "http", "containerPort": 8080}]}
            ]
        },
    }


def ready_pods(env: Env, n: int) -> list[dict[str, Any]] | None:
    pods = [p for p in env.pods() if p["metadata"]["labels"].get("app") == "web"]
    ok = [
        p
        for p in pods
        if (p.get("status") or {}).get("podIP")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    ]
    return ok if len(ok) == n else None


def parse_host(body: str) -> dict[str, str]:
    m = re.match(r"NODE: (\S+), POD IP: (\S+), CLIENT IP: (\S+)", body.strip())
    assert m, body
    return {"node": m.group(1), "pod": m.group(2), "client": m.group(3)}


def test_pods_are_scheduled_started_and_reachable(env: Env) -> None:
    for i in range(4):
        env.api.create("/api/v1/namespaces/default/pods", make_pod(f"web-{i}"))
    pods = wait_for("4 ready pods", lambda: ready_pods(env, 4), timeout=60)
    nodes = sorted(p["spec"]["nodeName"] for p in pods)
    assert nodes == ["lbt-g-w1", "lbt-g-w1", "lbt-g-w2", "lbt-g-w2"]  # round-robin, control plane tainted
    for p in pods:
        ip, node = p["status"]["podIP"], p["spec"]["nodeName"]
        index = dict(NODES)[node]
        assert ip.startswith(f"10.244.{index}.")
        assert p["status"]["hostIP"] == node_ip(index)
        assert nsops.netns_exists(POD_PREFIX + p["metadata"]["uid"].replace("-", "")[:8])
        out = env.curl(f"http://{ip}:8080/host")
        assert out.returncode == 0, out.stderr
        assert parse_host(out.stdout) == {"node": node, "pod": ip, "client": CLIENT_IP}
        # dual-stack: the node has an IPv6 podCIDR, so the pod has an address from it too
        ip6 = next(x["ip"] for x in p["status"]["podIPs"] if ":" in x["ip"])
        assert ip6.startswith(pod_cidr6(index).split("::")[0] + "::")
        out = env.curl(f"http://[{ip6}]:8080/host")
        assert out.returncode == 0, out.stderr
        assert parse_host(out.stdout) == {"node": node, "pod": ip, "client": CLIENT_IP6}


def create_lb_service(env: Env, etp: str = "Cluster") -> dict[str, Any]:
    svc = env.api.create(
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "web"},
                "externalTrafficPolicy": etp,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    )
    env.api.merge_patch(
        "/api/v1/namespaces/default/services/web/status",
        {"status": {"loadBalancer": {"ingress": [{"ip": LB_IP, "ipMode": "VIP"}]}}},
    )
    return svc


def test_endpointslice_and_node_port(env: Env) -> None:
    svc = create_lb_service(env)
    node_port = svc["spec"]["ports"][0].get("nodePort")
    assert node_port, svc

    def four_ready() -> list[dict[str, Any]] | None:
        eps = [e for s in env.slices("web") for e in s.get("endpoints") or []]
        return eps if len(eps) == 4 and all(e["conditions"]["ready"] for e in eps) else None

    eps = wait_for("slice with 4 ready endpoints", four_ready)
    assert {e["nodeName"] for e in eps} == set(WORKERS)
    (s,) = env.slices("web")
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "lab"
    out = wait_for("nodePort answer", lambda: env.curl(f"http://{node_ip(1)}:{node_port}/host").stdout)
    assert parse_host(out)["node"] in WORKERS


def lb_answers(env: Env, n: int) -> list[dict[str, str]]:
    res = []
    for _ in range(n):
        out = env.curl(f"http://{LB_IP}/host", timeout=2)
        assert out.returncode == 0, out.stderr
        res.append(parse_host(out.stdout))
    return res


def test_lb_ip_cluster_then_local(env: Env) -> None:
    nsops.run_in(
        CLIENT,
        ["ip", "neigh", "replace", LB_IP, "lladdr", env.macs["lbt-g-w1"], "dev", "eth0", "nud", "permanent"],
    )
    wait_for("LB IP answers", lambda: env.curl(f"http://{LB_IP}/host", timeout=2).returncode == 0)
    answers = lb_answers(env, 16)
    assert {a["node"] for a in answers} == set(WORKERS)  # Cluster: both nodes' pods
    assert {a["client"] for a in answers} == {node_ip(1)}  # masqueraded to the ingress node
    env.api.merge_patch(
        "/api/v1/namespaces/default/services/web", {"spec": {"externalTrafficPolicy": "Local"}}
    )

    def local_only() -> list[dict[str, str]] | None:
        got = lb_answers(env, 8)
        return got if {a["client"] for a in got} == {CLIENT_IP} else None

    answers = wait_for("ETP Local semantics", local_only) + lb_answers(env, 8)
    assert {a["node"] for a in answers} == {"lbt-g-w1"}
    assert {a["client"] for a in answers} == {CLIENT_IP}


def test_ipv6_lb_ip(env: Env) -> None:
    try:
        env.api.create(
            "/api/v1/namespaces/default/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web6", "namespace": "default"},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "web"},
                    "ipFamilies": ["IPv6"],
                    "ipFamilyPolicy": "SingleStack",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            },
        )
    except ApiError as e:
        pytest.skip(f"API server has no IPv6 services: {e}")
    env.api.merge_patch(
        "/api/v1/namespaces/default/services/web6/status",
        {"status": {"loadBalancer": {"ingress": [{"ip": LB_IP6, "ipMode": "VIP"}]}}},
    )
    (s,) = wait_for("IPv6 slice", lambda: [x for x in env.slices("web6") if x.get("endpoints")])
    assert s["addressType"] == "IPv6" and len(s["endpoints"]) == 4
    nsops.run_in(
        CLIENT,
        [
            "ip",
            "-6",
            "neigh",
            "replace",
            LB_IP6,
            "lladdr",
            env.macs["lbt-g-w1"],
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )
    out = wait_for("IPv6 LB answer", lambda: env.curl(f"http://[{LB_IP6}]/host", timeout=2).stdout)
    got = parse_host(out)
    assert got["node"] in WORKERS and got["client"] == node_ip6(1)  # ETP Cluster: SNAT to the node's IPv6
    env.api.delete("/api/v1/namespaces/default/services/web6")
    nsops.run_in(CLIENT, ["ip", "-6", "neigh", "del", LB_IP6, "dev", "eth0"], check=False)


def test_readiness_annotation_turns_local_endpoints_off(env: Env) -> None:
    w1_pods = [p for p in env.pods() if p["spec"].get("nodeName") == "lbt-g-w1"]
    for p in w1_pods:
        env.api.merge_patch(
            f"/api/v1/namespaces/default/pods/{p['metadata']['name']}",
            {"metadata": {"annotations": {"lab.lbspeaker.io/ready": "false"}}},
        )

    def unready() -> bool:
        eps = [e for s in env.slices("web") for e in s.get("endpoints") or []]
        return sum(1 for e in eps if e["nodeName"] == "lbt-g-w1" and not e["conditions"]["ready"]) == 2

    wait_for("w1 endpoints not ready", unready)
    # ETP Local, ingress node without a ready local endpoint: dropped.
    wait_for("LB IP dropped", lambda: env.curl(f"http://{LB_IP}/host", timeout=1).returncode != 0)
    # ... while the pods themselves still run.
    assert env.curl(f"http://{w1_pods[0]['status']['podIP']}:8080/host").returncode == 0
    for p in w1_pods:
        env.api.merge_patch(
            f"/api/v1/namespaces/default/pods/{p['metadata']['name']}",
            {"metadata": {"annotations": {"lab.lbspeaker.io/ready": "true"}}},
        )
    wait_for("LB IP back", lambda: env.curl(f"http://{LB_IP}/host", timeout=2).returncode == 0)


def test_agents_restart_adopts_running_pods(env: Env) -> None:
    before = {p["metadata"]["name"]: p["status"]["podIP"] for p in env.pods()}
    agents_file = env.state_dir / "agents" / "agents.json"
    pids = {r["name"]: r["pid"] for r in json.loads(agents_file.read_text())["pods"].values()}
    env.stop_agents()
    assert env.curl(f"http://{LB_IP}/host").returncode == 0  # pods and rules outlive the agents
    env.start_agents()
    time.sleep(3)
    after = {p["metadata"]["name"]: p["status"]["podIP"] for p in env.pods()}
    assert after == before
    assert {r["name"]: r["pid"] for r in json.loads(agents_file.read_text())["pods"].values()} == pids


def test_dead_pod_server_is_restarted(env: Env) -> None:
    agents_file = env.state_dir / "agents" / "agents.json"
    rec = next(iter(json.loads(agents_file.read_text())["pods"].values()))
    os.kill(rec["pid"], signal.SIGKILL)  # the "container" crashes

    def restarted() -> dict[str, Any] | None:
        p = env.api.get(f"/api/v1/namespaces/default/pods/{rec['name']}")
        cs = (p.get("status") or {}).get("containerStatuses") or [{}]
        ready = cs[0].get("ready") and cs[0].get("restartCount") == rec["restarts"] + 1
        return p if ready else None

    p = wait_for("restarted pod", restarted)
    assert p["status"]["podIP"] == rec["ip"]
    assert env.curl(f"http://{rec['ip']}:8080/host").returncode == 0


def test_deleting_a_pod_removes_it(env: Env) -> None:
    victim = env.pods()[0]
    ns_name = POD_PREFIX + victim["metadata"]["uid"].replace("-", "")[:8]
    env.api.delete(f"/api/v1/namespaces/default/pods/{victim['metadata']['name']}")
    wait_for("pod namespace removed", lambda: not nsops.netns_exists(ns_name))

    def three() -> bool:
        eps = [e for s in env.slices("web") for e in s.get("endpoints") or []]
        return len(eps) == 3

    wait_for("3 endpoints", three)
    assert env.curl(f"http://{victim['status']['podIP']}:8080/host", timeout=1).returncode != 0


def arp_responders(env: Env) -> set[str]:
    out = nsops.run_in(
        CLIENT, ["arping", "-c", "3", "-W", "0.3", "-i", "eth0", LB_IP], check=False, timeout=20
    ).stdout
    return set(re.findall(r"from ([0-9a-f]{2}(?::[0-9a-f]{2}){5})", out))


def set_kube_proxy(env: Env, mode: str, strict: bool) -> None:
    env.api.merge_patch(
        "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
        {"data": {"config.conf": f"mode: {mode}\nipvs:\n  strictARP: {'true' if strict else 'false'}\n"}},
    )


def test_ipvs_mode_arp_with_and_without_strict_arp(env: Env) -> None:
    if shutil.which("arping") is None:
        pytest.skip("needs arping")
    nsops.run_in(CLIENT, ["ip", "neigh", "del", LB_IP, "dev", "eth0"], check=False)
    assert arp_responders(env) == set()  # iptables mode: nobody owns the LB IP
    set_kube_proxy(env, "ipvs", False)

    def bound_everywhere() -> bool:
        return all(
            LB_IP in nsops.run_in(n, ["ip", "addr", "show", "dev", "kube-ipvs0"], check=False).stdout
            for n, _ in NODES
        )

    wait_for("LB IP on kube-ipvs0 of every node", bound_everywhere)
    responders = arp_responders(env)
    assert len(responders) >= 2, responders  # the failure strictARP exists for
    assert responders <= set(env.macs.values())
    # traffic still lands on pods
    nsops.run_in(
        CLIENT,
        ["ip", "neigh", "replace", LB_IP, "lladdr", env.macs["lbt-g-w2"], "dev", "eth0", "nud", "permanent"],
    )
    assert (
        parse_host(wait_for("LB via w2", lambda: env.curl(f"http://{LB_IP}/host").stdout))["node"]
        == "lbt-g-w2"
    )
    nsops.run_in(CLIENT, ["ip", "neigh", "del", LB_IP, "dev", "eth0"], check=False)
    set_kube_proxy(env, "ipvs", True)

    def strict_applied() -> bool:
        return all(
            nsops.run_in(n, ["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"]).stdout.strip() == "1"
            for n, _ in NODES
        )

    wait_for("strictARP sysctls", strict_applied)
    assert arp_responders(env) == set()
    set_kube_proxy(env, "iptables", False)
    wait_for("kube-ipvs0 removed", lambda: not any(nsops.link_exists(n, "kube-ipvs0") for n, _ in NODES))
