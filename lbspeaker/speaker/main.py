"""lbspeaker-speaker: makes LoadBalancer IPs reachable in layer 2 (ARP/NDP) from one node per IP,
and over BGP (ExaBGP) from every selected node.

The one loop (`Speaker._loop`), the thin shell around the pure plans:

    WatchCaches (Services, EndpointSlices, Nodes, IPAddressPools, L2Advertisements,
    BGPAdvertisements, BGPPeers, Communities, BFDProfiles, kube-system/kube-proxy ConfigMap)
        -> `snapshot.FactsIndex`: each event is read into facts; only an event whose facts
           changed wakes the loop (a Lease renewal, a Node heartbeat, a status write does not)
    + Lease cache, heartbeats -> membership (live speakers); netlink link events -> links
        -> debounce (20 ms quiet, at most 100 ms under a burst) -> one `Snapshot` (only when
           an input moved)
        -> each protocol's `Runner` (own thread, newest snapshot wins; skipped when none of
           the protocol's inputs moved):
             layer2.Layer2: compute_plan -> Announcer.set_owned (GARP on take, silence at
                 once on loss), ServiceL2Status, nodeAssigned, nodeProblems, strictARP
             bgp.BGP: compute_bgp_plan -> ExaBGP set_peers/set_routes, BFD sessions,
                 ServiceBGPStatus, nodeAssigned, BGPPeer session entries
        -> one `status.OwnedStatusWriter` thread for both status kinds; Events and problems
           through `protocol.Reporter`, which also feeds the ConfigurationState `speaker-<node>`
           (`configstate.SpeakerConfigState`, its own thread)

BGP can never stall layer 2: each protocol plans and applies on its own thread.

Fail-static: caches never empty themselves when a watch breaks, a failing plan keeps the
last applied announcements, and membership freezes Lease judgement while our own API
view is stale (see `membership.py`). Nothing is planned before every layer-2 cache has
listed once, so a speaker that starts while the API is down announces nothing rather
than a guess; BGP also waits for its own caches (BGPPeers, BGPAdvertisements,
Communities), which are not part of the speaker's readiness.

SIGTERM: stop answering (announcer emptied) while BGP withdraws every route (in
parallel, acknowledged by ExaBGP), heartbeat LEAVING, release the Lease, remove our
ServiceL2Statuses / ServiceBGPStatuses / BGPPeer session entries (best effort), exit;
every step against one deadline (`--shutdown-timeout`, 3 s, below the DaemonSet's 5 s
grace period), and a watchdog `os._exit`s `EXIT_MARGIN` after it whatever still runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from lbspeaker import netinfo
from lbspeaker.api.constants import NAMESPACE, SPEAKER_NAME
from lbspeaker.facts import read_node
from lbspeaker.health import HealthServer
from lbspeaker.kube import memberlist
from lbspeaker.kube.cache import WatchCache, identity
from lbspeaker.kube.client import Timeouts
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.lease import LeaseLock
from lbspeaker.kube.resources import (
    BFDPROFILES,
    BGPADVERTISEMENTS,
    BGPPEERS,
    COMMUNITIES,
    CONFIGMAPS,
    ENDPOINTSLICES,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    LEASES,
    NODES,
    SECRETS,
    SERVICEBGPSTATUSES,
    SERVICEL2STATUSES,
    SERVICES,
)
from lbspeaker.kube.rest import Rest
from lbspeaker.links import LinkInfo
from lbspeaker.plan import Plan
from lbspeaker.speaker import pdeathsig, strictarp
from lbspeaker.speaker import snapshot as S
from lbspeaker.speaker.bgp import BGP, DEFAULT_RUN_DIR, REAL_HOOKS, BGPHooks
from lbspeaker.speaker.configstate import SpeakerConfigState
from lbspeaker.speaker.heartbeat import DEFAULT_PORT, Heartbeater, PeerState
from lbspeaker.speaker.layer2 import AnnouncerLike, Enforcer, Layer2
from lbspeaker.speaker.membership import Membership, lease_name
from lbspeaker.speaker.metrics import SpeakerMetrics
from lbspeaker.speaker.nodeproblems import NodeProblemsWriter
from lbspeaker.speaker.protocol import Reporter, Runner
from lbspeaker.speaker.secrets import PeerPasswords
from lbspeaker.speaker.sessions import SessionStatus
from lbspeaker.speaker.snapshot import FactsIndex, Snapshot, readings
from lbspeaker.speaker.status import BGP_STATUS, L2_STATUS, OwnedStatusWriter, node_selector

# Speakers run with hostNetwork, where the controller's 7472 may be bound on the same node: 7473 for
# metrics and probes (and 7474/udp for heartbeats).
DEFAULT_METRICS_ADDR = "0.0.0.0:7473"

log = logging.getLogger("lbspeaker.speaker")
# past the shutdown deadline, this long for what cannot be bounded (interpreter exit), then os._exit
EXIT_MARGIN = 1.0


@dataclass
class Config:
    """Everything the flags set (defaults = the documented ones)."""

    node: str
    namespace: str = NAMESPACE
    lease_duration: int = 10
    renew_interval: float = 2.0
    heartbeat_port: int = DEFAULT_PORT
    heartbeat_bind: str = ""
    heartbeat_interval: float = 0.2
    heartbeat_timeout: float = 1.0
    heartbeat_key_delay: float = 10.0
    heartbeat_sender: str = "process"  # "process": `hbsender`; "thread": from the speaker itself
    metrics_addr: str = DEFAULT_METRICS_ADDR
    interfaces: list[str] = field(default_factory=list)
    ignore_exclude_lb: bool = False
    enforce_strict_arp: bool = False
    lb_class: str | None = None
    debounce: float = 0.02
    coalesce: float = 0.1  # under a burst of events, one snapshot at least this often
    sync_timeout: float = 60.0
    run_dir: str = DEFAULT_RUN_DIR
    shutdown_budget: float = 3.0  # SIGTERM -> exit; the DaemonSet's grace period is 5 s


class Deadline:
    """Seconds left until a fixed point in time (monotonic clock)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._start = clock()
        self.at = self._start + seconds

    def left(self, cap: float = float("inf")) -> float:
        """What is left (never below 0), at most `cap`."""
        return max(0.0, min(cap, self.at - self._clock()))

    def elapsed(self) -> float:
        return self._clock() - self._start


