"""Writers that survive concurrent updates: read-modify-write retried on 409 Conflict.

Every writer re-reads the object before each attempt, so a retry never overwrites
somebody else's change with a stale copy.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from lbspeaker.kube.backoff import Backoff
from lbspeaker.kube.resources import Resource
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger(__name__)

Mutator = Callable[[dict[str, Any]], dict[str, Any] | None]

DEFAULT_ATTEMPTS = 8


def _retry_sleep(backoff: Backoff, attempt: int, attempts: int) -> None:
    if attempt + 1 < attempts:
        time.sleep(backoff.next())


def update_status(
    rest: Rest,
    resource: Resource,
    namespace: str | None,
    name: str,
    mutate: Mutator,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: Backoff | None = None,
) -> dict[str, Any]:
    """Read the object, let `mutate` compute its new `status`, PUT it to /status; retry on 409.

    `mutate(obj)` gets a deep copy of the **whole object** (so it can look at spec and
    metadata) and returns the complete new status dict, or None for "no change". A
    returned status equal to the current one is not written either. Returns the object
    as it stands afterwards. 409 Conflict and retriable errors (5xx, 429, no answer) are
    retried up to `attempts` times with a fresh read each time; anything else (404 ...)
    raises `ApiError` at once.
    """
    backoff = backoff or Backoff(initial=0.02, cap=1.0)
    last: ApiError | None = None
    for attempt in range(attempts):
        try:
            obj = rest.get(resource, name, namespace)
        except ApiError as exc:
            if not exc.retriable:
                raise
            last = exc
            _retry_sleep(backoff, attempt, attempts)
            continue
        new_status = mutate(copy.deepcopy(obj))
        if new_status is None or new_status == (obj.get("status") or {}):
            return obj
        body = {k: v for k, v in obj.items() if k != "status"}
        body["status"] = new_status
        try:
            return rest.replace_status(resource, body)
        except ApiError as exc:
            if not (exc.conflict or exc.retriable):
                raise
            last = exc
            log.debug("status of %s %s/%s: %s; retrying", resource.kind, namespace, name, exc)
            _retry_sleep(backoff, attempt, attempts)
    assert last is not None
    raise last


def patch_annotations(
    rest: Rest,
    resource: Resource,
    namespace: str | None,
    name: str,
    changes: Mapping[str, str | None],
    resource_version: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: Backoff | None = None,
) -> dict[str, Any]:
    """Merge-patch `metadata.annotations` (a None value removes the key), retried on transient errors.

    Annotation merge patches commute, so no read is needed. With `resource_version`
    the patch is conditional: a 409 then means the object changed and is raised to
    the caller (who must re-decide), not retried blindly.
    """
    backoff = backoff or Backoff(initial=0.02, cap=1.0)
    meta: dict[str, Any] = {"annotations": dict(changes)}
    if resource_version:
        meta["resourceVersion"] = resource_version
    last: ApiError | None = None
    for attempt in range(attempts):
        try:
            return rest.patch(resource, name, {"metadata": meta}, namespace, "merge")
        except ApiError as exc:
            if not exc.retriable:
                raise
            last = exc
            _retry_sleep(backoff, attempt, attempts)
    assert last is not None
    raise last
