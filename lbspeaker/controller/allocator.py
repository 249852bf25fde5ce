"""IP allocation for LoadBalancer Services over plain data (pure: no I/O, no Kubernetes types).

The controller shell reads IPAddressPools and Services into :class:`Pool` and
:class:`ServiceRequest` values (`lbspeaker.facts`), feeds them to one :class:`Allocator`,
and writes back what the returned :class:`Result` says (status, Events, pool counts).

Rules (MetalLB's, with the differences called out):

* **Restart.** Before allocating anything, :meth:`Allocator.restore` every Service's
  ``status.loadBalancer.ingress`` IPs. Restore accepts an IP even when no pool covers it
  any more (the Result says so): a restart never moves or drops an IP. Two Services
  restored onto one IP without compatible sharing: the first restored keeps it, the
  second gets a ``Conflict`` failure (restore in a stable order, e.g. creationTimestamp).
* **Order of choice** in :meth:`Allocator.allocate`: the Service's current IPs if they
  still fit its request; else the requested IPs (all from one pool, all families of the
  Service); else the requested pool (``autoAssign`` ignored); else the pools *pinned* to
  the Service (``serviceAllocation`` matches when the namespace is listed in
  ``namespaces`` or matches a ``namespaceSelector`` -- if either is set -- AND a
  ``serviceSelector`` matches -- if any is set; autoAssign on), together with the pools
  whose ``serviceAllocation`` sets only a ``priority`` (they match every Service), by
  priority (lower number first; unset/0 last; ties by name); else the autoAssign pools
  without either (ordered the same way, where MetalLB uses random map order). A pool with
  selectors never serves a Service it does not match, not even on explicit request; a
  Service relabelled out of its pool's selectors is moved (a pool change keeps it, with
  a warning: configuration changes never move an IP).
* **Address choice.** Lowest address of the pool that is free or shareable (same
  sharing key, same ETP-Local backend key, no common (protocol, port)); numerically
  lowest over all ranges of the pool (MetalLB walks CIDRs in config order).
  ``avoidBuggyIPs`` skips every IPv4 address whose last octet is 0 or 255 (MetalLB's
  ``ipConfusesBuggyFirmwares``: *every* x.y.z.0 / x.y.z.255, not only range edges),
  and refuses such an address when it is requested. The unspecified address (0.0.0.0,
  ``::``) is in no pool: never handed out, refused when requested (see ``_merged``).
* **Families** (``ServiceRequest.families`` is spec.ipFamilies, primary first):
  ``SingleStack`` one address of the first family; ``RequireDualStack`` one of each,
  from one pool; ``PreferDualStack`` both from the first pool offering both, else one
  of the primary family, else one of the secondary family. A PreferDualStack Service
  holding one address gets the missing family added from the same pool when possible.
  A dual-stack Service's IPs are always IPv4 first (``Result.ips``, hence its status),
  whatever its primary family, as MetalLB writes them (its ``selectIPsForFamilyAndPolicy``);
  the layer-2 election hashes the first IP, so both pick the same node.
* **Sharing.** An IP may be held by several Services when all have the same non-empty
  sharing key, the same backend key (pod selector identity; ETP Local only) and no
  common (protocol, port). It stays allocated until its last holder releases it.
* **Failures** leave the allocator unchanged and name what is wrong and what to do
  (``Result.reason`` machine-readable, ``Result.message`` for the Event). A Service that
  already holds IPs and whose *request* changed (other requested IPs, pool, family
  policy, sharing key or ports that now clash) is moved; if the move fails it **keeps
  its current IPs** (MetalLB would clear them first and leave the Service with none).
  ``Result.ips`` is always what the Service holds after the call.
* **Configuration changes never move an IP.** :meth:`Allocator.set_pools` keeps every
  assignment; those no longer inside a pool are reported as orphaned (MetalLB unassigns
  them and re-allocates), and :meth:`Allocator.holders` names the Services still on a
  deleted pool, so the operator decides. Pools that overlap an earlier pool in the
  given order are rejected (see :func:`accept_pools`); the caller orders pools by
  creationTimestamp then name and keeps the last valid version of a rejected pool.

API (all plain data)::

    alloc = Allocator(pools=())                  # or alloc.set_pools(pools) -> PoolsReport
    alloc.restore(key, ips, request, pool=None)  -> Result   # start-up, before any allocate
    alloc.allocate(request)                      -> Result   # idempotent
    alloc.release(key)                           -> tuple[str, ...]  # the IPs it held
    alloc.assigned(key)                          -> Assignment | None
    alloc.assignments()                          -> dict[key, tuple[ip, ...]]
    alloc.holders(pool) / services_on(ip)        -> list[key]
    alloc.pool_stats(pool)                       -> PoolStats(assigned_v4, available_v4,
                                                              assigned_v6, available_v6)
    alloc.pool_capacity(pool)                    -> (v4, v6);  alloc.pools() -> accepted names
    pool_overlaps(pools), accept_pools(pools), pool_covers(pool, node_ips), is_buggy_ip(fam, int)

Data structures: per pool and family a sorted list of free intervals (bisect; split on
take, merge on give), so choosing the lowest free address is O(log n) and a /8 or an
IPv6 /64 is never materialised; a dict ip -> holders for sharing; per (pool, family,
sharing key) a sorted list of shared IPs. restore() only records IPs; the free
intervals are rebuilt in bulk (O(n log n)) before the next allocate/release/pool_stats.
Not thread-safe.
"""

from __future__ import annotations

import ipaddress
import math
from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from lbspeaker.api.addresses import AddressRange
from lbspeaker.facts import Pool, ServiceRequest
from lbspeaker.selectors import SelectorError, any_selector_matches, label_selector_matches

__all__ = [
    "FAMILY_POLICIES",
    "Allocator",
    "Assignment",
    "Pool",
    "PoolStats",
    "PoolsReport",
    "Reason",
    "Result",
    "ServiceRequest",
    "accept_pools",
    "is_buggy_ip",
    "pool_covers",
    "pool_overlaps",
]

