"""The speaker's one reading of its caches: per-object facts, kept as events arrive, and the
snapshot both protocols plan from.

Why per object: a plan is a pure function of facts, so an event can only change a plan
if it changes the facts read from the object. Each watched resource has a *reading*
(object -> the facts a plan uses); the index keeps the reading of every cached object
and compares on each event. A Lease renewal, a kubelet heartbeat on a Node, the
controller's or our own status writes on a BGPPeer/advertisement, a bare
resourceVersion bump: the reading is unchanged, the event is counted as ignored, and
nothing is planned. Whatever changes bumps the resource's *generation*; a protocol
replans only when a generation it depends on moved (BGP does not replan on a membership
change, layer 2 not on a Community edit).

Node-local inputs (live speakers, links, which caches have listed) are set on the
index the same way, so one rule covers all of them. Reading one object is cheap; a
snapshot is assembled from the stored readings without re-reading every object.

Why the join is kept, and logged: at 10,000 Services a snapshot that re-joins every
Service with its EndpointSlices, and a plan that redoes every Service, cost more than the
events they follow. So the index keeps each Service joined with its slices (redone only
for the Service an event is about) and writes the key of every joined Service that
changed to a `ChangeLog`; a snapshot carries the log position, and a plan that has seen
an earlier snapshot redoes only the Services changed since (`Snapshot.service_changes`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from lbspeaker.api.constants import SERVICE_NAME_LABEL, class_matches
from lbspeaker.bfd.profile import ProfileFacts
from lbspeaker.cowmap import CowDict
from lbspeaker.facts import (
    BGPAdvertisementFacts,
    L2AdvertisementFacts,
    NodeFacts,
    PeerFacts,
    Pool,
    ServiceFacts,
    ServiceKey,
    community_aliases,
    read_node,
    read_pool,
    service_facts,
    serving_endpoint_nodes,
)
from lbspeaker.kube.cache import DELETED, Key, key_of
from lbspeaker.links import LinkInfo
from lbspeaker.speaker import strictarp

Reading = Callable[[Mapping[str, Any]], Any]

# Resource names (the keys of `readings`, of generations and of `Protocol.inputs`).
SERVICES = "services"
ENDPOINTSLICES = "endpointslices"
NODES = "nodes"
POOLS = "ipaddresspools"
L2ADVERTISEMENTS = "l2advertisements"
BGPADVERTISEMENTS = "bgpadvertisements"
BGPPEERS = "bgppeers"
COMMUNITIES = "communities"
BFDPROFILES = "bfdprofiles"
KUBE_PROXY = "kube-proxy"
# Node-local inputs set with `FactsIndex.set`.
LIVE = "live"
LINKS = "links"
SYNCED = "synced"


def slice_reading(obj: Mapping[str, Any]) -> tuple[tuple[str, str], tuple[str | None, ...]] | None:
    """An EndpointSlice -> ((namespace, Service name), nodes of its serving endpoints)."""
    meta = obj.get("metadata") or {}
    svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not svc:
        return None
    return (str(meta.get("namespace") or ""), str(svc)), tuple(serving_endpoint_nodes([obj]))


def community_reading(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What `community_aliases` reads of a Community: its name and spec."""
    return {"metadata": {"name": (obj.get("metadata") or {}).get("name")}, "spec": obj.get("spec") or {}}


def readings(lb_class: str | None) -> dict[str, Reading]:
    """The reading of every resource the plans use (`lb_class`: the --lb-class flag)."""
    return {
        SERVICES: lambda o: service_facts(o) if class_matches(o, lb_class) else None,
        ENDPOINTSLICES: slice_reading,
        NODES: read_node,
        POOLS: read_pool,
        L2ADVERTISEMENTS: L2AdvertisementFacts.from_object,
        BGPADVERTISEMENTS: BGPAdvertisementFacts.from_object,
        BGPPEERS: PeerFacts.from_object,
        COMMUNITIES: community_reading,
        BFDPROFILES: ProfileFacts.from_object,
        KUBE_PROXY: strictarp.check,
    }


