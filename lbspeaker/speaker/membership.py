"""Which speakers are live: Leases for membership, UDP heartbeats for fast failure detection.

Design (every speaker applies the same rules to what it sees, so their views, and
therefore their elections, agree whenever their inputs agree):

* Each speaker holds the Lease `speaker-<node>` in `lbspeaker-system` (identity = node
  name, `--lease-duration` 10 s, renewed every `--renew-interval` 2 s). On SIGTERM it
  stops answering, releases the Lease (empty holder) and sends heartbeat LEAVING:
  the others take over at once instead of waiting for expiry.
* Lease state per node (`LeaseTracker`, pure): RELEASED (no Lease, no holder, or a holder
  other than the node itself: speaker-<node> counts only when that node holds it), FRESH,
  EXPIRED. Expiry is judged as client-go does, by how long *we* have seen the record unchanged
  on our monotonic clock, and also by the writer's renewTime against our wall clock (plus
  `skew`), so a speaker that starts next to a dead node's old Lease does not count it live for
  a whole duration.
* Heartbeat state per node (`heartbeat.PeerTable`): ALIVE, SILENT, LEFT, UNKNOWN.
* A node is live when (`is_live`): its Lease is not RELEASED, it has not said LEAVING,
  and either its heartbeats are ALIVE, or they were never established (UNKNOWN) and
  its Lease is FRESH. SILENT = dead within `--heartbeat-timeout` (1 s; longer for a peer
  whose heartbeats recently arrived further apart, see `heartbeat.PeerTable`) however fresh
  its Lease: that is the hard-failure path (link cut + SIGKILL). Heartbeats ALIVE
  keep a node live even if its Lease looks expired to us: it is demonstrably running
  (and, fail-static, still announcing), so counting it dead would make two owners.
  This deliberately differs from "Lease fresh AND heartbeat": the Lease still gates
  entry (no Lease, or released = not live) and is the only signal where heartbeats
  cannot flow.
* Ourselves: live once we have acquired our Lease at least once (before that the
  others cannot know about us, and electing ourselves would make two owners), until
  we stop. Failing to renew because the API is unreachable does not make us give up:
  we keep announcing what we last planned (fail-static).
* API server unreachable (our renewals fail, or the Lease watch is down): nobody can
  renew, so every Lease would look expired and each speaker would elect itself. So
  while *our* API view is stale, EXPIRED is read as FRESH (frozen at the last view);
  RELEASED stays RELEASED, and heartbeats still detect real failures. When the API
  comes back, the freeze lasts a little longer (`2 * renew_interval + 1` s, a grace
  for the others' first renewals to reach us; their renewTimes are all old by then),
  then Leases are judged normally again.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lbspeaker.facts import SPEAKER_LEASE_PREFIX as LEASE_PREFIX
from lbspeaker.facts import parse_time
from lbspeaker.facts import speaker_of_lease as node_of_lease
from lbspeaker.kube.lease import record_of
from lbspeaker.speaker.heartbeat import PeerState

log = logging.getLogger(__name__)



class LeaseState(enum.Enum):
    FRESH = "fresh"
    EXPIRED = "expired"
    RELEASED = "released"


def lease_name(node: str) -> str:
    return f"{LEASE_PREFIX}{node}"


def is_live(lease: LeaseState, hb: PeerState) -> bool:
    """The liveness rule of the module docstring, for one other node."""
    if lease is LeaseState.RELEASED or hb is PeerState.LEFT:
        return False
    if hb is PeerState.ALIVE:
        return True
    if hb is PeerState.SILENT:
        return False
    return lease is LeaseState.FRESH


@dataclass
class _Seen:
    record: tuple[Any, ...]
    at: float


class LeaseTracker:
    """Lease state per node from Lease objects (pure: clocks are passed in)."""

    def __init__(self, skew_s: float = 2.0) -> None:
        self.skew_s = skew_s
        self._seen: dict[str, _Seen] = {}
        self._specs: dict[str, Mapping[str, Any]] = {}
        self.grace_until = float("-inf")  # monotonic: EXPIRED reads as FRESH until then

    def grace(self, until_mono: float) -> None:
        """Keep expired Leases fresh until `until_mono` (after the API view was stale)."""
        self.grace_until = max(self.grace_until, until_mono)

    def update(self, leases: Iterable[Mapping[str, Any]], now_mono: float) -> None:
        """Feed the current Lease objects (all of them: missing ones are forgotten)."""
        specs: dict[str, Mapping[str, Any]] = {}
        for lease in leases:
            node = node_of_lease(str((lease.get("metadata") or {}).get("name") or ""))
            if node is None:
                continue
            spec = lease.get("spec") or {}
            specs[node] = spec
            rec = record_of(spec)
            seen = self._seen.get(node)
            if seen is None or seen.record != rec:
                self._seen[node] = _Seen(rec, now_mono)
        for node in set(self._seen) - set(specs):
            del self._seen[node]
        self._specs = specs

    def nodes(self) -> list[str]:
        return sorted(self._specs)

    def state(self, node: str, now_mono: float, now_wall: datetime, api_ok: bool = True) -> LeaseState:
        spec = self._specs.get(node)
        if spec is None or spec.get("holderIdentity") != node:  # released, or held by someone else
            return LeaseState.RELEASED
        if not api_ok or now_mono < self.grace_until:
            return LeaseState.FRESH
        duration = float(spec.get("leaseDurationSeconds") or 0)
        seen = self._seen[node]
        if now_mono - seen.at > duration:
            return LeaseState.EXPIRED
        renew = parse_time(spec.get("renewTime"))
        if renew is None or (now_wall - renew).total_seconds() > duration + self.skew_s:
            return LeaseState.EXPIRED
        return LeaseState.FRESH


def live_set(
    me: str,
    self_live: bool,
    lease_states: Mapping[str, LeaseState],
    hb_states: Mapping[str, PeerState],
) -> set[str]:
    """Live speakers, ourselves included when `self_live` (pure)."""
    out = {
        n for n, ls in lease_states.items()
        if n != me and is_live(ls, hb_states.get(n, PeerState.UNKNOWN))
    }
    if self_live:
        out.add(me)
    return out


@dataclass(eq=False)
class Membership:
    """Holds our Lease (renew thread) and computes the live set from the Lease cache and heartbeats.

    `lock` is a `kube.lease.LeaseLock` for `speaker-<node>`; `leases()` returns the
    cached Lease objects of the namespace; `heartbeat_states()` the PeerTable view;
    `lease_watch_ok()` whether the Lease cache's watch is open. `on_change()` is
    called when our own standing changes (first acquisition, API view stale/fresh).
    """

    node: str
    lock: Any
    leases: Callable[[], Iterable[Mapping[str, Any]]]
    heartbeat_states: Callable[[], Mapping[str, PeerState]]
    lease_watch_ok: Callable[[], bool]
    on_change: Callable[[], None]
    renew_interval: float = 2.0
    skew_s: float = 2.0
    tracker: LeaseTracker = field(init=False)
    acquired_once: bool = field(default=False, init=False)
    last_renew_ok: float | None = field(default=None, init=False)
    renew_failures: int = field(default=0, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _mu: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _last_api_ok: bool | None = field(default=None, init=False, repr=False)
    _live_api_ok: bool | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tracker = LeaseTracker(self.skew_s)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def api_ok(self, now_mono: float | None = None) -> bool:
        """Our view of the API is current: a renewal succeeded lately and the Lease watch is open."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        last = self.last_renew_ok
        recent = last is not None and now_mono - last <= 2 * self.renew_interval + 1
        return recent and self.lease_watch_ok()

    def self_live(self) -> bool:
        return self.acquired_once and not self.stopping

    def renew_once(self) -> bool:
        ok = bool(self.lock.try_acquire_or_renew())
        first = False
        if ok:
            self.last_renew_ok = time.monotonic()
            first = not self.acquired_once
            self.acquired_once = True
        else:
            self.renew_failures += 1
        api_ok = self.api_ok()
        changed = first or api_ok != self._last_api_ok
        self._last_api_ok = api_ok
        if changed:
            if first:
                log.info("membership: holding lease %s", self.lock.name)
            elif not api_ok:
                log.warning("membership: API view stale (renewal failing or Lease watch down); "
                            "keeping the last known members and announcements")
            self.on_change()
        return ok

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.renew_once()
            except Exception:
                log.exception("lease renewal failed")
            self._stopping.wait(self.renew_interval)

    def live(self) -> set[str]:
        """The live speakers now (see the module docstring)."""
        now_mono = time.monotonic()
        with self._mu:
            self.tracker.update(self.leases(), now_mono)
            api_ok = self.api_ok(now_mono)
            if api_ok and self._live_api_ok is False:
                log.info("membership: API view current again; grace of %.1fs for the others' renewals",
                         2 * self.renew_interval + 1)
                self.tracker.grace(now_mono + 2 * self.renew_interval + 1)
            self._live_api_ok = api_ok
            now_wall = datetime.now(UTC)
            states = {n: self.tracker.state(n, now_mono, now_wall, api_ok) for n in self.tracker.nodes()}
        return live_set(self.node, self.self_live(), states, self.heartbeat_states())

    def stop(self, release: bool = True) -> None:
        """Stop renewing; release the Lease (at once, before exit) so others need not wait."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_interval + 6)
        if release:
            with contextlib.suppress(Exception):
                self.lock.release()
