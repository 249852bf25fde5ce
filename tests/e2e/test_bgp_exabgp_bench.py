"""Figures of the ExaBGP manager (not a timed test: opt-in with LBSPEAKER_BGP_BENCH=1).

Measured in the `lbt-j-*` namespaces of test_bgp_exabgp (FRR router, two nodes,
eBGP, ECMP):

* announce -> /32 in the router's kernel FIB, one node, 20 samples (p50/p90/max);
* withdraw -> gone from the FIB, same samples;
* stop() -> the node's next hop gone from the FIB (5 samples);
* 1,000 /32s announced by both nodes at once -> all in the FIB with two next hops,
  and withdrawn -> all gone; ExaBGP's RSS with them.

The FIB is polled with `ip -j route` (a few ms per poll, which bounds the
resolution). 1,000 distinct /32s do not fit in the 198.51.100.0/24 pool range, so
that run uses 172.18.128.0-172.18.131.231 (inside the lab's 172.18.0.0/16, only in
the namespaces). Results: printed and written to $LBSPEAKER_BGP_BENCH_OUT (JSON,
default bench-bgp-exabgp.json in pytest's tmp dir).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lbspeaker.bgp.routes import RouteAttrs
from tests.e2e.test_bgp_exabgp import ROUTER, Node, Topology, established, sh
from tests.e2e.test_bgp_exabgp import topo as topo
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("LBSPEAKER_BGP_BENCH") != "1", reason="set LBSPEAKER_BGP_BENCH=1"),
]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p90_ms": round(pct(values, 0.9) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def poll(predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    """Monotonic time at which `predicate()` first held (fast polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.002)
    raise AssertionError("timeout")


def bgp_routes(prefixes: set[str]) -> dict[str, int]:
    """prefix -> number of next hops, for kernel BGP routes in `prefixes`."""
    out = sh("ip", "-n", ROUTER, "-j", "route", "show", "proto", "bgp").stdout.strip()
    res = {}
    for r in json.loads(out) if out else []:
        dst = r.get("dst", "")
        dst = dst if "/" in dst else f"{dst}/32"
        if dst in prefixes:
            res[dst] = len(r.get("nexthops", [])) or 1
    return res


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def pair(topo: Topology, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    made = (Node("lbt-j-n1", tmp_path), Node("lbt-j-n2", tmp_path))
    try:
        yield made
    finally:
        for n in made:
            n.manager.stop(withdraw=False, timeout=2)


def test_bench(topo: Topology, pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    for n in pair:
        n.manager.set_peers([n.peer()])
        n.manager.start()
    for n in pair:
        established(n)
    results: dict[str, object] = {}

    # announce -> FIB and withdraw -> gone, one node
    up, down = [], []
    for i in range(20):
        prefix = f"198.51.100.{100 + i}/32"
        t0 = time.monotonic()
        n1.manager.announce("frr", prefix, RouteAttrs(communities=("65000:1",)))
        up.append(poll(functools.partial(lambda p: topo.fib_nexthops(p) == {"172.18.0.11"}, prefix)) - t0)
        t0 = time.monotonic()
        n1.manager.withdraw("frr", prefix)
        down.append(poll(functools.partial(lambda p: not topo.fib_nexthops(p), prefix)) - t0)
    results["announce_to_fib"] = summary(up)
    results["withdraw_to_fib"] = summary(down)

    # 1,000 /32s from both nodes (ECMP)
    base = int(ipaddress.IPv4Address("172.18.128.0"))
    prefixes = {f"{ipaddress.IPv4Address(base + i)}/32" for i in range(1000)}
    table = {"frr": {p: RouteAttrs(communities=("65000:1",)) for p in prefixes}}
    t0 = time.monotonic()
    for n in pair:
        n.manager.set_routes(table)
    acked = []
    for n in pair:
        assert n.manager.wait_synced(60)
        acked.append(time.monotonic() - t0)

    def all_ecmp() -> bool:
        routes = bgp_routes(prefixes)
        return len(routes) == 1000 and all(v == 2 for v in routes.values())

    t_all = wait_for(lambda: all_ecmp() and time.monotonic(), timeout=120, interval=0.05)
    pid = n1.manager.pid
    assert pid is not None
    results["bulk_1000"] = {
        "acked_by_exabgp_s": round(max(acked), 2),
        "all_in_fib_with_2_nexthops_s": round(t_all - t0, 2),
        "exabgp_rss_mb": round(rss_kb(pid) / 1024, 1),
    }
    t0 = time.monotonic()
    for n in pair:
        n.manager.set_routes({})
    t_gone = wait_for(lambda: not bgp_routes(prefixes) and time.monotonic(), timeout=120, interval=0.05)
    results["bulk_1000"]["all_withdrawn_s"] = round(t_gone - t0, 2)  # type: ignore[index]

    # stop() -> next hop gone (re-start n1 each time)
    stops: list[float] = []
    stop_returned: list[float] = []
    prefix = "198.51.100.200/32"
    n2.manager.announce("frr", prefix)
    for _ in range(5):
        n1.manager.announce("frr", prefix)
        established(n1)
        wait_for(lambda: topo.fib_nexthops(prefix) == {"172.18.0.11", "172.18.0.12"}, timeout=20)
        gone: list[float] = []

        def watch(out: list[float] = gone) -> None:
            out.append(poll(lambda: topo.fib_nexthops(prefix) == {"172.18.0.12"}))

        watcher = threading.Thread(target=watch)
        t0 = time.monotonic()
        watcher.start()
        n1.manager.stop()  # blocks until ExaBGP has exited: the watcher measures meanwhile
        stop_returned.append(time.monotonic() - t0)
        watcher.join()
        stops.append(gone[0] - t0)
        n1.manager.start()
    results["stop_to_nexthop_gone"] = summary(stops)
    results["stop_call_duration"] = summary(stop_returned)

    # SIGKILL of ExaBGP -> noticed, restarted, session and routes back; does the FIB lose it?
    kill_prefix = "198.51.100.201/32"
    n1.manager.announce("frr", kill_prefix)
    established(n1)
    wait_for(lambda: topo.fib_nexthops(kill_prefix) == {"172.18.0.11"}, timeout=20)
    missing: list[float] = []
    done = threading.Event()

    def watch_gap() -> None:
        while not done.is_set():
            if not topo.fib_nexthops(kill_prefix):
                missing.append(time.monotonic())
            time.sleep(0.005)

    gap_watcher = threading.Thread(target=watch_gap)
    gap_watcher.start()
    old = n1.manager.pid
    assert old is not None
    n1.changes.clear()
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    t_noticed = poll(lambda: any("ExaBGP exited" in s.last_error for _, s in n1.changes), 10)
    t_new = poll(lambda: n1.manager.pid not in (None, old), 10)
    t_est = poll(lambda: any(s.state == "Established" for _, s in n1.changes[1:]), 30)
    assert n1.manager.wait_synced(10)
    t_sync = time.monotonic()
    time.sleep(1)
    done.set()
    gap_watcher.join()
    results["sigkill"] = {
        "noticed_ms": round((t_noticed - t0) * 1000, 1),
        "restarted_ms": round((t_new - t0) * 1000, 1),
        "reestablished_ms": round((t_est - t0) * 1000, 1),
        "routes_resent_ms": round((t_sync - t0) * 1000, 1),
        "fib_gap_ms": round((missing[-1] - missing[0]) * 1000, 1) if missing else 0.0,
    }

    out = Path(
        os.environ.get("LBSPEAKER_BGP_BENCH_OUT", str(n1.manager.workdir.parent / "bench-bgp-exabgp.json"))
    )
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
