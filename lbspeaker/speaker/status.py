"""The status objects a speaker owns for its node: ServiceL2Status and ServiceBGPStatus.

One object per (Service, announcing node, protocol), in the speaker's namespace
(`--namespace`), named `<l2|bgp>-<first 16 hex of sha256(namespace/name@node)>`
(deterministic, so a restarted speaker finds its own objects and two nodes never
write the same one), labelled with the Service's namespace and name and the node.
The announcing node creates it and deletes it when it stops announcing the Service.

`OwnedStatusWriter` reconciles both kinds in one thread: desired (from the plans)
vs. actual (a label-selected cache of our own objects per kind, in the same
namespace the objects are written to). Objects of ours that no plan wants, left
by an earlier run included, are deleted. API errors are retried every `retry_s`;
nothing here ever blocks the announcing path (fail-static).

Why passes are mostly partial: with thousands of Services a plan arrives several times a
second, and rebuilding and comparing every object each time cost more than the writes.
`set_desired` rebuilds only the objects whose fields changed and marks their names; a pass
after a plan looks only at those names. So does a pass after an event of our caches
(`observed`): an object of ours deleted or edited by someone else is put back at once. A full
pass (every object against the cache) runs first, after a failure, and every `resync_s`
(client-go's resync: belt and braces, since the events already cover every change). At
10,000 Services the full pass every 2 s that stood in for the events was a tenth of a
speaker's CPU.

What we just wrote is trusted over the cache until the cache has caught up: the echo of our
own write (same resourceVersion) ends the trust, an older echo is ignored, anything newer is
someone else's change and is looked at.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lbspeaker.api.constants import GROUP
from lbspeaker.kube.cache import DELETED, rv_of, rv_went_back
from lbspeaker.kube.resources import SERVICEBGPSTATUSES, SERVICEL2STATUSES, Resource
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.speaker.writer import FailureCount, run_until_stopped

log = logging.getLogger(__name__)

LABEL_NODE = f"{GROUP}/node"
LABEL_SERVICE_NAME = f"{GROUP}/service-name"
LABEL_SERVICE_NAMESPACE = f"{GROUP}/service-namespace"


def label_value(text: str) -> str:
    """Label values are at most 63 characters; longer names are cut (the status carries them whole)."""
    return text[:63].rstrip("-_.")


def node_selector(node: str) -> str:
    """The label selector of the caches that hold this node's own status objects."""
    return f"{LABEL_NODE}={label_value(node)}"


@dataclass(frozen=True)
class OwnedKind:
    """One kind of per-(Service, node) status object: its resource and name prefix."""

    resource: Resource
    prefix: str

    def name(self, service_key: str, node: str) -> str:
        """Deterministic object name for (Service "ns/name", node)."""
        return f"{self.prefix}-" + hashlib.sha256(f"{service_key}@{node}".encode()).hexdigest()[:16]

    def object(
        self, service_key: str, node: str, namespace: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The object this node keeps for a Service it announces (pure); `fields` are the
        protocol's own status fields (interfaces, peers)."""
        ns, _, name = service_key.partition("/")
        return {
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": {
                "name": self.name(service_key, node),
                "namespace": namespace,
                "labels": {
                    LABEL_NODE: label_value(node),
                    LABEL_SERVICE_NAME: label_value(name),
                    LABEL_SERVICE_NAMESPACE: label_value(ns),
                },
            },
            "status": {"node": node, "serviceName": name, "serviceNamespace": ns,
                       **copy.deepcopy(dict(fields))},  # the fields may be shared (l2_fields)
        }


L2_STATUS = OwnedKind(SERVICEL2STATUSES, "l2")
BGP_STATUS = OwnedKind(SERVICEBGPSTATUSES, "bgp")

