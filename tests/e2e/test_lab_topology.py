"""End-to-end: the lab's network (namespaces, bridge, router, BGP) and its up/down lifecycle.

Order matters in this file: the lifecycle tests that take the lab down run last, and
the `lab` fixture brings it back for any later test module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import netns as nsops
from lab import topology as topo
from lab.state import LabState, ProcessRecord
from tests.e2e.conftest import Lab, lab_cli, lab_namespaces

pytestmark = pytest.mark.e2e


def _ping(lab: Lab, src: str, dst: str) -> subprocess.CompletedProcess[str]:
    # Two quick probes: the first may be spent on neighbour resolution.
    return lab.exec(src, "ping", "-c", "2", "-i", "0.2", "-W", "1", dst, check=False)


def _wait_neighbors(lab: Lab, want: set[str], timeout: float = 10.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = lab.status()["bgp_neighbors"]
        if want <= set(seen):
            break
        time.sleep(0.3)
    return seen


# -- pure parts (no root needed) -------------------------------------------------------------------


def test_plan_is_deterministic_and_kind_like() -> None:
    plan = topo.plan(workers=2, ipv6=True)
    assert plan == topo.plan(workers=2, ipv6=True)
    assert [(n.name, n.ipv4, n.ipv6, n.pod_cidr) for n in plan.nodes] == [
        ("kind-control-plane", "172.18.0.2", "fc00:f853:ccd:e793::2", "10.244.0.0/24"),
        ("kind-worker", "172.18.0.3", "fc00:f853:ccd:e793::3", "10.244.1.0/24"),
        ("kind-worker2", "172.18.0.4", "fc00:f853:ccd:e793::4", "10.244.2.0/24"),
    ]
    assert topo.docker_mac("172.18.0.100") == "02:42:ac:12:00:64"
    client = plan.namespace(topo.CLIENT)
    assert client.ifaces[0].peer_name == "v-client" and client.ifaces[0].mac == "02:42:ac:12:00:64"
    assert "10.244.2.0/24 via 172.18.0.4" in client.routes
    assert topo.is_lab_netns("lbpod-abc") and topo.is_lab_netns("kind-worker7")
    assert not topo.is_lab_netns("lbt-g-net")


def test_router_configs_list_every_node() -> None:
    from lab import router

    plan = topo.plan(workers=2)
    frr = router.render_frr(plan)
    bird = router.render_bird(plan)
    for node in plan.nodes:
        assert f"neighbor {node.ipv4} peer-group NODES" in frr
        assert f"neighbor {node.ipv4} external;" in bird
    assert "no bgp ebgp-requires-policy" in frr and "bgp bestpath as-path multipath-relax" in frr
    assert "merge paths on" in bird
    summary = '{"172.18.0.3": {"bgpState": "Established"}, "172.18.0.4": {"bgpState": "Active"}}'
    assert router.parse_frr_neighbors(summary) == {"172.18.0.3": "Established", "172.18.0.4": "Active"}
    bird_out = (
        "n_kind_worker BGP        ---        start  10:38:12.656  Active\n"
        "  Description:    kind-worker\n"
        "  BGP state:          Active\n"
        "    Neighbor address: 172.18.0.3\n"
        "    Neighbor AS:      0\n"
        "dyn4       BGP        ---        start  10:38:12.656  Passive\n"
        "  BGP state:          Passive\n"
        "    Neighbor range:   172.18.0.0/16\n"
    )
    assert router.parse_bird_protocols(bird_out) == {"172.18.0.3": "Active"}


def test_router_configs_in_ibgp_mode() -> None:
    """--bgp-mode ibgp: the router in the nodes' AS, internal neighbours, iBGP ECMP into the FIB."""
    import shutil as sh

    from lab import router

    plan = topo.plan(workers=2, ipv6=True)
    assert topo.router_asn("ebgp") == topo.ROUTER_ASN and topo.router_asn("ibgp") == topo.NODE_ASN
    with pytest.raises(ValueError):
        topo.router_asn("confederation")
    frr = router.render_frr(plan, bgp_mode="ibgp")
    bird = router.render_bird(plan, bgp_mode="ibgp")
    assert f"router bgp {topo.NODE_ASN}" in frr and "remote-as external" not in frr
    assert " neighbor NODES remote-as internal" in frr and " neighbor NODES6 remote-as internal" in frr
    assert frr.count("maximum-paths ibgp 8") == 2
    assert f"local {topo.ROUTER_IP_V4} as {topo.NODE_ASN}; direct;" in bird
    # IPv4 and IPv6 channels of the IPv4 template (MP-BGP), IPv6 channel of the IPv6 template
    assert bird.count("gateway direct;") == 3 and " external;" not in bird
    for node in plan.nodes:
        assert f"neighbor {node.ipv4} internal;" in bird
    assert "neighbor range 172.18.0.0/16 internal;" in bird
    # the default stays eBGP, byte for byte what it was
    assert router.render_frr(plan) == router.render_frr(plan, bgp_mode="ebgp")
    assert f"router bgp {topo.ROUTER_ASN}" in router.render_frr(plan)
    assert "maximum-paths ibgp" not in router.render_frr(plan) and "direct;" not in router.render_bird(plan)
    if sh.which("bird"):  # BIRD's own parser accepts the config
        conf = Path(f"/tmp/lbspeaker-ibgp-{os.getpid()}.conf")
        try:
            conf.write_text(bird)
            proc = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
        finally:
            conf.unlink(missing_ok=True)


