"""BGP plan: cluster state + this node -> the sessions this node opens and the routes it announces.

Pure: plain data in, plain data out. The speaker's BGP adapter (`speaker/bgp.py`)
feeds it from its caches and hands the result to `ExaBGPManager`.

Unlike layer 2 there is no election: every selected node announces (the router
does ECMP across them), so the plan only needs this node's facts, MetalLB's way:

1. **Peers.** A BGPPeer applies when its `nodeSelectors` match this node (empty:
   every node). It becomes a `config.PeerSpec` (router ID defaults to the node's
   IPv4 address; the Node's InternalIPs are the next hops of routes of the other family
   over a dual-stack session; the MD5 password from `passwordSecret` is resolved by the caller
   and passed in `passwords`). A peer whose Secret cannot be read, or that ExaBGP
   cannot express (`config.validate_peer` fatal problems), is left out and its
   reason kept in `peer_reasons`, so the adapter can show it in the BGPPeer's
   `status.sessions` for this node. An eBGP peer without `ebgpMultiHop` whose
   address is on none of this node's networks is reported (with TTL 1 the
   session cannot come up) but still configured, in case routing knows better.
2. **Node.** A node labelled `node.kubernetes.io/exclude-from-external-load-balancers`
   (unless told to ignore it) or with `NetworkUnavailable` keeps its sessions but
   announces nothing.
3. **Services.** Each ingress IP's pool (the `ip-allocated-from-pool` annotation,
   else the pool containing the IP) picks the BGPAdvertisements that match the pool
   (`ipAddressPools` / `ipAddressPoolSelectors`, both empty = every pool), match the
   Service (`serviceSelectors`, empty = every Service; MetalLB's `bgpAdsForService`) and
   select this node (`nodeSelectors`). An advertisement with serviceSelectors announces
   host routes only (the schema refuses an aggregation with them: an aggregate would
   attract other Services' IPs). ETP Cluster: announced while any endpoint serves
   anywhere; ETP Local: only with a serving endpoint on this node.
4. **Routes.** `routes.desired_routes` turns the result into routes per peer
   (aggregation, communities and aliases, `peers`, localPref to iBGP only).
   A Service whose advertisements disagree on localPref gets a `LocalPrefConflict`
   problem naming them; the advertisement first by name wins (stable: no flapping).

Problems are `facts.Problem` records (kind, name, reason, message), the same type
the layer-2 plan uses, so the speaker reports both the same way.

Entry point: `bgp_plan(facts, node, passwords=None, node_networks=None,
ignore_exclude_label=False) -> BGPPlan`, over one `facts.ClusterFacts` snapshot
(`compute_bgp_plan` takes the same facts as separate arguments). BGPPeer,
BGPAdvertisement and Community objects are read in `lbspeaker.facts`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lbspeaker.api.addresses import AddressRange
from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.plan import DesiredSession, plan_sessions
from lbspeaker.bfd.session import SessionKey
from lbspeaker.bgp.aggregation import aggregation_problems, prefix_within
from lbspeaker.bgp.config import PeerSpec, is_fatal, peer_spec_from_bgppeer, validate_peer
from lbspeaker.bgp.routes import (
    Announcement,
    RouteAttrs,
    RouteKey,
    RouteParts,
    desired_routes,
    route_attrs,
    route_parts,
    route_prefix,
)
from lbspeaker.cowmap import CowDict
from lbspeaker.facts import (
    AdvertisementSpec,
    BGPAdvertisementFacts,
    ClusterFacts,
    NodeFacts,
    PeerFacts,
    Pool,
    Problem,
    ServiceFacts,
    ServiceKey,
    pool_of,
)
from lbspeaker.incremental import redo_all_after_error, to_redo

ANY_OTHER_PEER = "\x00other"  # stands for every BGPPeer no advertisement names in `peers`


@dataclass(frozen=True)
class LocalPrefLoss:
    """BGPAdvertisement `name` loses a localPref disagreement to `winner` (first by name) where
    both apply: the same pool(s), on the same node(s), to the same peer(s)."""

    name: str
    local_pref: int
    winner: str
    winner_local_pref: int
    pools: tuple[str, ...]
    nodes: tuple[str, ...]


def same_prefix(a: BGPAdvertisementFacts, b: BGPAdvertisementFacts, families: frozenset[int]) -> bool:
    """Whether two advertisements send one prefix for a pool of `families`: the same aggregation
    length in a family the pool has (a /24 aggregate and the /32s are different routes)."""
    return ((4 in families and a.route.aggregation_length == b.route.aggregation_length)
            or (6 in families and a.route.aggregation_length_v6 == b.route.aggregation_length_v6))


def local_pref_conflicts(
    advertisements: Iterable[BGPAdvertisementFacts],
    pools: Iterable[Pool],
    nodes: Mapping[str, Mapping[str, str]],
) -> dict[str, list[LocalPrefLoss]]:
    """Cluster-wide: which advertisements' localPref is overridden, and by which, {loser: losses}.

    The rule of `routes.desired_routes` (what goes on the wire), applied to every place a
    route could be sent: for each (pool, node, peer) slot, among the advertisements that
    match the pool, select the node and include the peer (`peers` empty: every peer) and
    set localPref, the first by name wins among those that send the same prefix (`same_prefix`:
    a /24 aggregate and the /32s are different routes, each with its own localPref on the wire);
    one whose value differs loses. Advertisements on
    disjoint nodes or peers do not conflict (different localPref per node is how operators
    prefer some nodes). `nodes`: node name -> labels. Pure and order-independent, so the
    controller recomputing it yields the same answer (no flapping).
    """
    advs = sorted((a for a in advertisements if not a.error and a.route.local_pref is not None),
                  key=lambda a: a.name)
    if len(advs) < 2:
        return {}
    named = sorted({p for a in advs for p in a.route.peers})
    peer_keys = [*named, ANY_OTHER_PEER]
    # group pools and nodes by which advertisements cover them: few distinct sets in practice
    pool_sets: dict[tuple[frozenset[str], frozenset[int]], list[str]] = {}
    for pool in pools:
        key = (frozenset(a.name for a in advs if a.matches_pool(pool)), pool.families)
        pool_sets.setdefault(key, []).append(pool.name)
    node_sets: dict[frozenset[str], list[str]] = {}
    for node, labels in nodes.items():
        node_sets.setdefault(frozenset(a.name for a in advs if a.selects_node(labels)), []).append(node)
    by_name = {a.name: a for a in advs}
    found: dict[tuple[str, str], tuple[set[str], set[str]]] = {}  # (loser, winner) -> (pools, nodes)
    for (pool_set, families), pool_names in pool_sets.items():
        for node_set, node_names in node_sets.items():
            both = pool_set & node_set
            if len(both) < 2:
                continue
            for peer in peer_keys:
                slot = sorted(n for n in both
                              if not by_name[n].route.peers or peer in by_name[n].route.peers)
                if len(slot) < 2:
                    continue
                for i, n in enumerate(slot[1:], 1):
                    # the first by name that sends the same prefix (aggregation length) wins
                    first = next((by_name[m] for m in slot[:i]
                                  if same_prefix(by_name[m], by_name[n], families)), None)
                    if first is not None and by_name[n].route.local_pref != first.route.local_pref:
                        where = found.setdefault((n, first.name), (set(), set()))
                        where[0].update(pool_names)
                        where[1].update(node_names)
    out: dict[str, list[LocalPrefLoss]] = {}
    for (loser, winner), (pool_names_, node_names_) in sorted(found.items()):
        out.setdefault(loser, []).append(LocalPrefLoss(
            loser, int(by_name[loser].route.local_pref or 0), winner,
            int(by_name[winner].route.local_pref or 0), tuple(sorted(pool_names_)),
            tuple(sorted(node_names_))))
    return out


# --- the plan ------------------------------------------------------------------------------------------


@dataclass
class BGPPlan:
    """What this node does over BGP."""

    node: str
    peers: list[PeerSpec] = field(default_factory=list)  # sessions to configure (valid ones)
    selected_peers: list[str] = field(default_factory=list)  # every BGPPeer selecting this node
    peer_reasons: dict[str, str] = field(default_factory=dict)  # peer -> why it is down/not configured
    # read-only (the planner's are shared with the next plan, `cowmap`)
    routes: Mapping[str, Mapping[str, RouteAttrs]] = field(default_factory=dict)
    service_peers: Mapping[ServiceKey, list[str]] = field(default_factory=dict)  # for ServiceBGPStatus
    announced: Mapping[ServiceKey, list[str]] = field(default_factory=dict)  # service -> IPs
    problems: list[Problem] = field(default_factory=list)
    bfd_sessions: dict[SessionKey, DesiredSession] = field(default_factory=dict)  # BFD to run
    # From `BGPPlanner` (not compared: bookkeeping, not what the node does): its call count, and
    # the Service keys and (peer, prefix) routes that call redid (None: everything, e.g. a new
    # context), so the adapter can apply a plan that follows the one it applied last by those alone.
    generation: int = field(default=0, compare=False)
    changed_services: frozenset[ServiceKey] | None = field(default=None, compare=False)
    changed_routes: frozenset[RouteKey] | None = field(default=None, compare=False)

    def prefix_count(self) -> dict[str, int]:
        """Announced prefixes per peer (for the metric)."""
        return {peer: len(routes) for peer, routes in sorted(self.routes.items())}


def on_node_network(address: str, networks: Iterable[str]) -> bool:
    """Whether `address` lies in one of the node's networks (CIDRs of its interface addresses)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            n = ipaddress.ip_network(net, strict=False)
        except ValueError:
            continue
        if n.version == addr.version and addr in n and n.prefixlen < n.max_prefixlen:
            return True
    return False


