"""ExaBGP manager end to end: nodes announce to FRR and BIRD routers in `lbt-j-*` namespaces.

What is checked (issue 5's BGP building blocks, before the speaker wiring):
ECMP in the router's RIB and kernel FIB, communities / large communities /
localPref on the router, withdraw, SIGKILL of ExaBGP (noticed, restarted, routes
back), stop() withdrawing before exit, MD5 right/wrong password with the reason in
the session state, and a peer added/removed by reload leaving other sessions alone.

Topology (helper J's namespaces):

    lbt-j-r   router: bridge br0 172.18.0.1/16, FRR (zebra + bgpd, AS 64512)
    lbt-j-b   second router on br0: 172.18.0.2, BIRD 2 (AS 64512)
    lbt-j-n1  node 172.18.0.11 (AS 64513, eBGP)
    lbt-j-n2  node 172.18.0.12 (AS 64513, eBGP)
    lbt-j-n3  node 172.18.0.13 (AS 64513, eBGP, FRR requires MD5 password "s3cret")
    lbt-j-n4  node 172.18.0.14 (AS 64512, iBGP: localPref is carried)

Every veth is created directly inside the namespaces (nothing on the host side), only
172.18.0.0/16 and 198.51.100.0/24 are used, and `teardown()` ends every daemon by
its PID and deletes the namespaces, whatever state they are in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import netns as nsops
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.exabgp import ExaBGPManager
from lbspeaker.bgp.routes import RouteAttrs
from lbspeaker.bgp.session import PeerSession
from tests.e2e.test_speaker_bgp import alive
from tests.helpers import daemon_pid, wait_for

PREFIX = "lbt-j-"
ROUTER, BIRD_NS = "lbt-j-r", "lbt-j-b"
NODES = {
    "lbt-j-n1": "172.18.0.11",
    "lbt-j-n2": "172.18.0.12",
    "lbt-j-n3": "172.18.0.13",
    "lbt-j-n4": "172.18.0.14",
}
ROUTER_IP, BIRD_IP = "172.18.0.1", "172.18.0.2"
ROUTER_ASN, NODE_ASN = 64512, 64513
MD5_PASSWORD = "s3cret"
HOLD = 9

FRR_BIN = Path("/usr/lib/frr")


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def ns_exec(ns: str, *argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def existing_namespaces() -> list[str]:
    out = sh("ip", "-j", "netns", "list", check=False).stdout.strip()
    names = [n["name"] for n in json.loads(out)] if out else []
    return [n for n in names if n.startswith(PREFIX)]


def available() -> str | None:
    """Why these tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "bird", "birdc", "vtysh"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not (FRR_BIN / "bgpd").exists():
        return "needs FRR (apt-get install frr)"
    return None


def frr_conf(workdir: Path) -> str:
    lines = [
        "frr defaults traditional",
        "hostname lbt-j-router",
        f"log file {workdir}/frr.log",
        "!",
        f"router bgp {ROUTER_ASN}",
        f" bgp router-id {ROUTER_IP}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " bgp bestpath as-path multipath-relax",
    ]
    for ns, ip in NODES.items():
        asn = ROUTER_ASN if ns == "lbt-j-n4" else NODE_ASN
        lines += [
            f" neighbor {ip} remote-as {asn}",
            f" neighbor {ip} timers {HOLD // 3} {HOLD}",
            f" neighbor {ip} timers connect 1",
        ]
        if ns == "lbt-j-n3":
            lines.append(f" neighbor {ip} password {MD5_PASSWORD}")
    lines += [
        " address-family ipv4 unicast",
        "  maximum-paths 8",
        "  maximum-paths ibgp 8",
        " exit-address-family",
        "!",
    ]
    return "\n".join(lines) + "\n"


