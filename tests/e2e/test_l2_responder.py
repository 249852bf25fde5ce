"""End-to-end: the L2 announcer in a network namespace answers real ARP/NDP clients.

Topology (all in namespaces created here, prefixed ``lbt-h-``, torn down even on
failure): a bridge namespace with ``br0``; two "node" namespaces ``n1``/``n2`` and a
``client`` namespace, each with ``eth0`` on a veth into the bridge, on 172.18.0.0/16
and fc00:f853:ccd:e793::/64. The VIP is put on the nodes' ``lo`` with strict ARP set
(as kube-proxy IPVS + strictARP does), so the kernel never answers ARP for it on eth0
but does answer pings: only our responder makes the VIP reachable.

The responder runs as ``python -m lbspeaker.l2`` inside the node namespace and is
driven over stdin.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lab import netns as nsops

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]

VIP = "172.18.255.200"
VIP_OTHER = "172.18.255.201"
VIP6 = "fc00:f853:ccd:e793::c8"
NODE_IPS = {"n1": "172.18.0.2", "n2": "172.18.0.3", "client": "172.18.0.9"}
NODE_IP6 = {"n1": "fc00:f853:ccd:e793::2", "n2": "fc00:f853:ccd:e793::3", "client": "fc00:f853:ccd:e793::9"}


def sh(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


class Lab:
    """Namespaces + responder processes; `close()` removes everything it made."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.ns: dict[str, str] = {}
        self.procs: list[subprocess.Popen[str]] = []

    def name(self, role: str) -> str:
        return f"lbt-h-{self.tag}-{role}"

    def up(self) -> None:
        br = self.name("br")
        sh("ip", "netns", "add", br)
        self.ns["br"] = br
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for i, role in enumerate(("n1", "n2", "client")):
            ns = self.name(role)
            sh("ip", "netns", "add", ns)
            self.ns[role] = ns
            # Create the pair directly inside the namespaces: nothing touches the host.
            sh("ip", "-n", br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", br, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{NODE_IPS[role]}/16", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{NODE_IP6[role]}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            if role != "client":
                # VIPs on lo + strict ARP, set through our own netinfo helper.
                sh("ip", "-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo")
                sh("ip", "-n", ns, "addr", "add", f"{VIP_OTHER}/32", "dev", "lo")
                sh("ip", "-n", ns, "addr", "add", f"{VIP6}/128", "dev", "lo")
                code = (
                    "import json; from lbspeaker.netinfo import enforce_strict_arp as e; "
                    "print(json.dumps(e(['eth0', 'all'])))"
                )
                out = self.exec(role, sys.executable, "-c", code).stdout
                assert json.loads(out)["eth0"] == {"arp_ignore": 1, "arp_announce": 2}
        # wait for link-local addresses (NA source) to leave tentative state
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            out = sh("ip", "-n", self.ns["n1"], "-6", "addr", "show", "dev", "eth0", "scope", "link").stdout
            if "fe80" in out and "tentative" not in out:
                break
            time.sleep(0.1)

    def exec(
        self, role: str, *cmd: str, check: bool = True, timeout: float = 10
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns[role], *cmd, check=check, timeout=timeout)

    def mac(self, role: str) -> str:
        out = sh("ip", "-n", self.ns[role], "-j", "link", "show", "eth0").stdout
        return str(json.loads(out)[0]["address"])

    def responder(self, role: str, *ips: str) -> Responder:
        args = ["ip", "netns", "exec", self.ns[role], sys.executable, "-m", "lbspeaker.l2", "-i", "eth0"]
        for ip in ips:
            args += ["--ip", ip]
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        r = Responder(proc)
        ready = r.read_event()
        assert ready["event"] == "ready" and ready["errors"] == {}, ready
        return r

    def close(self) -> None:
        for proc in self.procs:
            nsops.stop_popen(proc)
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)


class Responder:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def read_event(self, timeout: float = 10) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("responder did not answer in time")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"responder exited: {err}")
        return dict(json.loads(line))

    def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read_event()

    def stats(self) -> dict[str, Any]:
        ev = self.command("stats")
        return dict(ev["stats"])


@pytest.fixture
def l2lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.close()


def arping(lab: Lab, ip: str, count: int = 1) -> list[str]:
    """MACs that answered a who-has for `ip` from the client."""
    res = lab.exec("client", "arping", "-c", str(count), "-w", "2", "-I", "eth0", ip, check=False)
    return re.findall(r"from ([0-9a-f:]{17})", res.stdout.lower())


def neigh(lab: Lab, ip: str) -> str | None:
    out = lab.exec("client", "ip", "-j", "neigh", "show", ip).stdout
    entries = json.loads(out or "[]")
    return str(entries[0].get("lladdr")) if entries and entries[0].get("lladdr") else None


def test_kernel_stays_silent_without_responder(l2lab: Lab) -> None:
    # strict ARP makes the VIP on lo invisible at layer 2: the baseline for the rest.
    assert arping(l2lab, VIP) == []
    assert arping(l2lab, NODE_IPS["n1"]) == [l2lab.mac("n1")]