def node_ipv4(addresses: Iterable[str]) -> str | None:
    """The first IPv4 address (the default BGP router ID)."""
    for a in addresses:
        try:
            if ipaddress.ip_address(a).version == 4:
                return a
        except ValueError:
            continue
    return None


def select_peers(
    node: str,
    labels: Mapping[str, str],
    peers: Iterable[PeerFacts],
    passwords: Mapping[str, str | None],
    router_id: str | None,
    node_networks: Sequence[str] | None,
    plan: BGPPlan,
    node_addresses: Sequence[str] = (),
) -> None:
    """Step 1 of the module docstring; fills plan.peers/selected_peers/peer_reasons/problems."""
    for pf in sorted(peers, key=lambda p: p.name):
        if pf.spec is None:
            plan.problems.append(
                Problem("BGPPeer", pf.name, "InvalidPeer", f"cannot use BGPPeer: {pf.error}"))
            continue
        if not pf.selects_node(labels):
            continue
        plan.selected_peers.append(pf.name)
        password: str | None = None
        if pf.secret_ref is not None:
            if pf.name not in passwords or passwords[pf.name] is None:
                ns, name = pf.secret_ref
                where = f"{ns}/{name}" if ns else name
                reason = f"passwordSecret {where}: Secret or its key 'password' cannot be read"
                plan.peer_reasons[pf.name] = reason
                plan.problems.append(Problem("BGPPeer", pf.name, "PasswordSecretMissing", reason))
                continue
            password = passwords[pf.name]
        spec = peer_spec_from_bgppeer(pf.name, pf.spec, router_id, password, node_addresses)
        problems = validate_peer(spec)
        fatal = [p.message for p in problems if is_fatal(p)]
        plan.problems += problems
        if fatal:
            plan.peer_reasons[pf.name] = "not configured: " + "; ".join(fatal)
            continue
        if (
            node_networks is not None
            and spec.is_ebgp
            and not spec.ebgp_multihop
            and not on_node_network(spec.peer_address, node_networks)
        ):
            reason = (f"peerAddress {spec.peer_address} is on no network of node {node} and ebgpMultiHop "
                      "is off: the session is sent with TTL 1 and cannot come up")
            plan.peer_reasons[pf.name] = reason
            plan.problems.append(Problem("BGPPeer", pf.name, "PeerNotOnNodeNetwork", reason))
        plan.peers.append(spec)


