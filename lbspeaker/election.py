"""Layer-2 election: which node announces a given LoadBalancer IP.

Pure module (no I/O, no Kubernetes client): every speaker runs the same function on
the same facts and must reach the same answer without talking to the others, so the
result may depend only on the *set* of inputs, never on their order.

The order is MetalLB's (``speaker/layer2_controller.go``): candidates are sorted by
``sha256(node + "#" + ip)`` comparing the raw 32-byte digests (``bytes.Compare``),
ascending; the first one announces. Comparing lowercase hex digests gives the same
order, and using MetalLB's exact rule means a cluster migrating from MetalLB (or
running both side by side during a migration) elects the same node for each IP.
Ties (same digest) cannot happen for distinct names; node names are unique anyway,
and we break them by name so the function stays total.

Dual stack: MetalLB hashes the Service's *first* LoadBalancer IP for all its IPs, so
both families land on the same node; callers should pass that first IP as `ip`.

Candidate filtering follows MetalLB too:

* no serving endpoint anywhere for the Service: nobody announces;
* a node is eligible when it runs a live speaker, is known and Ready, has no
  ``NetworkUnavailable=True`` condition, does not carry
  ``node.kubernetes.io/exclude-from-external-load-balancers`` (unless the speaker was
  told to ignore that label), and is selected by at least one L2Advertisement that
  matches the IP's pool (empty ``nodeSelectors`` = every node);
* ``externalTrafficPolicy: Local``: only eligible nodes with a serving local endpoint.

An endpoint "can serve" as in MetalLB's ``epslices.EndpointCanServe``: ``ready`` is
unset or true, or ``serving`` is true.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.selectors import label_selector_matches

SelectorMatcher = Callable[[Mapping[str, Any] | None, Mapping[str, str]], bool]


def election_key(node: str, ip: str) -> bytes:
    """The raw sha256 digest MetalLB sorts by: ``sha256(node + "#" + ip)``."""
    return hashlib.sha256(f"{node}#{ip}".encode()).digest()


def candidate_order(nodes: Iterable[str], ip: str) -> list[str]:
    """Nodes ordered by MetalLB's election key for `ip` (first = announcer).

    Duplicates are collapsed so that a node listed twice (e.g. from two caches) does not
    change anything. `ip` must be in the canonical text form every speaker uses
    (``str(ipaddress.ip_address(...))``), otherwise the hashes would differ.
    """
    return sorted(set(nodes), key=lambda n: (election_key(n, ip), n))


def elect_l2(ip: str, candidates: Iterable[str]) -> str | None:
    """The node that announces `ip` among `candidates`, or None when there is none."""
    best: tuple[bytes, str] | None = None
    for node in candidates:
        key = (election_key(node, ip), node)
        if best is None or key < best:
            best = key
    return None if best is None else best[1]


@dataclass(frozen=True)
class NodeFacts:
    """What election needs to know about one Node object."""

    name: str
    ready: bool = True
    network_unavailable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Extract the facts from a Node object given as a plain JSON dict."""
        meta = node.get("metadata") or {}
        conditions = (node.get("status") or {}).get("conditions") or []
        by_type = {c.get("type"): c.get("status") for c in conditions if isinstance(c, Mapping)}
        return cls(
            name=str(meta.get("name", "")),
            ready=by_type.get("Ready") == "True",
            network_unavailable=by_type.get("NetworkUnavailable") == "True",
            labels=dict(meta.get("labels") or {}),
        )


@dataclass(frozen=True)
class L2AdvertisementFacts:
    """The parts of an L2Advertisement that decide *which nodes* may announce.

    `node_selectors` are Kubernetes LabelSelector dicts (matchLabels/matchExpressions);
    an empty sequence selects every node. `interfaces` is carried along for the
    announcer (empty = the default interface choice) and does not affect election.
    """

    name: str
    node_selectors: Sequence[Mapping[str, Any]] = ()
    interfaces: Sequence[str] = ()
    ip_address_pools: Sequence[str] = ()
    ip_address_pool_selectors: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> L2AdvertisementFacts:
        """Extract the facts from an L2Advertisement object given as a plain JSON dict."""
        spec = obj.get("spec") or {}
        return cls(
            name=str((obj.get("metadata") or {}).get("name", "")),
            node_selectors=tuple(spec.get("nodeSelectors") or ()),
            interfaces=tuple(spec.get("interfaces") or ()),
            ip_address_pools=tuple(spec.get("ipAddressPools") or ()),
            ip_address_pool_selectors=tuple(spec.get("ipAddressPoolSelectors") or ()),
        )


