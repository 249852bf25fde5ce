"""BGPPeer churn and SIGTERM in the lab, on FRR and BIRD (issue 11).

* Churn: a second BGPPeer (the router on a port nobody listens on: a peer that is down,
  with routes pending, the case that made one shared ExaBGP restart) is added and deleted
  again and again while the first peer carries an ETP Cluster Service. The router's view
  of every first-peer session (FRR's established/dropped counts, BIRD's protocol `since`)
  must not move, and the first peer's ExaBGPs must be the same processes.
* SIGTERM: the speaker exits within the DaemonSet's grace period, by its own deadline (not
  its watchdog), with its next hop gone from the router and no ExaBGP left behind.

Speed (p50/max of SIGTERM -> exit, drops per 20 operations) is measured by
`bench/bgp.py --only churn,sigterm`, not asserted here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import router as rtr
from lab import topology as topo
from lbspeaker.api.constants import BGPPEER_VERSION, GROUP, NAMESPACE
from lbspeaker.kube.resources import BGPPEERS, PODS, SERVICES
from lbspeaker.kube.rest import ApiError, Rest
from tests.e2e.conftest import Lab
from tests.e2e.test_speaker_bgp import (
    PEER,
    alive,
    apply,
    bgp_config,
    delete,
    fib_nexthops,
    pod,
    rest_for,
    service,
    speaker_pid,
    wait_for,
    worker_ips,
)

pytestmark = pytest.mark.e2e

IP = "198.51.100.30"
CHURN = "churn-peer"
OPERATIONS = 8
SPEAKER_MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "base" / "speaker.yaml"


def grace_period() -> float:
    m = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", SPEAKER_MANIFEST.read_text())
    assert m, "the speaker DaemonSet sets terminationGracePeriodSeconds"
    return float(m.group(1))


def exabgps(node: str, peer: str = "") -> set[int]:
    """PIDs of the ExaBGPs of `node` (of one BGPPeer: its directory starts with the name)."""
    pattern = f"exabgp server .*/bgp/{node}/peers/{peer}" if peer else f"exabgp server .*/bgp/{node}/"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def churn_peer() -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
            "metadata": {"name": CHURN, "namespace": NAMESPACE},
            "spec": {"myASN": 64514, "peerASN": 64512, "peerAddress": topo.ROUTER_IP_V4, "peerPort": 1790,
                     "holdTime": "9s"}}


def churn_configured(rest: Rest, workers: dict[str, str]) -> bool:
    """Every worker runs an ExaBGP for the churn peer and has written its (down) session entry."""
    try:
        st = rest.get(BGPPEERS, CHURN, NAMESPACE).get("status") or {}
    except ApiError:
        return False
    written = {s.get("node") for s in st.get("sessions") or []}
    return set(workers) <= written and all(exabgps(n, CHURN) for n in workers)


@pytest.fixture(params=["frr", "bird"])
def traffic(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Rest, dict[str, str]]]:
    if lab.options["router"] != request.param or lab.options.get("bgp_password"):
        lab.options.pop("bgp_password", None)
        lab.up(router=request.param)
    rest = rest_for(lab)
    bgp_config(rest)
    workers = worker_ips(lab)
    for i, node in enumerate(sorted(workers)):
        apply(rest, PODS, pod(f"life-{i}", "life", node))
    apply(rest, SERVICES, service("bgp-life", "life", IP, "Cluster"))
    wait_for("ECMP next hops in the router FIB", lambda: fib_nexthops(IP) == set(workers.values()),
             timeout=60)
    yield lab, rest, workers
    delete(rest, BGPPEERS, CHURN, NAMESPACE)
    delete(rest, SERVICES, "bgp-life", "default")
    for i in range(len(workers)):
        delete(rest, PODS, f"life-{i}", "default")
    lab.up()  # restart a speaker the test ended


def test_peer_churn_never_drops_the_other_peers_sessions(traffic: tuple[Lab, Rest, dict[str, str]]) -> None:
    lab, rest, workers = traffic
    paths = rtr.RouterPaths(rtr.runtime_dir(lab.state_dir))
    before = rtr.session_marks(lab.options["router"], paths, workers)
    assert set(before) == set(workers.values()), before
    assert all(state == "Established" for state, _ in before.values()), before
    first = {n: exabgps(n, PEER) for n in workers}
    assert all(first.values()), first

    for i in range(OPERATIONS):
        if i % 2 == 0:
            apply(rest, BGPPEERS, churn_peer())
            wait_for(f"operation {i + 1}: every worker runs the churn peer",
                     lambda: churn_configured(rest, workers), timeout=30)
        else:
            delete(rest, BGPPEERS, CHURN, NAMESPACE)
            wait_for(f"operation {i + 1}: the churn peer's ExaBGPs have stopped",
                     lambda: not any(exabgps(n, CHURN) for n in workers), timeout=30)

    after = rtr.session_marks(lab.options["router"], paths, workers)
    assert after == before, f"the first peer's sessions restarted: {before} -> {after}"
    assert {n: exabgps(n, PEER) for n in workers} == first, "the first peer's ExaBGP was replaced"
    assert fib_nexthops(IP) == set(workers.values())


def test_sigterm_exits_by_its_deadline_with_routes_withdrawn(
    traffic: tuple[Lab, Rest, dict[str, str]]
) -> None:
    lab, _rest, workers = traffic
    node = sorted(workers)[0]
    rec = next(p for p in lab.state()["processes"] if p["name"] == f"speaker-{node}")
    log_path = Path(rec["log"])
    offset = log_path.stat().st_size
    pid = speaker_pid(lab, node)
    assert exabgps(node)
    os.kill(pid, signal.SIGTERM)
    # the kubelet SIGKILLs a container still running after its grace period
    wait_for("the speaker exited within the grace period", lambda: not alive(pid), timeout=grace_period())
    with open(log_path, "rb") as f:
        f.seek(offset)
        tail = f.read().decode(errors="replace")
    assert "stopped in" in tail and "exiting now" not in tail, tail[-3000:]
    assert workers[node] not in fib_nexthops(IP)
    assert fib_nexthops(IP) == set(workers.values()) - {workers[node]}
    wait_for("no ExaBGP outlives its speaker", lambda: not exabgps(node), timeout=5)