def node_announces(node: NodeFacts | None, ignore_exclude_label: bool = False) -> tuple[bool, str]:
    """Step 2: (whether this node announces at all, why not)."""
    if node is None:
        return False, "the Node object is not known yet"
    if node.network_unavailable:
        return False, "the node has NetworkUnavailable=True"
    if not ignore_exclude_label and EXCLUDE_FROM_LB_LABEL in node.labels:
        return False, f"the node is labelled {EXCLUDE_FROM_LB_LABEL}"
    return True, ""


def service_wanted_here(svc: ServiceFacts, node: str) -> bool:
    """ETP Cluster: any serving endpoint anywhere; ETP Local: a serving endpoint on this node."""
    if svc.etp_local:
        return node in svc.serving_endpoints
    return len(svc.serving_endpoints) > 0


@functools.lru_cache(maxsize=65536)
def _prefix_within(prefix: str, ranges: tuple[AddressRange, ...]) -> bool:
    """Cached: asked again for each IP of every Service a plan redoes."""
    return prefix_within(ipaddress.ip_network(prefix), ranges)


def _within_pool(ip: str, adv: BGPAdvertisementFacts, pool: Pool, problems: list[Problem]) -> bool:
    """Last line of defence: never announce a prefix with addresses outside the pool (the
    controller already marks such an advertisement Ready=False; `bgp.aggregation`)."""
    try:
        prefix_text = route_prefix(ip, adv.route)
    except ValueError:
        return True  # desired_routes reports an impossible prefix itself
    if _prefix_within(prefix_text, pool.ranges):
        return True
    prefix = ipaddress.ip_network(prefix_text)
    problems.append(Problem(
        "BGPAdvertisement", adv.name, "AggregationOutsidePool",
        f"not announcing {prefix} for {ip}: it covers addresses outside pool {pool.name!r}; "
        + "; ".join(aggregation_problems(pool.name, pool.ranges, adv.route.aggregation_length,
                                         adv.route.aggregation_length_v6) or ["lengthen the aggregation"])))
    return False


