"""The Ready condition the controller writes on L2/BGP advertisements: a table of cases."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker.controller.advertisements import advertisement_conditions

NOW = "2026-11-22T10:00:00Z"


def adv(**spec: Any) -> dict[str, Any]:
    return {"kind": "L2Advertisement", "metadata": {"name": "a", "generation": 3}, "spec": spec}


def pool(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"addresses": ["172.18.255.200/30"]}}


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}


POOLS = [pool("web", tier="front"), pool("db")]
NODES = [node("kind-worker", zone="a"), node("kind-worker2", zone="b")]


@pytest.mark.parametrize(("spec", "status", "reason", "in_message"), [
    ({}, "True", "Accepted", "pool(s) db, web from node(s) kind-worker, kind-worker2"),
    ({"ipAddressPools": ["web"], "nodeSelectors": [{"matchLabels": {"zone": "b"}}]}, "True", "Accepted",
     "pool(s) web from node(s) kind-worker2"),
    ({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "front"}}]}, "True", "Accepted", "pool(s) web "),
    ({"ipAddressPools": ["nope"]}, "False", "UnknownPool", "'nope', which does not exist"),
    ({"nodeSelectors": [{"matchLabels": {"zone": "mars"}}]}, "False", "NodeSelectorMatchesNothing",
     "match no node"),
    ({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "none"}}]}, "False", "PoolSelectorMatchesNothing",
     "match no IPAddressPool"),
    # repeated entries: MetalLB rejects them (validateDuplicate); the CRD makes these lists sets
    ({"ipAddressPools": ["web", "web"]}, "False", "DuplicateEntries", "spec.ipAddressPools lists web more"),
    ({"nodeSelectors": [{"matchLabels": {"zone": "a"}}, {"matchLabels": {"zone": "a"}}]}, "False",
     "DuplicateEntries", 'spec.nodeSelectors lists {"matchLabels": {"zone": "a"}} more than once'),
    ({"ipAddressPools": ["web", "web"], "nodeSelectors": [{"matchLabels": {"zone": "mars"}}]}, "False",
     "InvalidConfiguration", "list each entry once"),
    ({"ipAddressPools": ["nope"], "nodeSelectors": [{"matchLabels": {"zone": "mars"}}]}, "False",
     "InvalidConfiguration", "match no node"),
])
def test_ready_condition(spec: dict[str, Any], status: str, reason: str, in_message: str) -> None:
    [ready] = advertisement_conditions(adv(**spec), POOLS, NODES, None, NOW)
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", status, reason)
    assert in_message in ready["message"]
    assert ready["observedGeneration"] == 3


def test_recomputing_an_unchanged_state_changes_nothing() -> None:
    first = advertisement_conditions(adv(ipAddressPools=["nope"]), POOLS, NODES, None, NOW)
    later = "2026-11-22T11:00:00Z"
    again = advertisement_conditions(adv(ipAddressPools=["nope"]), POOLS, NODES, first, later)
    assert again == first  # same lastTransitionTime: no status write, no Event


def test_transition_time_moves_when_status_flips() -> None:
    bad = advertisement_conditions(adv(ipAddressPools=["nope"]), POOLS, NODES, None, NOW)
    later = "2026-11-22T11:00:00Z"
    good = advertisement_conditions(adv(ipAddressPools=["web"]), POOLS, NODES, bad, later)
    assert good[0]["lastTransitionTime"] == later


def test_long_lists_are_bounded() -> None:
    many = [pool(f"p{i:02}") for i in range(25)]
    [ready] = advertisement_conditions(adv(), many, NODES, None, NOW)
    assert "and 15 more" in ready["message"]


# -- BGPAdvertisement: localPref conflicts (the speakers' rule: first by name wins) ---------------------


def bgp(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "BGPAdvertisement", "metadata": {"name": name, "generation": 1}, "spec": spec}


ZONE_A = [{"matchLabels": {"zone": "a"}}]
ZONE_B = [{"matchLabels": {"zone": "b"}}]


def ready_of(name: str, advs: list[dict[str, Any]], previous: Any = None, now: str = NOW) -> dict[str, Any]:
    [adv_obj] = [a for a in advs if a["metadata"]["name"] == name]
    [ready] = advertisement_conditions(adv_obj, POOLS, NODES, previous, now, bgp_advertisements=advs)
    return ready


@pytest.mark.parametrize(("advs", "expect"), [
    # same pool(s), same nodes, every peer: the later name loses
    ([bgp("a", localPref=100), bgp("b", localPref=200)], {"a": None, "b": "a"}),
    # the same value is no conflict; an advertisement without localPref is none either
    ([bgp("a", localPref=100), bgp("b", localPref=100), bgp("c")], {"a": None, "b": None, "c": None}),
    # disjoint nodes: different localPref per node is how operators prefer some nodes
    ([bgp("a", localPref=100, nodeSelectors=ZONE_A), bgp("b", localPref=200, nodeSelectors=ZONE_B)],
     {"a": None, "b": None}),
    # overlapping nodes (b selects every node)
    ([bgp("a", localPref=100, nodeSelectors=ZONE_A), bgp("b", localPref=200)], {"a": None, "b": "a"}),
    # disjoint pools
    ([bgp("a", localPref=100, ipAddressPools=["web"]), bgp("b", localPref=200, ipAddressPools=["db"])],
     {"a": None, "b": None}),
    # pools overlapping through a selector
    ([bgp("a", localPref=100, ipAddressPools=["web"]),
      bgp("b", localPref=200, ipAddressPoolSelectors=[{"matchLabels": {"tier": "front"}}])],
     {"a": None, "b": "a"}),
    # disjoint peers; and `peers` empty (every peer) overlaps a named one
    ([bgp("a", localPref=100, peers=["r1"]), bgp("b", localPref=200, peers=["r2"])], {"a": None, "b": None}),
    ([bgp("a", localPref=100, peers=["r1"]), bgp("b", localPref=200)], {"a": None, "b": "a"}),
    # the winner's value is what is used: c agrees with it, only b loses
    ([bgp("a", localPref=100), bgp("b", localPref=200), bgp("c", localPref=100)],
     {"a": None, "b": "a", "c": None}),
    # where a does not apply (zone b), b wins over c there
    ([bgp("a", localPref=100, nodeSelectors=ZONE_A), bgp("b", localPref=200, nodeSelectors=ZONE_B),
      bgp("c", localPref=100)], {"a": None, "b": None, "c": "b"}),
    # an advertisement that does not parse takes part in nothing
    ([bgp("a", localPref="high"), bgp("b", localPref=200)], {"b": None}),
])
def test_local_pref_conflicts(advs: list[dict[str, Any]], expect: dict[str, str | None]) -> None:
    for name, winner in expect.items():
        ready = ready_of(name, advs)
        if winner is None:
            assert ready["status"] == "True", (name, ready)
            continue
        assert (ready["status"], ready["reason"]) == ("False", "LocalPrefConflict"), (name, ready)
        assert f"overridden by BGPAdvertisement {winner} " in ready["message"], ready["message"]
        assert "the first by name wins" in ready["message"]
        assert "same localPref" in ready["message"] and "disjoint" in ready["message"]


def test_local_pref_conflict_message_names_values_pools_and_nodes() -> None:
    advs = [bgp("a", localPref=100, ipAddressPools=["web"], nodeSelectors=ZONE_B),
            bgp("b", localPref=250, ipAddressPools=["web"])]
    ready = ready_of("b", advs)
    assert ready["message"].startswith(
        "localPref 250 is overridden by BGPAdvertisement a (localPref 100; the first by name wins) "
        "for pool(s) web on node(s) kind-worker2."), ready["message"]


def test_local_pref_conflict_with_another_problem_is_invalid_configuration() -> None:
    advs = [bgp("a", localPref=100), bgp("b", localPref=200, ipAddressPools=["web", "nope"])]
    ready = ready_of("b", advs)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidConfiguration")
    assert "'nope', which does not exist" in ready["message"] and "overridden by" in ready["message"]
    assert "Fix the advertisement's spec" in ready["message"]


def test_local_pref_conflict_does_not_flap() -> None:
    advs = [bgp("a", localPref=100), bgp("b", localPref=200), bgp("c", localPref=300)]
    first = ready_of("c", advs)
    later = "2026-11-22T11:00:00Z"
    # recomputed later, from the previous condition, with the objects in another order: identical
    again = ready_of("c", list(reversed(advs)), previous=[first], now=later)
    assert again == first
    # the winner stays Ready whatever the order
    assert ready_of("a", list(reversed(advs)))["status"] == "True"


def test_local_pref_is_only_checked_when_bgp_advertisements_are_passed() -> None:
    [ready] = advertisement_conditions(bgp("b", localPref=200), POOLS, NODES, None, NOW)
    assert ready["status"] == "True"


def test_ready_message_leaves_out_excluded_nodes() -> None:
    """Was: kind-control-plane was named as announcing although its label excludes it."""
    excluded = {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
    nodes = [*NODES, node("kind-control-plane", **excluded)]
    [ready] = advertisement_conditions(adv(), POOLS, nodes, None, NOW)
    assert ready["message"] == (
        "announces pool(s) db, web from node(s) kind-worker, kind-worker2 (not from kind-control-plane: "
        "labelled node.kubernetes.io/exclude-from-external-load-balancers)"
    )