def bird_conf(workdir: Path) -> str:
    protocols = "\n".join(
        f"protocol bgp {ns.replace('-', '_')} from nodes {{ neighbor {ip} as {NODE_ASN}; }}"
        for ns, ip in NODES.items()
        if ns in ("lbt-j-n1", "lbt-j-n2")
    )
    return f"""router id {BIRD_IP};
log "{workdir}/bird.log" all;
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
template bgp nodes {{
  local {BIRD_IP} as {ROUTER_ASN};
  hold time {HOLD};
  connect retry time 1;
  ipv4 {{ import all; export none; }};
}}
{protocols}
"""


@dataclass
class Topology:
    workdir: Path
    pids: list[int] = field(default_factory=list)
    # FRR drops to user frr: its directory must not sit under pytest's 0700 tmp dirs
    frr_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lbt-j-frr-", dir="/tmp")))

    @property
    def bird_sock(self) -> Path:
        return self.workdir / "bird.ctl"

    # --- build / teardown ---------------------------------------------------------------------

    def setup(self) -> None:
        self.teardown()  # leftovers of an interrupted run of ours
        self.frr_dir.mkdir(parents=True, exist_ok=True)
        for ns in (ROUTER, BIRD_NS, *NODES):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ROUTER, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", ROUTER, "addr", "add", f"{ROUTER_IP}/16", "dev", "br0")
        sh("ip", "-n", ROUTER, "link", "set", "br0", "up")
        for i, (ns, ip) in enumerate([(BIRD_NS, BIRD_IP), *NODES.items()]):
            port = f"jv{i}"
            nsops.add_veth(ROUTER, port, ns, "eth0")
            nsops.ip_batch(ROUTER, [f"link set {port} master br0"])
            nsops.ip_batch(ns, [f"addr add {ip}/16 dev eth0"])
        self.start_frr()
        self.start_bird()

    def start_frr(self) -> None:
        d = self.frr_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "frr.conf").write_text(frr_conf(d))
        shutil.chown(d, "frr", "frr")
        shutil.chown(d / "frr.conf", "frr", "frr")
        for daemon in ("zebra", "bgpd"):
            argv = [
                str(FRR_BIN / daemon),
                "-d",
                "-f",
                str(d / "frr.conf"),
                "-i",
                str(d / f"{daemon}.pid"),
                "-z",
                str(d / "zserv.api"),
                "--vty_socket",
                str(d),
                "-P",
                "0",
            ]
            ns_exec(ROUTER, *argv)
            self.pids.append(daemon_pid(d / f"{daemon}.pid"))
            if daemon == "zebra":
                wait_for(lambda: (d / "zserv.api").exists(), timeout=10, message="zebra's zserv.api socket")

    def start_bird(self) -> None:
        conf = self.workdir / "bird.conf"
        conf.write_text(bird_conf(self.workdir))
        pid_file = self.workdir / "bird.pid"
        ns_exec(BIRD_NS, "bird", "-c", str(conf), "-s", str(self.bird_sock), "-P", str(pid_file))
        self.pids.append(daemon_pid(pid_file))

    def teardown(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for pid in self.pids:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pids = []
        for ns in existing_namespaces():
            # any process of ours still in the namespace (e.g. a leftover ExaBGP), by PID
            for text in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(text), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.frr_dir, ignore_errors=True)

    # --- router views ------------------------------------------------------------------------------

    def vtysh(self, command: str) -> str:
        return ns_exec(ROUTER, "vtysh", "--vty_socket", str(self.frr_dir), "-c", command).stdout

    def frr_neighbor(self, ip: str) -> dict:
        return dict(json.loads(self.vtysh(f"show bgp neighbors {ip} json")).get(ip, {}))

    def birdc(self, command: str) -> str:
        return sh("birdc", "-s", str(self.bird_sock), *command.split()).stdout

    def fib_nexthops(self, prefix: str, ns: str = ROUTER) -> set[str]:
        """Gateways of the kernel route for `prefix` in a router namespace (empty: no route)."""
        out = sh("ip", "-n", ns, "-j", "route", "show", "exact", prefix, check=False).stdout.strip()
        hops: set[str] = set()
        for route in json.loads(out) if out else []:
            if "gateway" in route:
                hops.add(route["gateway"])
            for nh in route.get("nexthops", []):
                if "gateway" in nh:
                    hops.add(nh["gateway"])
        return hops

    def fib_count(self, prefix_start: str, ns: str = ROUTER) -> int:
        """Number of kernel routes whose destination starts with `prefix_start`."""
        out = sh("ip", "-n", ns, "-j", "route", "show", "proto", "bgp", check=False).stdout.strip()
        return sum(
            1 for r in (json.loads(out) if out else []) if str(r.get("dst", "")).startswith(prefix_start)
        )




