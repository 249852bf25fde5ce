"""The background thread both of this speaker's status writers (`configstate`, `nodeproblems`) run on.

The plan/announce path only hands the latest wanted state over and never waits for the API;
the thread writes it, and an API error is retried after a growing delay (or sooner, on stop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import ClassVar, Self, TypeVar

from lbspeaker.kube.backoff import Backoff
from lbspeaker.kube.rest import ApiError

T = TypeVar("T")


class BackgroundWriter:
    """Start/stop of the writer thread and its retry with backoff; a subclass writes in `_run`."""

    def __init__(self, thread_name: str) -> None:
        self._cond = threading.Condition()
        self._stop = False
        self._backoff = Backoff(initial=0.5, cap=30.0)
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError

    def _attempt(self, write: Callable[[T], object], desired: T, what: str) -> bool:
        """`write(desired)`; True when it succeeded. On an ApiError: log it (as the subclass's module), wait
        the next backoff delay (a `stop` cuts it short) and say False, so the caller tries again."""
        try:
            write(desired)
        except ApiError as exc:
            delay = self._backoff.next()
            logging.getLogger(type(self).__module__).warning("%s: %s; retrying in %.1fs", what, exc, delay)
            with self._cond:
                self._cond.wait(delay)
            return False
        self._backoff.reset()
        return True


def run_until_stopped(stop: threading.Event, kick: threading.Event, every: float,
                      step: Callable[[], None], failed: Callable[[Exception], None]) -> None:
    """The loop of the speaker's status reconcilers (`sessions`, `status`): `step()` after each
    `kick` or every `every` seconds until `stop`; an exception goes to `failed` (called inside the
    handler, so it may log the traceback) and never ends the thread."""
    while not stop.is_set():
        kick.wait(every)
        kick.clear()
        if stop.is_set():
            return
        try:
            step()
        except Exception as exc:
            failed(exc)


class FailureCount:
    """`errors` and `last_error` of a status reconciler (its /status and metrics show them)."""

    FAILURE_LABEL: ClassVar[str] = "status"  # how its log lines begin
    errors: int = 0
    last_error: str | None = None

    def _fail(self, what: str, exc: Exception) -> bool:
        """Count one failed write (the next pass retries it); False, for `ok = self._fail(...)`."""
        self.errors += 1
        self.last_error = f"{what}: {exc}"
        logging.getLogger(type(self).__module__).warning("%s: %s", self.FAILURE_LABEL, self.last_error)
        return False


__all__ = ["BackgroundWriter", "FailureCount", "run_until_stopped"]
