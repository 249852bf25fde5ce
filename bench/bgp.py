"""BGP benchmark on the lab: how fast the router follows the speakers, on FRR and BIRD side by side.

A poller inside the `router` namespace reads the BGP routes of `ip -4 route show` every
`--interval` seconds and prints every change with the system-wide monotonic clock
(the same clock this script uses for its events), so each figure is "API action ->
the router's *kernel FIB* has the new next-hop set", through controller, speakers,
ExaBGP, BGP and the router's RIB/FIB.

Sections (`--only NAME[,NAME..]`, default: all of `DEFAULT_SECTIONS`, in that order):

* ``create``: Service created (IP requested in a BGP pool, ETP Cluster, 3 ready pods)
  -> its /32 in the FIB: first next hop, and all 3 next hops (includes allocation).
* ``unready``: ETP Local Service with pods on two workers; one pod annotated
  `lab.lbspeaker.io/ready=false` -> that worker's next hop withdrawn.
* ``churn``: `--churn-ops` (20) add/delete operations on a second BGPPeer (a router port
  nobody listens on: a peer that is down, with routes pending) while the first peer
  carries an ETP Cluster Service: drops of the first peer's sessions as the router sees
  them (FRR `connectionsDropped` / BIRD protocol state changes, and Established -> other
  transitions polled), ExaBGP restarts of the first peer, and failed requests of a curl
  loop from `ext-client`.
* ``sigterm``: SIGTERM to a speaker -> its next hop withdrawn, and -> the process exited,
  next to the DaemonSet's terminationGracePeriodSeconds (then `lbspeaker-lab up` restarts it).
* ``scale``: `--scale` Services (default 1,000) in one pool, announced by the 3 worker
  speakers: time until every /32 is in the FIB with 3 next hops (and, to tell the
  controller's allocation from the BGP path, until every Service had its IP), and
  each speaker's RSS (speaker + its ExaBGPs) before and after.
* ``ipv6`` (bench/bgp_ipv6.py), ``graceful`` (bench/bgp_gr.py): see those modules.
* ``hardfail`` (bench/bgp_hardfail.py): a hard node failure (bridge port cut, speaker and
  ExaBGPs frozen) -> the node's next hop gone from the FIB, with the speaker's BFD (300 ms x 3)
  and without (hold time), `--hardfail-trials` (5) each.

    python bench/bgp.py [--router frr,bird] [--only churn,sigterm] [--trials 20] [--out FILE]

With several routers, the lab is brought up once per router, every section runs on each,
and the figures are printed side by side and written to one JSON file
(``bench/results/bgp.json`` by default): ``{"routers": {"frr": {SECTION: ...}, ...}}``.

Adding a section from another module (bench/bgp_NAME.py): write `def run(ctx: Context) ->
dict` and register it in `SECTIONS` with one line, ``"NAME": "bench.bgp_NAME:run",`` (a
string, imported lazily, so that module may import this one). `Context` has the lab, the
API, the FIB watch, the workers and their next hops, the warm-up Service's IP (ETP Cluster,
every worker), `ctx.lab_up(**options)` for a lab with other options (e.g. `bfd=True`; the
next section gets the default lab back), and `ctx.log`.

Needs root; brings up its own lab (and takes it down) unless lab namespaces exist,
in which case it refuses rather than disturb someone's lab.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import netns as nsops  # noqa: E402
from lab import router as rtr  # noqa: E402
from lab import topology as topo  # noqa: E402
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP, NAMESPACE  # noqa: E402
from lbspeaker.kube.resources import BGPADVERTISEMENTS, BGPPEERS, IPADDRESSPOOLS, PODS, SERVICES  # noqa: E402
from lbspeaker.kube.rest import ApiError, Rest  # noqa: E402
from tests.e2e.conftest import DEFAULT_OPTIONS, Lab, lab_cli, lab_namespaces  # noqa: E402
from tests.e2e.test_bgp_graceful import RequestLoop  # noqa: E402
from tests.e2e.test_speaker_bgp import (  # noqa: E402
    alive,
    apply,
    bgp_config,
    delete,
    pod,
    rest_for,
    speaker_pid,
    worker_ips,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "bgp.json"
SCALE_POOL = "198.18.0.0/22"  # RFC 2544 benchmarking range, 1,024 addresses
WARM_IP = "198.51.100.99"
SPEAKER_MANIFEST = ROOT / "manifests" / "base" / "speaker.yaml"

POLLER = r"""
import json, subprocess, sys, time
interval, family = float(sys.argv[1]), sys.argv[2]
last = {}
while True:
    out = subprocess.run(["ip", family, "route", "show"], capture_output=True, text=True).stdout
    t = time.monotonic()
    cur, dst = {}, None
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        if not line[0].isspace():
            # FRR's zebra installs BGP routes as `proto bgp`, BIRD as `proto bird`
            dst = parts[0] if "bgp" in parts or "bird" in parts else None
            if dst is None:
                continue
            cur[dst] = []
            if "via" in parts:
                cur[dst].append(parts[parts.index("via") + 1])
        elif dst is not None and "via" in parts:
            cur[dst].append(parts[parts.index("via") + 1])
    cur = {k: sorted(v) for k, v in cur.items()}
    if cur != last:
        changed = {k: v for k, v in cur.items() if last.get(k) != v}
        gone = [k for k in last if k not in cur]
        print(json.dumps({"t": t, "set": changed, "del": gone}), flush=True)
        last = cur
    time.sleep(interval)