# -- the running lab ----------------------------------------------------------------------------------


def test_up_builds_the_planned_topology(lab: Lab) -> None:
    plan = lab.plan
    present = set(nsops.list_netns())
    assert set(plan.netns_names) <= present
    assert [n.name for n in plan.nodes] == [
        "kind-control-plane",
        "kind-worker",
        "kind-worker2",
        "kind-worker3",
    ]
    for ns in plan.namespaces:
        links = json.loads(lab.exec(ns.name, "ip", "-j", "addr", "show").stdout)
        by_name = {link["ifname"]: link for link in links}
        for iface in ns.ifaces:
            link = by_name[iface.name]
            assert link["address"] == iface.mac, (ns.name, iface.name)
            assert "UP" in link["flags"]
            addrs = {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["scope"] == "global"}
            assert set(iface.addresses) <= addrs, (ns.name, iface.name, addrs)
    # docker-style MACs that tests can predict
    assert plan.node("kind-worker").mac == "02:42:ac:12:00:03"
    # every bridge port is enslaved to br-kind, STP off
    ports = json.loads(lab.exec(topo.BRIDGE_NETNS, "ip", "-j", "link", "show", "master", topo.BRIDGE).stdout)
    assert {p["ifname"] for p in ports} == {
        i.peer_name for ns in plan.namespaces for i in ns.ifaces if i.on_bridge
    }
    stp = lab.exec(topo.BRIDGE_NETNS, "cat", f"/sys/class/net/{topo.BRIDGE}/bridge/stp_state").stdout.strip()
    assert stp == "0"


def test_node_sysctls_and_routes(lab: Lab) -> None:
    for node in lab.plan.nodes:
        out = lab.exec(
            node.name,
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.eth0.arp_ignore",
            "net.ipv4.conf.eth0.arp_announce",
        ).stdout.split()
        assert out == ["1", "2", "0", "0"], node.name
        routes = lab.exec(node.name, "ip", "route", "show").stdout
        assert "default via 172.18.0.1 dev eth0" in routes
        for other in lab.plan.nodes:
            if other.name != node.name:
                assert f"{other.pod_cidr} via {other.ipv4} dev eth0" in routes


def test_client_pings_every_node_and_the_router(lab: Lab) -> None:
    targets = [n.ipv4 for n in lab.plan.nodes] + [topo.ROUTER_IP_V4]
    failed = [t for t in targets if _ping(lab, topo.CLIENT, t).returncode != 0]
    assert not failed, f"client cannot reach {failed}"


