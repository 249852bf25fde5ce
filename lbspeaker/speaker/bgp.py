"""BGP behind the speaker's `Protocol`: snapshot -> `bgp.plan.BGPPlanner` -> ExaBGP.

`BGPPlanner` is `compute_bgp_plan` redone only for the Services changed since the snapshot
planned last (`Snapshot.service_changes`).

plan: the snapshot, plus what no cache holds: the passwordSecret values
(`secrets.PeerPasswords`, GET and refreshed) and this node's connected networks (where a
TTL-1 eBGP peer can be; `netinfo.node_networks`, re-read every 10 s). `poll()` re-reads
both and asks for a replan when either moved.

apply: `PeerProcesses.set_peers` / `set_routes` (`bgp/peers.py`: one ExaBGP per BGPPeer,
so adding, changing or deleting one peer never touches another's session; started lazily
when the first BGPPeer selects this node, so an L2-only cluster runs none),
ServiceBGPStatus through the owned-status writer, `nodeAssigned` Events, problems as
Events, and this node's BGPPeer session entries (`sessions.SessionStatus`). A plan that
directly follows the one applied last and completely (`follows`) is applied by what the
planner redid alone (`BGPPlan.changed_services` / `changed_routes`: status entries via
`update_desired`, Events, and the routes via `update_routes`), so one Service changed costs
one Service, not 10,000 (bench/bgp_apply.py); any other plan (the first, one after a failed
apply or after a plan never applied) is applied whole, as layer 2 does.

BFD: the BGPPeers this node runs that name a `bfdProfile` get a BFD session each
(`bgp.plan` plans them with `bfd.plan`; `bfd.manager.BFDManager` runs them in one thread,
started with the first such peer, so a node without BFD opens no UDP 3784). When BFD leaves
Up because the path failed, the BGP session is torn down at once (ExaBGP `teardown`, Cease /
BFD Down) instead of waiting for the hold timer: ExaBGP then reconnects by itself and the
session (with its routes) comes back when the router answers. The peer's AdminDown (it
stopped BFD on purpose, RFC 5882) leaves BGP alone. Each transition is one Event
(BFDSessionUp / BFDSessionDown) and the BFD state is in the peer's `status.sessions` entry.

Isolation from layer 2: this runs on its own runner thread and never raises into the
rest of the speaker; a BGP problem (bad BGPPeer, ExaBGP crash, unreadable Secret, a
missing CRD) is logged, reported and retried, and never touches ARP/NDP.

Shutdown (`withdraw`): every ExaBGP withdraws its routes and waits for the
acknowledgements (the routers drop this node's next hops at once), then stops, all in
parallel and within `WITHDRAW_TIMEOUT` (the speaker has a grace period to exit in).
Routes to a BGPPeer with `enableGracefulRestart` are not withdrawn: its session closes
without a NOTIFICATION and the router keeps them while the speaker restarts (a rolling
update); the next speaker re-announces and then sends End-of-RIB (`bgp.exabgp`).
ExaBGP runs under `pdeathsig`, tied to its manager's supervising thread (which spawns it
and lives until that manager stops), so a SIGKILLed speaker takes its ExaBGPs (and their
sessions) with it; `finish` keeps the runner's thread until the managers are stopped.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lbspeaker.bfd.manager import BFDManager, PeerCallback, PeerEvent
from lbspeaker.bfd.profile import profiles_by_name
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.plan import BGPPlan, BGPPlanner
from lbspeaker.bgp.routes import RouteAttrs, RouteKey
from lbspeaker.bgp.session import PeerSession
from lbspeaker.facts import Problem
from lbspeaker.queueworker import consume
from lbspeaker.speaker import pdeathsig
from lbspeaker.speaker import snapshot as S
from lbspeaker.speaker.protocol import Reporter, follows
from lbspeaker.speaker.secrets import PeerPasswords
from lbspeaker.speaker.sessions import SessionStatus
from lbspeaker.speaker.snapshot import Snapshot
from lbspeaker.speaker.status import BGP_STATUS, OwnedStatusWriter, assigned_message, bgp_fields

log = logging.getLogger("lbspeaker.speaker.bgp")

DEFAULT_RUN_DIR = "/run/lbspeaker"
NETWORKS_REFRESH = 10.0
WITHDRAW_TIMEOUT = 2.0  # withdrawals acknowledged and every ExaBGP ended, on SIGTERM


def announced_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                      keys: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """(newly announced, no longer announced) Service keys, sorted: among `keys` (None: all)."""
    if keys is None:
        return sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    return (sorted(k for k in keys if k in new and k not in old),
            sorted(k for k in keys if k in old and k not in new))


def route_changes(table: Mapping[str, Mapping[str, RouteAttrs]],
                  changed: Iterable[RouteKey]) -> dict[str, dict[str, RouteAttrs | None]]:
    """{peer: {prefix: attributes now, None: withdrawn}} of the `changed` routes of `table`."""
    out: dict[str, dict[str, RouteAttrs | None]] = {}
    for peer, prefix in changed:
        out.setdefault(peer, {})[prefix] = table.get(peer, {}).get(prefix)
    return out


class ManagerLike(Protocol):
    """What BGP needs from `ExaBGPManager` (a fake in component tests)."""

    @property
    def updates_total(self) -> int: ...
    @property
    def restarts(self) -> int: ...

    def start(self) -> None: ...
    def stop(self, withdraw: bool = True, timeout: float = 2.0, grace: float = 0.2) -> None: ...
    def set_peers(self, peers: Sequence[PeerSpec]) -> Any: ...
    def set_routes(self, table: Mapping[str, Mapping[str, RouteAttrs]]) -> None: ...
    # optional (`PeerProcesses` has it): `update_routes({peer: {prefix: attrs or None}})`, changes only
    def sessions(self) -> dict[str, PeerSession]: ...
    def in_sync(self) -> bool: ...


ManagerFactory = Callable[[Path, Callable[[str, PeerSession], None]], ManagerLike]
BFDFactory = Callable[[PeerCallback], BFDManager]


def default_manager_factory(workdir: Path, on_change: Callable[[str, PeerSession], None]) -> ManagerLike:
    """One ExaBGP per BGPPeer (`bgp/peers.py`), each dying with this process (see `pdeathsig`)."""
    from lbspeaker.bgp.exabgp import ExaBGPManager, SessionCallback
    from lbspeaker.bgp.peers import PeerProcesses

    prefix = pdeathsig.prefix()

    def one(peer_dir: Path, cb: SessionCallback) -> ExaBGPManager:
        return ExaBGPManager(peer_dir, command_prefix=prefix, on_session_change=cb)

    return PeerProcesses(workdir, one, on_session_change=on_change)


@dataclass(frozen=True)
class BGPHooks:
    """What a test, a bench or the lab replaces in the BGP protocol: how ExaBGP and BFD are
    started, and where the node's own networks come from (None: no networks, no next-hop
    checks against them)."""

    manager_factory: ManagerFactory = default_manager_factory
    bfd_factory: BFDFactory = BFDManager
    node_networks: Callable[[], list[str]] | None = None


REAL_HOOKS = BGPHooks()  # ExaBGP through pdeathsig, the speaker's own BFD


class BGP:
    """The BGP protocol of one node (see the module docstring)."""

    name = "bgp"
    inputs = frozenset({S.SERVICES, S.ENDPOINTSLICES, S.NODES, S.POOLS, S.BGPADVERTISEMENTS, S.BGPPEERS,
                        S.COMMUNITIES, S.BFDPROFILES, S.SYNCED})
    caches = frozenset({S.SERVICES, S.ENDPOINTSLICES, S.NODES, S.POOLS, S.BGPADVERTISEMENTS, S.BGPPEERS,
                        S.COMMUNITIES, S.BFDPROFILES})
    poll_interval = 5.0

    def __init__(
        self,
        node: str,
        *,
        status: OwnedStatusWriter,
        sessions: SessionStatus,
        reporter: Reporter,
        passwords: PeerPasswords,
        workdir: Path,
        hooks: BGPHooks = REAL_HOOKS,
        ignore_exclude_lb: bool = False,
    ) -> None:
        self.node = node
        self.status = status
        self.sessions = sessions
        self.reporter = reporter
        self.passwords = passwords
        self.workdir = workdir
        self.ignore_exclude_lb = ignore_exclude_lb
        self._manager_factory = hooks.manager_factory
        self.manager: ManagerLike | None = None
        # ExaBGP's pdeathsig fires when the thread that started it ends: `finish` waits for this.
        self._manager_done = threading.Event()
        # Snapshots of the live sessions are taken by several threads (plan, ExaBGP's notifier,
        # the session writer): one lock makes them reach SessionStatus in the order taken.
        self._refresh_mu = threading.Lock()
        self._node_networks = hooks.node_networks
        self._networks: list[str] | None = None
        self._networks_at = 0.0
        self._peers_applied: list[PeerSpec] | None = None
        self.applied: BGPPlan | None = None  # the plan applied last
        self._completed: BGPPlan | None = None  # the plan applied last and completely
        self.problems: set[Problem] = set()
        self._planner = BGPPlanner(node, ignore_exclude_lb)
        self._planned: Snapshot | None = None  # the snapshot the planner saw last
        self._bfd_factory = hooks.bfd_factory
        self.bfd: BFDManager | None = None  # started with the first peer that names a bfdProfile
        self._bfd_events: queue.SimpleQueue[PeerEvent | None] = queue.SimpleQueue()
        self._bfd_thread: threading.Thread | None = None
        self._bfd_problems: set[Problem] = set()
        self.bfd_teardowns = 0

    # --- Protocol ---------------------------------------------------------------------------------------

    def ready(self, snap: Snapshot) -> bool:
        return self.caches <= snap.synced

    def plan(self, snap: Snapshot) -> BGPPlan:
        me = [n for n in snap.nodes if n.name == self.node]
        profiles, invalid = profiles_by_name(snap.bfd_profiles)
        plan = self._planner.plan(
            snap.service_map, snap.service_changes(self._planned), node_facts=me[0] if me else None,
            pools=snap.pools, advertisements=snap.bgp_advertisements, peers=snap.peers, aliases=snap.aliases,
            passwords=self.passwords.resolve(snap.peers), node_addresses=snap.node_addresses,
            node_networks=self._networks_now(), bfd_profiles=profiles, bfd_invalid=invalid,
        )
        self._planned = snap
        return plan

    def apply(self, plan: BGPPlan) -> None:
        previous, self._completed = self._completed, None  # None until this apply completes
        # Only what the planner redid, when `plan` directly follows the plan applied last and
        # completely (see `follows`); else every Service and route, rebuilt from the plan.
        keys = plan.changed_services if follows(previous, plan) else None
        routes = plan.changed_routes if keys is not None else None
        if plan.peers and self.manager is None:
            self.manager = self._manager_factory(self.workdir, self._on_session_change)
            self.manager.set_peers(plan.peers)
            self._peers_applied = list(plan.peers)
            self.manager.start()
            log.info("BGP: started ExaBGP for %s", ", ".join(p.name for p in plan.peers))
            routes = None  # a new manager gets every route
        if self.manager is not None:
            if plan.peers != self._peers_applied:
                self.manager.set_peers(plan.peers)
                self._peers_applied = list(plan.peers)
            old = self.applied.announced if self.applied is not None else {}
            self._hand_routes(self.manager, plan, routes)
            taken, gone = announced_changes(old, plan.announced, keys)
            for key in taken:
                log.info("BGP: announcing %s (%s) to %s", key, ", ".join(plan.announced[key]),
                         ", ".join(plan.service_peers.get(key, [])))
                self.reporter.normal("Service", key, "nodeAssigned", assigned_message(self.node, self.name))
            for key in gone:
                log.info("BGP: withdrawing %s", key)
        self._apply_bfd(plan)
        self.applied = plan
        if keys is None:
            self.status.set_desired(BGP_STATUS, {k: bgp_fields(p) for k, p in plan.service_peers.items()})
        else:
            self.status.update_desired(BGP_STATUS, {
                k: bgp_fields(plan.service_peers[k]) if k in plan.service_peers else None for k in keys})
        self._completed = plan
        self.refresh_sessions()
        problems = set(plan.problems) | self._bfd_problems
        self.reporter.problems("BGP", self.problems, problems, prefix=f"node {self.node}: ")
        self.problems = problems

    @staticmethod
    def _hand_routes(mgr: ManagerLike, plan: BGPPlan, changed: frozenset[RouteKey] | None) -> None:
        """The plan's routes to the manager: only the `changed` (peer, prefix) ones when known and
        the manager takes changes (`update_routes`; a fake may not), else the whole table."""
        update = getattr(mgr, "update_routes", None)
        if changed is None or not callable(update):
            mgr.set_routes(plan.routes)
        elif changed:
            update(route_changes(plan.routes, changed))

    def poll(self) -> bool:
        """Secrets past their refresh time, or this node's networks changed: replan."""
        before = self._networks
        return self.passwords.due() or self._networks_now(force=True) != before

    def withdraw(self) -> None:
        self.sessions.quiet()
        mgr = self.manager
        if mgr is not None:
            t0 = time.monotonic()
            try:
                mgr.stop(withdraw=True, timeout=WITHDRAW_TIMEOUT)
                log.info("BGP: routes withdrawn and ExaBGP stopped in %.3fs", time.monotonic() - t0)
            except Exception:
                log.exception("BGP: stopping ExaBGP failed")
        self._stop_bfd(admin_down=True)  # after the withdrawals: AdminDown, which the router ignores
        self._manager_done.set()

    def abort(self) -> None:
        """Crash simulation (tests): ExaBGP ends without withdrawing, BFD goes silent."""
        self.sessions.quiet()
        mgr = self.manager
        if mgr is not None:
            with contextlib.suppress(Exception):
                mgr.stop(withdraw=False, timeout=1.0)
        self._stop_bfd(admin_down=False)
        self._manager_done.set()

    def finish(self) -> None:
        if self.manager is not None:
            self._manager_done.wait()

    def readyz_lines(self) -> list[str]:
        lines = []
        mgr = self.manager
        if mgr is None:
            lines.append("bgp: no BGPPeer selects this node (ExaBGP not running)")
        else:
            for name, s in sorted(mgr.sessions().items()):
                lines.append(f"bgp: peer {name}: {s.state}" + (f" ({s.reason})" if s.reason else ""))
        if self.bfd is not None:
            for name, (state, why) in sorted(self.bfd.peer_status().items()):
                lines.append(f"bfd: peer {name}: {state}" + (f" ({why})" if why else ""))
        for p in sorted(self.problems, key=lambda p: (p.kind, p.name, p.reason)):
            lines.append(f"bgp problem: {p.kind} {p.name}: {p.reason}: {p.message}")
        return lines

    def metrics_snapshot(self) -> dict[str, Any]:
        """What `SpeakerMetrics.attach_bgp` reads at scrape time."""
        mgr = self.manager
        sessions = mgr.sessions() if mgr is not None else {}
        counts = self.applied.prefix_count() if self.applied is not None else {}
        return {
            "sessions": {name: s.established for name, s in sessions.items()},
            "updates": mgr.updates_total if mgr is not None else 0,
            "prefixes": {name: counts.get(name, 0) for name in set(counts) | set(sessions)},
            "restarts": mgr.restarts if mgr is not None else 0,
        }

    # --- sessions and networks ----------------------------------------------------------------------------

    def refresh_sessions(self) -> None:
        """This node's session entries from the last plan and ExaBGP's live sessions."""
        plan = self.applied
        if plan is None:
            return
        with self._refresh_mu:
            live = self.manager.sessions() if self.manager is not None else {}
            bfd = self.bfd.peer_status() if self.bfd is not None else {}
            self.sessions.update({n: plan.peer_reasons.get(n, "") for n in plan.selected_peers}, live, bfd)

    def _on_session_change(self, name: str, session: PeerSession) -> None:
        """From the manager's notify thread."""
        self.refresh_sessions()

    def _networks_now(self, force: bool = False) -> list[str] | None:
        if self._node_networks is None:
            return None
        now = time.monotonic()
        if self._networks is None or force or now - self._networks_at > NETWORKS_REFRESH:
            try:
                self._networks = self._node_networks()
                self._networks_at = now
            except Exception as exc:
                log.warning("BGP: cannot list this node's addresses: %s", exc)
        return self._networks

    # --- BFD ------------------------------------------------------------------------------------------------

    def bfd_sessions(self) -> dict[Any, Any]:
        """The running BFD sessions (for the lbspeaker_bfd_* metrics; empty while none runs)."""
        bfd = self.bfd
        return dict(bfd.sessions()) if bfd is not None else {}

    def _apply_bfd(self, plan: BGPPlan) -> None:
        """Run the plan's BFD sessions (starting BFD with the first one)."""
        self._bfd_problems = set()
        if plan.bfd_sessions and self.bfd is None:
            try:
                self.bfd = self._bfd_factory(self._bfd_events.put)
            except OSError as exc:  # udp/3784 taken (another BFD daemon on this node?)
                names = sorted({p for s in plan.bfd_sessions.values() for p in s.peers})
                self._bfd_problems = {Problem(
                    "BGPPeer", n, "BFDUnavailable",
                    f"BFD cannot run on node {self.node}: {exc} (UDP port 3784: is another BFD daemon "
                    "running on the node?); BGP runs on its hold timer alone") for n in names}
                return
            self._bfd_thread = threading.Thread(target=self._bfd_loop, name="bfd-events", daemon=True)
            self._bfd_thread.start()
            log.info("BFD: started for %s", ", ".join(sorted(
                {p for s in plan.bfd_sessions.values() for p in s.peers})))
        if self.bfd is not None:
            self.bfd.apply_sessions(plan.bfd_sessions)

    def _stop_bfd(self, admin_down: bool) -> None:
        bfd, self.bfd = self.bfd, None
        if bfd is not None:
            with contextlib.suppress(Exception):
                bfd.stop(timeout=1.0, admin_down=admin_down)
        self._bfd_events.put(None)

    def _bfd_loop(self) -> None:
        """BFD transitions, off the BFD thread: tear the BGP session down, Events, status."""
        consume(self._bfd_events.get, self._on_bfd, log=log, what="BFD: handling a transition")

    def _on_bfd(self, event: PeerEvent) -> None:
        if self.sessions.is_quiet:
            return  # our own shutdown
        where = f"node {self.node}: "
        if event.up:
            log.info("BFD: %s: %s", event.peer, event.reason)
            self.reporter.normal("BGPPeer", event.peer, "BFDSessionUp", where + event.reason)
        elif event.failure:
            mgr = self.manager
            live = mgr.sessions().get(event.peer) if mgr is not None else None
            teardown = getattr(mgr, "teardown", None)  # ExaBGPManager has it; a fake may not
            torn = bool(live and live.established and callable(teardown) and teardown(event.peer))
            self.bfd_teardowns += int(torn)
            what = "BGP session torn down" if torn else "BGP session treated as down (it was not up)"
            log.warning("BFD: %s: %s: %s", event.peer, event.reason, what)
            self.reporter.warning("BGPPeer", event.peer, "BFDSessionDown", f"{where}{event.reason}: {what}")
        else:
            log.info("BFD: %s: %s", event.peer, event.reason)
            self.reporter.normal("BGPPeer", event.peer, "BFDSessionDown", where + event.reason)
        self.refresh_sessions()
