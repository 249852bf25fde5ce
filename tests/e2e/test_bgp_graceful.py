"""Graceful restart across a speaker restart (a rolling update), with FRR and with BIRD (issue 11).

The lab's BGPPeer gets `enableGracefulRestart`; the routers are graceful-restart helpers.

1. A SIGTERMed speaker does not withdraw: its next hop stays in the router's FIB (stale)
   the whole time it is away, and a curl loop from ext-client against the ETP Cluster
   Service loses no request.
2. A Service deleted while that speaker is away keeps only the away speaker's stale path.
3. The restarted speaker re-announces and then sends End-of-RIB: the router drops that stale
   path at once, well before the restart time (120 s) would have, and every other next hop
   stays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import netns as nsops
from lab import router as rtr
from lab import topology as topo
from lbspeaker.api.constants import BGPPEER_VERSION, GROUP, NAMESPACE
from lbspeaker.bgp.config import GRACEFUL_RESTART_TIME
from lbspeaker.kube.resources import BGPPEERS, PODS, SERVICES
from lbspeaker.kube.rest import Rest
from tests.e2e.conftest import Lab
from tests.e2e.test_speaker_bgp import (
    PEER,
    alive,
    apply,
    bgp_config,
    delete,
    fib_nexthops,
    kube_proxy_programmed,
    pod,
    rest_for,
    router_paths,
    service,
    sessions,
    speaker_pid,
    wait_for,
    worker_ips,
)

pytestmark = pytest.mark.e2e

KEPT_IP = "198.51.100.13"
GONE_IP = "198.51.100.14"

REQUEST_LOOP = r"""
import json, signal, sys, time, urllib.request
url, interval, stop = sys.argv[1], float(sys.argv[2]), []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
ok, failures = 0, []
while not stop:
    t = time.monotonic()
    try:
        urllib.request.urlopen(url, timeout=1.0).read()
        ok += 1
    except Exception as exc:
        failures.append([round(t, 3), type(exc).__name__])
    time.sleep(interval)
print(json.dumps({"ok": ok, "failed": len(failures), "failures": failures[:50]}), flush=True)
"""


class RequestLoop:
    """Requests from ext-client, each on a new connection (as a curl loop), one every `interval`
    seconds, until stopped; `stop()` returns {"ok", "failed", "failures": [[time, error], ..]}."""

    def __init__(self, ip: str, interval: float = 0.01) -> None:
        argv = [sys.executable, "-c", REQUEST_LOOP, f"http://{ip}/host", str(interval)]
        self.proc = nsops.popen_in(topo.EXT_CLIENT, argv, stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=15)
        return dict(json.loads(out.strip().splitlines()[-1]))


class HopWatch:
    """Samples an IP's next hops in the router's FIB: every distinct set, in order."""

    def __init__(self, ip: str, interval: float = 0.05) -> None:
        self.ip, self.interval = ip, interval
        self.sets: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            hops = frozenset(fib_nexthops(self.ip))
            if not self.sets or self.sets[-1][1] != hops:
                self.sets.append((time.monotonic(), hops))
            self._stop.wait(self.interval)

    def stop(self) -> list[frozenset[str]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return [s for _, s in self.sets]


def set_graceful_restart(rest: Rest, on: bool) -> None:
    """The lab's BGPPeer (as `bgp_config` makes it) with or without enableGracefulRestart, which
    cannot change after creation (MetalLB's rule): deleted and created again."""
    if PEER not in {p["metadata"]["name"] for p in rest.list(BGPPEERS, NAMESPACE)["items"]}:
        bgp_config(rest)
    peer = rest.get(BGPPEERS, PEER, NAMESPACE)
    if bool(peer["spec"].get("enableGracefulRestart")) == on:
        return
    delete(rest, BGPPEERS, PEER, NAMESPACE)
    wait_for("the BGPPeer deleted", lambda: PEER not in {p["metadata"]["name"] for p in
                                                        rest.list(BGPPEERS, NAMESPACE)["items"]})
    spec = dict(peer["spec"], enableGracefulRestart=on)
    apply(rest, BGPPEERS, {"apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
                           "metadata": {"name": PEER, "namespace": NAMESPACE}, "spec": spec})


def router_negotiated_gr(lab: Lab, node: str, node_ip: str) -> str | None:
    """The router's view of the node's graceful-restart capability (None: not received)."""
    paths = router_paths(lab)
    if lab.options["router"] == "frr":
        data = json.loads(rtr.vtysh(paths, f"show bgp neighbors {node_ip} json") or "{}")
        caps = (data.get(node_ip) or {}).get("neighborCapabilities") or {}
        gr = json.dumps(caps.get("gracefulRestart", ""))
        return gr if "advertisedAndReceived" in gr or "received" in gr.lower() else None
    text = rtr.birdc(paths, f"show protocols all {rtr.bird_protocol_name(node, 4)}")
    neighbor = text.split("Neighbor capabilities", 1)[-1] if "Neighbor capabilities" in text else ""
    return neighbor if "Graceful restart" in neighbor or "restart-able" in neighbor else None


def speaker_log(lab: Lab, node: str) -> str:
    path = lab.state_dir / "logs" / f"speaker-{node}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def all_established(rest: Rest, nodes: list[str]) -> bool:
    s = sessions(rest)
    return all(s.get(n, {}).get("state") == "Established" for n in nodes)


@pytest.fixture(params=["frr", "bird"])
def gr_lab(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Rest]]:
    if lab.options["router"] != request.param or lab.options.get("bgp_password") or lab.options.get("ipv6"):
        lab.options.pop("bgp_password", None)
        lab.up(router=request.param, ipv6=False)
    rest = rest_for(lab)
    set_graceful_restart(rest, True)
    try:
        yield lab, rest
    finally:
        for name in ("bgp-gr-kept", "bgp-gr-gone"):
            delete(rest, SERVICES, name, "default")
        for p in rest.list(PODS, "default")["items"]:
            if p["metadata"]["name"].startswith("bgpg-"):
                delete(rest, PODS, p["metadata"]["name"], "default")
        set_graceful_restart(rest, False)  # as the other tests expect the peer
        lab.up()