def service_announcements(
    svc: ServiceFacts,
    node: str,
    labels: Mapping[str, str],
    pools: Mapping[str, Pool],
    advertisements: Sequence[BGPAdvertisementFacts],
    announcing: bool,
) -> tuple[list[Announcement], list[Problem]]:
    """Steps 3-4 for one Service: what this node announces of it (`announcing`: the node announces
    at all and has peers), and its problems (AggregationOutsidePool, LocalPrefConflict).

    `advertisements` sorted by name. One Announcement per group of IPs sharing advertisements
    (dual stack from two pools); keys get a suffix ("key\x00i") so `routes.desired_routes`
    does not merge them (the callers strip it).
    """
    problems: list[Problem] = []
    groups: dict[tuple[str, ...], list[str]] = {}  # advertisement names -> IPs
    by_name: dict[str, AdvertisementSpec] = {}
    conflicts: dict[str, int] = {}
    for ip in svc.ips:
        pool = pool_of(svc, ip, pools)
        if pool is None:
            continue
        here = [a for a in advertisements if a.matches_pool(pool) and a.matches_service(svc)
                and a.selects_node(labels) and _within_pool(ip, a, pool, problems)]
        # Only advertisements that apply on this node can disagree here: different localPref
        # for different nodes (zone a prefers 100, zone b 200) is a design, not a conflict.
        prefs = {a.name: a.route.local_pref for a in here if a.route.local_pref is not None}
        if len(set(prefs.values())) > 1:
            conflicts.update(prefs)
        if not here:
            continue
        for a in here:
            by_name[a.name] = a.route
        groups.setdefault(tuple(a.name for a in here), []).append(ip)
    if conflicts:
        first = min(conflicts)
        problems.append(Problem(
            "Service", svc.key, "LocalPrefConflict",
            "BGPAdvertisements disagree on localPref: "
            + ", ".join(f"{n}={v}" for n, v in sorted(conflicts.items()))
            + f"; using {conflicts[first]} from {first} (first by name)",
        ))
    if not groups or not announcing or not service_wanted_here(svc, node):
        return [], problems
    return [Announcement(f"{svc.key}\x00{i}", tuple(ips), tuple(by_name[n] for n in names))
            for i, (names, ips) in enumerate(sorted(groups.items()))], problems


