"""ExaBGP 5 configuration from BGPPeers (pure).

The file is one `process` (the relay that connects ExaBGP's API to the speaker, see
`relay.py`) and one `neighbor` block per peer; the speaker renders one file per BGPPeer
(`peers.py` runs one ExaBGP per peer) and all of them together only to validate.
Routes are never written into the file: they go through the API, so a reload (SIGUSR1)
only changes sessions, and ExaBGP keeps the API routes of unchanged neighbours (its
outgoing RIB is cached by neighbour name).

Mapping of BGPPeer (v1beta2) fields, and why:

* `peerAddress`, `myASN`, `peerASN` -> `neighbor`, `local-as`, `peer-as`.
  `dynamicASN: internal` -> `peer-as` = myASN (iBGP by definition);
  `dynamicASN: external` -> `peer-as auto` (ExaBGP accepts what the router sends;
  `session.py` flags an OPEN whose AS equals myASN).
* `localASN` (eBGP only, MetalLB's `local-as <ASN> no-prepend replace-as`) -> this neighbour's
  `local-as`: ExaBGP sets the local AS per neighbour, so the OPEN carries localASN and the
  routes we originate have AS_PATH [localASN], which is what FRR's replace-as sends. (no-prepend
  is about received routes, which the speaker does not import.) On an iBGP peer it is refused.
* `sourceAddress` -> `local-address` (and the MD5 key is bound to it); unset: ExaBGP
  picks the address the kernel routes from.
* `peerPort` -> `connect` (only when not 179).
* `holdTime` -> `hold-time` (whole seconds). ExaBGP has no keepalive setting: it
  sends keepalives every hold/3, so a `keepaliveTime` other than that is reported.
  `connectTime` has no ExaBGP equivalent either (reported when set).
* `routerID` -> `router-id` (default: the node's IPv4 address given by the caller).
* TTL: eBGP without `ebgpMultiHop` sends with TTL 1 (a directly connected router,
  as FRR/MetalLB do); eBGP with `ebgpMultiHop` sends with TTL 255; iBGP keeps the
  kernel default.
* `password` / the Secret's value -> `md5-password` written base64 (`md5-base64
  true`), so no character of a password can break the file's syntax.
* `enableGracefulRestart` -> `capability { graceful-restart 120; }` (MetalLB's FRR
  restart time) and `manual-eor true`: ExaBGP would send End-of-RIB as soon as the
  session is up, before the speaker has re-announced through the API, and the router
  would drop the stale routes it kept across the restart; the manager sends End-of-RIB
  itself once the routes to that peer are acknowledged (`eor_commands`).
* Address families: the peer's own family; `dualStackAddressFamily` adds the other
  (MP-BGP). A route of the session's family goes with `next-hop self`; a route of the
  other family needs an address of that family as next hop (an IPv6 next hop cannot be
  the IPv4 session's local address), so it carries this node's address of that family
  (`PeerSpec.node_addresses`, the Node's InternalIPs); without one it is not announced
  and a problem says so (`next_hop`).
* `interface` (unnumbered), `vrf`: not supported by ExaBGP; the peer is skipped,
  with a problem reported.
* `bfdProfile`: nothing in ExaBGP's file; the speaker runs the BFD session itself
  (`lbspeaker.bfd`) and tears the BGP session down when BFD declares the peer down.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbspeaker.facts import Problem

PROCESS_NAME = "lbspeaker"
GRACEFUL_RESTART_TIME = 120  # seconds, what MetalLB configures FRR with
DEFAULT_HOLD_TIME = 90
MAX_MD5_LENGTH = 80  # TCP_MD5SIG_MAXKEYLEN
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_./:@%+=,-]+$")


@dataclass(frozen=True)
class PeerSpec:
    """One BGP session as the speaker wants it (a BGPPeer resolved for this node).

    `name` is the BGPPeer name (the key everywhere); `password` is already resolved
    from `passwordSecret` by the caller (the only I/O that needs the API server).
    """

    name: str
    peer_address: str
    my_asn: int
    peer_asn: int | None = None
    local_asn: int | None = None  # localASN: the AS presented to this peer instead of my_asn
    dynamic_asn: str | None = None  # "internal" | "external"
    peer_port: int = 179
    source_address: str | None = None
    hold_time: float = DEFAULT_HOLD_TIME
    keepalive_time: float | None = None
    connect_time: float | None = None
    router_id: str | None = None
    ebgp_multihop: bool = False
    password: str | None = None
    graceful_restart: bool = False
    dual_stack: bool = False
    interface: str | None = None
    vrf: str | None = None
    bfd_profile: str | None = None
    node_addresses: tuple[str, ...] = ()  # this node's IPs: next hops for the other family

    @functools.cached_property  # asked once per route handed to ExaBGP
    def family(self) -> int:
        """IP version of the session (4 or 6)."""
        return ipaddress.ip_address(self.peer_address).version

    @property
    def session_asn(self) -> int:
        """The local AS of this session: localASN when set, else myASN."""
        return self.local_asn if self.local_asn is not None else self.my_asn

    @property
    def is_ebgp(self) -> bool:
        """True when the router is in another AS (dynamicASN external counts as eBGP)."""
        if self.peer_asn is not None:
            return self.peer_asn != self.my_asn
        return self.dynamic_asn != "internal"

    @property
    def selector(self) -> str:
        """ExaBGP API neighbour selector addressing exactly this session."""
        return f"neighbor {self.peer_address} local-as {self.session_asn}"

    def families(self) -> tuple[int, ...]:
        """IP versions of the routes this session carries."""
        if self.dual_stack:
            return (4, 6)
        return (self.family,)

    def next_hop(self, version: int) -> str | None:
        """The ExaBGP next hop of a route of IP `version`: "self" for the session's own family,
        this node's first address of that family otherwise (MP-BGP), None when it has none."""
        if version == self.family:
            return "self"
        for address in self.node_addresses:
            try:
                if ipaddress.ip_address(address).version == version:
                    return address
            except ValueError:
                continue
        return None