"""


class FibWatch:
    """Reads the poller's output: the FIB over time, with waits on conditions."""

    def __init__(self, interval: float, family: str = "-4") -> None:
        """`family`: "-4" or "-6", the FIB that is watched."""
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", topo.ROUTER, sys.executable, "-c", POLLER, str(interval), family],
            stdout=subprocess.PIPE, text=True,
        )
        self.state: dict[str, list[str]] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self.cond:
                for k in ev["del"]:
                    self.state.pop(k.split("/")[0], None)
                for k, v in ev["set"].items():
                    self.state[k.split("/")[0]] = v
                self.last_t = ev["t"]
                self.cond.notify_all()

    def wait(self, pred: Callable[[dict[str, list[str]]], bool], timeout: float) -> float:
        """Monotonic time of the first FIB state satisfying `pred` (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if pred(self.state):
                    return float(getattr(self, "last_t", time.monotonic()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for the FIB")
                self.cond.wait(min(left, 0.5))

    def stop(self) -> None:
        nsops.stop_popen(self.proc)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_s": round(pct(values, 0.5), 4), "p99_s": round(pct(values, 0.99), 4),
            "min_s": round(min(values), 4), "max_s": round(max(values), 4)}


def svc(name: str, app: str, ip: str, etp: str, pool: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {f"{GROUP}/address-pool": pool, f"{GROUP}/loadBalancerIPs": ip}},
            "spec": {"type": "LoadBalancer", "selector": {"app": app}, "externalTrafficPolicy": etp,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def speaker_memory(lab: Lab, node: str) -> dict[str, int]:
    pid = speaker_pid(lab, node)
    exa = subprocess.run(["pgrep", "-f", f"exabgp server .*/bgp/{node}/"], capture_output=True,
                         text=True).stdout.split()
    return {"speaker_rss_kib": rss_kib(pid), "exabgp_rss_kib": sum(rss_kib(int(p)) for p in exa)}




@dataclass
class Context:
    """What a section gets: one router's lab, with the base BGP configuration applied and the
    warm-up Service (`warm_ip`, ETP Cluster, a pod on every worker) in the FIB via `hops`."""

    router: str
    args: argparse.Namespace
    lab: Lab
    rest: Rest
    fib: FibWatch
    workers: dict[str, str]  # worker node -> its IPv4 (a next hop)
    hops: set[str]
    warm_ip: str = WARM_IP
    options: dict[str, Any] = field(default_factory=dict)  # lab options beyond router

    def log(self, message: str) -> None:
        print(f"[{self.router}] {message}", flush=True)

    def lab_up(self, **options: Any) -> None:
        """The lab with `options` (e.g. bfd=True); a no-op when it already has them. The base
        configuration is applied again and the warm-up route awaited."""
        want = {**self.options, **options}
        if want == self.options:
            return
        self.options = want
        self.lab.up(**{**DEFAULT_OPTIONS, "router": self.router, **want})
        bgp_config(self.rest)
        self.wait_warm(120)

    def wait_warm(self, timeout: float = 60) -> float:
        return self.fib.wait(lambda s: set(s.get(self.warm_ip, [])) == self.hops, timeout)


Section = Callable[[Context], dict[str, Any]]


def section_create(ctx: Context) -> dict[str, Any]:
    """Service created -> its route in the router's FIB (first and every next hop)."""
    ctx.log("Service created -> route in the router's FIB:")
    first, full = [], []
    for i in range(ctx.args.trials):
        ip = f"198.51.100.{100 + i}"
        t0 = time.monotonic()
        apply(ctx.rest, SERVICES, svc(f"bench-create-{i}", "bench", ip, "Cluster", "e2e-bgp"))
        t1 = ctx.fib.wait(lambda s: bool(s.get(ip)), 30)  # noqa: B023 (called at once)
        t2 = ctx.fib.wait(lambda s: set(s.get(ip, [])) == ctx.hops, 30)  # noqa: B023
        first.append(t1 - t0)
        full.append(t2 - t0)
        ctx.log(f"  create #{i + 1}: first next hop {t1 - t0:.3f} s, all {len(ctx.hops)} {t2 - t0:.3f} s")
    return {"first_next_hop": summary(first), "all_next_hops": summary(full)}