SINGLE_STACK = "SingleStack"
PREFER_DUAL_STACK = "PreferDualStack"
REQUIRE_DUAL_STACK = "RequireDualStack"
FAMILY_POLICIES = (SINGLE_STACK, PREFER_DUAL_STACK, REQUIRE_DUAL_STACK)


class Reason:
    """Machine-readable failure reasons (``Result.reason``)."""

    INVALID_REQUEST = "InvalidRequest"      # malformed IPs, bad family combination, bad policy
    NO_POOLS = "NoPools"                    # no IPAddressPool configured at all
    NO_POOL_AVAILABLE = "NoPoolAvailable"   # no pool may serve this Service (autoAssign/selectors)
    POOL_NOT_FOUND = "PoolNotFound"         # requested pool does not exist
    POOL_NOT_ALLOWED = "PoolNotAllowed"     # pool's serviceAllocation excludes this Service
    POOL_MISMATCH = "PoolMismatch"          # requested IP not in the requested pool
    FAMILY_NOT_OFFERED = "FamilyNotOffered"  # no candidate pool has addresses of that family
    POOL_EXHAUSTED = "PoolExhausted"        # candidate pools have no free/shareable address
    IP_OUTSIDE_POOLS = "IPOutsidePools"     # requested IP in no pool
    IP_AVOIDED = "IPAvoided"                # requested .0/.255 in an avoidBuggyIPs pool
    IP_IN_USE = "IPInUse"                   # held by a Service that does not share
    SHARING_KEY_MISMATCH = "SharingKeyMismatch"
    BACKEND_MISMATCH = "BackendMismatch"    # ETP Local services with different pod selectors
    PORT_CONFLICT = "PortConflict"
    CONFLICT = "Conflict"                   # restore: two Services' status claim one IP


@dataclass(frozen=True)
class Result:
    """Outcome of allocate/restore. ``ips`` is what the Service holds after the call, even on failure."""

    ok: bool
    ips: tuple[str, ...] = ()
    pool: str | None = None
    reason: str = ""
    message: str = ""
    changed: bool = False            # ips differ from before the call
    orphaned: bool = False           # some held IP is inside no current pool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assignment:
    """What a Service holds."""

    ips: tuple[str, ...]
    pool: str | None
    orphaned: bool


class PoolStats(NamedTuple):
    assigned_v4: int
    available_v4: int
    assigned_v6: int
    available_v6: int


@dataclass(frozen=True)
class PoolsReport:
    """What :meth:`Allocator.set_pools` found (nothing is dropped; this is for status and Events)."""

    rejected: Mapping[str, str] = field(default_factory=dict)          # pool -> why
    orphaned: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # svc -> IPs in no pool
    missing_pools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # gone pool -> svcs
    moved: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)  # svc -> (old, new pool)


# ---------------------------------------------------------------------------------------------
# helpers


def is_buggy_ip(family: int, value: int) -> bool:
    """MetalLB's ipConfusesBuggyFirmwares: an IPv4 address ending in .0 or .255."""
    return family == 4 and (value & 0xFF) in (0, 0xFF)


def _buggy_upto(n: int) -> int:
    """How many x in [0, n] end in .0 or .255."""
    if n < 0:
        return 0
    return n // 256 + 1 + (n + 1) // 256


def _usable(family: int, avoid: bool, first: int, last: int) -> int:
    n = last - first + 1
    if avoid and family == 4:
        n -= _buggy_upto(last) - _buggy_upto(first - 1)
    return n


def _ip_text(family: int, value: int) -> str:
    if family == 4:  # hot path: ipaddress.IPv4Address(...).__str__ is several times slower
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


def _parse_ip(text: str) -> tuple[int, int]:
    """(family, integer) of an address; ValueError when it is not one (ipaddress's strict rules)."""
    text = text.strip()
    parts = text.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and (p == "0" or p[0] != "0")
                               for p in parts):
        a, b, c, d = (int(p) for p in parts)
        if a <= 255 and b <= 255 and c <= 255 and d <= 255:
            return 4, (a << 24) | (b << 16) | (c << 8) | d
    ip = ipaddress.ip_address(text)
    return ip.version, int(ip)


def _merged(ranges: Iterable[AddressRange], family: int) -> list[tuple[int, int]]:
    """Disjoint sorted intervals of the pool's addresses of `family`, without the unspecified address.

    0.0.0.0 and :: (value 0) are never handed out, counted or matched to a pool: they mean
    "any address" and no client can reach a Service on them, so a 0.0.0.0/0 or ::/0 pool
    starts at 0.0.0.1 / ::1. Network and broadcast addresses of a CIDR *are* handed out,
    as MetalLB does (its allocator walks every address of a CIDR; a LoadBalancer IP is a
    /32 or /128 on no link, so x.y.z.0 is an ordinary host address); `avoidBuggyIPs` is
    MetalLB's and our way to skip them for CPE firmwares that mistreat them.
    """
    out: list[tuple[int, int]] = []
    for r in sorted(r for r in ranges if r.family == family):
        first = max(r.first, 1)
        if first > r.last:
            continue
        if out and first <= out[-1][1] + 1:
            if r.last > out[-1][1]:
                out[-1] = (out[-1][0], r.last)
        else:
            out.append((first, r.last))
    return out


def pool_overlaps(pools: Sequence[Pool]) -> list[tuple[str, str]]:
    """Pairs (earlier, later) of pools, in the given order, that share at least one address."""
    pairs: list[tuple[str, str]] = []
    for i, a in enumerate(pools):
        for b in pools[i + 1:]:
            if any(ra.overlaps(rb) for ra in a.ranges for rb in b.ranges):
                pairs.append((a.name, b.name))
    return pairs