def compute_bgp_plan(
    node: str,
    node_facts: NodeFacts | None,
    services: Iterable[ServiceFacts],
    pools: Iterable[Pool],
    advertisements: Iterable[BGPAdvertisementFacts],
    peers: Iterable[PeerFacts],
    aliases: Mapping[str, str] | None = None,
    passwords: Mapping[str, str | None] | None = None,
    node_addresses: Sequence[str] = (),
    node_networks: Sequence[str] | None = None,
    ignore_exclude_label: bool = False,
    bfd_profiles: Mapping[str, BFDProfileSpec] | None = None,
    bfd_invalid: Mapping[str, str] | None = None,
) -> BGPPlan:
    """The BGP plan for `node` (see the module docstring).

    `bfd_profiles`: the BFDProfiles by name (`bfd_invalid`: {name: error} of those that do not
    parse). The configured peers that name a `bfdProfile` get a BFD session each
    (`bfd.plan.plan_sessions`); what cannot run is a BGPPeer problem. BGP never waits for BFD.

    `passwords`: BGPPeer name -> the value of its `passwordSecret` (None or absent:
    unreadable). `node_addresses`: the Node's InternalIPs (router ID default).
    `node_networks`: CIDRs of this node's interface addresses (None: unknown, no check).
    """
    plan = BGPPlan(node=node)
    labels = dict(node_facts.labels) if node_facts is not None else {}
    select_peers(node, labels, peers, passwords or {}, node_ipv4(node_addresses), node_networks, plan,
                 node_addresses)

    advs = sorted(advertisements, key=lambda a: a.name)
    for a in advs:
        if a.error:
            plan.problems.append(Problem("BGPAdvertisement", a.name, "InvalidAdvertisement", a.error))
    pool_map = {p.name: p for p in pools}
    for a in advs:
        for name in a.ip_address_pools:
            if pool_map and not a.error and name not in pool_map:
                plan.problems.append(Problem("BGPAdvertisement", a.name, "UnknownPool",
                                             f"ipAddressPools names {name!r}, which does not exist"))

    announces, _why = node_announces(node_facts, ignore_exclude_label)
    announcing = announces and bool(plan.peers)
    announcements: list[Announcement] = []
    for svc in sorted(services, key=lambda s: s.key):
        anns, problems = service_announcements(svc, node, labels, pool_map, advs, announcing)
        announcements += anns
        plan.problems += problems

    want = desired_routes(announcements, plan.peers, aliases or {})
    plan.routes = want.routes
    service_peers: dict[ServiceKey, list[str]] = {}
    announced: dict[ServiceKey, list[str]] = {}
    for ann_key, peer_names in want.service_peers.items():
        key = ann_key.split("\x00", 1)[0]
        service_peers[key] = sorted(set(service_peers.get(key, [])) | set(peer_names))
    for ann in announcements:
        key = ann.service.split("\x00", 1)[0]
        if key in service_peers:
            announced[key] = sorted(set(announced.get(key, [])) | set(ann.ips))
    plan.service_peers, plan.announced = service_peers, announced
    for problem in want.problems:
        if problem.reason == "LocalPrefConflict":
            continue  # reported per Service above, with the advertisement names
        if problem.kind == "Service":  # the key of an Announcement above: strip its suffix
            problem = Problem("Service", problem.name.split("\x00", 1)[0], problem.reason, problem.message)
        plan.problems.append(problem)
    add_bfd(plan, bfd_profiles, bfd_invalid)
    # stable order, no duplicates: the adapter turns *new* problems into Events
    plan.problems = sorted(set(plan.problems), key=lambda p: (p.kind, p.name, p.reason, p.message))
    return plan


