"""The CEL admission policies (manifests/base/admission-policy.yaml, issue 13 #8) evaluated on the
requests they must allow and deny: a speaker writes only its own node's Lease, the controller
creates only its Lease and the heartbeat key Secret. Evaluated with celpy plus the Kubernetes CEL
functions of lab/cel.py (the lab API server does not run admission policies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from lab.cel import FUNCTIONS

POLICIES = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
    (Path(__file__).resolve().parents[2] / "manifests/base/admission-policy.yaml").read_text())
    if d and d["kind"] == "ValidatingAdmissionPolicy"}
ENV = celpy.Environment()
SPEAKER = "system:serviceaccount:lbspeaker-system:speaker"
CONTROLLER = "system:serviceaccount:lbspeaker-system:controller"
NODE_CLAIM = "authentication.kubernetes.io/node-name"


def run(expr: str, activation: dict[str, Any]) -> Any:
    return ENV.program(ENV.compile(expr), functions=FUNCTIONS).evaluate(activation)


def admit(policy: str, request: dict[str, Any], obj: dict[str, Any] | None) -> str | None:
    """None if admitted, else the denial message (as kube-apiserver evaluates a policy)."""
    spec = POLICIES[policy]["spec"]
    act: dict[str, Any] = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj),
                           "oldObject": celpy.json_to_cel(None)}
    if not all(bool(run(m["expression"], act)) for m in spec.get("matchConditions") or []):
        return None
    variables: dict[str, Any] = {}
    for v in spec.get("variables") or []:
        variables[v["name"]] = run(v["expression"], {**act, "variables": celpy.json_to_cel(variables)})
    act["variables"] = celpy.json_to_cel(variables)
    for rule in spec["validations"]:
        if not bool(run(rule["expression"], act)):
            text = run(rule["messageExpression"], act) if "messageExpression" in rule else rule["message"]
            return str(text)
    return None


def req(user: str, op: str, resource: str, name: str, node: str | None = None) -> dict[str, Any]:
    extra = {NODE_CLAIM: [node]} if node else {}
    return {"operation": op, "name": name, "namespace": "lbspeaker-system",
            "resource": {"group": "coordination.k8s.io" if resource == "leases" else "",
                         "resource": resource},
            "userInfo": {"username": user, "extra": extra}}


def lease(name: str, holder: str | None) -> dict[str, Any]:
    spec = {"leaseDurationSeconds": 10} | ({"holderIdentity": holder} if holder is not None else {})
    return {"metadata": {"name": name, "namespace": "lbspeaker-system"}, "spec": spec}


@pytest.mark.parametrize("request_, obj, denied", [
    (req(SPEAKER, "UPDATE", "leases", "speaker-kind-worker", "kind-worker"),
     lease("speaker-kind-worker", "kind-worker"), None),
    (req(SPEAKER, "CREATE", "leases", "speaker-kind-worker", "kind-worker"),
     lease("speaker-kind-worker", "kind-worker"), None),
    (req(SPEAKER, "UPDATE", "leases", "speaker-kind-worker", "kind-worker"),
     lease("speaker-kind-worker", ""), None),  # release on SIGTERM
    (req(SPEAKER, "UPDATE", "leases", "speaker-kind-worker", "kind-worker"),
     lease("speaker-kind-worker", None), None),
    (req(SPEAKER, "UPDATE", "leases", "speaker-kind-worker2", "kind-worker"),
     lease("speaker-kind-worker2", ""), "only its own Lease speaker-kind-worker, not speaker-kind-worker2"),
    (req(SPEAKER, "UPDATE", "leases", "lbspeaker-controller", "kind-worker"),
     lease("lbspeaker-controller", "kind-worker"), "not lbspeaker-controller"),
    (req(SPEAKER, "CREATE", "leases", "speaker-kind-worker", "kind-worker"),
     lease("speaker-kind-worker", "kind-worker2"), "hold its Lease only as kind-worker"),
    (req(SPEAKER, "UPDATE", "leases", "speaker-kind-worker", None),
     lease("speaker-kind-worker", "kind-worker"), "names no node"),
    (req(SPEAKER, "DELETE", "leases", "speaker-kind-worker", "kind-worker"), None, "never delete"),
    (req(CONTROLLER, "UPDATE", "leases", "lbspeaker-controller"), lease("lbspeaker-controller", "c"), None),
    (req("kubernetes-admin", "UPDATE", "leases", "speaker-kind-worker"), lease("speaker-kind-worker", "x"),
     None),
])
def test_speaker_leases(request_: dict[str, Any], obj: dict[str, Any] | None, denied: str | None) -> None:
    got = admit("lbspeaker-speaker-leases", request_, obj)
    if denied is None:
        assert got is None
    else:
        assert got is not None and denied in got, got


def secret(name: str, type_: str = "Opaque") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "lbspeaker-system"}, "type": type_, "data": {}}


@pytest.mark.parametrize("request_, obj, denied", [
    (req(CONTROLLER, "CREATE", "leases", "lbspeaker-controller"), lease("lbspeaker-controller", "c"), False),
    (req(CONTROLLER, "CREATE", "leases", "speaker-kind-worker"), lease("speaker-kind-worker", "c"), True),
    (req(CONTROLLER, "CREATE", "secrets", "lbspeaker-memberlist"), secret("lbspeaker-memberlist"), False),
    (req(CONTROLLER, "CREATE", "secrets", "lbspeaker-memberlist"),
     secret("lbspeaker-memberlist", "kubernetes.io/service-account-token"), True),
    (req(CONTROLLER, "CREATE", "secrets", "other"), secret("other"), True),
    (req(SPEAKER, "CREATE", "secrets", "other"), secret("other"), False),  # not this policy's subject
])
def test_controller_writes(request_: dict[str, Any], obj: dict[str, Any], denied: bool) -> None:
    got = admit("lbspeaker-controller-writes", request_, obj)
    assert (got is not None) is denied, got
    if denied:
        assert "may create only" in str(got)
