"""Pure: which IPAddressPools the controller runs on, and the pool status it writes back.

* IPAddressPool dicts (+ node InternalIPs + last valid configurations) -> the
  `facts.Pool`s the allocator runs on, and the problems the CRD schema could not
  catch (overlaps, node IPs, IPv6 start > end), as `facts.Problem` records;
* pool status (counts + a `Valid` condition) to write back.

Objects are read through `lbspeaker.facts` (`parse_pool`, `service_request`, `key_of`):
this module only judges pools together. No I/O here: the reconciler feeds it what the
caches hold, so every rule can be tested with tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lbspeaker.api.addresses import AddressSyntaxError
from lbspeaker.api.models import (
    CONDITION_NODE_ADDRESS,
    CONDITION_ORPHANS,
    CONDITION_OVERLAP,
    CONDITION_READY,
    MAX_ORPHANS,
)
from lbspeaker.facts import Pool, Problem, parse_pool

Obj = Mapping[str, Any]
POOL_KIND = "IPAddressPool"


@dataclass
class PoolSet:
    """The outcome of validating all pools together.

    `active` is what the allocator runs on: each pool's current spec when valid,
    else its last valid spec (if it ever had one). `problems` explains every pool
    whose current spec was refused.
    """

    active: dict[str, Pool]
    problems: dict[str, Problem]

    def stale(self, name: str) -> bool:
        """True when the pool runs on an older configuration than its current spec."""
        return name in self.problems and name in self.active


def _short_error(exc: Exception) -> str:
    """One line from a pydantic ValidationError (or any error), for a condition message."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = []
            for e in errors():
                loc = ".".join(str(x) for x in e.get("loc", ()))
                parts.append(f"spec.{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
            return "; ".join(parts)
        except Exception:  # a non-pydantic exception with an errors attribute
            pass
    return str(exc)


def validate_pools(pool_objs: Iterable[Obj], node_ips: Mapping[str, str],
                   last_valid: Mapping[str, Pool]) -> PoolSet:
    """Accept pools one by one against the ones accepted so far; refuse overlaps and node IPs.

    Order decides who wins an overlap: pools whose spec did not change since it
    was last accepted first (a running pool is never pushed out by a newcomer),
    then changed pools, then new ones, each by creation time and name. A refused
    pool keeps its last valid spec when that still fits.
    """
    parsed: dict[str, Pool] = {}
    problems: dict[str, Problem] = {}
    created: dict[str, str] = {}
    for obj in pool_objs:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        created[name] = str(meta.get("creationTimestamp") or "")
        try:
            parsed[name] = parse_pool(obj)
        except (AddressSyntaxError, ValueError, TypeError) as exc:
            problems[name] = Problem(POOL_KIND, name, "InvalidSpec", _short_error(exc))

    def rank(name: str) -> tuple[int, str, str]:
        prev = last_valid.get(name)
        cur = parsed.get(name)
        group = 0 if cur is not None and cur.same_allocation(prev) else 1 if prev is not None else 2
        return group, created.get(name, ""), name

    active: dict[str, Pool] = {}

    def conflict(spec: Pool) -> Problem | None:
        for other in active.values():
            pairs = spec.overlaps(other)
            if pairs:
                a, b = pairs[0]
                return Problem(
                    POOL_KIND, spec.name, "Overlap",
                    f"addresses {a} overlap {b} of pool {other.name}: an address may belong to one pool "
                    f"only; shrink or remove one of the two")
        for ip, node in sorted(node_ips.items()):
            if spec.contains(ip):
                return Problem(
                    POOL_KIND, spec.name, "CoversNodeIP",
                    f"addresses include {ip}, the InternalIP of node {node}: handing it out would break "
                    "that node; exclude it from spec.addresses")
        return None

    for name in sorted(set(parsed) | set(problems), key=rank):
        cur = parsed.get(name)
        if cur is not None:
            problem = conflict(cur)
            if problem is None:
                active[name] = cur
                continue
            problems[name] = problem
        prev = last_valid.get(name)
        if prev is not None and conflict(prev) is None:
            active[name] = prev
    return PoolSet(active=active, problems=problems)


# ---------------------------------------------------------------------------------------------
# Pool status


def condition(prev: Mapping[str, Mapping[str, Any]], ctype: str, status: bool, reason: str, message: str,
               generation: int | None, now: str) -> dict[str, Any]:
    """A metav1.Condition whose lastTransitionTime only moves when `status` flips (no write storms)."""
    old = prev.get(ctype)
    st = "True" if status else "False"
    ltt = old.get("lastTransitionTime") if old and old.get("status") == st else None
    out: dict[str, Any] = {"type": ctype, "status": st, "reason": reason, "message": message,
                           "lastTransitionTime": ltt or now}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def pool_conditions(problem: Problem | None, stale: bool, orphans: Sequence[tuple[str, Sequence[str]]],
                    generation: int | None, previous: Sequence[Mapping[str, Any]] | None,
                    now: str) -> list[dict[str, Any]]:
    """The pool's conditions (types from lbspeaker.api.models): Ready, Overlap, CoversNodeAddress,
    ServicesOutsidePool. Recomputing an unchanged state yields equal dicts."""
    prev = {str(c.get("type")): c for c in previous or [] if isinstance(c, Mapping)}
    if problem is None:
        ready = condition(prev, CONDITION_READY, True, "Accepted", "the pool's addresses are in use",
                           generation, now)
    else:
        tail = (" The last valid configuration of this pool keeps running." if stale
                else " The pool is not used until this is fixed.")
        message = problem.message if problem.message.endswith(".") else problem.message + "."
        ready = condition(prev, CONDITION_READY, False, problem.reason, message + tail,
                           generation, now)
    overlap = problem is not None and problem.reason == "Overlap"
    covers = problem is not None and problem.reason == "CoversNodeIP"
    conds = [
        ready,
        condition(prev, CONDITION_OVERLAP, overlap, "Overlap" if overlap else "NoOverlap",
                   problem.message if overlap and problem else "no other pool shares these addresses",
                   generation, now),
        condition(prev, CONDITION_NODE_ADDRESS, covers, "CoversNodeIP" if covers else "NoNodeAddress",
                   problem.message if covers and problem else "no node InternalIP is inside this pool",
                   generation, now),
    ]
    if orphans:
        shown = ", ".join(f"{k} ({','.join(ips)})" for k, ips in orphans[:20])
        more = f" and {len(orphans) - 20} more" if len(orphans) > 20 else ""
        conds.append(condition(
            prev, CONDITION_ORPHANS, True, "IPsKept",
            f"{len(orphans)} Service(s) hold IPs this pool no longer covers: {shown}{more}. They keep "
            "their IPs; re-add the addresses to keep them, or re-create those Services (or change their "
            "requested IP) to move them.", generation, now))
    else:
        conds.append(condition(prev, CONDITION_ORPHANS, False, "NoOrphans",
                                "every IP handed out from this pool is inside it", generation, now))
    return conds


def pool_status(counts: Mapping[str, int], problem: Problem | None, stale: bool,
                orphans: Sequence[tuple[str, Sequence[str]]], generation: int | None,
                previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status of an IPAddressPool (IPAddressPoolStatus in lbspeaker.api.models)."""
    previous = previous or {}
    listed = []
    for key, ips in sorted(orphans)[:MAX_ORPHANS]:
        ns, _, name = key.partition("/")
        listed.append({"namespace": ns, "name": name, "ips": list(ips)[:8]})
    return {
        "assignedIPv4": counts.get("assignedIPv4", 0),
        "assignedIPv6": counts.get("assignedIPv6", 0),
        "availableIPv4": counts.get("availableIPv4", 0),
        "availableIPv6": counts.get("availableIPv6", 0),
        "conditions": pool_conditions(problem, stale, sorted(orphans), generation,
                                      previous.get("conditions"), now),
        "orphanedServices": listed,
        "orphanedServiceCount": len(orphans),
    }