def bounded(what: str, fn: Callable[[], Any], seconds: float) -> bool:
    """Run `fn` on a daemon thread and wait at most `seconds`; False (logged) if it overran."""
    t = threading.Thread(target=fn, name=f"stop-{what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        log.warning("shutdown: %s still running after %.1fs: not waiting for it", what, seconds)
        return False
    return True


def sender_command() -> list[str]:
    """`hbsender`, killed with this process (`pdeathsig`): a SIGKILLed speaker must go silent."""
    return [*pdeathsig.prefix(), sys.executable, "-m", "lbspeaker.speaker.hbsender"]


def node_addresses(node: Mapping[str, Any]) -> list[str]:
    """InternalIP (else ExternalIP) addresses of a Node dict: where its speaker's heartbeats go."""
    facts = read_node(node)
    return list(facts.internal_ips or facts.external_ips)


class Speaker:
    """One node's speaker: caches, membership, the loop, both protocols, status, metrics."""

    def __init__(
        self,
        cfg: Config,
        rest: Rest,
        announcer: AnnouncerLike,
        list_links: Callable[[], list[LinkInfo]] | None = None,
        watch_links: bool = True,
        enforce: Enforcer | None = None,
        bgp_hooks: BGPHooks = REAL_HOOKS,
    ) -> None:
        self.metrics = SpeakerMetrics(cfg.node)  # first: every part built below reports to it
        self.cfg = cfg
        self.rest = rest
        self.announcer = announcer
        self._list_links = list_links
        self._watch_links = watch_links
        self.metrics.attach_announcer(announcer.totals)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._links: list[LinkInfo] | None = None
        self._links_dirty = True
        self._last_live: set[str] = set()
        self._loop_alive = 0.0

        def wake(*_: Any) -> None:
            self._wake.set()

        # Caches -> facts index: each event is read, and only a changed reading wakes the loop.
        self.index = FactsIndex(cfg.node, readings(cfg.lb_class), on_change=wake)
        on = self.index.handler
        ns = cfg.namespace
        # The index reads Services and EndpointSlices as they come; the caches keep their identity only.
        self.services = WatchCache(rest, SERVICES, on_event=on(S.SERVICES), keep=identity)
        self.slices = WatchCache(rest, ENDPOINTSLICES, on_event=on(S.ENDPOINTSLICES), keep=identity)
        self.nodes = WatchCache(rest, NODES, on_event=on(S.NODES))
        self.pools = WatchCache(rest, IPADDRESSPOOLS, namespace=ns, on_event=on(S.POOLS))
        self.advs = WatchCache(rest, L2ADVERTISEMENTS, namespace=ns, on_event=on(S.L2ADVERTISEMENTS))
        self.kube_proxy = WatchCache(
            rest, CONFIGMAPS, namespace=strictarp.CONFIGMAP_NAMESPACE,
            field_selector=f"metadata.name={strictarp.CONFIGMAP_NAME}", on_event=on(S.KUBE_PROXY),
        )
        self.bgp_peers = WatchCache(rest, BGPPEERS, namespace=ns, on_event=on(S.BGPPEERS))
        self.bgp_advs = WatchCache(rest, BGPADVERTISEMENTS, namespace=ns, on_event=on(S.BGPADVERTISEMENTS))
        self.communities = WatchCache(rest, COMMUNITIES, namespace=ns, on_event=on(S.COMMUNITIES))
        self.bfd_profiles = WatchCache(rest, BFDPROFILES, namespace=ns, on_event=on(S.BFDPROFILES))
        # Membership reads the Leases itself: an event only makes the loop look (renewals change nothing).
        self.leases = WatchCache(rest, LEASES, namespace=ns, on_event=wake)
        # Our own status objects: each event is looked at by the writer (someone else's edit is undone).
        self.statuses = WatchCache(rest, SERVICEL2STATUSES, namespace=ns,
                                   label_selector=node_selector(cfg.node),
                                   on_event=lambda t, o: self.status.observed(L2_STATUS, t, o))
        self.bgp_statuses = WatchCache(rest, SERVICEBGPSTATUSES, namespace=ns,
                                       label_selector=node_selector(cfg.node),
                                       on_event=lambda t, o: self.status.observed(BGP_STATUS, t, o))
        self.hb_secret = WatchCache(rest, SECRETS, namespace=ns,  # heartbeat keys (only this Secret)
                                    field_selector=f"metadata.name={memberlist.SECRET_NAME}")
        # Layer 2 (and readiness) waits for these; BGP's own caches never make the speaker unready.
        self.caches = [self.services, self.slices, self.nodes, self.leases, self.pools, self.advs,
                       self.kube_proxy, self.statuses, self.hb_secret]
        self.bgp_caches = [self.bgp_peers, self.bgp_advs, self.communities, self.bfd_profiles,
                           self.bgp_statuses]
        self._indexed = {S.SERVICES: self.services, S.ENDPOINTSLICES: self.slices, S.NODES: self.nodes,
                         S.POOLS: self.pools, S.L2ADVERTISEMENTS: self.advs, S.KUBE_PROXY: self.kube_proxy,
                         S.BGPPEERS: self.bgp_peers, S.BGPADVERTISEMENTS: self.bgp_advs,
                         S.COMMUNITIES: self.communities, S.BFDPROFILES: self.bfd_profiles}

        self.recorder = EventRecorder(rest, SPEAKER_NAME, host=cfg.node)
        self.lock = LeaseLock(rest, ns, lease_name(cfg.node), cfg.node, cfg.lease_duration,
                              labels={"app.kubernetes.io/component": "speaker"})
        self.heartbeat: Heartbeater | None = None
        if cfg.heartbeat_port:
            try:
                self.heartbeat = Heartbeater(
                    cfg.node, self._peer_addresses, wake, port=cfg.heartbeat_port, bind=cfg.heartbeat_bind,
                    interval=cfg.heartbeat_interval, timeout=cfg.heartbeat_timeout,
                    keys=lambda: memberlist.keys_of(self.hb_secret.get(ns, memberlist.SECRET_NAME)),
                    key_delay=cfg.heartbeat_key_delay,
                    sender_command=sender_command() if cfg.heartbeat_sender == "process" else None,
                )
            except OSError as exc:
                log.error("cannot bind heartbeat port udp/%d (%s): failure detection falls back to "
                          "Leases only (%ds)", cfg.heartbeat_port, exc, cfg.lease_duration)
        if self.heartbeat is not None:
            self.metrics.attach_heartbeat(self.heartbeat.stats)
        self.membership = Membership(
            cfg.node, self.lock, self.leases.items, self._hb_states, lambda: self.leases.watching, wake,
            renew_interval=cfg.renew_interval,
        )

        # What the protocols act through.
        self.status = OwnedStatusWriter(rest, ns, cfg.node,
                                        {L2_STATUS: self.statuses, BGP_STATUS: self.bgp_statuses})
        self.node_problems = NodeProblemsWriter(rest, ns, cfg.node)
        self.config_state = SpeakerConfigState(rest, ns, cfg.node)
        self.reporter = Reporter(
            self.recorder, ns,
            lookups={"Service": self.services, "Node": self.nodes, "L2Advertisement": self.advs,
                     "BGPPeer": self.bgp_peers, "BGPAdvertisement": self.bgp_advs},
            api_versions={"Service": "v1", "Node": "v1", "L2Advertisement": L2ADVERTISEMENTS.api_version,
                          "BGPPeer": BGPPEERS.api_version, "BGPAdvertisement": BGPADVERTISEMENTS.api_version},
            config_state=self.config_state,
        )
        self.sessions = SessionStatus(rest, ns, cfg.node, self.reporter)

        # The two protocols, each on its own runner thread.
        self.layer2 = Layer2(
            cfg.node, announcer, status=self.status, reporter=self.reporter, metrics=self.metrics,
            node_problems=self.node_problems, ignore_exclude_lb=cfg.ignore_exclude_lb,
            interfaces=cfg.interfaces, enforce_strict_arp=cfg.enforce_strict_arp, enforce=enforce,
        )
        if bgp_hooks.node_networks is None and list_links is not None:  # a real node, not fake links
            bgp_hooks = replace(bgp_hooks, node_networks=netinfo.node_networks)
        self.bgp = BGP(
            cfg.node, status=self.status, sessions=self.sessions, reporter=self.reporter,
            passwords=PeerPasswords(rest, ns), workdir=Path(cfg.run_dir) / "bgp" / cfg.node,
            hooks=bgp_hooks, ignore_exclude_lb=cfg.ignore_exclude_lb,
        )
        self.l2_runner: Runner[Any] = Runner(self.layer2)
        self.bgp_runner: Runner[Any] = Runner(self.bgp, pause_after_plan=True)
        self.runners = [self.l2_runner, self.bgp_runner]
        self.metrics.attach_bgp(self.bgp.metrics_snapshot)
        self.metrics.attach_bfd(self.bgp.bfd_sessions)
        self.metrics.attach_planning(self._planning_stats)
        self._link_watcher: Any = None
        self._thread: threading.Thread | None = None
        self.health: HealthServer | None = None

    # --- the loop: caches -> one facts snapshot -> each protocol ------------------------------------------

    def _loop(self) -> None:
        synced = False
        start = time.monotonic()
        offered = -1  # the index generation of the last snapshot handed out
        while not self._stop.is_set():
            self._loop_alive = time.monotonic()
            woke = self._wake.wait(0.25)
            if self._stop.is_set():
                return
            if woke:
                self._coalesce()
            if not synced:
                synced = self.synced()
                if not synced:
                    if time.monotonic() - start > self.cfg.sync_timeout:
                        log.warning("caches not synced after %.0fs; still waiting (announcing nothing yet)",
                                    self.cfg.sync_timeout)
                        start = time.monotonic()
                    continue
                log.info("caches synced")
            # Node-local inputs; the Leases are judged anew every pass (expiry is a matter of time).
            self.index.set(S.SYNCED, frozenset(n for n, c in self._indexed.items() if c.synced))
            self.index.set(S.LIVE, frozenset(self._membership()))
            links = self.links()
            self.index.set(S.LINKS, tuple(links) if links is not None else None)
            generation = self.index.generation()
            if generation == offered:
                continue  # nothing a plan reads moved
            offered = generation
            snap = self.index.snapshot()
            for runner in self.runners:
                runner.offer(snap)

    def _coalesce(self) -> None:
        """A burst of events makes one snapshot: wait until `debounce` passes without an event,
        but no longer than `coalesce` in all (1,000 Service creates then make ten snapshots a
        second, not one per event; a lone change still goes out after `debounce`)."""
        until = time.monotonic() + self.cfg.coalesce
        while True:
            self._wake.clear()
            left = until - time.monotonic()
            if left <= 0 or self._stop.wait(min(self.cfg.debounce, left)) or not self._wake.is_set():
                break
        self._wake.clear()

    def _membership(self) -> set[str]:
        live = self.membership.live()
        if live != self._last_live:
            log.info("live speakers: %s", ", ".join(sorted(live)) or "-")
            self._last_live = set(live)
        self.metrics.members.set(len(live))
        self.metrics.api_ok.set(1 if self.membership.api_ok() else 0)
        return live

    def snapshot(self) -> Snapshot:
        """The facts as the loop sees them now (tests, lbctl-like introspection)."""
        return self.index.snapshot()

    # --- inputs ----------------------------------------------------------------------------------------

    def _hb_states(self) -> dict[str, PeerState]:
        return self.heartbeat.states() if self.heartbeat is not None else {}

    def _peer_addresses(self) -> dict[str, list[str]]:
        out = {}
        for node in self.nodes.items():
            name = str((node.get("metadata") or {}).get("name") or "")
            if name and name != self.cfg.node:
                out[name] = node_addresses(node)
        return out

    def _on_link(self, event: str, link: LinkInfo) -> None:
        if event != "RESYNC":
            with contextlib.suppress(Exception):
                self.announcer.handle_link_event(event, link.name, link.index, link.up)
        self._links_dirty = True
        self._wake.set()

    def links(self) -> list[LinkInfo] | None:
        if self._list_links is None:
            return None
        if self._links_dirty or self._links is None:
            self._links_dirty = False
            try:
                self._links = self._list_links()
            except Exception:
                log.exception("listing links failed; keeping the last list")
                self._links_dirty = True
        return self._links

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self, serve_http: bool = True) -> None:
        self.announcer.start()
        if serve_http and self.cfg.metrics_addr:
            try:
                self.health = HealthServer(
                    self.cfg.metrics_addr, self.metrics.registry, self.healthz, self.readyz
                )
                self.health.start()
            except OSError as exc:  # announcing matters more than metrics: carry on, loudly
                log.error("cannot serve metrics/probes on %s: %s", self.cfg.metrics_addr, exc)
        for c in [*self.caches, *self.bgp_caches]:
            c.start()
        if self._watch_links and self._list_links is not None:
            from lbspeaker.netinfo import LinkWatcher

            self._link_watcher = LinkWatcher(self._on_link)
            self._link_watcher.start()
        if self.heartbeat is not None:
            self.heartbeat.start()
        self.membership.start()
        self.status.start()
        self.node_problems.start()
        self.config_state.start()
        self.sessions.start(self.bgp.refresh_sessions)
        for runner in self.runners:
            runner.start()
        self._thread = threading.Thread(target=self._loop, name="speaker-loop", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, cleanup_budget_s: float = 1.0,
             budget_s: float | None = None) -> None:
        """Graceful stop: silence first, then tell the others, then the API cleanup, by a deadline.

        BGP withdraws in parallel with the layer-2 handover (each has its own
        acknowledgement wait) and is done before the API cleanup starts. Every step that
        can block (an API call, a thread join, ExaBGP) gets what is left of `budget_s`
        (`cfg.shutdown_budget`) and is abandoned when that is spent: the threads are
        daemons, so the process exits all the same, inside the pod's grace period.
        """
        deadline = Deadline(self.cfg.shutdown_budget if budget_s is None else budget_s)
        bgp_stop = threading.Thread(target=self.bgp_runner.stop, kwargs={"join": 0.5}, name="bgp-stop",
                                    daemon=True)
        bgp_stop.start()
        self._stop.set()
        self._wake.set()
        self.l2_runner.stop(join=deadline.left(0.5))  # no layer-2 apply after this; the announcer is emptied
        log.info("stopped answering; handing over")
        if self.heartbeat is not None:
            hb = self.heartbeat
            bounded("heartbeat leave", hb.leave, deadline.left(0.3))
        bounded("Lease release", lambda: self.membership.stop(release=release), deadline.left(1.0))
        if self._thread is not None:
            self._thread.join(timeout=deadline.left(0.5))
        bgp_stop.join(deadline.left())
        if bgp_stop.is_alive():
            log.warning("shutdown: BGP withdrawals still running at the deadline: not waiting")
        self.sessions.stop(timeout=deadline.left(0.2))
        bounded("status writer", self.status.stop, deadline.left(0.2))
        if release:
            cleanups = [threading.Thread(target=fn, daemon=True)
                        for fn in (self.status.delete_all, self.sessions.remove_all)]
            for t in cleanups:
                t.start()
            budget = deadline.left(cleanup_budget_s)
            end = time.monotonic() + budget
            for t in cleanups:
                t.join(max(0.0, end - time.monotonic()))
        self._close(node_problems_s=deadline.left(0.2), recorder_s=deadline.left(0.3),
                    caches_s=deadline.left(0.3))
        log.info("stopped in %.2fs (budget %.1fs)", deadline.elapsed(), deadline.seconds)

    def abort(self) -> None:
        """Simulate a crash (tests): every thread stops, nothing is released or said to the others."""
        self._stop.set()
        self._wake.set()
        self.l2_runner.stop(withdraw=False)
        self.bgp.abort()
        self.bgp_runner.stop(withdraw=False, join=1.0)
        self.membership.stop(release=False)
        self.sessions.stop()
        self.status.stop()
        self._close(node_problems_s=0.1, recorder_s=0.1, caches_s=1.0)

    def _close(self, node_problems_s: float, recorder_s: float, caches_s: float) -> None:
        self.node_problems.stop(timeout=node_problems_s)
        self.config_state.stop(timeout=node_problems_s)
        self.recorder.close(timeout=recorder_s)
        with contextlib.suppress(Exception):
            self.announcer.stop()
        if self.heartbeat is not None:
            bounded("heartbeats", self.heartbeat.stop, 0.3)
        if self._link_watcher is not None:
            bounded("link watcher", self._link_watcher.stop, 0.3)
        caches = [*self.caches, *self.bgp_caches]
        for c in caches:
            c.stop(timeout=0)  # every watch aborted at once, then joined against one deadline
        end = time.monotonic() + caches_s
        for c in caches:
            c.stop(timeout=max(0.0, end - time.monotonic()))
        if self.health is not None:
            self.health.stop()

    # --- probes and counters -----------------------------------------------------------------------------

    @property
    def plan(self) -> Plan | None:
        """The layer-2 plan applied last."""
        return self.layer2.applied

    @property
    def plans(self) -> int:
        """Layer-2 plans run so far."""
        return self.l2_runner.plans

    @property
    def strictarp_state(self) -> strictarp.StrictArpState:
        return self.layer2.strictarp_state

    def _planning_stats(self) -> dict[str, dict[str, int]]:
        protocols = {r.proto.name: r for r in self.runners}
        return {
            "plans": {n: r.plans for n, r in protocols.items()},
            "plans_skipped": {n: r.skipped for n, r in protocols.items()},
            "plan_errors": {n: r.errors for n, r in protocols.items()},
            "events": dict(self.index.changed),
            "events_ignored": dict(self.index.ignored),
        }

    def synced(self) -> bool:
        return all(c.synced for c in self.caches)

    def healthz(self) -> tuple[bool, str]:
        alive = time.monotonic() - self._loop_alive < 10
        return alive, "ok" if alive else "plan loop stuck"

    def readyz(self) -> tuple[bool, str]:
        lines = []
        ok = True
        if not self.synced():
            ok = False
            lines.append("caches: not synced: " + ", ".join(c.name for c in self.caches if not c.synced))
        else:
            lines.append("caches: synced")
        if not self.membership.acquired_once:
            ok = False
            lines.append(f"lease {self.lock.name}: not acquired yet")
        else:
            lines.append(f"lease {self.lock.name}: held" if self.membership.api_ok()
                         else f"lease {self.lock.name}: API view stale (fail-static)")
        lines.append(f"members: {', '.join(sorted(self._last_live)) or '-'}")
        lines += self.layer2.readyz_lines()
        with contextlib.suppress(Exception):  # BGP never makes the speaker unready
            if not all(c.synced for c in self.bgp_caches):
                lines.append("bgp: caches not synced: "
                             + ", ".join(c.name for c in self.bgp_caches if not c.synced))
            lines += self.bgp.readyz_lines()
        return ok, ("ready\n" if ok else "not ready\n") + "\n".join(lines)