def _default_matcher() -> SelectorMatcher:
    return label_selector_matches


def _safe(m: SelectorMatcher, selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """An invalid selector matches nothing: election must stay total on bad input
    (the speaker reports the bad L2Advertisement; validation is not election's job)."""
    try:
        return m(selector, labels)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def advertisement_matches_pool(
    adv: L2AdvertisementFacts,
    pool_name: str,
    pool_labels: Mapping[str, str],
    matches: SelectorMatcher | None = None,
) -> bool:
    """Whether `adv` applies to the pool: named in ipAddressPools, selected by one of
    ipAddressPoolSelectors, or both lists empty (= every pool), as in MetalLB."""
    if not adv.ip_address_pools and not adv.ip_address_pool_selectors:
        return True
    if pool_name in adv.ip_address_pools:
        return True
    m = matches or _default_matcher()
    return any(_safe(m, sel, pool_labels) for sel in adv.ip_address_pool_selectors)


def advertisement_selects_node(
    adv: L2AdvertisementFacts, node: NodeFacts, matches: SelectorMatcher | None = None
) -> bool:
    """Whether `adv` lets `node` announce: no nodeSelectors = all nodes, else any match."""
    if not adv.node_selectors:
        return True
    m = matches or _default_matcher()
    return any(_safe(m, sel, node.labels) for sel in adv.node_selectors)


def endpoint_can_serve(conditions: Mapping[str, Any] | None) -> bool:
    """MetalLB's EndpointCanServe: ready unset or true, or serving true."""
    conditions = conditions or {}
    ready = conditions.get("ready")
    if ready is None or ready is True:
        return True
    return conditions.get("serving") is True


def serving_endpoint_nodes(slices: Iterable[Mapping[str, Any]]) -> list[str | None]:
    """Node names of the serving endpoints in EndpointSlice dicts (None = no nodeName).

    One entry per serving endpoint, so ``len(...) > 0`` answers "is any endpoint serving
    anywhere", and the non-None entries are the nodes with a local serving endpoint.
    """
    out: list[str | None] = []
    for sl in slices:
        for ep in sl.get("endpoints") or ():
            if endpoint_can_serve(ep.get("conditions")):
                name = ep.get("nodeName")
                out.append(str(name) if name else None)
    return out


def node_eligible(
    node: NodeFacts | None,
    advertisements: Sequence[L2AdvertisementFacts],
    ignore_exclude_label: bool = False,
    matches: SelectorMatcher | None = None,
) -> bool:
    """Node-level eligibility, independent of the Service's endpoints."""
    if node is None or not node.ready or node.network_unavailable:
        return False
    if not ignore_exclude_label and EXCLUDE_FROM_LB_LABEL in node.labels:
        return False
    return any(advertisement_selects_node(a, node, matches) for a in advertisements)


def l2_candidates(
    live_speakers: Iterable[str],
    nodes: Mapping[str, NodeFacts],
    advertisements: Sequence[L2AdvertisementFacts],
    serving_endpoints: Collection[str | None],
    etp_local: bool,
    ignore_exclude_label: bool = False,
    matches: SelectorMatcher | None = None,
) -> list[str]:
    """Nodes that may announce an IP, sorted by name (order-free input, stable output).

    `advertisements` are the L2Advertisements that match the IP's pool (see
    `advertisement_matches_pool`); none means nobody announces. `serving_endpoints` is
    what `serving_endpoint_nodes` returns for the Service's EndpointSlices. A node
    missing from `nodes` is not eligible: we do not announce from a node we know
    nothing about.
    """
    if not serving_endpoints or not advertisements:
        return []
    m = matches or _default_matcher()
    eligible = {
        s for s in set(live_speakers) if node_eligible(nodes.get(s), advertisements, ignore_exclude_label, m)
    }
    if etp_local:
        local = {n for n in serving_endpoints if n is not None}
        eligible &= local
    return sorted(eligible)


def l2_announcer(
    ip: str,
    live_speakers: Iterable[str],
    nodes: Mapping[str, NodeFacts],
    advertisements: Sequence[L2AdvertisementFacts],
    serving_endpoints: Collection[str | None],
    etp_local: bool,
    ignore_exclude_label: bool = False,
    matches: SelectorMatcher | None = None,
) -> str | None:
    """Convenience: `elect_l2` over `l2_candidates`."""
    return elect_l2(
        ip,
        l2_candidates(
            live_speakers, nodes, advertisements, serving_endpoints, etp_local, ignore_exclude_label, matches
        ),
    )
