"""Descriptors of the API resources lbspeaker uses, and URL building for them.

Core and custom resources are handled alike (plain dicts over raw paths), so one
descriptor per resource is all the rest of the kube layer needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from lbspeaker.api.constants import BGPPEER_VERSION, GROUP, VERSION


@dataclass(frozen=True)
class Resource:
    """One REST resource: where it lives (group/version/plural) and what it is (kind, scope)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """`apiVersion` as written in objects: `v1` for the core group, `group/version` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def base(self) -> str:
        """URL prefix of the group version: `/api/v1` for core, `/apis/<group>/<version>` otherwise."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """URL path of the collection (all namespaces when `namespace` is None) or of one object."""
        if not self.namespaced and namespace:
            raise ValueError(f"{self.kind} is cluster-scoped; no namespace allowed")
        if self.namespaced and name and not namespace:
            raise ValueError(f"{self.kind} {name!r} is namespaced; a namespace is required")
        if subresource and not name:
            raise ValueError("a subresource needs an object name")
        parts = [self.base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


SERVICES = Resource("", "v1", "services", "Service", True)
NODES = Resource("", "v1", "nodes", "Node", False)
PODS = Resource("", "v1", "pods", "Pod", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
EVENTS = Resource("", "v1", "events", "Event", True)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)

IPADDRESSPOOLS = Resource(GROUP, VERSION, "ipaddresspools", "IPAddressPool", True)
L2ADVERTISEMENTS = Resource(GROUP, VERSION, "l2advertisements", "L2Advertisement", True)
BGPADVERTISEMENTS = Resource(GROUP, VERSION, "bgpadvertisements", "BGPAdvertisement", True)
COMMUNITIES = Resource(GROUP, VERSION, "communities", "Community", True)
SERVICEL2STATUSES = Resource(GROUP, VERSION, "servicel2statuses", "ServiceL2Status", True)
SERVICEBGPSTATUSES = Resource(GROUP, VERSION, "servicebgpstatuses", "ServiceBGPStatus", True)
BGPPEERS = Resource(GROUP, BGPPEER_VERSION, "bgppeers", "BGPPeer", True)
BFDPROFILES = Resource(GROUP, VERSION, "bfdprofiles", "BFDProfile", True)
CONFIGURATIONSTATES = Resource(GROUP, VERSION, "configurationstates", "ConfigurationState", True)

ALL: tuple[Resource, ...] = (
    SERVICES,
    NODES,
    PODS,
    NAMESPACES,
    CONFIGMAPS,
    SECRETS,
    EVENTS,
    ENDPOINTSLICES,
    LEASES,
    CRDS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    BGPADVERTISEMENTS,
    COMMUNITIES,
    SERVICEL2STATUSES,
    SERVICEBGPSTATUSES,
    BGPPEERS,
    BFDPROFILES,
    CONFIGURATIONSTATES,
)


def by_kind(kind: str) -> Resource | None:
    """Look up a descriptor by `kind` (used to address an Event's involvedObject, lbctl)."""
    for resource in ALL:
        if resource.kind == kind:
            return resource
    return None
