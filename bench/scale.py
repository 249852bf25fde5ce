"""Scale benchmark on the lab: N Services created back to back, half over layer 2, half over BGP.

The whole product runs as in `lbspeaker-lab up` (3 workers by default): the lab API
server, the controller, one speaker per node (each with its ExaBGP), the lab agents
(EndpointSlices) and the router (FRR). This script

* configures a layer-2 pool (172.18.64.0/18, with an L2Advertisement) and a BGP pool
  (198.18.0.0/18, RFC 2544's benchmarking range, with a BGPAdvertisement and a BGPPeer to
  the lab router), and one pod per worker that every Service selects;
* creates `--services` Services back to back (one keep-alive HTTP connection, the next
  POST as soon as the last one is answered), alternately in the L2 and the BGP pool;
* follows, each with the system-wide monotonic clock:
  - its own watch on the Services: when each one got its IP (create -> IP);
  - its own watch on the EndpointSlices: when each Service first had a ready endpoint
    (create -> endpoint), which both protocols wait for; the speakers' own share is
    "IP and endpoint -> announced";
  - layer 2: a raw-socket ARP prober in the `client` namespace (who-has for each
    allocated IP, re-asked every 0.5 s until answered, at most `--arp-rate` requests a
    second): when the owner answered, and with which MAC (create -> announced);
  - BGP: the `router` namespace's kernel FIB, dumped once and then followed through its
    netlink route events (pyroute2): when the /32 had a next hop via every worker
    (create -> announced);
  - its own watches on ServiceL2Status and ServiceBGPStatus: the run ends once every
    announced Service's status objects exist, so the speakers' CPU includes writing them;
  - every second, /proc of every process the lab recorded (state.json): CPU seconds,
    RSS and peak RSS (VmHWM) of the API server, controller, agents, each speaker and its
    ExaBGP;
* profiles the API server, the controller, the agents and one speaker with py-spy for
  `--profile-seconds` in the middle of the create phase (the top functions go into the
  JSON), and names the component that limits the run: the stage with the largest lag and
  the process that sat at a full core (one Python process cannot use more).

Printed and written to ``bench/results/scale.json``. Targets (issue 9): everything
announced within 10 s of the last create; speaker RSS <= 200 MiB; speaker CPU <= 2 s per
1,000 Service events.

    python bench/scale.py [--services 1000] [--workers 3] [--settle 300] [--out FILE]

Needs root; brings up its own lab (and takes it down) unless lab namespaces exist, in
which case it refuses rather than disturb someone's lab. Run it under the lab lock.
Bounded: creating stops after `--create-timeout` s, waiting after `--settle` s.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import netns as nsops  # noqa: E402
from lab import topology as topo  # noqa: E402
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP, NAMESPACE  # noqa: E402
from tests.e2e.conftest import Lab, lab_cli, lab_namespaces  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "scale.json"
NS = "scale"
L2_POOL = "172.18.64.0/18"  # inside the lab's node subnet, clear of nodes (.0.x) and client (.0.100)
BGP_POOL = "198.18.0.0/18"  # RFC 2544 benchmarking range
PEER = "lab-router"
MAX_CREATE_ERRORS = 20  # refused creates before the create phase stops (the rest would fail alike)
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {
    "announced_after_last_create_s": 10.0,
    "speaker_rss_mib": 200.0,
    # The unit: Service events, i.e. the Service watch events every speaker receives (a
    # Service is created, then gets its IP: two or more each). Per 1,000 Services is printed too.
    "speaker_cpu_s_per_1000_service_events": 2.0,
}

# --- processes run inside lab namespaces (their own interpreter; ended by PID) ------------------

ARP_PROBER = r"""
import heapq, os, select, socket, struct, sys, time
iface, my_ip, rate, retry = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + float(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((iface, 0x0806))
s.setblocking(False)
my_mac = s.getsockname()[4]
spa = socket.inet_aton(my_ip)
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + my_mac + spa + b"\0" * 6
head = b"\xff" * 6 + my_mac + b"\x08\x06" + arp
pending, seen, buf, due = set(), {}, b"", []  # due: heap of (when, ip) to ask (again)
stdin = sys.stdin.fileno()
os.set_blocking(stdin, False)
budget, last = rate, time.monotonic()
eof = False
while time.monotonic() < end and not (eof and not pending):
    now = time.monotonic()
    budget = min(rate, budget + (now - last) * rate)
    last = now
    while due and due[0][0] <= now and budget >= 1:
        _, ip = heapq.heappop(due)
        if ip in pending:  # else answered meanwhile
            s.send(head + socket.inet_aton(ip))
            heapq.heappush(due, (now + retry, ip))
            budget -= 1
    rl = [s] + ([] if eof else [stdin])
    r, _, _ = select.select(rl, [], [], 0.02)
    if stdin in r:
        chunk = os.read(stdin, 65536)
        if not chunk:
            eof = True
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            ip = line.decode().strip()
            if ip and ip not in seen:
                pending.add(ip)
                heapq.heappush(due, (0.0, ip))
                seen[ip] = set()
    if s in r:
        while True:
            try:
                frame = s.recv(128)
            except BlockingIOError:
                break
            if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
                continue
            ip = socket.inet_ntoa(frame[28:32])
            mac = frame[22:28].hex(":")
            t = time.monotonic()
            if ip in seen and mac not in seen[ip]:
                seen[ip].add(mac)
                pending.discard(ip)
                print(f"{t:.6f} {ip} {mac}", flush=True)
"""

FIB_WATCHER = r"""
import errno, json, signal, socket, sys, time
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE
signal.alarm(int(float(sys.argv[1])) + 1)  # bounded: SIGALRM ends it even while it waits for events
BGP, MAIN = 186, 254  # RTPROT_BGP, RT_TABLE_MAIN

def hops_of(m):
    hops = [nh.get_attr("RTA_GATEWAY") for nh in (m.get_attr("RTA_MULTIPATH") or [])]
    return sorted(h for h in (hops or [m.get_attr("RTA_GATEWAY")]) if h)

def ours(m):
    return m["proto"] == BGP and (m.get_attr("RTA_TABLE") or m["table"]) == MAIN and m.get_attr("RTA_DST")

def subscribe():
    # bound before the dump that follows it, so nothing between the two is missed
    events = IPRoute()
    events.bind(groups=RTMGRP_IPV4_ROUTE)
    try:
        events.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root), not in Python's socket
    except OSError:
        pass
    with IPRoute() as ipr:
        table = {m.get_attr("RTA_DST"): hops_of(m) for m in ipr.get_routes(family=socket.AF_INET) if ours(m)}
    return events, table