# Reasons of the `facts.Problem`s (kind BGPPeer) about what ExaBGP cannot honour.
INVALID_PEER = "InvalidPeer"  # fatal: the peer is left out of the configuration
PEER_FIELD_IGNORED = "PeerFieldIgnored"  # the session runs without that field


def is_fatal(problem: Problem) -> bool:
    """Whether the problem keeps its peer out of the configuration."""
    return problem.reason == INVALID_PEER


@dataclass
class RenderedConfig:
    """The configuration text and what could not be expressed in it."""

    text: str
    peers: list[PeerSpec] = field(default_factory=list)  # the peers actually configured
    problems: list[Problem] = field(default_factory=list)


def peer_spec_from_bgppeer(
    name: str,
    spec: Any,
    default_router_id: str | None = None,
    password: str | None = None,
    node_addresses: Sequence[str] = (),
) -> PeerSpec:
    """PeerSpec from a `BGPPeerSpec` model (api.models) for this node.

    `password` is the value read from `passwordSecret` (the caller reads the Secret);
    it wins over the clear-text `password` field, which the CRD forbids together anyway.
    `node_addresses` (the Node's InternalIPs) give the next hop of the other family.
    """
    return PeerSpec(
        name=name,
        peer_address=spec.peerAddress or "",
        my_asn=spec.myASN,
        peer_asn=spec.peerASN,
        local_asn=spec.localASN,
        dynamic_asn=spec.dynamicASN,
        peer_port=spec.peerPort,
        source_address=spec.sourceAddress,
        hold_time=spec.hold_time_seconds(),
        keepalive_time=spec.keepalive_time_seconds() if spec.keepaliveTime is not None else None,
        connect_time=spec.connect_time_seconds(),
        router_id=spec.routerID or default_router_id,
        ebgp_multihop=spec.ebgpMultiHop,
        password=password if password is not None else spec.password,
        graceful_restart=spec.enableGracefulRestart,
        dual_stack=spec.dualStackAddressFamily,
        interface=spec.interface,
        vrf=spec.vrf,
        bfd_profile=spec.bfdProfile,
        node_addresses=tuple(node_addresses),
    )


