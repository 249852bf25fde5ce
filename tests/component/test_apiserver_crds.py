"""CRDs and custom resources on the lab API server: discovery, defaulting, pruning, 422s, status."""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from lab.apiserver import LabApiServer
from tests.component.test_apiserver import http
from tests.conftest import crd_documents
from tests.helpers import wait_for

pytestmark = pytest.mark.component

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["size"],
            "x-kubernetes-validations": [
                {"rule": "self.size <= self.maxSize", "message": "size must not exceed maxSize"}
            ],
            "properties": {
                "size": {"type": "integer", "minimum": 1},
                "maxSize": {"type": "integer", "default": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "nested": {
                    "type": "object",
                    "default": {},
                    "properties": {"enabled": {"type": "boolean", "default": True}},
                },
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


def ext_api(api_client: Any) -> Any:
    """Typed-client handles as Any: the tests pass plain dicts, as our kube layer does."""
    return client.ApiextensionsV1Api(api_client)


def core_api(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


def apis_api(api_client: Any) -> Any:
    return client.ApisApi(api_client)


def custom_api(api_client: Any) -> Any:
    return client.CustomObjectsApi(api_client)


def widget_crd(scope: str = "Cluster") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.lab"},
        "spec": {
            "group": "test.lab",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
                },
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": False,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
                },
            ],
        },
    }


def widget(obj_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "test.lab/v1", "kind": "Widget", "metadata": {"name": obj_name}, "spec": spec}


@pytest.fixture
def widgets(api_client: Any) -> Any:
    ext: Any = ext_api(api_client)
    crd = ext.create_custom_resource_definition(widget_crd())
    conds = {c.type: c.status for c in crd.status.conditions}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    return custom_api(api_client)


def test_discovery_follows_crds(api_client: Any, apiserver: LabApiServer) -> None:
    code, _ = http(apiserver, "GET", "/apis/test.lab/v1")
    assert code == 404
    ext_api(api_client).create_custom_resource_definition(widget_crd())
    groups = {g.name: g for g in apis_api(api_client).get_api_versions().groups}
    assert [v.version for v in groups["test.lab"].versions] == ["v1", "v1beta1"]
    assert groups["test.lab"].preferred_version.version == "v1"
    code, res = http(apiserver, "GET", "/apis/test.lab/v1")
    assert code == 200 and res["kind"] == "APIResourceList"
    by_name = {r["name"]: r for r in res["resources"]}
    assert by_name["widgets"]["kind"] == "Widget" and by_name["widgets"]["namespaced"] is False
    assert by_name["widgets"]["shortNames"] == ["wd"] and "watch" in by_name["widgets"]["verbs"]
    assert by_name["widgets/status"]["verbs"] == ["get", "patch", "update"]
    ext_api(api_client).delete_custom_resource_definition("widgets.test.lab")
    assert http(apiserver, "GET", "/apis/test.lab/v1")[0] == 404
    assert "test.lab" not in {g.name for g in apis_api(api_client).get_api_versions().groups}


def test_core_discovery(apiserver: LabApiServer) -> None:
    _code, res = http(apiserver, "GET", "/api/v1")
    names = {r["name"] for r in res["resources"]}
    assert {
        "services",
        "services/status",
        "pods",
        "pods/status",
        "nodes",
        "namespaces",
        "configmaps",
        "secrets",
        "events",
    } <= names
    assert http(apiserver, "GET", "/api")[1]["versions"] == ["v1"]
    assert http(apiserver, "GET", "/version")[1]["major"] == "1"
    groups = {g["name"] for g in http(apiserver, "GET", "/apis")[1]["groups"]}
    assert {"discovery.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"} <= groups


