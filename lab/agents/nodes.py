"""Pure helpers that read lab facts out of Node and Pod objects (shared by all agents).

Node index N owns pod CIDR 10.244.N.0/24 (and fd00:10:244:N::/64 in an IPv6 lab) and
sits at 172.18.0.(N+2) (helper F's topology). The index comes from `spec.podCIDR` when
the Node has one (that is how the lab registers Nodes, and what a real cluster would
say), else from the InternalIP.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

POD_SUPERNET_V4 = ipaddress.IPv4Network("10.244.0.0/16")
NODE_SUBNET_V4 = ipaddress.IPv4Network("172.18.0.0/16")
READY_ANNOTATION = "lab.lbspeaker.io/ready"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


@dataclass(frozen=True)
class NodeInfo:
    """What the agents need to know about one node."""

    name: str
    index: int
    ip: str
    pod_cidr: str
    ip6: str | None = None
    pod_cidr6: str | None = None

    @property
    def gateway(self) -> str:
        """The node-side address of every pod veth on this node (.1 of its pod CIDR)."""
        return str(ipaddress.IPv4Network(self.pod_cidr)[1])


def node_ips(node: dict[str, Any], kind: str = "InternalIP") -> list[str]:
    """Addresses of a given type from `status.addresses`."""
    return [
        a.get("address", "")
        for a in (node.get("status") or {}).get("addresses") or []
        if a.get("type") == kind
    ]


def node_info(node: dict[str, Any]) -> NodeInfo | None:
    """Index, IPv4 InternalIP and pod CIDR of a Node, or None if it is not a lab-shaped node."""
    name = (node.get("metadata") or {}).get("name") or ""
    spec = node.get("spec") or {}
    v4 = [ip for ip in node_ips(node) if ":" not in ip]
    index: int | None = None
    cidrs = [spec.get("podCIDR"), *list(spec.get("podCIDRs") or [])]
    pod_cidr = None
    for c in cidrs:
        if not c or ":" in c:
            continue
        net = ipaddress.IPv4Network(c, strict=False)
        if net.subnet_of(POD_SUPERNET_V4) and net.prefixlen == 24:
            pod_cidr = str(net)
            index = int(net.network_address.packed[2])
            break
    if index is None and v4:
        addr = ipaddress.IPv4Address(v4[0])
        if addr in NODE_SUBNET_V4:
            index = int(addr) - int(NODE_SUBNET_V4.network_address) - 2
    if index is None or index < 0 or index > 255:
        return None
    if pod_cidr is None:
        pod_cidr = f"10.244.{index}.0/24"
    ip = v4[0] if v4 else str(NODE_SUBNET_V4.network_address + index + 2)
    v6 = [a for a in node_ips(node) if ":" in a]
    cidr6 = next((c for c in cidrs if c and ":" in c), None)
    return NodeInfo(
        name=name,
        index=index,
        ip=ip,
        pod_cidr=pod_cidr,
        ip6=v6[0] if v6 else None,
        pod_cidr6=str(ipaddress.IPv6Network(cidr6, strict=False)) if cidr6 else None,
    )


def is_schedulable(node: dict[str, Any], pod: dict[str, Any] | None = None) -> bool:
    """Not cordoned and no NoSchedule/NoExecute taint the pod does not tolerate."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    tolerations = ((pod or {}).get("spec") or {}).get("tolerations") or []
    for taint in spec.get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return False
    return True


def _tolerates(tol: dict[str, Any], taint: dict[str, Any]) -> bool:
    if tol.get("effect") and tol.get("effect") != taint.get("effect"):
        return False
    if not tol.get("key"):
        return tol.get("operator") == "Exists"
    if tol.get("key") != taint.get("key"):
        return False
    if tol.get("operator") == "Exists":
        return True
    return (tol.get("value") or "") == (taint.get("value") or "")


def node_ready(node: dict[str, Any]) -> bool:
    """Ready condition True (a Node without conditions counts as ready: the lab may not set them)."""
    conds = (node.get("status") or {}).get("conditions") or []
    for c in conds:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return True


def taints_once_ready(node: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The Node's taints without `node.kubernetes.io/not-ready` when it is Ready and still carries
    that taint (kube-apiserver adds it to every new Node; the node lifecycle controller lifts it),
    else None: nothing to change."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    kept = [t for t in taints if t.get("key") != NOT_READY_TAINT]
    if len(kept) == len(taints) or not node_ready(node):
        return None
    return kept


def readiness_wanted(pod: dict[str, Any]) -> bool:
    """False when the lab's readiness switch annotation says so (see lab.agents docstring)."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(READY_ANNOTATION)
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def container_ports(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """All containerPorts of the pod's containers (TCP and others), in declaration order."""
    out: list[dict[str, Any]] = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        out.extend(c.get("ports") or [])
    return out
