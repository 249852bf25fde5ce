"""Layer-2 plan: cluster state + this node -> what this node announces, and who announces what.

Pure: plain data in, plain data out, no I/O (the link list comes in as `LinkInfo`
records and `links.select_interfaces` chooses among them). Every speaker computes the
same owner for every IP from the same facts, whatever order they arrive in, so the
speakers never need to talk to each other to agree (see `election.py`).

Steps, MetalLB's semantics:

1. Each Service with ingress IPs is tied to a pool: the `ip-allocated-from-pool`
   annotation when it names a known pool, else the pool whose addresses contain the
   IP. No pool, or no L2Advertisement for the pool: not announced in layer 2 (it may
   be a BGP-only pool; not a problem). The advertisements that apply are those of the
   pool that also match the Service (`serviceSelectors`, empty = every Service); none:
   not announced in layer 2 (MetalLB's `l2AdsForService`).
2. allow-shared-ip with serviceSelectors (MetalLB PR #3032): a Service carrying the
   allow-shared-ip annotation that an applying advertisement selects by
   `serviceSelectors` is not announced in layer 2, with a `SharedIPWithServiceSelectors`
   problem: Services sharing one IP but selected by different advertisements would
   have different candidates, and the IP must have exactly one announcer. The other
   sharers then all see the same selector-less advertisements.
3. Candidates per Service: `election.l2_candidates` (live speaker, no
   NetworkUnavailable, no exclude label unless ignored, selected by an applying
   L2Advertisement; ETP Local: a serving local endpoint; no serving endpoint
   anywhere: nobody; Ready is not read, as in MetalLB: see `election`).
4. One owner per IP. Several Services may share an IP: the IP's candidates are the
   union of theirs (sharing rules make ETP Local sharers select the same pods), its
   preference scores are summed over the union of their applying advertisements
   (`election.preference_scores`), and the election key is the IP itself (dual stack:
   MetalLB hashes a Service's *first* IP so both families land on one node; we do the
   same when the IP is held by a single Service). Every input is a set every speaker
   computes alike, so every speaker elects the same owner.
5. This node announces the IPs it owns on the interfaces the matching
   L2Advertisements allow (any advertisement without `interfaces` = the default
   choice; `default_interfaces` overrides that default, e.g. `--interfaces`).

Problems (for status/Events, never fatal): an L2Advertisement that selects this
node but names interfaces this node does not have, a nodeSelector that matches no
node, pools/pool selectors that match no pool, an owned IP with no usable interface;
all `facts.Problem` records.

Entry point: `l2_plan(facts, node, links=None, ignore_exclude_label=False,
default_interfaces=None) -> Plan`, over one `facts.ClusterFacts` snapshot
(`compute_plan` takes the same facts as separate iterables).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lbspeaker.cowmap import CowDict
from lbspeaker.election import elect_l2, l2_candidates, preference_scores
from lbspeaker.facts import (
    ClusterFacts,
    L2AdvertisementFacts,
    NodeFacts,
    Pool,
    Problem,
    ServiceFacts,
    ServiceKey,
    pool_of,
)
from lbspeaker.incremental import redo_all_after_error, to_redo
from lbspeaker.links import LinkInfo, missing_interfaces, select_interfaces


@dataclass(frozen=True)
class L2Announcement:
    """One IP this node announces: the Services behind it and the interfaces to answer on."""

    ip: str
    services: tuple[ServiceKey, ...]
    interfaces: tuple[str, ...]


@dataclass
class Plan:
    """The outcome: this node's announcements, the owner of every IP, and problems found."""

    node: str
    # Read-only (L2Planner hands out frozen copy-on-write maps).
    announce: Mapping[str, L2Announcement] = field(default_factory=dict)
    owners: Mapping[str, str | None] = field(default_factory=dict)  # ip -> elected node (None: nobody)
    service_owners: Mapping[ServiceKey, Mapping[str, str | None]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # From `L2Planner`: its count of plans, and the IPs that may differ from its plan before
    # (None: any may, as after a change of context); lets the speaker apply only those.
    generation: int = 0
    changed_ips: frozenset[str] | None = None

    def by_interface(self) -> dict[str, list[str]]:
        """{interface: [ip, ...]}: the shape `Announcer.set_owned` takes."""
        out: dict[str, list[str]] = {}
        for ann in self.announce.values():
            for ifname in ann.interfaces:
                out.setdefault(ifname, []).append(ann.ip)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def services_announced(self) -> dict[ServiceKey, list[str]]:
        """{service: [interfaces]} for the Services this node announces (for ServiceL2Status)."""
        out: dict[ServiceKey, set[str]] = {}
        for ann in self.announce.values():
            for svc in ann.services:
                out.setdefault(svc, set()).update(ann.interfaces)
        return {k: sorted(v) for k, v in sorted(out.items())}


# --- the plan ---------------------------------------------------------------------------------------


def advertisement_problems(
    node: str,
    nodes: Mapping[str, NodeFacts],
    pools: Mapping[str, Pool],
    advertisements: Sequence[L2AdvertisementFacts],
    links: Sequence[LinkInfo] | None,
) -> list[Problem]:
    """Bad L2Advertisement input worth a status/Event: names nothing real, or selects nothing."""
    out: list[Problem] = []
    me = nodes.get(node)
    for adv in sorted(advertisements, key=lambda a: a.name):
        if adv.node_selectors and nodes and not any(
            adv.selects_node(n) for n in nodes.values()
        ):
            out.append(Problem("L2Advertisement", adv.name, "NodeSelectorMatchesNothing",
                               "nodeSelectors match no node: nobody announces its pools"))
        for pool in adv.ip_address_pools:
            if pools and pool not in pools:
                out.append(Problem("L2Advertisement", adv.name, "UnknownPool",
                                   f"ipAddressPools names {pool!r}, which does not exist"))
        if adv.ip_address_pool_selectors and not adv.ip_address_pools and not any(
            adv.matches_pool(p) for p in pools.values()
        ):
            out.append(Problem("L2Advertisement", adv.name, "PoolSelectorMatchesNothing",
                               "ipAddressPoolSelectors match no IPAddressPool"))
        if (
            links is not None
            and adv.interfaces
            and me is not None
            and adv.selects_node(me)
        ):
            missing = missing_interfaces(links, list(adv.interfaces))
            if missing:
                out.append(Problem("L2Advertisement", adv.name, "InterfaceNotFound",
                                   f"node {node} has no interface {', '.join(missing)}"))
    return out


def compute_plan(
    node: str,
    services: Iterable[ServiceFacts],
    pools: Iterable[Pool],
    advertisements: Iterable[L2AdvertisementFacts],
    nodes: Iterable[NodeFacts],
    live_speakers: Iterable[str],
    links: Sequence[LinkInfo] | None = None,
    ignore_exclude_label: bool = False,
    default_interfaces: Sequence[str] | None = None,
) -> Plan:
    """The layer-2 plan for `node` (see the module docstring).

    `links` are this node's links (None: unknown, e.g. in a planner run for another
    node; no interface selection then). `default_interfaces` replaces the default
    choice for advertisements without `interfaces`.
    """
    pool_map = {p.name: p for p in pools}
    node_map = {n.name: n for n in nodes}
    advs = sorted(advertisements, key=lambda a: a.name)
    live = frozenset(live_speakers)
    announce: dict[str, L2Announcement] = {}
    owners: dict[str, str | None] = {}
    service_owners: dict[ServiceKey, dict[str, str | None]] = {}
    problems: list[Problem] = []

    # IP -> (union of candidates, services, advertisements that apply on this node, every
    # advertisement that applies, anchor IP)
    ip_candidates: dict[str, set[str]] = {}
    ip_services: dict[str, set[ServiceKey]] = {}
    ip_advs: dict[str, dict[str, L2AdvertisementFacts]] = {}
    ip_applying: dict[str, dict[str, L2AdvertisementFacts]] = {}
    ip_anchor: dict[str, str] = {}
    denied: set[ServiceKey] = set()
    svc_list = sorted(services, key=lambda s: s.key)
    for svc in svc_list:
        for ip in svc.ips:
            matching = _applying(svc, ip, pool_map, advs)
            if not matching:
                continue
            if _selectors_refused(svc, matching):
                if svc.key not in denied:
                    denied.add(svc.key)
                    problems.append(_shared_with_selectors(svc, matching))
                continue
            cands = l2_candidates(
                live, node_map, matching, svc.serving_endpoints, svc.etp_local, ignore_exclude_label,
            )
            ip_candidates.setdefault(ip, set()).update(cands)
            ip_services.setdefault(ip, set()).add(svc.key)
            ip_applying.setdefault(ip, {}).update((a.name, a) for a in matching)
            mine = ip_advs.setdefault(ip, {})
            me = node_map.get(node)
            for a in matching:
                if me is not None and a.selects_node(me):
                    mine[a.name] = a
            # Anchor: the first IP of the first Service (by key) holding this IP, MetalLB's
            # dual-stack rule; services are visited in key order so this is order-free.
            ip_anchor.setdefault(ip, svc.ips[0])

    for ip in sorted(ip_candidates):
        ip_cands = ip_candidates[ip]
        owner = elect_l2(ip_anchor[ip], ip_cands,
                         preference_scores(ip_cands, node_map, ip_applying[ip].values()))
        owners[ip] = owner
        for key in ip_services[ip]:
            service_owners.setdefault(key, {})[ip] = owner
        if owner != node:
            continue
        ifaces = _interfaces_for(list(ip_advs[ip].values()), links, default_interfaces)
        if links is not None and not ifaces:
            for key in sorted(ip_services[ip]):
                problems.append(Problem("Service", key, "NoInterface",
                                        f"node {node} owns {ip} but has no usable interface for it"))
        announce[ip] = L2Announcement(ip, tuple(sorted(ip_services[ip])), tuple(ifaces))

    problems[:0] = advertisement_problems(node, node_map, pool_map, advs, links)
    return Plan(node=node, announce=announce, owners=owners, service_owners=service_owners, problems=problems)


def l2_plan(
    facts: ClusterFacts,
    node: str,
    links: Sequence[LinkInfo] | None = None,
    ignore_exclude_label: bool = False,
    default_interfaces: Sequence[str] | None = None,
) -> Plan:
    """`compute_plan` over one `facts.ClusterFacts` snapshot: the speaker's entry point."""
    return compute_plan(node, facts.services, facts.pools.values(), facts.l2_advertisements,
                        facts.nodes.values(), facts.live_speakers, links, ignore_exclude_label,
                        default_interfaces)


def _applying(svc: ServiceFacts, ip: str, pool_map: Mapping[str, Pool],
              advs: Sequence[L2AdvertisementFacts]) -> list[L2AdvertisementFacts]:
    """The L2Advertisements that apply to `ip` of `svc` (they match its pool and the Service):
    one reading for the full and the incremental plan, so the two cannot drift apart."""
    pool = pool_of(svc, ip, pool_map)
    if pool is None:
        return []
    return [a for a in advs if a.matches_pool(pool) and a.matches_service(svc)]


def _selectors_refused(svc: ServiceFacts, matching: Sequence[L2AdvertisementFacts]) -> bool:
    """A shared IP selected by serviceSelectors is not announced (see `_shared_with_selectors`)."""
    return bool(svc.sharing_key) and any(a.service_selectors for a in matching)


def _shared_with_selectors(svc: ServiceFacts, matching: Sequence[L2AdvertisementFacts]) -> Problem:
    names = ", ".join(sorted(a.name for a in matching if a.service_selectors))
    return Problem(
        "Service", svc.key, "SharedIPWithServiceSelectors",
        f"not announced in layer 2: it has the allow-shared-ip annotation and L2Advertisement {names} "
        "selects it by serviceSelectors (Services sharing an IP could elect different nodes; MetalLB "
        "refuses the same); remove the annotation, or change those serviceSelectors so they do not select "
        "it (an L2Advertisement without serviceSelectors still announces it)")


def _interfaces_for(
    advs: Sequence[L2AdvertisementFacts],
    links: Sequence[LinkInfo] | None,
    default_interfaces: Sequence[str] | None,
) -> list[str]:
    if links is None:
        return sorted({i for a in advs for i in a.interfaces})
    out: set[str] = set()
    for adv in advs:
        if adv.interfaces:
            out.update(select_interfaces(links, list(adv.interfaces)))
        elif default_interfaces:
            out.update(select_interfaces(links, list(default_interfaces)))
        else:
            out.update(select_interfaces(links, None))
    return sorted(out)


# --- the same plan, redone only for what changed ----------------------------------------------------


@dataclass(frozen=True)
class _Share:
    """One Service's part in one of its IPs: its candidates, the matching advertisements that
    select this node (they choose the interfaces if this node owns the IP), and every matching
    advertisement (their preferences score the candidates)."""

    candidates: frozenset[str]
    mine: tuple[L2AdvertisementFacts, ...]
    applying: tuple[L2AdvertisementFacts, ...] = ()


class L2Planner:
    """`compute_plan` for one node, redoing only what changed since the last call (the speaker's).

    Why: at 10,000 Services a full plan costs more than the events it follows. A Service's
    share of an IP (candidates, advertisements selecting this node) depends only on that
    Service and the *context* (pools, advertisements, nodes, live speakers, links, flags);
    an IP's owner only on the shares of the Services holding it. So a changed context
    redoes everything, a changed Service only the IPs it held or holds. Pure (no I/O); the
    result equals `compute_plan` over the same facts, after any sequence of calls
    (tests/unit/test_plan_incremental.py). An exception leaves it to redo everything next time.
    """

    def __init__(self, node: str, ignore_exclude_label: bool = False,
                 default_interfaces: Sequence[str] | None = None) -> None:
        self.node = node
        self.ignore_exclude_label = ignore_exclude_label
        self.default_interfaces = list(default_interfaces) if default_interfaces else None
        self._context: tuple[object, ...] | None = None
        self._services: dict[ServiceKey, ServiceFacts] = {}
        self._shares: dict[ServiceKey, dict[str, _Share]] = {}
        self._ip_services: dict[str, set[ServiceKey]] = {}
        # Copy-on-write: each plan gets a frozen copy that costs what changed since the last.
        self._owners: CowDict[str, str | None] = CowDict()
        self._service_owners: CowDict[ServiceKey, dict[str, str | None]] = CowDict()  # inner dicts: replaced
        self._announce: CowDict[str, L2Announcement] = CowDict()
        self._no_interface: dict[str, list[Problem]] = {}
        self._adv_problems: list[Problem] = []
        self._denied: dict[ServiceKey, Problem] = {}  # SharedIPWithServiceSelectors
        self._node_map: dict[str, NodeFacts] = {}
        self.replanned = 0  # Services redone by the last call
        self.generation = 0  # plans made (Plan.generation)

    @redo_all_after_error
    def plan(
        self,
        services: Mapping[ServiceKey, ServiceFacts],
        changed: Iterable[ServiceKey] | None,
        pools: Iterable[Pool],
        advertisements: Iterable[L2AdvertisementFacts],
        nodes: Iterable[NodeFacts],
        live_speakers: Iterable[str],
        links: Sequence[LinkInfo] | None = None,
    ) -> Plan:
        """The plan over `services` (keyed by `ServiceFacts.key`); `changed`: the keys that may
        differ from the last call (None: unknown, every Service is compared)."""
        pool_map = {p.name: p for p in sorted(pools, key=lambda p: p.name)}
        node_map = {n.name: n for n in sorted(nodes, key=lambda n: n.name)}
        advs = tuple(sorted(advertisements, key=lambda a: a.name))
        live = frozenset(live_speakers)
        link_list = tuple(links) if links is not None else None
        context = (tuple(pool_map.values()), tuple(node_map.values()), advs, live, link_list)
        reset = context != self._context
        if reset:
            self._reset()
            self._adv_problems = advertisement_problems(self.node, node_map, pool_map, advs, link_list)
            self._node_map = node_map
            self._context = context
        me = node_map.get(self.node)
        affected: set[str] = set()
        self.replanned = 0
        # (a key is in _services exactly when it is in _shares)
        for key, new in to_redo(services, self._services, changed, reset):
            self.replanned += 1
            for ip in self._shares.pop(key, {}):
                self._ip_services[ip].discard(key)
                affected.add(ip)
            self._service_owners.pop(key, None)
            self._services.pop(key, None)
            self._denied.pop(key, None)
            if new is None:
                continue
            self._services[key] = new
            shares = self._shares[key] = {}
            for ip in new.ips:
                matching = _applying(new, ip, pool_map, advs)
                if not matching:
                    continue
                if _selectors_refused(new, matching):
                    self._denied.setdefault(key, _shared_with_selectors(new, matching))
                    continue
                cands = l2_candidates(live, node_map, matching, new.serving_endpoints, new.etp_local,
                                      self.ignore_exclude_label)
                mine = tuple(a for a in matching if me is not None and a.selects_node(me))
                shares[ip] = _Share(frozenset(cands), mine, tuple(matching))
                self._ip_services.setdefault(ip, set()).add(key)
                affected.add(ip)
        for ip in affected:
            self._replan_ip(ip, link_list)
        problems = list(self._adv_problems)
        problems.extend(self._denied[k] for k in sorted(self._denied))
        for ip in sorted(self._no_interface):
            problems.extend(self._no_interface[ip])
        self.generation += 1
        return Plan(node=self.node, announce=self._announce.freeze(), owners=self._owners.freeze(),
                    service_owners=self._service_owners.freeze(), problems=problems,
                    generation=self.generation, changed_ips=None if reset else frozenset(affected))

    def _reset(self) -> None:
        self._services, self._shares, self._ip_services = {}, {}, {}
        self._owners, self._service_owners, self._announce = CowDict(), CowDict(), CowDict()
        self._no_interface = {}
        self._denied = {}

    def _replan_ip(self, ip: str, links: Sequence[LinkInfo] | None) -> None:
        keys = self._ip_services.get(ip)
        if not keys:
            for table in (self._ip_services, self._owners, self._announce, self._no_interface):
                table.pop(ip, None)
            return
        ordered = sorted(keys)
        shares = [self._shares[k][ip] for k in ordered]
        # anchor: the first IP of the first Service (by key) holding this IP, as in compute_plan
        cands = set().union(*(s.candidates for s in shares))
        applying = {a.name: a for s in shares for a in s.applying}
        owner = elect_l2(self._services[ordered[0]].ips[0], cands,
                         preference_scores(cands, self._node_map, applying.values()))
        self._owners[ip] = owner
        for k in ordered:
            self._service_owners[k] = {**(self._service_owners.get(k) or {}), ip: owner}
        if owner != self.node:
            self._announce.pop(ip, None)
            self._no_interface.pop(ip, None)
            return
        mine = {a.name: a for s in shares for a in s.mine}
        ifaces = _interfaces_for(list(mine.values()), links, self.default_interfaces)
        if links is not None and not ifaces:
            message = f"node {self.node} owns {ip} but has no usable interface for it"
            self._no_interface[ip] = [Problem("Service", k, "NoInterface", message) for k in ordered]
        else:
            self._no_interface.pop(ip, None)
        self._announce[ip] = L2Announcement(ip, tuple(ordered), tuple(ifaces))
