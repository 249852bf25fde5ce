"""Resource types served by the lab API server: the built-ins plus whatever CRDs define.

One `ResourceType` per (group, version, plural). Storage is keyed by (group, plural)
so every served version of a custom resource shares one set of objects (conversion
strategy None: only `apiVersion` changes between versions, as in kube).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]


@dataclass
class ResourceType:
    """What the server knows about one resource at one version."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    status_subresource: bool = False
    schema: dict[str, Any] | None = None  # openAPIV3Schema for custom resources
    custom: bool = False
    categories: list[str] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: shared by every version of the resource."""
        return (self.group, self.plural)


def _b(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    short: list[str] | None = None,
    status: bool = False,
) -> ResourceType:
    return ResourceType(group, version, plural, kind.lower(), kind, namespaced, short or [], status)


BUILTINS: list[ResourceType] = [
    _b("", "v1", "namespaces", "Namespace", False, ["ns"], True),
    _b("", "v1", "nodes", "Node", False, ["no"], True),
    _b("", "v1", "services", "Service", True, ["svc"], True),
    _b("", "v1", "pods", "Pod", True, ["po"], True),
    _b("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    _b("", "v1", "secrets", "Secret", True),
    _b("", "v1", "events", "Event", True, ["ev"]),
    _b("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"]),
    _b("", "v1", "endpoints", "Endpoints", True, ["ep"]),
    _b("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    _b("coordination.k8s.io", "v1", "leases", "Lease", True),
    _b("events.k8s.io", "v1", "events", "Event", True, ["ev"]),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ["crd", "crds"],
        True,
    ),
]
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


class Registry:
    """Index of served resource types; CRD changes update it at once (discovery follows)."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}  # CRD name -> its types
        self._group_order: list[str] = []
        for rt in BUILTINS:
            self._add(rt)

    def _add(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        if rt.group and rt.group not in self._group_order:
            self._group_order.append(rt.group)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_key(self, key: tuple[str, str]) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.key == key]

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred (storage or first) first."""
        out: dict[str, list[str]] = {}
        for g in self._group_order:
            versions: list[str] = []
            for (grp, ver, _), _rt in self._by_gvr.items():
                if grp == g and ver not in versions:
                    versions.append(ver)
            if versions:
                out[g] = sorted(versions, key=_version_priority)
        return out

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self._by_gvr.items() if g == group and v == version]

    def set_crd(self, crd: dict[str, Any]) -> None:
        """(Re)register the types a CRD defines."""
        name = crd["metadata"]["name"]
        self.remove_crd(name)
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        types: list[ResourceType] = []
        for ver in spec.get("versions") or []:
            if not ver.get("served", True):
                continue
            rt = ResourceType(
                group=spec.get("group", ""),
                version=ver["name"],
                plural=names.get("plural", ""),
                singular=names.get("singular") or names.get("kind", "").lower(),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=list(names.get("shortNames") or []),
                status_subresource="status" in (ver.get("subresources") or {}),
                schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                custom=True,
                categories=list(names.get("categories") or []),
            )
            types.append(rt)
            self._add(rt)
        self._crd_types[name] = types

    def remove_crd(self, name: str) -> list[ResourceType]:
        types = self._crd_types.pop(name, [])
        for rt in types:
            self._by_gvr.pop((rt.group, rt.version, rt.plural), None)
        for rt in types:
            if not any(g == rt.group for g, _, _ in self._by_gvr) and rt.group in self._group_order:
                self._group_order.remove(rt.group)
        return types


def _version_priority(v: str) -> tuple[int, int, int, str]:
    """Kube's version ordering: GA > beta > alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0, v)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, v)
