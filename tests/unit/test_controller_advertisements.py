"""The Ready condition the controller writes on L2/BGP advertisements: a table of cases."""

from __future__ import annotations

from typing import Any

import pytest

from controller.advertisements import advertisement_conditions

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