def _quote(text: str) -> str:
    """A double-quoted ExaBGP token; refuses characters its tokeniser cannot carry."""
    if any(c in text for c in '"\\\n\r;{}') or not text.isprintable():
        raise ValueError(f"cannot quote {text!r} in an ExaBGP configuration")
    return f'"{text}"'


def validate_peer(peer: PeerSpec) -> list[Problem]:
    """Problems of one peer; a fatal one keeps it out of the file (never the whole file)."""
    out: list[Problem] = []

    def bad(message: str, fatal: bool = True) -> None:
        out.append(Problem("BGPPeer", peer.name, INVALID_PEER if fatal else PEER_FIELD_IGNORED, message))

    if peer.interface:
        bad(f"unnumbered BGP (interface {peer.interface}) is not supported by ExaBGP; set peerAddress")
    if peer.vrf:
        bad(f"vrf {peer.vrf!r} is not supported by the ExaBGP backend")
    try:
        peer_ip = ipaddress.ip_address(peer.peer_address)
    except ValueError:
        bad(f"peerAddress {peer.peer_address!r} is not an IP address")
        return out
    if peer.source_address:
        try:
            src = ipaddress.ip_address(peer.source_address)
        except ValueError:
            bad(f"sourceAddress {peer.source_address!r} is not an IP address")
        else:
            if src.version != peer_ip.version:
                bad("sourceAddress and peerAddress must be of the same IP family")
    if peer.peer_asn is None and peer.dynamic_asn not in ("internal", "external"):
        bad("set peerASN or dynamicASN (internal/external)")
    if peer.local_asn is not None and not peer.is_ebgp:
        bad("localASN is for eBGP only and this peer is iBGP (peerASN equals myASN, or dynamicASN "
            "internal): drop localASN, as MetalLB requires")
    elif peer.local_asn is not None and peer.local_asn == peer.peer_asn:
        bad("localASN equals peerASN: the router would see its own AS number; pick another localASN")
    if peer.ebgp_multihop and not peer.is_ebgp:
        bad("ebgpMultiHop is ignored: this peer is iBGP (peerASN equals myASN, or dynamicASN internal) and "
            "MetalLB refuses ebgpMultiHop there (so does the CRD for new objects); drop it", fatal=False)
    if peer.router_id is not None:
        try:
            ipaddress.IPv4Address(peer.router_id)
        except ValueError:
            bad(f"routerID {peer.router_id!r} is not an IPv4 address")
    elif peer_ip.version == 6 and not peer.source_address:
        bad("an IPv6 session needs routerID (no IPv4 address to take it from)")
    hold = round(peer.hold_time)
    if peer.hold_time != 0 and not 3 <= peer.hold_time <= 65535:  # 0.4s must not round to 0 (off)
        bad(f"holdTime {peer.hold_time}s: must be 0 or 3s-65535s")
    if peer.keepalive_time is not None and hold and abs(peer.keepalive_time - hold / 3) >= 1:
        bad(
            f"keepaliveTime {peer.keepalive_time:g}s is not honoured: ExaBGP sends keepalives every "
            f"holdTime/3 ({hold / 3:g}s)",
            fatal=False,
        )
    if peer.connect_time is not None:
        bad("connectTime is not honoured: ExaBGP uses its own reconnect back-off", fatal=False)
    if peer.dual_stack:
        other = 10 - peer_ip.version  # 4 <-> 6
        if peer.next_hop(other) is None:
            bad(
                f"IPv{other} routes are not announced over this IPv{peer_ip.version} session: the node has "
                f"no IPv{other} address to give as their next hop",
                fatal=False,
            )
    if peer.password is not None:
        if not peer.password:
            bad("the MD5 password is empty")
        elif len(peer.password.encode()) > MAX_MD5_LENGTH:
            bad(f"the MD5 password is longer than {MAX_MD5_LENGTH} bytes")
    return out