def test_defaulting_and_pruning(widgets: Any) -> None:
    obj = widget("w", size=3, unknown="x", extra={"anything": {"goes": 1}})
    obj["topLevelJunk"] = 1
    out = widgets.create_cluster_custom_object("test.lab", "v1", "widgets", obj)
    assert out["spec"] == {
        "size": 3,
        "maxSize": 10,
        "color": "red",
        "extra": {"anything": {"goes": 1}},
        "nested": {"enabled": True},
    }
    assert "topLevelJunk" not in out and out["metadata"]["generation"] == 1
    # the same object served at the other version
    beta = widgets.get_cluster_custom_object("test.lab", "v1beta1", "widgets", "w")
    assert beta["apiVersion"] == "test.lab/v1beta1" and beta["spec"]["size"] == 3


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({}, "spec.size", "Required value"),
        ({"size": "big"}, "spec.size", "must be of type integer"),
        ({"size": 0}, "spec.size", "should be greater than or equal to 1"),
        ({"size": 1, "color": "green"}, "spec.color", 'Unsupported value: "green"'),
        ({"size": 1, "name": "toolong"}, "spec.name", "Too long"),
        ({"size": 1, "name": "AB"}, "spec.name", "should match"),
        ({"size": 1, "tags": ["a", "b", "c"]}, "spec.tags", "Too many"),
    ],
)
def test_schema_violations_are_422(widgets: Any, spec: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ApiException) as e:
        widgets.create_cluster_custom_object("test.lab", "v1", "widgets", widget("bad", **spec))
    assert e.value.status == 422
    body = json.loads(str(e.value.body))
    assert body["reason"] == "Invalid" and body["message"].startswith('Widget.test.lab "bad" is invalid: ')
    assert body["details"]["kind"] == "Widget" and body["details"]["group"] == "test.lab"
    causes = body["details"]["causes"]
    assert any(c["field"] == field and fragment in c["message"] for c in causes), causes


def test_cel_rules_are_422(widgets: Any) -> None:
    pytest.importorskip("lab.cel")
    with pytest.raises(ApiException) as e:
        widgets.create_cluster_custom_object("test.lab", "v1", "widgets", widget("bad", size=11))
    assert e.value.status == 422 and "size must not exceed maxSize" in str(e.value.body)


