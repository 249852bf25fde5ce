"""Hard node failure on the lab: how long the router keeps a dead node's next hop, with and without BFD.

A node "dies" without closing TCP: its bridge port is cut and its speaker (with ExaBGP) and its
BFD process are frozen with SIGSTOP, so no FIN, no NOTIFICATION, no BFD AdminDown leaves it. The
figure is "cut -> the router's kernel FIB no longer has that node's next hop" for an ETP Cluster
Service announced by every worker, measured by the FIB poller of bench/bgp.py.

* ``with_bfd``: `lbspeaker-lab up --bfd` (router BFD 300 ms x 3, its BGP sessions follow BFD);
  each worker runs `python -m lbspeaker.bfd --peer <router>` next to its speaker. (Until the
  speaker runs BFD itself, this process stands in for it: same code, same sockets.)
* ``without_bfd``: the same lab without --bfd: only the BGP hold time (9 s in the lab) ends it.

    python bench/bfd.py [--trials 10] [--router frr|bird] [--out FILE]

Needs root; brings up its own lab (and takes it down) unless lab namespaces exist, in which case
it refuses. Results are printed and written to ``bench/results/bfd.json`` (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bgp import FibWatch, summary, svc  # noqa: E402
from lab import netns as nsops  # noqa: E402
from lab import topology as topo  # noqa: E402
from lbspeaker.kube.resources import PODS, SERVICES  # noqa: E402
from tests.e2e.conftest import Lab, lab_cli, lab_namespaces  # noqa: E402
from tests.e2e.test_speaker_bgp import apply, bgp_config, pod, rest_for, speaker_pid, worker_ips  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "bfd.json"
SERVICE_IP = "198.51.100.120"


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (ExaBGP runs under the speaker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def start_bfd(nodes: list[str]) -> dict[str, subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "lbspeaker.bfd", "--peer", topo.ROUTER_IP_V4, "--duration", "1800"]
    return {n: nsops.popen_in(n, argv, stdout=subprocess.DEVNULL, text=True) for n in nodes}


def stop_bfd(procs: dict[str, subprocess.Popen[str]]) -> None:
    for proc in procs.values():
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def trials(lab: Lab, fib: FibWatch, workers: dict[str, str], count: int,
           bfd: dict[str, subprocess.Popen[str]], label: str) -> dict[str, Any]:
    hops = set(workers.values())
    names = sorted(workers)
    out = []
    for i in range(count):
        node = names[i % len(names)]
        fib.wait(lambda s: set(s.get(SERVICE_IP, [])) == hops, 120)
        time.sleep(1.0)  # let BFD on the router settle to its fast interval after a recovery
        frozen = descendants(speaker_pid(lab, node)) + ([bfd[node].pid] if node in bfd else [])
        port = f"v-{topo.node_short(next(n.index for n in lab.plan.nodes if n.name == node))}"
        t0 = time.monotonic()
        nsops.run_in(topo.BRIDGE_NETNS, ["ip", "link", "set", port, "down"])
        signal_all(frozen, signal.SIGSTOP)
        try:
            t1 = fib.wait(lambda s: workers[node] not in s.get(SERVICE_IP, []), 60)  # noqa: B023
        finally:
            nsops.run_in(topo.BRIDGE_NETNS, ["ip", "link", "set", port, "up"])
            signal_all(frozen, signal.SIGCONT)
        out.append(t1 - t0)
        print(f"  {label} #{i + 1}: {node}'s next hop dropped {t1 - t0:.3f} s after the cut", flush=True)
    fib.wait(lambda s: set(s.get(SERVICE_IP, [])) == hops, 120)
    return summary(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--router", choices=["frr", "bird"], default="frr")
    ap.add_argument("--interval", type=float, default=0.01, help="FIB poll interval (s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if lab_namespaces():
        print(f"lab namespaces exist ({', '.join(lab_namespaces())}): not disturbing them", file=sys.stderr)
        return 2
    lab = Lab(state_dir=Path(tempfile.mkdtemp(prefix="lbt-l-bfd-")))
    fib: FibWatch | None = None
    bfd: dict[str, subprocess.Popen[str]] = {}
    out: dict[str, Any] = {"router": args.router, "host": platform.node(), "cpus": os.cpu_count(),
                           "bfd": "300 ms x 3", "poll_interval_s": args.interval,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        lab.up(router=args.router, bfd=True)
        rest = rest_for(lab)
        bgp_config(rest)
        workers = worker_ips(lab)
        for i, node in enumerate(sorted(workers)):
            apply(rest, PODS, pod(f"bench-bfd-{i}", "bench-bfd", node))
        apply(rest, SERVICES, svc("bench-bfd", "bench-bfd", SERVICE_IP, "Cluster", "e2e-bgp"))
        fib = FibWatch(args.interval)
        bfd = start_bfd(sorted(workers))
        print(f"hard node failure -> next hop dropped ({args.router}, with BFD 300 ms x 3):", flush=True)
        out["with_bfd"] = trials(lab, fib, workers, args.trials, bfd, "with BFD")
        stop_bfd(bfd)
        bfd = {}
        lab.up(router=args.router, bfd=False)
        print(f"hard node failure -> next hop dropped ({args.router}, without BFD):", flush=True)
        out["without_bfd"] = trials(lab, fib, workers, args.trials, bfd, "without BFD")
    finally:
        if bfd:
            stop_bfd(bfd)
        if fib is not None:
            fib.stop()
        lab_cli("down", "--state-dir", str(lab.state_dir), check=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
