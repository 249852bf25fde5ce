"""The EndpointSlice controller stand-in: keeps `discovery.k8s.io/v1` slices in step with Pods.

The computation is pure (`lab.agents.slices.desired_slices`); this module only diffs
the result against the slices it owns (label `endpointslice.kubernetes.io/managed-by:
lab`) and creates, replaces or deletes them. Slices of other managers are never
touched, so the lab also works next to a real controller-manager.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lab.agents.kubeapi import ApiError, Informer, KubeApi, Trigger
from lab.agents.slices import MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, canonical, desired_slices

log = logging.getLogger(__name__)


def _path(ns: str, name: str | None = None) -> str:
    base = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    return base if name is None else f"{base}/{name}"


class EndpointSliceController:
    """Level-triggered: every change to Services, Pods, Nodes or slices re-diffs everything,
    but recomputes only what can have changed: a Service's desired slices are kept until the
    Service object (by identity: the informer replaces an object's dict per event), the Pods
    or the zones change, and each slice's comparison key until the slice object changes. At
    10,000 Services a whole recomputation per event cost about as much as the speakers."""

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
        desired = self._desired_slices()
        existing: dict[tuple[str, str], dict[str, Any]] = {}
        for s in self.slices.items():
            md = s.get("metadata") or {}
            if (md.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
                existing[(md.get("namespace") or "", md.get("name") or "")] = s
        for key in [k for k in self._canonical if k not in existing]:
            del self._canonical[key]
        for key, (want, want_key) in desired.items():
            have = existing.get(key)
            try:
                if have is None:
                    self.api.create(_path(key[0]), want)
                    log.info("created endpointslice %s/%s (%d endpoints)", *key, len(want["endpoints"]))
                elif self._canonical_of(key, have) != want_key:
                    body = dict(want)
                    body["metadata"] = dict(
                        want["metadata"], resourceVersion=have["metadata"].get("resourceVersion")
                    )
                    self.api.replace(_path(*key), body)
                    log.info("updated endpointslice %s/%s (%d endpoints)", *key, len(want["endpoints"]))
            except ApiError as e:
                if e.status in (409, 404):  # stale cache: the watch event that follows retriggers us
                    self.trigger()
                else:
                    log.warning("endpointslice %s/%s: %s", *key, e)
        for key, have in existing.items():
            if key in desired:
                continue
            svc_name = (have["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            try:
                self.api.delete(_path(*key))
                log.info("deleted endpointslice %s/%s (service %s)", *key, svc_name)
            except ApiError as e:
                if e.status != 404:
                    log.warning("deleting endpointslice %s/%s: %s", *key, e)
