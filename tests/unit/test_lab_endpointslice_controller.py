"""The EndpointSlice controller stand-in's adapter: writes what a whole recomputation would, and
recomputes only the Services (or, after a Pod or zone change, all of them) that changed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lab.agents import endpointslices as eps
from lab.agents.slices import desired_slices
from tests.unit.test_lab_kubeproxy import FakeInformer


def svc(name: str, app: str = "web", target: int = 8080) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": target, "protocol": "TCP"}]},
    }


def pod(name: str, app: str, ip: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": {"app": app}},
        "spec": {"nodeName": "kind-worker"},
        "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class FakeApi:
    """Applies writes to the slices informer, as the watch event that follows would."""

    def __init__(self, slices: FakeInformer) -> None:
        self.slices = slices
        self.calls: list[tuple[str, str]] = []
        self.rv = 0

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.slices.put(obj)
        return obj

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", body["metadata"]["name"]))
        return self._store(body)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("replace", body["metadata"]["name"]))
        return self._store(body)

    def delete(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        self.calls.append(("delete", name))
        del self.slices.objs[("default", name)]
        return {}


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Any:
    services = FakeInformer([svc("a"), svc("b", app="db")])
    pods = FakeInformer([pod("p1", "web", "10.244.1.2"), pod("p2", "db", "10.244.2.2")])
    slices = FakeInformer()
    api = FakeApi(slices)
    ctl = eps.EndpointSliceController(api, services, pods, slices, FakeInformer())  # type: ignore[arg-type]
    computed: list[str] = []

    def counting(service: dict[str, Any], *args: Any) -> list[dict[str, Any]]:
        computed.append(service["metadata"]["name"])
        return desired_slices(service, *args)

    monkeypatch.setattr(eps, "desired_slices", counting)
    return ctl, services, pods, slices, api, computed


def assert_slices_are_the_whole_recomputation(
    services: FakeInformer, pods: FakeInformer, slices: FakeInformer
) -> None:
    want = {s["metadata"]["name"]: s for v in services.items() for s in desired_slices(v, pods.items(), {})}
    have = {k[1]: s for k, s in slices.objs.items()}
    assert set(have) == set(want)
    for name, s in want.items():
        assert have[name]["endpoints"] == s["endpoints"] and have[name]["ports"] == s["ports"], name


def test_only_changed_services_are_recomputed_and_writes_match_a_whole_recomputation(rig: Any) -> None:
    ctl, services, pods, slices, api, computed = rig
    ctl.reconcile()
    assert sorted(c for c, _ in api.calls) == ["create", "create"] and sorted(computed) == ["a", "b"]
    assert_slices_are_the_whole_recomputation(services, pods, slices)

    api.calls.clear(), computed.clear()
    ctl.reconcile()
    assert api.calls == [] and computed == [], "nothing changed: nothing recomputed, nothing written"

    services.put(svc("a"))  # an event with nothing new for slices: recomputed, not written
    ctl.reconcile()
    assert computed == ["a"] and api.calls == []
    computed.clear()
    services.put(svc("a", target=8081))  # a new port set: a slice of a new name
    ctl.reconcile()
    assert computed == ["a"] and [c for c, _ in api.calls] == ["create", "delete"]
    assert_slices_are_the_whole_recomputation(services, pods, slices)

    api.calls.clear(), computed.clear()
    pods.put(pod("p1", "web", "10.244.1.2", ready=False))  # a Pod changes: every Service may
    ctl.reconcile()
    assert sorted(computed) == ["a", "b"] and [c for c, _ in api.calls] == ["replace"]
    assert_slices_are_the_whole_recomputation(services, pods, slices)

    api.calls.clear(), computed.clear()
    del services.objs[("default", "b")]
    ctl.reconcile()
    assert computed == [] and [c for c, _ in api.calls] == ["delete"]
    assert_slices_are_the_whole_recomputation(services, pods, slices)


def test_a_slice_edited_by_someone_else_is_put_back(rig: Any) -> None:
    ctl, services, pods, slices, api, _ = rig
    ctl.reconcile()
    key = next(k for k in slices.objs if k[1].startswith("a-"))
    edited = copy.deepcopy(slices.objs[key])
    edited["endpoints"] = []
    slices.put(edited)
    api.calls.clear()
    ctl.reconcile()
    assert api.calls == [("replace", key[1])]
    assert_slices_are_the_whole_recomputation(services, pods, slices)