def test_ext_client_reaches_a_node_through_the_router(lab: Lab) -> None:
    worker = lab.plan.node("kind-worker")
    res = _ping(lab, topo.EXT_CLIENT, worker.ipv4)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ttl=63" in res.stdout  # one routed hop: the router
    # and the node sees the real external source (no NAT on the way)
    assert _ping(lab, worker.name, topo.EXT_CLIENT_IP_V4).returncode == 0


def test_frr_router_lists_every_node_as_a_neighbor(lab: Lab) -> None:
    want = {n.ipv4 for n in lab.plan.nodes}
    seen = _wait_neighbors(lab, want)
    assert want <= set(seen), seen
    conf = (Path(lab.state()["router_dir"]) / "frr.conf").read_text()
    assert "maximum-paths 8" in conf and "bgp listen range 172.18.0.0/16 peer-group NODES" in conf


def test_up_twice_is_safe_and_keeps_processes(lab: Lab) -> None:
    # processes that are still running are kept (ones that died on their own are restarted)
    before = {p.name: p.pid for p in LabState(lab.state_dir).processes if p.alive()}
    assert {"router-zebra", "router-bgpd"} <= set(before)
    lab.up()
    after = {p["name"]: p["pid"] for p in lab.state()["processes"]}
    assert {k: after.get(k) for k in before} == before
    assert lab.last_up_seconds < 15
    assert _ping(lab, topo.CLIENT, lab.plan.node("kind-worker2").ipv4).returncode == 0


