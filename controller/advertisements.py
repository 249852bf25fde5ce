"""Pure: the `Ready` condition of an L2Advertisement or BGPAdvertisement.

The controller is the one writer of these conditions (every speaker sees the same
cluster-wide facts, so letting each write them would only make them fight). It uses
the speaker's own checks (`lbspeaker.plan.advertisement_problems`), so the condition
and the speakers' Events always agree. What only a node can see (an interface that
does not exist there) stays with that node's speaker as an Event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.translate import condition
from lbspeaker.api.models import CONDITION_READY
from lbspeaker.election import (
    L2AdvertisementFacts,
    NodeFacts,
    advertisement_matches_pool,
    advertisement_selects_node,
)
from lbspeaker.plan import advertisement_problems, pool_facts
from lbspeaker.selectors import label_selector_matches

MAX_LISTED = 10  # names listed in a message before "and N more"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def advertisement_conditions(
    adv: Mapping[str, Any],
    pools: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    previous: Sequence[Mapping[str, Any]] | None,
    now: str,
) -> list[dict[str, Any]]:
    """[Ready]: True with what it announces from where, or False with every problem and the fix."""
    facts = L2AdvertisementFacts.from_object(adv)
    pool_map = {p.name: p for p in (pool_facts(obj) for obj in pools)}
    node_map = {n.name: n for n in (NodeFacts.from_node(obj) for obj in nodes)}
    problems = advertisement_problems("", node_map, pool_map, [facts], links=None)
    prev = {str(c.get("type")): c for c in previous or () if isinstance(c, Mapping)}
    generation = (adv.get("metadata") or {}).get("generation")
    if problems:
        reason = problems[0].reason if len({p.reason for p in problems}) == 1 else "InvalidConfiguration"
        message = "; ".join(p.message for p in problems) + (
            ". Fix the advertisement's spec; pools and nodes it does select are still announced.")
        return [condition(prev, CONDITION_READY, False, reason, message, generation, now)]
    selected_pools = sorted(
        name for name, p in pool_map.items()
        if advertisement_matches_pool(facts, name, p.labels, label_selector_matches))
    selected_nodes = sorted(
        name for name, n in node_map.items() if advertisement_selects_node(facts, n, label_selector_matches))
    message = (f"announces pool(s) {_names(selected_pools) or '(none yet)'} "
               f"from node(s) {_names(selected_nodes) or '(none yet)'}")
    return [condition(prev, CONDITION_READY, True, "Accepted", message, generation, now)]