def section_unready(ctx: Context) -> dict[str, Any]:
    """ETP Local: a pod turns unready -> its node's next hop withdrawn."""
    ctx.log("endpoint unready -> next hop withdrawn (ETP Local):")
    rest, workers = ctx.rest, ctx.workers
    a, b = sorted(workers)[:2]
    apply(rest, PODS, pod("bench-loc-a", "bench-loc", a))
    apply(rest, PODS, pod("bench-loc-b", "bench-loc", b))
    ip = "198.51.100.90"
    apply(rest, SERVICES, svc("bench-local", "bench-loc", ip, "Local", "e2e-bgp"))
    both = {workers[a], workers[b]}
    out = []
    for i in range(ctx.args.trials):
        ctx.fib.wait(lambda s: set(s.get(ip, [])) == both, 60)
        time.sleep(0.3)
        p = rest.get(PODS, "bench-loc-a", "default")
        p["metadata"].setdefault("annotations", {})["lab.lbspeaker.io/ready"] = "false"
        t0 = time.monotonic()
        rest.replace(PODS, p)
        t1 = ctx.fib.wait(lambda s: set(s.get(ip, [])) == {workers[b]}, 30)
        out.append(t1 - t0)
        ctx.log(f"  unready #{i + 1}: next hop of {a} withdrawn after {t1 - t0:.3f} s")
        p = rest.get(PODS, "bench-loc-a", "default")
        p["metadata"]["annotations"]["lab.lbspeaker.io/ready"] = "true"
        rest.replace(PODS, p)
    return summary(out)


def grace_period() -> float:
    """terminationGracePeriodSeconds of the speaker DaemonSet in the manifests."""
    m = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", SPEAKER_MANIFEST.read_text())
    return float(m.group(1)) if m else 30.0  # Kubernetes' default


def section_sigterm(ctx: Context) -> dict[str, Any]:
    """SIGTERM to a speaker -> its next hop withdrawn, and -> its process exited (vs the grace period)."""
    grace = grace_period()
    ctx.log(f"speaker SIGTERM -> next hop withdrawn, -> exited (grace period {grace:g} s):")
    withdrawn, exited = [], []
    names = sorted(ctx.workers)
    for i in range(ctx.args.sigterm_trials):
        node = names[i % len(names)]
        ctx.wait_warm()
        time.sleep(0.5)
        pid = speaker_pid(ctx.lab, node)
        gone: list[float] = []

        def watch_exit(pid: int = pid, gone: list[float] = gone) -> None:
            deadline = time.monotonic() + 60
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
            gone.append(time.monotonic())

        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        watcher = threading.Thread(target=watch_exit, daemon=True)
        watcher.start()
        t1 = ctx.fib.wait(lambda s: ctx.workers[node] not in s.get(ctx.warm_ip, []), 30)  # noqa: B023
        watcher.join(65)
        withdrawn.append(t1 - t0)
        exited.append(gone[0] - t0)
        ctx.log(f"  sigterm #{i + 1}: {node}'s next hop withdrawn after {t1 - t0:.3f} s, "
                f"exited after {gone[0] - t0:.3f} s")
        ctx.lab.up()
    ctx.wait_warm()
    return {"grace_period_s": grace, "to_withdrawn": summary(withdrawn), "to_exit": summary(exited),
            "exit_max_over_grace": round(max(exited) / grace, 3)}


CHURN_PEER = "bench-churn"
CHURN_PORT = 1790  # nothing listens there: the second peer stays down, with routes pending

def router_sessions(ctx: Context) -> dict[str, tuple[str, str]]:
    """{worker IP: (BGP state, a value that changes whenever that session is re-established)}."""
    return rtr.session_marks(ctx.router, rtr.RouterPaths(rtr.runtime_dir(ctx.lab.state_dir)), ctx.workers)


