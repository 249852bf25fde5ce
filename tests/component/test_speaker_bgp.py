"""The speaker's BGP side against the lab API server, ExaBGP replaced by a fake manager.

Checks the adapter: peers/routes handed to the manager (ETP Cluster and Local,
following endpoints), ServiceBGPStatus per node, BGPPeer status.sessions for this
node (with the reason when down, written without flooding), Events, metrics,
passwordSecret, bad input never crashing, layer 2 unaffected, and SIGTERM order
(withdraw before the rest).
"""

from __future__ import annotations

import copy
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.routes import RouteAttrs
from lbspeaker.bgp.session import PeerSession
from lbspeaker.kube.client import Timeouts, load_api_client
from lbspeaker.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    COMMUNITIES,
    ENDPOINTSLICES,
    EVENTS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    NAMESPACES,
    NODES,
    SECRETS,
    SERVICEBGPSTATUSES,
    SERVICES,
)
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.links import LinkInfo
from lbspeaker.speaker.bgp import BGPHooks
from lbspeaker.speaker.main import Config, Speaker
from lbspeaker.speaker.status import BGP_STATUS
from tests.component.test_speaker import FakeAnnouncer
from tests.helpers import wait_for

pytestmark = pytest.mark.component

Fixture = tuple[Speaker, FakeAnnouncer, list["FakeManager"]]

NS = "lbspeaker-system"
NODE = "node-a"
BGP_IP = "198.51.100.10"
L2_IP = "172.18.255.200"


class FakeManager:
    """Stands in for ExaBGPManager: records peers/routes, sessions set by the test."""

    def __init__(self, workdir: Path, on_change: Callable[[str, PeerSession], None]) -> None:
        self.workdir = workdir
        self.on_change = on_change
        self.peers: list[PeerSpec] = []
        self.routes: dict[str, dict[str, RouteAttrs]] = {}
        self.started = False
        self.stopped_with: bool | None = None
        self.updates_total = 0
        self.restarts = 0
        self._sessions: dict[str, PeerSession] = {}
        self.lock = threading.Lock()
        self.log: list[str] = []

    def start(self) -> None:
        self.started = True

    def stop(self, withdraw: bool = True, timeout: float = 3.0, grace: float = 0.2) -> None:
        with self.lock:
            if withdraw:
                self.routes = {}
            self.stopped_with = withdraw
            self.log.append("stop")

    def set_peers(self, peers: Any) -> None:
        with self.lock:
            self.peers = list(peers)
            for p in self.peers:
                self._sessions.setdefault(p.name, PeerSession(p.name, "Idle"))

    def set_routes(self, table: Any) -> None:
        with self.lock:
            self.routes = {k: dict(v) for k, v in table.items() if v}
            self.updates_total += 1

    def sessions(self) -> dict[str, PeerSession]:
        with self.lock:
            return {k: copy.copy(v) for k, v in self._sessions.items()}  # as ExaBGPManager does

    def in_sync(self) -> bool:
        return True

    def set_session(self, name: str, state: str, error: str = "", now: float = 1700000000.0) -> None:
        with self.lock:
            s = self._sessions.setdefault(name, PeerSession(name))
            s.set_state(state, now)
            if error:
                s.set_error(error, now)
        self.on_change(name, s)


def create(rest: Rest, res: Any, obj: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    try:
        return rest.create(res, obj, ns)
    except ApiError as exc:
        if not (exc.conflict or exc.already_exists):
            raise
        return {}


def set_endpoints(rest: Rest, name: str, nodes: list[str]) -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": f"{name}-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [f"10.244.{i}.5"], "nodeName": n, "conditions": {"ready": True}}
                      for i, n in enumerate(nodes)],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }
    try:
        cur = rest.get(ENDPOINTSLICES, f"{name}-1", "default")
        obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        rest.replace(ENDPOINTSLICES, obj)
    except ApiError:
        rest.create(ENDPOINTSLICES, obj, "default")


def lb_service(rest: Rest, name: str, ip: str, pool: str, etp: str = "Cluster") -> None:
    svc = rest.create(SERVICES, {
        "metadata": {"name": name, "namespace": "default",
                     "annotations": {"lbspeaker.io/ip-allocated-from-pool": pool}},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                 "ports": [{"port": 80, "protocol": "TCP"}]}}, "default")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}
    rest.replace_status(SERVICES, svc)


