"""Pure EndpointSlice computation: Service + Pods -> the EndpointSlices a controller would keep.

Follows the real EndpointSlice controller where the lab can observe it: one slice per
(address family, resolved port set) -- pods whose named targetPort resolves to
different numbers land in different slices --, endpoints carry nodeName, targetRef and
the ready/serving/terminating conditions (ready = Ready and not terminating, or
`publishNotReadyAddresses`; serving = Ready; terminating = deletionTimestamp set),
and a Service with a selector but no pods keeps one empty slice. Names are
deterministic (`<service>-<family>-<hash of the port set>`) so reconciling is a plain
diff by name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "lab"

FAMILY_OF = {"IPv4": 4, "IPv6": 6}


def selector_matches(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    """A Service selector (plain equality map) matches when every pair is in the labels."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def ip_family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def resolve_target_port(service_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """The pod port a Service port sends to: a number, or a containerPort looked up by name."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def slice_ports(service: dict[str, Any], pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    """EndpointSlice ports for one pod (or, with pod None, the numeric ones for an empty slice)."""
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        port = resolve_target_port(sp, pod or {}) if pod is not None else _numeric_target(sp)
        if port is None:
            continue
        entry: dict[str, Any] = {
            "name": sp.get("name") or "",
            "port": port,
            "protocol": sp.get("protocol") or "TCP",
        }
        if sp.get("appProtocol"):
            entry["appProtocol"] = sp["appProtocol"]
        out.append(entry)
    return out


def _numeric_target(sp: dict[str, Any]) -> int | None:
    target = sp.get("targetPort", sp.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    return None


def _pod_ready(pod: dict[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def pod_ips(pod: dict[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ips


def endpoint_for(
    service: dict[str, Any], pod: dict[str, Any], ip: str, zone: str | None = None
) -> dict[str, Any]:
    md = pod.get("metadata") or {}
    terminating = bool(md.get("deletionTimestamp"))
    serving = _pod_ready(pod)
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    ready = publish or (serving and not terminating)
    ep: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving or publish, "terminating": terminating},
        "targetRef": {
            "kind": "Pod",
            "namespace": md.get("namespace") or "default",
            "name": md.get("name"),
            "uid": md.get("uid"),
        },
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    return ep


def _slice_name(service_name: str, family: str, ports: list[dict[str, Any]]) -> str:
    digest = hashlib.sha1(json.dumps(ports, sort_keys=True).encode()).hexdigest()[:8]
    return f"{service_name}-{family.lower()}-{digest}"


def wants_slices(service: dict[str, Any]) -> bool:
    """Services with a non-empty selector (and not ExternalName) get controller-managed slices."""
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def desired_slices(
    service: dict[str, Any], pods: list[dict[str, Any]], node_zones: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The EndpointSlices for one Service, sorted by name (empty list if it has no selector)."""
    if not wants_slices(service):
        return []
    md = service.get("metadata") or {}
    ns = md.get("namespace") or "default"
    name = md["name"]
    spec = service["spec"]
    families = [f for f in spec.get("ipFamilies") or ["IPv4"] if f in FAMILY_OF]
    groups: dict[tuple[str, str], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for pod in pods:
        pmd = pod.get("metadata") or {}
        if (pmd.get("namespace") or "default") != ns or not selector_matches(
            spec["selector"], pmd.get("labels")
        ):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        ports = slice_ports(service, pod)
        key_ports = json.dumps(ports, sort_keys=True)
        node = (pod.get("spec") or {}).get("nodeName")
        zone = (node_zones or {}).get(node or "")
        for ip in pod_ips(pod):
            fam = ip_family(ip)
            if fam not in families:
                continue
            eps, _ = groups.setdefault((fam, key_ports), ([], ports))
            eps.append(endpoint_for(service, pod, ip, zone))
    if not groups:
        fam = families[0] if families else "IPv4"
        ports = slice_ports(service, None)
        groups[(fam, json.dumps(ports, sort_keys=True))] = ([], ports)
    owner = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": name,
        "uid": md.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    out: list[dict[str, Any]] = []
    for (fam, _), (eps, ports) in groups.items():
        eps.sort(key=lambda e: (e["addresses"][0], e["targetRef"]["name"] or ""))
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": _slice_name(name, fam, ports),
                    "namespace": ns,
                    "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
                    "ownerReferences": [owner],
                },
                "addressType": fam,
                "endpoints": eps,
                "ports": ports,
            }
        )
    out.sort(key=lambda s: s["metadata"]["name"])
    return out


def canonical(slice_obj: dict[str, Any]) -> str:
    """A comparison key: what the controller owns in a slice, ignoring server-added metadata."""
    md = slice_obj.get("metadata") or {}
    labels = md.get("labels") or {}

    def ep_key(e: dict[str, Any]) -> dict[str, Any]:
        c = e.get("conditions") or {}
        return {
            "addresses": e.get("addresses") or [],
            "ready": bool(c.get("ready")),
            "serving": bool(c.get("serving")),
            "terminating": bool(c.get("terminating")),
            "nodeName": e.get("nodeName"),
            "zone": e.get("zone"),
            "targetRef": {k: (e.get("targetRef") or {}).get(k) for k in ("kind", "namespace", "name", "uid")},
        }

    return json.dumps(
        {
            "labels": {k: labels.get(k) for k in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)},
            "owners": [(o.get("kind"), o.get("name"), o.get("uid")) for o in md.get("ownerReferences") or []],
            "addressType": slice_obj.get("addressType"),
            "endpoints": [ep_key(e) for e in slice_obj.get("endpoints") or []],
            "ports": [
                {
                    "name": p.get("name") or "",
                    "port": p.get("port"),
                    "protocol": p.get("protocol") or "TCP",
                    "appProtocol": p.get("appProtocol"),
                }
                for p in slice_obj.get("ports") or []
            ],
        },
        sort_keys=True,
    )
