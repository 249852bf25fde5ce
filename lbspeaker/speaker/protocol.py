"""The one interface both announcing protocols implement, and the thread each runs on.

MetalLB's speaker hands every Service to each `Protocol` (layer 2, BGP) in turn. Here a
protocol takes the whole facts snapshot instead: `plan` is pure planning over it,
`apply` diffs the plan against what is applied and acts. Each protocol runs on its own
`Runner` thread with a one-slot mailbox (a newer snapshot replaces one not yet taken),
so a slow protocol (ExaBGP reloads, a Secret GET against a slow API) only ever delays
itself: layer 2 never waits for BGP.

A runner skips a snapshot in which none of the protocol's `inputs` moved (see
`Snapshot.changed`), and counts the plans it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from lbspeaker.facts import Problem
from lbspeaker.kube.events import EventRecorder
from lbspeaker.speaker.snapshot import Snapshot

log = logging.getLogger(__name__)

P = TypeVar("P")


class AnnouncingProtocol(Protocol[P]):
    """Layer 2 (`layer2.Layer2`) or BGP (`bgp.BGP`)."""

    name: str  # "layer2" / "bgp": metric label and Event text
    inputs: frozenset[str]  # the snapshot inputs its plan reads (`snapshot` resource names)
    poll_interval: float  # seconds between `poll()` calls

    def ready(self, snap: Snapshot) -> bool:
        """May this snapshot be planned (every cache the protocol reads has listed)?"""
        ...

    def plan(self, snap: Snapshot) -> P:
        """The protocol's plan for this node (pure, apart from inputs no cache holds)."""
        ...

    def apply(self, plan: P) -> None:
        """Make it so: diff against what is applied, announce/withdraw, status, Events."""
        ...

    def poll(self) -> bool:
        """Re-read inputs no cache watches (BGP: Secrets, node networks); True if a replan is due."""
        ...

    def withdraw(self) -> None:
        """SIGTERM: stop announcing everything, as fast as the protocol can be told."""
        ...

    def finish(self) -> None:
        """Runs last on the runner's thread (BGP: ExaBGP's pdeathsig is tied to that thread)."""
        ...

    def readyz_lines(self) -> list[str]: ...


class ObjectLookup(Protocol):
    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None: ...


class ProblemSink(Protocol):
    def set(self, protocol: str, problems: Iterable[Problem]) -> None: ...


class Generational(Protocol):
    @property
    def generation(self) -> int: ...


def follows(previous: Generational | None, plan: Generational) -> bool:
    """Whether `plan` is its planner's very next after `previous` (the plan applied last, and
    completely): then whatever the planner did not redo is as `previous` left it, and a protocol
    may apply only what changed (layer 2 and BGP both do)."""
    return previous is not None and plan.generation == previous.generation + 1


class Reporter:
    """Problems and Events of both protocols, on the objects they are about (read from the caches).

    `config_state` (the speaker's ConfigurationState, `speaker.configstate`) is handed every
    protocol's problems after each plan."""

    def __init__(self, recorder: EventRecorder, namespace: str, lookups: Mapping[str, ObjectLookup],
                 api_versions: Mapping[str, str], config_state: ProblemSink | None = None) -> None:
        self.recorder = recorder
        self.namespace = namespace
        self._lookups = dict(lookups)
        self._api_versions = dict(api_versions)
        self.config_state = config_state

    def ref(self, kind: str, name: str) -> dict[str, Any] | None:
        """The cached object `kind` `name` ("ns/name" for Services, a Node by name, anything else
        in our namespace), or None (a Node not cached yet is named all the same)."""
        lookup = self._lookups.get(kind)
        if lookup is None:
            return None
        ns: str | None
        if kind == "Service":
            ns, _, short = name.partition("/")
        else:
            ns, short = (None if kind == "Node" else self.namespace), name
        obj = lookup.get(ns, short)
        if obj is None:
            return {"apiVersion": "v1", "kind": "Node", "name": name} if kind == "Node" else None
        return {**obj, "apiVersion": self._api_versions[kind], "kind": kind}

    def normal(self, kind: str, name: str, reason: str, message: str) -> None:
        ref = self.ref(kind, name)
        if ref is not None:
            self.recorder.normal(ref, reason, message)

    def warning(self, kind: str, name: str, reason: str, message: str) -> None:
        ref = self.ref(kind, name)
        if ref is not None:
            self.recorder.warning(ref, reason, message)

    def problems(self, protocol: str, before: set[Problem], now: set[Problem], prefix: str = "") -> None:
        """Log and tell (Warning Event) the new problems, log the resolved ones; the ConfigurationState
        gets them all."""
        if self.config_state is not None:
            self.config_state.set(protocol, now)
        for p in sorted(now - before, key=_order):
            log.warning("%s: %s %s: %s: %s", protocol, p.kind, p.name, p.reason, p.message)
            self.warning(p.kind, p.name, p.reason, prefix + p.message)
        for p in sorted(before - now, key=_order):
            log.info("%s: resolved: %s %s: %s", protocol, p.kind, p.name, p.reason)