def test_speaker_restart_keeps_routes_and_loses_no_request(gr_lab: tuple[Lab, Rest]) -> None:
    lab, rest = gr_lab
    workers = worker_ips(lab)
    names = sorted(workers)
    hops = set(workers.values())
    for i, node in enumerate(names):
        apply(rest, PODS, pod(f"bgpg-{i}", "bgpg", node))
    apply(rest, SERVICES, service("bgp-gr-kept", "bgpg", KEPT_IP, "Cluster"))
    apply(rest, SERVICES, service("bgp-gr-gone", "bgpg", GONE_IP, "Cluster"))
    wait_for("both Services via every worker", lambda: fib_nexthops(KEPT_IP) == hops == fib_nexthops(GONE_IP),
             timeout=60)
    wait_for("sessions Established", lambda: all_established(rest, names), timeout=60)
    wait_for("every worker's kube-proxy forwards the Service", lambda: kube_proxy_programmed(lab, KEPT_IP),
             timeout=30)
    victim = names[0]
    wait_for("graceful restart negotiated", lambda: router_negotiated_gr(lab, victim, workers[victim]),
             timeout=30)

    watch = HopWatch(KEPT_IP)
    loop = RequestLoop(KEPT_IP)
    try:
        time.sleep(1.0)  # requests flowing before the restart
        pid = speaker_pid(lab, victim)
        os.kill(pid, signal.SIGTERM)
        wait_for("the SIGTERMed speaker has exited", lambda: not alive(pid), timeout=15)
        assert fib_nexthops(KEPT_IP) == hops, "the router dropped the restarting node's next hop"

        # deleted while the victim is away: the others withdraw, the victim's stale path stays
        delete(rest, SERVICES, "bgp-gr-gone", "default")
        wait_for("only the away speaker's stale path left",
                 lambda: fib_nexthops(GONE_IP) == {workers[victim]}, timeout=30)

        t_up = time.monotonic()
        lab.up()  # restarts the speaker, as the DaemonSet would
        wait_for("the restarted speaker's session Established", lambda: all_established(rest, names),
                 timeout=90)
        # End-of-RIB: the router drops what was not announced again; without it the stale path
        # would stay for the restart time
        wait_for("the stale path dropped on End-of-RIB", lambda: not fib_nexthops(GONE_IP),
                 timeout=GRACEFUL_RESTART_TIME - 20)
        print(f"stale path of the deleted Service gone {time.monotonic() - t_up:.1f}s after the restart")
        time.sleep(1.0)
    finally:
        result = loop.stop()
        sets = watch.stop()
    print(f"requests across the restart: {result['ok']} ok, {result['failed']} failed; "
          f"next-hop sets seen: {[sorted(s) for s in sets]}")
    assert result["ok"] > 0 and result["failed"] == 0, result
    assert all(s == hops for s in sets), sets
    assert "sending End-of-RIB" in speaker_log(lab, victim)