# --- CLI ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbspeaker-speaker",
        description="Announce LoadBalancer IPs in layer 2 (ARP/NDP) from one elected node per IP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--node-name", required=True, help="this node's name (in cluster: spec.nodeName)")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file (None: in-cluster config, then $KUBECONFIG)")
    p.add_argument("--namespace", default=NAMESPACE, help="namespace of the CRs and speaker Leases")
    p.add_argument("--lease-duration", type=int, default=10,
                   help="seconds a speaker-<node> Lease stays valid without renewal")
    p.add_argument("--renew-interval", type=float, default=2.0, help="seconds between Lease renewals")
    p.add_argument("--heartbeat-port", type=int, default=DEFAULT_PORT,
                   help="UDP port for speaker-to-speaker heartbeats on the node IPs (0: off, Leases only)")
    p.add_argument("--heartbeat-interval", type=float, default=0.2, help="seconds between heartbeats")
    p.add_argument("--heartbeat-timeout", type=float, default=1.0,
                   help="a speaker silent this long (after heartbeats were established) is dead; "
                        "a peer whose heartbeats recently came further apart gets twice its longest "
                        "gap, at most 4 times this")
    p.add_argument("--heartbeat-sender", choices=("process", "thread"), default="process",
                   help="send heartbeats from a small process of their own (so a busy speaker's "
                        "interpreter lock cannot delay them) or from a thread of the speaker")
    p.add_argument("--heartbeat-key-delay", type=float, default=10.0,
                   help="seconds a new key of Secret lbspeaker-memberlist is accepted before this speaker "
                        "signs with it (every speaker must have loaded it by then)")
    p.add_argument("--metrics-addr", default=DEFAULT_METRICS_ADDR,
                   help="host:port for /metrics, /healthz, /readyz (empty: off)")
    p.add_argument("--interfaces", default="",
                   help="comma-separated interfaces to announce on when an L2Advertisement names none "
                        "(empty: every up, ARP-capable, non-virtual interface)")
    p.add_argument("--ignore-exclude-lb", action="store_true",
                   help="announce from nodes labelled "
                        "node.kubernetes.io/exclude-from-external-load-balancers")
    p.add_argument("--enforce-strict-arp", action="store_true",
                   help="when kube-proxy runs IPVS without strictARP, set arp_ignore=1/arp_announce=2 "
                        "on 'all' and the announcing interfaces of this node")
    p.add_argument("--lb-class", default=None,
                   help="serve only Services of this spec.loadBalancerClass (None: only class-less ones)")
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR,
                   help="writable directory for runtime state (ExaBGP's config and API socket under "
                        "bgp/<node>/); an emptyDir with a read-only root filesystem")
    p.add_argument("--shutdown-timeout", type=float, default=3.0,
                   help="seconds from SIGTERM to exit: BGP withdrawals, the Lease release and the status "
                        "cleanup share them, and whatever is still running then is abandoned (a shutdown "
                        f"still running {EXIT_MARGIN:g} s later exits at once). Keep it below the pod's "
                        "terminationGracePeriodSeconds (5 in the manifests)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{args.node_name}] %(name)s: %(message)s")
    from lbspeaker.kube.client import load_api_client
    from lbspeaker.l2 import Announcer
    from lbspeaker.netinfo import enforce_strict_arp, list_links

    cfg = Config(
        node=args.node_name, namespace=args.namespace, lease_duration=args.lease_duration,
        renew_interval=args.renew_interval, heartbeat_port=args.heartbeat_port,
        heartbeat_interval=args.heartbeat_interval, heartbeat_timeout=args.heartbeat_timeout,
        heartbeat_key_delay=args.heartbeat_key_delay, heartbeat_sender=args.heartbeat_sender,
        metrics_addr=args.metrics_addr, interfaces=[i for i in args.interfaces.split(",") if i.strip()],
        ignore_exclude_lb=args.ignore_exclude_lb, enforce_strict_arp=args.enforce_strict_arp,
        lb_class=args.lb_class, run_dir=args.run_dir, shutdown_budget=args.shutdown_timeout,
    )
    rest = Rest(load_api_client(args.kubeconfig), timeouts=Timeouts(connect=2.0, read=5.0))
    speaker = Speaker(cfg, rest, Announcer(), list_links=list_links, enforce=enforce_strict_arp)
    done = threading.Event()

    def hard_exit() -> None:
        log.error("shutdown still running %.1fs after the signal: exiting now",
                  cfg.shutdown_budget + EXIT_MARGIN)
        logging.shutdown()
        os._exit(1)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping (deadline %.1fs)", signum, cfg.shutdown_budget)
        if not done.is_set():
            watchdog = threading.Timer(cfg.shutdown_budget + EXIT_MARGIN, hard_exit)
            watchdog.daemon = True
            watchdog.start()
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    speaker.start()
    log.info("speaker on %s started (lease %s/%s, heartbeats udp/%s, metrics %s)", cfg.node, cfg.namespace,
             lease_name(cfg.node), cfg.heartbeat_port or "off", cfg.metrics_addr or "off")
    while not done.wait(1.0):
        pass
    speaker.stop()
    log.info("speaker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
