"""This node's entry in an L2Advertisement's status.nodeProblems (pure part)."""

from __future__ import annotations

from lbspeaker.facts import Problem
from lbspeaker.speaker.nodeproblems import node_local, with_node_problems

MISSING = Problem("L2Advertisement", "a", "InterfaceNotFound", "node w1 has no interface eth9")


def test_only_node_local_problems_of_advertisements_are_kept() -> None:
    problems = [MISSING, Problem("L2Advertisement", "a", "UnknownPool", "no pool x"),
                Problem("Service", "ns/s", "InterfaceNotFound", "not an advertisement")]
    assert node_local(problems) == {"a": (MISSING,)}


def test_set_then_clear_keeps_other_nodes_entries() -> None:
    other = {"node": "w2", "reason": "InterfaceNotFound", "message": "node w2 has no interface eth9"}
    status = {"conditions": [{"type": "Ready"}], "nodeProblems": [other]}
    new = with_node_problems(status, "w1", [MISSING])
    assert new is not None
    assert new["nodeProblems"] == [{"node": "w1", "reason": "InterfaceNotFound", "message": MISSING.message},
                                   other]
    assert new["conditions"] == status["conditions"]  # the controller's conditions are untouched
    assert with_node_problems(new, "w1", [MISSING]) is None  # unchanged: no write
    cleared = with_node_problems(new, "w1", [])
    assert cleared == status


def test_last_entry_removed_drops_the_list() -> None:
    status = with_node_problems({}, "w1", [MISSING])
    assert status is not None
    assert with_node_problems(status, "w1", []) == {}
    assert with_node_problems({}, "w1", []) is None