@pytest.fixture
def rest(apiserver_with_crds: LabApiServer, kubeconfig: Path) -> Rest:
    r = Rest(load_api_client(str(kubeconfig)), timeouts=Timeouts(connect=2, read=5))
    for ns in ("default", NS, "kube-system"):
        create(r, NAMESPACES, {"metadata": {"name": ns}})
    for name, ip in (("node-a", "127.0.0.11"), ("node-b", "127.0.0.12")):
        create(r, NODES, {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                          "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                                     "conditions": [{"type": "Ready", "status": "True"}]}})
    r.create(IPADDRESSPOOLS, {"metadata": {"name": "l2", "namespace": NS},
                              "spec": {"addresses": ["172.18.255.200-172.18.255.250"]}})
    r.create(L2ADVERTISEMENTS, {"metadata": {"name": "l2", "namespace": NS},
                                "spec": {"ipAddressPools": ["l2"]}})
    r.create(IPADDRESSPOOLS, {"metadata": {"name": "bgp", "namespace": NS},
                              "spec": {"addresses": ["198.51.100.0/24"]}})
    r.create(BGPADVERTISEMENTS, {"metadata": {"name": "bgp", "namespace": NS},
                                 "spec": {"ipAddressPools": ["bgp"], "communities": ["65535:65282"]}})
    r.create(BGPPEERS, {"metadata": {"name": "router", "namespace": NS},
                        "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": "127.0.0.1"}})
    lb_service(r, "web", BGP_IP, "bgp")
    set_endpoints(r, "web", ["node-b"])
    lb_service(r, "l2web", L2_IP, "l2")
    set_endpoints(r, "l2web", ["node-b"])
    return r


@pytest.fixture
def speaker(rest: Rest, tmp_path: Path) -> Iterator[tuple[Speaker, FakeAnnouncer, list[FakeManager]]]:
    managers: list[FakeManager] = []

    def factory(workdir: Path, on_change: Callable[[str, PeerSession], None]) -> FakeManager:
        m = FakeManager(workdir, on_change)
        managers.append(m)
        return m

    cfg = Config(node=NODE, lease_duration=3, renew_interval=0.5, heartbeat_port=0,
                 metrics_addr="127.0.0.1:0", run_dir=str(tmp_path / "run"))
    ann = FakeAnnouncer()
    spk = Speaker(cfg, rest, ann, list_links=lambda: [LinkInfo("eth0", 2)], watch_links=False,
                  bgp_hooks=BGPHooks(factory, node_networks=lambda: ["127.0.0.11/8"]))
    spk.start()
    yield spk, ann, managers
    if not spk._stop.is_set():
        spk.stop(cleanup_budget_s=0.5)


def routes_of(managers: list[FakeManager]) -> dict[str, dict[str, RouteAttrs]]:
    return managers[0].routes if managers else {}


def peer_sessions(rest: Rest) -> list[dict[str, Any]]:
    return list((rest.get(BGPPEERS, "router", NS).get("status") or {}).get("sessions") or [])


def events(rest: Rest, ns: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in rest.list(EVENTS, ns)["items"] if e.get("reason") == reason]


def test_announce_status_sessions_metrics_and_l2_alongside(
    rest: Rest, speaker: tuple[Speaker, FakeAnnouncer, list[FakeManager]]
) -> None:
    spk, _ann, managers = speaker
    want = {"router": {f"{BGP_IP}/32": RouteAttrs(communities=("65535:65282",))}}
    wait_for(lambda: routes_of(managers) == want, timeout=10, message=lambda: f"routes {routes_of(managers)}")
    mgr = managers[0]
    assert mgr.started and [p.name for p in mgr.peers] == ["router"]
    assert mgr.peers[0].router_id == "127.0.0.11"
    assert mgr.workdir == Path(spk.cfg.run_dir) / "bgp" / NODE
    # layer 2 is untouched by BGP: the L2 IP is still announced by its elected owner
    wait_for(lambda: spk.plan is not None and L2_IP in spk.plan.owners, timeout=10)

    # The speaker creates the object, then writes its status (a subresource): await both.
    st = wait_for(
        lambda: (o := _get(rest, SERVICEBGPSTATUSES, BGP_STATUS.name("default/web", NODE))) and "status" in o
        and o,
        timeout=10,
    )
    assert st is not None
    assert st["status"] == {"node": NODE, "serviceName": "web", "serviceNamespace": "default",
                            "peers": ["router"]}
    wait_for(lambda: events(rest, "default", "nodeAssigned"), timeout=10)

    # session entry for this node, with the reason while down; Events once per transition
    mgr.set_session("router", "Active", "MD5 authentication failed (no TCP connection)")
    wait_for(lambda: [s for s in peer_sessions(rest) if s["node"] == NODE and s["state"] == "Active"],
             timeout=10, message=lambda: f"{peer_sessions(rest)}")
    (entry,) = peer_sessions(rest)
    assert "MD5" in entry["reason"]
    wait_for(lambda: events(rest, NS, "BGPSessionDown"), timeout=10)
    for state in ("Connect", "Active", "Connect", "Active"):  # a down session cycling: no flood
        mgr.set_session("router", state)
    mgr.set_session("router", "Established")
    wait_for(lambda: [s for s in peer_sessions(rest) if s["state"] == "Established"], timeout=10)
    wait_for(lambda: events(rest, NS, "BGPSessionUp"), timeout=10)
    assert len(events(rest, NS, "BGPSessionDown")) == 1
    assert peer_sessions(rest)[0]["reason"] == ""

    port = spk.health.port  # type: ignore[union-attr]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'lbspeaker_bgp_session_up{peer="router"} 1.0' in metrics
    assert 'lbspeaker_bgp_announced_prefixes_total{peer="router"} 1.0' in metrics
    assert "lbspeaker_bgp_updates_total" in metrics

    # SIGTERM path: routes withdrawn through the manager, statuses and our session entry removed
    spk.stop(cleanup_budget_s=2.0)
    assert mgr.stopped_with is True and mgr.routes == {}
    assert _get(rest, SERVICEBGPSTATUSES, BGP_STATUS.name("default/web", NODE)) is None
    assert peer_sessions(rest) == []


class CountingRest:
    """A Rest whose BGPPeer status writes are counted (conflicts included)."""

    def __init__(self, rest: Rest) -> None:
        self._rest = rest
        self.status_writes = 0

    def replace_status(self, resource: Any, obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if resource is BGPPEERS:
            self.status_writes += 1
        return self._rest.replace_status(resource, obj, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rest, name)


def test_down_peer_retrying_is_not_rewritten(rest: Rest, speaker: Fixture) -> None:
    """A down peer cycling Idle/Connect/Active with the same reason is one outage: one write."""
    spk, _, managers = speaker
    wait_for(lambda: managers and managers[0].peers, timeout=10)
    mgr = managers[0]
    counting = CountingRest(rest)
    spk.sessions.rest = counting  # type: ignore[assignment]
    t = 1700000000.0
    mgr.set_session("router", "Active", "connection refused", now=t)
    first = wait_for(lambda: [s for s in peer_sessions(rest) if "refused" in s.get("reason", "")], timeout=10)
    before = counting.status_writes
    for _ in range(30):  # 30 connect retries, each a new FSM state at a new time
        for state in ("Idle", "Connect", "Active"):
            t += 1.0
            mgr.set_session("router", state, "connection refused", now=t)
    # a real change afterwards, written after everything before it: the window is closed
    mgr.set_session("router", "Active", "router sent NOTIFICATION Cease", now=t + 1)
    last = wait_for(lambda: [s for s in peer_sessions(rest) if "Cease" in s.get("reason", "")], timeout=10)
    assert counting.status_writes - before == 1, counting.status_writes - before
    assert last[0]["since"] == first[0]["since"], (first, last)  # the outage began once


def test_etp_local_follows_endpoints(rest: Rest, speaker: Fixture) -> None:
    _, _, managers = speaker
    lb_service(rest, "local", "198.51.100.20", "bgp", etp="Local")
    set_endpoints(rest, "local", ["node-b"])
    wait_for(lambda: f"{BGP_IP}/32" in routes_of(managers).get("router", {}), timeout=10)
    assert "198.51.100.20/32" not in routes_of(managers)["router"]
    set_endpoints(rest, "local", ["node-a"])
    wait_for(lambda: "198.51.100.20/32" in routes_of(managers)["router"], timeout=10)
    set_endpoints(rest, "local", [])
    wait_for(lambda: "198.51.100.20/32" not in routes_of(managers)["router"], timeout=10)
    set_endpoints(rest, "web", [])  # ETP Cluster, no endpoint anywhere: withdrawn
    wait_for(lambda: routes_of(managers) == {}, timeout=10)


def test_password_secret_and_bad_input(rest: Rest, speaker: Fixture) -> None:
    spk, _, managers = speaker
    wait_for(lambda: routes_of(managers), timeout=10)
    rest.create(BGPPEERS, {"metadata": {"name": "secure", "namespace": NS},
                           "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": "127.0.0.2",
                                    "passwordSecret": {"name": "bgp-pw"}}})
    # no Secret yet: left out, reason in status.sessions for this node
    wait_for(lambda: [s for s in (rest.get(BGPPEERS, "secure", NS).get("status") or {}).get("sessions", [])
                      if "bgp-pw" in s.get("reason", "")], timeout=10)
    assert [p.name for p in managers[0].peers] == ["router"]
    rest.create(SECRETS, {"metadata": {"name": "bgp-pw", "namespace": NS}, "type": "kubernetes.io/basic-auth",
                          "stringData": {"password": "s3cret"}}, NS)
    spk.bgp.passwords.forget()  # skip the refresh period
    spk.bgp_runner.poke()
    wait_for(lambda: [p for p in managers[0].peers if p.name == "secure" and p.password == "s3cret"],
             timeout=10)
    # an unreachable / off-network peer and a peer ExaBGP cannot express: reported, nothing crashes
    rest.create(BGPPEERS, {"metadata": {"name": "faraway", "namespace": NS},
                           "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": "10.99.0.1"}})
    rest.create(BGPPEERS, {"metadata": {"name": "unnumbered", "namespace": NS},
                           "spec": {"myASN": 64513, "peerASN": 64512, "interface": "eth9"}})
    wait_for(lambda: events(rest, NS, "PeerNotOnNodeNetwork") and events(rest, NS, "InvalidPeer"), timeout=10)
    assert spk.bgp_runner.errors == 0 and spk.plans > 0
    assert f"{BGP_IP}/32" in routes_of(managers)["router"]
    ready = urllib.request.urlopen(f"http://127.0.0.1:{spk.health.port}/readyz", timeout=5)  # type: ignore
    text = ready.read().decode()
    assert "bgp problem: BGPPeer faraway: PeerNotOnNodeNetwork" in text


