"""lbspeaker-speaker: makes LoadBalancer IPs reachable in layer 2 (ARP/NDP) from one node per IP,
and over BGP (ExaBGP) from every selected node.

Wiring (the thin shell around `lbspeaker.plan`):

    WatchCaches (Services, EndpointSlices, Nodes, speaker Leases, IPAddressPools,
    L2Advertisements, kube-system/kube-proxy ConfigMap, our ServiceL2Statuses)
    + netlink link events + heartbeat/Lease membership changes
        -> kick -> debounce (20 ms) -> compute_plan (pure)
        -> Announcer.set_owned (GARP on take, silence at once on loss)
        -> ServiceL2Status writer, nodeAssigned Events, metrics, problems as Events

Fail-static: caches never empty themselves when a watch breaks, a failing plan
keeps the last applied announcements, and membership freezes Lease judgement while
our own API view is stale (see `membership.py`). Nothing is planned before every
cache has listed once, so a speaker that starts while the API is down announces
nothing rather than a guess.

BGP (`speaker/bgp.py`): a `BGPSpeaker` shares the Service/EndpointSlice/Node/pool
caches, is kicked on their events, and plans and applies in its own threads (one
ExaBGP per speaker, started when a BGPPeer selects this node), so nothing on the BGP
side can stall or break layer 2. Its caches (BGPPeers, BGPAdvertisements,
Communities) are not part of layer-2 readiness.

SIGTERM: stop answering (announcer emptied) while BGP withdraws every route (in
parallel, acknowledged by ExaBGP), heartbeat LEAVING, release the Lease, remove our
ServiceL2Statuses / ServiceBGPStatuses / BGPPeer session entries (best effort,
bounded), exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from lbspeaker.api.constants import NAMESPACE, SPEAKER_NAME
from lbspeaker.election import L2AdvertisementFacts, NodeFacts
from lbspeaker.health import HealthServer
from lbspeaker.kube import memberlist
from lbspeaker.kube.cache import WatchCache
from lbspeaker.kube.client import Timeouts
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.lease import LeaseLock
from lbspeaker.kube.resources import (
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
from lbspeaker.netinfo import LinkInfo
from lbspeaker.plan import Plan, Problem, compute_plan, pool_facts, services_facts
from lbspeaker.speaker import strictarp
from lbspeaker.speaker.bgp import (
    DEFAULT_RUN_DIR,
    BGPConfig,
    BGPSpeaker,
    ManagerFactory,
    default_manager_factory,
    node_networks_proc,
)
from lbspeaker.speaker.heartbeat import DEFAULT_PORT, Heartbeater, PeerState
from lbspeaker.speaker.membership import Membership, lease_name
from lbspeaker.speaker.metrics import SpeakerMetrics
from lbspeaker.speaker.nodeproblems import NodeProblemsWriter
from lbspeaker.speaker.status import (
    BGP_STATUS,
    L2_STATUS,
    OwnedStatusWriter,
    assigned_message,
    l2_fields,
    node_selector,
)

# Speakers run with hostNetwork, where the controller's 7472 may be bound on the same node: 7473 for
# metrics and probes (and 7474/udp for heartbeats).
DEFAULT_METRICS_ADDR = "0.0.0.0:7473"

log = logging.getLogger("lbspeaker.speaker")


class AnnouncerLike(Protocol):
    """What the speaker needs from `lbspeaker.l2.Announcer` (a fake in component tests)."""

    def start(self) -> None: ...
    def set_owned(self, ips_by_interface: Mapping[str, Sequence[str]]) -> dict[str, str]: ...
    def handle_link_event(self, event: str, ifname: str, index: int, up: bool) -> None: ...
    def totals(self) -> dict[str, Any]: ...
    def errors(self) -> dict[str, str]: ...
    def stop(self) -> None: ...


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
    metrics_addr: str = DEFAULT_METRICS_ADDR
    interfaces: list[str] = field(default_factory=list)
    ignore_exclude_lb: bool = False
    enforce_strict_arp: bool = False
    lb_class: str | None = None
    debounce: float = 0.02
    sync_timeout: float = 60.0
    run_dir: str = DEFAULT_RUN_DIR


def node_addresses(node: Mapping[str, Any]) -> list[str]:
    """InternalIP (else ExternalIP) addresses of a Node dict: where its speaker's heartbeats go."""
    addrs = (node.get("status") or {}).get("addresses") or []
    internal = [str(a["address"]) for a in addrs if a.get("type") == "InternalIP" and a.get("address")]
    external = [str(a["address"]) for a in addrs if a.get("type") == "ExternalIP" and a.get("address")]
    return internal or external


