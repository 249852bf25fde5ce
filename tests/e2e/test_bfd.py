"""BFD in the lab (`lbspeaker-lab up --bfd`: the router, FRR bfdd or BIRD bfd, runs 300 ms x 3 to
every node and ties each BGP session to it), on FRR and BIRD.

* `test_session_up_and_failures_seen_by_the_router`: `python -m lbspeaker.bfd` alone on a node
  and the router come Up; the router notices the frozen process and a cut bridge port.
* `test_speaker_bfd_takes_a_hard_failed_node_out_before_its_hold_time`: the speaker's own BFD
  (the lab's BGPPeer with `bfdProfile`): the router sees a BFD session Up from every worker and
  `status.sessions[].bfd` says Up; a hard node failure (bridge port cut, speaker and ExaBGP
  frozen: no FIN, no NOTIFICATION, no AdminDown) takes the router's BFD session for that node
  Down and its next hop out of the FIB, and the router's reason for dropping the BGP session is
  BFD, not its hold timer; after the node comes back, everything is Up again.

Speed (how fast the router drops the node, with and without BFD) is measured by
`bench/bgp.py --only hardfail`, not asserted here. The helpers for the hard failure
(`set_peer_bfd`, `HardFailure`, `readmit`, ...) serve that bench too.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from lab import netns as nsops
from lab import router as rtr
from lab import topology as topo
from lbspeaker.api.constants import API_VERSION, NAMESPACE
from lbspeaker.kube.resources import BFDPROFILES, BGPPEERS, PODS, SERVICES
from lbspeaker.kube.rest import Rest
from tests.e2e import test_speaker_bgp as sb
from tests.e2e.conftest import Lab
from tests.e2e.test_bgp_peers_lifecycle import exabgps

pytestmark = pytest.mark.e2e

NODE = "kind-worker"
PROFILE = "lab-bfd"  # as the lab router's: 300 ms x 3
HARDFAIL_IP = "198.51.100.121"


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    return sb.wait_for(what, check, timeout)


class NodeBFD:
    """`python -m lbspeaker.bfd` in a node namespace, its state changes on a queue."""

    def __init__(self, node: str, peer: str) -> None:
        argv = [sys.executable, "-m", "lbspeaker.bfd", "--peer", peer, "--duration", "120"]
        self.proc = nsops.popen_in(node, argv, stdout=subprocess.PIPE, text=True)
        self.changes: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.changes.put(json.loads(line))

    def wait(self, state: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            change = self.changes.get(timeout=max(deadline - time.monotonic(), 0.01))
            if change["to"] == state:
                return change

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            nsops.stop_popen(self.proc, timeout=10)


def bfd_profile(name: str = PROFILE) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "BFDProfile",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"receiveInterval": rtr.BFD_INTERVAL_MS, "transmitInterval": rtr.BFD_INTERVAL_MS,
                     "detectMultiplier": rtr.BFD_MULTIPLIER}}


def set_peer_bfd(rest: Rest, profile: str | None) -> None:
    """The lab's BGPPeer (as `bgp_config` makes it) with `spec.bfdProfile: profile`, the BFDProfile
    created first; None: the peer without bfdProfile and the profile deleted."""
    if profile:
        sb.apply(rest, BFDPROFILES, bfd_profile(profile))
    # a merge patch: a get + replace races with the status writers (409)
    rest.patch(BGPPEERS, sb.PEER, {"spec": {"bfdProfile": profile}}, NAMESPACE)
    if not profile:
        sb.delete(rest, BFDPROFILES, PROFILE, NAMESPACE)


def router_bfd(lab: Lab) -> dict[str, str]:
    """{node address: BFD state (up, down, init, ...)} as the lab router sees it."""
    return rtr.bfd_peers(lab.options["router"], rtr.RouterPaths(rtr.runtime_dir(lab.state_dir)))


def speaker_bfd_up(lab: Lab, rest: Rest, workers: dict[str, str]) -> bool:
    """Every worker's BFD session Up, as the router sees it and in the BGPPeer's status."""
    seen, st = router_bfd(lab), sb.sessions(rest)
    return all(seen.get(ip) == "up" and st.get(n, {}).get("bfd") == "Up" for n, ip in workers.items())


class HeldFor:
    """True once `check()` has been true at every poll for `seconds` in a row (a flap restarts it).

    The router's bfdd says "up" a moment before its BGP daemon has taken the BFD session on; a
    failure in that moment is caught by the hold timer instead (seen once the speakers stopped
    spinning and the test reached the cut sooner). Three detection times of steady "up" is past it."""

    def __init__(self, check: Callable[[], bool], seconds: float) -> None:
        self.check, self.seconds = check, seconds
        self.since: float | None = None

    def __call__(self) -> bool:
        if not self.check():
            self.since = None
            return False
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        return now - self.since >= self.seconds


def bridge_port(lab: Lab, node: str) -> str:
    """The node's port on the lab bridge (in the bridge namespace)."""
    return f"v-{topo.node_short(next(n.index for n in lab.plan.nodes if n.name == node))}"


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
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


