"""Which BFD sessions a node's speaker runs, from its BGP peers and the BFDProfiles (pure).

A BGPPeer that selects this node and names a `bfdProfile` gets one single-hop session to its
`peerAddress` (from its `sourceAddress`, when set). Several BGPPeers to the same address share it.
What cannot run is a problem with a reason, never silence: a missing profile, a multi-hop peer
(RFC 5883 is not implemented), two peers asking one address for different settings; echoMode is
reported but the session runs without echo. BGP itself is never held back by a BFD problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.profile import minimum_ttl, session_config
from lbspeaker.bfd.session import SessionConfig, SessionKey
from lbspeaker.bgp.config import PeerSpec


@dataclass(frozen=True)
class DesiredSession:
    """One session to run, and the BGPPeers that follow it."""

    key: SessionKey
    config: SessionConfig
    min_ttl: int
    profile: str
    peers: tuple[str, ...]


@dataclass(frozen=True)
class BFDProblem:
    """Why a peer's BFD does not run as written (`fatal`: no session for it at all)."""

    peer: str
    reason: str
    message: str
    fatal: bool = True


def plan_sessions(
    peers: Iterable[PeerSpec], profiles: Mapping[str, BFDProfileSpec],
    invalid: Mapping[str, str] | None = None,
) -> tuple[dict[SessionKey, DesiredSession], list[BFDProblem]]:
    """Sessions by key and the problems found, peers taken in name order (deterministic).

    `invalid`: {name: error} of BFDProfiles that exist but do not parse (the schema should have
    refused them; an API server without validation may not have)."""
    sessions: dict[SessionKey, DesiredSession] = {}
    problems: list[BFDProblem] = []
    for peer in sorted(peers, key=lambda p: p.name):
        name = peer.bfd_profile
        if not name:
            continue
        spec = profiles.get(name)
        if spec is None and invalid and name in invalid:
            problems.append(BFDProblem(
                peer.name, "BFDProfileInvalid",
                f"BFDProfile {name!r} cannot be used ({invalid[name]}): no BFD for this peer "
                "(BGP runs on its hold timer); fix the profile",
            ))
            continue
        if spec is None:
            problems.append(BFDProblem(
                peer.name, "BFDProfileNotFound",
                f"bfdProfile {name!r} does not exist in this namespace: no BFD for this peer "
                "(BGP runs on its hold timer); create the BFDProfile or fix the name",
            ))
            continue
        if peer.ebgp_multihop:
            problems.append(BFDProblem(
                peer.name, "MultiHopBFDNotSupported",
                "BFD for ebgpMultiHop peers (RFC 5883 multi-hop) is not supported: no BFD for this "
                "peer (BGP runs on its hold timer); remove bfdProfile or peer directly",
            ))
            continue
        if spec.echoMode:
            problems.append(BFDProblem(
                peer.name, "EchoModeNotSupported",
                f"BFDProfile {name!r} sets echoMode, which lbspeaker does not support: the session "
                "runs in asynchronous mode without echo (failures are still detected in "
                f"{spec.detect_multiplier()} x {spec.receive_interval_ms()} ms); set echoMode: false "
                "to silence this",
                fatal=False,
            ))
        key = SessionKey(peer.peer_address, peer.source_address)
        config = session_config(spec)
        existing = sessions.get(key)
        if existing is None:
            sessions[key] = DesiredSession(key, config, minimum_ttl(spec, False), name, (peer.name,))
        elif existing.config == config:
            sessions[key] = DesiredSession(key, config, existing.min_ttl, existing.profile,
                                           (*existing.peers, peer.name))
        else:
            problems.append(BFDProblem(
                peer.name, "BFDProfileConflict",
                f"BGPPeer {existing.peers[0]!r} already runs BFD to {peer.peer_address} with profile "
                f"{existing.profile!r}; one address has one BFD session: use the same profile",
            ))
    return sessions, problems


def peers_following(sessions: Mapping[SessionKey, DesiredSession], key: SessionKey) -> tuple[str, ...]:
    """BGPPeer names whose sessions go down with this BFD session."""
    session = sessions.get(key)
    return session.peers if session else ()