def accept_pools(pools: Sequence[Pool]) -> tuple[list[Pool], dict[str, str]]:
    """Keep pools in order; reject a pool that overlaps an already accepted one, or repeats a name.

    The rule: the earlier pool (the caller orders by creationTimestamp, then name) keeps
    the addresses, the later one is rejected with a message naming both.
    """
    accepted: list[Pool] = []
    rejected: dict[str, str] = {}
    for pool in pools:
        if any(p.name == pool.name for p in accepted):
            rejected[pool.name] = f"pool {pool.name!r} is defined twice; the first definition is used"
            continue
        clash = next(((p, ra, rb) for p in accepted for ra in p.ranges for rb in pool.ranges
                      if ra.overlaps(rb)), None)
        if clash is not None:
            other, ra, rb = clash
            rejected[pool.name] = (
                f"pool {pool.name!r} range {rb} overlaps pool {other.name!r} range {ra}; "
                f"{other.name!r} was there first and keeps those addresses: remove the overlap")
            continue
        accepted.append(pool)
    return accepted, rejected


def pool_covers(pool: Pool, ips: Iterable[str]) -> list[str]:
    """The addresses among `ips` (e.g. node InternalIPs) that `pool` would hand out."""
    out: list[str] = []
    for text in ips:
        try:
            fam, value = _parse_ip(text)
        except ValueError:
            continue
        if any(r.family == fam and r.first <= value <= r.last for r in pool.ranges):
            out.append(text)
    return out


def _pool_refusal(pool: Pool, req: ServiceRequest) -> str | None:
    """Why `pool`'s serviceAllocation excludes the Service, or None if it may serve it.

    A malformed selector excludes everyone (and says so) rather than raising mid-allocation.
    """
    try:
        return _pool_refusal_unchecked(pool, req)
    except SelectorError as exc:
        return f"pool {pool.name!r} has an invalid serviceAllocation selector ({exc}) and serves nobody"


def _pool_refusal_unchecked(pool: Pool, req: ServiceRequest) -> str | None:
    if pool.namespaces or pool.namespace_selectors:
        ns_ok = req.namespace in pool.namespaces or any(
            label_selector_matches(sel, req.namespace_labels) for sel in pool.namespace_selectors)
        if not ns_ok:
            return (f"pool {pool.name!r} serves only namespaces {list(pool.namespaces)} or namespaces "
                    f"matching its namespaceSelectors, and {req.namespace!r} is neither")
    if not any_selector_matches(pool.service_selectors, req.labels):
        return f"pool {pool.name!r} serves only Services matching its serviceSelectors"
    return None


def _priority_key(pool: Pool) -> tuple[float, str]:
    prio = pool.priority if pool.priority and pool.priority > 0 else math.inf
    return (prio, pool.name)


# ---------------------------------------------------------------------------------------------
# free intervals


class _FreeSet:
    """Free addresses of one family of one pool: sorted disjoint inclusive intervals.

    Under avoidBuggyIPs, .0/.255 addresses stay inside the intervals (so a /8 is one
    interval, not 65,536) and lowest() steps over them; an interval made only of such
    addresses (at most x.255-x+1.0) is moved to `parked` the first time lowest() meets
    it, so no later call scans it again.
    """

    __slots__ = ("avoid", "ends", "family", "free_usable", "parked", "starts")

    def __init__(self, family: int, ranges: list[tuple[int, int]], avoid: bool, taken: Iterable[int]):
        self.family = family
        self.avoid = avoid and family == 4
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.parked: set[int] = set()
        used = sorted(set(taken))
        j = 0
        for first, last in ranges:
            cursor = first
            while j < len(used) and used[j] < first:
                j += 1
            while j < len(used) and used[j] <= last:
                if used[j] > cursor:
                    self.starts.append(cursor)
                    self.ends.append(used[j] - 1)
                cursor = used[j] + 1
                j += 1
            if cursor <= last:
                self.starts.append(cursor)
                self.ends.append(last)
        self.free_usable = sum(_usable(family, self.avoid, a, b)
                               for a, b in zip(self.starts, self.ends, strict=True))

    def contains(self, value: int) -> bool:
        if value in self.parked:
            return True
        i = bisect_right(self.starts, value) - 1
        return i >= 0 and value <= self.ends[i]

    def lowest(self) -> int | None:
        """Lowest free address, skipping .0/.255 when avoiding buggy IPs (amortised O(1))."""
        if not self.avoid:
            return self.starts[0] if self.starts else None
        while self.starts:
            a, b = self.starts[0], self.ends[0]
            v = a
            while v <= b and (v & 0xFF) in (0, 0xFF):
                v += 1
            if v <= b:
                return v
            self.parked.update(range(a, b + 1))
            del self.starts[0]
            del self.ends[0]
        return None

    def take(self, value: int) -> None:
        if value in self.parked:
            self.parked.discard(value)
            return
        i = bisect_right(self.starts, value) - 1
        a, b = self.starts[i], self.ends[i]
        assert a <= value <= b, "taking an address that is not free"
        if a == b:
            del self.starts[i]
            del self.ends[i]
        elif value == a:
            self.starts[i] = value + 1
        elif value == b:
            self.ends[i] = value - 1
        else:
            self.ends[i] = value - 1
            self.starts.insert(i + 1, value + 1)
            self.ends.insert(i + 1, b)
        if not (self.avoid and (value & 0xFF) in (0, 0xFF)):
            self.free_usable -= 1

    def give(self, value: int) -> None:
        if self.avoid and (value & 0xFF) in (0, 0xFF):
            self.parked.add(value)      # never handed out automatically; no need to merge
            return
        i = bisect_right(self.starts, value)
        left = i > 0 and self.ends[i - 1] == value - 1
        right = i < len(self.starts) and self.starts[i] == value + 1
        if left and right:
            self.ends[i - 1] = self.ends[i]
            del self.starts[i]
            del self.ends[i]
        elif left:
            self.ends[i - 1] = value
        elif right:
            self.starts[i] = value
        else:
            self.starts.insert(i, value)
            self.ends.insert(i, value)
        self.free_usable += 1