def _order(p: Problem) -> tuple[str, str, str]:
    return (p.kind, p.name, p.reason)


class Runner(Generic[P]):
    """One protocol's thread: take the newest snapshot, plan if an input moved, apply.

    `pause_after_plan`: under a burst (1,000 Services created) a plan per event would keep
    a core busy; waiting as long as the last plan took (at most 0.5 s) caps planning at
    about half a core and batches the burst, while a single change on a quiet cluster
    still goes out at once.
    """

    def __init__(self, proto: AnnouncingProtocol[P], pause_after_plan: bool = False) -> None:
        self.proto = proto
        self.pause_after_plan = pause_after_plan
        self._cv = threading.Condition()
        self._pending: Snapshot | None = None
        self._last: Snapshot | None = None  # the snapshot of the plan applied last
        self._stopped = False
        self._poked = False
        self._apply_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"{proto.name}-plan", daemon=True)
        self.plan: P | None = None
        self.plans = 0
        self.skipped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_plan_seconds = 0.0
        self.alive_at = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def offer(self, snap: Snapshot) -> None:
        """A newer snapshot (replaces one not taken yet)."""
        with self._cv:
            self._pending = snap
            self._cv.notify()

    def poke(self) -> None:
        """Replan the last snapshot at once, as if `poll()` had asked (inputs no cache watches moved)."""
        with self._cv:
            self._poked = True
            self._cv.notify()

    def stop(self, withdraw: bool = True, join: float = 5.0) -> None:
        """No apply after this returns; `withdraw` tells the protocol to stop announcing first."""
        with self._apply_lock:
            with self._cv:
                self._stopped = True
                self._cv.notify()
            if withdraw:
                try:
                    self.proto.withdraw()
                except Exception:
                    log.exception("%s: withdrawing failed", self.proto.name)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _take(self) -> tuple[Snapshot | None, bool]:
        """(newest snapshot or None, poked): wait for a snapshot, a poke or the poll interval."""
        with self._cv:
            if self._pending is None and not self._stopped and not self._poked:
                self._cv.wait(self.proto.poll_interval)
            snap, self._pending = self._pending, None
            poked, self._poked = self._poked, False
        return snap, poked

    def _run(self) -> None:
        try:
            while not self._stopped:
                self.alive_at = time.monotonic()
                snap, poked = self._take()
                if self._stopped:
                    return
                try:
                    if snap is None:
                        if self._last is None or not (poked or self.proto.poll()):
                            continue
                        snap = self._last  # something no cache watches moved: same snapshot, replan
                    elif not self.proto.ready(snap):
                        continue
                    elif not snap.changed(self._last, self.proto.inputs):
                        self.skipped += 1
                        self._last = snap
                        continue
                    self._plan_and_apply(snap)
                except Exception as exc:
                    self.errors += 1
                    self.last_error = repr(exc)
                    log.exception("%s: planning failed; keeping the last announcements", self.proto.name)
                if self.pause_after_plan and not self._stopped:
                    with self._cv:
                        self._cv.wait_for(lambda: self._stopped, timeout=min(0.5, self.last_plan_seconds))
        finally:
            self.proto.finish()

    def _plan_and_apply(self, snap: Snapshot) -> None:
        t0 = time.monotonic()
        plan = self.proto.plan(snap)
        self.plans += 1
        with self._apply_lock:
            if self._stopped:
                return
            self.proto.apply(plan)
            self.plan = plan
            self._last = snap
        self.last_plan_seconds = time.monotonic() - t0
