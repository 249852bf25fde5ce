"""Names shared by every component: API group, namespace, annotations, labels.

Kept in one place so the controller, the speaker, lbctl and the manifests agree,
and so MetalLB's spellings are accepted wherever ours are.
"""

from __future__ import annotations

from collections.abc import Mapping

GROUP = "lbspeaker.io"
VERSION = "v1beta1"
BGPPEER_VERSION = "v1beta2"
API_VERSION = f"{GROUP}/{VERSION}"
NAMESPACE = "lbspeaker-system"

CONTROLLER_NAME = "lbspeaker-controller"
SPEAKER_NAME = "lbspeaker-speaker"
CONTROLLER_LEASE = "lbspeaker-controller"

# Annotation prefixes in order of precedence: ours first, then MetalLB's current and legacy ones.
ANNOTATION_PREFIXES = (f"{GROUP}/", "metallb.io/", "metallb.universe.tf/")

LOADBALANCER_IPS = "loadBalancerIPs"
ADDRESS_POOL = "address-pool"
ALLOW_SHARED_IP = "allow-shared-ip"
IP_ALLOCATED_FROM_POOL = "ip-allocated-from-pool"

ANNOTATION_LOADBALANCER_IPS = f"{GROUP}/{LOADBALANCER_IPS}"
ANNOTATION_ADDRESS_POOL = f"{GROUP}/{ADDRESS_POOL}"
ANNOTATION_ALLOW_SHARED_IP = f"{GROUP}/{ALLOW_SHARED_IP}"
ANNOTATION_IP_ALLOCATED_FROM_POOL = f"{GROUP}/{IP_ALLOCATED_FROM_POOL}"

# ConfigurationState objects (MetalLB's metallb.io/component-type and metallb.io/node-name).
COMPONENT_TYPE_LABEL = f"{GROUP}/component-type"
NODE_NAME_LABEL = f"{GROUP}/node-name"

EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def class_matches(service: Mapping[str, object], lb_class: str | None) -> bool:
    """`spec.loadBalancerClass`, MetalLB's rule: with `--lb-class` only that class; without it, only
    class-less Services. One definition for the controller and both halves of the speaker."""
    spec = service.get("spec")
    cls = spec.get("loadBalancerClass") if isinstance(spec, Mapping) else None
    return cls == (lb_class or None)


def annotation(annotations: Mapping[str, str] | None, key: str) -> str | None:
    """Return the value of `key` under the first prefix that carries it (ours, then MetalLB's)."""
    if not annotations:
        return None
    for prefix in ANNOTATION_PREFIXES:
        value = annotations.get(prefix + key)
        if value is not None:
            return value
    return None