def _neighbor_block(peer: PeerSpec) -> list[str]:
    lines = [f"neighbor {peer.peer_address} {{", f"    description {_quote(peer.name)};"]
    if peer.router_id:
        lines.append(f"    router-id {peer.router_id};")
    if peer.source_address:
        lines.append(f"    local-address {peer.source_address};")
    lines.append(f"    local-as {peer.session_asn};")
    if peer.peer_asn is not None:
        lines.append(f"    peer-as {peer.peer_asn};")
    elif peer.dynamic_asn == "internal":
        lines.append(f"    peer-as {peer.my_asn};")
    else:
        lines.append("    peer-as auto;")
    lines.append(f"    hold-time {round(peer.hold_time)};")
    if peer.graceful_restart:
        lines.append("    manual-eor true;")
    if peer.peer_port != 179:
        lines.append(f"    connect {peer.peer_port};")
    if peer.is_ebgp:
        lines.append(f"    outgoing-ttl {255 if peer.ebgp_multihop else 1};")
    if peer.password:
        encoded = base64.b64encode(peer.password.encode()).decode()
        lines.append(f"    md5-password {_quote(encoded)};")
        lines.append("    md5-base64 true;")
    lines.append("    capability {")
    lines.append("        route-refresh enable;")
    if peer.graceful_restart:
        lines.append(f"        graceful-restart {GRACEFUL_RESTART_TIME};")
    lines.append("    }")
    lines.append("    family {")
    for version in peer.families():
        lines.append(f"        ipv{version} unicast;")
    lines.append("    }")
    lines += [
        "    api {",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "        fsm;",
        "        receive { notification; open; }",
        "        send { notification; }",
        "    }",
        "}",
    ]
    return lines


def eor_commands(peer: PeerSpec) -> list[str]:
    """API commands sending End-of-RIB for every family of the session (graceful restart)."""
    return [f"{peer.selector} announce eor ipv{version} unicast" for version in peer.families()]


def render_config(
    peers: Iterable[PeerSpec],
    relay_argv: Sequence[str],
) -> RenderedConfig:
    """The ExaBGP configuration for `peers`, with `relay_argv` as the API process.

    Deterministic (peers sorted by name) so an unchanged set of peers renders the same
    bytes and the manager can skip the reload. Invalid peers are left out and reported;
    two peers with the same (peerAddress, myASN) cannot be told apart by ExaBGP's API,
    so the second one (by name) is left out.
    """
    for arg in relay_argv:
        if not _SAFE_TOKEN.match(arg):
            raise ValueError(f"relay argument {arg!r} cannot be written in an ExaBGP `run` line")
    out = RenderedConfig(text="")
    lines = [
        "# generated by lbspeaker: do not edit (rewritten on every BGPPeer change)",
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(relay_argv)};",
        "    encoder json;",
        "}",
    ]
    seen: dict[str, str] = {}
    for peer in sorted(peers, key=lambda p: p.name):
        problems = validate_peer(peer)
        out.problems += problems
        if any(map(is_fatal, problems)):
            continue
        if peer.selector in seen:
            out.problems.append(
                Problem(
                    "BGPPeer", peer.name, INVALID_PEER,
                    f"same peerAddress and myASN as BGPPeer {seen[peer.selector]}: ExaBGP cannot address "
                    "both sessions, this one is not configured",
                )
            )
            continue
        seen[peer.selector] = peer.name
        lines.append("")
        lines += _neighbor_block(peer)
        out.peers.append(peer)
    out.text = "\n".join(lines) + "\n"
    return out
