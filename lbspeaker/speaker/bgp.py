"""The speaker's BGP side: caches -> `bgp.plan` (pure) -> ExaBGP, status, Events, metrics.

Wiring (the thin shell around `lbspeaker.bgp.plan.compute_bgp_plan`):

    WatchCaches (BGPPeers, BGPAdvertisements, Communities, our ServiceBGPStatuses;
    Services, EndpointSlices, Nodes, IPAddressPools shared with the layer-2 side)
    + passwordSecret Secrets (GET, refreshed every `secret_refresh` seconds)
    + this node's interface networks (netlink)
        -> kick -> debounce -> compute_bgp_plan
        -> ExaBGPManager.set_peers / set_routes (one ExaBGP per speaker, started lazily
           when the first BGPPeer selects this node; an L2-only cluster runs none)
        -> ServiceBGPStatus per (Service, this node), BGPPeer status.sessions[node],
           Events, metrics

Isolation from layer 2: everything here runs in its own threads and never raises
into the layer-2 speaker; a BGP problem (bad BGPPeer, ExaBGP crash, unreadable
Secret, a missing CRD) is logged, reported and retried, and never touches ARP/NDP.
The BGP caches are not part of the layer-2 readiness either: BGP plans only once
its own caches have listed.

Fail-static: a watch that breaks keeps its cache; ExaBGP keeps the last routes.

Session status (`BGPPeer.status.sessions`, keyed by node): written with
`update_status` (read-modify-write, retried on 409 Conflict) only when the state
*class* changes (Established or not, or the reason), or the exact FSM state changed
and `status_min_interval` passed: a peer that is down cycles Idle/Connect/Active
every few seconds and must not flood the API server. The same rule drives Events:
`BGPSessionUp` (Normal) / `BGPSessionDown` (Warning, with the reason) on the BGPPeer,
once per transition.

Shutdown (`stop`): withdraw every route and wait for ExaBGP's acknowledgements
(the routers drop this node's next hops at once), stop ExaBGP, then remove our
ServiceBGPStatuses and session entries within a bounded budget. ExaBGP runs under
`pdeathsig`, so a SIGKILLed speaker takes its ExaBGP (and its sessions) with it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lbspeaker.api.constants import NAMESPACE
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.plan import (
    BGPAdvertisementFacts,
    BGPPlan,
    PeerFacts,
    community_aliases,
    compute_bgp_plan,
)
from lbspeaker.bgp.routes import RouteAttrs
from lbspeaker.bgp.session import PeerSession
from lbspeaker.election import NodeFacts
from lbspeaker.kube.cache import WatchCache
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    COMMUNITIES,
    ENDPOINTSLICES,
    IPADDRESSPOOLS,
    NODES,
    SECRETS,
    SERVICES,
)
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.kube.status import update_status
from lbspeaker.plan import Problem, pool_facts, services_facts
from lbspeaker.speaker.status import BGP_STATUS, OwnedStatusWriter, assigned_message, bgp_fields

log = logging.getLogger("lbspeaker.speaker.bgp")

DEFAULT_RUN_DIR = "/run/lbspeaker"


# --- pure helpers ---------------------------------------------------------------------------------------


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SessionEntry:
    """This node's entry in a BGPPeer's status.sessions."""

    state: str
    reason: str = ""
    since: str | None = None

    @property
    def established(self) -> bool:
        return self.state == "Established"

    def as_dict(self, node: str) -> dict[str, Any]:
        out: dict[str, Any] = {"node": node, "state": self.state, "reason": self.reason[:1024]}
        if self.since:
            out["since"] = self.since
        return out


def merge_session(status: Mapping[str, Any] | None, node: str, entry: SessionEntry | None) -> dict[str, Any]:
    """BGPPeer status with this node's session entry replaced (None: removed); others untouched."""
    new = dict(status or {})
    sessions = [dict(s) for s in (new.get("sessions") or []) if s.get("node") != node]
    if entry is not None:
        sessions.append(entry.as_dict(node))
    new["sessions"] = sorted(sessions, key=lambda s: str(s.get("node")))
    return new


def session_entry(session: PeerSession | None, plan_reason: str) -> SessionEntry:
    """The entry for one selected peer: its live session state, or why it is not configured."""
    if session is None:
        return SessionEntry("Idle", plan_reason or "not configured yet")
    if session.established:
        reason = ""
    elif plan_reason:  # what the plan knows (e.g. not on a node network) explains the error
        reason = plan_reason + (f" (last error: {session.reason})" if session.reason else "")
    else:
        reason = session.reason
    return SessionEntry(session.state, reason, rfc3339(session.since))


