"""BFD in the speaker against the lab API server: a BGPPeer with `bfdProfile` gets a BFD session
(a second BFDRunner on loopback plays the router), its state reaches `status.sessions`, metrics
and Events once per transition, and when the router goes silent the BGP session is torn down.
ExaBGP is the fake manager of test_speaker_bgp (with a recorded `teardown`)."""

from __future__ import annotations

import queue
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lbspeaker.bfd.io import BFDRunner, SessionKey
from lbspeaker.bfd.manager import BFDManager, PeerCallback
from lbspeaker.bfd.packet import State
from lbspeaker.bfd.session import SessionConfig
from lbspeaker.bgp.session import PeerSession
from lbspeaker.kube.resources import BFDPROFILES, BGPPEERS
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.links import LinkInfo
from lbspeaker.speaker.bgp import BGPHooks
from lbspeaker.speaker.main import Config, Speaker
from tests.component.test_bfd_io import free_port
from tests.component.test_speaker import FakeAnnouncer
from tests.component.test_speaker_bgp import NODE, NS, FakeManager, events, peer_sessions
from tests.component.test_speaker_bgp import rest as rest
from tests.helpers import wait_for

pytestmark = pytest.mark.component

ROUTER = "127.0.0.1"  # the BGPPeer's peerAddress in the `rest` fixture
NODE_IP = "127.0.0.11"  # node-a's InternalIP there
# 300 ms x 3, the defaults: faster timers flap on a busy CI machine
ROUTER_BFD = SessionConfig(desired_min_tx_us=300_000, required_min_rx_us=300_000, detect_mult=3)


class TeardownManager(FakeManager):
    """The fake ExaBGP, with ExaBGPManager's `teardown`: the session goes Idle as ExaBGP reports it."""

    def __init__(self, workdir: Path, on_change: Callable[[str, PeerSession], None]) -> None:
        super().__init__(workdir, on_change)
        self.teardowns: list[str] = []

    def teardown(self, name: str, subcode: int = 10) -> bool:
        self.teardowns.append(name)
        self.set_session(name, "Idle", f"we sent NOTIFICATION Cease / subcode {subcode}")
        return True


@pytest.fixture
def bfd_speaker(rest: Rest, tmp_path: Path) -> Iterator[tuple[Speaker, list[TeardownManager], BFDRunner]]:
    port = free_port(NODE_IP)
    managers: list[TeardownManager] = []

    def factory(workdir: Path, on_change: Callable[[str, PeerSession], None]) -> TeardownManager:
        managers.append(TeardownManager(workdir, on_change))
        return managers[-1]

    def bfd_factory(on_peer: PeerCallback) -> BFDManager:
        return BFDManager(on_peer, runner=lambda cb: BFDRunner(cb, port=port, peer_port=port,
                                                                listen_v4=NODE_IP, listen_v6=None))

    changes: queue.Queue[Any] = queue.Queue()
    router = BFDRunner(lambda k, c: changes.put(c), port=port, peer_port=port, listen_v4=ROUTER,
                       listen_v6=None)
    router.start()
    router.add(SessionKey(NODE_IP, ROUTER), ROUTER_BFD)
    cfg = Config(node=NODE, lease_duration=3, renew_interval=0.5, heartbeat_port=0,
                 metrics_addr="127.0.0.1:0", run_dir=str(tmp_path / "run"))
    spk = Speaker(cfg, rest, FakeAnnouncer(), list_links=lambda: [LinkInfo("eth0", 2)], watch_links=False,
                  bgp_hooks=BGPHooks(factory, bfd_factory, lambda: ["127.0.0.11/8"]))
    spk.start()
    yield spk, managers, router
    if not spk._stop.is_set():
        spk.stop(cleanup_budget_s=0.5)
    router.stop()


def entry(rest: Rest) -> dict[str, Any]:
    return next((s for s in peer_sessions(rest) if s["node"] == NODE), {})


def set_peer(rest: Rest, **spec: Any) -> None:
    """Change the BGPPeer's spec (retried: the speaker writes its status meanwhile)."""
    def attempt() -> bool:
        obj = rest.get(BGPPEERS, "router", NS)
        obj["spec"].update(spec)
        obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}  # None: remove the field
        try:
            rest.replace(BGPPEERS, obj)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    wait_for(attempt, timeout=10)


def test_bfd_follows_the_peer_and_tears_bgp_down(
    rest: Rest, bfd_speaker: tuple[Speaker, list[TeardownManager], BFDRunner]
) -> None:
    spk, managers, router = bfd_speaker
    wait_for(lambda: managers and managers[0].peers, timeout=10)
    mgr = managers[0]
    mgr.set_session("router", "Established")
    wait_for(lambda: entry(rest).get("state") == "Established", timeout=10, message=lambda: f"{entry(rest)}")

    # A profile that does not exist: said on the BGPPeer, BGP carries on without BFD.
    set_peer(rest, bfdProfile="fast", sourceAddress=NODE_IP)
    missing = wait_for(lambda: events(rest, NS, "BFDProfileNotFound"), timeout=10)
    text = missing[0]["message"]
    assert "'fast' does not exist" in text and "create the BFDProfile" in text
    assert spk.bgp.bfd is None and "bfd" not in entry(rest)

    # The profile appears (with echoMode, which is reported, not honoured): BFD comes Up.
    rest.create(BFDPROFILES, {"metadata": {"name": "fast", "namespace": NS},
                              "spec": {"echoMode": True}}, NS)
    wait_for(lambda: events(rest, NS, "EchoModeNotSupported"), timeout=10)
    wait_for(lambda: entry(rest).get("bfd") == "Up", timeout=10, message=lambda: f"{entry(rest)}")
    wait_for(lambda: events(rest, NS, "BFDSessionUp"), timeout=10)
    assert router.sessions()[SessionKey(NODE_IP, ROUTER)].state == State.UP
    port = spk.health.port  # type: ignore[union-attr]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert f'lbspeaker_bfd_session_up{{peer="{ROUTER}"}} 1.0' in resp.read().decode()

    # The router goes silent (no AdminDown): BFD Down tears the BGP session down, once.
    assert router.stop(admin_down=False)
    wait_for(lambda: mgr.teardowns == ["router"], timeout=10, message=lambda: f"{mgr.teardowns}")
    down = wait_for(lambda: [s for s in [entry(rest)] if s.get("bfd") == "Down" and s["state"] == "Idle"],
                    timeout=10, message=lambda: f"{entry(rest)}")
    assert down[0]["reason"].startswith("BFD Up -> Down (control detection time expired)")
    (ev,) = wait_for(lambda: events(rest, NS, "BFDSessionDown"), timeout=10)
    assert ev["type"] == "Warning" and "BGP session torn down" in ev["message"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert f'lbspeaker_bfd_session_up{{peer="{ROUTER}"}} 0.0' in metrics
    assert f'lbspeaker_bfd_session_down_events_total{{peer="{ROUTER}"}} 1.0' in metrics

    # The peer drops bfdProfile: the session ends, the entry no longer shows BFD.
    set_peer(rest, bfdProfile=None)
    wait_for(lambda: "bfd" not in entry(rest) and not spk.bgp.bfd_sessions(), timeout=10,
             message=lambda: f"{entry(rest)}")
    assert len(events(rest, NS, "BFDSessionDown")) == 1 and mgr.teardowns == ["router"]
