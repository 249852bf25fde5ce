"""This node's entry in an L2Advertisement's `status.nodeProblems`.

Most bad advertisement input is cluster-wide (an unknown pool, selectors that match
nothing) and the controller owns that `Ready` condition. What only this node can see
(an interface the advertisement names that this node does not have) is written here,
one list entry per node, so several speakers share the list without overwriting each
other (read-modify-write, retried on 409). Writes happen on their own thread: an API
outage never slows the plan/announce path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lbspeaker.facts import Problem
from lbspeaker.kube.resources import L2ADVERTISEMENTS
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.kube.status import update_status
from lbspeaker.speaker.writer import BackgroundWriter

NODE_LOCAL_REASONS = frozenset({"InterfaceNotFound"})


def node_local(problems: Iterable[Problem]) -> dict[str, tuple[Problem, ...]]:
    """Advertisement name -> this node's own problems with it (sorted, for stable output)."""
    out: dict[str, list[Problem]] = {}
    for p in problems:
        if p.kind == "L2Advertisement" and p.reason in NODE_LOCAL_REASONS:
            out.setdefault(p.name, []).append(p)
    return {name: tuple(sorted(ps, key=lambda p: (p.reason, p.message))) for name, ps in out.items()}


def with_node_problems(status: Mapping[str, Any], node: str,
                       problems: Sequence[Problem]) -> dict[str, Any] | None:
    """`status` with this node's entry set to `problems` (removed when empty); None if unchanged."""
    entries = [dict(e) for e in status.get("nodeProblems") or [] if e.get("node") != node]
    if problems:
        reasons = {p.reason for p in problems}
        entries.append({"node": node, "reason": problems[0].reason if len(reasons) == 1 else "Invalid",
                        "message": "; ".join(p.message for p in problems)[:1024]})
    entries.sort(key=lambda e: str(e.get("node")))
    if entries == list(status.get("nodeProblems") or []):
        return None
    new = {k: v for k, v in status.items() if k != "nodeProblems"}
    if entries:
        new["nodeProblems"] = entries
    return new


class NodeProblemsWriter(BackgroundWriter):
    """Keeps this node's `nodeProblems` entries in step with the latest plan, in the background."""

    def __init__(self, rest: Rest, namespace: str, node: str) -> None:
        super().__init__("node-problems")
        self.rest, self.namespace, self.node = rest, namespace, node
        self._desired: dict[str, tuple[Problem, ...]] = {}
        self._written: dict[str, tuple[Problem, ...]] = {}

    def set(self, problems: Iterable[Problem]) -> None:
        """After every plan; wakes the writer only when this node's entries changed."""
        desired = node_local(problems)
        with self._cond:
            if desired == self._desired:
                return
            self._desired = desired
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._desired == self._written:
                    self._cond.wait()
                if self._stop:
                    return
                desired = dict(self._desired)
            if self._attempt(self._write_all, desired, f"nodeProblems of {self.node}"):
                self._written = desired

    def _write_all(self, desired: Mapping[str, tuple[Problem, ...]]) -> None:
        for name in sorted(set(desired) | set(self._written)):
            self._write(name, desired.get(name, ()))

    def _write(self, name: str, problems: Sequence[Problem]) -> None:
        if tuple(problems) == self._written.get(name):
            return
        try:
            update_status(self.rest, L2ADVERTISEMENTS, self.namespace, name,
                          lambda obj: with_node_problems(obj.get("status") or {}, self.node, problems))
        except ApiError as exc:
            if not exc.not_found:  # a deleted advertisement has nothing left to report on
                raise
