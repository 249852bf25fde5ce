"""`local_pref_conflicts` (what the controller reports) agrees with what the speakers send.

The controller's `LocalPrefConflict` condition and the speakers' wire choice must never
disagree: an advertisement flagged as losing is overridden on some node and peer where it
applies, and one not flagged gets its own localPref everywhere it applies. Checked against
`compute_bgp_plan` (the speaker's plan) over generated advertisement sets.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.bgp.plan import compute_bgp_plan, local_pref_conflicts
from lbspeaker.facts import BGPAdvertisementFacts, NodeFacts, PeerFacts, Pool, ServiceFacts

POOL = Pool("bgp", (parse_address_range("198.51.100.0/24"),), labels={})
NODES = {"n1": {"zone": "a"}, "n2": {"zone": "b"}}
PEERS = ["r1", "r2"]
IP = "198.51.100.10"


def ibgp_peer(name: str, address: str) -> PeerFacts:
    spec = {"myASN": 64513, "peerASN": 64513, "peerAddress": address}
    return PeerFacts.from_object({"metadata": {"name": name}, "spec": spec})


def advertisement(
    name: str, local_pref: int | None, zone: str | None, peers: list[str], aggregation: int = 32
) -> BGPAdvertisementFacts:
    spec: dict[str, Any] = {"peers": peers, "aggregationLength": aggregation}
    if local_pref is not None:
        spec["localPref"] = local_pref
    if zone is not None:
        spec["nodeSelectors"] = [{"matchLabels": {"zone": zone}}]
    return BGPAdvertisementFacts.from_object({"metadata": {"name": name}, "spec": spec})


advertisement_sets = st.lists(
    st.tuples(st.sampled_from([None, 100, 200]), st.sampled_from([None, "a", "b"]),
              st.sampled_from([[], ["r1"], ["r2"]]), st.sampled_from([32, 24])),
    min_size=1, max_size=4,
).map(lambda specs: [advertisement(f"adv{i}", *s) for i, s in enumerate(specs)])


def prefix(adv: BGPAdvertisementFacts) -> str:
    """The route `adv` sends for IP: the /32, or the pool's /24 aggregate (a different route)."""
    return f"{IP}/32" if adv.route.aggregation_length == 32 else "198.51.100.0/24"


def wire(advs: list[BGPAdvertisementFacts]) -> dict[tuple[str, str, str], int | None]:
    """(node, peer, prefix) -> the localPref the speaker sends for that route of IP."""
    out: dict[tuple[str, str, str], int | None] = {}
    peers = [ibgp_peer("r1", "172.18.0.1"), ibgp_peer("r2", "172.18.0.254")]
    svc = ServiceFacts("default", "web", (IP,), etp_local=False, serving_endpoints=("n1",))
    for node, labels in NODES.items():
        plan = compute_bgp_plan(node, NodeFacts(node, labels=labels), [svc], [POOL], advs, peers,
                                node_addresses=["172.18.0.3"], node_networks=["172.18.0.3/16"])
        for peer, routes in plan.routes.items():
            for route, attrs in routes.items():
                out[(node, peer, route)] = attrs.local_pref
    return out


@settings(max_examples=300, deadline=None)
@given(advertisement_sets)
def test_controller_and_speaker_agree(advs: list[BGPAdvertisementFacts]) -> None:
    losers = local_pref_conflicts(advs, [POOL], NODES)
    sent = wire(advs)
    for a in advs:
        if a.route.local_pref is None:
            assert a.name not in losers
            continue
        applies = [(n, p) for n, labels in NODES.items() if a.selects_node(labels)
                   for p in PEERS if not a.route.peers or p in a.route.peers]
        route = prefix(a)
        overridden = [(n, p) for n, p in applies if sent[(n, p, route)] != a.route.local_pref]
        assert bool(overridden) == (a.name in losers), (a.name, overridden, losers)
        for loss in losers.get(a.name, ()):
            assert any(sent.get((n, p, route)) == loss.winner_local_pref for n in loss.nodes for p in PEERS)


def test_different_aggregation_lengths_do_not_conflict() -> None:
    """A /24 aggregate and the /32s are different routes: both localPrefs reach the wire
    (MetalLB accepts this; issue 10)."""
    advs = [advertisement("adv1", 100, None, [], aggregation=24), advertisement("adv2", 200, None, [])]
    assert local_pref_conflicts(advs, [POOL], NODES) == {}
    sent = wire(advs)
    assert sent[("n1", "r1", "198.51.100.0/24")] == 100 and sent[("n1", "r1", f"{IP}/32")] == 200


def test_order_does_not_matter() -> None:
    advs = [advertisement("b", 200, None, []), advertisement("a", 100, "a", []),
            advertisement("c", 300, "b", [])]
    losses = local_pref_conflicts(advs, [POOL], NODES)
    assert losses == local_pref_conflicts(list(reversed(advs)), [POOL], NODES)
    assert [(x.name, x.winner, x.nodes) for v in losses.values() for x in v] == [
        ("b", "a", ("n1",)), ("c", "b", ("n2",))]
