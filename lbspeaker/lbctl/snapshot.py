"""Fetching what lbctl looks at: one list per resource, read-only (the only I/O of lbctl besides output)."""

from __future__ import annotations

from typing import Any

from lbspeaker.api.constants import NAMESPACE
from lbspeaker.kube import resources as R
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.lbctl.report import Snapshot
from lbspeaker.speaker import strictarp


def _items(rest: Rest, resource: R.Resource, namespace: str | None = None) -> list[dict[str, Any]]:
    """All objects, or none when the kind is not served (CRDs not installed) or not readable."""
    try:
        return list(rest.list_all(resource, namespace)["items"])
    except ApiError as exc:
        if exc.status in (403, 404):
            return []
        raise


def fetch(rest: Rest, namespace: str = NAMESPACE, events: bool = True) -> Snapshot:
    """One consistent-enough view of the cluster for status/pools/check."""
    try:
        kube_proxy = rest.get(R.CONFIGMAPS, strictarp.CONFIGMAP_NAME, strictarp.CONFIGMAP_NAMESPACE)
    except ApiError as exc:
        if exc.status not in (403, 404):
            raise
        kube_proxy = None
    return Snapshot(
        services=_items(rest, R.SERVICES),
        endpointslices=_items(rest, R.ENDPOINTSLICES),
        nodes=_items(rest, R.NODES),
        pools=_items(rest, R.IPADDRESSPOOLS, namespace),
        l2advertisements=_items(rest, R.L2ADVERTISEMENTS, namespace),
        bgpadvertisements=_items(rest, R.BGPADVERTISEMENTS, namespace),
        bgppeers=_items(rest, R.BGPPEERS, namespace),
        l2statuses=_items(rest, R.SERVICEL2STATUSES, namespace),
        bgpstatuses=_items(rest, R.SERVICEBGPSTATUSES, namespace),
        leases=_items(rest, R.LEASES, namespace),
        events=_items(rest, R.EVENTS) if events else [],
        kube_proxy=kube_proxy,
    )
