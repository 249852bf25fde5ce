"""Allocation benchmark.

* ``inprocess``: the pure allocator alone: 100,000 Services from one large IPv4 pool
  (seconds, µs per allocation, peak memory), then release/re-allocate and a restart
  rebuild (restore of every assignment into a fresh allocator).
* ``shared``: 10,000 Services onto ONE shared IP (same allow-shared-ip key, distinct
  ports): allocate, idempotent resync, restart restore, release. Linear, not quadratic.
* ``api``: Services created through the lab API server with the controller running
  (p50/p99 from create to IP in status) — filled in by the controller shell's author.

    python bench/allocation.py [--only inprocess|shared|api] [--services N] [--out FILE]

Results are merged into ``bench/results/allocation.json`` (one key per part) and a
readable summary is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lbspeaker.api.addresses import parse_address_range  # noqa: E402
from lbspeaker.controller.allocator import Allocator, Pool, ServiceRequest  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "allocation.json"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _requests(n: int, prefix: str = "bench") -> list[ServiceRequest]:
    return [ServiceRequest(key=f"{prefix}/svc-{i}", namespace=prefix, ports=(("TCP", 80),))
            for i in range(n)]


def _timed_allocations(alloc: Allocator, reqs: list[ServiceRequest]) -> tuple[float, list[float]]:
    """Total seconds and per-call µs for allocating every request (each must succeed)."""
    per_call: list[float] = []
    clock = time.perf_counter
    start = clock()
    for r in reqs:
        t0 = clock()
        res = alloc.allocate(r)
        per_call.append((clock() - t0) * 1e6)
        if not res.ok:
            raise RuntimeError(f"allocation failed for {r.key}: {res.message}")
    return clock() - start, per_call


def bench_inprocess(services: int = 100_000, cidr: str = "10.0.0.0/8", churn: float = 0.10,
                    seed: int = 1) -> dict[str, Any]:
    """Allocate `services` Services from one pool; measure time, memory, churn and restart rebuild."""
    pool = Pool(name="big", ranges=(parse_address_range(cidr),))
    reqs = _requests(services)

    # 1. timing pass (no tracemalloc: it slows allocation several-fold)
    gc.collect()
    alloc = Allocator([pool])
    total_s, per_call = _timed_allocations(alloc, reqs)
    assigned = alloc.assignments()
    assert len(set(assigned.values())) == services, "an IP was handed out twice"
    stats_after = alloc.pool_stats("big")

    # 2. churn: release a random `churn` share, then allocate as many new Services; they must
    #    land exactly in the released holes (lowest free first).
    rng = random.Random(seed)
    victims = rng.sample(reqs, int(services * churn))
    released_ips: set[str] = set()
    t0 = time.perf_counter()
    for r in victims:
        released_ips.update(alloc.release(r.key))
    release_s = time.perf_counter() - t0
    fragments = len(alloc._pools["big"].free[4].starts)
    new_reqs = _requests(len(victims), prefix="churn")
    realloc_s, realloc_calls = _timed_allocations(alloc, new_reqs)
    after = alloc.assignments()
    refilled = {after[r.key][0] for r in new_reqs}
    assert refilled == released_ips, "re-allocation did not fill the released holes first"

    # 3. idempotent re-reconcile of every Service (what a resync does)
    t0 = time.perf_counter()
    for r in reqs:
        if r.key in assigned and alloc.assigned(r.key) is not None:
            alloc.allocate(r)
    resync_s = time.perf_counter() - t0

    # 4. restart: rebuild a fresh allocator from every assignment (status), in shuffled order
    state = alloc.assignments()
    by_key = {r.key: r for r in reqs + new_reqs}
    order = list(state)
    rng.shuffle(order)
    t0 = time.perf_counter()
    fresh = Allocator([pool])
    for key in order:
        res = fresh.restore(key, state[key], by_key[key])
        assert res.ok
    restore_s = time.perf_counter() - t0
    assert fresh.assignments() == state
    probe = ServiceRequest(key="probe/x", namespace="probe")
    assert fresh.allocate(probe).ips == alloc.allocate(probe).ips
    del fresh, alloc
    gc.collect()

    # 5. the same with avoidBuggyIPs (every x.y.z.0/.255 skipped): must not slow down
    gc.collect()
    avoid_alloc = Allocator([Pool(name="big", ranges=pool.ranges, avoid_buggy_ips=True)])
    avoid_s, avoid_calls = _timed_allocations(avoid_alloc, reqs)
    assert not any(ips[0].endswith((".0", ".255")) for ips in avoid_alloc.assignments().values())
    del avoid_alloc
    gc.collect()

    # 6. memory pass: peak of Python allocations while allocating everything
    tracemalloc.start()
    base_current, _ = tracemalloc.get_traced_memory()
    mem_alloc = Allocator([pool])
    for r in reqs:
        mem_alloc.allocate(r)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del mem_alloc
    gc.collect()

    return {
        "services": services,
        "pool": cidr,
        "allocate_total_s": round(total_s, 3),
        "allocate_per_call_us": {
            "mean": round(statistics.fmean(per_call), 2),
            "p50": round(_pct(per_call, 0.50), 2),
            "p99": round(_pct(per_call, 0.99), 2),
            "max": round(max(per_call), 2),
        },
        "allocations_per_s": round(services / total_s),
        "pool_stats_after": list(stats_after),
        "churn": {
            "released": len(victims),
            "release_total_s": round(release_s, 3),
            "release_per_call_us": round(release_s / max(1, len(victims)) * 1e6, 2),
            "free_intervals_after_release": fragments,
            "reallocate_total_s": round(realloc_s, 3),
            "reallocate_per_call_us": {
                "mean": round(statistics.fmean(realloc_calls), 2),
                "p99": round(_pct(realloc_calls, 0.99), 2),
            },
        },
        "resync_idempotent_total_s": round(resync_s, 3),
        "avoid_buggy_ips": {
            "allocate_total_s": round(avoid_s, 3),
            "per_call_us_mean": round(statistics.fmean(avoid_calls), 2),
            "per_call_us_p99": round(_pct(avoid_calls, 0.99), 2),
        },
        "restart_restore_total_s": round(restore_s, 3),
        "memory": {
            "tracemalloc_peak_mib": round((peak - base_current) / 2**20, 1),
            "tracemalloc_retained_mib": round((current - base_current) / 2**20, 1),
            "retained_bytes_per_service": round((current - base_current) / services),
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "python": platform.python_version(),
    }


def bench_shared(services: int = 10_000) -> dict[str, Any]:
    """`services` Services sharing one IP: every call must cost O(1) in the number of holders."""
    pool = Pool(name="shared", ranges=(parse_address_range("10.0.0.0/24"),))
    reqs = [ServiceRequest(key=f"bench/shared-{i}", namespace="bench", sharing_key="one",
                           ports=((("TCP", "UDP")[i // 65535 % 2], 1 + i % 65535),))
            for i in range(services)]
    gc.collect()
    alloc = Allocator([pool])
    total_s, per_call = _timed_allocations(alloc, reqs)
    assert {ips for ips in alloc.assignments().values()} == {("10.0.0.0",)}, "not all on one IP"
    t0 = time.perf_counter()
    for r in reqs:
        res = alloc.allocate(r)
        assert res.ok and not res.changed
    resync_s = time.perf_counter() - t0
    state = alloc.assignments()
    t0 = time.perf_counter()
    fresh = Allocator([pool])
    for r in reqs:
        assert fresh.restore(r.key, state[r.key], r).ok
    fresh.pool_stats("shared")  # restores are lazy: include the rebuild
    restore_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in reqs:
        alloc.release(r.key)
    release_s = time.perf_counter() - t0
    assert alloc.assignments() == {}
    return {
        "services": services,
        "allocate_total_s": round(total_s, 3),
        "allocate_per_call_us": {"mean": round(statistics.fmean(per_call), 2),
                                 "p99": round(_pct(per_call, 0.99), 2)},
        "resync_idempotent_total_s": round(resync_s, 3),
        "restart_restore_total_s": round(restore_s, 3),
        "release_total_s": round(release_s, 3),
        "python": platform.python_version(),
    }


def _api_run(services: int, pool_cidr: str = "10.96.0.0/20", rate: float | None = None) -> dict[str, Any]:
    """One run: a fresh lab API server in this process, `lbspeaker-controller --kubeconfig ...` as a
    subprocess (Lease on, logs at warning), `services` Services created; time from create to IP in status.

    Creates are issued back to back from one thread (or paced at `rate` per second), so the
    burst figure includes queueing in the controller when it falls behind; a watch in this
    process timestamps the first status that carries an IP.
    """
    import contextlib
    import os
    import shutil
    import subprocess
    import tempfile
    import threading

    import yaml

    from lab.apiserver import LabApiServer
    from lbspeaker.kube.cache import WatchCache
    from lbspeaker.kube.client import load_api_client
    from lbspeaker.kube.resources import CRDS, IPADDRESSPOOLS, NAMESPACES, SERVICES
    from lbspeaker.kube.rest import ApiError, Rest

    repo = ROOT
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = LabApiServer(bookmark_interval=1.0)
    server.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
        rest = Rest(load_api_client(str(kubeconfig)))
        for path in sorted((repo / "manifests" / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    rest.create(CRDS, doc)
        for ns in ("default", "lbspeaker-system"):
            with contextlib.suppress(ApiError):  # already there
                rest.create(NAMESPACES, {"metadata": {"name": ns}})
        deadline = time.monotonic() + 30
        while True:  # the CRD is served once the server has registered it
            try:
                rest.create(IPADDRESSPOOLS, {"metadata": {"name": "bench", "namespace": "lbspeaker-system"},
                                             "spec": {"addresses": [pool_cidr]}})
                break
            except ApiError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        seen: dict[str, float] = {}
        done = threading.Event()

        def on_event(type_: str, obj: dict[str, Any]) -> None:
            name = obj["metadata"]["name"]
            if name in seen or type_ == "DELETED":
                return
            if ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
                seen[name] = time.perf_counter()
                if len(seen) >= services + 1:
                    done.set()

        watch = WatchCache(rest, SERVICES, namespace="default", on_event=on_event, name="bench-watch")
        watch.start()
        watch.wait_synced(30)

        exe = Path(sys.executable).with_name("lbspeaker-controller")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lbspeaker.controller.main"]
        with open(tmp / "controller.log", "wb") as log:
            proc = subprocess.Popen([*cmd, "--kubeconfig", str(kubeconfig), "--metrics-addr", "",
                                     "--log-level", "warning", "--identity", "bench"],
                                    stdout=subprocess.DEVNULL, stderr=log)

        def svc(name: str) -> dict[str, Any]:
            return {"metadata": {"name": name, "namespace": "default"},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                             "selector": {"app": name}}}

        # Warm-up: wait until the controller leads and allocates (not part of the figures).
        rest.create(SERVICES, svc("warmup"))
        deadline = time.monotonic() + 60
        while "warmup" not in seen:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("controller did not allocate; see " + str(tmp / "controller.log"))
            time.sleep(0.01)

        created: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(services):
            name = f"bench-{i:05d}"
            if rate:
                pause = t0 + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            created[name] = time.perf_counter()
            rest.create(SERVICES, svc(name))
        t_created = time.perf_counter()
        if not done.wait(max(120.0, services * 0.2)):
            raise RuntimeError(f"only {len(seen) - 1}/{services} Services got an IP")
        t_end = max(seen[n] for n in created)
        clk = os.sysconf("SC_CLK_TCK")
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ctl_cpu = (int(fields[11]) + int(fields[12])) / clk
        own = os.times()
        bench_cpu = own.user + own.system
        lat = sorted((seen[n] - created[n]) * 1000.0 for n in created)
        watch.stop()
        ips = set()
        for obj in rest.list_all(SERVICES, "default")["items"]:
            for ing in obj["status"]["loadBalancer"]["ingress"]:
                ips.add(ing["ip"])
        assert len(ips) == services + 1, "duplicate IPs handed out"

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, round(p / 100.0 * (len(lat) - 1)))]

        return {
            "services": services,
            "rate_per_second": rate or 0,
            "create_seconds": round(t_created - t0, 3),
            "all_ips_seconds": round(t_end - t0, 3),
            "services_per_second": round(services / (t_end - t0), 1),
            "p50_ms": round(pct(50), 1),
            "p90_ms": round(pct(90), 1),
            "p99_ms": round(pct(99), 1),
            "max_ms": round(lat[-1], 1),
            "mean_ms": round(statistics.fmean(lat), 1),
            "controller_cpu_seconds": round(ctl_cpu, 2),
            "apiserver_and_bench_cpu_seconds": round(bench_cpu, 2),
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)



def bench_api(services: int = 1_000, paced_rate: float = 100.0) -> dict[str, Any]:
    """Services created through the lab API server with the controller running as a subprocess.

    Two runs: `burst` (creates back to back: the p99 is mostly queueing behind the
    controller's write rate) and `paced` (creates at `paced_rate`/s, below that rate:
    the latency of one allocation through watch -> allocate -> status PUT -> watch).
    """
    return {"burst": _api_run(services), "paced": _api_run(services, rate=paced_rate)}


def _summary(results: dict[str, Any]) -> str:
    lines: list[str] = []
    ip = results.get("inprocess")
    if ip:
        pc = ip["allocate_per_call_us"]
        ch = ip["churn"]
        mem = ip["memory"]
        lines += [
            f"in-process: {ip['services']:,} Services from {ip['pool']}",
            f"  allocate: {ip['allocate_total_s']} s total, {pc['mean']} µs/alloc mean "
            f"(p50 {pc['p50']}, p99 {pc['p99']}, max {pc['max']}), {ip['allocations_per_s']:,}/s",
            f"  churn: released {ch['released']:,} in {ch['release_total_s']} s "
            f"({ch['release_per_call_us']} µs each, {ch['free_intervals_after_release']:,} free intervals); "
            f"re-allocated into the holes in {ch['reallocate_total_s']} s "
            f"({ch['reallocate_per_call_us']['mean']} µs mean, p99 {ch['reallocate_per_call_us']['p99']})",
            f"  with avoidBuggyIPs: {ip['avoid_buggy_ips']['allocate_total_s']} s total, "
            f"{ip['avoid_buggy_ips']['per_call_us_mean']} µs/alloc mean "
            f"(p99 {ip['avoid_buggy_ips']['per_call_us_p99']})",
            f"  resync (idempotent allocate of all): {ip['resync_idempotent_total_s']} s; "
            f"restart rebuild (restore all, shuffled): {ip['restart_restore_total_s']} s",
            f"  memory: tracemalloc peak {mem['tracemalloc_peak_mib']} MiB, retained "
            f"{mem['tracemalloc_retained_mib']} MiB ({mem['retained_bytes_per_service']} B/Service); "
            f"process max RSS {mem['ru_maxrss_mib']} MiB",
        ]
    sh = results.get("shared")
    if sh:
        lines.append(
            f"one shared IP: {sh['services']:,} Services allocated in {sh['allocate_total_s']} s "
            f"({sh['allocate_per_call_us']['mean']} µs mean, p99 {sh['allocate_per_call_us']['p99']}); "
            f"resync {sh['resync_idempotent_total_s']} s; restart restore {sh['restart_restore_total_s']} s; "
            f"release {sh['release_total_s']} s")
    api = results.get("api")
    if api:
        for mode in ("burst", "paced"):
            r = api.get(mode)
            if not r:
                continue
            how = "back to back" if not r.get("rate_per_second") else f"paced at {r['rate_per_second']:g}/s"
            lines.append(
                f"through the API ({mode}): {r['services']:,} Services created {how} "
                f"in {r['create_seconds']} s; "
                f"all IPs in status after {r['all_ips_seconds']} s ({r['services_per_second']}/s); "
                f"create->IP p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, "
                f"max {r['max_ms']} ms; CPU: controller {r['controller_cpu_seconds']} s, "
                f"API server + bench {r['apiserver_and_bench_cpu_seconds']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", choices=("inprocess", "shared", "api"), help="run only one part")
    parser.add_argument("--services", type=int, help="number of Services (default 100000 / 1000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file (merged)")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {}
    if args.out.exists():
        try:
            results = json.loads(args.out.read_text())
        except ValueError:
            results = {}
    if args.only in (None, "inprocess"):
        results["inprocess"] = bench_inprocess(services=args.services or 100_000)
    if args.only in (None, "shared"):
        results["shared"] = bench_shared(services=args.services or 10_000)
    if args.only in (None, "api"):
        try:
            results["api"] = bench_api(services=args.services or 1_000)
        except NotImplementedError as exc:
            if args.only == "api":
                print(f"api benchmark: {exc}", file=sys.stderr)
                return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(_summary(results))
    print(f"(written to {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