# What `OwnedStatusWriter` calls, for tools/rbac.py (the resource comes from the kind at run time).
RBAC_DECLARED = (
    (SERVICEL2STATUSES, "get"), (SERVICEL2STATUSES, "create"), (SERVICEL2STATUSES, "delete"),
    (SERVICEL2STATUSES, "patch", "status"),
    (SERVICEBGPSTATUSES, "get"), (SERVICEBGPSTATUSES, "create"), (SERVICEBGPSTATUSES, "delete"),
    (SERVICEBGPSTATUSES, "patch", "status"),
)


def l2_fields(interfaces: Sequence[str]) -> Mapping[str, Any]:
    """ServiceL2Status fields: the interfaces this node answers on (shared, read-only)."""
    return _l2_fields(tuple(sorted(interfaces)))


def bgp_fields(peers: Sequence[str]) -> Mapping[str, Any]:
    """ServiceBGPStatus fields: the peers this node announces the Service to (shared, read-only)."""
    return _bgp_fields(tuple(sorted(peers)))


# Every plan asks for the fields of every Service it announces, and almost all Services share a
# handful of interface and peer sets: one object per set, not one per Service and plan (building
# them was a quarter of a speaker's CPU at 2,700 Services, bench/scale.py). Read-only by contract:
# `OwnedKind.object` copies them into the object it builds.
@functools.lru_cache(maxsize=4096)
def _l2_fields(interfaces: tuple[str, ...]) -> Mapping[str, Any]:
    return {"interfaces": [{"name": i} for i in interfaces]}


@functools.lru_cache(maxsize=4096)
def _bgp_fields(peers: tuple[str, ...]) -> Mapping[str, Any]:
    return {"peers": list(peers)}


