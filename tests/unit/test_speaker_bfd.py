"""BFD in the speaker's pure parts: the session entry with its BFD state, the BGP plan's BFD sessions."""

from __future__ import annotations

import pytest

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.session import SessionKey
from lbspeaker.bgp.plan import compute_bgp_plan
from lbspeaker.facts import NodeFacts, PeerFacts
from lbspeaker.speaker.sessions import SessionEntry, merge_session, with_bfd

DOWN = "BFD Up -> Down (control detection time expired)"


@pytest.mark.parametrize(
    ("entry", "bfd", "want"),
    [
        (SessionEntry("Established"), None, SessionEntry("Established")),
        (SessionEntry("Established"), ("Up", "BFD Init -> Up"), SessionEntry("Established", bfd="Up")),
        # BFD never came Up (router without BFD): BGP runs, the entry says BFD is Down
        (SessionEntry("Established"), ("Down", ""), SessionEntry("Established", bfd="Down")),
        # torn down by BFD: the reason starts with why
        (SessionEntry("Idle", "we sent NOTIFICATION Cease / BFD Down"), ("Down", DOWN),
         SessionEntry("Idle", f"{DOWN}; we sent NOTIFICATION Cease / BFD Down", bfd="Down")),
        (SessionEntry("Active"), ("Init", DOWN), SessionEntry("Active", DOWN, bfd="Init")),
        (SessionEntry("Active", DOWN), ("Down", DOWN), SessionEntry("Active", DOWN, bfd="Down")),
        # BFD back Up while BGP reconnects: BFD is no longer the reason
        (SessionEntry("Connect", "connecting"), ("Up", "BFD Init -> Up"),
         SessionEntry("Connect", "connecting", bfd="Up")),
    ],
)
def test_with_bfd(entry: SessionEntry, bfd: tuple[str, str] | None, want: SessionEntry) -> None:
    assert with_bfd(entry, bfd) == want


def test_bfd_state_in_the_status_entry() -> None:
    status = merge_session(None, "n1", SessionEntry("Established", bfd="Up"))
    assert status["sessions"] == [{"node": "n1", "state": "Established", "reason": "", "bfd": "Up"}]
    assert "bfd" not in merge_session(None, "n1", SessionEntry("Idle"))["sessions"][0]


def peer(name: str, **spec: object) -> PeerFacts:
    base: dict[str, object] = {"myASN": 64513, "peerASN": 64512, "peerAddress": "172.18.0.1"}
    base.update(spec)
    return PeerFacts.from_object({"metadata": {"name": name}, "spec": base})


def test_bgp_plan_runs_bfd_for_configured_peers_and_reports_problems() -> None:
    plan = compute_bgp_plan(
        "n1", NodeFacts("n1"), services=[], pools=[], advertisements=[],
        peers=[peer("a", bfdProfile="fast"), peer("b", peerAddress="172.18.0.9", bfdProfile="missing"),
               peer("c", peerAddress="172.18.0.10", vrf="red", bfdProfile="fast"),  # not configured
               peer("d", peerAddress="172.18.0.11", bfdProfile="echo")],
        node_addresses=["172.18.0.3"], bfd_profiles={"fast": BFDProfileSpec(), "echo": BFDProfileSpec(
            echoMode=True)},
    )
    assert sorted((k.peer, s.peers) for k, s in plan.bfd_sessions.items()) == [
        ("172.18.0.1", ("a",)), ("172.18.0.11", ("d",))]
    assert SessionKey("172.18.0.1") in plan.bfd_sessions
    reasons = {(p.name, p.reason) for p in plan.problems}
    assert {("b", "BFDProfileNotFound"), ("d", "EchoModeNotSupported")} <= reasons
    assert not any(p.name == "c" and p.reason.startswith("BFD") for p in plan.problems)
    assert [p.name for p in plan.peers] == ["a", "b", "d"]  # BGP never waits for BFD
    missing = next(p for p in plan.problems if p.reason == "BFDProfileNotFound")
    assert "'missing'" in missing.message and "create the BFDProfile or fix the name" in missing.message
