"""This node's entries in `BGPPeer.status.sessions`, and the BGPSessionUp/Down Events.

Written with `update_status` (read-modify-write, retried on 409 Conflict) only when
something the entry says changes: Established or not, the reason, or `since`. A peer
that is down cycles Idle/Connect/Active on every connect retry (each a new FSM state
with a new time): those cycles are one outage, so a down entry's `since` is when the
outage began (`PeerSession.down_since`, not when the current FSM state was entered) and
an FSM state change alone is not written (the entry keeps the state it had when the
outage, or its reason, was recorded; the live state is in /readyz and metrics). Before,
every retry rewrote `since`: ~4 writes and 5 conflicts per 10 s per down peer with four
nodes. The same rule drives Events: `BGPSessionUp` (Normal) / `BGPSessionDown` (Warning,
with the reason) on the BGPPeer, once per transition. Writes run on their own thread
(`retry` seconds between passes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from lbspeaker.bgp.session import PeerSession
from lbspeaker.kube.resources import BGPPEERS
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.kube.status import update_status
from lbspeaker.speaker.protocol import Reporter
from lbspeaker.speaker.writer import FailureCount, run_until_stopped

log = logging.getLogger("lbspeaker.speaker.bgp")


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SessionEntry:
    """This node's entry in a BGPPeer's status.sessions."""

    state: str
    reason: str = ""
    since: str | None = None
    bfd: str | None = None  # BFD state (Up, Down, Init, AdminDown) when the peer names a bfdProfile

    @property
    def established(self) -> bool:
        return self.state == "Established"

    @property
    def key(self) -> tuple[bool, str, str | None, str | None]:
        """What makes an entry news: up or down, why, since when (not the FSM state of a retry),
        and the BFD state (which changes only on a BFD transition)."""
        return (self.established, self.reason, self.since, self.bfd)

    def as_dict(self, node: str) -> dict[str, Any]:
        out: dict[str, Any] = {"node": node, "state": self.state, "reason": self.reason[:1024]}
        if self.since:
            out["since"] = self.since
        if self.bfd:
            out["bfd"] = self.bfd
        return out


def with_bfd(entry: SessionEntry, bfd: tuple[str, str] | None) -> SessionEntry:
    """The entry with this node's BFD state (state, last transition) for a peer that runs BFD.

    A session that is not Established while BFD is not Up says so first: "BFD Up -> Down
    (control detection time expired)" is why the session was torn down.
    """
    if bfd is None:
        return entry
    state, transition = bfd
    reason = entry.reason
    if state != "Up" and not entry.established and transition and not reason.startswith(transition):
        reason = f"{transition}; {reason}" if reason else transition
    return replace(entry, bfd=state, reason=reason)


def merge_session(status: Mapping[str, Any] | None, node: str, entry: SessionEntry | None) -> dict[str, Any]:
    """BGPPeer status with this node's session entry replaced (None: removed); others untouched."""
    new = dict(status or {})
    sessions = [dict(s) for s in (new.get("sessions") or []) if s.get("node") != node]
    if entry is not None:
        sessions.append(entry.as_dict(node))
    new["sessions"] = sorted(sessions, key=lambda s: str(s.get("node")))
    return new


def session_entry(session: PeerSession | None, plan_reason: str) -> SessionEntry:
    """The entry for one selected peer: its live session state, or why it is not configured.

    Down, `since` is when the outage began: the same through every connect retry."""
    if session is None:
        return SessionEntry("Idle", plan_reason or "not configured yet")
    if session.established:
        return SessionEntry(session.state, "", rfc3339(session.since))
    if plan_reason:  # what the plan knows (e.g. not on a node network) explains the error
        reason = plan_reason + (f" (last error: {session.reason})" if session.reason else "")
    else:
        reason = session.reason
    since = session.down_since if session.down_since is not None else session.since
    return SessionEntry(session.state, reason, rfc3339(since))


def is_news(told: tuple[bool, str] | None, now: tuple[bool, str]) -> bool:
    """Whether (established, reason) `now` is worth an Event after `told` (None: nothing yet).

    Up and down are news once per transition; while down, only a new non-empty reason is
    (the router's NOTIFICATION after "connection refused"). A fresh session still
    connecting, or a down session whose reason was cleared, is not.
    """
    established, reason = now
    if told == now:
        return False
    if established:
        return True
    if told is None or not told[0]:
        return bool(reason)
    return True  # it was up: going down is news, with or without a reason