def test_answers_owned_only_and_stops_on_release(l2lab: Lab) -> None:
    r = l2lab.responder("n1", VIP)
    n1 = l2lab.mac("n1")
    assert arping(l2lab, VIP, count=2) == [n1, n1]
    assert arping(l2lab, VIP_OTHER) == []  # not owned
    # the client can reach the VIP through our answer (kernel on n1 serves the ping)
    l2lab.exec("client", "ip", "neigh", "flush", "dev", "eth0")
    assert l2lab.exec("client", "ping", "-c", "1", "-W", "2", VIP, check=False).returncode == 0
    assert neigh(l2lab, VIP) == n1

    ev = r.command(f"release {VIP}")
    assert ev["owned"] == {}
    assert arping(l2lab, VIP) == []
    stats = r.stats()["eth0/ipv4"]
    assert stats["responses_sent"][VIP] >= 3
    assert stats["gratuitous_sent"][VIP] >= 2
    assert stats["malformed_dropped"] == 0

    ev = r.command(f"own {VIP_OTHER}")
    assert ev["owned"] == {"eth0": [VIP_OTHER]}
    assert arping(l2lab, VIP_OTHER) == [n1]
    assert arping(l2lab, VIP) == []


def test_gratuitous_arp_moves_client(l2lab: Lab) -> None:
    r1 = l2lab.responder("n1", VIP)
    n1, n2 = l2lab.mac("n1"), l2lab.mac("n2")
    assert l2lab.exec("client", "ping", "-c", "1", "-W", "2", VIP, check=False).returncode == 0
    assert neigh(l2lab, VIP) == n1
    r2 = l2lab.responder("n2")  # running, owning nothing yet
    # handover: n1 releases, n2 takes; only GARP tells the client (no new request)
    r1.command(f"release {VIP}")
    t0 = time.monotonic()
    r2.command(f"own {VIP}")
    moved_after = None
    while time.monotonic() - t0 < 3:
        if neigh(l2lab, VIP) == n2:
            moved_after = time.monotonic() - t0
            break
        time.sleep(0.02)
    assert moved_after is not None, "client neighbour entry did not move to n2"
    print(f"client neighbour entry moved to the new node {moved_after * 1000:.0f} ms after it took the IP")
    assert arping(l2lab, VIP) == [n2]
    assert l2lab.exec("client", "ping", "-c", "1", "-W", "2", VIP, check=False).returncode == 0


def test_ndp_resolves_and_unsolicited_na_moves_client(l2lab: Lab) -> None:
    r1 = l2lab.responder("n1", VIP6)
    n1, n2 = l2lab.mac("n1"), l2lab.mac("n2")
    res = l2lab.exec("client", "ping", "-6", "-c", "1", "-W", "2", VIP6, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert neigh(l2lab, VIP6) == n1
    if shutil.which("ndisc6"):
        res = l2lab.exec("client", "ndisc6", "-n", "-r", "2", VIP6, "eth0", check=False)
        assert res.returncode == 0 and n1 in res.stdout.lower(), res.stdout
    stats = r1.stats()["eth0/ipv6"]
    assert stats["responses_sent"][VIP6] >= 1
    assert stats["gratuitous_sent"][VIP6] >= 1

    r1.command(f"release {VIP6}")
    t0 = time.monotonic()
    l2lab.responder("n2", VIP6)
    while time.monotonic() - t0 < 3 and neigh(l2lab, VIP6) != n2:
        time.sleep(0.02)
    assert neigh(l2lab, VIP6) == n2
    res = l2lab.exec("client", "ping", "-6", "-c", "1", "-W", "2", VIP6, check=False)
    assert res.returncode == 0


def test_dual_stack_and_garbage_do_not_crash(l2lab: Lab) -> None:
    r = l2lab.responder("n1", VIP, VIP6)
    # Malformed frames from the client: truncated ARP, ARP with bad lengths, broken NS.
    code = r"""
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
bc = b"\xff" * 6
src = b"\x02\x00\x00\x00\x00\x09"
vip = bytes([172, 18, 255, 200])
arp = bc + src + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01"
s.send(arp + src + bytes([172, 18, 0, 9]))  # truncated request: the kernel filter drops it
s.send(bc + src + b"\x08\x06" + b"\x00\x01\x08\x00\x08\x04\x00\x01" + bytes(16) + vip)  # hlen 8
ns = bytes.fromhex("3333ff0000c8") + src + b"\x86\xdd" + bytes.fromhex("6000000000183aff")
ns += bytes.fromhex("fe800000000000000000000000000009") + bytes.fromhex("ff0200000000000000000001ff0000c8")
# NS for the VIP with a wrong checksum (lengths right: a bridge drops bad lengths itself)
s.send(ns + b"\x87\x00\x12\x34" + bytes(4) + bytes.fromhex("fc00f8530ccde79300000000000000c8"))
"""
    l2lab.exec("client", sys.executable, "-c", code)
    n1 = l2lab.mac("n1")
    assert arping(l2lab, VIP) == [n1]
    assert l2lab.exec("client", "ping", "-6", "-c", "1", "-W", "2", VIP6, check=False).returncode == 0
    st = r.stats()
    assert st["eth0/ipv4"]["malformed_dropped"] >= 1
    assert st["eth0/ipv6"]["malformed_dropped"] >= 1
    assert r.proc.poll() is None


def test_survives_link_flap(l2lab: Lab) -> None:
    r = l2lab.responder("n1", VIP)
    n1 = l2lab.mac("n1")
    assert arping(l2lab, VIP) == [n1]
    l2lab.exec("n1", "ip", "link", "set", "eth0", "down")
    time.sleep(0.3)
    l2lab.exec("n1", "ip", "link", "set", "eth0", "up")
    deadline = time.monotonic() + 5
    answered: list[str] = []
    while time.monotonic() < deadline and not answered:
        answered = arping(l2lab, VIP)
    assert answered == [n1]
    assert r.proc.poll() is None