# --- fixtures ------------------------------------------------------------------------------------------

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    reason = available()
    if reason:
        pytest.skip(reason)
    t = Topology(tmp_path_factory.mktemp("lbt-j"))
    try:
        t.setup()
        yield t
    finally:
        t.teardown()


class Node:
    """One node namespace's ExaBGP manager plus the session changes it reported."""

    def __init__(self, ns: str, workdir: Path) -> None:
        self.ns = ns
        self.ip = NODES[ns]
        self.changes: list[tuple[str, PeerSession]] = []
        self.manager = ExaBGPManager(
            workdir / ns,
            command_prefix=["ip", "netns", "exec", ns],
            on_session_change=lambda name, s: self.changes.append((name, s)),
            backoff_initial=0.2,
            stall_after=4.0,
        )

    def peer(self, name: str = "frr", address: str = ROUTER_IP, **kw: Any) -> PeerSpec:
        asn = ROUTER_ASN if self.ns == "lbt-j-n4" else NODE_ASN
        return PeerSpec(
            name,
            address,
            asn,
            peer_asn=ROUTER_ASN,
            source_address=self.ip,
            router_id=self.ip,
            hold_time=HOLD,
            **kw,
        )

    def state(self, peer: str = "frr") -> str:
        s = self.manager.sessions().get(peer)
        return s.state if s else "none"


@pytest.fixture
def nodes(topo: Topology, tmp_path: Path) -> Iterator[dict[str, Node]]:
    made: dict[str, Node] = {ns: Node(ns, tmp_path) for ns in NODES}
    try:
        yield made
    finally:
        for node in made.values():
            node.manager.stop(withdraw=False, timeout=2)
        # every ExaBGP/relay of this test is gone (ended by PID in stop())
        for node in made.values():
            assert node.manager.pid is None


def established(node: Node, peer: str = "frr", timeout: float = 20) -> None:
    wait_for(
        lambda: node.state(peer) == "Established",
        timeout=timeout,
        message=lambda: f"{node.ns}/{peer}: {node.manager.sessions()} {list(node.manager.log_tail)[-5:]}",
    )


VIP = "198.51.100.10/32"
ATTRS = RouteAttrs(communities=("65000:1", "65535:65282"), large_communities=("64513:7:42",))


# --- tests -----------------------------------------------------------------------------------------------


def test_frr_ecmp_communities_and_withdraw(topo: Topology, nodes: dict[str, Node]) -> None:
    n1, n2 = nodes["lbt-j-n1"], nodes["lbt-j-n2"]
    for n in (n1, n2):
        n.manager.set_peers([n.peer()])
        n.manager.start()
        n.manager.announce("frr", VIP, ATTRS)
    for n in (n1, n2):
        established(n)
        assert n.manager.wait_synced(10)
    wait_for(
        lambda: topo.fib_nexthops(VIP) == {"172.18.0.11", "172.18.0.12"},
        timeout=10,
        message=lambda: f"FIB {topo.fib_nexthops(VIP)}",
    )
    rib = topo.vtysh(f"show ip bgp {VIP}")
    assert "Paths: (2 available" in rib and rib.count("multipath") == 2, rib
    assert "Community: 65000:1 65535:65282" in rib or "Community: 65000:1 no-advertise" in rib, rib
    assert "Large Community: 64513:7:42" in rib, rib

    n1.manager.withdraw("frr", VIP)
    wait_for(lambda: topo.fib_nexthops(VIP) == {"172.18.0.12"}, timeout=5)
    n2.manager.withdraw("frr", VIP)
    wait_for(lambda: topo.fib_nexthops(VIP) == set(), timeout=5)
    assert "Network not in table" in topo.vtysh(f"show ip bgp {VIP}")


