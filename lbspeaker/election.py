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

Preferred nodes (`L2Advertisement.spec.preferredNodeSelectors`, MetalLB's design
`preferred-node-l2.md`, merged as PR #3044 after v0.16.1): each candidate gets a score, the
sum over the advertisements that apply to the IP of `L2AdvertisementFacts.preference`
(weights of the preferences that select the node, ad-scoped: only for nodes that
advertisement's own nodeSelectors select). The highest score announces; equal scores
(and no preferences at all: every score 0) fall back to the sha256 order, so without
preferences nothing changes. Advertisements that disagree cannot split the vote: the
scores are summed over one set of advertisements that every speaker computes from the
same facts (the plan passes the union over every Service holding the IP, see
`plan.py`), never chosen per node, so every node elects the same announcer.

Dual stack: MetalLB hashes the Service's *first* LoadBalancer IP for all its IPs, so
both families land on the same node; callers should pass that first IP as `ip`.

Candidate filtering follows MetalLB too:

* no serving endpoint anywhere for the Service: nobody announces;
* a node is eligible when it runs a live speaker, is known, has no
  ``NetworkUnavailable=True`` condition, does not carry
  ``node.kubernetes.io/exclude-from-external-load-balancers`` (unless the speaker was
  told to ignore that label), and is selected by at least one of the L2Advertisements
  that apply to the IP (they match its pool and its Service; empty ``nodeSelectors`` =
  every node);
* the node's ``Ready`` condition is *not* read, as in MetalLB (``speakersForPool`` filters
  on NetworkUnavailable and the exclude label only). Whether a node can answer is what
  membership measures (a live speaker: Lease plus heartbeats); Ready reports the kubelet's
  link to the API server, which flaps for reasons that do not stop the node forwarding,
  and Kubernetes itself stopped dropping NotReady nodes from load-balancer backends for
  that reason (KEP-3458). Pods on a dead node stop serving through their EndpointSlice
  conditions, which ETP Local follows. The BGP plan never read Ready either;
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


def candidate_order(
    nodes: Iterable[str], ip: str, scores: Mapping[str, int] | None = None
) -> list[str]:
    """Nodes in election order for `ip` (first = announcer): highest preference score first
    (`scores`, missing = 0), then MetalLB's election key.

    Duplicates are collapsed so that a node listed twice (e.g. from two caches) does not
    change anything. `ip` must be in the canonical text form every speaker uses
    (``str(ipaddress.ip_address(...))``), otherwise the hashes would differ.
    """
    scores = scores or {}
    return sorted(set(nodes), key=lambda n: (-scores.get(n, 0), election_key(n, ip), n))


def elect_l2(ip: str, candidates: Iterable[str], scores: Mapping[str, int] | None = None) -> str | None:
    """The node that announces `ip` among `candidates` (highest score, then sha256), or None."""
    scores = scores or {}
    best: tuple[int, bytes, str] | None = None
    for node in candidates:
        key = (-scores.get(node, 0), election_key(node, ip), node)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def preference_scores(
    candidates: Iterable[str],
    nodes: Mapping[str, NodeFacts],
    advertisements: Iterable[L2AdvertisementFacts],
) -> dict[str, int]:
    """{node: score} of the candidates with a non-zero score: the sum over `advertisements` (the
    ones that apply to the IP; one per name) of their `preference` for the node."""
    advs = {a.name: a for a in advertisements if a.preferred}
    if not advs:
        return {}
    out: dict[str, int] = {}
    for name in set(candidates):
        node = nodes.get(name)
        if node is None:
            continue
        score = sum(a.preference(node) for a in advs.values())
        if score:
            out[name] = score
    return out


def node_eligible(
    node: NodeFacts | None,
    advertisements: Sequence[L2AdvertisementFacts],
    ignore_exclude_label: bool = False,
) -> bool:
    """Node-level eligibility, independent of the Service's endpoints (Ready is not read: see above)."""
    if node is None or node.network_unavailable:
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

    `advertisements` are the L2Advertisements that apply to the IP (they match its pool,
    `Advertisement.matches_pool`, and its Service, `Advertisement.matches_service`); none
    means nobody announces. `serving_endpoints` is what `facts.serving_endpoint_nodes`
    returns for the Service's EndpointSlices. A node missing from `nodes` is not eligible:
    we do not announce from a node we know nothing about.
    """
    if not serving_endpoints or not advertisements:
        return []
    eligible = {s for s in set(live_speakers)
                if node_eligible(nodes.get(s), advertisements, ignore_exclude_label)}
    if etp_local:
        local = {n for n in serving_endpoints if n is not None}
        eligible &= local
    return sorted(eligible)


def l2_announcer(ip: str, live_speakers: Iterable[str], nodes: Mapping[str, NodeFacts],
                 advertisements: Sequence[L2AdvertisementFacts], serving_endpoints: Collection[str | None],
                 etp_local: bool, ignore_exclude_label: bool = False) -> str | None:
    """Convenience: `elect_l2` over `l2_candidates`, scored by `preference_scores`."""
    cands = l2_candidates(live_speakers, nodes, advertisements, serving_endpoints, etp_local,
                          ignore_exclude_label)
    return elect_l2(ip, cands, preference_scores(cands, nodes, advertisements))