class SessionWatch:
    """Polls the router's sessions of the workers; counts Established -> anything else."""

    def __init__(self, ctx: Context, interval: float = 0.2) -> None:
        self.ctx, self.interval = ctx, interval
        self.first = router_sessions(ctx)
        self.last = dict(self.first)
        self.downs: dict[str, int] = {ip: 0 for ip in ctx.workers.values()}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                now = router_sessions(self.ctx)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                continue
            self.polls += 1
            for ip, (state, _) in now.items():
                if self.last.get(ip, ("", ""))[0] == "Established" and state != "Established":
                    self.downs[ip] += 1
            self.last = now

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(10)
        end = router_sessions(self.ctx)
        reset = {ip: self.first.get(ip) != end.get(ip) for ip in self.ctx.workers.values()}
        return {"polls": self.polls, "established_to_down_seen": self.downs, "reestablished": reset,
                "before": {k: list(v) for k, v in self.first.items()},
                "after": {k: list(v) for k, v in end.items()}}


def exabgp_pids(ctx: Context) -> dict[str, set[int]]:
    """{worker: PIDs of every ExaBGP it runs}."""
    out = {}
    for node in ctx.workers:
        found = subprocess.run(["pgrep", "-f", f"exabgp server .*/bgp/{node}/"], capture_output=True,
                               text=True).stdout.split()
        out[node] = {int(p) for p in found}
    return out


def churn_peer() -> dict[str, Any]:
    spec = {"myASN": 64514, "peerASN": 64512, "peerAddress": topo.ROUTER_IP_V4, "peerPort": CHURN_PORT,
            "holdTime": "9s"}
    return {"apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
            "metadata": {"name": CHURN_PEER, "namespace": NAMESPACE}, "spec": spec}


def configured_everywhere(ctx: Context) -> bool:
    """Every worker wrote its session entry for the churn peer (its speaker configured it)."""
    try:
        st = ctx.rest.get(BGPPEERS, CHURN_PEER, NAMESPACE).get("status") or {}
    except ApiError:
        return False
    return set(ctx.workers) <= {s.get("node") for s in st.get("sessions") or []}


def section_churn(ctx: Context) -> dict[str, Any]:
    """Add/delete a second BGPPeer `--churn-ops` times: the first peer's sessions must not notice."""
    ops = ctx.args.churn_ops
    ctx.log(f"{ops} add/delete operations on a second BGPPeer while the first carries traffic:")
    ctx.wait_warm()
    delete(ctx.rest, BGPPEERS, CHURN_PEER, NAMESPACE)
    pids_before = exabgp_pids(ctx)
    watch = SessionWatch(ctx)
    curl = RequestLoop(ctx.warm_ip, interval=0.02)
    configured: list[float] = []
    t_start = time.monotonic()
    try:
        for i in range(ops):
            if i % 2 == 0:
                t0 = time.monotonic()
                apply(ctx.rest, BGPPEERS, churn_peer())
                deadline = t0 + 30
                while not configured_everywhere(ctx) and time.monotonic() < deadline:
                    time.sleep(0.05)
                configured.append(time.monotonic() - t0)
                ctx.log(f"  churn #{i + 1}: added, every worker reports it after {configured[-1]:.2f} s")
            else:
                delete(ctx.rest, BGPPEERS, CHURN_PEER, NAMESPACE)
                ctx.log(f"  churn #{i + 1}: deleted")
            time.sleep(ctx.args.churn_settle)  # let the speakers act on it before the next change
    finally:
        delete(ctx.rest, BGPPEERS, CHURN_PEER, NAMESPACE)
        time.sleep(ctx.args.churn_settle)
        requests = curl.stop()
        router = watch.stop()
    pids_after = exabgp_pids(ctx)
    # the first peer's ExaBGP: the PIDs present before the churn (the churn peer had none then)
    first_restarted = {n: sorted(pids_before[n] - pids_after[n]) for n in ctx.workers}
    drops = sum(router["established_to_down_seen"].values()) + sum(router["reestablished"].values())
    ctx.log(f"  churn: first peer's sessions dropped {drops} times as the router saw it "
            f"({sum(router['reestablished'].values())} re-established), curl {requests['failed']} failed "
            f"of {requests['ok'] + requests['failed']}, ExaBGPs ended on "
            f"{sum(1 for v in first_restarted.values() if v)} workers, {time.monotonic() - t_start:.1f} s")
    return {"operations": ops, "first_peer_drops": drops, "router": router,
            "curl": {k: requests[k] for k in ("ok", "failed")}, "curl_failures": requests["failures"],
            "first_peer_exabgp_ended": first_restarted,
            "configured_everywhere": summary(configured) if configured else None}