def test_frr_ibgp_local_pref(topo: Topology, nodes: dict[str, Node]) -> None:
    n4 = nodes["lbt-j-n4"]
    n4.manager.set_peers([n4.peer()])
    n4.manager.start()
    n4.manager.announce("frr", "198.51.100.40/32", RouteAttrs(local_pref=250, communities=("64512:40",)))
    established(n4)
    wait_for(lambda: topo.fib_nexthops("198.51.100.40/32") == {"172.18.0.14"}, timeout=10)
    rib = topo.vtysh("show ip bgp 198.51.100.40/32")
    assert "localpref 250" in rib and "internal" in rib and "Community: 64512:40" in rib, rib


def test_sigkill_is_noticed_restarted_and_routes_come_back(topo: Topology, nodes: dict[str, Node]) -> None:
    n1 = nodes["lbt-j-n1"]
    n1.manager.set_peers([n1.peer()])
    n1.manager.start()
    n1.manager.announce("frr", "198.51.100.11/32", ATTRS)
    established(n1)
    wait_for(lambda: topo.fib_nexthops("198.51.100.11/32") == {"172.18.0.11"}, timeout=10)
    old_pid = n1.manager.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    # noticed: the session is reported down with the exit as reason
    wait_for(lambda: any("ExaBGP exited" in s.last_error for _, s in n1.changes), timeout=5)
    # restarted with a new PID, routes announced again, session back
    wait_for(lambda: n1.manager.pid not in (None, old_pid), timeout=10)
    assert n1.manager.restarts == 1
    established(n1)
    assert n1.manager.wait_synced(10)
    wait_for(lambda: topo.fib_nexthops("198.51.100.11/32") == {"172.18.0.11"}, timeout=HOLD + 5)
    assert "Community: 65000:1" in topo.vtysh("show ip bgp 198.51.100.11/32")


def test_stop_withdraws_before_exit(topo: Topology, nodes: dict[str, Node]) -> None:
    n1, n2 = nodes["lbt-j-n1"], nodes["lbt-j-n2"]
    prefix = "198.51.100.12/32"
    for n in (n1, n2):
        n.manager.set_peers([n.peer(graceful_restart=True)])
        n.manager.start()
        n.manager.announce("frr", prefix, ATTRS)
    for n in (n1, n2):
        established(n)
    wait_for(lambda: topo.fib_nexthops(prefix) == {"172.18.0.11", "172.18.0.12"}, timeout=10)
    # graceful restart negotiated: without the withdraw FRR would keep the path (stale) for 120s
    caps = topo.frr_neighbor("172.18.0.11")["neighborCapabilities"]
    assert caps["gracefulRestart"] == "advertisedAndReceived"
    # A speaker's own SIGTERM keeps routes to a graceful-restart peer (test_bgp_graceful.py); a peer
    # being deleted (keep_graceful=False) gets its routes withdrawn before ExaBGP ends the session.
    n1.manager.stop(keep_graceful=False)
    # within the hold time, far below the 120 s FRR would keep a stale path: the withdraw went out
    wait_for(lambda: topo.fib_nexthops(prefix) == {"172.18.0.12"}, timeout=HOLD)
    assert n1.manager.pid is None


def test_md5_right_password_up_wrong_password_down_with_reason(
    topo: Topology, nodes: dict[str, Node]
) -> None:
    n3 = nodes["lbt-j-n3"]
    n3.manager.set_peers([n3.peer(password="wrong-password")])
    n3.manager.start()
    reason = wait_for(
        lambda: n3.manager.sessions()["frr"].reason,
        timeout=HOLD * 2,
        message=lambda: f"{n3.manager.sessions()} {list(n3.manager.log_tail)[-10:]}",
    )
    assert "MD5" in reason, reason
    assert n3.state() != "Established"
    assert any(s.reason == reason for _, s in n3.changes)  # reported through the callback
    # the right password: reload, session up
    n3.manager.set_peers([n3.peer(password=MD5_PASSWORD)])
    established(n3, timeout=30)
    n3.manager.announce("frr", "198.51.100.13/32")
    wait_for(lambda: topo.fib_nexthops("198.51.100.13/32") == {"172.18.0.13"}, timeout=10)