class Speaker:
    """One node's speaker: caches, membership, plan loop, announcer, status, metrics."""

    def __init__(
        self,
        cfg: Config,
        rest: Rest,
        announcer: AnnouncerLike,
        list_links: Callable[[], list[LinkInfo]] | None = None,
        watch_links: bool = True,
        enforce: Callable[[list[str]], dict[str, dict[str, int]]] | None = None,
        bgp_manager_factory: ManagerFactory = default_manager_factory,
        node_networks: Callable[[], list[str]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.rest = rest
        self.announcer = announcer
        self._list_links = list_links
        self._watch_links = watch_links
        self._enforce = enforce
        self.metrics = SpeakerMetrics(cfg.node)
        self.metrics.attach_announcer(announcer.totals)
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._apply_lock = threading.Lock()
        self._links: list[LinkInfo] | None = None
        self._links_dirty = True
        self.plan: Plan | None = None
        self._owned_services: dict[str, set[str]] = {}  # service -> IPs we announce
        self._problems: set[Problem] = set()
        self.strictarp_state = strictarp.check(None)
        self._strict_enforced: dict[str, dict[str, int]] | None = None
        self._applied: dict[str, list[str]] = {}
        self._last_live: set[str] = set()
        self.plans = 0
        self.last_plan_error: str | None = None
        self._loop_alive = 0.0

        def kick(_t: str = "", _o: Any = None) -> None:
            self._kick.set()
            bgp = getattr(self, "bgp", None)
            if bgp is not None:
                bgp.kick()

        ns = cfg.namespace
        self.services = WatchCache(rest, SERVICES, on_event=kick)
        self.slices = WatchCache(rest, ENDPOINTSLICES, on_event=kick)
        self.nodes = WatchCache(rest, NODES, on_event=kick)
        self.leases = WatchCache(rest, LEASES, namespace=ns, on_event=kick)
        self.pools = WatchCache(rest, IPADDRESSPOOLS, namespace=ns, on_event=kick)
        self.advs = WatchCache(rest, L2ADVERTISEMENTS, namespace=ns, on_event=kick)
        self.kube_proxy = WatchCache(
            rest, CONFIGMAPS, namespace=strictarp.CONFIGMAP_NAMESPACE,
            field_selector=f"metadata.name={strictarp.CONFIGMAP_NAME}", on_event=kick,
        )
        self.statuses = WatchCache(rest, SERVICEL2STATUSES, namespace=ns,
                                   label_selector=node_selector(cfg.node))
        self.bgp_statuses = WatchCache(rest, SERVICEBGPSTATUSES, namespace=ns,
                                       label_selector=node_selector(cfg.node))
        self.hb_secret = WatchCache(rest, SECRETS, namespace=ns,  # heartbeat keys (only this Secret)
                                    field_selector=f"metadata.name={memberlist.SECRET_NAME}")
        self.caches = [self.services, self.slices, self.nodes, self.leases, self.pools, self.advs,
                       self.kube_proxy, self.statuses, self.hb_secret]
        self.recorder = EventRecorder(rest, SPEAKER_NAME, host=cfg.node)
        self.lock = LeaseLock(rest, ns, lease_name(cfg.node), cfg.node, cfg.lease_duration,
                              labels={"app.kubernetes.io/component": "speaker"})
        self.heartbeat: Heartbeater | None = None
        if cfg.heartbeat_port:
            try:
                self.heartbeat = Heartbeater(
                    cfg.node, self._peer_addresses, kick, port=cfg.heartbeat_port, bind=cfg.heartbeat_bind,
                    interval=cfg.heartbeat_interval, timeout=cfg.heartbeat_timeout,
                    keys=lambda: memberlist.keys_of(self.hb_secret.get(ns, memberlist.SECRET_NAME)),
                    key_delay=cfg.heartbeat_key_delay,
                )
            except OSError as exc:
                log.error("cannot bind heartbeat port udp/%d (%s): failure detection falls back to "
                          "Leases only (%ds)", cfg.heartbeat_port, exc, cfg.lease_duration)
        if self.heartbeat is not None:
            self.metrics.attach_heartbeat(self.heartbeat.stats)
        self.membership = Membership(
            cfg.node, self.lock, self.leases.items, self._hb_states, lambda: self.leases.watching, kick,
            renew_interval=cfg.renew_interval,
        )
        self.status = OwnedStatusWriter(rest, ns, cfg.node,
                                        {L2_STATUS: self.statuses, BGP_STATUS: self.bgp_statuses})
        self.node_problems = NodeProblemsWriter(rest, ns, cfg.node)
        # BGP side: own threads and caches for its CRDs, shares ours; never blocks layer 2
        self.bgp = BGPSpeaker(
            BGPConfig(node=cfg.node, namespace=ns, run_dir=cfg.run_dir,
                      ignore_exclude_lb=cfg.ignore_exclude_lb, lb_class=cfg.lb_class),
            rest, services=self.services, slices=self.slices, nodes=self.nodes, pools=self.pools,
            status=self.status, recorder=self.recorder, manager_factory=bgp_manager_factory,
            node_networks=node_networks if node_networks is not None else (
                node_networks_proc if list_links is not None else None),
        )
        self.metrics.attach_bgp(self.bgp.metrics_snapshot)
        self._link_watcher: Any = None
        self._thread: threading.Thread | None = None
        self.health: HealthServer | None = None

    # --- inputs ----------------------------------------------------------------

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
        self._kick.set()

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

    # --- lifecycle --------------------------------------------------------------

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
        for c in [*self.caches, self.bgp_statuses]:
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
        self.bgp.start()
        self._thread = threading.Thread(target=self._loop, name="speaker-plan", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, cleanup_budget_s: float = 2.0) -> None:
        """Graceful stop: silence first, then tell the others, then the API cleanup (bounded).

        BGP withdraws in parallel with the layer-2 handover (each has its own
        acknowledgement wait) and is done before the API cleanup starts.
        """
        bgp_stop = threading.Thread(target=self.bgp.stop, kwargs={"cleanup": False},
                                    name="bgp-stop", daemon=True)
        bgp_stop.start()
        with self._apply_lock:
            self._stop.set()
            self._kick.set()
            with contextlib.suppress(Exception):
                self.announcer.set_owned({})
        log.info("stopped answering; handing over")
        if self.heartbeat is not None:
            with contextlib.suppress(Exception):
                self.heartbeat.leave()
        self.membership.stop(release=release)
        if self._thread is not None:
            self._thread.join(timeout=2)
        bgp_stop.join(timeout=5)
        if release:
            t = threading.Thread(target=self.status.delete_all, daemon=True)
            t2 = threading.Thread(target=self.bgp.cleanup, daemon=True)
            self.status.stop()
            t.start()
            t2.start()
            t.join(cleanup_budget_s)
            t2.join(max(0.1, cleanup_budget_s / 2))
        else:
            self.status.stop()
        self.node_problems.stop(timeout=0.5)
        self.recorder.close(timeout=1.0)
        with contextlib.suppress(Exception):
            self.announcer.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self._link_watcher is not None:
            self._link_watcher.stop()
        for c in [*self.caches, self.bgp_statuses]:
            c.stop(timeout=1.0)
        if self.health is not None:
            self.health.stop()

    def abort(self) -> None:
        """Simulate a crash (tests): every thread stops, nothing is released or said to the others."""
        with self._apply_lock:
            self._stop.set()
        self._kick.set()
        self.membership.stop(release=False)
        self.bgp.abort()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.status.stop()
        self.node_problems.stop(timeout=0.1)
        self.recorder.close(timeout=0.1)
        with contextlib.suppress(Exception):
            self.announcer.stop()
        if self._link_watcher is not None:
            self._link_watcher.stop()
        for c in [*self.caches, self.bgp_statuses]:
            c.stop(timeout=1.0)
        if self.health is not None:
            self.health.stop()

    # --- probes -----------------------------------------------------------------

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
        lines.append(("strictARP: ok: " if self.strictarp_state.ok else "strictARP: WARNING: ")
                     + self.strictarp_state.detail)
        if self._strict_enforced is not None:
            lines.append("strictARP: enforced by the speaker (arp_ignore=1, arp_announce=2)")
        for ifname, err in sorted(self.announcer.errors().items()):
            lines.append(f"interface {ifname}: {err}")
        for p in sorted(self._problems, key=lambda p: (p.kind, p.name, p.reason)):
            lines.append(f"problem: {p.kind} {p.name}: {p.reason}: {p.message}")
        with contextlib.suppress(Exception):  # BGP never makes the speaker unready
            lines += self.bgp.readyz_lines()
        return ok, ("ready\n" if ok else "not ready\n") + "\n".join(lines)

    # --- the plan loop ------------------------------------------------------------

    def _loop(self) -> None:
        synced = False
        start = time.monotonic()
        while not self._stop.is_set():
            self._loop_alive = time.monotonic()
            kicked = self._kick.wait(0.25)
            if self._stop.is_set():
                return
            if kicked:
                self._stop.wait(self.cfg.debounce)
                self._kick.clear()
            if not synced:
                synced = self.synced()
                if not synced:
                    if time.monotonic() - start > self.cfg.sync_timeout:
                        log.warning("caches not synced after %.0fs; still waiting (announcing nothing yet)",
                                    self.cfg.sync_timeout)
                        start = time.monotonic()
                    continue
                log.info("caches synced")
            try:
                live = self.membership.live()
                if not kicked and live == self._last_live:
                    continue
                self.replan(live)
            except Exception as exc:
                self.metrics.plan_errors.inc()
                self.last_plan_error = repr(exc)
                log.exception("planning failed; keeping the last announcements")

    def _inputs(self) -> dict[str, Any]:
        return {
            "services": services_facts(self.services.items(), self.slices.items(), self.cfg.lb_class),
            "pools": [pool_facts(p) for p in self.pools.items()],
            "advertisements": [L2AdvertisementFacts.from_object(a) for a in self.advs.items()],
            "nodes": [NodeFacts.from_node(n) for n in self.nodes.items()],
        }

    def replan(self, live: set[str]) -> Plan:
        """Compute and apply the plan for the current caches and `live` speakers."""
        if live != self._last_live:
            log.info("live speakers: %s", ", ".join(sorted(live)) or "-")
        self._last_live = set(live)
        self.metrics.members.set(len(live))
        self.metrics.api_ok.set(1 if self.membership.api_ok() else 0)
        links = self.links()
        plan = compute_plan(
            self.cfg.node, live_speakers=live, links=links, ignore_exclude_label=self.cfg.ignore_exclude_lb,
            default_interfaces=self.cfg.interfaces or None, **self._inputs(),
        )
        self.plans += 1
        self.metrics.plans.inc()
        self._check_strict_arp(plan)
        self.apply(plan)
        return plan

    def apply(self, plan: Plan) -> None:
        with self._apply_lock:
            if self._stop.is_set():
                return
            self._apply(plan)

    def _apply(self, plan: Plan) -> None:
        wanted = plan.by_interface()
        if wanted != self._applied:
            errors = self.announcer.set_owned(wanted)
            for ifname, err in errors.items():
                log.warning("interface %s: %s", ifname, err)
            before = {ip for ips in self._applied.values() for ip in ips}
            after = set(plan.announce)
            for ip in sorted(after - before):
                log.info("taking %s (%s) on %s", ip, ", ".join(plan.announce[ip].services),
                         ", ".join(plan.announce[ip].interfaces) or "no interface")
            for ip in sorted(before - after):
                log.info("releasing %s (owner now %s)", ip, plan.owners.get(ip) or "nobody")
            self._applied = wanted
        self.plan = plan
        owned: dict[str, set[str]] = {}
        for ann in plan.announce.values():
            for svc in ann.services:
                owned.setdefault(svc, set()).add(ann.ip)
        for svc, ips in owned.items():
            if not ips <= self._owned_services.get(svc, set()):
                ns, _, name = svc.partition("/")
                obj = self.services.get(ns, name)
                if obj is not None:
                    self.recorder.normal({**obj, "apiVersion": "v1", "kind": "Service"}, "nodeAssigned",
                                         assigned_message(self.cfg.node, "layer2"))
        self._owned_services = owned
        self.status.set_desired(L2_STATUS, {k: l2_fields(v) for k, v in plan.services_announced().items()})
        self.metrics.set_announced({(svc, ip) for svc, ips in owned.items() for ip in ips})
        problems = set(plan.problems)
        for p in sorted(problems - self._problems, key=lambda p: (p.kind, p.name, p.reason)):
            log.warning("%s %s: %s: %s", p.kind, p.name, p.reason, p.message)
            self._event_for_problem(p)
        self._problems = problems
        self.node_problems.set(problems)

    def _event_for_problem(self, p: Problem) -> None:
        if p.kind == "L2Advertisement":
            obj = self.advs.get(self.cfg.namespace, p.name)
            if obj is not None:
                self.recorder.warning(
                    {**obj, "apiVersion": L2ADVERTISEMENTS.api_version, "kind": "L2Advertisement"},
                    p.reason, p.message)
        elif p.kind == "Service":
            ns, _, name = p.name.partition("/")
            obj = self.services.get(ns, name)
            if obj is not None:
                self.recorder.warning({**obj, "apiVersion": "v1", "kind": "Service"}, p.reason, p.message)

    def _node_ref(self) -> dict[str, Any]:
        node = self.nodes.get(None, self.cfg.node)
        if node is not None:
            return {**node, "apiVersion": "v1", "kind": "Node"}
        return {"apiVersion": "v1", "kind": "Node", "name": self.cfg.node}

    def _check_strict_arp(self, plan: Plan) -> None:
        cms = self.kube_proxy.items()
        state = strictarp.check(cms[0] if cms else None)
        changed = state != self.strictarp_state
        self.strictarp_state = state
        self.metrics.strictarp_ok.set(1 if state.ok else 0)
        if changed:
            if state.ok:
                log.info("strictARP: %s", state.detail)
            else:
                log.warning("strictARP: %s", state.detail)
                self.recorder.warning(self._node_ref(), "StrictARPDisabled", state.detail)
        if not state.ok and self.cfg.enforce_strict_arp and self._enforce is not None:
            ifaces = sorted({"all", *(i for a in plan.announce.values() for i in a.interfaces),
                             *self._default_interfaces()})
            try:
                done = self._enforce(ifaces)
            except OSError as exc:
                log.warning("strictARP: cannot set arp_ignore/arp_announce: %s", exc)
                return
            if done or self._strict_enforced is None:
                msg = (f"set arp_ignore=1, arp_announce=2 on {', '.join(sorted(done))}" if done
                       else f"arp_ignore/arp_announce already strict on {', '.join(ifaces)}")
                log.warning("strictARP enforced by the speaker: %s", msg)
                self.recorder.normal(self._node_ref(), "StrictARPEnforced", msg)
                self._strict_enforced = done or {}

    def _default_interfaces(self) -> list[str]:
        from lbspeaker.netinfo import select_interfaces

        links = self.links()
        if links is None:
            return []
        return select_interfaces(links, self.cfg.interfaces or None)


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
                   help="a speaker silent this long (after heartbeats were established) is dead")
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
        heartbeat_key_delay=args.heartbeat_key_delay,
        metrics_addr=args.metrics_addr, interfaces=[i for i in args.interfaces.split(",") if i.strip()],
        ignore_exclude_lb=args.ignore_exclude_lb, enforce_strict_arp=args.enforce_strict_arp,
        lb_class=args.lb_class, run_dir=args.run_dir,
    )
    rest = Rest(load_api_client(args.kubeconfig), timeouts=Timeouts(connect=2.0, read=5.0))
    speaker = Speaker(cfg, rest, Announcer(), list_links=list_links, enforce=enforce_strict_arp)
    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
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
