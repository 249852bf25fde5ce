"""Per-peer BGP session state from ExaBGP's JSON API messages (pure).

ExaBGP (with `api { neighbor-changes; fsm; receive { notification; open; } send {
notification; } }`) writes one JSON object per line to its API process:

* `"type": "fsm"`: the FSM state (IDLE, ACTIVE, CONNECT, OPENSENT, OPENCONFIRM,
  ESTABLISHED) - the source of `state`;
* `"type": "state"`: `connected` / `up` / `down` with a `reason` text;
* `"type": "notification"`: a NOTIFICATION sent or received (code, subcode, data),
  the most useful reason there is ("OPEN Message Error / Bad Peer AS");
* `"type": "open"`: the router's OPEN (used to check `dynamicASN: external`).

Besides, a bare `done` / `error` line acknowledges each API command. A TCP connection
that never completes produces no event at all (ExaBGP logs those attempts only at
debug level), so `SessionTable.stalled` turns a long silence into a reason. Nothing
here does I/O: `SessionTable.apply`
takes a parsed message and a clock value and says which sessions changed, so the
speaker can write BGPPeer status and metrics only on change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lbspeaker.bgp.config import PeerSpec

STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")
UNKNOWN = "Unknown"
_FSM_NAMES = {s.upper(): s for s in STATES}

NOTIFICATION_CODES: dict[int, tuple[str, dict[int, str]]] = {
    1: (
        "Message Header Error",
        {1: "Connection Not Synchronized", 2: "Bad Message Length", 3: "Bad Message Type"},
    ),
    2: (
        "OPEN Message Error",
        {
            1: "Unsupported Version Number",
            2: "Bad Peer AS",
            3: "Bad BGP Identifier",
            4: "Unsupported Optional Parameter",
            5: "Authentication Failure",
            6: "Unacceptable Hold Time",
            7: "Unsupported Capability",
            11: "Role Mismatch",
        },
    ),
    3: ("UPDATE Message Error", {}),
    4: ("Hold Timer Expired", {}),
    5: ("Finite State Machine Error", {}),
    6: (
        "Cease",
        {
            1: "Maximum Number of Prefixes Reached",
            2: "Administrative Shutdown",
            3: "Peer De-configured",
            4: "Administrative Reset",
            5: "Connection Rejected",
            6: "Other Configuration Change",
            7: "Connection Collision Resolution",
            8: "Out of Resources",
            9: "Hard Reset",
            10: "BFD Down",
        },
    ),
    7: ("ROUTE-REFRESH Message Error", {}),
}


def notification_text(code: int, subcode: int, message: str = "") -> str:
    """Human text of a NOTIFICATION (RFC 4271 / 4486 names)."""
    name, subs = NOTIFICATION_CODES.get(code, (f"code {code}", {}))
    text = name
    if subcode:
        text += f" / {subs.get(subcode, f'subcode {subcode}')}"
    message = message.strip().strip("\x00")
    if message and message.isprintable():
        text += f": {message}"
    return text


_DOWN_NOTIFICATION = re.compile(r"notification (sent|received) \((\d+),\s*(\d+)\)")


def down_reason(text: str) -> str:
    """ExaBGP's `down` reason, with "notification sent (2,2)" spelled out (RFC names)."""
    m = _DOWN_NOTIFICATION.search(text)
    if not m:
        return f"session down: {text}"
    who = "we sent" if m.group(1) == "sent" else "router sent"
    return f"{who} NOTIFICATION {notification_text(int(m.group(2)), int(m.group(3)))}"


@dataclass(frozen=True)
class ExaEvent:
    """One JSON message of ExaBGP about a neighbour (or the whole process)."""

    type: str  # fsm | state | notification | open | shutdown | other
    peer_address: str | None = None
    local_as: int | None = None
    peer_as: int | None = None
    state: str | None = None  # fsm: FSM name; state: connected|up|down
    reason: str = ""
    direction: str | None = None  # notification: send|receive
    open_asn: int | None = None