class _PoolState:
    __slots__ = ("assigned", "capacity", "free", "pool", "ranges")

    def __init__(self, pool: Pool, taken: Mapping[int, list[int]]):
        self.pool = pool
        self.ranges = {fam: _merged(pool.ranges, fam) for fam in (4, 6)}
        self.free = {fam: _FreeSet(fam, self.ranges[fam], pool.avoid_buggy_ips, taken.get(fam, ()))
                     for fam in (4, 6)}
        self.capacity = {fam: sum(_usable(fam, pool.avoid_buggy_ips, a, b) for a, b in self.ranges[fam])
                         for fam in (4, 6)}
        self.assigned = {fam: len(set(taken.get(fam, ()))) for fam in (4, 6)}


# ---------------------------------------------------------------------------------------------
# allocator state


@dataclass(slots=True)
class _IPUse:
    family: int
    value: int
    pool: str | None                                   # pool that covers it now (None: orphaned)
    sharing_key: str | None
    backend_key: str | None
    holders: dict[str, tuple[tuple[str, int], ...]]    # svc -> its ports
    port_owners: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # port -> its holders

    def hold(self, key: str, ports: tuple[tuple[str, int], ...]) -> None:
        """Record (or update) `key`'s ports on this IP: O(its ports), whatever the holder count."""
        self.drop(key)
        self.holders[key] = ports
        for port in ports:
            self.port_owners.setdefault(port, set()).add(key)

    def drop(self, key: str) -> None:
        for port in self.holders.pop(key, ()):
            owners = self.port_owners.get(port)
            if owners is not None:
                owners.discard(key)
                if not owners:
                    del self.port_owners[port]

    def shared_with_others(self, key: str) -> bool:
        return len(self.holders) > (1 if key in self.holders else 0)


@dataclass(slots=True)
class _Held:
    addrs: tuple[tuple[int, int], ...]                 # (family, value), IPv4 first
    pool: str | None                                   # pool it was allocated from (kept if deleted)
    request: ServiceRequest
    ips: tuple[str, ...] = ()                          # addrs as text, computed once


