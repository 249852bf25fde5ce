"""ConfigurationState (pure): names, labels, conditions, result/errorSummary (MetalLB's rule), change
detection, and which speakers' states are stale."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker import configstate as CS
from lbspeaker.api.constants import COMPONENT_TYPE_LABEL, NODE_NAME_LABEL
from lbspeaker.api.models import ERROR_SUMMARY_LEN, NAME_LEN, ConfigurationState, parse_object
from lbspeaker.facts import Problem

T0, T1 = "2026-12-02T18:00:00Z", "2026-12-02T18:05:00Z"
OVERLAP = Problem("IPAddressPool", "b", "Overlap", "overlaps pool a (172.18.255.0/24).")
UNKNOWN_POOL = Problem("L2Advertisement", "adv", "UnknownPool", "pool nope does not exist")


@pytest.mark.parametrize("component,node,name,labels", [
    ("controller", None, "controller", {COMPONENT_TYPE_LABEL: "controller"}),
    ("speaker", "kind-worker", "speaker-kind-worker",
     {COMPONENT_TYPE_LABEL: "speaker", NODE_NAME_LABEL: "kind-worker"}),
])
def test_names_and_labels_are_metallbs(component: str, node: str | None, name: str,
                                       labels: dict[str, str]) -> None:
    assert CS.object_name(component, node) == name
    assert CS.labels(component, node) == labels
    assert CS.new_object(component, "lbspeaker-system", node)["metadata"] == {
        "name": name, "namespace": "lbspeaker-system", "labels": labels}


def test_a_long_node_name_still_makes_a_valid_unique_name() -> None:
    a, b = "n" * 250 + "a", "n" * 250 + "b"
    assert len(CS.object_name("speaker", a)) <= NAME_LEN
    assert CS.object_name("speaker", a) != CS.object_name("speaker", b)


# result / errorSummary: MetalLB's table (configuration_state_controller_test.go), with our reasons.
@pytest.mark.parametrize("conditions,result,summary", [
    ([], "Unknown", ""),
    ([{"type": "A", "status": "True", "reason": "Valid", "message": ""},
      {"type": "B", "status": "True", "reason": "Valid", "message": ""}], "Valid", ""),
    ([{"type": "A", "status": "True", "reason": "Valid", "message": ""},
      {"type": "B", "status": "False", "reason": "ConfigurationError", "message": "bad pool"}],
     "Invalid", "bad pool"),
    ([{"type": "A", "status": "False", "reason": "ConfigurationError", "message": "one"},
      {"type": "B", "status": "False", "reason": "ConfigurationError", "message": "two"}],
     "Invalid", "one; two"),
    # a False condition that is not a configuration error does not make the configuration invalid
    ([{"type": "A", "status": "False", "reason": "SomethingElse", "message": "api down"}], "Valid", ""),
])
def test_summarize(conditions: list[dict[str, Any]], result: str, summary: str) -> None:
    assert CS.summarize(conditions) == (result, summary)


def test_desired_status_names_each_problem_on_one_line() -> None:
    status = CS.desired_status({CS.POOLS: [OVERLAP], CS.ADVERTISEMENTS: []}, None, T0)
    assert status["result"] == "Invalid"
    assert status["errorSummary"] == "IPAddressPool b: overlaps pool a (172.18.255.0/24)"
    pools, advs = sorted(status["conditions"], key=lambda c: c["type"])[::-1]
    assert pools == {"type": "PoolReconcilerValid", "status": "False", "reason": "ConfigurationError",
                     "message": "IPAddressPool b: overlaps pool a (172.18.255.0/24)",
                     "lastTransitionTime": T0}
    assert advs == {"type": "AdvertisementReconcilerValid", "status": "True", "reason": "Valid",
                    "message": "", "lastTransitionTime": T0}
    parse_object({"kind": "ConfigurationState", "status": status})  # the schema takes it


def test_valid_has_no_error_summary() -> None:
    status = CS.desired_status({CS.LAYER2: [], CS.BGP: []}, None, T0)
    assert status["result"] == "Valid" and "errorSummary" not in status


def test_unchanged_state_is_an_equal_status_later() -> None:
    first = CS.desired_status({CS.POOLS: [OVERLAP]}, None, T0)
    assert CS.desired_status({CS.POOLS: [OVERLAP]}, first, T1) == first


def test_transition_time_moves_only_when_a_condition_flips() -> None:
    first = CS.desired_status({CS.POOLS: [OVERLAP], CS.ADVERTISEMENTS: []}, None, T0)
    second = CS.desired_status({CS.POOLS: [], CS.ADVERTISEMENTS: []}, first, T1)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times == {CS.POOLS: T1, CS.ADVERTISEMENTS: T0}
    assert second["result"] == "Valid"


def test_many_problems_are_bounded() -> None:
    many = [Problem("IPAddressPool", f"p{i}", "Overlap", "x" * 500) for i in range(200)]
    status = CS.desired_status({CS.POOLS: many}, None, T0)
    assert status["conditions"][0]["message"].endswith(f"and {200 - CS.MAX_LISTED} more")
    assert len(status["errorSummary"]) <= ERROR_SUMMARY_LEN
    ConfigurationState.model_validate({"status": status})


@given(st.lists(st.tuples(st.sampled_from(["IPAddressPool", "L2Advertisement"]),
                          st.text(min_size=1, max_size=8), st.text(max_size=40)), max_size=30),
       st.sampled_from([CS.POOLS, CS.LAYER2]))
def test_any_problems_give_one_line_and_a_schema_valid_status(rows: list[tuple[str, str, str]],
                                                             ctype: str) -> None:
    problems = [Problem(k, n, "Bad", m) for k, n, m in rows]
    status = CS.desired_status({ctype: problems}, None, T0)
    assert (status["result"] == "Invalid") == bool(problems)
    assert "\n" not in status.get("errorSummary", "")
    ConfigurationState.model_validate({"status": status})
    assert CS.desired_status({ctype: list(reversed(problems))}, status, T1) == status  # order-free


@pytest.mark.parametrize("objects,nodes,stale", [
    ([], ["a"], []),
    ([{"metadata": {"name": "speaker-a", "labels": CS.labels("speaker", "a")}},
      {"metadata": {"name": "speaker-gone", "labels": CS.labels("speaker", "gone")}},
      {"metadata": {"name": "controller", "labels": CS.labels("controller")}},
      {"metadata": {"name": "unlabelled"}}], ["a"], ["speaker-gone"]),
    ([{"metadata": {"name": "speaker-a", "labels": CS.labels("speaker", "a")}}], [], ["speaker-a"]),
])
def test_stale_speaker_states(objects: list[dict[str, Any]], nodes: list[str], stale: list[str]) -> None:
    assert CS.stale_speaker_states(objects, nodes) == stale


def test_a_part_that_has_not_reported_keeps_the_result_unknown() -> None:
    status = CS.desired_status({CS.LAYER2: []}, None, T0, expected=[CS.LAYER2, CS.BGP])
    assert status["result"] == "Unknown"
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        CS.LAYER2: ("True", "Valid"), CS.BGP: ("Unknown", "NotYetChecked")}
    later = CS.desired_status({CS.LAYER2: []}, status, T1, expected=[CS.LAYER2, CS.BGP])
    assert later == status
    bad = CS.desired_status({CS.LAYER2: [UNKNOWN_POOL]}, status, T1, expected=[CS.BGP])
    assert bad["result"] == "Invalid"
    done = CS.desired_status({CS.LAYER2: [], CS.BGP: []}, status, T1, expected=[CS.LAYER2, CS.BGP])
    assert done["result"] == "Valid"
    assert {c["type"]: c["lastTransitionTime"] for c in done["conditions"]} == {CS.LAYER2: T0, CS.BGP: T1}
