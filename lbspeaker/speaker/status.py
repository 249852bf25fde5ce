"""ServiceL2Status objects and Events written by the speaker.

One ServiceL2Status per (Service, announcing node), in `lbspeaker-system`, named
`l2-<first 16 hex of sha256(namespace/name@node)>` (deterministic, so a restarted
speaker finds its own objects and two nodes never write the same one), labelled
with the Service's namespace and name and the node. The announcing node creates it
and deletes it when it stops announcing the Service.

`StatusWriter` reconciles in its own thread: desired (from the plan) vs. actual
(a label-selected cache of our own objects). API errors are retried every
`retry_s`; nothing here ever blocks the announcing path (fail-static).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbspeaker.api.constants import GROUP, NAMESPACE
from lbspeaker.kube.resources import SERVICEL2STATUSES
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger(__name__)

LABEL_NODE = f"{GROUP}/node"
LABEL_SERVICE_NAME = f"{GROUP}/service-name"
LABEL_SERVICE_NAMESPACE = f"{GROUP}/service-namespace"


def status_name(service_key: str, node: str) -> str:
    """Deterministic ServiceL2Status name for (Service "ns/name", node)."""
    return "l2-" + hashlib.sha256(f"{service_key}@{node}".encode()).hexdigest()[:16]


def label_value(text: str) -> str:
    """Label values are at most 63 characters; longer names are cut (the status carries them whole)."""
    return text[:63].rstrip("-_.")


def desired_object(service_key: str, node: str, interfaces: Sequence[str]) -> dict[str, Any]:
    """The ServiceL2Status this node should have for a Service it announces (pure)."""
    ns, _, name = service_key.partition("/")
    return {
        "apiVersion": SERVICEL2STATUSES.api_version,
        "kind": "ServiceL2Status",
        "metadata": {
            "name": status_name(service_key, node),
            "namespace": NAMESPACE,
            "labels": {
                LABEL_NODE: label_value(node),
                LABEL_SERVICE_NAME: label_value(name),
                LABEL_SERVICE_NAMESPACE: label_value(ns),
            },
        },
        "status": {
            "node": node,
            "serviceName": name,
            "serviceNamespace": ns,
            "interfaces": [{"name": i} for i in sorted(interfaces)],
        },
    }


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


class StatusWriter:
    """Keeps our ServiceL2Status objects equal to `set_desired(...)`, in a thread."""

    def __init__(
        self,
        rest: Rest,
        node: str,
        actual: Callable[[], list[dict[str, Any]]],
        retry_s: float = 2.0,
    ) -> None:
        self.rest = rest
        self.node = node
        self._actual = actual
        self.retry_s = retry_s
        self._desired: dict[str, dict[str, Any]] = {}
        self._mu = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: dict[str, dict[str, Any] | None] = {}  # what we last wrote (cache may lag)
        self.errors = 0
        self.last_error: str | None = None
        self.in_sync = False

    def set_desired(self, services: Mapping[str, Sequence[str]]) -> None:
        """{service key: interfaces} this node announces now."""
        desired = {}
        for key, ifaces in services.items():
            obj = desired_object(key, self.node, ifaces)
            desired[obj["metadata"]["name"]] = obj
        with self._mu:
            self._desired = desired
        self._kick.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="l2-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.retry_s)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
            except Exception as exc:  # never kill the thread
                self.errors += 1
                self.last_error = str(exc)
                log.exception("ServiceL2Status reconcile failed")

    def _actual_map(self) -> dict[str, dict[str, Any]]:
        actual = {}
        for obj in self._actual():
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") or {}
            if labels.get(LABEL_NODE) == label_value(self.node):
                actual[str(meta.get("name"))] = obj
        # The cache may lag our own writes: trust what we just wrote over it.
        for name, written in self._written.items():
            if written is None:
                actual.pop(name, None)
            else:
                actual[name] = written
        return actual

    def reconcile(self) -> bool:
        """One pass; True if everything is in sync afterwards."""
        with self._mu:
            desired = dict(self._desired)
        self._written = {}
        create, update, delete = diff_status(desired, self._actual_map())
        ok = True
        for obj in create:
            ok &= self._create(obj)
        for obj in update:
            ok &= self._update(obj)
        for name in delete:
            ok &= self._delete(name)
        self.in_sync = ok  # if not, the loop retries after retry_s
        return ok

    def _fail(self, what: str, exc: Exception) -> bool:
        self.errors += 1
        self.last_error = f"{what}: {exc}"
        log.warning("ServiceL2Status %s", self.last_error)
        return False

    def _create(self, obj: dict[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        try:
            try:
                created = self.rest.create(SERVICEL2STATUSES, obj, NAMESPACE)
            except ApiError as exc:
                if not exc.conflict and not exc.already_exists:
                    raise
                created = self.rest.get(SERVICEL2STATUSES, name, NAMESPACE)
            if (created.get("status") or {}) != obj["status"]:
                created = self.rest.patch_status(
                    SERVICEL2STATUSES, name, {"status": obj["status"]}, NAMESPACE
                )
            self._written[name] = created
            return True
        except (ApiError, OSError) as exc:
            return self._fail(f"create {name}", exc)

    def _update(self, obj: dict[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        try:
            self._written[name] = self.rest.patch_status(
                SERVICEL2STATUSES, name, {"status": obj["status"]}, NAMESPACE
            )
            return True
        except ApiError as exc:
            if exc.not_found:
                return self._create(obj)
            return self._fail(f"update {name}", exc)
        except OSError as exc:
            return self._fail(f"update {name}", exc)

    def _delete(self, name: str) -> bool:
        try:
            self.rest.delete(SERVICEL2STATUSES, name, NAMESPACE)
        except ApiError as exc:
            if not exc.not_found:
                return self._fail(f"delete {name}", exc)
        except OSError as exc:
            return self._fail(f"delete {name}", exc)
        self._written[name] = None
        return True

    def delete_all(self) -> None:
        """Best effort at shutdown: remove every ServiceL2Status of ours."""
        with self._mu:
            self._desired = {}
        self.reconcile()


def assigned_message(node: str) -> str:
    """MetalLB's nodeAssigned Event message."""
    return f'announcing from node "{node}" with protocol "layer2"'
