"""RBAC for the lab API server: who may do what, from Roles/ClusterRoles and their bindings (pure).

Only requests whose bearer token is one of the server's `users` are authorized; every other
request (the lab's own kubeconfig, tests) acts as a cluster admin, as `system:masters` does.
That is enough to test a client against kube's 403 answers, e.g. lbctl with no permissions.
Not implemented: groups, aggregation, escalation checks, non-resource URLs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lab.apiserver.errors import ApiError

RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Request:
    """One API request as RBAC sees it."""

    user: str
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None


def verb_of(method: str, has_name: bool, watch: bool) -> str:
    """kube's request verb for an HTTP method on a collection or an object."""
    if watch:
        return "watch"
    if method == "GET":
        return "get" if has_name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(
        method, "delete" if has_name else "deletecollection"
    )


def rule_allows(rule: Mapping[str, Any], req: Request) -> bool:
    def has(values: Iterable[str], wanted: str) -> bool:
        values = list(values or [])
        return "*" in values or wanted in values

    resource = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    if not (has(rule.get("verbs") or [], req.verb) and has(rule.get("apiGroups") or [], req.group)):
        return False
    if not has(rule.get("resources") or [], resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or (req.name is not None and req.name in names)


def _binds(binding: Mapping[str, Any], user: str) -> bool:
    return any(s.get("kind") == "User" and s.get("name") == user for s in binding.get("subjects") or [])


def allowed(
    req: Request,
    roles: Mapping[tuple[str, str], Mapping[str, Any]],
    cluster_roles: Mapping[str, Mapping[str, Any]],
    role_bindings: Iterable[Mapping[str, Any]],
    cluster_role_bindings: Iterable[Mapping[str, Any]],
) -> bool:
    """Whether any binding of `req.user` grants `req` (RoleBindings only inside their namespace)."""
    granted: list[Mapping[str, Any]] = []
    for b in cluster_role_bindings:
        if _binds(b, req.user) and (b.get("roleRef") or {}).get("kind") == "ClusterRole":
            granted.extend(
                (cluster_roles.get((b.get("roleRef") or {}).get("name", "")) or {}).get("rules") or []
            )
    if req.namespace:
        for b in role_bindings:
            if (b.get("metadata") or {}).get("namespace") != req.namespace or not _binds(b, req.user):
                continue
            ref = b.get("roleRef") or {}
            role = (
                cluster_roles.get(ref.get("name", ""))
                if ref.get("kind") == "ClusterRole"
                else roles.get((req.namespace, ref.get("name", "")))
            )
            granted.extend((role or {}).get("rules") or [])
    return any(rule_allows(r, req) for r in granted)


def forbidden(req: Request) -> ApiError:
    """kube's 403: `services is forbidden: User "alice" cannot list resource "services" in API group ""
    at the cluster scope` (with the object's name and the namespace when there are)."""
    qualified = f"{req.resource}.{req.group}" if req.group else req.resource
    subject = f'{qualified} "{req.name}"' if req.name else qualified
    resource = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    scope = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    return ApiError(
        403,
        "Forbidden",
        f'{subject} is forbidden: User "{req.user}" cannot {req.verb} resource "{resource}" '
        f'in API group "{req.group}" {scope}',
        name=req.name,
        group=req.group,
        kind=req.resource,
    )
