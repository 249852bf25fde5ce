"""The lab API server against the official `kubernetes` client, end to end over HTTP."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from lab.apiserver import LabApiServer
from tests.helpers import wait_for

pytestmark = pytest.mark.component


def http(
    server: LabApiServer, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    """Raw request (for content types the official client never sends); returns (code, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def svc_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}], **spec},
    }


def cm_body(
    name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data or {},
    }


def test_namespaces_exist_at_start(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    names = {ns.metadata.name: ns for ns in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names)
    assert names["kube-system"].metadata.labels["kubernetes.io/metadata.name"] == "kube-system"
    assert names["default"].status.phase == "Active"


def test_crud_roundtrip_and_resource_versions(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map("default", cm_body("a", data={"k": "v"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    rv1 = int(created.metadata.resource_version)
    got = core.read_namespaced_config_map("a", "default")
    assert got.data == {"k": "v"} and got.metadata.resource_version == str(rv1)
    got.data["k"] = "w"
    updated = core.replace_namespaced_config_map("a", "default", got)
    assert int(updated.metadata.resource_version) > rv1
    patched = core.patch_namespaced_config_map("a", "default", {"data": {"x": "y"}})
    assert patched.data == {"k": "w", "x": "y"}
    lst = core.list_namespaced_config_map("default")
    assert [c.metadata.name for c in lst.items] == ["a"]
    assert int(lst.metadata.resource_version) >= int(patched.metadata.resource_version)
    core.delete_namespaced_config_map("a", "default")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("a", "default")
    assert e.value.status == 404


def test_stale_update_conflicts_and_create_twice(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", cm_body("a"))
    stale = core.read_namespaced_config_map("a", "default")
    core.patch_namespaced_config_map("a", "default", {"data": {"n": "1"}})
    stale.data = {"n": "2"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", "default", stale)
    assert e.value.status == 409 and '"reason":"Conflict"' in str(e.value.body).replace(" ", "")
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", cm_body("a"))
    assert e.value.status == 409 and "AlreadyExists" in str(e.value.body)


def test_missing_namespace_is_404(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("nope", cm_body("a"))
    assert e.value.status == 404 and 'namespaces \\"nope\\" not found' in str(e.value.body)


def test_generate_name_and_generation(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    svc = core.create_namespaced_service(
        "default", {"metadata": {"generateName": "web-"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert svc.metadata.name.startswith("web-") and len(svc.metadata.name) == 9
    assert svc.metadata.generation == 1
    svc2 = core.patch_namespaced_service_status(
        svc.metadata.name, "default", {"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}
    )
    assert svc2.metadata.generation == 1
    svc3 = core.patch_namespaced_service(
        svc.metadata.name, "default", {"spec": {"sessionAffinity": "ClientIP"}}
    )
    assert svc3.metadata.generation == 2


def test_status_subresource_semantics(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_service("default", svc_body("s", type="LoadBalancer"))
    # main endpoint ignores status
    out = core.patch_namespaced_service(
        "s",
        "default",
        {"status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}, "metadata": {"labels": {"a": "b"}}},
    )
    assert out.status.load_balancer.ingress is None and out.metadata.labels == {"a": "b"}
    # /status changes only status
    out = core.patch_namespaced_service_status(
        "s",
        "default",
        {
            "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1", "ipMode": "VIP"}]}},
            "spec": {"sessionAffinity": "ClientIP"},
            "metadata": {"labels": {"c": "d"}},
        },
    )
    assert out.status.load_balancer.ingress[0].ip == "1.1.1.1"
    assert out.spec.session_affinity == "None" and out.metadata.labels == {"a": "b"}
    # replace_status with a stale resourceVersion conflicts
    stale = core.read_namespaced_service("s", "default")
    core.patch_namespaced_service("s", "default", {"metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_service_status("s", "default", stale)
    assert e.value.status == 409


def test_service_allocation_like_kube(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    a = core.create_namespaced_service("default", svc_body("a"))
    assert a.spec.cluster_ip.startswith("10.96.") and a.spec.cluster_ips == [a.spec.cluster_ip]
    assert a.spec.ip_families == ["IPv4"] and a.spec.ip_family_policy == "SingleStack"
    assert a.spec.type == "ClusterIP" and a.spec.session_affinity == "None"
    assert a.spec.ports[0].protocol == "TCP" and a.spec.ports[0].target_port == 80
    assert a.spec.ports[0].node_port is None
    lb = core.create_namespaced_service(
        "default",
        svc_body("lb", type="LoadBalancer", externalTrafficPolicy="Local", ipFamilyPolicy="PreferDualStack"),
    )
    assert 30000 <= lb.spec.ports[0].node_port <= 32767
    assert 30000 <= lb.spec.health_check_node_port <= 32767
    assert lb.spec.ip_families == ["IPv4", "IPv6"] and len(lb.spec.cluster_ips) == 2
    assert lb.spec.cluster_ips[1].startswith("fd00:10:96::")
    np = core.create_namespaced_service("default", svc_body("np", type="NodePort"))
    assert np.spec.external_traffic_policy == "Cluster" and np.spec.ports[0].node_port
    noports = core.create_namespaced_service(
        "default", svc_body("lb2", type="LoadBalancer", allocateLoadBalancerNodePorts=False)
    )
    assert noports.spec.ports[0].node_port is None
    headless = core.create_namespaced_service("default", svc_body("h", clusterIP="None"))
    assert headless.spec.cluster_ip == "None"
    # requested clusterIP honoured, then taken
    fixed = core.create_namespaced_service("default", svc_body("f", clusterIP="10.96.100.100"))
    assert fixed.spec.cluster_ip == "10.96.100.100"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service("default", svc_body("g", clusterIP="10.96.100.100"))
    assert e.value.status == 422 and "already allocated" in str(e.value.body)
    # freed on delete
    core.delete_namespaced_service("f", "default")
    assert core.create_namespaced_service("default", svc_body("g", clusterIP="10.96.100.100")).spec.cluster_ip
    # a kept nodePort survives a replace that omits it
    cur = core.read_namespaced_service("np", "default")
    port = cur.spec.ports[0].node_port
    cur.spec.ports[0].node_port = None
    assert core.replace_namespaced_service("np", "default", cur).spec.ports[0].node_port == port
    # invalid: duplicate port
    bad = svc_body("dup")
    bad["spec"]["ports"] = [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service("default", bad)
    assert e.value.status == 422 and "Duplicate value" in str(e.value.body)


def test_label_and_field_selectors(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("default", cm_body("a", {"app": "x", "tier": "web"}))
    core.create_namespaced_config_map("default", cm_body("b", {"app": "y"}))
    core.create_namespaced_config_map("other", cm_body("c", {"app": "x"}))

    def names(**kw: Any) -> list[str]:
        return sorted(c.metadata.name for c in core.list_config_map_for_all_namespaces(**kw).items)

    assert names(label_selector="app=x") == ["a", "c"]
    assert names(label_selector="app==x,tier") == ["a"]
    assert names(label_selector="app!=x") == ["b"]
    assert names(label_selector="app in (x, y)") == ["a", "b", "c"]
    assert names(label_selector="app notin (x)") == ["b"]
    assert names(label_selector="!tier") == ["b", "c"]
    assert names(field_selector="metadata.namespace=other") == ["c"]
    assert names(field_selector="metadata.name!=a") == ["b", "c"]
    with pytest.raises(ApiException) as e:
        core.list_config_map_for_all_namespaces(field_selector="spec.nodeName=x")
    assert e.value.status == 400
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}
    created = core.create_namespaced_pod("default", pod)
    assert created.status.phase == "Pending"
    assert [
        p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items
    ] == ["p"]
    assert core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items == []


def test_limit_and_continue(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    for i in range(5):
        core.create_namespaced_config_map("default", cm_body(f"c{i}"))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["c0", "c1"] and first.metadata._continue
    rest = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["c2", "c3", "c4"] and not rest.metadata._continue


def test_finalizers_delay_deletion(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", {"metadata": {"name": "f", "finalizers": ["x/y"]}})
    core.delete_namespaced_config_map("f", "default", propagation_policy="Foreground")
    obj = core.read_namespaced_config_map("f", "default")
    assert obj.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("f", "default")
    assert e.value.status == 404


def _collect(w: watch.Watch, stream: Any, out: list[tuple[str, str, str]], stop_after: int) -> None:
    for ev in stream:
        obj = ev["raw_object"]
        out.append((ev["type"], obj["metadata"].get("name", ""), obj["metadata"]["resourceVersion"]))
        if len(out) >= stop_after:
            w.stop()


def test_watch_initial_replay_and_live(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", cm_body("a"))
    # without resourceVersion: synthetic ADDED for the current state, then live events
    w = watch.Watch()
    events: list[tuple[str, str, str]] = []
    t = threading.Thread(
        target=_collect,
        args=(w, w.stream(core.list_namespaced_config_map, "default", timeout_seconds=10), events, 3),
    )
    t.start()
    wait_for(lambda: events, timeout=5)
    core.create_namespaced_config_map("default", cm_body("b"))
    core.delete_namespaced_config_map("a", "default")
    t.join(10)
    assert [(e[0], e[1]) for e in events] == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    # from a resourceVersion: replay exactly what came after it
    rv = events[0][2]
    w2 = watch.Watch()
    replay = [
        (e["type"], e["raw_object"]["metadata"]["name"])
        for e in w2.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1)
    ]
    assert replay == [("ADDED", "b"), ("DELETED", "a")]


def test_watch_bookmarks(api_client: Any, apiserver: LabApiServer) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", cm_body("a"))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    w = watch.Watch()
    for ev in w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        if ev["type"] == "BOOKMARK":
            assert ev["raw_object"]["metadata"]["resourceVersion"] == str(apiserver.resource_version)
            w.stop()
            break
    else:
        pytest.fail("no BOOKMARK within timeoutSeconds")


def test_watch_too_old_resource_version_gets_410(api_client: Any, apiserver: LabApiServer) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", cm_body("a"))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    apiserver.expire_history()
    resp = core.list_namespaced_config_map(
        "default", watch=True, resource_version=rv, _preload_content=False, timeout_seconds=5
    )
    lines = [json.loads(line) for line in resp.read().decode().splitlines() if line]
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["code"] == 410 and lines[0]["object"]["reason"] == "Expired"
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
        ):
            pass
    assert e.value.status == 410
    # a fresh list's resourceVersion works again
    rv2 = core.list_namespaced_config_map("default").metadata.resource_version
    assert (
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map, "default", resource_version=rv2, timeout_seconds=1
            )
        )
        == []
    )


def test_history_window_bounded(lab_apiserver_factory: Any, tmp_path: Any) -> None:
    server = lab_apiserver_factory(event_history_size=3)
    from kubernetes import config

    cfg: Any = client.Configuration()
    config.load_kube_config(
        config_file=str(server.write_kubeconfig(tmp_path / "kc")), client_configuration=cfg
    )
    with client.ApiClient(cfg) as api:
        core: Any = client.CoreV1Api(api)
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(5):
            core.create_namespaced_config_map("default", cm_body(f"c{i}"))
        with pytest.raises(ApiException) as e:
            list(
                watch.Watch().stream(
                    core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2
                )
            )
        assert e.value.status == 410


def test_watch_selectors_and_leaving_selector(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", cm_body("a", {"app": "x"}))
    core.create_namespaced_config_map("default", cm_body("b", {"app": "y"}))
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "z"}}})
    got = [
        (e["type"], e["raw_object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=rv,
            label_selector="app=x",
            timeout_seconds=1,
        )
    ]
    assert got == [("ADDED", "a"), ("DELETED", "a")]


def test_cut_watches_breaks_streams(api_client: Any, apiserver: LabApiServer) -> None:
    core: Any = client.CoreV1Api(api_client)
    errors: list[BaseException] = []
    finished = threading.Event()

    def run() -> None:
        try:
            for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=20):
                pass
        except Exception as e:
            errors.append(e)
        finished.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: apiserver.open_watch_count() == 1, timeout=5)
    assert apiserver.cut_watches() == 1
    assert finished.wait(5), "watch did not end after cut_watches()"
    assert errors, "an abruptly cut stream must surface as an error, not a clean end"
    wait_for(lambda: apiserver.open_watch_count() == 0, timeout=5)


def test_patch_types(api_client: Any, apiserver: LabApiServer) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
        },
    )
    # strategic merge (the client's default for dicts): containers merge by name
    out = core.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "b", "image": "z"}]}})
    assert [(c.name, c.image) for c in out.spec.containers] == [("a", "x"), ("b", "z")]
    out = core.patch_namespaced_pod_status(
        "p", "default", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    out = core.patch_namespaced_pod_status(
        "p",
        "default",
        {"status": {"phase": "Running", "conditions": [{"type": "ContainersReady", "status": "True"}]}},
    )
    assert {c.type for c in out.status.conditions} == {"Ready", "ContainersReady"}
    assert out.status.phase == "Running"
    # JSON patch (a list body)
    out = core.patch_namespaced_pod(
        "p", "default", [{"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}]
    )
    assert out.metadata.labels == {"k": "v"}
    # merge patch (what CustomObjectsApi sends): lists replaced, maps merged
    code, body = http(
        apiserver,
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        {"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "w"}]}},
        "application/merge-patch+json",
    )
    assert code == 200 and body["metadata"]["annotations"] == {"a": "b"}
    assert [c["name"] for c in body["spec"]["containers"]] == ["c"]
    code, body = http(
        apiserver, "PATCH", "/api/v1/namespaces/default/pods/p", {}, "application/apply-patch+yaml"
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


def test_errors_are_status_objects(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_service("missing", "default")
    body = json.loads(str(e.value.body))
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["reason"] == "NotFound" and body["code"] == 404
    assert body["details"] == {"name": "missing", "kind": "services"}


def test_leases_nodes_endpointslices(api_client: Any) -> None:
    coord: Any = client.CoordinationV1Api(api_client)
    lease = coord.create_namespaced_lease(
        "kube-system",
        {"metadata": {"name": "l"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}},
    )
    assert lease.spec.holder_identity == "me"
    core: Any = client.CoreV1Api(api_client)
    node = core.create_node(
        {
            "metadata": {"name": "n1"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
            },
        }
    )
    assert node.status.conditions[0].type == "Ready"  # nodes keep status on create
    disc: Any = client.DiscoveryV1Api(api_client)
    es = disc.create_namespaced_endpoint_slice(
        "default",
        {
            "metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.2"]}],
            "ports": [{"port": 80}],
        },
    )
    assert es.address_type == "IPv4"
    assert (
        len(disc.list_endpoint_slice_for_all_namespaces(label_selector="kubernetes.io/service-name=s").items)
        == 1
    )


def test_many_services_and_a_watcher(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    seen: list[str] = []
    w = watch.Watch()

    def consume() -> None:
        # Watch.stop() shuts the client socket down, which may surface as a ProtocolError: expected
        with contextlib.suppress(Exception):
            for e in w.stream(core.list_service_for_all_namespaces, timeout_seconds=60):
                seen.append(e["type"])

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    for i in range(300):
        core.create_namespaced_service("default", svc_body(f"s{i}", type="LoadBalancer"))
    wait_for(lambda: seen.count("ADDED") >= 300, timeout=30)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    ips = {s.spec.cluster_ip for s in core.list_namespaced_service("default").items}
    assert len(ips) == 300


def test_quiet_resource_stays_watchable_while_others_churn(lab_apiserver_factory: Any, tmp_path: Any) -> None:
    """History is kept per resource (like kube's per-type watch cache), not globally."""
    server = lab_apiserver_factory(event_history_size=3)
    _, listed = http(server, "GET", "/api/v1/namespaces/default/secrets")
    rv = listed["metadata"]["resourceVersion"]
    for i in range(6):
        assert http(server, "POST", "/api/v1/namespaces/default/configmaps", cm_body(f"c{i}"))[0] == 201
    with urllib.request.urlopen(
        f"{server.url}/api/v1/namespaces/default/secrets?watch=true&resourceVersion={rv}&timeoutSeconds=1",
        timeout=5,
    ) as resp:
        assert resp.read() == b""  # no ERROR event: still watchable, nothing happened
    with urllib.request.urlopen(
        f"{server.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1",
        timeout=5,
    ) as resp:
        lines = resp.read().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["object"]["code"] == 410


def test_deletecollection_legacy_watch_path_and_ipv6(api_client: Any, apiserver: LabApiServer) -> None:
    core: Any = client.CoreV1Api(api_client)
    for i, app in enumerate(["x", "x", "y"]):
        core.create_namespaced_config_map("default", cm_body(f"c{i}", {"app": app}))
    core.delete_collection_namespaced_config_map("default", label_selector="app=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == ["c2"]
    with urllib.request.urlopen(
        f"{apiserver.url}/api/v1/watch/namespaces/default/configmaps/c2?timeoutSeconds=1", timeout=5
    ) as resp:
        lines = [json.loads(x) for x in resp.read().splitlines()]
    assert [(x["type"], x["object"]["metadata"]["name"]) for x in lines] == [("ADDED", "c2")]
    v6 = core.create_namespaced_service("default", svc_body("v6", ipFamilies=["IPv6"]))
    assert v6.spec.ip_families == ["IPv6"] and v6.spec.cluster_ip.startswith("fd00:10:96::")
    assert http(apiserver, "DELETE", "/api/v1/namespaces/default/services/v6/status")[0] == 405


def test_optimistic_concurrency_loses_no_increment(api_client: Any) -> None:
    """Read-modify-write from several threads, retried on 409: every increment lands exactly once."""
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", cm_body("counter", data={"n": "0"}))
    conflicts: list[int] = []

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                cur = core.read_namespaced_config_map("counter", "default")
                cur.data["n"] = str(int(cur.data["n"]) + 1)
                try:
                    core.replace_namespaced_config_map("counter", "default", cur)
                    break
                except ApiException as e:
                    assert e.status == 409
                    conflicts.append(1)

    threads = [threading.Thread(target=bump, args=(15,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert core.read_namespaced_config_map("counter", "default").data["n"] == "60"


def test_pod_binding_and_graceful_deletion(api_client: Any, apiserver: LabApiServer) -> None:
    core: Any = client.CoreV1Api(api_client)
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    created = core.create_namespaced_pod("default", pod)
    assert created.spec.node_name is None and created.status.phase == "Pending"
    code, body = http(
        apiserver,
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p", "uid": created.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
        },
    )
    assert code == 201 and body["status"] == "Success"
    bound = core.read_namespaced_pod("p", "default")
    assert bound.spec.node_name == "n1"
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
    code, body = http(
        apiserver, "POST", "/api/v1/namespaces/default/pods/p/binding", {"target": {"name": "n2"}}
    )
    assert code == 409
    # a bound pod is deleted gracefully: it stays, terminating, until a delete with grace 0 (the kubelet's)
    core.delete_namespaced_pod("p", "default")
    terminating = core.read_namespaced_pod("p", "default")
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p", "default")
    assert e.value.status == 404
    # an unbound pod goes at once
    core.create_namespaced_pod("default", {**pod, "metadata": {"name": "q"}})
    core.delete_namespaced_pod("q", "default")
    assert core.list_namespaced_pod("default").items == []


def test_service_status_is_validated(api_client: Any) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_service("default", svc_body("s", type="LoadBalancer"))
    for bad in ([{"ip": "not-an-ip"}], [{"ipMode": "VIP"}], [{"ip": "1.2.3.4", "ipMode": "Bogus"}]):
        with pytest.raises(ApiException) as e:
            core.patch_namespaced_service_status(
                "s", "default", {"status": {"loadBalancer": {"ingress": bad}}}
            )
        assert e.value.status == 422, bad
    ok = core.patch_namespaced_service_status(
        "s",
        "default",
        {
            "status": {
                "loadBalancer": {"ingress": [{"ip": "fd00::1", "ipMode": "VIP"}, {"hostname": "lb.example"}]}
            }
        },
    )
    assert ok.status.load_balancer.ingress[0].ip == "fd00::1"


# -- a resourceVersion the store has not reached (a store restored from backup, or reset) ----------


def _watch_lines(server: LabApiServer, query: str) -> list[dict[str, Any]]:
    """Every line of one watch request that ends by its timeoutSeconds (or an ERROR)."""
    url = f"{server.url}/api/v1/namespaces/default/configmaps?watch=true&{query}"
    with urllib.request.urlopen(url, timeout=15) as resp:
        assert resp.status == 200
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


def test_list_at_a_future_resource_version_is_504_too_large(lab_apiserver_factory: Any) -> None:
    server = lab_apiserver_factory(rv_block_timeout=0.3)
    ahead = server.resource_version + 5
    code, body = http(server, "GET", f"/api/v1/namespaces/default/configmaps?resourceVersion={ahead}")
    assert code == 504
    assert body["reason"] == "Timeout" and body["code"] == 504
    assert body["message"] == f"Timeout: Too large resource version: {ahead}, current: {ahead - 5}"
    assert body["details"]["retryAfterSeconds"] == 1
    assert body["details"]["causes"] == [
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    ]
    # Exact goes to etcd in kube, which refuses a future revision at once and gives no retry hint
    code, body = http(
        server,
        "GET",
        f"/api/v1/namespaces/default/configmaps?resourceVersion={ahead}&resourceVersionMatch=Exact",
    )
    assert code == 504 and "retryAfterSeconds" not in body["details"]
    # "0", "" and a reached resourceVersion are served as before
    for rv in ("0", "", str(ahead - 5)):
        assert http(server, "GET", f"/api/v1/namespaces/default/configmaps?resourceVersion={rv}")[0] == 200



def _started(request: Callable[[], object]) -> threading.Thread:
    """`request` on a thread of its own, started: a client blocked on the server while the test
    goes on to unblock it."""
    t = threading.Thread(target=request)
    t.start()
    return t

def test_list_waits_for_a_resource_version_reached_meanwhile(lab_apiserver_factory: Any) -> None:
    server = lab_apiserver_factory(rv_block_timeout=10.0)
    ahead = server.resource_version + 1
    got: list[tuple[int, Any]] = []
    t = _started(lambda: got.append(
        http(server, "GET", f"/api/v1/namespaces/default/configmaps?resourceVersion={ahead}")))
    http(server, "POST", "/api/v1/namespaces/default/configmaps", cm_body("late"))
    t.join(15)
    code, body = got[0]
    assert code == 200 and int(body["metadata"]["resourceVersion"]) >= ahead
    assert [i["metadata"]["name"] for i in body["items"]] == ["late"]


def test_watch_from_a_future_resource_version_is_silent_until_reached(lab_apiserver_factory: Any) -> None:
    """kube's cache watcher: accepted at once, no event or bookmark at or below its resourceVersion."""
    server = lab_apiserver_factory(bookmark_interval=0.1)
    ahead = server.resource_version + 3
    lines: list[dict[str, Any]] = []
    t = _started(lambda: lines.extend(
        _watch_lines(server, f"resourceVersion={ahead}&allowWatchBookmarks=true&timeoutSeconds=3")))
    wait_for(lambda: server.open_watch_count() == 1, 5)
    for i in range(5):
        http(server, "POST", "/api/v1/namespaces/default/configmaps", cm_body(f"c{i}"))
    t.join(15)
    events = [(x["type"], x["object"]["metadata"]["name"]) for x in lines if x["type"] != "BOOKMARK"]
    assert events == [("ADDED", "c3"), ("ADDED", "c4")]
    bookmarks = [int(x["object"]["metadata"]["resourceVersion"]) for x in lines if x["type"] == "BOOKMARK"]
    assert bookmarks and min(bookmarks) >= ahead


def test_watch_list_from_a_future_resource_version_gets_error_504(lab_apiserver_factory: Any) -> None:
    server = lab_apiserver_factory(rv_block_timeout=0.3)
    ahead = server.resource_version + 5
    lines = _watch_lines(
        server,
        f"resourceVersion={ahead}&resourceVersionMatch=NotOlderThan&sendInitialEvents=true"
        "&allowWatchBookmarks=true&timeoutSeconds=5",
    )
    assert [x["type"] for x in lines] == ["ERROR"]
    status = lines[0]["object"]
    assert status["code"] == 504 and status["reason"] == "Timeout"
    assert status["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_restart_with_the_store_kept_expires_old_resource_versions(lab_apiserver_factory: Any) -> None:
    """A restarted kube-apiserver's watch cache starts at the current resourceVersion."""
    first = lab_apiserver_factory()
    http(first, "POST", "/api/v1/namespaces/default/configmaps", cm_body("kept"))
    old_rv = first.resource_version - 1
    state = first.kill()
    second = lab_apiserver_factory(initial_state=state)
    code, body = http(second, "GET", "/api/v1/namespaces/default/configmaps")
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["kept"]
    assert body["metadata"]["resourceVersion"] == str(old_rv + 1)
    lines = _watch_lines(second, f"resourceVersion={old_rv}&timeoutSeconds=2")
    assert [(x["type"], x["object"]["code"]) for x in lines] == [("ERROR", 410)]