def diff_status(
    desired: Mapping[str, dict[str, Any]], actual: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(create, update-status, delete names) to go from `actual` to `desired` (both keyed by name)."""
    create, update, delete = [], [], []
    for name, obj in sorted(desired.items()):
        cur = actual.get(name)
        if cur is None:
            create.append(obj)
        elif (cur.get("status") or {}) != obj["status"]:
            update.append(obj)
    for name in sorted(actual):
        if name not in desired:
            delete.append(name)
    return create, update, delete


class ObjectSource(Protocol):
    """What the writer needs from the cache of its own objects (a `WatchCache`)."""

    @property
    def synced(self) -> bool: ...
    def items(self) -> list[dict[str, Any]]: ...
    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None: ...


class OwnedStatusWriter(FailureCount):
    """Keeps this node's status objects of every kind equal to `set_desired(...)`, in a thread.

    `actual` maps each kind to the cache of this node's objects of that kind, which
    must watch `namespace`. A kind is reconciled once its cache has listed (before
    that, stale objects cannot be told from missing ones).
    """

    def __init__(
        self,
        rest: Rest,
        namespace: str,
        node: str,
        actual: Mapping[OwnedKind, ObjectSource],
        retry_s: float = 2.0,
        resync_s: float = 60.0,
    ) -> None:
        self.rest = rest
        self.namespace = namespace
        self.node = node
        self._actual = dict(actual)
        self.retry_s = retry_s
        self.resync_s = resync_s
        self._desired: dict[OwnedKind, dict[str, dict[str, Any]]] = {k: {} for k in self._actual}
        self._fields: dict[OwnedKind, dict[str, Mapping[str, Any]]] = {k: {} for k in self._actual}
        self._dirty: dict[OwnedKind, set[str]] = {k: set() for k in self._actual}  # names to look at
        self._full_due = True  # next pass compares every object
        self._full_at = 0.0
        self._mu = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._closed = False  # after delete_all: a late plan must not re-create anything
        self._thread: threading.Thread | None = None
        # What we last wrote, per kind (the cache may lag our own writes); None = deleted.
        self._written: dict[OwnedKind, dict[str, dict[str, Any] | None]] = {k: {} for k in self._actual}
        self.errors = 0
        self.last_error: str | None = None
        self.in_sync = False

    def set_desired(self, kind: OwnedKind, services: Mapping[str, Mapping[str, Any]]) -> None:
        """{service key: protocol fields} of the Services this node announces now, for `kind`."""
        before = self._fields[kind]
        if services == before:
            return
        changes: dict[str, Mapping[str, Any] | None] = {
            k: fields for k, fields in services.items() if before.get(k) != fields}
        changes.update((k, None) for k in before if k not in services)
        self.update_desired(kind, changes)

    def update_desired(self, kind: OwnedKind, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Only what changed: {service key: its fields now, or None when no longer announced}.

        Costs what changed, not what is announced (Layer2 applies each plan this way: with
        10,000 Services the full mapping per plan was most of a speaker's CPU)."""
        fields_now = self._fields[kind]
        changes = {k: f for k, f in changes.items() if fields_now.get(k) != f}
        if not changes:
            return
        with self._mu:
            if self._closed:
                return
            desired = self._desired[kind]  # in place, under the lock the passes read it with
            for key, fields in changes.items():
                name = kind.name(key, self.node)
                self._dirty[kind].add(name)
                if fields is None:
                    desired.pop(name, None)
                    fields_now.pop(key, None)
                else:
                    desired[name] = kind.object(key, self.node, self.namespace, fields)
                    fields_now[key] = fields
        self._kick.set()

    def observed(self, kind: OwnedKind, type_: str, obj: Mapping[str, Any]) -> None:
        """An event of the cache of our objects of `kind` (its `on_event`): look at that name again,
        unless it is the echo of what we wrote (see the module docstring)."""
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            return
        with self._mu:
            written = self._written[kind]
            if name in written:
                ours = written[name]
                if ours is None:  # we deleted it
                    written.pop(name)
                    if type_ == DELETED:
                        return
                elif type_ != DELETED and rv_of(obj) == rv_of(ours):
                    written.pop(name)  # the cache has caught up with our write
                    return
                elif rv_went_back(rv_of(ours), rv_of(obj)):
                    return  # the echo of an earlier write of ours
                else:
                    written.pop(name)
            self._dirty[kind].add(name)
        self._kick.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="owned-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        run_until_stopped(self._stop, self._kick, self.retry_s, self._pass, self._pass_failed)

    def _pass(self) -> None:
        self.reconcile(self._full_due or time.monotonic() - self._full_at >= self.resync_s)

    def _pass_failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = str(exc)
        self._full_due = True
        log.exception("status reconcile failed")

    def reconcile(self, full: bool = True) -> bool:
        """One pass over every kind (`full`: every object, else the names changed since the last
        pass); True if everything is in sync afterwards."""
        if full:
            self._full_at = time.monotonic()
        ok = True
        for kind in self._actual:
            ok &= self._reconcile(kind) if full else self._reconcile_changed(kind)
        self._full_due = not ok  # a failure is retried by a full pass
        self.in_sync = ok  # if not, the loop retries after retry_s
        return ok

    def delete_all(self) -> None:
        """Best effort at shutdown: remove every status object of ours, of every kind."""
        with self._mu:
            self._closed = True
            self._desired = {k: {} for k in self._actual}
        self.reconcile()

    # --- one kind ---------------------------------------------------------------------------------------

    def _reconcile(self, kind: OwnedKind) -> bool:
        source = self._actual[kind]
        if not source.synced:
            return False
        with self._mu:
            desired = dict(self._desired[kind])
            self._dirty[kind] = set()
            actual = self._actual_map(kind, source)
            self._written[kind] = {}
        create, update, delete = diff_status(desired, actual)
        ok = True
        for obj in create:
            ok &= self._create(kind, obj)
        for obj in update:
            ok &= self._update(kind, obj)
        for name in delete:
            ok &= self._delete(kind, name)
        return ok

    def _reconcile_changed(self, kind: OwnedKind) -> bool:
        """Only the names `update_desired` or `observed` marked since the last pass (see the module
        docstring)."""
        source = self._actual[kind]
        if not source.synced:
            return False
        with self._mu:
            names, self._dirty[kind] = self._dirty[kind], set()
            desired = self._desired[kind]
            want = {name: desired.get(name) for name in names}
        ok = True
        for name, obj in sorted(want.items()):
            with self._mu:
                trusted = name in self._written[kind]
                cur = self._written[kind].get(name)
            if not trusted:
                cur = source.get(self.namespace, name)
                if cur is not None and ((cur.get("metadata") or {}).get("labels") or {}).get(
                        LABEL_NODE) != label_value(self.node):
                    cur = None
            if obj is None:
                if cur is not None:
                    ok &= self._delete(kind, name)
            elif cur is None:
                ok &= self._create(kind, obj)
            elif (cur.get("status") or {}) != obj["status"]:
                ok &= self._update(kind, obj)
        return ok

    def _actual_map(self, kind: OwnedKind, source: ObjectSource) -> dict[str, dict[str, Any]]:
        actual = {}
        for obj in source.items():
            meta = obj.get("metadata") or {}
            if (meta.get("labels") or {}).get(LABEL_NODE) == label_value(self.node):
                actual[str(meta.get("name"))] = obj
        for name, written in self._written[kind].items():  # trust what we just wrote over the cache
            if written is None:
                actual.pop(name, None)
            else:
                actual[name] = written
        return actual

    def _create(self, kind: OwnedKind, obj: dict[str, Any]) -> bool:
        name, res, ns = obj["metadata"]["name"], kind.resource, self.namespace
        try:
            try:
                created = self.rest.create(res, obj, ns)
            except ApiError as exc:
                if not exc.conflict and not exc.already_exists:
                    raise
                created = self.rest.get(res, name, ns)
            if (created.get("status") or {}) != obj["status"]:
                created = self.rest.patch_status(res, name, {"status": obj["status"]}, ns)
            self._wrote(kind, name, created)
            return True
        except (ApiError, OSError) as exc:
            return self._fail(f"create {res.kind} {ns}/{name}", exc)

    def _update(self, kind: OwnedKind, obj: dict[str, Any]) -> bool:
        name, res, ns = obj["metadata"]["name"], kind.resource, self.namespace
        try:
            self._wrote(kind, name, self.rest.patch_status(res, name, {"status": obj["status"]}, ns))
            return True
        except ApiError as exc:
            if exc.not_found:
                return self._create(kind, obj)
            return self._fail(f"update {res.kind} {ns}/{name}", exc)
        except OSError as exc:
            return self._fail(f"update {res.kind} {ns}/{name}", exc)

    def _delete(self, kind: OwnedKind, name: str) -> bool:
        res, ns = kind.resource, self.namespace
        try:
            self.rest.delete(res, name, ns)
        except ApiError as exc:
            if not exc.not_found:
                return self._fail(f"delete {res.kind} {ns}/{name}", exc)
        except OSError as exc:
            return self._fail(f"delete {res.kind} {ns}/{name}", exc)
        self._wrote(kind, name, None)
        return True

    def _wrote(self, kind: OwnedKind, name: str, obj: dict[str, Any] | None) -> None:
        """Trust `obj` (None: deleted) over the cache until `observed` sees the cache catch up,
        unless it already has (the echo can come before the answer to the write)."""
        with self._mu:
            cached = self._actual[kind].get(self.namespace, name)
            caught_up = cached is None if obj is None else (
                cached is not None and not rv_went_back(rv_of(obj), rv_of(cached)))
            if caught_up:
                self._written[kind].pop(name, None)
            else:
                self._written[kind][name] = obj


def assigned_message(node: str, protocol: str) -> str:
    """MetalLB's nodeAssigned Event message ("layer2" or "bgp")."""
    return f'announcing from node "{node}" with protocol "{protocol}"'
