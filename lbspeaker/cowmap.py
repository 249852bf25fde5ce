"""A dict whose snapshots cost what changed since the last one (copy on write, by bucket).

Why: the incremental planners (`plan.L2Planner`, `bgp.plan.BGPPlanner`) and the speaker's
facts index hand every plan or snapshot their tables, and what was handed out must never
change afterwards; copying the 10,000-entry dicts each time was 6 % of a speaker's CPU at
10,000 Services, more than the planning it followed. `CowDict` keeps its entries in
`BUCKETS` dicts chosen by key hash; `freeze()` returns a read-only `Frozen` mapping that
shares them, and the next write copies only the bucket it touches. Iteration order is by
bucket (so by hash, which differs between processes): whoever needs an order sorts.
Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Generic, TypeVar, overload

BUCKETS = 128

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")


class Frozen(Mapping[K, V]):
    """A read-only snapshot of a `CowDict` (iteration order: by bucket, not insertion)."""

    __slots__ = ("_buckets", "_len")

    def __init__(self, buckets: tuple[dict[K, V], ...], length: int) -> None:
        self._buckets = buckets
        self._len = length

    def __getitem__(self, key: K) -> V:
        return self._buckets[hash(key) % BUCKETS][key]

    def __contains__(self, key: object) -> bool:
        return key in self._buckets[hash(key) % BUCKETS]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        return self._buckets[hash(key) % BUCKETS].get(key, default)

    def __iter__(self) -> Iterator[K]:
        for bucket in self._buckets:
            yield from bucket

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"Frozen({dict(self)!r})"


class CowDict(Generic[K, V]):
    """The mutable side: `get`, `in`, `[]=`, `pop`, `len`, and `freeze()` for a snapshot."""

    __slots__ = ("_buckets", "_frozen", "_len", "_owned")

    def __init__(self) -> None:
        self._buckets: list[dict[K, V]] = [{} for _ in range(BUCKETS)]
        self._owned = [True] * BUCKETS  # False: the bucket is shared with the last snapshot
        self._len = 0
        self._frozen: Frozen[K, V] | None = None

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._buckets[hash(key) % BUCKETS].get(key, default)

    def __contains__(self, key: K) -> bool:
        return key in self._buckets[hash(key) % BUCKETS]

    def __len__(self) -> int:
        return self._len

    def __setitem__(self, key: K, value: V) -> None:
        bucket = self._writable(hash(key) % BUCKETS)
        self._len += key not in bucket
        bucket[key] = value

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove `key` if present; its value, else `default` (as `dict.pop` with a default)."""
        i = hash(key) % BUCKETS
        if key not in self._buckets[i]:
            return default
        self._len -= 1
        return self._writable(i).pop(key)

    def freeze(self) -> Frozen[K, V]:
        """The contents now, never changed by later writes (the same object until one)."""
        if self._frozen is None:
            self._frozen = Frozen(tuple(self._buckets), self._len)
            self._owned = [False] * BUCKETS
        return self._frozen

    def _writable(self, i: int) -> dict[K, V]:
        self._frozen = None
        if not self._owned[i]:
            self._buckets[i] = dict(self._buckets[i])
            self._owned[i] = True
        return self._buckets[i]


__all__ = ["BUCKETS", "CowDict", "Frozen"]
