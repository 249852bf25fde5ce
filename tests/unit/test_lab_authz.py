"""The lab API server's RBAC (pure): rule matching, binding scopes and kube's 403 message."""

from __future__ import annotations

from typing import Any

import pytest

from lab.apiserver.authz import Request, allowed, forbidden, rule_allows, verb_of

LIST_SVC = Request("alice", "list", "", "services")


@pytest.mark.parametrize(
    ("rule", "req", "ok"),
    [
        ({"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}, LIST_SVC, True),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, LIST_SVC, True),
        ({"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}, LIST_SVC, False),
        ({"apiGroups": ["apps"], "resources": ["services"], "verbs": ["list"]}, LIST_SVC, False),
        (
            {"apiGroups": [""], "resources": ["services"], "verbs": ["update"]},
            Request("a", "update", "", "services", "status"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]},
            Request("a", "update", "", "services", "status"),
            True,
        ),
        (
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["kube-proxy"],
                "verbs": ["get"],
            },
            Request("a", "get", "", "configmaps", name="kube-proxy"),
            True,
        ),
        (
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["kube-proxy"],
                "verbs": ["get"],
            },
            Request("a", "get", "", "configmaps", name="other"),
            False,
        ),
        (
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["kube-proxy"],
                "verbs": ["list"],
            },
            Request("a", "list", "", "configmaps"),
            False,
        ),
    ],
)
def test_rule_allows(rule: dict[str, Any], req: Request, ok: bool) -> None:
    assert rule_allows(rule, req) is ok


def binding(kind: str, role_kind: str, role: str, user: str, ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{user}-{role}"} | ({"namespace": ns} if ns else {})
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"kind": role_kind, "name": role},
        "subjects": [{"kind": "User", "name": user}],
    }


READ = {"rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]}


def test_bindings_and_their_scope() -> None:
    crs = {"read": READ}
    roles = {("ns1", "read"): READ}
    in_ns1 = Request("alice", "list", "", "services", namespace="ns1")
    in_ns2 = Request("alice", "list", "", "services", namespace="ns2")
    # a RoleBinding grants only in its namespace, whether it names a Role or a ClusterRole
    for ref in ("Role", "ClusterRole"):
        rbs = [binding("RoleBinding", ref, "read", "alice", "ns1")]
        assert allowed(in_ns1, roles, crs, rbs, []) and not allowed(in_ns2, roles, crs, rbs, [])
        assert not allowed(LIST_SVC, roles, crs, rbs, [])
    crbs = [binding("ClusterRoleBinding", "ClusterRole", "read", "alice")]
    assert allowed(LIST_SVC, roles, crs, [], crbs) and allowed(in_ns2, roles, crs, [], crbs)
    assert not allowed(Request("bob", "list", "", "services"), roles, crs, [], crbs)
    assert not allowed(LIST_SVC, roles, {}, [], crbs)  # a binding to a missing role grants nothing


@pytest.mark.parametrize(
    ("method", "named", "watch", "verb"),
    [
        ("GET", False, False, "list"),
        ("GET", True, False, "get"),
        ("GET", False, True, "watch"),
        ("POST", False, False, "create"),
        ("PUT", True, False, "update"),
        ("PATCH", True, False, "patch"),
        ("DELETE", True, False, "delete"),
        ("DELETE", False, False, "deletecollection"),
    ],
)
def test_verb_of(method: str, named: bool, watch: bool, verb: str) -> None:
    assert verb_of(method, named, watch) == verb


def test_forbidden_message_is_kubes() -> None:
    assert forbidden(LIST_SVC).message == (
        'services is forbidden: User "alice" cannot list resource "services" in API group "" '
        "at the cluster scope"
    )
    err = forbidden(Request("a", "get", "", "configmaps", namespace="kube-system", name="kube-proxy"))
    assert err.code == 403 and err.reason == "Forbidden"
    assert err.message == (
        'configmaps "kube-proxy" is forbidden: User "a" cannot get resource "configmaps" '
        'in API group "" in the namespace "kube-system"'
    )
    err = forbidden(Request("a", "list", "lbspeaker.io", "ipaddresspools", namespace="x"))
    assert err.message.startswith("ipaddresspools.lbspeaker.io is forbidden: ")
