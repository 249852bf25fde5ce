"""Which BFD sessions a speaker runs for its BGPPeers (table of cases)."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.io import SessionKey
from lbspeaker.bfd.plan import peers_following, plan_sessions
from lbspeaker.bgp.config import PeerSpec

PROFILES = {
    "fast": BFDProfileSpec(transmitInterval=100, receiveInterval=100),
    "default": BFDProfileSpec(),
    "echo": BFDProfileSpec(echoMode=True),
}


R = "172.18.0.1"


def peer(name: str, address: str = "172.18.0.1", **kw: Any) -> PeerSpec:
    return PeerSpec(name=name, peer_address=address, my_asn=64513, peer_asn=64512, **kw)


@pytest.mark.parametrize(
    ("peers", "sessions", "problems"),
    [
        ([peer("a")], {}, []),
        ([peer("a", bfd_profile="fast")], {(R, None): ("a",)}, []),
        ([peer("a", bfd_profile="missing")], {}, [("a", "BFDProfileNotFound", True)]),
        ([peer("a", bfd_profile="fast", ebgp_multihop=True)], {}, [("a", "MultiHopBFDNotSupported", True)]),
        ([peer("a", bfd_profile="echo")], {(R, None): ("a",)}, [("a", "EchoModeNotSupported", False)]),
        ([peer("b", bfd_profile="fast"), peer("a", bfd_profile="fast")], {(R, None): ("a", "b")}, []),
        ([peer("b", bfd_profile="default"), peer("a", bfd_profile="fast")], {(R, None): ("a",)},
         [("b", "BFDProfileConflict", True)]),
        ([peer("a", bfd_profile="fast", source_address="172.18.0.3"),
          peer("b", "fd00::1", bfd_profile="fast")],
         {(R, "172.18.0.3"): ("a",), ("fd00::1", None): ("b",)}, []),
    ],
)
def test_plan(peers: list[PeerSpec], sessions: dict, problems: list) -> None:
    got, probs = plan_sessions(peers, PROFILES)
    assert {(k.peer, k.local): s.peers for k, s in got.items()} == sessions
    assert [(p.peer, p.reason, p.fatal) for p in probs] == problems


def test_session_settings_and_followers() -> None:
    got, _ = plan_sessions([peer("a", bfd_profile="fast")], PROFILES)
    s = got[SessionKey("172.18.0.1")]
    assert (s.config.desired_min_tx_us, s.config.required_min_rx_us, s.min_ttl) == (100_000, 100_000, 255)
    assert peers_following(got, SessionKey("172.18.0.1")) == ("a",)
    assert peers_following(got, SessionKey("10.0.0.1")) == ()


def test_invalid_profile_is_its_own_problem() -> None:
    invalid = {"bad": "spec.detectMultiplier: too big"}
    _, probs = plan_sessions([peer("a", bfd_profile="bad")], PROFILES, invalid)
    assert [(p.reason, p.fatal) for p in probs] == [("BFDProfileInvalid", True)]
    assert "too big" in probs[0].message and "fix the profile" in probs[0].message


def test_echo_mode_says_what_runs_and_how_to_silence_it() -> None:
    _, (prob,) = plan_sessions([peer("a", bfd_profile="echo")], PROFILES)
    assert "asynchronous mode" in prob.message and "echoMode: false" in prob.message