class SessionStatus(FailureCount):
    """Keeps this node's session entries in step with the plan and ExaBGP's sessions.

    `update(selected, live)`: {peer: plan reason} selected for this node, and the
    manager's live sessions; may be called from any thread (plan, ExaBGP's notifier).
    """

    FAILURE_LABEL = "BGP status"

    def __init__(self, rest: Rest, namespace: str, node: str, reporter: Reporter,
                 retry: float = 2.0) -> None:
        self.rest, self.namespace, self.node, self.reporter = rest, namespace, node, reporter
        self.retry = retry
        self._mu = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._quiet = False  # our own shutdown takes the sessions down: not news
        self._desired: dict[str, SessionEntry] = {}
        self._written: dict[str, SessionEntry] = {}
        self._told: dict[str, tuple[bool, str]] = {}  # peer -> (established, reason) told
        self._refresh: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="bgp-sessions", daemon=True)
        self.errors = 0
        self.last_error: str | None = None

    def start(self, refresh: Callable[[], None]) -> None:
        """`refresh()` recomputes the entries (calls `update`); the thread runs it every pass."""
        self._refresh = refresh
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._quiet = True
        self._stop.set()
        self._kick.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def quiet(self) -> None:
        """From now on, sessions going down are ours: no Events."""
        self._quiet = True

    @property
    def is_quiet(self) -> bool:
        return self._quiet

    def update(self, selected: Mapping[str, str], live: Mapping[str, PeerSession],
               bfd: Mapping[str, tuple[str, str]] | None = None) -> None:
        """`bfd`: {peer: (BFD state, last transition)} of the peers that run BFD. Wakes the writer
        (a pass's own `refresh` does not: see `_pass`)."""
        bfd = bfd or {}
        desired = {name: with_bfd(session_entry(live.get(name), reason), bfd.get(name))
                   for name, reason in selected.items()}
        with self._mu:
            self._desired = desired
            self._tell(desired)
        self._kick.set()

    def _tell(self, desired: Mapping[str, SessionEntry]) -> None:
        for name, entry in desired.items():
            if self._quiet:
                break
            told = self._told.get(name)
            now = (entry.established, "" if entry.established else entry.reason)
            if not is_news(told, now):
                continue
            self._told[name] = now
            if entry.established:
                log.info("BGP: session to %s established", name)
                self.reporter.normal("BGPPeer", name, "BGPSessionUp",
                                     f"node {self.node}: session established")
            else:
                log.warning("BGP: session to %s down: %s", name, entry.reason or entry.state)
                why = entry.reason or "no reason given"
                self.reporter.warning("BGPPeer", name, "BGPSessionDown",
                                      f"node {self.node}: {entry.state}: {why}")
        for name in list(self._told):
            if name not in desired:
                del self._told[name]

    def _run(self) -> None:
        run_until_stopped(self._stop, self._kick, self.retry, self._pass, self._pass_failed)

    def _pass(self) -> None:
        if self._refresh is not None:
            self._refresh()
            # the refresh just called `update`, which kicks: that is this pass, not the next one
            self._kick.clear()
        self.reconcile()

    def _pass_failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = repr(exc)
        log.exception("BGP session status reconcile failed")

    def remove_all(self) -> None:
        """Shutdown: remove this node's entries (after the thread stopped)."""
        with self._mu:
            self._desired = {}
        self.reconcile()

    def reconcile(self) -> bool:
        with self._mu:
            desired = dict(self._desired)
        ok = True
        for name in sorted(set(desired) | set(self._written)):
            entry = desired.get(name)
            written = self._written.get(name)
            if entry is None and written is None:
                continue
            if entry is not None and written is not None and entry.key == written.key:
                continue  # at most the FSM state of a down session moved: the same outage

            def mutate(obj: dict[str, Any], e: SessionEntry | None = entry) -> dict[str, Any]:
                return merge_session(obj.get("status"), self.node, e)

            try:
                update_status(self.rest, BGPPEERS, self.namespace, name, mutate)
            except ApiError as exc:
                if exc.not_found:  # the BGPPeer is gone: nothing to write
                    self._written.pop(name, None)
                    continue
                ok = self._fail(f"BGPPeer {name} status", exc)
                continue
            except OSError as exc:
                ok = self._fail(f"BGPPeer {name} status", exc)
                continue
            if entry is None:
                self._written.pop(name, None)
            else:
                self._written[name] = entry
        return ok
