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

An endpoint "can serve" as in MetalLB's ``epslices.EndpointCanServe`` (see
`facts.endpoint_can_serve`); advertisement matching is `facts.Advertisement`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence

from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.facts import L2AdvertisementFacts, NodeFacts


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


def node_eligible(
    node: NodeFacts | None,
    advertisements: Sequence[L2AdvertisementFacts],
    ignore_exclude_label: bool = False,
) -> bool:
    """Node-level eligibility, independent of the Service's endpoints."""
    if node is None or not node.ready or node.network_unavailable:
        return False
    if not ignore_exclude_label and EXCLUDE_FROM_LB_LABEL in node.labels:
        return False
    return any(a.selects_node(node) for a in advertisements)


def l2_candidates(
    live_speakers: Iterable[str],
    nodes: Mapping[str, NodeFacts],
    advertisements: Sequence[L2AdvertisementFacts],
    serving_endpoints: Collection[str | None],
    etp_local: bool,
    ignore_exclude_label: bool = False,
) -> list[str]:
    """Nodes that may announce an IP, sorted by name (order-free input, stable output).

    `advertisements` are the L2Advertisements that match the IP's pool (see
    `Advertisement.matches_pool`); none means nobody announces. `serving_endpoints` is
    what `facts.serving_endpoint_nodes` returns for the Service's EndpointSlices. A node
    missing from `nodes` is not eligible: we do not announce from a node we know
    nothing about.
    """
    if not serving_endpoints or not advertisements:
        return []
    eligible = {s for s in set(live_speakers)
                if node_eligible(nodes.get(s), advertisements, ignore_exclude_label)}
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
) -> str | None:
    """Convenience: `elect_l2` over `l2_candidates`."""
    cands = l2_candidates(live_speakers, nodes, advertisements, serving_endpoints, etp_local,
                          ignore_exclude_label)
    return elect_l2(ip, cands)
