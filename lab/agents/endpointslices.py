"""The EndpointSlice controller stand-in: keeps `discovery.k8s.io/v1` slices in step with Pods.

The computation is pure (`lab.agents.slices.desired_slices`); this module only diffs
the result against the slices it owns (label `endpointslice.kubernetes.io/managed-by:
lab`) and creates, replaces or deletes them. Slices of other managers are never
touched, so the lab also works next to a real controller-manager.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from lab.agents.kubeapi import ApiError, Informer, KubeApi, Trigger
from lab.agents.slices import MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, canonical, desired_slices

log = logging.getLogger(__name__)


SliceKey = tuple[str, str]
DELETED = -1  # the generation a tracked deletion waits for: the slice's absence
CONCURRENT_WRITES = 5  # kube-controller-manager's --concurrent-service-endpoint-syncs default
TRACK_SECONDS = 30.0  # a write the informer never showed (its events were merged away) is retried


Written = tuple[SliceKey, int, bool]  # (slice, generation written or DELETED or 0, refused as stale)


def _path(ns: str, name: str | None = None) -> str:
    base = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    return base if name is None else f"{base}/{name}"


def _generation(obj: dict[str, Any] | None) -> int:
    return int(((obj or {}).get("metadata") or {}).get("generation") or 0)


class WriteTracker:
    """The slices this controller wrote and the informer has not shown yet, as
    kube-controller-manager's EndpointSliceTracker: a slice whose cached copy is missing or
    older than the generation written is not written again (at 50 creates/s the informer
    lags the writes, and every reconcile in that gap re-POSTed a slice just created and got
    409). An entry ends when the informer catches up, or after TRACK_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._written: dict[SliceKey, tuple[int, float]] = {}

    def wrote(self, key: SliceKey, generation: int) -> None:
        """`generation` is the written object's, or DELETED; 0 (no generation) tracks nothing."""
        if generation:
            self._written[key] = (generation, self.clock())
        else:
            self._written.pop(key, None)

    def stale(self, key: SliceKey, cached: dict[str, Any] | None) -> bool:
        """Whether the informer's copy (None: absent) predates what was written to `key`."""
        entry = self._written.get(key)
        if entry is None:
            return False
        generation, at = entry
        if generation == DELETED:
            behind = cached is not None
        else:
            behind = cached is None or _generation(cached) < generation
        if behind and self.clock() - at < TRACK_SECONDS:
            return True
        del self._written[key]
        return False

    def forget_missing(self, *present: Container[SliceKey]) -> None:
        """Drops entries for keys in none of `present` (desired, cached): nothing is left to wait
        for. Looks the few tracked keys up instead of building a set of every slice per reconcile."""
        for key in [k for k in self._written if not any(k in keys for keys in present)]:
            del self._written[key]

    def __len__(self) -> int:
        return len(self._written)