def bgp_plan(
    facts: ClusterFacts,
    node: str,
    passwords: Mapping[str, str | None] | None = None,
    node_networks: Sequence[str] | None = None,
    ignore_exclude_label: bool = False,
) -> BGPPlan:
    """`compute_bgp_plan` over one `facts.ClusterFacts` snapshot: the speaker's entry point.

    The router ID default is the Node's first InternalIP of family 4 (`NodeFacts.internal_ips`).
    """
    me = facts.nodes.get(node)
    return compute_bgp_plan(
        node, me, facts.services, facts.pools.values(), facts.bgp_advertisements, facts.peers,
        aliases=facts.aliases, passwords=passwords, node_addresses=me.internal_ips if me else (),
        node_networks=node_networks, ignore_exclude_label=ignore_exclude_label,
    )


# --- the same plan, redone only for what changed ------------------------------------------------------


@dataclass(frozen=True)
class _ServiceShare:
    """One Service's part in the plan: its problems, the routes parts of its announcements, the
    peers it goes to and its announced IPs (both None when it goes to no peer)."""

    problems: tuple[Problem, ...]
    parts: RouteParts
    peers: list[str] | None
    announced: list[str] | None


def _order(p: Problem) -> tuple[str, str, str, str]:
    return (p.kind, p.name, p.reason, p.message)


def add_bfd(plan: BGPPlan, profiles: Mapping[str, BFDProfileSpec] | None,
            invalid: Mapping[str, str] | None = None) -> None:
    """The BFD sessions of the plan's configured peers that name a `bfdProfile`, and the problems
    of those that cannot run as written (BGPPeer problems: BGP itself never waits for BFD)."""
    plan.bfd_sessions, problems = plan_sessions(plan.peers, profiles or {}, invalid)
    plan.problems += [Problem("BGPPeer", p.peer, p.reason, p.message) for p in problems]