last = {}
def report(cur, **extra):
    global last
    changed = {k: v for k, v in cur.items() if last.get(k) != v}
    gone = [k for k in last if k not in cur]
    if changed or gone or extra:
        ev = {"t": time.monotonic(), "set": changed, "del": gone, "n": len(cur), **extra}
        print(json.dumps(ev), flush=True)
    last = cur

events, table = subscribe()
report(table)
while True:
    cur = dict(last)
    try:
        for m in events.get():  # blocks until the kernel sends something
            err = m["header"].get("error")
            if err is not None:  # pyroute2 hands a socket error (ENOBUFS: events lost) as a message
                raise err if isinstance(err, OSError) else OSError(errno.EIO, str(err))
            if not ours(m):
                continue
            if m["event"] == "RTM_DELROUTE":
                cur.pop(m.get_attr("RTA_DST"), None)
            else:
                cur[m.get_attr("RTA_DST")] = hops_of(m)
        report(cur)
    except OSError as e:  # ENOBUFS: the kernel dropped events; subscribe again and read the table whole
        if e.errno != errno.ENOBUFS:
            raise
        try:
            events.close()
        except OSError:  # a socket in error re-raises it on close
            pass
        events, table = subscribe()
        report(table, overflow=True)
"""


# --- the API, over one keep-alive connection per user ----------------------------------------------


class Api:
    """A minimal JSON client for the lab API server (plain http, no token), one connection."""

    def __init__(self, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        url = urlsplit(cfg["clusters"][0]["cluster"]["server"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ensure(self, path: str, obj: dict[str, Any]) -> None:
        status, body = self.call("POST", path, obj)
        if status not in (200, 201, 409):
            raise AssertionError(f"POST {path}: {status} {body}")

    def watch(self, path: str, rv: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=3600)
        conn.request(
            "GET",
            f"{path}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3600",
            headers={"Accept": "application/json"},
        )
        return conn.getresponse()


def configure(api: Api, workers: list[str]) -> None:
    """Namespace, both pools and their advertisements, the BGPPeer, one pod per worker."""
    sysns = f"/apis/{API_VERSION}/namespaces/{NAMESPACE}"
    api.ensure("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for name, cidr in (("scale-l2", L2_POOL), ("scale-bgp", BGP_POOL)):
        api.ensure(
            f"{sysns}/ipaddresspools",
            {
                "apiVersion": API_VERSION,
                "kind": "IPAddressPool",
                "metadata": {"name": name},
                "spec": {"addresses": [cidr], "autoAssign": False},
            },
        )
    for kind, plural, pool in (("L2Advertisement", "l2advertisements", "scale-l2"),
                               ("BGPAdvertisement", "bgpadvertisements", "scale-bgp")):
        api.ensure(f"{sysns}/{plural}", {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": pool},
                                         "spec": {"ipAddressPools": [pool]}})
    api.ensure(
        f"/apis/{GROUP}/{BGPPEER_VERSION}/namespaces/{NAMESPACE}/bgppeers",
        {
            "apiVersion": f"{GROUP}/{BGPPEER_VERSION}",
            "kind": "BGPPeer",
            "metadata": {"name": PEER},
            "spec": {
                "myASN": topo.NODE_ASN,
                "peerASN": topo.ROUTER_ASN,
                "peerAddress": topo.ROUTER_IP_V4,
                "holdTime": "9s",
            },
        },
    )
    for i, node in enumerate(workers):
        api.ensure(
            f"/api/v1/namespaces/{NS}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"scale-{i}", "labels": {"app": "scale"}},
                "spec": {
                    "nodeName": node,
                    "containers": [
                        {"name": "web", "image": "lab/host-echo", "ports": [{"containerPort": 8080}]}
                    ],
                },
            },
        )


def service(name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": {f"{GROUP}/address-pool": pool}},
        "spec": {
            "type": "LoadBalancer",
            # No nodePorts: their range (30000-32767) holds 2,768, so Service 2,769 would be refused
            # (as kube-apiserver refuses it: "range is full"); lbspeaker needs none.
            "allocateLoadBalancerNodePorts": False,
            "selector": {"app": "scale"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


# --- observers -------------------------------------------------------------------------------------


class Timeline:
    """Every observation, by Service name and by IP, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.created: dict[str, float] = {}  # name -> the POST was answered
        self.call_s: list[float] = []  # POST latencies
        self.proto: dict[str, str] = {}  # name -> "l2" | "bgp"
        self.ip: dict[str, str] = {}  # name -> IP
        self.by_ip: dict[str, str] = {}  # IP -> name
        self.ip_at: dict[str, float] = {}  # name -> the IP was seen on our watch
        self.endpoints_at: dict[str, float] = {}  # name -> its EndpointSlices first had a ready endpoint
        self.statuses: dict[str, set[str]] = collections.defaultdict(set)  # kind -> names that exist
        self.announced: dict[str, float] = {}  # name -> owner answered ARP / all next hops in the FIB
        self.arp_macs: dict[str, set[str]] = collections.defaultdict(set)  # IP -> MACs that answered
        self.arp_first: dict[str, dict[str, float]] = collections.defaultdict(dict)  # IP -> MAC -> 1st answer
        self.fib: dict[str, list[str]] = {}
        self.fib_reads = 0
        self.fib_overflows = 0  # the watcher's netlink socket overflowed and it re-read the table
        self.ended: list[str] = []  # observers whose output ended (a crash shows on stderr)
        self.errors: list[str] = []
        self.service_events: collections.Counter[str] = collections.Counter()  # by type, as speakers get them

    def pending(self) -> int:
        with self.lock:
            return len(self.created) - len(self.announced)