def test_reload_adds_and_removes_a_peer_without_touching_the_other(
    topo: Topology, nodes: dict[str, Node]
) -> None:
    n1 = nodes["lbt-j-n1"]
    frr = n1.peer()
    n1.manager.set_peers([frr])
    n1.manager.start()
    n1.manager.announce("frr", "198.51.100.14/32", ATTRS)
    established(n1)
    wait_for(lambda: topo.fib_nexthops("198.51.100.14/32") == {"172.18.0.11"}, timeout=10)
    before = topo.frr_neighbor("172.18.0.11")
    # add the BIRD router: SIGUSR1 reload
    bird = n1.peer("bird", BIRD_IP)
    n1.manager.set_peers([frr, bird])
    n1.manager.announce("bird", "198.51.100.14/32", ATTRS)
    established(n1, "bird")
    assert n1.manager.wait_synced(10)
    wait_for(lambda: topo.fib_nexthops("198.51.100.14/32", BIRD_NS) == {"172.18.0.11"}, timeout=10)
    after = topo.frr_neighbor("172.18.0.11")
    assert after["connectionsEstablished"] == before["connectionsEstablished"], (before, after)
    assert after["connectionsDropped"] == before["connectionsDropped"]
    assert n1.state("frr") == "Established"
    # remove it again: the BIRD session goes, FRR's stays
    n1.manager.set_peers([frr])
    wait_for(lambda: "Established" not in topo.birdc("show protocols lbt_j_n1"), timeout=10)
    wait_for(lambda: topo.fib_nexthops("198.51.100.14/32", BIRD_NS) == set(), timeout=10)
    final = topo.frr_neighbor("172.18.0.11")
    assert final["connectionsEstablished"] == before["connectionsEstablished"]
    assert topo.fib_nexthops("198.51.100.14/32") == {"172.18.0.11"}
    assert n1.manager.reloads == 2


def test_bird_ecmp_communities(topo: Topology, nodes: dict[str, Node]) -> None:
    n1, n2 = nodes["lbt-j-n1"], nodes["lbt-j-n2"]
    prefix = "198.51.100.20/32"
    for n in (n1, n2):
        n.manager.set_peers([n.peer("bird", BIRD_IP)])
        n.manager.start()
        n.manager.announce("bird", prefix, ATTRS)
    for n in (n1, n2):
        established(n, "bird")
    wait_for(
        lambda: topo.fib_nexthops(prefix, BIRD_NS) == {"172.18.0.11", "172.18.0.12"},
        timeout=15,
        message=lambda: topo.birdc(f"show route all {prefix}"),
    )
    out = topo.birdc(f"show route all {prefix}")
    assert "(65000,1)" in out and "(65535,65282)" in out, out
    assert "(64513, 7, 42)" in out, out
    n1.manager.stop()
    wait_for(lambda: topo.fib_nexthops(prefix, BIRD_NS) == {"172.18.0.12"}, timeout=3)


def test_asn_mismatch_stays_down_with_the_notification_as_reason(
    topo: Topology, nodes: dict[str, Node]
) -> None:
    n2 = nodes["lbt-j-n2"]
    wrong = PeerSpec(
        "frr", ROUTER_IP, NODE_ASN, peer_asn=64999, source_address=n2.ip, router_id=n2.ip, hold_time=HOLD
    )
    n2.manager.set_peers([wrong])
    n2.manager.start()
    reason = wait_for(lambda: n2.manager.sessions()["frr"].reason, timeout=15)
    assert "Bad Peer AS" in reason, reason
    assert n2.state() != "Established"