def _get(rest: Rest, res: Any, name: str) -> dict[str, Any] | None:
    try:
        return rest.get(res, name, NS)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def test_pdeathsig_wrapper_ends_the_child_with_its_parent(tmp_path: Path) -> None:
    """ExaBGP must not outlive a SIGKILLed speaker: the wrapper's child dies with its parent."""
    import os
    import signal
    import subprocess
    import sys

    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'lbspeaker.speaker.pdeathsig', str(os.getpid()), '--',"
        " 'sleep', '60'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n")])
    try:
        child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10))
        wait_for(lambda: b"sleep" in Path(f"/proc/{child}/cmdline").read_bytes(), timeout=10)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=5)

        def gone() -> bool:
            try:
                return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
            except OSError:
                return True

        wait_for(gone, timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=5)


def plans_metric(spk: Speaker) -> dict[str, float]:
    """lbspeaker_speaker_plans_total per protocol, as /metrics shows it."""
    port = spk.health.port  # type: ignore[union-attr]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("lbspeaker_speaker_plans_total{"):
            out[line.split('protocol="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_only_events_that_can_change_a_plan_trigger_planning(rest: Rest, speaker: Fixture) -> None:
    """Lease renewals, a Service annotation nobody reads, a Node status heartbeat, a BGPPeer label:
    seen by the caches, ignored by the facts index, no plan. An endpoint change plans both
    protocols; a Community (BGP only) plans BGP and not layer 2."""
    spk, _, managers = speaker
    # settled: BGP announced, and layer 2 planned with this node live (it owns the L2 IP)
    wait_for(lambda: routes_of(managers) and spk.plan is not None and spk.plan.owners.get(L2_IP) == NODE,
             timeout=10)
    before = plans_metric(spk)
    assert before["layer2"] >= 1 and before["bgp"] >= 1
    ignored = dict(spk.index.ignored)
    lease_events = spk.leases.events

    rest.patch(SERVICES, "web", {"metadata": {"annotations": {"team": "payments"}}}, "default")
    rest.patch_status(NODES, "node-a", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}})
    rest.patch(BGPPEERS, "router", {"metadata": {"labels": {"owner": "netops"}}}, NS)

    def seen() -> bool:
        now = spk.index.ignored
        return (now.get("services", 0) > ignored.get("services", 0)
                and now.get("nodes", 0) > ignored.get("nodes", 0)
                and now.get("bgppeers", 0) > ignored.get("bgppeers", 0)
                and spk.leases.events >= lease_events + 3)  # three renewals (every 0.5 s)

    wait_for(seen, timeout=10, message=lambda: f"ignored {spk.index.ignored}, leases {spk.leases.events}")
    assert plans_metric(spk) == before, (plans_metric(spk), before)

    set_endpoints(rest, "web", ["node-a", "node-b"])  # can change both plans
    wait_for(lambda: all(plans_metric(spk)[p] > before[p] for p in before), timeout=10,
             message=lambda: f"{plans_metric(spk)} vs {before}")
    after = plans_metric(spk)
    skipped = spk.l2_runner.skipped
    aliases = [{"name": "no-advertise", "value": "65535:65282"}]
    create(rest, COMMUNITIES, {"metadata": {"name": "aliases", "namespace": NS},
                               "spec": {"communities": aliases}}, NS)
    wait_for(lambda: plans_metric(spk)["bgp"] > after["bgp"], timeout=10)
    wait_for(lambda: spk.l2_runner.skipped > skipped, timeout=10)
    assert plans_metric(spk)["layer2"] == after["layer2"]
