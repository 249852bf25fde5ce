"""What the speaker needs from BFD: run the planned sessions, say which BGP peers are down, metrics.

`BFDManager.apply_sessions(desired)` makes the runner's sessions those of a plan
(`bfd.plan.plan_sessions`: add, reconfigure, remove). When a session changes state in a way BGP
cares about, every BGPPeer following it gets a `PeerEvent` through `on_peer`:

* leaving Up because the path failed (detection time expired, the peer said Down): `up=False`,
  `failure=True`: the speaker treats the BGP session as down (tears it down at once);
* leaving Up because the peer said AdminDown (RFC 5882 3.2: it stopped BFD on purpose):
  `up=False`, `failure=False`: reported, but BGP is left alone;
* entering Up: `up=True`.

`on_peer` runs in the BFD thread: it must only enqueue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.io import BFDRunner, SessionInfo, SessionKey
from lbspeaker.bfd.packet import State, diag_name
from lbspeaker.bfd.plan import BFDProblem, DesiredSession, plan_sessions
from lbspeaker.bfd.session import StateChange
from lbspeaker.bgp.config import PeerSpec


@dataclass(frozen=True)
class PeerEvent:
    """A BFD transition as one following BGPPeer sees it."""

    peer: str
    up: bool
    reason: str  # `describe(change)`
    failure: bool = False  # left Up because the path failed (not the peer's AdminDown)


PeerCallback = Callable[[PeerEvent], None]


def describe(change: StateChange) -> str:
    """`BFD Up -> Down (control detection time expired)`: for Events and status reasons."""
    diag = diag_name(change.diag).lower().replace("_", " ")
    text = f"BFD {state_name(change.old)} -> {state_name(change.new)}"
    if change.peer_admin_down:
        return f"{text} (the peer stopped BFD: AdminDown; BGP is left alone)"
    return f"{text} ({diag})" if change.diag else text


def state_name(state: int) -> str:
    """Up, Down, Init, AdminDown: the spelling of status and Events."""
    return "AdminDown" if state == State.ADMIN_DOWN else State(state).name.title()


def peer_events(peers: Iterable[str], change: StateChange) -> list[PeerEvent]:
    """What one state change means to the BGPPeers following the session (pure)."""
    if change.new == State.UP:
        return [PeerEvent(p, True, describe(change)) for p in peers]
    if change.old == State.UP:
        return [PeerEvent(p, False, describe(change), change.failure) for p in peers]
    return []  # Down <-> Init: the session was not Up, BGP never relied on it


class BFDManager:
    """Owns one BFDRunner; `apply_sessions` from the speaker's BGP thread, `stop` on shutdown."""

    def __init__(self, on_peer: PeerCallback, runner: Callable[..., BFDRunner] = BFDRunner) -> None:
        self._on_peer = on_peer
        self._lock = threading.Lock()
        self._sessions: dict[SessionKey, DesiredSession] = {}
        self._reasons: dict[SessionKey, str] = {}  # last transition, for status
        self._runner = runner(self._changed)
        self._runner.start()

    def apply(
        self, peers: Iterable[PeerSpec], profiles: Mapping[str, BFDProfileSpec]
    ) -> list[BFDProblem]:
        """Plan and apply in one go (tools and tests); returns the plan's problems."""
        desired, problems = plan_sessions(peers, profiles)
        self.apply_sessions(desired)
        return problems

    def apply_sessions(self, desired: Mapping[SessionKey, DesiredSession]) -> None:
        """Make the running sessions exactly `desired` (unchanged ones are left alone)."""
        with self._lock:
            old, self._sessions = self._sessions, dict(desired)
            for key in old.keys() - desired.keys():
                self._reasons.pop(key, None)
        for key in old.keys() - desired.keys():
            self._runner.remove(key)
        for key, session in desired.items():
            prev = old.get(key)
            if prev is None or (prev.config, prev.min_ttl) != (session.config, session.min_ttl):
                self._runner.add(key, session.config, session.min_ttl)

    def peer_states(self) -> dict[str, str]:
        """BFD state per following BGPPeer name (for BGPPeer.status.sessions)."""
        return {peer: state for peer, (state, _reason) in self.peer_status().items()}

    def peer_status(self) -> dict[str, tuple[str, str]]:
        """{BGPPeer: (BFD state, last transition text)}; a session not started yet is Down."""
        infos = self._runner.sessions()
        with self._lock:
            sessions = dict(self._sessions)
            reasons = dict(self._reasons)
        out: dict[str, tuple[str, str]] = {}
        for key, session in sessions.items():
            info = infos.get(key)
            state = state_name(info.state) if info else "Down"
            for peer in session.peers:
                out[peer] = (state, reasons.get(key, ""))
        return out

    def sessions(self) -> dict[SessionKey, SessionInfo]:
        return self._runner.sessions()

    def collector(self) -> Collector:
        """Prometheus collector (MetalLB's `metallb_bfd_*` families, `lbspeaker_` prefix)."""
        return BFDCollector(self._runner.sessions)

    def stop(self, timeout: float = 2.0, admin_down: bool = True) -> bool:
        """AdminDown to every peer (a planned stop is not a failure), then end the thread.
        `admin_down=False`: go silent, as a crash would (tests)."""
        return self._runner.stop(timeout, admin_down=admin_down)

    def _changed(self, key: SessionKey, change: StateChange) -> None:
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return
            self._reasons[key] = describe(change)
        for event in peer_events(session.peers, change):
            self._on_peer(event)


class BFDCollector(Collector):
    """`lbspeaker_bfd_*` from a sessions() callable (which may return nothing: no BFD runs)."""

    def __init__(self, sessions: Callable[[], Mapping[SessionKey, SessionInfo]]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Any]:
        infos = sorted(self._sessions().items(), key=lambda kv: kv[0].peer)
        up = GaugeMetricFamily("lbspeaker_bfd_session_up", "1 while the BFD session is Up", labels=["peer"])
        families = {
            name: CounterMetricFamily(f"lbspeaker_bfd_{name}", doc, labels=["peer"])
            for name, doc in (
                ("control_packet_input", "BFD control packets received and accepted by a session"),
                ("control_packet_output", "BFD control packets sent"),
                ("session_up_events", "Times the session came Up"),
                ("session_down_events", "Times the session left Up"),
            )
        }
        for key, info in infos:
            up.add_metric([key.peer], 1.0 if info.state == State.UP else 0.0)
            families["control_packet_input"].add_metric([key.peer], float(info.packets_in))
            families["control_packet_output"].add_metric([key.peer], float(info.packets_out))
            families["session_up_events"].add_metric([key.peer], float(info.up_events))
            families["session_down_events"].add_metric([key.peer], float(info.down_events))
        yield up
        yield from families.values()