def watch_events(
    api: Api, path: str, rv: str, tl: Timeline, what: str, stop: threading.Event
) -> Iterator[dict[str, Any]]:
    """The events of one watch until `stop`; a watch that ends early is a run error."""
    resp = api.watch(path, rv)
    while not stop.is_set():
        line = resp.readline()
        if not line:
            with tl.lock:
                tl.errors.append(f"the {what} watch ended early")
            return
        yield json.loads(line)


def watch_services(
    api: Api, tl: Timeline, rv: str, arp_in: Any, hops: set[str], stop: threading.Event
) -> None:
    """Our own watch on the Services: the moment each got its IP; hands L2 IPs to the prober."""
    for ev in watch_events(api, f"/api/v1/namespaces/{NS}/services", rv, tl, "Services", stop):
        obj = ev.get("object") or {}
        if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
            with tl.lock:
                tl.service_events[ev["type"]] += 1
        if ev.get("type") not in ("ADDED", "MODIFIED"):
            continue
        ing = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        name = obj["metadata"]["name"]
        if not ing or name in tl.ip_at:
            continue
        t = time.monotonic()
        ip = ing[0].get("ip")
        with tl.lock:
            tl.ip_at[name], tl.ip[name], tl.by_ip[ip] = t, ip, name
            if tl.proto.get(name) == "bgp" and set(tl.fib.get(ip, [])) >= hops:
                tl.announced.setdefault(name, t)  # was already in the FIB (cannot be earlier than the IP)
            tl.lock.notify_all()
        if tl.proto.get(name) == "l2" and arp_in is not None:
            arp_in.write(f"{ip}\n")
            arp_in.flush()