class HardFailure:
    """A node that dies without a word: its bridge port cut, its speaker and ExaBGPs (and what runs
    below them) frozen with SIGSTOP, so no FIN, NOTIFICATION or BFD AdminDown leaves it. `cut()`
    returns the monotonic time just before the cut; `restore()` (idempotent; also on leaving the
    `with` block) sends SIGCONT and brings the port back."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.lab, self.node, self.port = lab, node, bridge_port(lab, node)
        self.frozen: list[int] = []
        self.cut_at: float | None = None

    def cut(self) -> float:
        pids = {sb.speaker_pid(self.lab, self.node), *exabgps(self.node)}
        frozen = sorted({d for p in pids for d in descendants(p)})
        t0 = time.monotonic()
        self.cut_at = t0
        nsops.run_in(topo.BRIDGE_NETNS, ["ip", "link", "set", self.port, "down"])
        self.frozen = frozen
        signal_all(frozen, signal.SIGSTOP)
        return t0

    def restore(self) -> None:
        if self.cut_at is None:
            return
        self.cut_at = None
        try:
            nsops.run_in(topo.BRIDGE_NETNS, ["ip", "link", "set", self.port, "up"])
        finally:
            signal_all(self.frozen, signal.SIGCONT)

    def __enter__(self) -> HardFailure:
        self.cut()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()


def readmit(lab: Lab, node: str) -> None:
    """Let the router take the node back at once: BIRD keeps a protocol that failed in its
    `error wait time` (60 s, doubling up to 300 s on repeated failures) before it accepts the
    node again, so its protocol is restarted; FRR reconnects by itself."""
    if lab.options["router"] == "bird":
        paths = rtr.RouterPaths(rtr.runtime_dir(lab.state_dir))
        rtr.birdc(paths, f"restart {rtr.bird_protocol_name(node, 4)}")


def last_reset(lab: Lab, node: str) -> str:
    """The router's own words for why the node's BGP session last went down."""
    paths = rtr.RouterPaths(rtr.runtime_dir(lab.state_dir))
    ip = sb.worker_ips(lab)[node]
    if lab.options["router"] == "frr":
        peer = json.loads(rtr.vtysh(paths, f"show bgp neighbors {ip} json") or "{}").get(ip) or {}
        return " / ".join(str(peer[k]) for k in ("lastResetDueTo", "lastNotificationReason") if peer.get(k))
    text = rtr.birdc(paths, f"show protocols all {rtr.bird_protocol_name(node, 4)}")
    return " / ".join(line.strip() for line in text.splitlines() if "error" in line.lower())


def reset_by_bfd(reason: str) -> bool:
    """Whether `last_reset` names BFD (FRR "BFD down received", BIRD "BFD session down") and not
    the hold timer."""
    return "bfd" in reason.lower() and "hold" not in reason.lower()


@pytest.fixture(params=["frr", "bird"])
def bfd_lab(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, str]]:
    if not rtr.available(request.param):
        pytest.skip(f"{request.param} is not installed")
    lab.up(router=request.param, bfd=True)
    try:
        yield lab, request.param
    finally:
        lab.up(router="frr", bfd=False)


def test_session_up_and_failures_seen_by_the_router(bfd_lab: tuple[Lab, str]) -> None:
    lab, kind = bfd_lab
    paths = rtr.RouterPaths(rtr.runtime_dir(lab.state_dir))
    node = next(n for n in lab.plan.nodes if n.name == NODE)

    def router_state() -> str:
        return rtr.bfd_peers(kind, paths).get(node.ipv4, "absent")

    bfd = NodeBFD(NODE, topo.ROUTER_IP_V4)
    try:
        bfd.wait("UP")
        wait_until("router sees the session Up", lambda: router_state() == "up")

        # A frozen process sends nothing (no AdminDown): the router must time the session out.
        os.kill(bfd.proc.pid, signal.SIGSTOP)
        wait_until("router notices the frozen node", lambda: router_state() != "up", timeout=10)
        os.kill(bfd.proc.pid, signal.SIGCONT)
        wait_until("session back Up after SIGCONT", lambda: router_state() == "up", timeout=20)

        # A cut link: the node's bridge port goes down.
        port = f"v-{topo.node_short(node.index)}"
        nsops.run_in(topo.BRIDGE_NETNS, ["ip", "link", "set", port, "down"])
        try:
            wait_until("router notices the cut port", lambda: router_state() != "up", timeout=10)
            assert bfd.wait("DOWN")["diag"] == "CONTROL_DETECTION_TIME_EXPIRED"
        finally:
            nsops.run_in(topo.BRIDGE_NETNS, ["ip", "link", "set", port, "up"])
        wait_until("session back Up after the port returns", lambda: router_state() == "up", timeout=20)
    finally:
        bfd.close()
    assert bfd.proc.returncode == 0


def test_speaker_bfd_takes_a_hard_failed_node_out_before_its_hold_time(bfd_lab: tuple[Lab, str]) -> None:
    lab, _kind = bfd_lab
    rest = sb.rest_for(lab)
    sb.bgp_config(rest)
    workers = sb.worker_ips(lab)
    hops, ip = set(workers.values()), workers[NODE]
    wait = sb.wait_for
    try:
        for i, node in enumerate(sorted(workers)):
            sb.apply(rest, PODS, sb.pod(f"bfdn-{i}", "bfdn", node))
        sb.apply(rest, SERVICES, sb.service("bfd-node", "bfdn", HARDFAIL_IP, "Cluster"))
        set_peer_bfd(rest, PROFILE)
        wait("ECMP via every worker", lambda: sb.fib_nexthops(HARDFAIL_IP) == hops, timeout=60)
        wait("the router sees a BFD session Up from every worker, and status.sessions[].bfd is Up, "
             "steadily for 3 s", HeldFor(lambda: speaker_bfd_up(lab, rest, workers), 3.0), timeout=40)
        assert all(s.get("state") == "Established" for s in sb.sessions(rest).values())

        with HardFailure(lab, NODE):
            # generous deadlines, only so that nothing hangs: what tells BFD from the hold timer
            # is the router's own reason for dropping the session
            wait("the router's BFD session for the node Down", lambda: router_bfd(lab).get(ip) != "up",
                 timeout=3 * sb.HOLD)
            wait("the node's next hop withdrawn", lambda: ip not in sb.fib_nexthops(HARDFAIL_IP),
                 timeout=3 * sb.HOLD)
            reason = last_reset(lab, NODE)
            assert reset_by_bfd(reason), f"the router dropped the session for another reason: {reason!r}"
            assert sb.fib_nexthops(HARDFAIL_IP) == hops - {ip}
            print(f"{NODE} dropped by the router: {reason}")

        # The node is back: its speaker's BFD (whose detection time expired while frozen) and BGP
        # come Up again and the next hop returns.
        readmit(lab, NODE)
        wait("every next hop back", lambda: sb.fib_nexthops(HARDFAIL_IP) == hops, timeout=90)
        wait("BFD Up again on every worker", lambda: speaker_bfd_up(lab, rest, workers), timeout=30)
    finally:
        set_peer_bfd(rest, None)
        sb.delete(rest, SERVICES, "bfd-node", "default")
        for i in range(len(workers)):
            sb.delete(rest, PODS, f"bfdn-{i}", "default")
