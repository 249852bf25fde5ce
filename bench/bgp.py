"""BGP benchmark on the lab: how fast the router's kernel FIB follows the speakers.

A poller inside the `router` namespace runs `ip -4 route show proto bgp` every
`--interval` seconds and prints every change with the system-wide monotonic clock
(the same clock this script uses for its events), so each figure is "API action ->
the router's *kernel FIB* has the new next-hop set", through controller, speakers,
ExaBGP, BGP and the router's RIB/FIB.

* ``create``: Service created (IP requested in a BGP pool, ETP Cluster, 3 ready pods)
  -> its /32 in the FIB: first next hop, and all 3 next hops (includes allocation).
* ``unready``: ETP Local Service with pods on two workers; one pod annotated
  `lab.lbspeaker.io/ready=false` -> that worker's next hop withdrawn.
* ``sigterm``: SIGTERM to a speaker -> its next hop withdrawn (then `lbspeaker-lab up`
  restarts it and the hop comes back before the next trial).
* ``scale``: `--scale` Services (default 1,000) in one pool, announced by the 3 worker
  speakers: time until every /32 is in the FIB with 3 next hops (and, to tell the
  controller's allocation from the BGP path, until every Service had its IP), and
  each speaker's RSS (speaker + its ExaBGP) before and after.

    python bench/bgp.py [--trials 20] [--scale 1000] [--router frr|bird] [--out FILE]

Needs root; brings up its own lab (and takes it down) unless lab namespaces exist,
in which case it refuses rather than disturb someone's lab. Results are printed and
written to ``bench/results/bgp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import topology as topo  # noqa: E402
from lbspeaker.api.constants import API_VERSION, GROUP, NAMESPACE  # noqa: E402
from lbspeaker.kube.resources import BGPADVERTISEMENTS, IPADDRESSPOOLS, PODS, SERVICES  # noqa: E402
from lbspeaker.kube.rest import ApiError, Rest  # noqa: E402
from tests.e2e.conftest import Lab, lab_cli, lab_namespaces  # noqa: E402
from tests.e2e.test_speaker_bgp import (  # noqa: E402
    alive,
    apply,
    bgp_config,
    pod,
    rest_for,
    speaker_pid,
    worker_ips,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "bgp.json"
SCALE_POOL = "198.18.0.0/22"  # RFC 2544 benchmarking range, 1,024 addresses

POLLER = r"""
import json, subprocess, sys, time
interval = float(sys.argv[1])
last = {}
while True:
    out = subprocess.run(["ip", "-4", "route", "show", "proto", "bgp"], capture_output=True, text=True).stdout
    t = time.monotonic()
    cur, dst = {}, None
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        if not line[0].isspace():
            dst = parts[0]
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

    def __init__(self, interval: float) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", topo.ROUTER, sys.executable, "-c", POLLER, str(interval)],
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
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


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
    exa = subprocess.run(["pgrep", "-f", f"bgp/{node}/exabgp.conf"], capture_output=True,
                         text=True).stdout.split()
    return {"speaker_rss_kib": rss_kib(pid), "exabgp_rss_kib": sum(rss_kib(int(p)) for p in exa)}


def bench_create(rest: Rest, fib: FibWatch, hops: set[str], trials: int) -> dict[str, Any]:
    first, full = [], []
    for i in range(trials):
        ip = f"198.51.100.{100 + i}"
        t0 = time.monotonic()
        apply(rest, SERVICES, svc(f"bench-create-{i}", "bench", ip, "Cluster", "e2e-bgp"))
        t1 = fib.wait(lambda s: bool(s.get(ip)), 30)  # noqa: B023 (called at once)
        t2 = fib.wait(lambda s: set(s.get(ip, [])) == hops, 30)  # noqa: B023
        first.append(t1 - t0)
        full.append(t2 - t0)
        print(f"  create #{i + 1}: first next hop {t1 - t0:.3f} s, all {len(hops)} {t2 - t0:.3f} s",
              flush=True)
    return {"first_next_hop": summary(first), "all_next_hops": summary(full)}


def bench_unready(rest: Rest, fib: FibWatch, workers: dict[str, str], trials: int) -> dict[str, Any]:
    a, b = sorted(workers)[:2]
    apply(rest, PODS, pod("bench-loc-a", "bench-loc", a))
    apply(rest, PODS, pod("bench-loc-b", "bench-loc", b))
    ip = "198.51.100.90"
    apply(rest, SERVICES, svc("bench-local", "bench-loc", ip, "Local", "e2e-bgp"))
    both = {workers[a], workers[b]}
    out = []
    for i in range(trials):
        fib.wait(lambda s: set(s.get(ip, [])) == both, 60)
        time.sleep(0.3)
        p = rest.get(PODS, "bench-loc-a", "default")
        p["metadata"].setdefault("annotations", {})["lab.lbspeaker.io/ready"] = "false"
        t0 = time.monotonic()
        rest.replace(PODS, p)
        t1 = fib.wait(lambda s: set(s.get(ip, [])) == {workers[b]}, 30)
        out.append(t1 - t0)
        print(f"  unready #{i + 1}: next hop of {a} withdrawn after {t1 - t0:.3f} s", flush=True)
        p = rest.get(PODS, "bench-loc-a", "default")
        p["metadata"]["annotations"]["lab.lbspeaker.io/ready"] = "true"
        rest.replace(PODS, p)
    return summary(out)