def test_kube_objects_registered(lab: Lab) -> None:
    if not lab.kubeconfig.exists():
        pytest.skip("no lab API server in this tree yet")
    from lab.commands import Kube

    kube = Kube(lab.kubeconfig)
    nodes = {n["metadata"]["name"]: n for n in kube.request("GET", "/api/v1/nodes")["items"]}
    assert set(nodes) >= {n.name for n in lab.plan.nodes}
    cp = nodes["kind-control-plane"]
    assert "node.kubernetes.io/exclude-from-external-load-balancers" in cp["metadata"]["labels"]
    assert cp["spec"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane"
    w = nodes["kind-worker"]
    assert {"type": "InternalIP", "address": "172.18.0.3"} in w["status"]["addresses"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in w["status"]["conditions"])
    assert w["spec"]["podCIDR"] == "10.244.1.0/24"
    cm = kube.request("GET", "/api/v1/namespaces/kube-system/configmaps/kube-proxy")
    assert "mode: iptables" in cm["data"]["config.conf"]
    kube.request("GET", "/api/v1/namespaces/lbspeaker-system")
    # node namespaces reach the API server at 172.18.0.2:6443
    nodes_server = lab.nodes_kubeconfig.read_text()
    assert "http://172.18.0.2:6443" in nodes_server
    res = lab.exec(
        "kind-worker", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://172.18.0.2:6443/version"
    )
    assert res.stdout.strip() in ("200", "401")


def test_ipvs_strict_arp_sets_node_sysctls_and_kube_proxy_config(lab: Lab) -> None:
    try:
        lab.up(kube_proxy_mode="ipvs", strict_arp=True)
        for node in lab.plan.nodes:
            out = lab.exec(
                node.name,
                "sysctl",
                "-n",
                "net.ipv4.conf.all.arp_ignore",
                "net.ipv4.conf.all.arp_announce",
                "net.ipv4.conf.eth0.arp_ignore",
                "net.ipv4.conf.eth0.arp_announce",
            ).stdout.split()
            assert out == ["1", "2", "1", "2"], node.name
        if lab.kubeconfig.exists():
            from lab.commands import Kube

            conf = Kube(lab.kubeconfig).request("GET", "/api/v1/namespaces/kube-system/configmaps/kube-proxy")
            text = conf["data"]["config.conf"]
            assert "mode: ipvs" in text and "strictARP: true" in text
        lab.up(kube_proxy_mode="ipvs", strict_arp=False)
        out = lab.exec("kind-worker", "sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore").stdout.split()
        assert out == ["0"]
    finally:
        lab.up(kube_proxy_mode="iptables", strict_arp=False)


def _exabgp_conf(node: topo.NodePlan, prefix: str, password: str | None = None) -> str:
    md5 = f"md5-password {password};" if password else ""
    return f"""
neighbor {topo.ROUTER_IP_V4} {{
  {md5}
  router-id {node.ipv4};
  local-address {node.ipv4};
  local-as {topo.NODE_ASN};
  peer-as {topo.ROUTER_ASN};
  family {{ ipv4 unicast; }}
  static {{ route {prefix} next-hop self; }}
}}
"""


@pytest.mark.parametrize(("router", "password"), [("frr", None), ("bird", None), ("frr", "lab-md5")])
def test_router_installs_ecmp_route_from_two_nodes(
    lab: Lab, router: str, password: str | None, tmp_path: Path
) -> None:
    """Two nodes announce the same /32 (with ExaBGP); the router installs one multipath route.
    With --bgp-password the sessions only come up with the TCP MD5 password."""
    exabgp = shutil.which("exabgp") or str(Path(sys.executable).parent / "exabgp")
    if not os.path.exists(exabgp):
        pytest.skip("exabgp not installed")
    if lab.options["router"] != router or lab.options.get("bgp_password") != password:
        lab.up(router=router, bgp_password=password)
    prefix = "198.51.100.10/32"
    nodes = [lab.plan.node("kind-worker"), lab.plan.node("kind-worker2")]
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, exabgp_daemon_user="root", exabgp_tcp_bind="", exabgp_daemon_drop="false")
    try:
        for node in nodes:
            conf = tmp_path / f"{node.name}.conf"
            conf.write_text(_exabgp_conf(node, prefix, password))
            log = open(tmp_path / f"{node.name}.log", "wb")  # noqa: SIM115 (closed with the process)
            procs.append(
                nsops.popen_in(node.name, [exabgp, str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env)
            )
        deadline = time.monotonic() + 20
        routes = ""
        while time.monotonic() < deadline:
            routes = lab.exec(topo.ROUTER, "ip", "route", "show", prefix.split("/")[0]).stdout
            if all(f"via {n.ipv4}" in routes for n in nodes):
                break
            time.sleep(0.3)
        logs = "".join((tmp_path / f"{n.name}.log").read_text(errors="replace")[-800:] for n in nodes)
        assert all(f"via {n.ipv4}" in routes for n in nodes), f"{router} routes: {routes!r}\n{logs}"
        assert "nexthop" in routes  # one ECMP route, not two
        states = lab.status()["bgp_neighbors"]
        assert all(states.get(n.ipv4, "").lower() == "established" for n in nodes), states
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if router != "frr" or password:
            lab.up(router="frr", bgp_password=None)


def test_bird_router_lists_every_node_as_a_neighbor(lab: Lab) -> None:
    try:
        lab.up(router="bird")
        want = {n.ipv4 for n in lab.plan.nodes}
        seen = _wait_neighbors(lab, want)
        assert want <= set(seen), seen
        names = {p["name"] for p in lab.state()["processes"]}
        assert "router-bird" in names and "router-zebra" not in names
    finally:
        lab.up(router="frr")


def test_exec_passes_exit_code_and_stdio(lab: Lab) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "ip -4 -br addr show eth0; exit 7",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 7
    assert "172.18.0.100/16" in proc.stdout
    bad = lab_cli("exec", "not-a-lab-ns", "--", "true", check=False)
    assert bad.returncode == 2


def test_ipv6_dual_stack_lab(lab: Lab) -> None:
    """`--ipv6`: fc00:f853:ccd:e793::/64 on the bridge, 2001:db8:1::/64 behind the router."""
    lab.down()
    try:
        lab.up(ipv6=True, workers=1)
        worker = lab.plan.node("kind-worker")
        assert worker.ipv6 == "fc00:f853:ccd:e793::3"
        for src, dst in [
            (topo.CLIENT, worker.ipv6),
            (topo.CLIENT, topo.ROUTER_IP_V6),
            (topo.EXT_CLIENT, worker.ipv6),
        ]:
            res = _ping(lab, src, dst)
            assert res.returncode == 0, (src, dst, res.stdout + res.stderr)
        want = {n.ipv4 for n in lab.plan.nodes} | {n.ipv6 for n in lab.plan.nodes if n.ipv6}
        seen = _wait_neighbors(lab, want)
        assert want <= set(seen), seen
    finally:
        lab.down()


# -- lifecycle: these take the lab down -------------------------------------------------------------


def _recorded(lab: Lab) -> list[ProcessRecord]:
    return LabState(lab.state_dir).processes


def test_down_leaves_no_namespace_and_no_process(lab: Lab) -> None:
    records = _recorded(lab)
    assert records, "up recorded no process"
    out = lab.down()
    assert "lab down" in out
    assert lab_namespaces() == []
    alive = [r for r in records if r.alive()]
    assert not alive, alive
    assert not (lab.state_dir / "state.json").exists()
    # idempotent
    assert "lab down" in lab.down()


def test_down_after_a_crash_half_way_through_up(lab_session: Lab) -> None:
    lab = lab_session
    if lab.is_up:
        lab.down()
    # 1. deterministic: a state file with a recorded namespace and a process inside it
    state = LabState(lab.state_dir)
    state.add_namespace(topo.CLIENT)
    nsops.create_netns(topo.CLIENT)
    sleeper = nsops.popen_in(topo.CLIENT, ["sleep", "300"])
    state.add_process("stray", sleeper.pid, ["sleep", "300"], topo.CLIENT, None)
    # and a process in a lab namespace that nobody recorded (crash between start and record)
    nsops.create_netns("kind-worker")
    unrecorded = nsops.popen_in("kind-worker", ["sleep", "300"])
    lab.down()
    assert sleeper.wait(timeout=10) is not None
    assert unrecorded.wait(timeout=10) is not None
    assert lab_namespaces() == []
    # 2. a real `up` killed part-way
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "up", "--state-dir", str(lab.state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab.is_up = True
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = json.loads((lab.state_dir / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        if len(data.get("namespaces", [])) >= 3 or data.get("processes"):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    records = _recorded(lab)
    lab.down()
    assert lab_namespaces() == []
    assert not [r for r in records if r.alive()]


def test_up_against_an_external_api_server(lab_session: Lab, tmp_path: Path) -> None:
    """`--kubeconfig` names another API server: no lab API server is started, objects go there."""
    lab = lab_session
    if lab.is_up:
        lab.down()
    kubeconfig = tmp_path / "external-kubeconfig"
    from lab.commands import Kube, _free_port

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "apiserver",
            "--port",
            str(_free_port()),
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kubeconfig.exists(), "external API server did not start"
        lab.is_up = True
        lab_cli(
            "up",
            "--state-dir",
            str(lab.state_dir),
            "--workers",
            "1",
            "--router",
            "none",
            "--kubeconfig",
            str(kubeconfig),
            "--no-controller",
            "--no-agents",
            "--no-speakers",
        )
        state = lab.state()
        assert state["apiserver"]["external"] is True
        assert "apiserver" not in {p["name"] for p in state["processes"]}
        nodes = Kube(kubeconfig).request("GET", "/api/v1/nodes")["items"]
        assert {n["metadata"]["name"] for n in nodes} == {"kind-control-plane", "kind-worker"}
    finally:
        lab.down()
        server.terminate()
        server.wait(timeout=10)
    assert lab_namespaces() == []