@dataclass(frozen=True)
class Ack:
    """`done` / `error` acknowledgement of one API command."""

    ok: bool


def parse_line(line: str) -> ExaEvent | Ack | None:
    """Parse one line ExaBGP wrote to its API process; None for anything unrecognised."""
    text = line.strip()
    if text in ("done", "error"):
        return Ack(text == "done")
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if "answer" in obj:
        return Ack(obj.get("answer") == "done")
    return event_from_json(obj)


def event_from_json(obj: dict[str, Any]) -> ExaEvent | None:
    """ExaEvent from a decoded ExaBGP JSON message."""
    mtype = obj.get("type")
    if mtype == "notification" and obj.get("notification") == "shutdown":
        return ExaEvent(type="shutdown", reason="ExaBGP is shutting down")
    neighbor = obj.get("neighbor")
    if not isinstance(neighbor, dict):
        return None
    address = neighbor.get("address") or {}
    asn = neighbor.get("asn") or {}
    peer_as = asn.get("peer")
    local_as = asn.get("local")
    common: dict[str, Any] = {
        "peer_address": address.get("peer"),
        "local_as": local_as if isinstance(local_as, int) else None,
        "peer_as": peer_as if isinstance(peer_as, int) else None,
    }
    if mtype == "fsm":
        return ExaEvent(type="fsm", state=str(neighbor.get("state", "")), **common)
    if mtype == "state":
        return ExaEvent(
            type="state", state=neighbor.get("state"), reason=str(neighbor.get("reason", "")), **common
        )
    if mtype == "notification":
        note = neighbor.get("notification") or {}
        try:
            code, subcode = int(note.get("code", 0)), int(note.get("subcode", 0))
        except (TypeError, ValueError):
            code, subcode = 0, 0
        direction = neighbor.get("direction")
        who = "router sent" if direction == "receive" else "we sent"
        reason = f"{who} NOTIFICATION {notification_text(code, subcode, str(note.get('message', '')))}"
        return ExaEvent(type="notification", direction=direction, reason=reason, **common)
    if mtype == "open":
        message = neighbor.get("message") or {}
        opened = message.get("open") or neighbor.get("open") or {}
        open_asn = opened.get("asn") if isinstance(opened, dict) else None
        return ExaEvent(
            type="open",
            direction=neighbor.get("direction"),
            open_asn=open_asn if isinstance(open_asn, int) else None,
            **common,
        )
    return ExaEvent(type="other", **common)


@dataclass
class PeerSession:
    """What the speaker reports about one BGPPeer's session on this node."""

    peer: str
    state: str = UNKNOWN
    since: float | None = None  # when `state` was entered (time.time())
    last_error: str = ""  # last error / notification, kept across recoveries
    last_error_at: float | None = None
    established_count: int = 0
    down_since: float | None = None  # configured, or left Established, at this time

    @property
    def established(self) -> bool:
        return self.state == "Established"

    @property
    def reason(self) -> str:
        """Reason for status: the last error while the session is not Established."""
        return "" if self.established else self.last_error

    def set_state(self, state: str, now: float) -> bool:
        if state == self.state:
            return False
        if state == "Established":
            self.established_count += 1
            self.down_since = None
        elif self.down_since is None:
            self.down_since = now
        self.state = state
        self.since = now
        return True

    def set_error(self, reason: str, now: float) -> bool:
        if not reason or reason == self.last_error:
            return False
        self.last_error = reason
        self.last_error_at = now
        return True