def bench_sigterm(
    lab: Lab, fib: FibWatch, workers: dict[str, str], hops: set[str], trials: int
) -> dict[str, Any]:
    ip = "198.51.100.100"  # from bench_create
    out = []
    names = sorted(workers)
    for i in range(trials):
        node = names[i % len(names)]
        fib.wait(lambda s: set(s.get(ip, [])) == hops, 60)
        time.sleep(0.5)
        pid = speaker_pid(lab, node)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        t1 = fib.wait(lambda s: workers[node] not in s.get(ip, []), 30)  # noqa: B023
        out.append(t1 - t0)
        print(f"  sigterm #{i + 1}: {node}'s next hop withdrawn after {t1 - t0:.3f} s", flush=True)
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:  # `up` restarts only exited speakers
            time.sleep(0.05)
        lab.up()
    fib.wait(lambda s: set(s.get(ip, [])) == hops, 60)
    return summary(out)


def bench_scale(lab: Lab, rest: Rest, fib: FibWatch, workers: dict[str, str], hops: set[str],
                count: int) -> dict[str, Any]:
    import ipaddress

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
    print(f"  scale: {count} Services created in {t_created - t0:.2f} s, all allocated by the controller "
          f"after {t_alloc - t0:.2f} s; all {count} /32 with {len(hops)} next hops in the FIB after "
          f"{t_all - t0:.2f} s ({t_all - t_alloc:.2f} s after the last allocation)", flush=True)
    for n in sorted(workers):
        b, a = before[n], after[n]
        print(f"  scale: {n}: speaker RSS {b['speaker_rss_kib'] / 1024:.1f} -> "
              f"{a['speaker_rss_kib'] / 1024:.1f} MiB, ExaBGP {b['exabgp_rss_kib'] / 1024:.1f} -> "
              f"{a['exabgp_rss_kib'] / 1024:.1f} MiB", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--sigterm-trials", type=int, default=6)
    ap.add_argument("--scale", type=int, default=1000)
    ap.add_argument("--router", choices=["frr", "bird"], default="frr")
    ap.add_argument("--interval", type=float, default=0.01, help="FIB poll interval (s)")
    ap.add_argument("--only", choices=["create", "unready", "sigterm", "scale"], action="append")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if lab_namespaces():
        print(f"lab namespaces exist ({', '.join(lab_namespaces())}): not disturbing them", file=sys.stderr)
        return 2
    only = set(args.only or ["create", "unready", "sigterm", "scale"])
    lab = Lab(state_dir=Path(tempfile.mkdtemp(prefix="lbt-l-bench-")))
    fib: FibWatch | None = None
    out: dict[str, Any] = {"router": args.router, "host": platform.node(), "cpus": os.cpu_count(),
                           "poll_interval_s": args.interval, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                        time.gmtime())}
    try:
        lab.up(router=args.router)
        rest = rest_for(lab)
        bgp_config(rest)
        workers = worker_ips(lab)
        hops = set(workers.values())
        for i, node in enumerate(sorted(workers)):
            apply(rest, PODS, pod(f"bench-{i}", "bench", node))
        fib = FibWatch(args.interval)
        # warm-up: sessions up and one route through, so the first trial is not the session setup
        apply(rest, SERVICES, svc("bench-warmup", "bench", "198.51.100.99", "Cluster", "e2e-bgp"))
        fib.wait(lambda s: set(s.get("198.51.100.99", [])) == hops, 60)
        if "create" in only or "sigterm" in only:
            print("Service created -> route in the router's FIB:", flush=True)
            out["create_to_fib"] = bench_create(rest, fib, hops, args.trials if "create" in only else 1)
        if "unready" in only:
            print("endpoint unready -> next hop withdrawn (ETP Local):", flush=True)
            out["unready_to_withdrawn"] = bench_unready(rest, fib, workers, args.trials)
        if "sigterm" in only:
            print("speaker SIGTERM -> next hop withdrawn:", flush=True)
            out["sigterm_to_withdrawn"] = bench_sigterm(lab, fib, workers, hops, args.sigterm_trials)
        if "scale" in only:
            print(f"{args.scale} Services announced by {len(workers)} speakers:", flush=True)
            out["scale"] = bench_scale(lab, rest, fib, workers, hops, args.scale)
    finally:
        if fib is not None:
            fib.stop()
        lab_cli("down", "--state-dir", str(lab.state_dir), check=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("scale",)}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