class BGPPlanner:
    """`compute_bgp_plan` for one node, redoing only what changed since the last call (the speaker's).

    Why: as `plan.L2Planner`. A Service's announcements, problems and route parts depend only
    on the Service and the *context* (this Node, pools, advertisements, peers, aliases,
    passwords, addresses, networks); a prefix's attributes only on the parts of the Services
    announced under it (several, when aggregated). So a changed context redoes everything,
    a changed Service only itself and the prefixes it had or has. Pure (no I/O); equal to
    `compute_bgp_plan` after any sequence of calls (tests/unit/test_plan_incremental.py).

    Each plan says what it redid (`BGPPlan.generation`, `changed_services`, `changed_routes`)
    so the adapter can apply only that. Its route tables and Service maps are `cowmap` snapshots:
    what did not change is shared with the previous plan, nothing is copied whole, and a plan
    already returned never changes.
    """

    def __init__(self, node: str, ignore_exclude_label: bool = False) -> None:
        self.node = node
        self.ignore_exclude_label = ignore_exclude_label
        self._context: tuple[object, ...] | None = None
        self._base = BGPPlan(node=node)  # peers and the problems of the context
        self._labels: dict[str, str] = {}
        self._pools: dict[str, Pool] = {}
        self._advs: list[BGPAdvertisementFacts] = []
        self._aliases: Mapping[str, str] = {}
        self._announcing = False
        self._services: dict[ServiceKey, ServiceFacts] = {}
        self._shares: dict[ServiceKey, _ServiceShare] = {}
        self._route_services: dict[RouteKey, set[ServiceKey]] = {}
        # copy on write (`cowmap`): a plan holds snapshots, never changed by later calls
        self._routes: dict[str, CowDict[str, RouteAttrs]] = {}
        self._service_peers: CowDict[ServiceKey, list[str]] = CowDict()
        self._announced: CowDict[ServiceKey, list[str]] = CowDict()
        self._problems: dict[Problem, int] = {}  # of the Services, counted
        self._sorted: list[Problem] | None = None
        self.replanned = 0  # Services redone by the last call
        self.generation = 0  # plans made (BGPPlan.generation)

    @redo_all_after_error
    def plan(self, services: Mapping[ServiceKey, ServiceFacts], changed: Iterable[ServiceKey] | None,
             node_facts: NodeFacts | None, pools: Iterable[Pool],
             advertisements: Iterable[BGPAdvertisementFacts], peers: Iterable[PeerFacts],
             aliases: Mapping[str, str] | None = None, passwords: Mapping[str, str | None] | None = None,
             node_addresses: Sequence[str] = (), node_networks: Sequence[str] | None = None,
             bfd_profiles: Mapping[str, BFDProfileSpec] | None = None,
             bfd_invalid: Mapping[str, str] | None = None) -> BGPPlan:
        """The plan over `services` (keyed by `ServiceFacts.key`); `changed`: the keys that may
        differ from the last call (None: unknown, every Service is compared). BFD as in
        `compute_bgp_plan` (cheap: planned anew every call)."""
        aliases, passwords = aliases or {}, passwords or {}
        pool_list = tuple(sorted(pools, key=lambda p: p.name))
        advs = tuple(sorted(advertisements, key=lambda a: a.name))
        peer_list = tuple(sorted(peers, key=lambda p: p.name))
        context = (node_facts, pool_list, advs, peer_list, tuple(sorted(aliases.items())),
                   tuple(sorted(passwords.items(), key=lambda kv: kv[0])), tuple(node_addresses),
                   tuple(node_networks) if node_networks is not None else None)
        reset = context != self._context
        if reset:
            self._reset(node_facts, pool_list, advs, peer_list, aliases, passwords, node_addresses,
                        node_networks)
            self._context = context
        affected: set[RouteKey] = set()
        redone: set[ServiceKey] = set()
        self.replanned = 0
        for key, new in to_redo(services, self._services, changed, reset):
            self.replanned += 1
            redone.add(key)
            share = self._shares.pop(key, None)
            self._services.pop(key, None)
            if share is not None:
                self._forget(key, share, affected)
            if new is not None:
                self._services[key] = new
                share = self._share(new)
                self._shares[key] = share
                self._learn(key, share, affected)
            self._place(key, share if new is not None else None)
        for route in affected:
            self._remerge(route)
        if self._sorted is None:
            self._sorted = sorted(set(self._base.problems) | set(self._problems), key=_order)
        base = self._base
        self.generation += 1
        plan = BGPPlan(node=self.node, peers=list(base.peers), selected_peers=list(base.selected_peers),
                       peer_reasons=dict(base.peer_reasons),
                       routes={peer: table.freeze() for peer, table in self._routes.items()},
                       service_peers=self._service_peers.freeze(), announced=self._announced.freeze(),
                       problems=list(self._sorted), generation=self.generation,
                       changed_services=None if reset else frozenset(redone),
                       changed_routes=None if reset else frozenset(affected))
        if bfd_profiles is not None:
            before = len(plan.problems)
            add_bfd(plan, bfd_profiles, bfd_invalid)
            if len(plan.problems) != before:  # else still sorted and unique: no sort of every problem
                plan.problems = sorted(set(plan.problems), key=_order)
        return plan

    def _place(self, key: ServiceKey, share: _ServiceShare | None) -> None:
        """The Service's peers and announced IPs (`share` None: gone), changed only if they differ."""
        peers = share.peers if share is not None and share.announced is not None else None
        announced = share.announced if peers is not None and share is not None else None
        if self._service_peers.get(key) != peers or self._announced.get(key) != announced:
            if peers is None or announced is None:
                self._service_peers.pop(key)
                self._announced.pop(key)
            else:
                self._service_peers[key], self._announced[key] = peers, announced

    def _reset(self, node_facts: NodeFacts | None, pools: Sequence[Pool],
               advs: Sequence[BGPAdvertisementFacts], peers: Sequence[PeerFacts], aliases: Mapping[str, str],
               passwords: Mapping[str, str | None], node_addresses: Sequence[str],
               node_networks: Sequence[str] | None) -> None:
        """The context's part of `compute_bgp_plan` (peers, advertisement problems), no Service yet."""
        base = compute_bgp_plan(self.node, node_facts, (), pools, advs, peers, aliases, passwords,
                                node_addresses, node_networks, self.ignore_exclude_label)
        self._base = base
        self._labels = dict(node_facts.labels) if node_facts is not None else {}
        self._pools = {p.name: p for p in pools}
        self._advs = list(advs)
        self._aliases = dict(aliases)
        announces, _why = node_announces(node_facts, self.ignore_exclude_label)
        self._announcing = announces and bool(base.peers)
        self._services, self._shares, self._route_services, self._routes = {}, {}, {}, {}
        self._service_peers, self._announced, self._problems, self._sorted = CowDict(), CowDict(), {}, None

    def _share(self, svc: ServiceFacts) -> _ServiceShare:
        anns, problems = service_announcements(svc, self.node, self._labels, self._pools, self._advs,
                                               self._announcing)
        parts = route_parts(anns, self._base.peers, self._aliases)
        for problem in parts.problems:
            if problem.kind == "Service":  # the key of an Announcement: strip its suffix
                problem = Problem("Service", svc.key, problem.reason, problem.message)
            problems.append(problem)
        peers = sorted({p for names in parts.service_peers.values() for p in names}) or None
        announced = sorted({ip for a in anns for ip in a.ips}) if peers else None
        return _ServiceShare(tuple(set(problems)), parts, peers, announced)

    def _learn(self, key: ServiceKey, share: _ServiceShare, affected: set[RouteKey]) -> None:
        for route in share.parts.standard:
            self._route_services.setdefault(route, set()).add(key)
            affected.add(route)
        for problem in share.problems:
            n = self._problems.get(problem, 0)
            self._problems[problem] = n + 1
            if not n:
                self._sorted = None

    def _forget(self, key: ServiceKey, share: _ServiceShare, affected: set[RouteKey]) -> None:
        for route in share.parts.standard:
            self._route_services[route].discard(key)
            affected.add(route)
        for problem in share.problems:
            n = self._problems[problem] - 1
            if n:
                self._problems[problem] = n
            else:
                del self._problems[problem]
                self._sorted = None

    def _remerge(self, route: RouteKey) -> None:
        """One prefix to one peer from the parts of every Service announced under it."""
        peer, prefix = route
        keys = self._route_services.get(route)
        if not keys:
            self._route_services.pop(route, None)
            table = self._routes.get(peer)
            if table is not None:
                table.pop(prefix)
                if not len(table):
                    del self._routes[peer]
            return
        standard: set[str] = set()
        large: set[str] = set()
        prefs: dict[str, int] = {}
        for key in keys:
            parts = self._shares[key].parts
            standard |= parts.standard[route]
            large |= parts.large[route]
            prefs.update(parts.prefs.get(route, {}))
        attrs = route_attrs(standard, large, prefs)[0]
        table = self._routes.get(peer)
        if table is None:
            table = self._routes[peer] = CowDict()
        if table.get(prefix) != attrs:
            table[prefix] = attrs
