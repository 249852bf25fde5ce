"""ExaBGPManager against a real ExaBGP, loopback only (no namespaces, no BGP session comes up).

ExaBGP takes API routes for a neighbour whose session is down (it keeps them in its
RIB until the session comes up), so the API channel, acknowledgements, restart after
SIGKILL, reload with a new peer and clean stop can be checked without any router.
The peers are loopback addresses with nothing listening.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.exabgp import ExaBGPManager, _alive, exabgp_env
from lbspeaker.bgp.routes import RouteAttrs
from tests.helpers import wait_for

A = PeerSpec(
    "a", "127.0.0.2", 64513, 64512, source_address="127.0.0.1", router_id="127.0.0.1", peer_port=1790
)
B = PeerSpec(
    "b", "127.0.0.3", 64513, 64512, source_address="127.0.0.1", router_id="127.0.0.1", peer_port=1790
)


@pytest.fixture
def manager(tmp_path: Path):
    m = ExaBGPManager(tmp_path / "bgp", backoff_initial=0.2, retry_interval=0.2)
    try:
        yield m
    finally:
        m.stop(withdraw=False, timeout=2)


def test_announce_restart_reload_stop(manager: ExaBGPManager) -> None:
    changes: list[str] = []
    manager.on_session_change = lambda name, s: changes.append(f"{name}:{s.state}:{s.reason}")
    manager.set_peers([A])
    manager.start()
    manager.announce("a", "198.51.100.1/32", RouteAttrs(100, ("65000:1",), ("1:2:3",)))
    manager.announce("a", "198.51.100.2/32")
    assert manager.wait_synced(20), list(manager.log_tail)[-10:]
    assert manager.updates_total == 2 and manager.errors_total == 0
    relay = manager.relay_pid
    assert relay is not None and _alive(relay)

    # SIGKILL: noticed, restarted with back-off, everything announced again
    old = manager.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: any("ExaBGP exited" in c for c in changes), timeout=5)
    wait_for(lambda: manager.pid not in (None, old), timeout=10)
    assert manager.wait_synced(20)
    assert manager.restarts == 1 and manager.updates_total == 4
    wait_for(lambda: relay is not None and not _alive(relay), timeout=5)  # the old relay left with its ExaBGP

    # a new peer by reload: its routes are retried until ExaBGP has loaded it. Peer a is
    # down with routes pending, so ExaBGP may drop a SIGUSR1 (measured): the manager
    # notices the missing "loaded new configuration", signals again, and restarts it as a
    # last resort.
    manager.set_peers([A, B])
    manager.announce("b", "198.51.100.3/32")
    assert manager.wait_synced(20)
    assert manager.reloads == 1 and manager.forced_restarts <= 1 and manager.pid not in (None, old)
    assert set(manager.sessions()) == {"a", "b"}

    # the relay dies: ExaBGP respawns it, the manager accepts it and re-sends everything
    relay, updates = manager.relay_pid, manager.updates_total
    assert relay is not None
    os.kill(relay, signal.SIGKILL)
    wait_for(lambda: manager.relay_pid not in (None, relay), timeout=15)
    assert manager.wait_synced(20)
    assert manager.updates_total == updates + 3

    # routes for an unknown peer are kept but not sent
    manager.announce("nobody", "198.51.100.9/32")
    assert manager.wait_synced(5)

    pid, relay = manager.pid, manager.relay_pid
    manager.stop()  # bounded by its own timeouts
    assert manager.pid is None and pid is not None and not _alive(pid)
    assert relay is not None and not _alive(relay)
    assert not manager.socket_path.exists()


def test_start_ends_an_exabgp_left_by_a_previous_run(tmp_path: Path) -> None:
    m = ExaBGPManager(tmp_path / "bgp")
    m.set_peers([A])
    env = dict(os.environ, **exabgp_env())
    argv = [sys.executable, "-m", "exabgp", "server", str(m.config_path)]
    leftover = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        m.pid_path.write_text(f"{leftover.pid}\n")
        time.sleep(0.5)
        m.start()
        assert leftover.wait(5) is not None
        assert m.pid not in (None, leftover.pid)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
        m.stop(withdraw=False, timeout=2)


def test_teardown_keeps_acknowledgements_in_step(manager: ExaBGPManager) -> None:
    """BFD's teardown is one more API command: its `done` must not be taken for a route's."""
    assert not manager.teardown("a")  # not running: nothing to tear down
    manager.set_peers([A])
    manager.start()
    wait_for(lambda: manager.connected, timeout=30, message="ExaBGP API never connected")
    assert manager.teardown("a") and not manager.teardown("nobody")
    manager.announce("a", "198.51.100.7/32")
    assert manager.wait_synced(20) and manager.errors_total == 0
