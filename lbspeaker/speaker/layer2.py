"""Layer 2 behind the speaker's `Protocol`: snapshot -> `plan.L2Planner` -> the ARP/NDP announcer.

plan: `L2Planner` is `compute_plan` redone only for the Services changed since the snapshot
planned last (`Snapshot.service_changes`), so a burst of Service events does not replan
every Service each time.

apply: `Announcer.set_owned` (gratuitous ARP / unsolicited NA on take, silence at once on
loss), ServiceL2Status through the owned-status writer, `nodeAssigned` Events, the
announced metric, problems as Events and this node's L2Advertisement `nodeProblems`,
and the strictARP check (warn, and with --enforce-strict-arp set the ARP sysctls on the
interfaces this node answers on).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

from lbspeaker.facts import Problem
from lbspeaker.links import select_interfaces
from lbspeaker.plan import L2Planner, Plan
from lbspeaker.speaker import snapshot as S
from lbspeaker.speaker import strictarp
from lbspeaker.speaker.metrics import SpeakerMetrics
from lbspeaker.speaker.nodeproblems import NodeProblemsWriter
from lbspeaker.speaker.protocol import Reporter, follows
from lbspeaker.speaker.snapshot import Snapshot
from lbspeaker.speaker.status import L2_STATUS, OwnedStatusWriter, assigned_message, l2_fields

log = logging.getLogger("lbspeaker.speaker")

Enforcer = Callable[[list[str]], dict[str, dict[str, int]]]


class AnnouncerLike(Protocol):
    """What layer 2 needs from `lbspeaker.l2.Announcer` (a fake in component tests)."""

    def start(self) -> None: ...
    def set_owned(self, ips_by_interface: Mapping[str, Iterable[str]]) -> dict[str, str]: ...
    def handle_link_event(self, event: str, ifname: str, index: int, up: bool) -> None: ...
    def totals(self) -> dict[str, Any]: ...
    def errors(self) -> dict[str, str]: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Layer2Plan:
    plan: Plan
    strictarp: strictarp.StrictArpState
    default_interfaces: tuple[str, ...]  # for strictARP enforcement


@dataclass(eq=False)
class Layer2:
    """The layer-2 protocol of one node (see the module docstring)."""

    name = "layer2"
    inputs = frozenset({S.SERVICES, S.ENDPOINTSLICES, S.NODES, S.POOLS, S.L2ADVERTISEMENTS, S.KUBE_PROXY,
                        S.LIVE, S.LINKS, S.SYNCED})
    poll_interval = 1.0
    caches = frozenset({S.SERVICES, S.ENDPOINTSLICES, S.NODES, S.POOLS, S.L2ADVERTISEMENTS, S.KUBE_PROXY})

    node: str
    announcer: AnnouncerLike
    _: KW_ONLY
    status: OwnedStatusWriter
    reporter: Reporter
    metrics: SpeakerMetrics
    node_problems: NodeProblemsWriter
    ignore_exclude_lb: bool = False
    interfaces: Sequence[str] = ()
    enforce_strict_arp: bool = False
    enforce: Enforcer | None = None
    applied: Plan | None = field(default=None, init=False)  # the plan applied last
    strictarp_state: strictarp.StrictArpState = field(init=False)
    strict_enforced: dict[str, dict[str, int]] | None = field(default=None, init=False)
    problems: set[Problem] = field(default_factory=set, init=False)
    # interface -> the IPs we answer for there, and the plan that reflects (None: an apply did not complete)
    _applied: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)
    _announcer_applied: Plan | None = field(default=None, init=False, repr=False)
    # service -> IPs we announce
    _owned_services: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)
    # the plan _owned_services reflects (None: an apply did not complete)
    _services_applied: Plan | None = field(default=None, init=False, repr=False)
    _planner: L2Planner = field(init=False, repr=False)
    _planned: Snapshot | None = field(default=None, init=False, repr=False)  # what the planner saw last

    def __post_init__(self) -> None:
        self.interfaces = list(self.interfaces)
        self.strictarp_state = strictarp.check(None)
        self._planner = L2Planner(self.node, self.ignore_exclude_lb, self.interfaces or None)

    # --- Protocol ---------------------------------------------------------------------------------------

    def ready(self, snap: Snapshot) -> bool:
        return self.caches <= snap.synced

    def plan(self, snap: Snapshot) -> Layer2Plan:
        plan = self._planner.plan(
            snap.service_map, snap.service_changes(self._planned), pools=snap.pools,
            advertisements=snap.l2_advertisements, nodes=snap.nodes, live_speakers=snap.live_speakers,
            links=snap.links,
        )
        self._planned = snap
        links = list(snap.links) if snap.links is not None else None
        defaults = select_interfaces(links, self.interfaces or None) if links is not None else []
        return Layer2Plan(plan, snap.strictarp, tuple(defaults))

    def apply(self, lp: Layer2Plan) -> None:
        plan = lp.plan
        self._apply_announcer(plan)
        self.applied = plan
        previous, self._services_applied = self._services_applied, None  # None until complete
        self._apply_services(previous, plan)
        self._services_applied = plan
        problems = set(plan.problems)
        self.reporter.problems(self.name, self.problems, problems)
        self.problems = problems
        self.node_problems.set(problems)
        self._check_strict_arp(lp)

    def _apply_announcer(self, plan: Plan) -> None:
        """Hand the announcer the IPs to answer for on each interface: when `plan` directly follows
        the plan applied last, by updating only the IPs the planner redid (at 10,000 Services,
        regrouping every announced IP per plan was a tenth of a speaker's CPU), else rebuilt."""
        previous, self._announcer_applied = self._announcer_applied, None  # None until complete
        wanted = self._applied
        taken: list[str] = []
        released: list[str] = []
        if previous is not None and follows(previous, plan) and plan.changed_ips is not None:
            moved = False
            for ip in plan.changed_ips:
                old, new = previous.announce.get(ip), plan.announce.get(ip)
                old_ifs, new_ifs = set(old.interfaces if old else ()), set(new.interfaces if new else ())
                if old is None and new is not None:
                    taken.append(ip)
                elif old is not None and new is None:
                    released.append(ip)
                if old_ifs == new_ifs:
                    continue
                moved = True
                for ifname in old_ifs - new_ifs:
                    wanted[ifname].discard(ip)
                    if not wanted[ifname]:
                        del wanted[ifname]
                for ifname in new_ifs - old_ifs:
                    wanted.setdefault(ifname, set()).add(ip)
        else:
            rebuilt = {k: set(v) for k, v in plan.by_interface().items()}
            before = {ip for ips in wanted.values() for ip in ips}
            after = set(plan.announce)
            taken, released = sorted(after - before), sorted(before - after)
            moved = previous is None or rebuilt != wanted  # None: the last apply may not have reached it
            wanted = self._applied = rebuilt
        if moved:
            for ifname, err in self.announcer.set_owned(wanted).items():
                log.warning("interface %s: %s", ifname, err)
        for ip in sorted(taken):
            log.info("taking %s (%s) on %s", ip, ", ".join(plan.announce[ip].services),
                     ", ".join(plan.announce[ip].interfaces) or "no interface")
        for ip in sorted(released):
            log.info("releasing %s (owner now %s)", ip, plan.owners.get(ip) or "nobody")
        self._announcer_applied = plan

    def _apply_services(self, previous: Plan | None, plan: Plan) -> None:
        """nodeAssigned Events, ServiceL2Status and metrics of the Services whose announcements
        changed: when `plan` directly follows `previous` (the plan applied last, completely),
        only those of the IPs the planner redid; else every Service, rebuilt from the plan."""
        old_owned = self._owned_services
        touched: dict[str, set[str]] = {}  # service -> the IPs it had before this apply
        if previous is not None and follows(previous, plan) and plan.changed_ips is not None:
            owned = old_owned
            for ip in plan.changed_ips:
                old, new = previous.announce.get(ip), plan.announce.get(ip)
                if old == new:
                    continue
                for svc in set(old.services if old else ()) | set(new.services if new else ()):
                    touched.setdefault(svc, set(owned.get(svc, ())))
                for svc in old.services if old else ():
                    owned.get(svc, set()).discard(ip)
                for svc in new.services if new else ():
                    owned.setdefault(svc, set()).add(ip)
        else:
            owned = {}
            for ann in plan.announce.values():
                for svc in ann.services:
                    owned.setdefault(svc, set()).add(ann.ip)
            touched = {svc: old_owned.get(svc, set()) for svc in set(old_owned) | set(owned)}
        changes: dict[str, Mapping[str, Any] | None] = {}
        removed: set[tuple[str, str]] = set()
        added: set[tuple[str, str]] = set()
        for svc in sorted(touched):
            had, has = touched[svc], owned.get(svc, set())
            if not has:
                owned.pop(svc, None)
            elif not has <= had:
                self.reporter.normal("Service", svc, "nodeAssigned", assigned_message(self.node, self.name))
            ifaces = {i for ip in has for i in plan.announce[ip].interfaces}
            changes[svc] = l2_fields(sorted(ifaces)) if has else None
            removed |= {(svc, ip) for ip in had - has}
            added |= {(svc, ip) for ip in has - had}
        self._owned_services = owned
        self.status.update_desired(L2_STATUS, changes)
        self.metrics.change_announced(removed, added)

    def poll(self) -> bool:
        return False

    def withdraw(self) -> None:
        with contextlib.suppress(Exception):
            self.announcer.set_owned({})
        self._applied, self._announcer_applied = {}, None

    def finish(self) -> None:
        pass

    def readyz_lines(self) -> list[str]:
        st = self.strictarp_state
        lines = [("strictARP: ok: " if st.ok else "strictARP: WARNING: ") + st.detail]
        if self.strict_enforced is not None:
            lines.append("strictARP: enforced by the speaker (arp_ignore=1, arp_announce=2)")
        for ifname, err in sorted(self.announcer.errors().items()):
            lines.append(f"interface {ifname}: {err}")
        for p in sorted(self.problems, key=lambda p: (p.kind, p.name, p.reason)):
            lines.append(f"problem: {p.kind} {p.name}: {p.reason}: {p.message}")
        return lines

    # --- strictARP --------------------------------------------------------------------------------------

    def _check_strict_arp(self, lp: Layer2Plan) -> None:
        state = lp.strictarp
        changed = state != self.strictarp_state
        self.strictarp_state = state
        self.metrics.strictarp_ok.set(1 if state.ok else 0)
        if changed:
            if state.ok:
                log.info("strictARP: %s", state.detail)
            else:
                log.warning("strictARP: %s", state.detail)
                self.reporter.warning("Node", self.node, "StrictARPDisabled", state.detail)
        if state.ok or not self.enforce_strict_arp or self.enforce is None:
            return
        ifaces = sorted({"all", *(i for a in lp.plan.announce.values() for i in a.interfaces),
                         *lp.default_interfaces})
        try:
            done = self.enforce(ifaces)
        except OSError as exc:
            log.warning("strictARP: cannot set arp_ignore/arp_announce: %s", exc)
            return
        if done or self.strict_enforced is None:
            msg = (f"set arp_ignore=1, arp_announce=2 on {', '.join(sorted(done))}" if done
                   else f"arp_ignore/arp_announce already strict on {', '.join(ifaces)}")
            log.warning("strictARP enforced by the speaker: %s", msg)
            self.reporter.normal("Node", self.node, "StrictARPEnforced", msg)
            self.strict_enforced = done or {}