class EndpointSliceController:
    """Level-triggered: every change to Services, Pods, Nodes or slices re-diffs everything,
    but recomputes only what can have changed: a Service's desired slices are kept until the
    Service object (by identity: the informer replaces an object's dict per event), the Pods
    or the zones change, and each slice's comparison key until the slice object changes. At
    10,000 Services a whole recomputation per event cost about as much as the speakers. Writes
    go out CONCURRENT_WRITES at a time, and none is repeated before the informer shows it."""

    def __init__(
        self,
        api: KubeApi,
        services: Informer,
        pods: Informer,
        slices: Informer,
        nodes: Informer | None = None,
    ) -> None:
        self.api = api
        self.services = services
        self.pods = pods
        self.slices = slices
        self.nodes = nodes
        self._desired: dict[tuple[str, str], tuple[dict[str, Any], list[tuple[dict[str, Any], str]]]] = {}
        self._inputs: tuple[list[dict[str, Any]], dict[str, str]] = ([], {})  # (pods, zones) of _desired
        self._canonical: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}  # slice -> (obj, key)
        self.tracker = WriteTracker()
        self.conflicts = 0  # writes the API server refused as stale (409/404): each one a wasted round trip
        self._pool = ThreadPoolExecutor(CONCURRENT_WRITES, thread_name_prefix="endpointslice write")
        self.trigger = Trigger()
        for inf in (services, pods, slices, nodes):
            if inf is not None:
                inf.add_listener(self.trigger)

    def run(self, stop: threading.Event) -> None:
        for inf in (self.services, self.pods, self.slices):
            inf.synced.wait()
        while not stop.is_set():
            try:
                self.reconcile()
            except Exception:
                log.exception("endpointslice reconcile failed")
            self.trigger.wait(10.0)

    def _zones(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for n in self.nodes.items() if self.nodes else []:
            md = n.get("metadata") or {}
            zone = (md.get("labels") or {}).get("topology.kubernetes.io/zone")
            if zone:
                out[md.get("name") or ""] = zone
        return out

    def _desired_slices(self) -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
        """Every desired slice with its comparison key, recomputed only for changed Services."""
        pods, zones = self.pods.items(), self._zones()
        old_pods, old_zones = self._inputs
        if zones != old_zones or len(pods) != len(old_pods) or any(
            a is not b for a, b in zip(pods, old_pods, strict=True)
        ):
            self._desired.clear()  # every Service may select differently now
            self._inputs = (pods, zones)
        desired: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        seen: set[tuple[str, str]] = set()
        for svc in self.services.items():
            md = svc.get("metadata") or {}
            skey = (md.get("namespace") or "default", md.get("name") or "")
            seen.add(skey)
            cached = self._desired.get(skey)
            if cached is None or cached[0] is not svc:
                cached = (svc, [(sl, canonical(sl)) for sl in desired_slices(svc, pods, zones)])
                self._desired[skey] = cached
            for sl, key in cached[1]:
                desired[(sl["metadata"]["namespace"], sl["metadata"]["name"])] = (sl, key)
        for skey in [k for k in self._desired if k not in seen]:
            del self._desired[skey]
        return desired

    def _canonical_of(self, key: tuple[str, str], have: dict[str, Any]) -> str:
        cached = self._canonical.get(key)
        if cached is None or cached[0] is not have:
            cached = self._canonical[key] = (have, canonical(have))
        return cached[1]

    def reconcile(self) -> None:
        """Diffs the desired slices against the cached ones, skipping slices whose cached copy
        predates our own last write, and sends the writes CONCURRENT_WRITES at a time: one at a
        time, each waiting for the API server's answer, fell behind 50 Service creates/s."""
        desired = self._desired_slices()
        existing: dict[SliceKey, dict[str, Any]] = {}
        for s in self.slices.items():
            md = s.get("metadata") or {}
            if (md.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
                existing[(md.get("namespace") or "", md.get("name") or "")] = s
        for key in [k for k in self._canonical if k not in existing]:
            del self._canonical[key]
        self.tracker.forget_missing(desired, existing)
        writes: list[Callable[[], Written]] = []
        for key, (want, want_key) in desired.items():
            have = existing.get(key)
            if self.tracker.stale(key, have):
                continue
            if have is None:
                writes.append(partial(self._create, key, want))
            elif self._canonical_of(key, have) != want_key:
                writes.append(partial(self._replace, key, want, have))
        for key, have in existing.items():
            if key not in desired and not self.tracker.stale(key, have):
                writes.append(partial(self._delete, key, have))
        for key, generation, refused in self._pool.map(lambda write: write(), writes):
            self.tracker.wrote(key, generation)
            if refused:
                self.conflicts += 1
                log.debug("endpointslice %s/%s: the cache was behind (%d so far)", *key, self.conflicts)

    def _create(self, key: SliceKey, want: dict[str, Any]) -> Written:
        try:
            made = self.api.create(_path(key[0]), want)
        except ApiError as e:
            if e.status != 409:
                log.warning("creating endpointslice %s/%s: %s", *key, e)
                return key, 0, False
            return key, 1, True  # it exists: wait for the informer to show it
        log.info("created endpointslice %s/%s (%d endpoints)", *key, len(want["endpoints"]))
        return key, _generation(made), False

    def _replace(self, key: SliceKey, want: dict[str, Any], have: dict[str, Any]) -> Written:
        body = dict(want)
        body["metadata"] = dict(want["metadata"], resourceVersion=have["metadata"].get("resourceVersion"))
        try:
            made = self.api.replace(_path(*key), body)
        except ApiError as e:
            if e.status not in (409, 404):
                log.warning("updating endpointslice %s/%s: %s", *key, e)
                return key, 0, False
            # Gone: wait for the informer to drop it. Newer (409): its watch event is on the way,
            # but a metadata change does not bump the generation, so there is none to wait for.
            return key, DELETED if e.status == 404 else 0, True
        log.info("updated endpointslice %s/%s (%d endpoints)", *key, len(want["endpoints"]))
        return key, _generation(made), False

    def _delete(self, key: SliceKey, have: dict[str, Any]) -> Written:
        svc_name = (have["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
        try:
            self.api.delete(_path(*key))
        except ApiError as e:
            if e.status != 404:
                log.warning("deleting endpointslice %s/%s: %s", *key, e)
                return key, 0, False
            return key, DELETED, True
        log.info("deleted endpointslice %s/%s (service %s)", *key, svc_name)
        return key, DELETED, False