def secret_password(secret: Mapping[str, Any] | None) -> str | None:
    """The `password` key of a Secret (data base64, or stringData as some fakes keep it)."""
    if not secret:
        return None
    data = secret.get("data") or {}
    if "password" in data:
        try:
            return base64.b64decode(str(data["password"]), validate=True).decode() or None
        except (ValueError, UnicodeDecodeError):
            return None
    string_data = secret.get("stringData") or {}
    value = string_data.get("password")
    return str(value) if value is not None else None


def parse_proc_routes(route_v4: str, route_v6: str = "") -> list[str]:
    """Directly connected networks (no gateway) from /proc/net/route and /proc/net/ipv6_route."""
    import ipaddress
    import socket
    import struct

    out = []
    for line in route_v4.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or f[2] != "00000000" or f[0] == "lo":
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(f[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(f[7], 16)))
        try:
            out.append(str(ipaddress.ip_network(f"{dest}/{mask}", strict=False)))
        except ValueError:
            continue
    for line in route_v6.splitlines():
        f = line.split()
        if len(f) < 10 or f[4] != "0" * 32 or f[9] == "lo":
            continue
        plen = int(f[1], 16)
        if plen in (0, 128) or f[0].startswith("fe80") or f[0].startswith("ff"):
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(f[0]))
        out.append(str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)))
    return sorted(set(out))


def node_networks_proc() -> list[str]:
    """This network namespace's connected networks (where a TTL-1 eBGP peer can be).

    Read from /proc/net (per network namespace) rather than netlink: no extra socket,
    and nothing to import concurrently with the link watcher's pyroute2.
    """
    v4 = Path("/proc/net/route").read_text()
    try:
        v6 = Path("/proc/net/ipv6_route").read_text()
    except OSError:
        v6 = ""
    return parse_proc_routes(v4, v6)


# --- the adapter ----------------------------------------------------------------------------------------


class ManagerLike(Protocol):
    """What the adapter needs from `ExaBGPManager` (a fake in component tests)."""

    updates_total: int
    restarts: int

    def start(self) -> None: ...
    def stop(self, withdraw: bool = True, timeout: float = 3.0, grace: float = 0.2) -> None: ...
    def set_peers(self, peers: Sequence[PeerSpec]) -> Any: ...
    def set_routes(self, table: Mapping[str, Mapping[str, RouteAttrs]]) -> None: ...
    def sessions(self) -> dict[str, PeerSession]: ...
    def in_sync(self) -> bool: ...


ManagerFactory = Callable[[Path, Callable[[str, PeerSession], None]], ManagerLike]


def default_manager_factory(workdir: Path, on_change: Callable[[str, PeerSession], None]) -> ManagerLike:
    """A real ExaBGPManager whose ExaBGP dies with this process (see `pdeathsig`)."""
    from lbspeaker.bgp.exabgp import ExaBGPManager

    prefix = [sys.executable, "-m", "lbspeaker.speaker.pdeathsig", str(os.getpid()), "--"]
    return ExaBGPManager(workdir, command_prefix=prefix, on_session_change=on_change)


@dataclass
class BGPConfig:
    """Flags of the BGP side."""

    node: str
    namespace: str = NAMESPACE
    run_dir: str = DEFAULT_RUN_DIR
    ignore_exclude_lb: bool = False
    lb_class: str | None = None
    debounce: float = 0.02
    secret_refresh: float = 30.0
    status_retry: float = 2.0
    status_min_interval: float = 10.0
    cleanup_budget: float = 2.0


