"""Writes one ConfigurationState (`controller` or `speaker-<node>`): created when missing, its
status replaced only when the desired status differs from what the object holds.

The status is computed by the pure `lbspeaker.configstate`; this is the I/O around it. The
writer remembers the object as its last write returned it, so an unchanged state costs
no API call at all; after `forget()` (a new leadership term, an error) it reads the object
again before deciding, so a restart with the same problems writes nothing either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from lbspeaker import configstate as CS
from lbspeaker.api.constants import COMPONENT_TYPE_LABEL
from lbspeaker.facts import Problem
from lbspeaker.kube.resources import CONFIGURATIONSTATES
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.kube.status import update_status

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigStateWriter:
    """One component's ConfigurationState. Not thread-safe: call from one thread."""

    def __init__(self, rest: Rest, namespace: str, component: str, node: str | None = None,
                 clock: Callable[[], str] = utc_now, expected: Iterable[str] = ()) -> None:
        self.rest, self.namespace, self.component, self.node = rest, namespace, component, node
        self.expected = tuple(expected)  # condition types shown Unknown until their part reports
        self.name = CS.object_name(component, node)
        self.clock = clock
        self._obj: dict[str, Any] | None = None
        self.writes = 0

    def forget(self) -> None:
        """Read the object again before the next decision."""
        self._obj = None

    def write(self, problems_by_type: Mapping[str, Iterable[Problem]]) -> bool:
        """Make the status say `problems_by_type` (condition type -> problems); True if it wrote."""
        wanted = {t: tuple(ps) for t, ps in problems_by_type.items()}
        try:
            return self._write(wanted)
        except ApiError:
            self._obj = None  # whatever happened, decide from a fresh read next time
            raise

    def _write(self, wanted: Mapping[str, tuple[Problem, ...]]) -> bool:
        obj = self._obj if self._obj is not None else self._get_or_create()
        status = CS.desired_status(wanted, obj.get("status"), self.clock(), self.expected)
        if status == (obj.get("status") or {}):
            self._obj = obj
            return False
        body = {k: v for k, v in obj.items() if k != "status"}
        body["status"] = status
        try:
            self._obj = self.rest.replace_status(CONFIGURATIONSTATES, body)
        except ApiError as exc:
            if not exc.conflict:
                raise
            self._obj = update_status(self.rest, CONFIGURATIONSTATES, self.namespace, self.name,
                                      lambda o: CS.desired_status(wanted, o.get("status"), self.clock(),
                                                                  self.expected))
        self.writes += 1
        log.info("ConfigurationState %s: %s%s", self.name, status["result"],
                 f": {status['errorSummary']}" if status.get("errorSummary") else "")
        return True

    def _get_or_create(self) -> dict[str, Any]:
        try:
            return self.rest.get(CONFIGURATIONSTATES, self.name, self.namespace)
        except ApiError as exc:
            if not exc.not_found:
                raise
        try:
            return self.rest.create(CONFIGURATIONSTATES,
                                    CS.new_object(self.component, self.namespace, self.node))
        except ApiError as exc:
            if not exc.already_exists and not exc.conflict:
                raise
            return self.rest.get(CONFIGURATIONSTATES, self.name, self.namespace)


def delete_stale_speaker_states(rest: Rest, namespace: str, nodes: Iterable[str]) -> list[str]:
    """Delete the speaker ConfigurationStates of nodes that no longer exist; their names."""
    listed = rest.list(CONFIGURATIONSTATES, namespace, label_selector=f"{COMPONENT_TYPE_LABEL}={CS.SPEAKER}")
    stale = CS.stale_speaker_states(listed.get("items") or [], nodes)
    for name in stale:
        try:
            rest.delete(CONFIGURATIONSTATES, name, namespace)
            log.info("ConfigurationState %s deleted: its node is gone", name)
        except ApiError as exc:
            if not exc.not_found:
                raise
    return stale


__all__ = ["ConfigStateWriter", "delete_stale_speaker_states", "utc_now"]
