"""Fault injection on the lab API server: an IP is never given twice and no update is lost.

No network namespaces: an in-process lab API server plus two real controller processes
(leader election between them). While a client creates, changes and deletes Services,
faults are injected in random order:

* ``api-crash-kept``: the API server crashes (every watch cut mid-stream) and comes back on
  the same port with its store (etcd survived): resourceVersions older than the restart get
  410 Expired;
* ``api-crash-reset``: it comes back with an EMPTY store (etcd restored from an empty backup):
  resourceVersions go back in time; CRDs, the namespace and the pool are applied again, and
  the client's view of the Services starts over;
* ``controller-kill`` / ``controller-term``: one controller process gets SIGKILL / SIGTERM and
  is started again.

Counted (JSON to bench/results/faults.json):

* ``duplicate_ip_samples``: samples (every 0.5 s, and at the end) in which one IP is in the
  ``status.loadBalancer.ingress`` of two Services (the bench never asks for sharing);
* ``lost_updates``: after the faults stop and the controllers had time to converge, every
  ``type: LoadBalancer`` Service of ours (class-less) without an IP from the pool, and every
  Service that is no longer ours (ClusterIP, another loadBalancerClass) still holding one;
* ``tracebacks``: "Traceback" lines in the controllers' logs.

    python bench/faults.py [--duration 120] [--seed N] [--services 40] [--out FILE]

Bounded: the fault phase lasts ``--duration`` seconds, convergence at most ``--converge``;
only processes this script started are signalled, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab.apiserver import LabApiServer  # noqa: E402
from lbspeaker.kube import resources as R  # noqa: E402
from lbspeaker.kube.client import Timeouts, load_api_client  # noqa: E402
from lbspeaker.kube.rest import ApiError, Rest  # noqa: E402
from tests.conftest import apply_crds, crd_documents  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "faults.json"
NS = "lbspeaker-system"
APP_NS = "faults"
POOL_CIDR = "198.51.100.0/26"  # documentation range: only data here, no traffic is ever sent
OTHER_CLASS = "example.com/other"
FAULTS = ("api-crash-kept", "api-crash-reset", "controller-kill", "controller-term")


class Lab:
    """The API server (restartable on one port) and the controller processes."""

    def __init__(self, workdir: Path, controllers: int) -> None:
        self.workdir = workdir
        self.server = LabApiServer(bookmark_interval=1.0)
        self.server.start()
        self.port = self.server.port
        self.kubeconfig = self.server.write_kubeconfig(workdir / "kubeconfig")
        self.api_up = threading.Event()
        self.api_up.set()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * controllers
        self.logs = [workdir / f"controller-{i}.log" for i in range(controllers)]
        self.seed_world()
        for i in range(controllers):
            self.start_controller(i)

    def seed_world(self) -> None:
        """What `kubectl apply -k manifests/` and the pool give a fresh cluster."""
        apply_crds(self.server.url, crd_documents())
        rest = self.client()
        for ns in (NS, APP_NS):
            with contextlib.suppress(ApiError):
                rest.create(R.NAMESPACES, {"metadata": {"name": ns}})
        deadline = time.monotonic() + 10
        while True:  # the CRD's type is served a moment after the CRD is created
            try:
                rest.create(R.IPADDRESSPOOLS, {"metadata": {"name": "faults", "namespace": NS},
                                               "spec": {"addresses": [POOL_CIDR]}})
                break
            except ApiError as exc:
                if exc.already_exists:
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rest.api_client.close()

    def client(self) -> Rest:
        return Rest(load_api_client(str(self.kubeconfig)), Timeouts(connect=2.0, read=10.0))

    def start_controller(self, i: int) -> None:
        exe = Path(sys.executable).parent / "lbspeaker-controller"
        cmd = [str(exe), "--kubeconfig", str(self.kubeconfig), "--namespace", NS, "--metrics-addr", "",
               "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5",
               "--identity", f"faults-{i}-{time.monotonic_ns()}"]
        with open(self.logs[i], "ab") as log:
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)

    def signal_controller(self, i: int, sig: signal.Signals) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)  # our own child, by PID
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def keep_controllers_running(self) -> int:
        """Restart any controller that exited on its own (e.g. it lost the Lease); returns how many."""
        n = 0
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                self.start_controller(i)
                n += 1
        return n

    def crash_api(self, keep_store: bool, down_s: float) -> None:
        self.api_up.clear()
        state = self.server.kill()
        time.sleep(down_s)  # the outage the controllers ride through
        self.server = LabApiServer(port=self.port, bookmark_interval=1.0,
                                   initial_state=state if keep_store else None)
        self.server.start()
        if not keep_store:
            self.seed_world()
        self.api_up.set()

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.signal_controller(i, signal.SIGTERM)
        self.server.stop()


def ingress(svc: dict[str, Any]) -> list[str]:
    return [str(i["ip"]) for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if i.get("ip")]


def ours(svc: dict[str, Any]) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def duplicates(services: list[dict[str, Any]]) -> dict[str, list[str]]:
    """IP -> its holders ("name (type[, class])") for every IP in two statuses at once."""
    holders: dict[str, list[str]] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        what = ", ".join(x for x in (spec.get("type"), spec.get("loadBalancerClass")) if x)
        for ip in ingress(svc):
            holders.setdefault(ip, []).append(f"{svc['metadata']['name']} ({what})")
    return {ip: names for ip, names in holders.items() if len(names) > 1}


def lost(services: list[dict[str, Any]]) -> list[str]:
    """Services whose status does not match their spec after convergence."""
    pool = ipaddress.ip_network(POOL_CIDR)
    out = []
    for svc in services:
        ips = ingress(svc)
        name = svc["metadata"]["name"]
        if ours(svc) and not (len(ips) == 1 and ipaddress.ip_address(ips[0]) in pool):
            out.append(f"{name}: LoadBalancer without an IP from the pool ({ips})")
        elif not ours(svc) and ips:
            out.append(f"{name}: type {svc['spec'].get('type')} class "
                       f"{svc['spec'].get('loadBalancerClass')} still holds {ips}")
    return out


class Workload(threading.Thread):
    """Random creates, changes and deletes of Services svc-0..svc-N (ops fail while the API is down)."""

    def __init__(self, lab: Lab, n: int, rng: random.Random, stop: threading.Event) -> None:
        super().__init__(name="workload", daemon=True)
        self.lab, self.n, self.rng, self.stop_event = lab, n, rng, stop
        self.ops: Counter[str] = Counter()
        self.failed = 0

    def run(self) -> None:
        rest = self.lab.client()
        while not self.stop_event.is_set():
            if not self.lab.api_up.wait(0.5):
                continue
            name = f"svc-{self.rng.randrange(self.n)}"
            op = self.rng.choice(["create", "create", "create-other-class", "to-clusterip", "to-lb",
                                  "ports", "delete"])
            try:
                self.apply(rest, op, name)
                self.ops[op] += 1
            except ApiError as exc:
                if exc.status not in (0, 404, 409, 422) and exc.status < 500:
                    raise
                self.failed += 1
            time.sleep(0.05)
        rest.api_client.close()

    def apply(self, rest: Rest, op: str, name: str) -> None:
        if op.startswith("create"):
            spec: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}
            if op == "create-other-class":
                spec["loadBalancerClass"] = OTHER_CLASS
            rest.create(R.SERVICES, {"metadata": {"name": name, "namespace": APP_NS}, "spec": spec})
        elif op == "delete":
            rest.delete(R.SERVICES, name, APP_NS)
        elif op == "to-clusterip":
            rest.patch(R.SERVICES, name, {"spec": {"type": "ClusterIP", "loadBalancerClass": None}}, APP_NS)
        elif op == "to-lb":
            rest.patch(R.SERVICES, name, {"spec": {"type": "LoadBalancer"}}, APP_NS)
        else:
            rest.patch(R.SERVICES, name, {"spec": {"ports": [
                {"port": self.rng.choice([80, 81, 8080]), "protocol": "TCP"}]}}, APP_NS)


def sample(lab: Lab, rest: Rest) -> list[dict[str, Any]] | None:
    if not lab.api_up.is_set():
        return None
    try:
        return list(rest.list_all(R.SERVICES, APP_NS)["items"])
    except ApiError:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="lbspeaker-faults-"))
    lab = Lab(workdir, args.controllers)
    stop = threading.Event()
    work = Workload(lab, args.services, rng, stop)
    faults: Counter[str] = Counter()
    dup_samples, samples, restarts = 0, 0, 0
    dup_examples: list[dict[str, list[str]]] = []
    rest = lab.client()
    started = time.monotonic()
    try:
        work.start()
        next_fault = started + rng.uniform(2, 5)
        while time.monotonic() - started < args.duration:
            services = sample(lab, rest)
            if services is not None:
                samples += 1
                dups = duplicates(services)
                if dups:
                    dup_samples += 1
                    if len(dup_examples) < 5:
                        dup_examples.append(dups)
            restarts += lab.keep_controllers_running()
            if time.monotonic() >= next_fault:
                fault = rng.choice(FAULTS)
                faults[fault] += 1
                print(f"faults: {time.monotonic() - started:6.1f}s {fault}", flush=True)
                if fault.startswith("api-crash"):
                    rest.api_client.close()
                    lab.crash_api(keep_store=fault == "api-crash-kept", down_s=rng.uniform(0.2, 2.0))
                    rest = lab.client()
                else:
                    i = rng.randrange(len(lab.procs))
                    lab.signal_controller(i, signal.SIGKILL if fault == "controller-kill" else signal.SIGTERM)
                    if rng.random() < 0.5:
                        time.sleep(rng.uniform(0.1, 3.0))  # sometimes the changes pile up meanwhile
                    lab.start_controller(i)
                next_fault = time.monotonic() + rng.uniform(args.min_gap, args.max_gap)
            time.sleep(0.5)
        stop.set()
        work.join(15)
        # Converge: no more faults or changes; every Service must end as its spec says.
        deadline = time.monotonic() + args.converge
        final: list[dict[str, Any]] = []
        problems: list[str] = ["not sampled"]
        while time.monotonic() < deadline:
            restarts += lab.keep_controllers_running()
            final = sample(lab, rest) or final
            problems = lost(final)
            if not problems and not duplicates(final):
                break
            time.sleep(0.5)
        converge_s = time.monotonic() - (deadline - args.converge)
        final_dups = duplicates(final)
        if final_dups:
            dup_samples += 1
            dup_examples.append(final_dups)
    finally:
        stop.set()
        rest.api_client.close()
        lab.stop()
    tracebacks = {log.name: log.read_text(errors="replace").count("Traceback") for log in lab.logs}
    return {
        "params": {"duration_s": args.duration, "seed": args.seed, "services": args.services,
                   "controllers": args.controllers, "pool": POOL_CIDR},
        "rounds": sum(faults.values()),
        "faults": dict(faults),
        "controller_restarts_on_their_own": restarts,
        "workload_ops": dict(work.ops),
        "workload_ops_failed_api_down_or_conflict": work.failed,
        "samples": samples,
        "duplicate_ip_samples": dup_samples,
        "duplicate_examples": dup_examples,
        "lost_updates": len(problems),
        "lost_update_examples": problems[:10],
        "final_services": len(final),
        "converge_s": round(converge_s, 1),
        "tracebacks": sum(tracebacks.values()),
        "tracebacks_per_log": tracebacks,
        "logs": str(workdir),
        "machine": f"{platform.node()} {os.cpu_count()} cpus (shared, noisy)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=120.0, help="seconds of faults (default 120)")
    p.add_argument("--converge", type=float, default=60.0, help="seconds allowed to converge afterwards")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--services", type=int, default=40, help="Service names the workload cycles through")
    p.add_argument("--controllers", type=int, default=2)
    p.add_argument("--min-gap", type=float, default=3.0, help="seconds between faults, at least")
    p.add_argument("--max-gap", type=float, default=8.0, help="seconds between faults, at most")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("rounds", "faults", "duplicate_ip_samples", "lost_updates", "tracebacks", "converge_s")
    summary = {k: result[k] for k in keys}
    print(json.dumps(summary))
    return 0 if result["duplicate_ip_samples"] == 0 and result["lost_updates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