class BGPSpeaker:
    """This node's BGP announcements (see the module docstring).

    `services`/`slices`/`nodes`/`pools`: caches shared with the layer-2 speaker
    (None: this object creates and runs its own, e.g. when run alone in tests);
    the caller kicks `kick()` on their events. Metrics: `metrics_snapshot()`.
    """

    def __init__(
        self,
        cfg: BGPConfig,
        rest: Rest,
        *,
        services: WatchCache | None = None,
        slices: WatchCache | None = None,
        nodes: WatchCache | None = None,
        pools: WatchCache | None = None,
        status: OwnedStatusWriter,
        recorder: EventRecorder | None = None,
        manager_factory: ManagerFactory = default_manager_factory,
        node_networks: Callable[[], list[str]] | None = node_networks_proc,
    ) -> None:
        self.cfg = cfg
        self.rest = rest
        self.status = status
        self._kick = threading.Event()
        self._stop = threading.Event()
        # The plan thread starts ExaBGP, whose pdeathsig fires when *that thread* ends:
        # it must outlive ExaBGP, so it waits for this before returning.
        self._manager_done = threading.Event()
        self._apply_lock = threading.Lock()

        def kick(_t: str = "", _o: Any = None) -> None:
            self._kick.set()

        ns = cfg.namespace
        own: list[WatchCache] = []
        if services is None:
            services = WatchCache(rest, SERVICES, on_event=kick)
            own.append(services)
        if slices is None:
            slices = WatchCache(rest, ENDPOINTSLICES, on_event=kick)
            own.append(slices)
        if nodes is None:
            nodes = WatchCache(rest, NODES, on_event=kick)
            own.append(nodes)
        if pools is None:
            pools = WatchCache(rest, IPADDRESSPOOLS, namespace=ns, on_event=kick)
            own.append(pools)
        self.services, self.slices, self.nodes, self.pools = services, slices, nodes, pools
        self.peers = WatchCache(rest, BGPPEERS, namespace=ns, on_event=kick)
        self.advs = WatchCache(rest, BGPADVERTISEMENTS, namespace=ns, on_event=kick)
        self.communities = WatchCache(rest, COMMUNITIES, namespace=ns, on_event=kick)
        self.own_caches = own
        self.bgp_caches = [self.peers, self.advs, self.communities]
        self.recorder = recorder or EventRecorder(rest, "lbspeaker-speaker", host=cfg.node)
        self._own_recorder = recorder is None
        self.workdir = Path(cfg.run_dir) / "bgp" / cfg.node
        self._manager_factory = manager_factory
        self.manager: ManagerLike | None = None
        self._node_networks = node_networks
        self._networks: list[str] | None = None
        self._networks_at = 0.0
        self._passwords: dict[str, str | None] = {}  # peer -> password
        self._secrets: dict[str, tuple[str | None, float]] = {}  # Secret name -> (password, read at)
        self._peers_applied: list[PeerSpec] | None = None
        self.plan: BGPPlan | None = None
        self._problems: set[Problem] = set()
        self.plans = 0
        self.last_plan_seconds = 0.0
        self.plan_errors = 0
        self.last_plan_error: str | None = None
        # status writers
        self._status_mu = threading.Lock()
        self._status_kick = threading.Event()
        self._sess_desired: dict[str, SessionEntry] = {}
        self._sess_written: dict[str, tuple[SessionEntry, float]] = {}
        self._sess_removed: set[str] = set()
        self._event_state: dict[str, tuple[bool, str]] = {}  # peer -> (established, reason) told
        self._events_mu = threading.Lock()  # _update_sessions runs from three threads
        self.status_errors = 0
        self.last_status_error: str | None = None
        self._threads: list[threading.Thread] = []
        self._loop_alive = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        for c in [*self.own_caches, *self.bgp_caches]:
            c.start()
        for target, name in ((self._loop, "bgp-plan"), (self._status_loop, "bgp-status")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def kick(self) -> None:
        """Something in the shared caches changed: plan again (debounced)."""
        self._kick.set()

    def synced(self) -> bool:
        return all(c.synced for c in [*self.own_caches, *self.bgp_caches])

    def stop(self, cleanup: bool = True) -> None:
        """SIGTERM path: withdraw (acknowledged) and stop ExaBGP first, then the API cleanup (bounded)."""
        with self._apply_lock:
            self._stop.set()
            self._kick.set()
            mgr = self.manager
        if mgr is not None:
            t0 = time.monotonic()
            try:
                mgr.stop(withdraw=True)
                log.info("BGP: routes withdrawn and ExaBGP stopped in %.3fs", time.monotonic() - t0)
            except Exception:
                log.exception("BGP: stopping ExaBGP failed")
        self._manager_done.set()
        self._status_kick.set()
        for t in self._threads:
            t.join(timeout=2)
        if cleanup:
            t = threading.Thread(target=self._cleanup, name="bgp-cleanup", daemon=True)
            t.start()
            t.join(self.cfg.cleanup_budget)
        if self._own_recorder:
            self.recorder.close(timeout=1.0)
        for c in [*self.own_caches, *self.bgp_caches]:
            c.stop(timeout=1.0)

    def abort(self) -> None:
        """Crash simulation (tests): ExaBGP ends without withdrawing, nothing is cleaned up."""
        with self._apply_lock:
            self._stop.set()
            mgr = self.manager
        self._kick.set()
        self._status_kick.set()
        if mgr is not None:
            with contextlib.suppress(Exception):
                mgr.stop(withdraw=False, timeout=1.0)
        self._manager_done.set()
        for c in [*self.own_caches, *self.bgp_caches]:
            c.stop(timeout=1.0)

    def cleanup(self) -> None:
        """Remove our ServiceBGPStatuses and BGPPeer session entries (after `stop(cleanup=False)`)."""
        self._cleanup()

    def _cleanup(self) -> None:
        with self._status_mu:
            self._sess_desired = {}
        try:
            self._reconcile_sessions(force=True)
        except Exception:
            log.exception("BGP: status cleanup failed")

    def metrics_snapshot(self) -> dict[str, Any]:
        """What `SpeakerMetrics.attach_bgp` reads at scrape time."""
        mgr = self.manager
        sessions = mgr.sessions() if mgr is not None else {}
        counts = self.plan.prefix_count() if self.plan is not None else {}
        return {
            "sessions": {name: s.established for name, s in sessions.items()},
            "updates": mgr.updates_total if mgr is not None else 0,
            "prefixes": {name: counts.get(name, 0) for name in set(counts) | set(sessions)},
            "restarts": mgr.restarts if mgr is not None else 0,
        }

    # --- probes ---------------------------------------------------------------------------------------

    def readyz_lines(self) -> list[str]:
        """Lines for /readyz (informational: BGP problems never make the speaker unready)."""
        lines = []
        if not self.synced():
            lines.append("bgp: caches not synced: "
                         + ", ".join(c.name for c in [*self.own_caches, *self.bgp_caches] if not c.synced))
        mgr = self.manager
        if mgr is None:
            lines.append("bgp: no BGPPeer selects this node (ExaBGP not running)")
        else:
            for name, s in sorted(mgr.sessions().items()):
                lines.append(f"bgp: peer {name}: {s.state}" + (f" ({s.reason})" if s.reason else ""))
        for p in sorted(self._problems, key=lambda p: (p.kind, p.name, p.reason)):
            lines.append(f"bgp problem: {p.kind} {p.name}: {p.reason}: {p.message}")
        return lines

    # --- planning -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._plan_loop()
        finally:
            self._manager_done.wait()

    def _plan_loop(self) -> None:
        last_periodic = 0.0
        while not self._stop.is_set():
            self._loop_alive = time.monotonic()
            kicked = self._kick.wait(1.0)
            if self._stop.is_set():
                return
            if kicked:
                # Adaptive debounce: under a burst of changes (1,000 Services created) a
                # full replan per event would keep a core busy; waiting as long as the last
                # plan took caps planning at about half a core and batches the burst, while
                # a single change on a quiet cluster still goes out after `debounce`.
                self._stop.wait(max(self.cfg.debounce, min(0.5, self.last_plan_seconds)))
                self._kick.clear()
            if not self.synced():
                continue
            now = time.monotonic()
            if not kicked and now - last_periodic < 5.0:
                continue
            last_periodic = now
            try:
                self.replan()
                self.last_plan_seconds = time.monotonic() - now
            except Exception as exc:
                self.plan_errors += 1
                self.last_plan_error = repr(exc)
                log.exception("BGP planning failed; keeping the last announcements")

    def _node(self) -> dict[str, Any] | None:
        return self.nodes.get(None, self.cfg.node)

    def _inputs(self) -> dict[str, Any]:
        services = services_facts(self.services.items(), self.slices.items(), self.cfg.lb_class)
        node = self._node()
        addrs = []
        if node is not None:
            for a in (node.get("status") or {}).get("addresses") or []:
                if a.get("type") == "InternalIP" and a.get("address"):
                    addrs.append(str(a["address"]))
        peers = [PeerFacts.from_object(p) for p in self.peers.items()]
        return {
            "node_facts": NodeFacts.from_node(node) if node is not None else None,
            "services": services,
            "pools": [pool_facts(p) for p in self.pools.items()],
            "advertisements": [BGPAdvertisementFacts.from_object(a) for a in self.advs.items()],
            "peers": peers,
            "aliases": community_aliases(self.communities.items()),
            "passwords": self._resolve_passwords(peers),
            "node_addresses": addrs,
            "node_networks": self._networks_now(),
        }

    def _networks_now(self) -> list[str] | None:
        if self._node_networks is None:
            return None
        now = time.monotonic()
        if self._networks is None or now - self._networks_at > 10.0:
            try:
                self._networks = self._node_networks()
                self._networks_at = now
            except Exception as exc:
                log.warning("BGP: cannot list this node's addresses: %s", exc)
        return self._networks

    def _resolve_passwords(self, peers: Sequence[PeerFacts]) -> dict[str, str | None]:
        """passwordSecret values by peer name (GET, cached for `secret_refresh` seconds)."""
        out: dict[str, str | None] = {}
        now = time.monotonic()
        for pf in peers:
            ref = pf.secret_ref
            if ref is None:
                continue
            if ref[0] not in (None, self.cfg.namespace):
                # MetalLB's rule, and it keeps the speaker's Secret access to its own namespace
                log.warning("BGP: BGPPeer %s: passwordSecret must be in namespace %s, not %s",
                            pf.name, self.cfg.namespace, ref[0])
                out[pf.name] = None
                continue
            key = ref[1]
            cached = self._secrets.get(key)
            if cached is None or now - cached[1] > self.cfg.secret_refresh:
                try:
                    value = secret_password(self.rest.get(SECRETS, key, self.cfg.namespace))
                    if value is None:
                        log.warning("BGP: Secret %s/%s has no key 'password'", self.cfg.namespace, key)
                except ApiError as exc:
                    value = None if exc.not_found else (cached[0] if cached else None)
                    log.warning("BGP: cannot read Secret %s/%s: %s", self.cfg.namespace, key, exc)
                except OSError as exc:  # API unreachable: keep what we had (fail-static)
                    value = cached[0] if cached else None
                    log.warning("BGP: cannot read Secret %s/%s: %s", self.cfg.namespace, key, exc)
                cached = (value, now)
                self._secrets[key] = cached
            out[pf.name] = cached[0]
        return out

    def replan(self) -> BGPPlan:
        plan = compute_bgp_plan(
            self.cfg.node, ignore_exclude_label=self.cfg.ignore_exclude_lb, **self._inputs()
        )
        self.plans += 1
        with self._apply_lock:
            if not self._stop.is_set():
                self._apply(plan)
        return plan

    def _apply(self, plan: BGPPlan) -> None:
        if plan.peers and self.manager is None:
            self.manager = self._manager_factory(self.workdir, self._on_session_change)
            self.manager.set_peers(plan.peers)
            self._peers_applied = list(plan.peers)
            self.manager.start()
            log.info("BGP: started ExaBGP for %s", ", ".join(p.name for p in plan.peers))
        if self.manager is not None:
            if plan.peers != self._peers_applied:
                self.manager.set_peers(plan.peers)
                self._peers_applied = list(plan.peers)
            old = self.plan.announced if self.plan is not None else {}
            self.manager.set_routes(plan.routes)
            for key in sorted(set(plan.announced) - set(old)):
                log.info("BGP: announcing %s (%s) to %s", key, ", ".join(plan.announced[key]),
                         ", ".join(plan.service_peers.get(key, [])))
                self._service_event(key, "nodeAssigned", assigned_message(self.cfg.node, "bgp"))
            for key in sorted(set(old) - set(plan.announced)):
                log.info("BGP: withdrawing %s", key)
        self.plan = plan
        self.status.set_desired(BGP_STATUS, {k: bgp_fields(p) for k, p in plan.service_peers.items()})
        self._update_sessions()
        problems = set(plan.problems)
        for p in sorted(problems - self._problems, key=lambda p: (p.kind, p.name, p.reason)):
            log.warning("BGP: %s %s: %s: %s", p.kind, p.name, p.reason, p.message)
            self._event_for_problem(p)
        for p in sorted(self._problems - problems, key=lambda p: (p.kind, p.name, p.reason)):
            log.info("BGP: resolved: %s %s: %s", p.kind, p.name, p.reason)
        self._problems = problems
        self._status_kick.set()

    # --- sessions -------------------------------------------------------------------------------------

    def _on_session_change(self, name: str, session: PeerSession) -> None:
        """From the manager's notify thread: refresh the desired status and tell, once per transition."""
        self._update_sessions()
        self._status_kick.set()

    def _update_sessions(self) -> None:
        with self._events_mu:
            self._update_sessions_locked()

    def _update_sessions_locked(self) -> None:
        plan = self.plan
        if plan is None:
            return
        live = self.manager.sessions() if self.manager is not None else {}
        desired = {}
        for name in plan.selected_peers:
            desired[name] = session_entry(live.get(name), plan.peer_reasons.get(name, ""))
        with self._status_mu:
            self._sess_desired = desired
        for name, entry in desired.items():
            if self._stop.is_set():
                break  # our own shutdown takes the sessions down: not news
            told = self._event_state.get(name)
            now = (entry.established, "" if entry.established else entry.reason)
            if told == now or (told is None and not entry.established and not entry.reason):
                continue  # nothing new (a fresh session still connecting is not news)
            self._event_state[name] = now
            obj = self.peers.get(self.cfg.namespace, name)
            if obj is None:
                continue
            ref = {**obj, "apiVersion": BGPPEERS.api_version, "kind": "BGPPeer"}
            if entry.established:
                log.info("BGP: session to %s established", name)
                self.recorder.normal(ref, "BGPSessionUp", f"node {self.cfg.node}: session established")
            else:
                log.warning("BGP: session to %s down: %s", name, entry.reason or entry.state)
                why = entry.reason or "no reason given"
                self.recorder.warning(ref, "BGPSessionDown", f"node {self.cfg.node}: {entry.state}: {why}")
        for name in list(self._event_state):
            if name not in desired:
                del self._event_state[name]

    # --- status writers -------------------------------------------------------------------------------

    def _status_loop(self) -> None:
        while not self._stop.is_set():
            self._status_kick.wait(self.cfg.status_retry)
            self._status_kick.clear()
            if self._stop.is_set():
                return
            if not self.synced():
                continue
            try:
                self._update_sessions()
                self._reconcile_sessions()
            except Exception as exc:
                self.status_errors += 1
                self.last_status_error = repr(exc)
                log.exception("BGP status reconcile failed")

    def _reconcile_sessions(self, force: bool = False) -> bool:
        with self._status_mu:
            desired = dict(self._sess_desired)
        now = time.monotonic()
        ok = True
        names = set(desired) | set(self._sess_written)
        for name in sorted(names):
            entry = desired.get(name)
            written = self._sess_written.get(name)
            if entry is not None and written is not None:
                old, at = written
                if old == entry:
                    continue
                same_class = (old.established, old.reason) == (entry.established, entry.reason)
                if same_class and not force and now - at < self.cfg.status_min_interval:
                    continue  # only the FSM state of a down session moved: not worth a write yet
            if entry is None and written is None:
                continue
            def mutate(obj: dict[str, Any], e: SessionEntry | None = entry) -> dict[str, Any]:
                return merge_session(obj.get("status"), self.cfg.node, e)

            try:
                update_status(self.rest, BGPPEERS, self.cfg.namespace, name, mutate)
            except ApiError as exc:
                if exc.not_found:  # the BGPPeer is gone: nothing to write
                    self._sess_written.pop(name, None)
                    continue
                ok = self._status_fail(f"BGPPeer {name} status", exc)
                continue
            except OSError as exc:
                ok = self._status_fail(f"BGPPeer {name} status", exc)
                continue
            if entry is None:
                self._sess_written.pop(name, None)
            else:
                self._sess_written[name] = (entry, now)
        return ok

    def _status_fail(self, what: str, exc: Exception) -> bool:
        self.status_errors += 1
        self.last_status_error = f"{what}: {exc}"
        log.warning("BGP status: %s", self.last_status_error)
        return False

    # --- Events ---------------------------------------------------------------------------------------

    def _service_event(self, key: str, reason: str, message: str, warning: bool = False) -> None:
        ns, _, name = key.partition("/")
        obj = self.services.get(ns, name)
        if obj is None:
            return
        ref = {**obj, "apiVersion": "v1", "kind": "Service"}
        (self.recorder.warning if warning else self.recorder.normal)(ref, reason, message)

    def _event_for_problem(self, p: Problem) -> None:
        if p.kind == "Service" and p.name:
            self._service_event(p.name, p.reason, p.message, warning=True)
            return
        resource = {"BGPPeer": BGPPEERS, "BGPAdvertisement": BGPADVERTISEMENTS}.get(p.kind)
        if resource is None:
            return
        cache = self.peers if p.kind == "BGPPeer" else self.advs
        obj = cache.get(self.cfg.namespace, p.name)
        if obj is not None:
            self.recorder.warning({**obj, "apiVersion": resource.api_version, "kind": p.kind},
                                  p.reason, f"node {self.cfg.node}: {p.message}")