def test_custom_resource_status_and_patches(widgets: Any, apiserver: LabApiServer) -> None:
    widgets.create_cluster_custom_object(
        "test.lab", "v1", "widgets", {**widget("w", size=2), "status": {"phase": "x"}}
    )
    cur = widgets.get_cluster_custom_object("test.lab", "v1", "widgets", "w")
    assert "status" not in cur  # status is dropped on create when the subresource is on
    out = widgets.patch_cluster_custom_object(
        "test.lab", "v1", "widgets", "w", {"spec": {"size": 4}, "status": {"phase": "ignored"}}
    )
    assert out["spec"]["size"] == 4 and "status" not in out and out["metadata"]["generation"] == 2
    out = widgets.patch_cluster_custom_object_status(
        "test.lab", "v1", "widgets", "w", {"spec": {"size": 5}, "status": {"phase": "Ready"}}
    )
    assert (
        out["status"] == {"phase": "Ready"}
        and out["spec"]["size"] == 4
        and out["metadata"]["generation"] == 2
    )
    # stale replace of the status conflicts
    stale = dict(cur)
    with pytest.raises(ApiException) as e:
        widgets.replace_cluster_custom_object_status("test.lab", "v1", "widgets", "w", stale)
    assert e.value.status == 409
    # strategic merge patch is refused for custom resources, as kube does
    code, body = http(
        apiserver,
        "PATCH",
        "/apis/test.lab/v1/widgets/w",
        {"spec": {"size": 1}},
        "application/strategic-merge-patch+json",
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    # a patch that breaks the schema is a 422 and changes nothing
    with pytest.raises(ApiException) as e:
        widgets.patch_cluster_custom_object("test.lab", "v1", "widgets", "w", {"spec": {"size": -1}})
    assert e.value.status == 422
    assert widgets.get_cluster_custom_object("test.lab", "v1", "widgets", "w")["spec"]["size"] == 4


def test_namespaced_custom_resources_and_watch(api_client: Any) -> None:
    ext_api(api_client).create_custom_resource_definition(widget_crd("Namespaced"))
    co: Any = custom_api(api_client)
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object("test.lab", "v1", "nowhere", "widgets", widget("w", size=1))
    assert e.value.status == 404
    rv = co.list_cluster_custom_object("test.lab", "v1", "widgets")["metadata"]["resourceVersion"]
    co.create_namespaced_custom_object("test.lab", "v1", "default", "widgets", widget("w", size=1))
    co.delete_namespaced_custom_object("test.lab", "v1", "default", "widgets", "w")
    events = [
        (e["type"], e["object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            co.list_cluster_custom_object, "test.lab", "v1", "widgets", resource_version=rv, timeout_seconds=1
        )
    ]
    assert events == [("ADDED", "w"), ("DELETED", "w")]


def test_deleting_a_crd_deletes_its_objects(widgets: Any, api_client: Any) -> None:
    widgets.create_cluster_custom_object("test.lab", "v1", "widgets", widget("w", size=1))
    ext_api(api_client).delete_custom_resource_definition("widgets.test.lab")
    ext_api(api_client).create_custom_resource_definition(widget_crd())
    assert widgets.list_cluster_custom_object("test.lab", "v1", "widgets")["items"] == []


def test_project_crds_apply(apiserver_with_crds: LabApiServer, api_client: Any) -> None:
    docs = crd_documents()
    if not docs:
        pytest.skip("manifests/crds/ has no CRDs yet")
    names = {c.metadata.name for c in ext_api(api_client).list_custom_resource_definition().items}
    assert {d["metadata"]["name"] for d in docs} <= names
    co: Any = custom_api(api_client)
    if "ipaddresspools.lbspeaker.io" in names:
        core_api(api_client).create_namespace({"metadata": {"name": "lbspeaker-system"}})
        pool = {
            "apiVersion": "lbspeaker.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "p"},
            "spec": {"addresses": ["172.18.255.200-172.18.255.250"]},
        }
        out = co.create_namespaced_custom_object(
            "lbspeaker.io", "v1beta1", "lbspeaker-system", "ipaddresspools", pool
        )
        assert out["spec"]["autoAssign"] is True
        bad = {**pool, "metadata": {"name": "bad"}, "spec": {"addresses": ["not-an-ip"]}}
        with pytest.raises(ApiException) as e:
            co.create_namespaced_custom_object(
                "lbspeaker.io", "v1beta1", "lbspeaker-system", "ipaddresspools", bad
            )
        assert e.value.status == 422
        assert (
            'IPAddressPool.lbspeaker.io "bad" is invalid: spec.addresses[0]'
            in json.loads(str(e.value.body))["message"]
        )


def test_tables_for_kubectl(widgets: Any, apiserver: LabApiServer) -> None:
    widgets.create_cluster_custom_object("test.lab", "v1", "widgets", widget("w", size=2))
    req = urllib.request.Request(
        apiserver.url + "/apis/test.lab/v1/widgets",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        table = json.loads(resp.read())
    assert table["kind"] == "Table" and [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Created At",
    ]
    assert table["rows"][0]["cells"][0] == "w"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_openapi_v3_advertises_field_validation(widgets: Any, apiserver: LabApiServer) -> None:
    code, root = http(apiserver, "GET", "/openapi/v3")
    assert code == 200 and "apis/test.lab/v1" in root["paths"] and "api/v1" in root["paths"]
    code, doc = http(apiserver, "GET", root["paths"]["apis/test.lab/v1"]["serverRelativeURL"])
    patch = doc["paths"]["/apis/test.lab/v1/widgets/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "test.lab",
        "version": "v1",
        "kind": "Widget",
    }
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert doc["components"]["schemas"]["lab.test.v1.Widget"]["properties"]["spec"]["required"] == ["size"]


def test_strict_field_validation_rejects_unknown_fields(widgets: Any, apiserver: LabApiServer) -> None:
    code, body = http(
        apiserver,
        "POST",
        "/apis/test.lab/v1/widgets?fieldValidation=Strict",
        widget("w", size=1, colour="red"),
    )
    assert code == 400 and body["reason"] == "BadRequest" and 'unknown field "spec.colour"' in body["message"]
    code, _ = http(apiserver, "POST", "/apis/test.lab/v1/widgets", widget("w", size=1, colour="red"))
    assert code == 201  # without Strict: pruned silently


def test_deleting_a_crd_ends_watches_of_its_resource(
    widgets: Any, api_client: Any, apiserver: LabApiServer
) -> None:
    widgets.create_cluster_custom_object("test.lab", "v1", "widgets", widget("w", size=1))
    rv = widgets.list_cluster_custom_object("test.lab", "v1", "widgets")["metadata"]["resourceVersion"]
    seen: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    watches_before = apiserver.open_watch_count()

    def consume() -> None:
        try:
            for ev in watch.Watch().stream(
                widgets.list_cluster_custom_object,
                "test.lab",
                "v1",
                "widgets",
                resource_version=rv,
                timeout_seconds=20,
            ):
                seen.append(ev["type"])
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    # The CRD goes only once the watch is open: deleted first, the watch is a plain 404.
    wait_for(lambda: apiserver.open_watch_count() == watches_before + 1, timeout=5)
    ext_api(api_client).delete_custom_resource_definition("widgets.test.lab")
    assert done.wait(10), "watch of a deleted CRD's resource should end"
    assert not errors, f"the watch should end cleanly, not with {errors!r}"
    assert seen == ["DELETED"]
