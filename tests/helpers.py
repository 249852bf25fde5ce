"""Test helpers shared by unit, component and e2e tests.

`wait_for` replaces sleeps: it polls a condition against a deadline, so a test is as
fast as the system under test and fails with a message instead of hanging.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout` s.

    Exceptions from the predicate count as "not yet" until the deadline, then propagate
    as the cause, so a predicate may read state that is still being built.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    delay = interval
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"condition not met within {timeout}s: {text}") from last_exc
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


class Recorder:
    """Collects (type, obj) callbacks from a WatchCache-style `on_event` for later assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, obj: dict[str, Any]) -> None:
        self.events.append((type_, obj))

    def names(self, type_: str | None = None) -> list[str]:
        return [o["metadata"]["name"] for t, o in list(self.events) if type_ is None or t == type_]


class FakeFailure(Exception):
    """Raised by the fakes below when told to fail (`fail = True`)."""


class FakeStatusWriter:
    """What a protocol hands `OwnedStatusWriter`: the fields of each Service it announces."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.fail = False
        self.whole = 0  # set_desired calls

    def set_desired(self, kind: Any, services: Any) -> None:
        if self.fail:
            raise FakeFailure
        self.whole += 1
        self.fields = dict(services)

    def update_desired(self, kind: Any, changes: Any) -> None:
        if self.fail:
            raise FakeFailure
        for key, fields in changes.items():
            if fields is None:
                self.fields.pop(key, None)
            else:
                self.fields[key] = fields


class FakeReporter:
    """Records the Services a protocol reports nodeAssigned for."""

    def __init__(self) -> None:
        self.assigned: list[str] = []

    def normal(self, kind: str, name: str, reason: str, message: str) -> None:
        assert reason == "nodeAssigned"
        self.assigned.append(name)

    def warning(self, kind: str, name: str, reason: str, message: str) -> None: ...
    def problems(self, protocol: str, before: Any, now: Any, prefix: str = "") -> None: ...


def daemon_pid(pid_file: Path, timeout: float = 10) -> int:
    """The PID a daemonising router wrote, once it is whole: BIRD and FRR create the file
    before they write "PID\\n", so a reader can find it empty (CI: bird.pid read as '').
    The newline marks the end of the number."""

    def written() -> int:  # 0: not yet
        text = pid_file.read_text() if pid_file.exists() else ""
        return int(text) if text.endswith("\n") and text.strip().isdigit() else 0

    return wait_for(written, timeout=timeout, interval=0.05, message=f"a PID in {pid_file}")
