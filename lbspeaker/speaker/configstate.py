"""This speaker's ConfigurationState (`speaker-<node>`): one condition per protocol (`Layer2Valid`,
`BGPValid`) from the problems each plan reports through `protocol.Reporter`.

Writes happen on their own thread, like `nodeproblems`: the plan/announce path only
hands over a set of problems and never waits for the API. Until a protocol has planned
its condition is Unknown (reason NotYetChecked), and so is the result.
Every `resync` seconds the object is read again (at most one GET), so a state deleted
by hand or by the controller's clean-up comes back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from lbspeaker import configstate as CS
from lbspeaker.facts import Problem
from lbspeaker.kube.configstate import ConfigStateWriter
from lbspeaker.kube.rest import Rest
from lbspeaker.speaker.writer import BackgroundWriter

CONDITION_OF_PROTOCOL = {"layer2": CS.LAYER2, "bgp": CS.BGP}


class SpeakerConfigState(BackgroundWriter):
    """Keeps `speaker-<node>` in step with the latest problems of each protocol, in the background."""

    def __init__(self, rest: Rest, namespace: str, node: str, resync: float = 300.0) -> None:
        super().__init__("config-state")
        self.writer = ConfigStateWriter(rest, namespace, CS.SPEAKER, node,
                                        expected=CONDITION_OF_PROTOCOL.values())
        self.resync = resync
        self._desired: dict[str, frozenset[Problem]] = {}
        self._written: dict[str, frozenset[Problem]] | None = None

    def set(self, protocol: str, problems: Iterable[Problem]) -> None:
        """The problems `protocol` ("layer2" / "BGP") planned with, every plan (cheap when unchanged)."""
        ctype = CONDITION_OF_PROTOCOL.get(protocol.lower())
        if ctype is None:
            return
        new = frozenset(problems)
        with self._cond:
            if self._desired.get(ctype) == new:
                return
            self._desired[ctype] = new
            self._cond.notify()

    def _run(self) -> None:
        next_resync = time.monotonic() + self.resync
        while True:
            with self._cond:
                while not self._stop and (not self._desired or self._desired == self._written):
                    left = next_resync - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stop:
                    return
                desired = dict(self._desired)
            if time.monotonic() >= next_resync:
                self.writer.forget()
                next_resync = time.monotonic() + self.resync
            if not desired:
                continue
            if self._attempt(self.writer.write, desired, f"ConfigurationState {self.writer.name}"):
                self._written = desired


__all__ = ["CONDITION_OF_PROTOCOL", "SpeakerConfigState"]