@dataclass
class SessionTable:
    """Sessions of every configured peer, keyed by BGPPeer name."""

    peers: dict[str, PeerSpec] = field(default_factory=dict)
    sessions: dict[str, PeerSession] = field(default_factory=dict)

    def configure(self, peers: Iterable[PeerSpec], now: float) -> None:
        """Track exactly `peers` (new ones start Idle; removed ones are forgotten)."""
        self.peers = {p.name: p for p in peers}
        for name in list(self.sessions):
            if name not in self.peers:
                del self.sessions[name]
        for name in self.peers:
            if name not in self.sessions:
                self.sessions[name] = PeerSession(name, state="Idle", since=now, down_since=now)

    def _match(self, event: ExaEvent) -> list[str]:
        if event.peer_address is None:
            return list(self.sessions)
        out = []
        for name, peer in self.peers.items():
            if _same_ip(peer.peer_address, event.peer_address) and (
                event.local_as is None or event.local_as == peer.session_asn
            ):
                out.append(name)
        return out

    def apply(self, event: ExaEvent, now: float) -> list[str]:
        """Apply one event; names of the sessions whose reported state changed."""
        changed: list[str] = []
        for name in self._match(event):
            s = self.sessions.setdefault(name, PeerSession(name))
            peer = self.peers[name]
            did = False
            if event.type == "fsm" and event.state:
                state = _FSM_NAMES.get(event.state.upper())
                if state:
                    did = s.set_state(state, now)
            elif event.type == "state":
                if event.state == "up":
                    did = s.set_state("Established", now)
                elif event.state == "down":
                    did = s.set_state("Idle", now)
                    reason = down_reason(event.reason) if event.reason else ""
                    # a NOTIFICATION of this outage says more than a later "closing connection"
                    keep = (
                        "NOTIFICATION" in s.last_error
                        and "NOTIFICATION" not in reason
                        and s.last_error_at is not None
                        and s.down_since is not None
                        and s.last_error_at >= s.down_since
                    )
                    if reason and not keep:
                        did = s.set_error(reason, now) or did
            elif event.type == "notification":
                did = s.set_error(event.reason, now)
            elif event.type == "open" and event.direction != "send" and event.open_asn is not None:
                if peer.dynamic_asn == "external" and event.open_asn == peer.my_asn:
                    did = s.set_error(f"dynamicASN external, but the router is in our AS {peer.my_asn}", now)
                elif peer.dynamic_asn == "internal" and event.open_asn != peer.my_asn:
                    did = s.set_error(f"dynamicASN internal, but the router is in AS {event.open_asn}", now)
            elif event.type == "shutdown":
                did = s.set_state("Idle", now)
            if did:
                changed.append(name)
        return changed

    def stalled(self, now: float, after: float) -> list[str]:
        """Give a reason to sessions that stay down `after` seconds without one.

        A TCP connection that never completes (unreachable router, a router not
        configured for this node, a TCP MD5 password mismatch: the router's kernel drops
        the SYNs silently) produces no ExaBGP event at all, so silence is the symptom.
        """
        changed = []
        for name, s in self.sessions.items():
            if s.established or s.down_since is None or now - s.down_since < after:
                continue
            if (
                s.last_error_at is not None
                and s.last_error_at >= s.down_since
                and not any(m in s.last_error for m in _RECONFIGURED)
            ):
                continue  # a precise reason of this outage is already known
            peer = self.peers.get(name)
            if peer is None:
                continue
            target = f"{peer.peer_address}:{peer.peer_port}"
            if peer.password:
                why = "TCP MD5 password mismatch, router unreachable or not configured for this node"
            else:
                why = "router unreachable, not configured for this node, or it requires a TCP MD5 password"
            reason = f"no BGP session with {target} for {after:g}s: {why}"
            if s.set_error(reason, now):
                changed.append(name)
        return changed

    def all_down(self, reason: str, now: float) -> list[str]:
        """ExaBGP itself went away: every session is Idle with `reason`."""
        changed = []
        for s in self.sessions.values():
            a = s.set_state("Idle", now)
            b = s.set_error(reason, now)
            if a or b:
                changed.append(s.peer)
        return changed


# Reasons that say only that *we* ended the session (a BGPPeer change reloaded it): they
# explain the drop, not why the new session does not come up (e.g. a wrong new password).
_RECONFIGURED = ("Peer De-configured",)


def _same_ip(a: str, b: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b
