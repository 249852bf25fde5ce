"""BFD in the lab: lbspeaker's BFD on a node and the router's (FRR bfdd, BIRD bfd) come Up, and the
router notices a frozen speaker-side process and a cut bridge port (`lbspeaker-lab up --bfd`).

Speed (how fast the router drops the node) is measured in bench/bfd.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab import netns as nsops
from lab import router as rtr
from lab import topology as topo
from tests.e2e.conftest import Lab

NODE = "kind-worker"


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


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
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


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