def section_scale(ctx: Context) -> dict[str, Any]:
    """`--scale` Services (default 1,000) in one pool, announced by every worker."""
    import ipaddress

    lab, rest, fib, workers, hops, count = ctx.lab, ctx.rest, ctx.fib, ctx.workers, ctx.hops, ctx.args.scale
    ctx.log(f"{count} Services announced by {len(workers)} speakers:")

    apply(rest, IPADDRESSPOOLS, {"apiVersion": API_VERSION, "kind": "IPAddressPool",
                                 "metadata": {"name": "bench-scale", "namespace": NAMESPACE},
                                 "spec": {"addresses": [SCALE_POOL], "autoAssign": False}})
    apply(rest, BGPADVERTISEMENTS, {"apiVersion": API_VERSION, "kind": "BGPAdvertisement",
                                    "metadata": {"name": "bench-scale", "namespace": NAMESPACE},
                                    "spec": {"ipAddressPools": ["bench-scale"]}})
    before = {n: speaker_memory(lab, n) for n in sorted(workers)}
    net = ipaddress.ip_network(SCALE_POOL)
    ips = [str(net[i + 1]) for i in range(count)]
    allocated: dict[str, float] = {}
    done = threading.Event()

    def watch_allocations() -> None:
        """When the controller has given every Service its IP (to split allocation from BGP)."""
        while not done.is_set():
            try:
                items = rest.list(SERVICES, "default")["items"]
            except (ApiError, OSError):
                continue
            n = sum(1 for o in items if o["metadata"]["name"].startswith("bench-scale-")
                    and ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
            if n >= count and "all" not in allocated:
                allocated["all"] = time.monotonic()
                return
            done.wait(0.2)

    t0 = time.monotonic()
    watcher = threading.Thread(target=watch_allocations, daemon=True)
    watcher.start()
    for i, ip in enumerate(ips):
        apply(rest, SERVICES, svc(f"bench-scale-{i}", "bench", ip, "Cluster", "bench-scale"))
    t_created = time.monotonic()
    want = set(ips)

    def all_in(s: dict[str, list[str]]) -> bool:
        return all(set(s.get(ip, [])) == hops for ip in want)

    t_all = fib.wait(all_in, 600)
    watcher.join(timeout=30)
    done.set()
    t_alloc = allocated.get("all", float("nan"))
    time.sleep(2)
    after = {n: speaker_memory(lab, n) for n in sorted(workers)}
    res = {"services": count, "create_calls_s": round(t_created - t0, 3),
           "all_allocated_s": round(t_alloc - t0, 3), "all_in_fib_s": round(t_all - t0, 3),
           "fib_after_last_allocation_s": round(t_all - t_alloc, 3),
           "after_last_create_s": round(t_all - t_created, 3),
           "memory_before": before, "memory_after": after}
    ctx.log(f"  scale: {count} Services created in {t_created - t0:.2f} s, all allocated by the controller "
          f"after {t_alloc - t0:.2f} s; all {count} /32 with {len(hops)} next hops in the FIB after "
          f"{t_all - t0:.2f} s ({t_all - t_alloc:.2f} s after the last allocation)")
    for n in sorted(workers):
        b, a = before[n], after[n]
        ctx.log(f"  scale: {n}: speaker RSS {b['speaker_rss_kib'] / 1024:.1f} -> "
              f"{a['speaker_rss_kib'] / 1024:.1f} MiB, ExaBGP {b['exabgp_rss_kib'] / 1024:.1f} -> "
              f"{a['exabgp_rss_kib'] / 1024:.1f} MiB")
    return res




# name -> section: a function of this module, or "module:function" (imported when run).
SECTIONS: dict[str, Section | str] = {
    "create": section_create,
    "unready": section_unready,
    "churn": section_churn,
    "sigterm": section_sigterm,
    "scale": section_scale,
    "ipv6": "bench.bgp_ipv6:run",
    "hardfail": "bench.bgp_hardfail:run",
    # last: turning enableGracefulRestart off again does not reset the sessions, so they keep
    # GR negotiated and a hard failure after it would wait out the router's restart timer
    "graceful": "bench.bgp_gr:run",
}
DEFAULT_SECTIONS = list(SECTIONS)


def resolve(name: str) -> Section:
    entry = SECTIONS[name]
    if isinstance(entry, str):
        module, _, func = entry.partition(":")
        fn: Section = getattr(importlib.import_module(module), func)
        return fn
    return entry


def run_router(router: str, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One lab with `router`, every section in `names`; a failing section is recorded, not fatal."""
    lab = Lab(state_dir=Path(tempfile.mkdtemp(prefix="lbt-l-bench-")))
    fib: FibWatch | None = None
    out: dict[str, Any] = {}
    try:
        lab.up(router=router)
        rest = rest_for(lab)
        bgp_config(rest)
        workers = worker_ips(lab)
        hops = set(workers.values())
        for i, node in enumerate(sorted(workers)):
            apply(rest, PODS, pod(f"bench-{i}", "bench", node))
        fib = FibWatch(args.interval)
        # warm-up: sessions up and one route through, so the first trial is not the session setup
        apply(rest, SERVICES, svc("bench-warmup", "bench", WARM_IP, "Cluster", "e2e-bgp"))
        fib.wait(lambda s: set(s.get(WARM_IP, [])) == hops, 60)
        ctx = Context(router=router, args=args, lab=lab, rest=rest, fib=fib, workers=workers, hops=hops)
        for name in names:
            if ctx.options:  # a section that changed the lab's options does not leak them
                ctx.options = {}
                lab.up(**{**DEFAULT_OPTIONS, "router": router})
                bgp_config(rest)
                ctx.wait_warm(120)
            t0 = time.monotonic()
            try:
                out[name] = resolve(name)(ctx)
            except Exception as exc:  # recorded; the other sections still run
                ctx.log(f"section {name} failed: {exc!r}")
                out[name] = {"error": repr(exc)}
            out[name + "_seconds"] = round(time.monotonic() - t0, 1)
    finally:
        if fib is not None:
            fib.stop()
        lab_cli("down", "--state-dir", str(lab.state_dir), check=False)
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} for the numbers and short strings of a result (lists/long text left out)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 40):
        return {prefix: value}
    return {}


def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    """One row per figure, one column per router."""
    routers = list(results)
    flat = {r: flatten(results[r]) for r in routers}
    keys: list[str] = []
    for r in routers:
        keys += [k for k in flat[r] if k not in keys]
    width = max([len(k) for k in keys] + [6])
    lines = [f"{'figure':<{width}}  " + "  ".join(f"{r:>14}" for r in routers)]
    for k in keys:
        lines.append(f"{k:<{width}}  " + "  ".join(f"{flat[r].get(k, '-')!s:>14}" for r in routers))
    return "\n".join(lines)


def section_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        known = ", ".join(SECTIONS)
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown)}; known: {known}")
    return names


def router_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ("frr", "bird")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"routers are frr and/or bird, not {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    sys.modules.setdefault("bench.bgp", sys.modules[__name__])  # section modules import this one
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--router", type=router_list, default=["frr"],
                    help="frr, bird or frr,bird (side by side)")
    ap.add_argument("--only", type=section_list, action="append",
                    help=f"sections to run, comma-separated (default: {','.join(DEFAULT_SECTIONS)})")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--sigterm-trials", type=int, default=6)
    ap.add_argument("--hardfail-trials", type=int, default=5, help="hard node failures per mode (hardfail)")
    ap.add_argument("--churn-ops", type=int, default=20)
    ap.add_argument("--churn-settle", type=float, default=1.0, help="seconds after each churn operation")
    ap.add_argument("--scale", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=0.01, help="FIB poll interval (s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if lab_namespaces():
        print(f"lab namespaces exist ({', '.join(lab_namespaces())}): not disturbing them", file=sys.stderr)
        return 2
    names = [n for group in args.only for n in group] if args.only else DEFAULT_SECTIONS
    out: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count(), "poll_interval_s": args.interval,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "sections": names, "routers": {}}
    for router in args.router:
        out["routers"][router] = run_router(router, names, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(side_by_side(out["routers"]))
    print(f"wrote {args.out}")
    return 0


def main_section(name: str, default_out: Path) -> int:
    """A section module run on its own (`python bench/bgp_NAME.py ARGS`): `bench/bgp.py --only NAME
    ARGS`, written to `default_out` unless ARGS say --out."""
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", str(default_out)]
    return main(["--only", name, *args])


if __name__ == "__main__":
    sys.exit(main())
