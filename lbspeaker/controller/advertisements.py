"""Pure: the `Ready` condition of an L2Advertisement or BGPAdvertisement.

The controller is the one writer of these conditions (every speaker sees the same
cluster-wide facts, so letting each write them would only make them fight). It uses
the speaker's own checks (`lbspeaker.plan.advertisement_problems`), so the condition
and the speakers' Events always agree. What only a node can see (an interface that
does not exist there) stays with that node's speaker as an Event.

For a BGPAdvertisement the controller also passes every BGPAdvertisement, so a localPref
that loses to another's (same pool, overlapping nodes and peers; first by name wins,
the rule the speakers apply on the wire, `lbspeaker.bgp.plan.local_pref_conflicts`)
shows as `Ready=False reason LocalPrefConflict` on the losing one only. The answer
depends only on the objects, never on order or time, so recomputing it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.api.models import CONDITION_READY, duplicate_messages
from lbspeaker.bgp.aggregation import aggregation_problems
from lbspeaker.bgp.plan import LocalPrefLoss, local_pref_conflicts
from lbspeaker.controller.translate import condition
from lbspeaker.facts import BGPAdvertisementFacts, L2AdvertisementFacts, NodeFacts, Pool, Problem, read_pool
from lbspeaker.plan import advertisement_problems

MAX_LISTED = 10  # names listed in a message before "and N more"
# Lists whose repeated entries MetalLB's config.For rejects (the CRDs make them sets; this reports
# objects stored before that rule).
DUPLICATE_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "serviceSelectors",
                    "communities", "peers")


def duplicate_problems(adv: Mapping[str, Any]) -> list[Problem]:
    """DuplicateEntries for every list of the advertisement's spec that repeats an entry."""
    kind = str(adv.get("kind") or "Advertisement")
    name = str((adv.get("metadata") or {}).get("name") or "")
    spec = adv.get("spec") if isinstance(adv.get("spec"), dict) else {}
    return [Problem(kind, name, "DuplicateEntries", text)
            for text in duplicate_messages(spec, DUPLICATE_FIELDS)]


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _loss_message(loss: LocalPrefLoss) -> str:
    return (f"localPref {loss.local_pref} is overridden by BGPAdvertisement {loss.winner} "
            f"(localPref {loss.winner_local_pref}; the first by name wins) for pool(s) {_names(loss.pools)} "
            f"on node(s) {_names(loss.nodes)}")


def local_pref_problems(
    adv: Mapping[str, Any],
    bgp_advertisements: Sequence[Mapping[str, Any]],
    pool_map: Mapping[str, Pool],
    node_map: Mapping[str, NodeFacts],
) -> list[Problem]:
    """LocalPrefConflict problems of `adv` (none if it wins or agrees everywhere)."""
    name = str((adv.get("metadata") or {}).get("name") or "")
    others = [o for o in bgp_advertisements if (o.get("metadata") or {}).get("name") != name]
    facts = [BGPAdvertisementFacts.from_object(o) for o in [adv, *others]]
    losses = local_pref_conflicts(facts, pool_map.values(), {n: f.labels for n, f in node_map.items()})
    return [Problem("BGPAdvertisement", name, "LocalPrefConflict", _loss_message(loss))
            for loss in losses.get(name, ())]


def aggregation_length_problems(adv: Mapping[str, Any], pool_map: Mapping[str, Pool]) -> list[Problem]:
    """AggregationLengthTooShort for every selected pool whose prefixes are longer than the
    advertisement's aggregation (MetalLB rejects that; the speakers refuse such prefixes)."""
    facts = BGPAdvertisementFacts.from_object(adv)
    if facts.error:
        return []
    route = facts.route
    return [Problem("BGPAdvertisement", facts.name, "AggregationLengthTooShort", text)
            for name, pool in sorted(pool_map.items()) if facts.matches_pool(pool)
            for text in aggregation_problems(name, pool.ranges, route.aggregation_length,
                                             route.aggregation_length_v6)]


def advertisement_conditions(
    adv: Mapping[str, Any],
    pools: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    previous: Sequence[Mapping[str, Any]] | None,
    now: str,
    bgp_advertisements: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """[Ready]: True with what it announces from where, or False with every problem and the fix.

    `bgp_advertisements`: every BGPAdvertisement (with or without `adv` itself), passed for
    BGPAdvertisements only, to check localPref conflicts between them.
    """
    facts = L2AdvertisementFacts.from_object(adv)
    pool_map = {p.name: p for p in map(read_pool, pools)}
    node_map = {n.name: n for n in (NodeFacts.from_node(obj) for obj in nodes)}
    problems = advertisement_problems("", node_map, pool_map, [facts], links=None)
    conflicts = (local_pref_problems(adv, bgp_advertisements, pool_map, node_map)
                 if bgp_advertisements is not None else [])
    too_wide = aggregation_length_problems(adv, pool_map) if bgp_advertisements is not None else []
    problems = [*duplicate_problems(adv), *problems]
    prev = {str(c.get("type")): c for c in previous or () if isinstance(c, Mapping)}
    generation = (adv.get("metadata") or {}).get("generation")
    if problems or conflicts or too_wide:
        every = [*problems, *too_wide, *conflicts]
        reason = every[0].reason if len({p.reason for p in every}) == 1 else "InvalidConfiguration"
        fixes = []
        if problems:
            fixes.append("Fix the advertisement's spec; pools and nodes it does select are still announced.")
        if conflicts:
            fixes.append("Give these advertisements the same localPref, or make their ipAddressPools, "
                         "nodeSelectors or peers disjoint; until then routes carry the winner's localPref.")
        message = "; ".join(p.message for p in every) + "." + "".join(" " + f for f in fixes)
        return [condition(prev, CONDITION_READY, False, reason, message, generation, now)]
    selected_pools = sorted(
        name for name, p in pool_map.items() if facts.matches_pool(p))
    selected_nodes = sorted(
        name for name, n in node_map.items() if facts.selects_node(n))
    excluded = [name for name in selected_nodes if EXCLUDE_FROM_LB_LABEL in node_map[name].labels]
    preferred = sorted(((facts.preference(node_map[n]), n) for n in selected_nodes if n not in excluded),
                       key=lambda sn: (-sn[0], sn[1]))
    preferred = [(score, n) for score, n in preferred if score]
    message = (f"announces pool(s) {_names(selected_pools) or '(none yet)'} "
               + ("for the Services its serviceSelectors select " if facts.service_selectors else "")
               + f"from node(s) {_names([n for n in selected_nodes if n not in excluded]) or '(none yet)'}"
               + (f" (not from {_names(excluded)}: labelled {EXCLUDE_FROM_LB_LABEL})" if excluded else "")
               + (f", preferring {_names([f'{n} ({score})' for score, n in preferred])}"
                  if preferred else ""))
    return [condition(prev, CONDITION_READY, True, "Accepted", message, generation, now)]
