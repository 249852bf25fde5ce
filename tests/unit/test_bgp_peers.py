"""PeerProcesses (one ExaBGP per BGPPeer) against real ExaBGPs, loopback only (no session comes up).

The peers are loopback addresses with nothing listening: each peer is down with routes
pending, the case in which one shared ExaBGP could not reload (issue 11). Adding,
changing, deleting and re-adding one peer must never touch the other's process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.exabgp import ExaBGPManager, SessionCallback, _alive
from lbspeaker.bgp.peers import SOCKET_PATH_MAX, PeerProcesses, peer_dir_name
from lbspeaker.bgp.routes import RouteAttrs
from tests.helpers import wait_for

LOOP = {"source_address": "127.0.0.1", "router_id": "127.0.0.1", "peer_port": 1790}
A = PeerSpec("a", "127.0.0.2", 64513, 64512, **LOOP)  # type: ignore[arg-type]
B = PeerSpec("b", "127.0.0.3", 64513, 64512, **LOOP)  # type: ignore[arg-type]
ROUTES = {"a": {"198.51.100.1/32": RouteAttrs()}, "b": {"198.51.100.1/32": RouteAttrs()}}


def factory(workdir: Path, cb: SessionCallback) -> ExaBGPManager:
    return ExaBGPManager(workdir, on_session_change=cb, backoff_initial=0.2, retry_interval=0.2)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[PeerProcesses]:
    p = PeerProcesses(tmp_path / "bgp", factory)
    try:
        yield p
    finally:
        p.stop(withdraw=False, timeout=2)


def pid_of(procs: PeerProcesses, name: str) -> int | None:
    m = procs.managers().get(name)
    return m.pid if m is not None else None


def test_one_peer_changes_never_touch_the_other(procs: PeerProcesses) -> None:
    procs.set_peers([A, B])
    procs.set_routes(ROUTES)
    procs.start()
    assert wait_for(procs.in_sync, timeout=20)
    a_mgr, a_pid = procs.managers()["a"], pid_of(procs, "a")
    assert a_pid is not None and set(procs.sessions()) == {"a", "b"}

    # delete, re-add, change and re-add b again, quickly: a's ExaBGP is never replaced or restarted
    b_pids: list[int] = []
    for peers in ([A], [A, B], [A, dataclasses.replace(B, hold_time=30)], [A], [A, B]):
        procs.set_peers(peers)
        procs.set_routes({k: v for k, v in ROUTES.items() if k in {p.name for p in peers}})
        b = pid_of(procs, "b")
        if b is not None:
            b_pids.append(b)
    wait_for(lambda: pid_of(procs, "b") is not None and procs.in_sync(), timeout=30)
    assert procs.managers()["a"] is a_mgr and pid_of(procs, "a") == a_pid and a_mgr.restarts == 0
    assert a_mgr.in_sync()
    # exactly one ExaBGP for b is left: every earlier one has stopped
    b_now = pid_of(procs, "b")
    wait_for(lambda: not any(_alive(p) for p in b_pids if p != b_now), timeout=10)

    # a change ExaBGP does not see (bfdProfile) starts nothing
    started = procs.processes_started
    procs.set_peers([A, dataclasses.replace(B, bfd_profile="fast")])
    assert procs.processes_started == started and pid_of(procs, "b") == b_now

    # stop: every ExaBGP ends, none is left
    pids = [pid_of(procs, "a"), pid_of(procs, "b")]
    procs.stop(withdraw=True, timeout=2)
    assert all(p is not None and not _alive(p) for p in pids)


def test_start_ends_exabgps_a_previous_speaker_left(tmp_path: Path) -> None:
    first = PeerProcesses(tmp_path / "bgp", factory)
    first.set_peers([A])
    first.start()
    left = pid_of(first, "a")
    assert left is not None
    # the speaker dies without stopping anything (pdeathsig would end it; here it is still running)
    second = PeerProcesses(tmp_path / "bgp", factory)
    try:
        second.set_peers([B])
        second.start()
        wait_for(lambda: not _alive(left), timeout=10)
    finally:
        second.stop(withdraw=False, timeout=2)
        first.stop(withdraw=False, timeout=2)


@pytest.mark.parametrize("base, name", [
    ("/run/lbspeaker/bgp/kind-worker", "lab-router"),
    ("/run/lbspeaker/bgp/" + "n" * 63, "p" * 253),
    ("/tmp/" + "d" * 70, "router"),
])
def test_peer_dirs_keep_the_socket_path_short(base: str, name: str) -> None:
    d = peer_dir_name(Path(base), name)
    assert len(f"{base}/peers/{d}/api.sock") <= SOCKET_PATH_MAX
    assert d != peer_dir_name(Path(base), name + "x")
    if len(base) < 40:
        assert d.startswith(name[:20])
