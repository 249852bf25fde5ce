"""In-memory object store of the lab API server: one global resourceVersion, history, watchers.

Everything here runs on the server's event loop only (no locks). Stored objects are
never mutated after they are stored: every write stores a fresh dict, so history
entries and watcher queues can share them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.apiserver import schema as crschema
from lab.apiserver.errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from lab.apiserver.registry import CRD_KEY, Registry, ResourceType
from lab.apiserver.selectors import FieldRequirement, Requirement, fields_match, labels_match
from lab.apiserver.services import ServiceAllocator

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
JsonObj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)
ResKey = tuple[str, str]  # (group, plural)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# metadata fields the server owns; clients cannot change them on update
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


def now_rfc3339(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


@dataclass
class Event:
    rv: int
    key: ResKey
    type: str  # ADDED / MODIFIED / DELETED
    obj: JsonObj
    old: JsonObj | None


class WatchQueue:
    """A watcher's pending events, used like an `asyncio.Queue` (put_nowait/get_nowait/empty).

    `wait` parks on a plain future and keeps one timer for as long as its deadline stays
    the same, instead of `asyncio.wait_for(queue.get())`, which costs a task and a timer
    per event: with every watcher of a busy resource woken for each write, that was most
    of the server's time.
    """

    def __init__(self) -> None:
        self._items: deque[tuple[str, JsonObj] | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def put_nowait(self, item: tuple[str, JsonObj] | None) -> None:
        self._items.append(item)
        self._wake()

    def get_nowait(self) -> tuple[str, JsonObj] | None:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def wait(self, until: float | None) -> bool:
        """Until something is queued or the loop's clock reaches `until`; whether something is queued."""
        loop = asyncio.get_running_loop()
        while not self._items:
            if until is not None:
                if loop.time() >= until:
                    return False
                if self._timer is None or self._timer.when() != until:
                    self.close()
                    self._timer = loop.call_at(until, self._on_timer)
            fut: asyncio.Future[None] = loop.create_future()
            self._waiter = fut
            try:
                await fut
            finally:
                self._waiter = None
        return True

    def close(self) -> None:
        """Drop the timer (the stream ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(eq=False)
class Watcher:
    """One open watch stream; the HTTP handler drains `queue`."""

    rt: ResourceType
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: WatchQueue = field(default_factory=WatchQueue)
    cut: bool = False
    # kube's cache watcher sends only events (and bookmarks) newer than the resourceVersion it was
    # opened at: a watch from a resourceVersion the store has not reached yet stays silent until then
    min_rv: int = 0

    def matches(self, obj: JsonObj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def offer(self, ev: Event) -> None:
        """Queue `ev` as this watcher sees it (objects moving in/out of the selector become ADDED/DELETED)."""
        if ev.rv <= self.min_rv:
            return
        now, before = self.matches(ev.obj), self.matches(ev.old) if ev.type == "MODIFIED" else False
        if ev.type == "MODIFIED":
            if now and before:
                self.queue.put_nowait(("MODIFIED", ev.obj))
            elif now:
                self.queue.put_nowait(("ADDED", ev.obj))
            elif before:
                self.queue.put_nowait(("DELETED", ev.obj))
        elif now:
            self.queue.put_nowait((ev.type, ev.obj))


def _strip_volatile(obj: JsonObj | None) -> JsonObj:
    if obj is None:
        return {}
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _spec_part(obj: JsonObj | None) -> JsonObj:
    return {k: v for k, v in (obj or {}).items() if k not in ("metadata", "status", "apiVersion", "kind")}


def validate_service_status(svc: JsonObj) -> list[tuple[str, str]]:
    """kube's checks on status.loadBalancer.ingress: a valid ip or a hostname; ipMode needs ip."""
    errs: list[tuple[str, str]] = []
    ingress = (((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    if not isinstance(ingress, list):
        return [("status.loadBalancer.ingress", "Invalid value: must be a list")]
    for i, ing in enumerate(ingress):
        where = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(ing, dict):
            errs.append((where, "Invalid value: must be an object"))
            continue
        ip = ing.get("ip")
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                errs.append((f"{where}.ip", f'Invalid value: "{ip}": must be a valid IP address'))
        elif not ing.get("hostname"):
            errs.append((f"{where}.ip", "Required value: must specify ip or hostname"))
        mode = ing.get("ipMode")
        if mode is not None:
            if mode not in ("VIP", "Proxy"):
                errs.append(
                    (f"{where}.ipMode", f'Unsupported value: "{mode}": supported values: "Proxy", "VIP"')
                )
            elif not ip:
                errs.append((f"{where}.ipMode", "Forbidden: may not be specified when `ip` is not"))
    return errs


class Store:
    """Objects by resource, the event history and the open watches."""

    def __init__(self, registry: Registry, history_size: int = 10000) -> None:
        self.registry = registry
        self.rv = 1
        self.history_size = history_size
        # Per-resource event windows, like kube-apiserver's per-type watch cache: a quiet resource's
        # resourceVersion stays watchable however much other resources churn.
        self.history: dict[ResKey, deque[Event]] = {}
        self.compacted: dict[ResKey, int] = {}  # watches from an RV below this get 410 Gone
        self.expired_below = 1  # expire_history(): floor for every resource
        self.objects: dict[ResKey, dict[ObjKey, JsonObj]] = {}
        self.watchers: dict[ResKey, set[Watcher]] = {}
        self.services = ServiceAllocator()
        # fieldValidation=Strict of the request being served (set by the HTTP layer right before a write;
        # safe because writes are synchronous on the loop): unknown fields are a 400, not pruned
        self.strict_fields = False
        for ns in SYSTEM_NAMESPACES:
            rt = registry.get("", "v1", "namespaces")
            assert rt is not None
            self.create(rt, None, {"metadata": {"name": ns}})

    # -- helpers ------------------------------------------------------------------------------------
    def _bucket(self, rt: ResourceType) -> dict[ObjKey, JsonObj]:
        return self.objects.setdefault(rt.key, {})

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, rt: ResourceType, type_: str, obj: JsonObj, old: JsonObj | None) -> None:
        ev = Event(int(obj["metadata"]["resourceVersion"]), rt.key, type_, obj, old)
        window = self.history.setdefault(rt.key, deque())
        window.append(ev)
        while len(window) > self.history_size:
            gone = window.popleft()
            self.compacted[rt.key] = gone.rv
        for w in list(self.watchers.get(rt.key, ())):
            w.offer(ev)

    def expire_history(self) -> None:
        """Compaction: every resourceVersion handed out so far becomes too old to watch from."""
        self._next_rv()
        self.history.clear()
        self.compacted.clear()
        self.expired_below = self.rv

    def oldest_watchable(self, key: ResKey) -> int:
        """Smallest resourceVersion a watch of `key` may start from."""
        return max(self.expired_below, self.compacted.get(key, 0))

    def export_state(self) -> JsonObj:
        """Every stored object and the resourceVersion counter (what etcd keeps across a restart)."""
        return {
            "rv": self.rv,
            "objects": [[list(key), list(bucket.values())] for key, bucket in self.objects.items()],
        }

    def import_state(self, state: JsonObj) -> None:
        """Load `export_state()` into this fresh store, as a restarted kube-apiserver finds etcd.

        Its new watch cache starts at the current resourceVersion: watches from older ones get
        410 Expired, so clients re-list.
        """
        buckets = {tuple(key): objs for key, objs in state["objects"]}
        for crd in buckets.get(CRD_KEY, []):
            self.registry.set_crd(crd)
        for key, objs in buckets.items():
            bucket = self.objects.setdefault((key[0], key[1]), {})
            bucket.clear()
            for obj in objs:
                meta = obj["metadata"]
                bucket[(meta.get("namespace") or "", meta["name"])] = obj
                if key == ("", "services"):
                    self.services.restore(obj)
        self.rv = max(self.rv, int(state["rv"]))
        self.history.clear()
        self.compacted.clear()
        self.expired_below = self.rv

    def cut_watches(self) -> int:
        n = 0
        for ws in self.watchers.values():
            for w in ws:
                w.cut = True
                w.queue.put_nowait(None)
                n += 1
        return n

    def close_watches(self) -> None:
        for ws in self.watchers.values():
            for w in ws:
                w.queue.put_nowait(None)

    @staticmethod
    def view(rt: ResourceType, obj: JsonObj) -> JsonObj:
        """The object as served at `rt`'s version (kind/apiVersion set)."""
        if obj.get("apiVersion") == rt.api_version and obj.get("kind") == rt.kind:
            return obj
        return {**obj, "apiVersion": rt.api_version, "kind": rt.kind}

    def _require_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if rt.namespaced:
            if not namespace:
                raise bad_request("the namespace of the object must be set for a namespaced resource")
            if ("", namespace) not in self.objects.get(("", "namespaces"), {}):
                raise not_found("namespaces", "", namespace)

    @staticmethod
    def _okey(rt: ResourceType, namespace: str | None, name: str) -> ObjKey:
        return ((namespace or "") if rt.namespaced else "", name)

    # -- reads --------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> JsonObj:
        obj = self._bucket(rt).get(self._okey(rt, namespace, name))
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return self.view(rt, obj)

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        limit: int = 0,
        cont: str | None = None,
    ) -> JsonObj:
        bucket = self._bucket(rt)
        list_rv = self.rv
        start: ObjKey | None = None
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()).decode())
                start = (token["ns"], token["name"])
                list_rv = int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid") from None
            if list_rv < self.oldest_watchable(rt.key):
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent "
                    "list result. You can start a new list without the continue parameter.",
                )
        keys: Iterable[ObjKey] = sorted(bucket)
        items: list[JsonObj] = []
        next_token = None
        for k in keys:
            if start is not None and k <= start:
                continue
            if namespace is not None and rt.namespaced and k[0] != namespace:
                continue
            obj = bucket[k]
            if not (labels_match(labels, obj) and fields_match(fields, obj)):
                continue
            if limit and len(items) >= limit:
                last = items[-1]["metadata"]
                next_token = base64.urlsafe_b64encode(
                    json.dumps(
                        {
                            "rv": list_rv,
                            "ns": last.get("namespace", "") if rt.namespaced else "",
                            "name": last["name"],
                        }
                    ).encode()
                ).decode()
                break
            items.append(self.view(rt, obj))
        meta: JsonObj = {"resourceVersion": str(list_rv)}
        if next_token:
            meta["continue"] = next_token
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    # -- watch --------------------------------------------------------------------------------------
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        resource_version: str | None,
        send_initial: bool | None = None,
    ) -> Watcher:
        """Register a watcher and queue its initial/replayed events (atomically: we are on the loop)."""
        w = Watcher(rt, namespace, labels, fields)
        rv = resource_version or ""
        if send_initial or rv in ("", "0"):
            for k in sorted(self._bucket(rt)):
                obj = self._bucket(rt)[k]
                if w.matches(obj):
                    w.queue.put_nowait(("ADDED", obj))
        else:
            try:
                since = int(rv)
            except ValueError:
                raise bad_request(f'invalid resource version "{rv}"') from None
            oldest = self.oldest_watchable(rt.key)
            if since < oldest:
                raise ApiError(410, "Expired", f"too old resource version: {since} ({oldest})")
            w.min_rv = since
            for ev in self.history.get(rt.key, ()):
                if ev.rv > since:
                    w.offer(ev)
        self.watchers.setdefault(rt.key, set()).add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self.watchers.get(w.rt.key, set()).discard(w)

    # -- writes -------------------------------------------------------------------------------------
    def create(
        self, rt: ResourceType, namespace: str | None, body: JsonObj, dry_run: bool = False
    ) -> JsonObj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace")
            self._require_namespace(rt, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choice(_GEN_ALPHABET) for _ in range(5))
            else:
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
        name = meta["name"]
        self._check_name(rt, name)
        bucket = self._bucket(rt)
        okey = self._okey(rt, namespace, name)
        if okey in bucket:
            raise already_exists(rt.plural, rt.group, name)
        for k in _SERVER_META:
            meta.pop(k, None)
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        self._prepare_create_status(rt, obj)
        self._prepare(rt, obj, None, "")
        if dry_run:
            if rt.key == ("", "services"):
                self.services.commit_release(obj, None)
            return obj
        meta["resourceVersion"] = str(self._next_rv())
        bucket[okey] = obj
        self._after_write(rt, None, obj)
        self._emit(rt, "ADDED", obj, None)
        return obj

    def _check_name(self, rt: ResourceType, name: str) -> None:
        if rt.group == "rbac.authorization.k8s.io":  # kube's ValidateRBACName: a path segment
            if name in (".", "..") or "/" in name or "%" in name:
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [("metadata.name", f"Invalid value: \"{name}\": may not contain '/'")],
                )
            return
        pattern = _DNS1123_SUBDOMAIN
        if rt.key in (("", "namespaces"), ("", "services")):
            pattern = _DNS1123_LABEL
        if len(name) > 253 or not pattern.match(name):
            what = "RFC 1123 label" if pattern is _DNS1123_LABEL else "RFC 1123 subdomain"
            raise invalid(
                rt.kind,
                rt.group,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                        "alphanumeric characters, "
                        "'-' or '.', and must start and end with an alphanumeric character",
                    )
                ],
            )

    def _prepare_create_status(self, rt: ResourceType, obj: JsonObj) -> None:
        key = rt.key
        if key == ("", "services"):
            obj["status"] = {"loadBalancer": {}}
        elif key == ("", "pods"):
            status: JsonObj = {"phase": "Pending", "qosClass": "BestEffort"}
            if (obj.get("spec") or {}).get("nodeName"):
                status["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    }
                ]
            obj["status"] = status
        elif key == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        elif key == ("", "nodes"):
            # Kubelets register nodes with their status. kube-apiserver's TaintNodesByCondition
            # admission taints every new Node not-ready; the node lifecycle controller (here the
            # lab's kubelet stand-in) lifts the taint once the node is Ready.
            taints = obj.setdefault("spec", {}).setdefault("taints", [])
            if not any(t.get("key") == NOT_READY_TAINT and t.get("effect") == "NoSchedule" for t in taints):
                taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
        elif rt.status_subresource:
            obj.pop("status", None)

    def _prepare(self, rt: ResourceType, obj: JsonObj, old: JsonObj | None, subresource: str) -> None:
        """Kind-specific defaulting/validation/allocation before a write is stored."""
        key = rt.key
        meta = obj["metadata"]
        if key == ("", "namespaces"):
            meta.setdefault("labels", {})
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
        elif key == ("", "services"):
            if subresource != "status":
                self.services.prepare(obj, old)
                self.services.allocate(obj, old)
            errs = validate_service_status(obj)
            if errs:
                if subresource != "status":
                    self.services.commit_release(obj, old)  # undo what allocate() took
                raise invalid("Service", "", meta["name"], errs)
        elif key == ("", "pods"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            if not spec.get("containers"):
                raise invalid("Pod", "", meta["name"], [("spec.containers", "Required value")])
        elif key == CRD_KEY:
            self._prepare_crd(obj, old)
        elif rt.custom and rt.schema:
            crschema.apply_defaults(rt.schema, obj)
            removed: list[str] = []
            crschema.prune(rt.schema, obj, root=True, removed=removed)
            if removed and self.strict_fields:
                unknown = ", ".join(f'unknown field "{f}"' for f in removed)
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a '
                    f"{rt.kind}: strict decoding error: {unknown}",
                )
            errs = crschema.validate(rt.schema, obj, old)
            if errs:
                raise invalid(rt.kind, rt.group, meta["name"], errs)

    def _prepare_crd(self, crd: JsonObj, old: JsonObj | None) -> None:
        name = crd["metadata"]["name"]
        spec = crd.setdefault("spec", {})
        names = spec.setdefault("names", {})
        errs: list[tuple[str, str]] = []
        group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
        if not group:
            errs.append(("spec.group", "Required value"))
        if not plural:
            errs.append(("spec.names.plural", "Required value"))
        if not kind:
            errs.append(("spec.names.kind", "Required value"))
        if plural and group and name != f"{plural}.{group}":
            errs.append(
                ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errs.append(
                (
                    "spec.scope",
                    f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                    '"Cluster", "Namespaced"',
                )
            )
        versions = spec.get("versions") or []
        if not versions:
            errs.append(
                (
                    "spec.versions",
                    "Invalid value: null: must have exactly one version marked as storage version",
                )
            )
        elif sum(1 for v in versions if v.get("storage")) != 1:
            errs.append(
                (
                    "spec.versions",
                    f"Invalid value: {json.dumps(versions)[:80]}: must have exactly one "
                    "version marked as storage version",
                )
            )
        if old is not None:
            old_spec = old.get("spec") or {}
            if old_spec.get("group") != group:
                errs.append(("spec.group", f'Invalid value: "{group}": field is immutable'))
            if (old_spec.get("names") or {}).get("plural") != plural:
                errs.append(("spec.names.plural", f'Invalid value: "{plural}": field is immutable'))
        if errs:
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, errs)
        names.setdefault("singular", kind.lower())
        names.setdefault("listKind", f"{kind}List")
        spec.setdefault("conversion", {"strategy": "None"})
        stamp = now_rfc3339()
        storage = next(v["name"] for v in versions if v.get("storage"))
        stored = list(((old or {}).get("status") or {}).get("storedVersions") or [])
        if storage not in stored:
            stored.append(storage)
        crd["status"] = {
            "acceptedNames": copy.deepcopy(names),
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": stamp,
                },
            ],
            "storedVersions": stored,
        }

    def _after_write(self, rt: ResourceType, old: JsonObj | None, new: JsonObj | None) -> None:
        """Side effects of a committed write: allocations freed, CRD types (un)registered."""
        if rt.key == ("", "services"):
            self.services.commit_release(old, new)
        elif rt.key == CRD_KEY and new is not None:
            self.registry.set_crd(new)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: JsonObj,
        subresource: str = "",
        dry_run: bool = False,
    ) -> JsonObj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        bucket = self._bucket(rt)
        okey = self._okey(rt, namespace, name)
        old = bucket.get(okey)
        if old is None:
            raise not_found(rt.plural, rt.group, name)
        new = copy.deepcopy(body)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace", namespace) != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        rv = meta.get("resourceVersion")
        if rv and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        return self._commit_update(rt, okey, old, new, subresource, dry_run)

    def _commit_update(
        self, rt: ResourceType, okey: ObjKey, old: JsonObj, new: JsonObj, subresource: str, dry_run: bool
    ) -> JsonObj:
        name = okey[1]
        old_meta = old["metadata"]
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            meta = new["metadata"]
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = okey[0]
            else:
                meta.pop("namespace", None)
            for k in _SERVER_META:
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            if rt.status_subresource or rt.key == ("", "namespaces"):
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        self._prepare(rt, new, old, subresource)
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        if _strip_volatile(new) == _strip_volatile(old):
            if rt.key == ("", "services"):
                self.services.commit_release(new, old)  # nothing new can be held; keep symmetric
            return self.view(rt, old)  # no-op update: kube does not bump the resourceVersion
        if dry_run:
            if rt.key == ("", "services"):
                self.services.commit_release(new, old)
            return new
        bucket = self._bucket(rt)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(rt, okey, new)
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        bucket[okey] = new
        self._after_write(rt, old, new)
        self._emit(rt, "MODIFIED", new, old)
        return new

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_fn: Any,
        subresource: str = "",
        dry_run: bool = False,
    ) -> JsonObj:
        """Apply `patch_fn(current)` then update; a resourceVersion in the patch is a precondition."""
        okey = self._okey(rt, namespace, name)
        old = self._bucket(rt).get(okey)
        if old is None:
            raise not_found(rt.plural, rt.group, name)
        patched = patch_fn(copy.deepcopy(self.view(rt, old)))
        if not isinstance(patched, dict):
            raise bad_request("the patch result is not an object")
        meta = patched.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        rv = meta.get("resourceVersion")
        if rv and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        return self._commit_update(rt, okey, old, patched, subresource, dry_run)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: JsonObj | None = None,
        dry_run: bool = False,
    ) -> JsonObj:
        okey = self._okey(rt, namespace, name)
        obj = self._bucket(rt).get(okey)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        pre = (options or {}).get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{obj['metadata']['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {obj['metadata']['resourceVersion']}",
            )
        if dry_run:
            return self.view(rt, obj)
        grace = self._pod_grace(rt, obj, options)
        if grace > 0:
            # graceful pod deletion: the kubelet finishes it (a delete with gracePeriodSeconds=0)
            current = obj["metadata"].get("deletionGracePeriodSeconds")
            if obj["metadata"].get("deletionTimestamp") and current is not None and current <= grace:
                return self.view(rt, obj)
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339(grace)
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            self._bucket(rt)[okey] = new
            self._emit(rt, "MODIFIED", new, obj)
            return self.view(rt, new)
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return self.view(rt, obj)
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            self._bucket(rt)[okey] = new
            self._emit(rt, "MODIFIED", new, obj)
            return self.view(rt, new)
        return self._remove(rt, okey, obj)

    @staticmethod
    def _pod_grace(rt: ResourceType, obj: JsonObj, options: JsonObj | None) -> int:
        """Grace period of a delete: only bound, still-running pods get one (kube's pod strategy)."""
        if rt.key != ("", "pods"):
            return 0
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        grace = (options or {}).get("gracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        try:
            return max(0, int(grace))
        except (TypeError, ValueError):
            raise bad_request(f"invalid gracePeriodSeconds: {grace!r}") from None

    def bind_pod(self, rt: ResourceType, namespace: str | None, name: str, body: JsonObj) -> JsonObj:
        """POST pods/<name>/binding: what the scheduler does (spec.nodeName + PodScheduled)."""
        okey = self._okey(rt, namespace, name)
        old = self._bucket(rt).get(okey)
        if old is None:
            raise not_found(rt.plural, rt.group, name)
        target = ((body or {}).get("target") or {}).get("name")
        if not target:
            raise invalid("Binding", "", name, [("target.name", "Required value")])
        uid = ((body or {}).get("metadata") or {}).get("uid")
        if uid and uid != old["metadata"]["uid"]:
            raise conflict(rt.plural, rt.group, name, "Precondition failed: UID mismatch")
        if (old.get("spec") or {}).get("nodeName"):
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f'pod {name} is already assigned to node "{old["spec"]["nodeName"]}"',
            )
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["nodeName"] = target
        status = new.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
            }
        )
        status["conditions"] = conds
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self._bucket(rt)[okey] = new
        self._emit(rt, "MODIFIED", new, old)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _remove(self, rt: ResourceType, okey: ObjKey, obj: JsonObj) -> JsonObj:
        """Remove for good: cascade for namespaces and CRDs, DELETED event with a fresh resourceVersion."""
        if rt.key == ("", "namespaces"):
            name = okey[1]
            for rkey, bucket in list(self.objects.items()):
                types = self.registry.by_key(rkey)
                if not types or not types[0].namespaced:
                    continue
                for k in [k for k in bucket if k[0] == name]:
                    self._drop(types[0], k)
        elif rt.key == CRD_KEY:
            spec = obj.get("spec") or {}
            types = self.registry.by_key((spec.get("group", ""), (spec.get("names") or {}).get("plural", "")))
            if types:
                for k in list(self._bucket(types[0])):
                    self._drop(types[0], k)
                for w in self.watchers.pop(types[0].key, set()):
                    w.queue.put_nowait(None)  # kube ends watches of a resource that stops being served
            self.registry.remove_crd(okey[1])
        return self._drop(rt, okey, obj)

    def _drop(self, rt: ResourceType, okey: ObjKey, current: JsonObj | None = None) -> JsonObj:
        bucket = self._bucket(rt)
        old = bucket.pop(okey)
        final = copy.deepcopy(current if current is not None else old)
        final["metadata"]["resourceVersion"] = str(self._next_rv())
        if rt.key == ("", "services"):
            self.services.commit_release(old, None)
        self._emit(rt, "DELETED", final, None)
        return self.view(rt, final)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        options: JsonObj | None,
    ) -> JsonObj:
        listed = self.list_objects(rt, namespace, labels, fields)
        for obj in listed["items"]:
            with contextlib.suppress(ApiError):
                self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], None)
        return listed
