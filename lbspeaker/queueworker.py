"""The loop of a thread that handles a queue's items one by one until it is told to stop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def consume(
    take: Callable[[], T | None],
    handle: Callable[[T], None],
    *,
    log: logging.Logger,
    what: str,
    after: Callable[[], None] | None = None,
) -> None:
    """Handle each item `take()` returns until it returns None (the stop sign).

    A failing item is logged (`what` says what failed) and the next one is taken: one bad
    item must not stop the thread. `after` runs after every item, failed or not, so a
    caller that counts pending items can never wait forever on a failed one.
    """
    while True:
        item = take()
        if item is None:
            return
        try:
            handle(item)
        except Exception:
            log.exception("%s failed: %s", what, item)
        finally:
            if after is not None:
                after()
