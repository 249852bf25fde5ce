"""Read-modify-write against the API server, retried on 409 Conflict (client-go's RetryOnConflict).

The lab's create-or-replace helpers (`lab.demo.apply`, `lab.commands.Kube.apply`) replace an
object with the resourceVersion just read, while the controller, the speakers and the node
agents write the same objects' status: a 409 means "read again and retry".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

APPLY_ATTEMPTS = 10  # bounded: after this many conflicts in a row the last one is raised


def retry_on_conflict(attempt: Callable[[], T], is_conflict: Callable[[Exception], bool],
                      attempts: int = APPLY_ATTEMPTS) -> T:
    """`attempt()` (which re-reads what it needs); again after an exception `is_conflict` accepts."""
    for _ in range(attempts - 1):
        try:
            return attempt()
        except Exception as exc:
            if not is_conflict(exc):
                raise
    return attempt()