class ChangeLog:
    """The keys of joined Services that changed, in order (seq n = the n-th change), bounded.

    `since(start, end)` answers "which Services changed between two snapshots"; once the
    entries asked for were dropped (more than `limit` changes ago) it answers None, and the
    caller plans every Service, as it would without a log.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._mu = threading.Lock()
        self._keys: list[ServiceKey] = []
        self._base = 0  # seq of the change before self._keys[0]

    @property
    def seq(self) -> int:
        with self._mu:
            return self._base + len(self._keys)

    def add(self, key: ServiceKey) -> None:
        with self._mu:
            self._keys.append(key)
            if len(self._keys) > 2 * self.limit:
                del self._keys[: self.limit]
                self._base += self.limit

    def since(self, start: int, end: int) -> set[ServiceKey] | None:
        """Keys changed after change `start` up to change `end` (None: not known any more)."""
        with self._mu:
            if start < self._base or start > end or end > self._base + len(self._keys):
                return None
            return set(self._keys[start - self._base: end - self._base])


@dataclass(frozen=True)
class Snapshot:
    """Everything both plans read, from one moment of the caches and of this node.

    `generations` says which inputs moved since an earlier snapshot (see `changed`);
    `service_changes` which Services did.
    """

    node: str
    generations: Mapping[str, int]
    service_map: Mapping[ServiceKey, ServiceFacts] = field(default_factory=dict)
    pools: tuple[Pool, ...] = ()
    nodes: tuple[NodeFacts, ...] = ()
    node_addresses: tuple[str, ...] = ()  # this node's InternalIPs
    l2_advertisements: tuple[L2AdvertisementFacts, ...] = ()
    bgp_advertisements: tuple[BGPAdvertisementFacts, ...] = ()
    peers: tuple[PeerFacts, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    bfd_profiles: tuple[ProfileFacts, ...] = ()
    strictarp: strictarp.StrictArpState = field(default_factory=lambda: strictarp.check(None))
    live_speakers: frozenset[str] = frozenset()
    links: tuple[LinkInfo, ...] | None = None
    synced: frozenset[str] = frozenset()  # names of the caches that have listed
    service_seq: int = 0  # position in `service_log` when taken
    service_log: ChangeLog | None = None

    @cached_property
    def services(self) -> tuple[ServiceFacts, ...]:
        """Every Service (with its serving endpoints) that holds an IP, by key."""
        return tuple(self.service_map[k] for k in sorted(self.service_map))

    def service_changes(self, earlier: Snapshot | None) -> set[ServiceKey] | None:
        """Keys of the Services that changed since `earlier` (None: unknown, plan them all)."""
        if earlier is None or self.service_log is None or earlier.service_log is not self.service_log:
            return None
        return self.service_log.since(earlier.service_seq, self.service_seq)

    def changed(self, earlier: Snapshot | None, inputs: Iterable[str]) -> bool:
        """Did any of `inputs` move since `earlier` (None: the first snapshot)?"""
        if earlier is None:
            return True
        return any(self.generations.get(n, 0) != earlier.generations.get(n, 0) for n in inputs)


class FactsIndex:
    """The reading of every cached object, and a generation per input (see the module docstring).

    `handler(name)` is the `on_event` of the cache of resource `name`; `on_change(name)`
    is called (in the cache's thread) when an event changed a reading.
    """

    def __init__(self, node: str, readings: Mapping[str, Reading], on_change: Callable[[str], None]) -> None:
        self.node = node
        self._readings = dict(readings)
        self._on_change = on_change
        self._mu = threading.Lock()
        self._facts: dict[str, dict[Key, Any]] = {name: {} for name in self._readings}
        self._local: dict[str, Any] = {}
        # Services joined with their EndpointSlices, kept per Service (see the module docstring).
        self._slices: dict[tuple[str, str], dict[Key, tuple[str | None, ...]]] = {}
        self._joined: CowDict[ServiceKey, ServiceFacts] = CowDict()  # each snapshot: a frozen copy
        self.service_log = ChangeLog()
        self.generations: dict[str, int] = {}
        self.changed: dict[str, int] = {}  # events that changed a reading, per resource
        self.ignored: dict[str, int] = {}  # events that changed none (no plan can move)

    def handler(self, name: str) -> Callable[[str, dict[str, Any]], None]:
        reading = self._readings[name]

        def on_event(type_: str, obj: dict[str, Any]) -> None:
            self.update(name, type_, obj, reading)

        return on_event

    def update(self, name: str, type_: str, obj: Mapping[str, Any], reading: Reading | None = None) -> bool:
        """Record one event; True if it changed what a plan reads."""
        new = None if type_ == DELETED else (reading or self._readings[name])(obj)
        key = key_of(obj)
        with self._mu:
            facts = self._facts[name]
            old = facts.get(key)
            if new == old:
                self.ignored[name] = self.ignored.get(name, 0) + 1
                return False
            if new is None:
                facts.pop(key, None)
            else:
                facts[key] = new
            if name == SERVICES:
                for svc in (old, new):
                    if svc is not None:
                        self._rejoin((svc.namespace, svc.name))
            elif name == ENDPOINTSLICES:
                if old is not None and (new is None or new[0] != old[0]):
                    slices = self._slices.get(old[0], {})
                    slices.pop(key, None)
                    if not slices:
                        self._slices.pop(old[0], None)
                    self._rejoin(old[0])
                if new is not None:
                    self._slices.setdefault(new[0], {})[key] = new[1]
                    self._rejoin(new[0])
            self.generations[name] = self.generations.get(name, 0) + 1
            self.changed[name] = self.changed.get(name, 0) + 1
        self._on_change(name)
        return True

    def _rejoin(self, svc: tuple[str, str]) -> None:
        """Join one Service with its slices again (under the lock); log it if that changed."""
        skey = f"{svc[0]}/{svc[1]}"  # ServiceFacts.key
        facts: ServiceFacts | None = self._facts.get(SERVICES, {}).get(skey if svc[0] else svc[1])
        joined = None
        if facts is not None:
            slices = self._slices.get(svc)
            eps = tuple(n for k in sorted(slices) for n in slices[k]) if slices else ()
            joined = replace(facts, serving_endpoints=eps) if eps else facts
        if joined == self._joined.get(skey):
            return
        if joined is None:
            self._joined.pop(skey)
        else:
            self._joined[skey] = joined
        self.service_log.add(skey)

    def set(self, name: str, value: Any) -> bool:
        """Set a node-local input (live speakers, links, synced caches); True if it moved."""
        with self._mu:
            if name in self._local and self._local[name] == value:
                return False
            self._local[name] = value
            self.generations[name] = self.generations.get(name, 0) + 1
        return True

    def generation(self) -> int:
        """The sum of all generations: equal to an earlier value means nothing moved since."""
        with self._mu:
            return sum(self.generations.values())

    def snapshot(self) -> Snapshot:
        with self._mu:
            f = {name: list(items.values()) for name, items in self._facts.items()
                 if name not in (SERVICES, ENDPOINTSLICES)}  # joined incrementally
            local = dict(self._local)
            generations = dict(self.generations)
            joined = self._joined.freeze()
            seq = self.service_log.seq
        nodes: list[NodeFacts] = f[NODES]
        me = [n.internal_ips for n in nodes if n.name == self.node]
        kube_proxy = f[KUBE_PROXY]
        links = local.get(LINKS)
        return Snapshot(
            node=self.node,
            generations=generations,
            service_map=joined,
            service_seq=seq,
            service_log=self.service_log,
            pools=tuple(sorted(f[POOLS], key=lambda p: p.name)),
            nodes=tuple(sorted(nodes, key=lambda n: n.name)),
            node_addresses=me[0] if me else (),
            l2_advertisements=tuple(sorted(f[L2ADVERTISEMENTS], key=lambda a: a.name)),
            bgp_advertisements=tuple(sorted(f[BGPADVERTISEMENTS], key=lambda a: a.name)),
            peers=tuple(sorted(f[BGPPEERS], key=lambda p: p.name)),
            aliases=community_aliases(f[COMMUNITIES]),
            bfd_profiles=tuple(sorted(f[BFDPROFILES], key=lambda p: p.name)),
            strictarp=kube_proxy[0] if kube_proxy else strictarp.check(None),
            live_speakers=frozenset(local.get(LIVE) or ()),
            links=tuple(links) if links is not None else None,
            synced=frozenset(local.get(SYNCED) or ()),
        )
