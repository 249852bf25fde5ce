"""What a BFD state change means to the BGP peers following the session (pure parts of the manager)."""

from __future__ import annotations

import pytest

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.manager import PeerEvent, describe, peer_events, state_name
from lbspeaker.bfd.packet import Diag, State
from lbspeaker.bfd.profile import ProfileFacts, profiles_by_name
from lbspeaker.bfd.session import StateChange

U, D, INIT, A = State.UP, State.DOWN, State.INIT, State.ADMIN_DOWN
EXPIRED = Diag.CONTROL_DETECTION_TIME_EXPIRED
NSD = Diag.NEIGHBOR_SIGNALED_DOWN


@pytest.mark.parametrize(
    ("change", "events"),
    [
        (StateChange(D, INIT, 0, 1.0), []),  # never Up: BGP never relied on it
        (StateChange(INIT, D, EXPIRED, 1.0), []),
        (StateChange(INIT, U, 0, 1.0), [("a", True, False), ("b", True, False)]),
        (StateChange(D, U, 0, 1.0), [("a", True, False), ("b", True, False)]),
        (StateChange(U, D, EXPIRED, 1.0), [("a", False, True), ("b", False, True)]),
        (StateChange(U, D, NSD, 1.0), [("a", False, True), ("b", False, True)]),  # the peer timed us out
        (StateChange(U, D, NSD, 1.0, peer_admin_down=True), [("a", False, False), ("b", False, False)]),
        (StateChange(U, A, Diag.ADMINISTRATIVELY_DOWN, 1.0), [("a", False, True), ("b", False, True)]),
    ],
)
def test_peer_events(change: StateChange, events: list[tuple[str, bool, bool]]) -> None:
    got = peer_events(("a", "b"), change)
    assert [(e.peer, e.up, e.failure) for e in got] == events
    assert all(isinstance(e, PeerEvent) and e.reason == describe(change) for e in got)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (StateChange(U, D, EXPIRED, 1.0), "BFD Up -> Down (control detection time expired)"),
        (StateChange(INIT, U, 0, 1.0), "BFD Init -> Up"),
        (StateChange(U, D, NSD, 1.0, peer_admin_down=True),
         "BFD Up -> Down (the peer stopped BFD: AdminDown; BGP is left alone)"),
    ],
)
def test_describe(change: StateChange, text: str) -> None:
    assert describe(change) == text


def test_state_names_match_the_status_schema() -> None:
    from typing import get_args

    from lbspeaker.api.models import BGPSessionState

    allowed = set(get_args(get_args(BGPSessionState.model_fields["bfd"].annotation)[0]))
    assert {state_name(s) for s in State} == allowed == {"Up", "Down", "Init", "AdminDown"}


def test_profile_reading() -> None:
    good = ProfileFacts.from_object({"metadata": {"name": "fast"}, "spec": {"receiveInterval": 100}})
    bad = ProfileFacts.from_object({"metadata": {"name": "bad"}, "spec": {"detectMultiplier": 1000}})
    assert good.spec == BFDProfileSpec(receiveInterval=100) and not good.error
    assert bad.spec is None and bad.error.startswith("spec.detectMultiplier:")
    assert profiles_by_name([good, bad]) == ({"fast": good.spec}, {"bad": bad.error})
    assert good == ProfileFacts.from_object({"metadata": {"name": "fast"}, "spec": {"receiveInterval": 100}})
