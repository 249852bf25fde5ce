"""What the incremental planners (`plan.L2Planner`, `bgp.plan.BGPPlanner`) share.

Both keep the last call's *context* and redo only what changed since; an exception part-way
leaves their state half-updated, so it must make the next call redo everything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Concatenate, ParamSpec, Protocol, TypeVar


class HasContext(Protocol):
    """A planner: `_context` None makes its next call redo everything."""

    _context: tuple[object, ...] | None


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound=HasContext)
K = TypeVar("K")
V = TypeVar("V")


def redo_all_after_error(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """`method`, but an exception from it (the state may be half-updated) first forgets the context."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self._context = None
            raise

    return wrapper


def to_redo(services: Mapping[K, V], known: Mapping[K, V], changed: Iterable[K] | None,
            reset: bool) -> Iterator[tuple[K, V | None]]:
    """(key, its new value or None when gone) of each Service to plan again: after a `reset` of the
    context every one in `services`, else the `changed` keys (None: every key, new or `known`),
    skipping a value that is the very object planned last time. `known` is read as the caller
    updates it (lazily), so each key is compared with what the planner holds at that moment."""
    keys: Iterable[K]
    if reset:
        keys = services.keys()
    elif changed is None:
        keys = set(services) | set(known)
    else:
        keys = changed
    for key in keys:
        new = services.get(key)
        if known.get(key) is not new:
            yield key, new


__all__ = ["HasContext", "redo_all_after_error", "to_redo"]
