"""Desired BGP routes per peer and the ExaBGP API commands between two states (pure).

The speaker decides *which* Service IPs this node announces and with which
BGPAdvertisements (pool/node selection, ETP Local); this module turns that into
routes per BGPPeer, MetalLB's way:

* a route is the IP aggregated to the advertisement's `aggregationLength`
  (`aggregationLengthV6` for IPv6): /32 and /128 by default;
* an advertisement with `peers` announces only to those BGPPeers (all otherwise);
  a route goes only to sessions that carry its address family;
* several advertisements (or several IPs aggregated into one prefix) give one route
  whose communities are the union; `localPref` must agree, otherwise the value of the
  advertisement first by name wins (deterministic, so it never flaps) and a problem
  is reported;
* `localPref` is sent to iBGP peers only (LOCAL_PREF is not carried over eBGP,
  RFC 4271 5.1.5);
* communities are values (`65535:65282`, `large:1:2:3`) or names of Community
  aliases, resolved here; an unknown alias is reported and left out (the rest of
  the advertisement still applies).

Routes are announced with `next-hop self`: the router forwards to the node that
announced, which is what makes ECMP across nodes work. A route of the other family
than the session's (MP-BGP, `dualStackAddressFamily`) carries this node's address of
that family instead (`PeerSpec.next_hop`); without one it is left out (the peer's
`config.validate_peer` problem says why).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lbspeaker.api.models import parse_community
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.facts import AdvertisementSpec, Problem


@dataclass(frozen=True)
class Announcement:
    """One Service this node announces: its IPs and the advertisements that apply here."""

    service: str  # "namespace/name"
    ips: tuple[str, ...]
    advertisements: tuple[AdvertisementSpec, ...]


@dataclass(frozen=True)
class RouteAttrs:
    """Path attributes of one announced prefix (sorted, so equal routes compare equal)."""

    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # "AA:NN"
    large_communities: tuple[str, ...] = ()  # "GA:LD1:LD2"


RouteTable = dict[str, dict[str, RouteAttrs]]  # BGPPeer name -> prefix -> attributes


@dataclass
class DesiredRoutes:
    """Routes per peer, the peers each Service goes to (for ServiceBGPStatus), problems.

    Problem reasons: `UnknownCommunity`, `AdvertisementProblem` (a bad community value, a
    `peers` entry naming no BGPPeer of this node), `LocalPrefNotSent` (localPref for an
    eBGP peer), `LocalPrefConflict` (kind BGPPeer: two localPrefs for one prefix),
    `RouteProblem` (kind Service: an IP that cannot be announced).
    """

    routes: RouteTable = field(default_factory=dict)
    service_peers: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def resolve_communities(
    refs: Iterable[str], aliases: Mapping[str, str]
) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    """(standard, large, problems as (reason, message)) for community values or Community alias names.

    Values are normalised (`065:01` -> `65:1`) so the same community
    written two ways is one community.
    """
    standard: set[str] = set()
    large: set[str] = set()
    problems: list[tuple[str, str]] = []
    for ref in refs:
        value = ref if ":" in ref else aliases.get(ref)
        if value is None:
            problems.append(("UnknownCommunity",
                             f"community alias {ref!r} is not defined in any Community object"))
            continue
        try:
            parts = parse_community(value)
        except ValueError as exc:
            problems.append(("AdvertisementProblem", str(exc)))
            continue
        text = ":".join(str(p) for p in parts)
        (large if len(parts) == 3 else standard).add(text)
    return standard, large, problems


def _sort_communities(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(values, key=lambda v: tuple(int(p) for p in v.split(":"))))


def route_prefix(ip: str, adv: AdvertisementSpec) -> str:
    """The prefix `ip` is announced as under `adv` (aggregated, host bits cleared)."""
    return _prefix(ip, adv.aggregation_length, adv.aggregation_length_v6)


@functools.lru_cache(maxsize=65536)
def _prefix(ip: str, length_v4: int, length_v6: int) -> str:
    """Cached: every plan that redoes a Service asks again, for each of its IPs and advertisements
    (parsing them was 4 % of a speaker's CPU at 10,000 Services)."""
    addr = ipaddress.ip_address(ip)
    length = length_v4 if addr.version == 4 else length_v6
    return str(ipaddress.ip_network(f"{addr}/{length}", strict=False))


def prefix_family(prefix: str) -> int:
    """IP version of a prefix `route_prefix` wrote (canonical text: no parse on the hot path)."""
    return 6 if ":" in prefix else 4


RouteKey = tuple[str, str]  # (BGPPeer name, prefix)


@dataclass
class RouteParts:
    """What some announcements put into the routes, before the parts of one prefix are merged
    (`route_attrs`): communities and localPref per (peer, prefix), the peers per Service, and
    problems (first seen first, no duplicates). Parts of disjoint announcements merge by union,
    which is what lets the speaker redo one Service's parts alone (`bgp.plan.BGPPlanner`)."""

    standard: dict[RouteKey, set[str]] = field(default_factory=dict)
    large: dict[RouteKey, set[str]] = field(default_factory=dict)
    prefs: dict[RouteKey, dict[str, int]] = field(default_factory=dict)  # advertisement name -> localPref
    service_peers: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def route_parts(
    announcements: Iterable[Announcement],
    peers: Sequence[PeerSpec],
    aliases: Mapping[str, str] | None = None,
) -> RouteParts:
    """The parts of `announcements` (see `RouteParts`); `desired_routes` merges them."""
    aliases = aliases or {}
    out = RouteParts()
    peer_names = {p.name for p in peers}
    reported: set[Problem] = set()

    def problem(kind: str, name: str, reason: str, message: str) -> None:
        found = Problem(kind, name, reason, message)
        if found not in reported:
            reported.add(found)
            out.problems.append(found)

    for ann in sorted(announcements, key=lambda a: a.service):
        service_peers: set[str] = set()
        for adv in sorted(ann.advertisements, key=lambda a: a.name):
            std, lrg, probs = resolve_communities(adv.communities, aliases)
            for reason, text in probs:
                problem("BGPAdvertisement", adv.name, reason, text)
            for name in adv.peers:
                if name not in peer_names:
                    problem("BGPAdvertisement", adv.name, "AdvertisementProblem",
                            f"peer {name!r} is not a BGPPeer of this node")
            targets = [p for p in peers if not adv.peers or p.name in adv.peers]
            for ip in ann.ips:
                try:
                    prefix = route_prefix(ip, adv)
                except ValueError as exc:
                    problem("Service", ann.service, "RouteProblem", f"cannot announce {ip!r}: {exc}")
                    continue
                version = prefix_family(prefix)
                for peer in targets:
                    if version not in peer.families() or peer.next_hop(version) is None:
                        continue
                    key = (peer.name, prefix)
                    out.standard.setdefault(key, set()).update(std)
                    out.large.setdefault(key, set()).update(lrg)
                    slot = out.prefs.setdefault(key, {})
                    if adv.local_pref is not None:
                        if peer.is_ebgp:
                            problem(
                                "BGPAdvertisement", adv.name, "LocalPrefNotSent",
                                f"localPref is not sent to eBGP peer {peer.name} "
                                "(LOCAL_PREF is an iBGP attribute)",
                            )
                        else:
                            slot[adv.name] = adv.local_pref
                    service_peers.add(peer.name)
        if service_peers:
            out.service_peers[ann.service] = sorted(service_peers)
    return out


def route_attrs(
    standard: Iterable[str], large: Iterable[str], prefs: Mapping[str, int]
) -> tuple[RouteAttrs, str | None]:
    """One prefix's merged parts -> (its attributes, the name of the advertisement whose localPref
    was used when several disagree, else None): the first by name wins."""
    local_pref = None
    conflict = None
    if prefs:
        first = min(prefs)
        local_pref = prefs[first]
        if len(set(prefs.values())) > 1:
            conflict = first
    return RouteAttrs(local_pref=local_pref, communities=_sort_communities(standard),
                      large_communities=_sort_communities(large)), conflict


def desired_routes(
    announcements: Iterable[Announcement],
    peers: Sequence[PeerSpec],
    aliases: Mapping[str, str] | None = None,
) -> DesiredRoutes:
    """Routes per peer for what this node announces (see the module docstring)."""
    parts = route_parts(announcements, peers, aliases)
    out = DesiredRoutes(service_peers=parts.service_peers, problems=parts.problems)
    reported = set(out.problems)
    for key in sorted(parts.standard):
        peer_name, prefix = key
        values = parts.prefs.get(key, {})
        attrs, first = route_attrs(parts.standard[key], parts.large[key], values)
        if first is not None:
            found = Problem(
                "BGPPeer", peer_name, "LocalPrefConflict",
                f"conflicting localPref for {prefix} to peer {peer_name}: "
                + ", ".join(f"{n}={v}" for n, v in sorted(values.items()))
                + f"; using {attrs.local_pref} from {first}"
            )
            if found not in reported:
                reported.add(found)
                out.problems.append(found)
        out.routes.setdefault(peer_name, {})[prefix] = attrs
    return out


# --- ExaBGP API commands -----------------------------------------------------------------------------


def _next_hop(peer: PeerSpec, prefix: str) -> str:
    """`self`, or this node's address of the prefix's family when it is not the session's."""
    return peer.next_hop(prefix_family(prefix)) or "self"


def announce_command(peer: PeerSpec, prefix: str, attrs: RouteAttrs) -> str:
    """`neighbor ... announce route ...` for one prefix to one peer."""
    parts = [f"{peer.selector} announce route {prefix} next-hop {_next_hop(peer, prefix)}"]
    if attrs.local_pref is not None:
        parts.append(f"local-preference {attrs.local_pref}")
    if attrs.communities:
        parts.append(f"community [ {' '.join(attrs.communities)} ]")
    if attrs.large_communities:
        parts.append(f"large-community [ {' '.join(attrs.large_communities)} ]")
    return " ".join(parts)


def withdraw_command(peer: PeerSpec, prefix: str) -> str:
    """`neighbor ... withdraw route ...` for one prefix to one peer."""
    return f"{peer.selector} withdraw route {prefix} next-hop {_next_hop(peer, prefix)}"


@dataclass(frozen=True)
class RouteChange:
    """One step from the old to the new state: announce (with attributes) or withdraw."""

    peer: str
    prefix: str
    attrs: RouteAttrs | None  # None: withdraw

    @property
    def is_withdraw(self) -> bool:
        return self.attrs is None


def apply_route_changes(tables: RouteTable, changes: Mapping[str, Mapping[str, RouteAttrs | None]]) -> None:
    """Apply {peer: {prefix: attributes, or None to withdraw}} to `tables` in place; a peer left
    without routes is dropped (the one rule for every holder of a route table)."""
    for peer, routes in changes.items():
        table = tables.setdefault(peer, {})
        for prefix, attrs in routes.items():
            if attrs is None:
                table.pop(prefix, None)
            else:
                table[prefix] = attrs
        if not table:
            del tables[peer]


def diff_routes(
    old: Mapping[str, Mapping[str, RouteAttrs]], new: Mapping[str, Mapping[str, RouteAttrs]]
) -> list[RouteChange]:
    """Changes turning `old` into `new`: withdrawals first, then (re-)announcements.

    A prefix whose attributes changed is announced again, not withdrawn: BGP replaces
    a path by a new UPDATE for the same prefix, and a withdraw-then-announce would
    make the router drop the next hop for a moment.
    """
    changes: list[RouteChange] = []
    for peer in sorted(old):
        kept = new.get(peer, {})
        for prefix in sorted(old[peer].keys() - kept.keys()):
            changes.append(RouteChange(peer, prefix, None))
    for peer in sorted(new):
        before = old.get(peer, {})
        routes = new[peer]
        # only the changes are sorted: with thousands of routes, few move at a time
        for prefix in sorted(p for p, attrs in routes.items() if before.get(p) != attrs):
            changes.append(RouteChange(peer, prefix, routes[prefix]))
    return changes


def kept_across_restart(
    table: Mapping[str, Mapping[str, RouteAttrs]], peers: Iterable[PeerSpec]
) -> RouteTable:
    """The routes a stopping speaker leaves announced: those to graceful-restart peers (the
    router keeps them while the speaker restarts); every other peer's are withdrawn."""
    graceful = {p.name for p in peers if p.graceful_restart}
    return {name: dict(routes) for name, routes in table.items() if name in graceful and routes}


def change_command(peer: PeerSpec, change: RouteChange) -> str:
    """The ExaBGP API command for one change."""
    if change.attrs is None:
        return withdraw_command(peer, change.prefix)
    return announce_command(peer, change.prefix, change.attrs)
