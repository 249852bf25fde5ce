"""The router's view of each node's session, as the churn bench and e2e test read it (pure parsers)."""

from __future__ import annotations

import json

import pytest

from lab.router import parse_bird_session_marks, parse_frr_session_marks

BIRD = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     18:54:30.123
n_kind_worker BGP        ---        up     18:54:31.456  Established
n_kind_worker2 BGP        ---        start  2026-12-02 18:54:30  Active
dyn4       BGP        ---        start  18:54:30.123  Passive
"""


def test_frr_marks_count_every_restart() -> None:
    text = json.dumps({
        "172.18.0.3": {"bgpState": "Established", "connectionsEstablished": 1, "connectionsDropped": 0},
        "172.18.0.4": {"bgpState": "Active", "connectionsEstablished": 2, "connectionsDropped": 2},
        "NODES": {"peerGroupMembers": {}},
    })
    assert parse_frr_session_marks(text) == {"172.18.0.3": ("Established", "1/0"),
                                             "172.18.0.4": ("Active", "2/2")}


@pytest.mark.parametrize("text", ["", "not json", "{}"])
def test_frr_marks_of_nothing(text: str) -> None:
    assert parse_frr_session_marks(text) == {}


def test_bird_marks_are_state_and_since() -> None:
    assert parse_bird_session_marks(BIRD) == {
        "n_kind_worker": ("Established", "18:54:31.456"),
        "n_kind_worker2": ("Active", "2026-12-02 18:54:30"),
        "dyn4": ("Passive", "18:54:30.123"),
    }
