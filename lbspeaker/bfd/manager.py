"""What the speaker needs from BFD: run the planned sessions, say which BGP peers are down, metrics.

`BFDManager.apply(peers, profiles)` makes the runner's sessions match `plan_sessions` (add,
reconfigure, remove) and returns the problems to report. When a session leaves Up, every BGPPeer
following it is reported down through `on_peer(peer, up=False, reason)`; when it comes back Up,
`up=True`. The speaker treats a BFD-down peer's BGP session as down (withdraws and tears it down
through its BGP protocol interface). `on_peer` runs in the BFD thread: it must only enqueue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.io import BFDRunner, SessionInfo, SessionKey
from lbspeaker.bfd.packet import State, diag_name
from lbspeaker.bfd.plan import BFDProblem, DesiredSession, plan_sessions
from lbspeaker.bfd.session import StateChange
from lbspeaker.bgp.config import PeerSpec

PeerCallback = Callable[[str, bool, str], None]


def describe(change: StateChange) -> str:
    """`Up -> Down (control detection time expired)`: for Events and status reasons."""
    diag = diag_name(change.diag).lower().replace("_", " ")
    text = f"BFD {State(change.old).name.title()} -> {State(change.new).name.title()}"
    return f"{text} ({diag})" if change.diag else text


class BFDManager:
    """Owns one BFDRunner; `apply` from the speaker's loop, `stop` on shutdown."""

    def __init__(self, on_peer: PeerCallback, runner: Callable[..., BFDRunner] = BFDRunner) -> None:
        self._on_peer = on_peer
        self._lock = threading.Lock()
        self._sessions: dict[SessionKey, DesiredSession] = {}
        self._runner = runner(self._changed)
        self._runner.start()

    def apply(
        self, peers: Iterable[PeerSpec], profiles: Mapping[str, BFDProfileSpec]
    ) -> list[BFDProblem]:
        """Make the running sessions those of the plan; returns the plan's problems."""
        desired, problems = plan_sessions(peers, profiles)
        with self._lock:
            old, self._sessions = self._sessions, desired
        for key in old.keys() - desired.keys():
            self._runner.remove(key)
        for key, session in desired.items():
            if old.get(key) != session:
                self._runner.add(key, session.config, session.min_ttl)
        return problems

    def peer_states(self) -> dict[str, str]:
        """BFD state per following BGPPeer name (for BGPPeer.status.sessions)."""
        infos = self._runner.sessions()
        with self._lock:
            sessions = dict(self._sessions)
        out: dict[str, str] = {}
        for key, session in sessions.items():
            info = infos.get(key)
            for peer in session.peers:
                out[peer] = State(info.state).name.title() if info else "Down"
        return out

    def collector(self) -> Collector:
        """Prometheus collector (MetalLB's `metallb_bfd_*` families, `lbspeaker_` prefix)."""
        return _BFDCollector(self._runner.sessions)

    def stop(self, timeout: float = 2.0) -> bool:
        """AdminDown to every peer (a planned stop is not a failure), then end the thread."""
        return self._runner.stop(timeout)

    def _changed(self, key: SessionKey, change: StateChange) -> None:
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            return
        if change.new == State.UP:
            up = True
        elif change.old == State.UP:
            up = False
        else:
            return
        for peer in session.peers:
            self._on_peer(peer, up, describe(change))


class _BFDCollector(Collector):
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
