"""A minimal OpenAPI v3 discovery (`/openapi/v3`) so kubectl works against the lab API server.

kubectl (>= 1.27) refuses `apply` when it cannot download OpenAPI. With this document
it sees that every resource's PATCH takes the `fieldValidation` query parameter, so it
leaves validation to the server (as it does against kube-apiserver) instead of
validating client-side. Custom resources also get their schema under
`components.schemas` (for `kubectl explain`). Builtin schemas are not included:
kubectl falls back to its compiled-in types for those.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lab.apiserver.registry import Registry, ResourceType

JsonObj = dict[str, Any]
_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _schema_name(rt: ResourceType) -> str:
    rev = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{rev}.{rt.version}.{rt.kind}"


def _op(rt: ResourceType, action: str, ref: str | None) -> JsonObj:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    op: JsonObj = {
        "operationId": f"{action}{rt.kind}",
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }
    if ref and action in ("put", "post", "get"):
        content = {"application/json": {"schema": {"$ref": ref}}}
        op["responses"] = {"200": {"description": "OK", "content": content}}
    if action in ("patch", "put", "post"):
        # kubectl looks for `fieldValidation` among the operation's own parameters
        op["parameters"] = _params(_QUERY_PARAMS, ())
    if action == "patch":
        op["requestBody"] = {
            "content": {
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
            }
        }
    return op


def _params(names: tuple[str, ...], path_params: tuple[str, ...]) -> list[JsonObj]:
    out: list[JsonObj] = [
        {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}} for n in names
    ]
    out += [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in path_params]
    return out


def gv_document(registry: Registry, group: str, version: str) -> JsonObj | None:
    types = registry.resources(group, version)
    if not types:
        return None
    paths: JsonObj = {}
    schemas: JsonObj = {}
    for rt in types:
        base = "/" + _gv_path(group, version)
        coll = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
        ns_params = ("namespace",) if rt.namespaced else ()
        ref = None
        if rt.custom and rt.schema:
            name = _schema_name(rt)
            schemas[name] = {
                **rt.schema,
                "x-kubernetes-group-version-kind": [
                    {"group": rt.group, "version": rt.version, "kind": rt.kind}
                ],
            }
            ref = f"#/components/schemas/{name}"
        paths[coll] = {
            "parameters": _params(_QUERY_PARAMS, ns_params),
            "get": _op(rt, "list", None),
            "post": _op(rt, "post", ref),
        }
        item: JsonObj = {"parameters": _params(_QUERY_PARAMS, (*ns_params, "name"))}
        for action in ("get", "put", "patch", "delete"):
            item[action] = _op(rt, action, ref)
        paths[f"{coll}/{{name}}"] = item
        if rt.status_subresource:
            status: JsonObj = {"parameters": _params(_QUERY_PARAMS, (*ns_params, "name"))}
            for action in ("get", "put", "patch"):
                status[action] = _op(rt, action, ref)
            paths[f"{coll}/{{name}}/status"] = status
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (lbspeaker lab API server)", "version": "v1.31.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def root_document(registry: Registry) -> JsonObj:
    paths: JsonObj = {}
    gvs = [("", "v1")] + [(g, v) for g, vs in registry.groups().items() for v in vs]
    for g, v in gvs:
        doc = gv_document(registry, g, v)
        if doc is None:
            continue
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[_gv_path(g, v)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={digest}"}
    return {"paths": paths}
