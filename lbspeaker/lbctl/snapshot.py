"""Fetching what lbctl looks at: one list per resource, read-only (the only I/O of lbctl besides output)."""

from __future__ import annotations

from typing import Any

from lbspeaker.api.constants import NAMESPACE
from lbspeaker.kube import resources as R
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.lbctl.report import Snapshot
from lbspeaker.speaker import strictarp

LBCTL_ROLE = "lbspeaker:lbctl"


class AccessDenied(Exception):
    """The API server refused (403) reads lbctl needs: what a report would silently leave out."""

    def __init__(self, denials: list[str]) -> None:
        self.denials = denials
        super().__init__(self.text())

    def text(self) -> str:
        lines = [f"access denied: the API server refused {len(self.denials)} of the reads lbctl needs:"]
        lines += [f"  {d}" for d in self.denials]
        lines.append(
            f"lbctl reads with the ClusterRole {LBCTL_ROLE} (manifests/base/rbac-lbctl.yaml); bind it to "
            f"yourself, e.g.: kubectl create clusterrolebinding lbctl-$USER --clusterrole={LBCTL_ROLE} "
            "--user=$USER"
        )
        return "\n".join(lines)


def _denied(exc: ApiError, denials: list[str], what: str) -> bool:
    """404 (kind not served, object absent) is "nothing there"; 403 is noted in `denials`."""
    if exc.status == 403:
        denials.append(exc.message or f"{what}: 403 Forbidden")
        return True
    return exc.status == 404


def _items(
    rest: Rest, resource: R.Resource, namespace: str | None, denials: list[str]
) -> list[dict[str, Any]]:
    """All objects; none when the kind is not served (CRDs not installed) or the read is denied."""
    try:
        return list(rest.list_all(resource, namespace)["items"])
    except ApiError as exc:
        if _denied(exc, denials, f"list {resource.plural}"):
            return []
        raise


def fetch(rest: Rest, namespace: str = NAMESPACE, events: bool = True) -> Snapshot:
    """One consistent-enough view of the cluster for status/pools/check.

    A kind that is not served (404: CRDs not installed, no kube-proxy ConfigMap) is empty; a
    denied read (403) is an error, raised after every read was tried so that it names them
    all: a report that skipped them would say "no problems" about what it never saw.
    """
    denials: list[str] = []
    kube_proxy: dict[str, Any] | None = None
    try:
        kube_proxy = rest.get(R.CONFIGMAPS, strictarp.CONFIGMAP_NAME, strictarp.CONFIGMAP_NAMESPACE)
    except ApiError as exc:
        if not _denied(exc, denials, "get configmap kube-system/kube-proxy"):
            raise
    snap = Snapshot(
        services=_items(rest, R.SERVICES, None, denials),
        endpointslices=_items(rest, R.ENDPOINTSLICES, None, denials),
        nodes=_items(rest, R.NODES, None, denials),
        pools=_items(rest, R.IPADDRESSPOOLS, namespace, denials),
        l2advertisements=_items(rest, R.L2ADVERTISEMENTS, namespace, denials),
        bgpadvertisements=_items(rest, R.BGPADVERTISEMENTS, namespace, denials),
        bgppeers=_items(rest, R.BGPPEERS, namespace, denials),
        l2statuses=_items(rest, R.SERVICEL2STATUSES, namespace, denials),
        bgpstatuses=_items(rest, R.SERVICEBGPSTATUSES, namespace, denials),
        leases=_items(rest, R.LEASES, namespace, denials),
        events=_items(rest, R.EVENTS, None, denials) if events else [],
        kube_proxy=kube_proxy,
    )
    if denials:
        raise AccessDenied(denials)
    return snap