def watch_endpointslices(api: Api, tl: Timeline, rv: str, stop: threading.Event) -> None:
    """Our own watch on the EndpointSlices: when each Service first had a ready endpoint, which
    both protocols wait for. It separates the lab's EndpointSlice controller from the speakers."""
    path = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
    for ev in watch_events(api, path, rv, tl, "EndpointSlices", stop):
        if ev.get("type") not in ("ADDED", "MODIFIED"):
            continue
        obj = ev.get("object") or {}
        name = ((obj.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
        ready = any((e.get("conditions") or {}).get("ready") for e in obj.get("endpoints") or [])
        if name and ready:
            with tl.lock:
                tl.endpoints_at.setdefault(name, time.monotonic())


STATUS_PATHS = {
    "servicel2statuses": f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/servicel2statuses",
    "servicebgpstatuses": f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/servicebgpstatuses",
}


def watch_statuses(api: Api, tl: Timeline, kind: str, rv: str, stop: threading.Event) -> None:
    """Our own watch on one kind of status object the speakers write: which exist now, so the
    run can wait until every announced Service's status is written, too."""
    for ev in watch_events(api, STATUS_PATHS[kind], rv, tl, kind, stop):
        name = ((ev.get("object") or {}).get("metadata") or {}).get("name")
        if ev.get("type") in ("ADDED", "DELETED") and name:
            with tl.lock:
                if ev["type"] == "ADDED":
                    tl.statuses[kind].add(name)
                else:
                    tl.statuses[kind].discard(name)
                tl.lock.notify_all()


def read_arp(proc: subprocess.Popen[str], tl: Timeline) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        t_s, ip, mac = line.split()
        with tl.lock:
            tl.arp_macs[ip].add(mac)
            tl.arp_first[ip].setdefault(mac, float(t_s))
            name = tl.by_ip.get(ip)
            if name is not None:
                tl.announced.setdefault(name, float(t_s))
            tl.lock.notify_all()
    observer_ended(tl, "arp-prober")


def read_fib(proc: subprocess.Popen[str], tl: Timeline, hops: set[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        ev = json.loads(line)
        with tl.lock:
            tl.fib_reads += 1
            tl.fib_overflows += bool(ev.get("overflow"))
            for k in ev["del"]:
                tl.fib.pop(k, None)
            for ip, hs in ev["set"].items():
                tl.fib[ip] = hs
                name = tl.by_ip.get(ip)
                if name is not None and set(hs) >= hops:
                    tl.announced.setdefault(name, ev["t"])
            tl.lock.notify_all()
    observer_ended(tl, "fib-watcher")


def observer_ended(tl: Timeline, name: str) -> None:
    with tl.lock:
        tl.ended.append(name)
        tl.lock.notify_all()


# --- /proc of the lab's processes ------------------------------------------------------------------


def proc_cpu_s(pid: int, children: bool = False) -> float | None:
    """utime + stime (+ the reaped children's, with `children`) of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(f) for f in fields[11:15 if children else 13])
    return ticks / CLK_TCK


def machine_cpu_s() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far (/proc/stat), to tell a saturated
    machine from a slow component."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


def rest_of_lab_cpu_s(lab: Lab, comps: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of the lab's other processes (the router's daemons, pods, ...), with
    their children: what the machine spends beyond the product's components."""
    known = {pid for pids in comps.values() for pid in pids}
    out: dict[str, float] = {}
    for rec in lab.state()["processes"]:
        pid = int(rec["pid"])
        if pid in known:
            continue
        cpu = sum(proc_cpu_s(p, children=True) or 0.0 for p in [pid, *descendants(pid)])
        group = str(rec["name"]).split("-", 1)[0]
        out[group] = out.get(group, 0.0) + cpu
    return out


def membership_lines(lab: Lab) -> dict[str, list[str]]:
    """Each speaker's "live speakers:" log lines so far: how often its view of who is live moved
    (under load a starved speaker's heartbeats can be late, and every move replans every IP)."""
    out: dict[str, list[str]] = {}
    for path in sorted((lab.state_dir / "logs").glob("speaker-*.log")):
        with contextlib.suppress(OSError):
            out[path.stem] = [ln.strip() for ln in path.read_text(errors="replace").splitlines()
                              if "live speakers:" in ln]
    return out


def observers_cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of what measures (this script, the FIB poller with its `ip` runs, the ARP
    prober): on a two-core machine they compete with the lab, so the report says how much."""
    t = os.times()
    out = {"bench": t.user + t.system}
    for name, pid in pids.items():
        out[name] = proc_cpu_s(pid, children=True) or 0.0
    return out


def proc_runq_wait_s(pid: int) -> float:
    """Seconds the process's threads waited for a CPU (schedstat): how starved the machine keeps it."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
    return total / 1e9


def proc_mem_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB, 0 if gone."""
    rss = hwm = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                out += [int(k) for k in kids]
                todo += [int(k) for k in kids]
    return out


def components(lab: Lab) -> dict[str, list[int]]:
    """Component name -> PIDs: apiserver, controller, agents, speaker-<node>, exabgp-<node>,
    hbsender-<node> (the speaker's heartbeat sender process)."""
    out: dict[str, list[int]] = {}
    for rec in lab.state()["processes"]:
        name, pid = rec["name"], int(rec["pid"])
        if name in ("apiserver", "controller", "agents") or name.startswith("speaker-"):
            out[name] = [pid]
            if name.startswith("speaker-"):
                node = name.removeprefix("speaker-")
                kids = descendants(pid)
                hb = [k for k in kids if "lbspeaker.speaker.hbsender" in cmdline(k)]
                out["exabgp-" + node] = [k for k in kids if k not in hb]
                out["hbsender-" + node] = hb
    return out


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


class Sampler:
    """CPU seconds and memory of every component, once a second (and the machine's load)."""

    def __init__(self, comps: dict[str, list[int]], interval: float = 1.0) -> None:
        self.comps, self.interval = comps, interval
        self.samples: list[tuple[float, dict[str, float], dict[str, int], dict[str, float]]] = []
        self.hwm: dict[str, int] = collections.defaultdict(int)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, dict[str, float], dict[str, int], dict[str, float]]:
        t = time.monotonic()
        cpu, rss, wait = {}, {}, {}
        for name, pids in self.comps.items():
            # with the reaped children: the lab agents' `nft` runs are its work too
            cpu[name] = sum(c for c in (proc_cpu_s(p, children=True) for p in pids) if c is not None)
            wait[name] = sum(proc_runq_wait_s(p) for p in pids)
            mem = [proc_mem_kib(p) for p in pids]
            rss[name] = sum(m[0] for m in mem)
            self.hwm[name] = max(self.hwm[name], sum(m[1] for m in mem), rss[name])
        self.samples.append((t, cpu, rss, wait))
        return t, cpu, rss, wait

    def _run(self) -> None:
        while not self.stop_ev.wait(self.interval):
            self.sample()

    def start(self) -> Sampler:
        self.sample()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_ev.set()
        self.thread.join(5)
        self.sample()

    def between(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        """Per component over [t0, t1]: CPU seconds, mean cores, and the share of seconds at >= 0.9 core."""
        win = [s for s in self.samples if t0 - self.interval <= s[0] <= t1 + self.interval]
        out: dict[str, dict[str, float]] = {}
        if len(win) < 2:
            return out
        for name in self.comps:
            busy = sum(
                1
                for a, b in itertools.pairwise(win)
                if (b[1][name] - a[1][name]) / max(b[0] - a[0], 1e-6) >= 0.9
            )
            cpu = win[-1][1][name] - win[0][1][name]
            wall = win[-1][0] - win[0][0]
            out[name] = {
                "cpu_s": round(cpu, 2),
                "mean_cores": round(cpu / wall, 3),
                "runqueue_wait_s": round(win[-1][3][name] - win[0][3][name], 2),
                "saturated_share": round(busy / (len(win) - 1), 3),
            }
        return out


# --- profiling -------------------------------------------------------------------------------------


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_profiles(comps: dict[str, list[int]], seconds: int, out_dir: Path) -> dict[str, Any]:
    exe = py_spy()
    if exe is None:
        return {}
    speaker = sorted(n for n in comps if n.startswith("speaker-") and "control-plane" not in n)[:1]
    procs = {}
    for name in ["apiserver", "controller", "agents", *speaker]:
        path = out_dir / f"{name}.collapsed"
        argv = [
            exe,
            "record",
            "--pid",
            str(comps[name][0]),
            "--duration",
            str(seconds),
            "--rate",
            "50",
            "--nonblocking",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(path),
        ]
        procs[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
    return procs


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Top functions by own samples and by samples on the stack, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, n_s = line.rpartition(" ")
            if not stack or not n_s.isdigit():
                continue
            n = int(n_s)
            total += n
            frames = [_frame(f) for f in stack.split(";")]
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    share = (lambda c: [[f, round(k / total, 3)] for f, k in c.most_common(top)]) if total else (lambda c: [])
    return {"samples": total, "own": share(own), "on_stack": share(incl)}


def _frame(f: str) -> str:
    """'fn (path/to/mod.py:123)' -> 'fn (mod.py)'; threads' names pass through."""
    fn, _, where = f.partition(" (")
    if not where:
        return f
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    return f"{fn} ({'/'.join(parts[-2:])})"


# --- figures ---------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": pct(values, 0.5),
        "p99_s": pct(values, 0.99),
        "max_s": round(max(values), 3) if values else None,
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def limiter(res: dict[str, Any], usage: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The stage that adds the most lag at the end, and the process that sat at a full core."""
    stages = {
        "apiserver (create calls)": res["create_call_s"]["p99_s"] or 0.0,
        "controller (create -> IP)": res["create_to_ip"]["p99_s"] or 0.0,
        "lab EndpointSlice controller (create -> ready endpoint)": res["create_to_endpoints"]["p99_s"] or 0.0,
        "speakers (IP and ready endpoint -> announced)": max(
            res["ready_to_announced"][p]["p99_s"] or 0.0 for p in ("l2", "bgp")
        ),
    }
    stage = max(stages, key=lambda k: stages[k])
    python = {k: v for k, v in usage.items() if not k.startswith("exabgp-")}
    busiest = (
        max(python, key=lambda k: (python[k]["saturated_share"], python[k]["mean_cores"])) if python else None
    )
    # Group the lab's CPU by role: on a small machine the sum of them is what starves the others.
    roles: dict[str, float] = collections.defaultdict(float)
    for k, v in usage.items():
        roles[k.split("-", 1)[0] + ("s" if "-" in k else "")] += v["cpu_s"]
    total = sum(roles.values()) or 1.0
    return {
        "stage_p99_s": {k: round(v, 3) for k, v in stages.items()},
        "slowest_stage": stage,
        "busiest_process": busiest,
        "busiest_saturated_share": python[busiest]["saturated_share"] if busiest else None,
        "lab_cpu_share_by_role": {
            k: round(v / total, 3) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])
        },
        "lab_cpu_cores": round(total / max(res["create_phase_s"] + res["waited_s"], 1e-6), 2),
    }


def resource_version(api: Api) -> int:
    """The server's current resourceVersion (the lab's counts writes)."""
    _, body = api.call("GET", "/api/v1/namespaces?limit=1")
    return int(body["metadata"]["resourceVersion"])


def object_counts(api: Api) -> dict[str, int]:
    """How many objects the run left, per kind the product writes for a Service."""
    paths = {
        "endpointslices": f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
        **STATUS_PATHS,
        "events": f"/api/v1/namespaces/{NS}/events",
    }
    out = {}
    for kind, path in paths.items():
        status, body = api.call("GET", path)
        out[kind] = len(body.get("items") or []) if status == 200 else -1
    return out


# --- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, lab: Lab, out: dict[str, Any]) -> None:
    lab.up(workers=args.workers, router=args.router)
    workers = [n for n in lab.plan.nodes if not n.control_plane]
    hops = {n.ipv4 for n in workers}
    api = Api(lab.kubeconfig)
    configure(api, [n.name for n in workers])
    tl = Timeline()
    duration = args.create_timeout + args.settle + 120
    fib_proc = nsops.popen_in(
        topo.ROUTER,
        [sys.executable, "-c", FIB_WATCHER, str(duration)],
        stdout=subprocess.PIPE,
        text=True,
    )
    arp_proc = nsops.popen_in(
        topo.CLIENT,
        [
            sys.executable,
            "-c",
            ARP_PROBER,
            "eth0",
            topo.CLIENT_IP_V4,
            str(args.arp_rate),
            "0.5",
            str(duration),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    comps: dict[str, list[int]] = {}
    sampler = Sampler(comps)
    profiles: dict[str, Any] = {}
    try:
        threading.Thread(target=read_fib, args=(fib_proc, tl, hops), daemon=True).start()
        threading.Thread(target=read_arp, args=(arp_proc, tl), daemon=True).start()
        # Warm-up: one Service per protocol announced, so BGP sessions are up before the clock runs.
        status, lst = api.call("GET", f"/api/v1/namespaces/{NS}/services")
        rv = lst["metadata"]["resourceVersion"]
        threading.Thread(
            target=watch_services, args=(api, tl, rv, arp_proc.stdin, hops, stop), daemon=True
        ).start()
        _, slices = api.call("GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices")
        threading.Thread(
            target=watch_endpointslices, args=(api, tl, slices["metadata"]["resourceVersion"], stop),
            daemon=True,
        ).start()
        for kind, path in STATUS_PATHS.items():
            _, have = api.call("GET", path)
            tl.statuses[kind] = {o["metadata"]["name"] for o in have.get("items") or []}
            threading.Thread(
                target=watch_statuses, args=(api, tl, kind, have["metadata"]["resourceVersion"], stop),
                daemon=True,
            ).start()
        for name, pool, proto in (("warm-l2", "scale-l2", "l2"), ("warm-bgp", "scale-bgp", "bgp")):
            tl.proto[name] = proto
            api.ensure(f"/api/v1/namespaces/{NS}/services", service(name, pool))
            tl.created[name] = time.monotonic()
        with tl.lock:
            warm = ("warm-l2", "warm-bgp")
            tl.lock.wait_for(lambda: all(n in tl.announced for n in warm) or tl.ended, 120)
            if tl.ended or not all(n in tl.announced for n in warm):
                raise AssertionError(
                    f"warm-up Services not announced in 120 s: {tl.announced}, {tl.ip}; "
                    f"observers that ended: {tl.ended}"
                )
            for name in ("warm-l2", "warm-bgp"):
                out.setdefault("warmup_s", {})[name] = round(tl.announced[name] - tl.created[name], 3)
            tl.created.clear()
            tl.announced.clear()
        time.sleep(2)  # let the speakers settle after the warm-up
        comps = components(lab)  # after the warm-up: every speaker has started its ExaBGP
        out["components"] = comps
        sampler.comps = comps
        out["loadavg_before"] = loadavg()
        sampler.start()
        before = sampler.samples[-1]
        names = [f"s-{i}" for i in range(args.services)]
        rv_start = resource_version(api)
        observers = {"fib-watcher": fib_proc.pid, "arp-prober": arp_proc.pid}
        observers_before = observers_cpu_s(observers)
        machine_before = machine_cpu_s()
        rest_before = rest_of_lab_cpu_s(lab, comps)
        members_before = membership_lines(lab)
        t_start = time.monotonic()
        profile_at = args.services // 3
        for i, name in enumerate(names):
            if i == profile_at and args.profile_seconds > 0:
                profiles = start_profiles(
                    comps, args.profile_seconds, Path(tempfile.mkdtemp(prefix="scale-prof-"))
                )
            proto = "l2" if i % 2 == 0 else "bgp"
            tl.proto[name] = proto
            t0 = time.monotonic()
            status, body = api.call(
                "POST", f"/api/v1/namespaces/{NS}/services", service(name, f"scale-{proto}")
            )
            t1 = time.monotonic()
            if status != 201:
                tl.errors.append(f"create {name}: {status} {body}")
                if len(tl.errors) >= MAX_CREATE_ERRORS:
                    print(f"  stopping creates: {len(tl.errors)} refused; the last: {status} {body}",
                          flush=True)
                    break
                continue
            with tl.lock:
                tl.created[name] = t1
                tl.call_s.append(t1 - t0)
            if (i + 1) % max(1, args.services // 10) == 0:
                print(
                    f"  created {i + 1}/{args.services} in {t1 - t_start:.1f} s; "
                    f"IPs {len(tl.ip_at)}, announced {len(tl.announced)}; load {loadavg()[0]}",
                    flush=True,
                )
            if t1 - t_start > args.create_timeout:
                print(f"  stopping creates after {args.create_timeout} s", flush=True)
                break
        n = len(tl.created)
        t_last_create = max(tl.created.values(), default=time.monotonic())  # the last one answered 201
        with tl.lock:
            done = tl.lock.wait_for(lambda: len(tl.announced) >= n and len(tl.ip_at) >= n, args.settle)
            # Then every status object too, so the speakers' CPU figure includes writing them: one
            # ServiceL2Status per L2 Service, one ServiceBGPStatus per BGP Service and worker.
            expected = {
                "servicel2statuses": sum(p == "l2" for p in tl.proto.values()),
                "servicebgpstatuses": sum(p == "bgp" for p in tl.proto.values()) * len(workers),
            }
            statuses_done = tl.lock.wait_for(
                lambda: all(len(tl.statuses[k]) >= v for k, v in expected.items()),
                max(0.0, t_last_create + args.settle - time.monotonic()),
            )
            t_statuses = time.monotonic()
        t_end = time.monotonic()
        observers_after = observers_cpu_s(observers)
        machine_after = machine_cpu_s()
        rest_after = rest_of_lab_cpu_s(lab, comps)
        members_after = membership_lines(lab)
        sampler.stop()
        after = sampler.samples[-1]
        out["loadavg_after"] = loadavg()
        res = figures(tl, t_start, t_last_create, t_end, done, n)
        res["api_writes"] = resource_version(api) - rv_start  # one resourceVersion per write
        res["objects_at_end"] = object_counts(api)
        res["statuses_complete"] = statuses_done
        res["statuses_complete_after_last_create_s"] = round(t_statuses - t_last_create, 2)
        res["statuses_expected"] = expected
        usage = sampler.between(t_start, t_end)
        res["usage"] = usage
        res["cpu_s"] = {k: round(after[1][k] - before[1][k], 2) for k in comps}
        res["rss_mib"] = {k: round(after[2][k] / 1024, 1) for k in comps}
        res["peak_rss_mib"] = {k: round(sampler.hwm[k] / 1024, 1) for k in comps}
        per_k = {
            k: round(v / (n / 1000), 2) for k, v in res["cpu_s"].items() if k.startswith("speaker-") and n
        }
        res["speaker_cpu_s_per_1000_services"] = per_k
        with tl.lock:
            res["service_events"] = dict(tl.service_events)
        n_events = sum(res["service_events"].values())
        res["speaker_cpu_s_per_1000_service_events"] = {
            k: round(v / (n_events / 1000), 2)
            for k, v in res["cpu_s"].items()
            if k.startswith("speaker-") and n_events
        }
        res["limiter"] = limiter(res, usage)
        res["observers_cpu_s"] = {k: round(v - observers_before[k], 2) for k, v in observers_after.items()}
        busy, total = (a - b for a, b in zip(machine_after, machine_before, strict=True))
        res["machine_busy_share"] = round(busy / total, 3) if total else None
        res["rest_of_lab_cpu_s"] = {k: round(v - rest_before.get(k, 0.0), 2) for k, v in rest_after.items()}
        for name, (proc, path) in profiles.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=args.profile_seconds + 30)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            res.setdefault("profiles", {})[name] = {**summarize_profile(path), "collapsed_stacks": str(path)}
        moved = {k: v[len(members_before.get(k, [])):] for k, v in members_after.items()}
        res["membership_changes"] = {k: len(v) for k, v in moved.items()}
        res["membership_change_lines"] = {k: v[:10] for k, v in moved.items() if v}
        out["run"] = res
    finally:
        stop.set()
        for proc in (fib_proc, arp_proc):
            with contextlib.suppress(Exception):
                proc.terminate()
                proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            sampler.stop()


def figures(
    tl: Timeline, t_start: float, t_last_create: float, t_end: float, done: bool, n: int
) -> dict[str, Any]:
    with tl.lock:
        names = list(tl.created)
        ip_lat = [tl.ip_at[k] - tl.created[k] for k in names if k in tl.ip_at]
        ep_lat = [tl.endpoints_at[k] - tl.created[k] for k in names if k in tl.endpoints_at]
        # A Service can be announced once it has both an IP and a ready endpoint: the speakers' share.
        ready_ann = {
            p: [
                tl.announced[k] - max(tl.ip_at[k], tl.endpoints_at[k])
                for k in names
                if k in tl.announced and k in tl.ip_at and k in tl.endpoints_at and tl.proto[k] == p
            ]
            for p in ("l2", "bgp")
        }
        ann = {
            p: [tl.announced[k] - tl.created[k] for k in names if k in tl.announced and tl.proto[k] == p]
            for p in ("l2", "bgp")
        }
        ip_ann = {
            p: [
                tl.announced[k] - tl.ip_at[k]
                for k in names
                if k in tl.announced and k in tl.ip_at and tl.proto[k] == p
            ]
            for p in ("l2", "bgp")
        }
        last_ip = max((tl.ip_at[k] for k in names if k in tl.ip_at), default=float("nan"))
        last_ann = {
            p: max(
                (tl.announced[k] for k in names if k in tl.announced and tl.proto[k] == p),
                default=float("nan"),
            )
            for p in ("l2", "bgp")
        }
        multi = sorted(ip for ip, macs in tl.arp_macs.items() if len(macs) > 1)
        missing = {
            p: sum(1 for k in names if tl.proto[k] == p and k not in tl.announced) for p in ("l2", "bgp")
        }
        owners = collections.Counter(next(iter(m)) for m in tl.arp_macs.values() if m)
        res = {
            "services_created": n,
            "all_announced": done,
            "not_announced": missing,
            "create_phase_s": round(t_last_create - t_start, 2),
            "create_rate_per_s": round(n / max(t_last_create - t_start, 1e-6), 1),
            "create_call_s": dist(tl.call_s),
            "create_to_ip": dist(ip_lat),
            "create_to_announced": {p: dist(v) for p, v in ann.items()},
            "ip_to_announced": {p: dist(v) for p, v in ip_ann.items()},
            "create_to_endpoints": dist(ep_lat),
            "ready_to_announced": {p: dist(v) for p, v in ready_ann.items()},
            "last_ip_after_last_create_s": round(last_ip - t_last_create, 2),
            "last_announced_after_last_create_s": {
                p: round(v - t_last_create, 2) for p, v in last_ann.items()
            },
            "waited_s": round(t_end - t_last_create, 2),
            "l2_ips_with_several_arp_answers_count": len(multi),
            "l2_ips_with_several_arp_answers": multi[:20],
            # when each MAC first answered, in s after the IP was seen allocated (who answered when)
            "l2_several_answers_examples": {
                ip: {m: round(t - tl.ip_at.get(tl.by_ip.get(ip, ""), t), 3)
                     for m, t in tl.arp_first[ip].items()}
                for ip in multi[:5]
            },
            "l2_answers_by_mac": dict(owners),
            "fib_reads": tl.fib_reads,
            "fib_overflows": tl.fib_overflows,
            "errors": tl.errors[:20],
        }
    return res


def report(out: dict[str, Any]) -> None:
    r = out.get("run")
    if not r:
        return

    def d(x: dict[str, Any]) -> str:
        return f"p50 {x['p50_s']} s, p99 {x['p99_s']} s, max {x['max_s']} s (n={x['n']})"

    print(
        f"\n{r['services_created']} Services created in {r['create_phase_s']} s "
        f"({r['create_rate_per_s']}/s); load average {out['loadavg_before']} -> {out['loadavg_after']}"
    )
    print(f"  create call:          {d(r['create_call_s'])}")
    print(f"  create -> IP:         {d(r['create_to_ip'])}")
    print(f"  create -> endpoint:   {d(r['create_to_endpoints'])}  (the lab's EndpointSlice controller)")
    for p in ("l2", "bgp"):
        print(f"  create -> announced {p:3}: {d(r['create_to_announced'][p])}")
        print(f"  IP and endpoint -> announced {p:3}: {d(r['ready_to_announced'][p])}")
    print(
        f"  last IP {r['last_ip_after_last_create_s']} s after the last create; last announced "
        f"{r['last_announced_after_last_create_s']} s after it (target <= "
        f"{TARGETS['announced_after_last_create_s']} s); all announced: {r['all_announced']} "
        f"(missing {r['not_announced']})"
    )
    print(
        f"  every status object written {r['statuses_complete_after_last_create_s']} s after the last "
        f"create (complete: {r['statuses_complete']}, expected {r['statuses_expected']})"
    )
    print(
        f"  L2 IPs answered by more than one node: {r.get('l2_ips_with_several_arp_answers_count')}; "
        f"changes of the live-speaker view per speaker: {r.get('membership_changes')}"
    )
    for k in sorted(r["cpu_s"]):
        u = r["usage"].get(k, {})
        print(
            f"  {k:28} CPU {r['cpu_s'][k]:7.2f} s  mean {u.get('mean_cores', 0):5.2f} cores  "
            f"at a full core {u.get('saturated_share', 0) * 100:3.0f}% of the time  "
            f"waited for a CPU {u.get('runqueue_wait_s', 0):6.2f} s  "
            f"RSS {r['rss_mib'][k]:6.1f} MiB (peak {r['peak_rss_mib'][k]:6.1f})"
        )
    print(
        f"  speaker CPU per 1,000 Service events ({sum(r['service_events'].values())} events, "
        f"{r['service_events']}): {r['speaker_cpu_s_per_1000_service_events']} "
        f"(target <= {TARGETS['speaker_cpu_s_per_1000_service_events']} s); per 1,000 Services: "
        f"{r['speaker_cpu_s_per_1000_services']}"
    )
    cpu_api = r["cpu_s"].get("apiserver", 0.0)
    print(f"  API writes in the run: {r['api_writes']} ({cpu_api * 1000 / max(r['api_writes'], 1):.2f} ms "
          f"API server CPU each); objects left: {r['objects_at_end']}")
    lim = r["limiter"]
    print(
        f"  limits: {lim['slowest_stage']} (p99 per stage {lim['stage_p99_s']}); busiest process "
        f"{lim['busiest_process']} (at a full core {lim['busiest_saturated_share']} of the time)"
    )
    print(f"  the lab used {lim['lab_cpu_cores']} cores on average; by role {lim['lab_cpu_share_by_role']}")
    print(f"  the observers used (CPU s, not part of the lab): {r['observers_cpu_s']}; the machine's CPUs "
          f"were busy {r['machine_busy_share'] * 100:.0f} % of the time (everything, kernel and router too)")
    print(f"  the rest of the lab (CPU s, router daemons, pods): {r['rest_of_lab_cpu_s']}")
    for name, prof in (r.get("profiles") or {}).items():
        print(f"  profile {name} ({prof['samples']} samples), own time:")
        for f, share in prof["own"][:8]:
            print(f"      {share * 100:5.1f}%  {f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--router", choices=["frr", "bird"], default="frr")
    ap.add_argument("--create-timeout", type=float, default=1800, help="stop creating after this many s")
    ap.add_argument("--settle", type=float, default=300, help="wait at most this long after the last create")
    ap.add_argument("--arp-rate", type=float, default=2000, help="ARP requests per second, at most")
    ap.add_argument("--profile-seconds", type=int, default=15, help="py-spy per component; 0: off")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if lab_namespaces():
        print(f"lab namespaces exist ({', '.join(lab_namespaces())}): not disturbing them", file=sys.stderr)
        return 2
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    out: dict[str, Any] = {
        "benchmark": "scale",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "services": args.services,
        "workers": args.workers,
        "router": args.router,
        "targets": TARGETS,
        "method": "creates back to back over one keep-alive connection, alternately L2 and BGP; create = "
        "the POST was answered; IP = seen on the bench's own Services watch; announced: L2 = "
        "first ARP reply to a raw who-has from `client`, BGP = the /32 has a next hop via every "
        "worker in the router's kernel FIB (netlink route events after one dump)",
    }
    lab = Lab(state_dir=Path(tempfile.mkdtemp(prefix="lbt-s-bench-")))
    try:
        run(args, lab, out)
    finally:
        lab_cli("down", "--state-dir", str(lab.state_dir), check=False, timeout=300)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=sorted) + "\n")
    report(out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