class _Fail(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class Allocator:
    """Allocation state of one controller. Not thread-safe: call from the reconcile loop only."""

    def __init__(self, pools: Sequence[Pool] = ()):
        self._pools: dict[str, _PoolState] = {}
        self._index: dict[int, tuple[list[int], list[int], list[str]]] = {4: ([], [], []), 6: ([], [], [])}
        self._uses: dict[tuple[int, int], _IPUse] = {}
        self._outside: set[tuple[int, int]] = set()  # the addresses in use that no pool covers
        self._held: dict[str, _Held] = {}
        self._shared: dict[tuple[str, int, str], list[int]] = {}
        self._pool_holders: dict[str, set[str]] = {}
        self._dirty = False      # restores recorded IPs without updating free intervals
        self._rejected: dict[str, str] = {}
        if pools:
            self.set_pools(pools)

    # ----- configuration ----------------------------------------------------------------------

    def set_pools(self, pools: Sequence[Pool], refused: Mapping[str, str] | None = None) -> PoolsReport:
        """Replace the pool set; keep every assignment and say which ones no pool covers now.

        `refused` names the pools the caller's validation kept out, with why: a Service that
        requests one is told that reason, not that the pool does not exist."""
        accepted, rejected = accept_pools(pools)
        self._rejected = {**(refused or {}), **rejected}
        self._pools = {}
        index: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for pool in accepted:
            for fam in (4, 6):
                for a, b in _merged(pool.ranges, fam):
                    index[fam].append((a, b, pool.name))
        for fam in (4, 6):
            rows = sorted(index[fam])
            self._index[fam] = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        self._pools = {p.name: _PoolState(p, {}) for p in accepted}
        self._rebuild()
        orphaned: dict[str, tuple[str, ...]] = {}
        moved: dict[str, tuple[str | None, str]] = {}
        self._pool_holders = {}
        for key, held in self._held.items():
            current = [self._uses[a].pool for a in held.addrs]
            outside = tuple(_ip_text(f, v)
                            for (f, v), p in zip(held.addrs, current, strict=True) if p is None)
            if outside:
                orphaned[key] = outside
            covering = next((p for p in current if p is not None), None)
            if covering is not None and not outside and covering != held.pool:
                moved[key] = (held.pool, covering)
                held.pool = covering
            self._pool_holders.setdefault(held.pool or "", set()).add(key)
        missing = {name: tuple(sorted(keys)) for name, keys in self._pool_holders.items()
                   if name and name not in self._pools}
        return PoolsReport(rejected=rejected, orphaned=orphaned, missing_pools=missing, moved=moved)

    def _rebuild(self) -> None:
        """Recompute free intervals, counts and sharing groups from the IPs in use (bulk, O(n log n))."""
        taken: dict[str, dict[int, list[int]]] = {name: {4: [], 6: []} for name in self._pools}
        shared: dict[tuple[str, int, str], list[int]] = {}
        self._outside = set()
        for (fam, value), use in self._uses.items():
            use.pool = self._pool_for(fam, value)
            if use.pool is None:
                self._outside.add((fam, value))
            else:
                taken[use.pool][fam].append(value)
                if use.sharing_key:
                    shared.setdefault((use.pool, fam, use.sharing_key), []).append(value)
        self._pools = {name: _PoolState(st.pool, taken[name]) for name, st in self._pools.items()}
        self._shared = {k: sorted(v) for k, v in shared.items()}
        self._dirty = False

    def _sync(self) -> None:
        """Bring free intervals up to date after a batch of restores (they only record IPs)."""
        if self._dirty:
            self._rebuild()

    def pools(self) -> list[str]:
        """Names of the accepted pools."""
        return sorted(self._pools)

    # ----- queries ------------------------------------------------------------------------------

    def assigned(self, key: str) -> Assignment | None:
        held = self._held.get(key)
        if held is None:
            return None
        return Assignment(ips=held.ips, pool=held.pool,
                          orphaned=any(self._uses[a].pool is None for a in held.addrs))

    def any_outside(self) -> bool:
        """Whether any IP in use is outside every pool (cheap: callers skip a scan of the holders)."""
        return bool(self._outside)

    def assignments(self) -> dict[str, tuple[str, ...]]:
        """Every Service key -> its IPs (for checks and the restart test)."""
        return {k: h.ips for k, h in self._held.items()}

    def holders(self, pool: str) -> list[str]:
        """Services whose IPs came from `pool` (also after the pool was deleted)."""
        return sorted(self._pool_holders.get(pool, ()))

    def services_on(self, ip: str) -> list[str]:
        """Services holding `ip` (several when shared)."""
        use = self._uses.get(_parse_ip(ip))
        return sorted(use.holders) if use else []

    def pool_stats(self, name: str) -> PoolStats:
        """(assigned_v4, available_v4, assigned_v6, available_v6); KeyError for an unknown pool.

        assigned counts distinct IPs in use (a shared IP once); available counts free
        addresses the pool would hand out (without .0/.255 under avoidBuggyIPs).
        """
        self._sync()
        st = self._pools[name]
        return PoolStats(st.assigned[4], st.free[4].free_usable, st.assigned[6], st.free[6].free_usable)

    def pool_capacity(self, name: str) -> tuple[int, int]:
        """(IPv4, IPv6) addresses the pool can hand out in total."""
        st = self._pools[name]
        return st.capacity[4], st.capacity[6]

    # ----- mutations ----------------------------------------------------------------------------

    def release(self, key: str) -> tuple[str, ...]:
        """Forget the Service; an IP is freed when its last holder goes. Returns the IPs it held."""
        self._sync()
        held = self._unassign(key)
        return held.ips if held else ()

    def restore(self, key: str, ips: Sequence[str], request: ServiceRequest | None = None,
                pool: str | None = None, lazy: bool = True) -> Result:
        """Re-record IPs found in a Service's status at start-up, whatever the pools say now.

        `pool` is the Service's ip-allocated-from-pool annotation: remembered as the IPs'
        origin when no current pool covers them, so holders(pool) and a pool request
        naming it do not move the Service. `lazy=False` updates the free intervals at
        once instead of in bulk before the next allocation (one restore between allocations).
        """
        if not lazy:
            self._sync()
        req = request if request is not None else ServiceRequest(key=key)
        if req.key != key:
            req = replace(req, key=key)
        before = self._held.get(key)
        try:
            addrs = self._parse_ips(ips)
            if not addrs:
                raise _Fail(Reason.INVALID_REQUEST, "nothing to restore: no IPs given")
            if before is not None and set(before.addrs) == set(addrs):
                return self._ok(key, changed=False)
            for addr in addrs:
                use = self._uses.get(addr)
                if use is None:
                    continue
                problem = self._sharing_problem(use, req)
                if problem is not None:
                    raise _Fail(Reason.CONFLICT, (
                        f"{_ip_text(*addr)} in the status of {key} is also in the status of "
                        f"{', '.join(sorted(use.holders))}, which it may not share with ({problem[1]}); "
                        f"{key} will get a new address"))
        except _Fail as fail:
            return self._failure(key, fail)
        if before is not None:
            self._sync()
            self._unassign(key)
        where = [self._pool_for(f, v) for f, v in addrs]
        covering = [p for p in where if p is not None]
        origin = covering[0] if covering else pool
        self._assign(key, addrs, origin, req, lazy=lazy)
        warnings: list[str] = []
        for (f, v), p in zip(addrs, where, strict=True):
            if p is None:
                warnings.append(f"{_ip_text(f, v)} is inside no IPAddressPool; {key} keeps it until "
                                "its Service is changed or deleted")
            elif self._pools[p].pool.avoid_buggy_ips and is_buggy_ip(f, v):
                warnings.append(f"{_ip_text(f, v)} ends in .0/.255 but pool {p!r} avoids such addresses")
        if covering:
            refusal = _pool_refusal(self._pools[covering[0]].pool, req)
            if refusal:
                warnings.append(refusal + f"; {key} keeps its address")
        return self._ok(key, changed=True, warnings=tuple(warnings))

    def allocate(self, req: ServiceRequest) -> Result:
        """Give the Service addresses per its request (idempotent); see the module docstring."""
        key = req.key
        self._sync()
        try:
            self._validate(req)
            held = self._held.get(key)
            if held is not None:
                change = self._request_change(held, req)
                if change is None:
                    return self._refresh(held, req)
                saved = self._unassign(key)
                assert saved is not None
                try:
                    self._fresh(req)
                except _Fail as fail:
                    self._assign(key, saved.addrs, saved.pool, saved.request)
                    return self._failure(key, _Fail(fail.reason, (
                        f"{fail.message} ({change}; {key} keeps "
                        f"{', '.join(_ip_text(f, v) for f, v in saved.addrs)} meanwhile)")))
                return self._ok(key, changed=True)
            self._fresh(req)
            return self._ok(key, changed=True)
        except _Fail as fail:
            return self._failure(key, fail)

    # ----- internals: results -------------------------------------------------------------------

    def _ok(self, key: str, changed: bool, warnings: tuple[str, ...] = ()) -> Result:
        a = self.assigned(key)
        assert a is not None
        return Result(ok=True, ips=a.ips, pool=a.pool, changed=changed, orphaned=a.orphaned,
                      warnings=warnings)

    def _failure(self, key: str, fail: _Fail) -> Result:
        a = self.assigned(key)
        return Result(ok=False, ips=a.ips if a else (), pool=a.pool if a else None, reason=fail.reason,
                      message=fail.message, orphaned=a.orphaned if a else False)

    # ----- internals: bookkeeping ---------------------------------------------------------------

    def _pool_for(self, family: int, value: int) -> str | None:
        starts, ends, names = self._index[family]
        i = bisect_right(starts, value) - 1
        if i >= 0 and value <= ends[i]:
            return names[i]
        return None

    def _share_add(self, use: _IPUse) -> None:
        if use.sharing_key and use.pool is not None:
            insort(self._shared.setdefault((use.pool, use.family, use.sharing_key), []), use.value)

    def _share_remove(self, use: _IPUse) -> None:
        if use.sharing_key and use.pool is not None:
            group = self._shared.get((use.pool, use.family, use.sharing_key))
            if group:
                i = bisect_right(group, use.value) - 1
                if i >= 0 and group[i] == use.value:
                    del group[i]
                if not group:
                    del self._shared[(use.pool, use.family, use.sharing_key)]

    def _assign(self, key: str, addrs: tuple[tuple[int, int], ...], pool: str | None,
                req: ServiceRequest, lazy: bool = False) -> None:
        """Record `key` on `addrs` (caller has checked compatibility and that key holds nothing).

        `lazy` (restore): only record; free intervals are rebuilt in bulk by _sync(), which
        keeps a restart of 100k Services O(n log n) whatever the order of restores.
        """
        for fam, value in addrs:
            use = self._uses.get((fam, value))
            if use is None:
                p = self._pool_for(fam, value)
                use = _IPUse(fam, value, p, req.sharing_key, req.backend_key, {})
                self._uses[(fam, value)] = use
                if p is None:
                    self._outside.add((fam, value))
                if lazy:
                    self._dirty = True
                    use.hold(key, req.ports)
                    continue
                if p is not None:
                    st = self._pools[p]
                    st.free[fam].take(value)
                    st.assigned[fam] += 1
                self._share_add(use)
            elif use.sharing_key != req.sharing_key or use.backend_key != req.backend_key:
                # Only possible when key is the sole holder changing its own sharing settings.
                self._sync()
                self._share_remove(use)
                use.sharing_key, use.backend_key = req.sharing_key, req.backend_key
                self._share_add(use)
            use.hold(key, req.ports)
        addrs = tuple(sorted(addrs))  # IPv4 first (MetalLB's status order), see the module docstring
        self._held[key] = _Held(addrs, pool, req, tuple(_ip_text(f, v) for f, v in addrs))
        self._pool_holders.setdefault(pool or "", set()).add(key)

    def _unassign(self, key: str) -> _Held | None:
        held = self._held.pop(key, None)
        if held is None:
            return None
        holders = self._pool_holders.get(held.pool or "")
        if holders is not None:
            holders.discard(key)
            if not holders:
                del self._pool_holders[held.pool or ""]
        for addr in held.addrs:
            use = self._uses[addr]
            use.drop(key)
            if use.holders:
                continue
            del self._uses[addr]
            self._outside.discard(addr)
            self._share_remove(use)
            if use.pool is not None:
                st = self._pools[use.pool]
                st.free[use.family].give(use.value)
                st.assigned[use.family] -= 1
        return held

    # ----- internals: rules ---------------------------------------------------------------------

    @staticmethod
    def _parse_ips(ips: Sequence[str]) -> tuple[tuple[int, int], ...]:
        addrs: list[tuple[int, int]] = []
        for text in ips:
            try:
                addrs.append(_parse_ip(text))
            except ValueError:
                raise _Fail(Reason.INVALID_REQUEST, f"{text!r} is not an IP address") from None
        fams = [f for f, _ in addrs]
        if len(set(fams)) != len(fams):
            raise _Fail(Reason.INVALID_REQUEST, (
                f"{', '.join(ips)}: at most one address per IP family; ask for one IPv4 and/or one IPv6"))
        return tuple(dict.fromkeys(addrs))

    @staticmethod
    def _validate(req: ServiceRequest) -> None:
        if req.family_policy not in FAMILY_POLICIES:
            raise _Fail(Reason.INVALID_REQUEST, (
                f"ipFamilyPolicy {req.family_policy!r} is not one of {', '.join(FAMILY_POLICIES)}"))
        if not req.families or any(f not in (4, 6) for f in req.families) \
                or len(set(req.families)) != len(req.families):
            raise _Fail(Reason.INVALID_REQUEST, f"ipFamilies {req.families!r} must be IPv4 and/or IPv6")
        if req.family_policy == REQUIRE_DUAL_STACK and len(req.families) != 2:
            raise _Fail(Reason.INVALID_REQUEST, (
                "ipFamilyPolicy RequireDualStack needs both IPv4 and IPv6 in spec.ipFamilies"))

    @staticmethod
    def _wanted(req: ServiceRequest) -> tuple[tuple[int, ...], bool]:
        """(families to get, all required?)"""
        if req.family_policy == SINGLE_STACK:
            return req.families[:1], True
        return req.families, req.family_policy == REQUIRE_DUAL_STACK or len(req.families) == 1

    def _families_fit(self, fams: set[int], req: ServiceRequest) -> bool:
        wanted, required = self._wanted(req)
        if required:
            return fams == set(wanted)
        return bool(fams) and fams <= set(wanted)

    def _sharing_problem(self, use: _IPUse, req: ServiceRequest) -> tuple[str, str] | None:
        """Why `req` may not hold `use`'s IP alongside its other holders, or None.

        Linear in the request's ports, not in the holder count: thousands of Services
        sharing one IP each cost O(1) per call (the holder list is only sorted to word a failure).
        """
        if not use.shared_with_others(req.key):
            return None
        ip = _ip_text(use.family, use.value)

        def names() -> str:
            return ", ".join(sorted(k for k in use.holders if k != req.key))

        if not use.sharing_key:
            return Reason.IP_IN_USE, (f"{ip} is held by {names()}, which does not allow sharing; "
                                      "pick another address, or give both Services the same "
                                      "allow-shared-ip annotation")
        if not req.sharing_key:
            return Reason.IP_IN_USE, (f"{ip} is held by {names()} (sharing key {use.sharing_key!r}); "
                                      f"set allow-shared-ip: {use.sharing_key!r} on {req.key} to share it")
        if req.sharing_key != use.sharing_key:
            return Reason.SHARING_KEY_MISMATCH, (
                f"{ip} is shared by {names()} under sharing key {use.sharing_key!r}, "
                f"not {req.sharing_key!r}; use the same allow-shared-ip value on all Services sharing "
                "an address")
        if req.backend_key != use.backend_key:
            return Reason.BACKEND_MISMATCH, (
                f"{ip} is held by {names()} with a different externalTrafficPolicy/pod selector; Services "
                "sharing an address with externalTrafficPolicy Local must select the same pods")
        mine = set(req.ports)
        clashing = {k for port in mine for k in use.port_owners.get(port, ()) if k != req.key}
        if clashing:
            other = min(clashing)
            clash = sorted(mine.intersection(use.holders[other]))
            text = ", ".join(f"{proto}/{port}" for proto, port in clash)
            return Reason.PORT_CONFLICT, (f"port {text} is already used on {ip} by {other}; "
                                          "Services sharing an address need distinct ports")
        return None

    def _request_change(self, held: _Held, req: ServiceRequest) -> str | None:
        """Why the Service's current IPs no longer fit what it asks for (None: they still fit)."""
        current = set(held.addrs)
        if req.requested_ips:
            try:
                wanted = set(self._parse_ips(req.requested_ips))
            except _Fail:
                wanted = set()
            if wanted != current:
                return "the requested IPs changed"
        if req.requested_pool and held.pool is not None and req.requested_pool != held.pool:
            return f"the requested pool changed to {req.requested_pool!r}"
        if not self._families_fit({f for f, _ in held.addrs}, req):
            return "the IP families or ipFamilyPolicy changed"
        st = self._pools.get(held.pool) if held.pool is not None else None
        if st is not None and st.pool.pinned and _pool_refusal(st.pool, req) is not None \
                and _pool_refusal(st.pool, held.request) is None:
            # The Service changed (labels, namespace labels), not the pool: it loses the pool's IP,
            # as the pool's serviceAllocation says. A pool change keeps it (see _refresh).
            return f"it no longer matches the serviceAllocation of pool {held.pool!r}"
        for addr in held.addrs:
            problem = self._sharing_problem(self._uses[addr], req)
            if problem is not None:
                return "its sharing settings or ports no longer fit the other holders of its IP"
        return None

    def _refresh(self, held: _Held, req: ServiceRequest) -> Result:
        """The Service keeps its IPs; record its new ports/sharing key; maybe add the missing family."""
        key = req.key
        addrs, pool = held.addrs, held.pool
        if req != held.request:
            for addr in addrs:
                use = self._uses[addr]
                use.hold(key, req.ports)
                if use.sharing_key != req.sharing_key or use.backend_key != req.backend_key:
                    # key is the sole holder (co-holders would have made this a request change)
                    self._share_remove(use)
                    use.sharing_key, use.backend_key = req.sharing_key, req.backend_key
                    self._share_add(use)
            held.request = req
        changed = False
        wanted, required = self._wanted(req)
        if not required and len(addrs) < len(wanted) and pool is not None and pool in self._pools \
                and not req.requested_ips:
            have = {f for f, _ in addrs}
            missing = next(f for f in wanted if f not in have)
            value = self._pick(self._pools[pool], missing, req)
            if value is not None:
                new = tuple(sorted((*addrs, (missing, value)), key=lambda a: wanted.index(a[0])))
                self._unassign(key)
                self._assign(key, new, pool, req)
                changed = True
        warnings: tuple[str, ...] = ()
        if pool is not None and pool in self._pools and self._pools[pool].pool.pinned:
            refusal = _pool_refusal(self._pools[pool].pool, req)
            if refusal:
                warnings = (refusal + f"; {key} keeps its address until its request changes",)
        return self._ok(key, changed=changed, warnings=warnings)

    def _pick(self, st: _PoolState, family: int, req: ServiceRequest) -> int | None:
        """Lowest address of `family` in the pool that is free or shareable with `req`."""
        best = st.free[family].lowest()
        if req.sharing_key:
            for value in self._shared.get((st.pool.name, family, req.sharing_key), ()):
                if best is not None and value > best:
                    break
                if self._sharing_problem(self._uses[(family, value)], req) is None:
                    return value
        return best

    def _fresh(self, req: ServiceRequest) -> None:
        """Allocate for a Service that holds nothing; raise _Fail leaving the state unchanged."""
        if req.requested_ips:
            self._assign_requested(req)
            return
        if not self._pools:
            raise _Fail(Reason.NO_POOLS, "no IPAddressPool is configured: create one")
        if req.requested_pool:
            st = self._pools.get(req.requested_pool)
            if st is None and req.requested_pool in self._rejected:
                raise _Fail(Reason.POOL_NOT_FOUND, (
                    f"pool {req.requested_pool!r} is not in use: {self._rejected[req.requested_pool]}"))
            if st is None:
                raise _Fail(Reason.POOL_NOT_FOUND, (
                    f"pool {req.requested_pool!r} does not exist (pools: {', '.join(sorted(self._pools))}); "
                    "fix the address-pool annotation or create the pool"))
            refusal = _pool_refusal(st.pool, req)
            if refusal:
                raise _Fail(Reason.POOL_NOT_ALLOWED, refusal + ": change its serviceAllocation or "
                            "request another pool")
            self._allocate_from([st], req)
            return
        ordered = sorted(self._pools.values(), key=lambda s: _priority_key(s.pool))
        pinned = [s for s in ordered if s.pool.allocation_tier and s.pool.auto_assign
                  and _pool_refusal(s.pool, req) is None]
        plain = [s for s in ordered if not s.pool.allocation_tier and s.pool.auto_assign]
        if not pinned and not plain:
            raise _Fail(Reason.NO_POOL_AVAILABLE, (
                "no pool hands out addresses to this Service automatically (autoAssign is off, or "
                "serviceAllocation selectors exclude it): request a pool with the address-pool "
                "annotation or an IP with loadBalancerIPs"))
        failures: list[_Fail] = []
        for tier in (pinned, plain):
            if not tier:
                continue
            try:
                self._allocate_from(tier, req)
                return
            except _Fail as fail:
                failures.append(fail)
        raise _Fail(failures[0].reason, "; then ".join(f.message for f in failures))

    def _allocate_from(self, pools: list[_PoolState], req: ServiceRequest) -> None:
        wanted, required = self._wanted(req)
        partial: tuple[_PoolState, dict[int, int]] | None = None
        partial_rank = len(wanted)
        offered: set[int] = set()
        for st in pools:
            picks: dict[int, int] = {}
            for fam in wanted:
                if st.ranges[fam]:
                    offered.add(fam)
                    value = self._pick(st, fam, req)
                    if value is not None:
                        picks[fam] = value
            if len(picks) == len(wanted):
                self._take(st, picks, wanted, req)
                return
            if not required and picks:
                rank = min(wanted.index(f) for f in picks)
                if rank < partial_rank:
                    partial, partial_rank = (st, {wanted[rank]: picks[wanted[rank]]}), rank
        if partial is not None:
            self._take(partial[0], partial[1], wanted, req)
            return
        names = ", ".join(repr(s.pool.name) for s in pools)
        fam_text = " and ".join(f"IPv{f}" for f in wanted)
        missing = [f for f in wanted if f not in offered]
        offers_all = any(all(st.ranges[f] for f in wanted) for st in pools)
        if required and len(wanted) > 1 and not missing and not offers_all:
            raise _Fail(Reason.FAMILY_NOT_OFFERED, (
                f"no candidate pool ({names}) offers both IPv4 and IPv6 addresses, and a "
                "RequireDualStack Service gets both from one pool: add both families to one pool"))
        if (required and missing) or not offered:
            raise _Fail(Reason.FAMILY_NOT_OFFERED, (
                f"no candidate pool ({names}) offers {' and '.join(f'IPv{f}' for f in missing or wanted)} "
                "addresses: add such a range to a pool or change the Service's ipFamilies/ipFamilyPolicy"))
        if required and len(wanted) > 1:
            raise _Fail(Reason.POOL_EXHAUSTED, (
                f"no candidate pool ({names}) has both a free IPv4 and a free IPv6 address "
                f"for {fam_text}: release addresses or add ranges"))
        raise _Fail(Reason.POOL_EXHAUSTED, (
            f"no free {fam_text} address in pool(s) {names}: release addresses, add ranges to the pool, "
            "or use a shared IP (allow-shared-ip)"))

    def _take(self, st: _PoolState, picks: Mapping[int, int], wanted: tuple[int, ...],
              req: ServiceRequest) -> None:
        addrs = tuple((f, picks[f]) for f in wanted if f in picks)
        self._assign(req.key, addrs, st.pool.name, req)

    def _assign_requested(self, req: ServiceRequest) -> None:
        addrs = self._parse_ips(req.requested_ips)
        fams = {f for f, _ in addrs}
        if not self._families_fit(fams, req):
            wanted, required = self._wanted(req)
            raise _Fail(Reason.INVALID_REQUEST, (
                f"requested IP(s) {', '.join(req.requested_ips)} do not match the Service's IP families "
                f"({' and '.join(f'IPv{f}' for f in wanted)}, {req.family_policy}): request "
                f"{'one address of each family' if required and len(wanted) > 1 else 'matching addresses'}"))
        pools: list[str] = []
        for fam, value in addrs:
            text = _ip_text(fam, value)
            if value == 0:
                raise _Fail(Reason.INVALID_REQUEST, (
                    f"{text} is the unspecified address (it means any address) and cannot be a "
                    "Service's IP: request a real address"))
            name = self._pool_for(fam, value)
            if name is None:
                raise _Fail(Reason.IP_OUTSIDE_POOLS, (
                    f"{text} is not inside any IPAddressPool"
                    + (f" (pools: {', '.join(sorted(self._pools))})" if self._pools else "")
                    + ": request an address from a pool or add it to a pool's addresses"))
            if self._pools[name].pool.avoid_buggy_ips and is_buggy_ip(fam, value):
                raise _Fail(Reason.IP_AVOIDED, (
                    f"{text} ends in .0 or .255 and pool {name!r} has avoidBuggyIPs: "
                    "request another address"))
            pools.append(name)
        if len(set(pools)) > 1:
            raise _Fail(Reason.INVALID_REQUEST, (
                f"requested IPs come from different pools ({', '.join(pools)}); a Service's addresses must "
                "come from one pool"))
        pool = pools[0]
        if req.requested_pool and req.requested_pool != pool:
            raise _Fail(Reason.POOL_MISMATCH, (
                f"requested IP(s) {', '.join(req.requested_ips)} belong to pool {pool!r}, not to the "
                f"requested pool {req.requested_pool!r}: drop one of the two annotations or make them agree"))
        refusal = _pool_refusal(self._pools[pool].pool, req)
        if refusal:
            raise _Fail(Reason.POOL_NOT_ALLOWED, refusal + ": change its serviceAllocation or request "
                        "another address")
        for addr in addrs:
            use = self._uses.get(addr)
            if use is not None:
                problem = self._sharing_problem(use, req)
                if problem is not None:
                    raise _Fail(*problem)
        order = {f: i for i, f in enumerate(req.families)}
        self._assign(req.key, tuple(sorted(addrs, key=lambda a: order.get(a[0], 9))), pool, req)
