"""bench/bgp.py section `ipv6`: an IPv6 Service's /128 in the router's FIB (issue 11).

On an `--ipv6` lab (the section re-runs `up` with `--ipv6`), two BGPPeers to the router
(as tests/e2e/test_bgp_ipv6.py): `v6-mp`, the router's IPv4 address with
dualStackAddressFamily (MP-BGP, the node's IPv6 address as next hop), and `v6-native`, the
router's IPv6 address. For each, `--trials` IPv6 Services (ETP Cluster, a pod on every
worker) are created one at a time; figures: Service created -> its /128 in the router's
kernel FIB with a first next hop and with one next hop per worker, and the next-hop count
the FIB ends with (next to the number of workers). The base BGPPeer (`lab-router`) is
deleted meanwhile (one session per router address) and restored after.

    python bench/bgp.py --only ipv6 --router frr,bird      # as a section
    python bench/bgp_ipv6.py --router frr,bird             # the same, on its own
"""

from __future__ import annotations

import ipaddress
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bgp import Context, FibWatch, summary  # noqa: E402
from lbspeaker.kube.resources import PODS, SERVICES  # noqa: E402
from tests.e2e.test_bgp_ipv6 import (  # noqa: E402
    CASES,
    MP_PEER,
    NATIVE_PEER,
    cleanup,
    ipv6_bgp_config,
    service6,
    worker_ips6,
)
from tests.e2e.test_speaker_bgp import apply, bgp_config, delete, pod, sessions, wait_for  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "bgp_ipv6.json"


def run(ctx: Context) -> dict[str, Any]:
    """The `ipv6` section (see the module docstring)."""
    ctx.lab_up(ipv6=True)
    rest = ctx.rest
    workers = worker_ips6(ctx.lab)
    hops = set(workers.values())
    trials = min(ctx.args.trials, 14)  # each pool is a /124
    ctx.log(f"IPv6 Service created -> /128 in the router's FIB ({len(hops)} workers):")
    fib = FibWatch(ctx.args.interval, family="-6")
    out: dict[str, Any] = {"workers": len(hops)}
    try:
        ipv6_bgp_config(rest)
        for i, node in enumerate(sorted(workers)):
            apply(rest, PODS, pod(f"bgp6-{i}", "bgp6", node))
        wait_for("both IPv6-carrying sessions Established on every worker",
                 lambda: all(sessions(rest, p).get(n, {}).get("state") == "Established"
                             for p in CASES for n in workers), timeout=120)
        for name in (MP_PEER, NATIVE_PEER):
            pool, cidr, _ = CASES[name]
            first, full, counts = [], [], []
            for i in range(trials):
                ip = str(ipaddress.ip_network(cidr)[i + 1])
                t0 = time.monotonic()
                apply(rest, SERVICES, service6(f"bench6-{name}-{i}", "bgp6", ip, pool))
                t1 = fib.wait(lambda s: bool(s.get(ip)), 60)  # noqa: B023 (called at once)
                t2 = fib.wait(lambda s: set(s.get(ip, [])) == hops, 60)  # noqa: B023
                with fib.cond:
                    counts.append(len(fib.state.get(ip, [])))
                first.append(t1 - t0)
                full.append(t2 - t0)
                ctx.log(f"  {name} #{i + 1}: {ip}/128 first next hop {t1 - t0:.3f} s, "
                        f"all {counts[-1]} next hops {t2 - t0:.3f} s")
            out[name.replace("-", "_")] = {"first_next_hop": summary(first), "all_next_hops": summary(full),
                                           "next_hops_min": min(counts), "next_hops_max": max(counts)}
    finally:
        fib.stop()
        for name in CASES:
            for i in range(trials):
                delete(rest, SERVICES, f"bench6-{name}-{i}", "default")
        cleanup(rest)
        bgp_config(rest)  # the base peer (deleted by ipv6_bgp_config) and the warm-up route back
        ctx.wait_warm(120)
    return out


if __name__ == "__main__":
    from bench import bgp
    from tests.e2e import conftest

    conftest.DEFAULT_OPTIONS["ipv6"] = True  # on its own: the lab is dual-stack from the start
    sys.exit(bgp.main_section("ipv6", DEFAULT_OUT))
