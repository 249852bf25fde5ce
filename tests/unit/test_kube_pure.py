"""Pure parts of lbspeaker.kube: paths, stream splitting, snapshot diffs, backoff, error parsing."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.facts import key_of
from lbspeaker.kube import resources as r
from lbspeaker.kube.backoff import Backoff
from lbspeaker.kube.cache import ADDED, DELETED, MODIFIED, LineSplitter, diff_snapshots
from lbspeaker.kube.rest import ApiError


@pytest.mark.parametrize(
    ("resource", "ns", "name", "sub", "expected"),
    [
        (r.SERVICES, None, None, None, "/api/v1/services"),
        (r.SERVICES, "default", None, None, "/api/v1/namespaces/default/services"),
        (r.SERVICES, "default", "web", "status", "/api/v1/namespaces/default/services/web/status"),
        (r.NODES, None, "kind-worker", None, "/api/v1/nodes/kind-worker"),
        (r.LEASES, "ns", "l", None, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
        (r.ENDPOINTSLICES, None, None, None, "/apis/discovery.k8s.io/v1/endpointslices"),
        (
            r.CRDS,
            None,
            "x.lbspeaker.io",
            None,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.lbspeaker.io",
        ),
        (
            r.IPADDRESSPOOLS,
            "lbspeaker-system",
            "p",
            "status",
            "/apis/lbspeaker.io/v1beta1/namespaces/lbspeaker-system/ipaddresspools/p/status",
        ),
        (r.BGPPEERS, "n", None, None, "/apis/lbspeaker.io/v1beta2/namespaces/n/bgppeers"),
    ],
)
def test_paths(
    resource: r.Resource, ns: str | None, name: str | None, sub: str | None, expected: str
) -> None:
    assert resource.path(ns, name, sub) == expected


def test_path_rules() -> None:
    assert r.SERVICES.api_version == "v1"
    assert r.BGPPEERS.api_version == "lbspeaker.io/v1beta2"
    assert r.SERVICEL2STATUSES.api_version == "lbspeaker.io/v1beta1"
    with pytest.raises(ValueError):
        r.NODES.path("default", "x")
    with pytest.raises(ValueError):
        r.SERVICES.path("default", None, "status")
    with pytest.raises(ValueError):
        r.SERVICES.path(None, "web")
    assert r.SERVICES.path("a b", "c/d") == "/api/v1/namespaces/a%20b/services/c%2Fd"
    assert r.by_kind("Lease") is r.LEASES


EVENTS = [
    {"type": "ADDED", "object": {"metadata": {"name": f"o{i}", "resourceVersion": str(i)}, "x": "é" * i}}
    for i in range(12)
]
STREAM = b"".join(json.dumps(e).encode() + b"\n" for e in EVENTS)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_line_splitter_any_cut(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    s = LineSplitter()
    lines = [line for c in chunks for line in s.feed(c)]
    assert [json.loads(x) for x in lines] == EVENTS
    assert s.pending == 0


def test_line_splitter_keeps_partial_line_and_skips_blank() -> None:
    s = LineSplitter()
    assert s.feed(b'{"a":1}\n\n  \n{"b"') == [b'{"a":1}']
    assert s.pending == 4
    assert s.feed(b":2}\r\n") == [b'{"b":2}']
    assert s.pending == 0


def test_line_splitter_limit() -> None:
    s = LineSplitter(max_line=10)
    with pytest.raises(ValueError):
        s.feed(b"x" * 11)


def obj(name: str, rv: str, uid: str = "u", ns: str = "d") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": uid + name}}


def snap(*objs: dict) -> dict:
    return {key_of(o): o for o in objs}


def test_diff_snapshots() -> None:
    old = snap(obj("keep", "1"), obj("mod", "2"), obj("gone", "3"), obj("recreated", "4"))
    new = snap(obj("keep", "1"), obj("mod", "9"), obj("new", "10"), obj("recreated", "11", uid="v"))
    got = [(t, o["metadata"]["name"], o["metadata"]["resourceVersion"]) for t, o in diff_snapshots(old, new)]
    assert sorted(got) == sorted(
        [
            (DELETED, "gone", "3"),
            (MODIFIED, "mod", "9"),
            (ADDED, "new", "10"),
            (DELETED, "recreated", "4"),
            (ADDED, "recreated", "11"),
        ]
    )
    # the DELETED of a re-created object comes before its ADDED
    names = [(t, o["metadata"]["name"]) for t, o in diff_snapshots(old, new)]
    assert names.index((DELETED, "recreated")) < names.index((ADDED, "recreated"))
    assert diff_snapshots(old, old) == []
    assert [t for t, _ in diff_snapshots({}, old)] == [ADDED] * 4


def test_backoff_grows_caps_resets() -> None:
    b = Backoff(initial=0.1, cap=1.0, jitter=0.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == pytest.approx(0.1)


def test_backoff_jitter_bounds() -> None:
    b = Backoff(initial=1.0, cap=4.0, jitter=0.5, rng=random.Random(1))
    for _ in range(100):
        d = b.next()
        assert 0.5 * min(4.0, 2 ** (b.attempt - 1)) <= d <= min(4.0, 2 ** (b.attempt - 1))
    delays = {round(Backoff(initial=1.0, jitter=0.5).next(), 6) for _ in range(20)}
    assert len(delays) > 1  # really jittered


def test_api_error_from_status_body() -> None:
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": "the object has been modified",
            "reason": "Conflict",
            "code": 409,
            "details": {"name": "x", "kind": "services"},
        }
    ).encode()
    e = ApiError.from_body(409, "Conflict", body)
    assert (e.status, e.reason, e.message) == (409, "Conflict", "the object has been modified")
    assert e.conflict and not e.already_exists and not e.retriable
    assert e.details["name"] == "x"
    e2 = ApiError.from_body(503, "Service Unavailable", b"<html>oops</html>")
    assert (e2.status, e2.reason, e2.message) == (503, "Service Unavailable", "<html>oops</html>")
    assert e2.retriable
    e3 = ApiError.from_status({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    assert e3.gone and e3.message == "too old"


def test_load_api_client_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from kubernetes import config as k8s_config

    from lbspeaker.kube import client as kclient

    def fake_incluster(client_configuration: Any = None, **_: Any) -> None:
        client_configuration.host = "https://10.96.0.1:443"

    monkeypatch.setattr(k8s_config, "load_incluster_config", fake_incluster)
    kc = tmp_path / "kc"
    kc.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:6443"}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    api = kclient.load_api_client(str(kc))  # an explicit file wins even inside a pod
    assert api.configuration.host == "http://127.0.0.1:6443" and api.configuration.retries is False
    api = kclient.load_api_client(None)
    assert api.configuration.host == "https://10.96.0.1:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    assert kclient.load_api_client(None).configuration.host == "http://127.0.0.1:6443"
