"""The EndpointSlice controller stand-in's adapter: writes what a whole recomputation would, and
recomputes only the Services (or, after a Pod or zone change, all of them) that changed."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from lab.agents import endpointslices as eps
from lab.agents.kubeapi import ApiError
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
    """An API server's slice store. Each write reaches the slices informer as the watch event
    that follows would: at once, or (lagging) only when `deliver` is called."""

    def __init__(self, slices: FakeInformer) -> None:
        self.slices = slices
        self.server: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.rv = 0
        self.lagging = False
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.barrier: threading.Barrier | None = None

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        self.pending.append((kind, obj))
        if not self.lagging:
            self.deliver()

    def deliver(self) -> None:
        for kind, obj in self.pending:
            if kind == "DELETED":
                self.slices.objs.pop(("default", obj["metadata"]["name"]), None)
            else:
                self.slices.put(obj)
        self.pending.clear()

    def _store(self, body: dict[str, Any], generation: int) -> dict[str, Any]:
        if self.barrier is not None:
            self.barrier.wait()  # every write of the batch in flight at once, or a timeout
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"].update(resourceVersion=str(self.rv), generation=generation)
        self.server[obj["metadata"]["name"]] = obj
        self._event("MODIFIED", obj)
        return obj

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.server:
            raise ApiError(409, "AlreadyExists")
        return self._store(body, 1)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.calls.append(("replace", name))
        old = self.server.get(name)
        if old is None:
            raise ApiError(404, "NotFound")
        if old["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict")
        return self._store(body, old["metadata"]["generation"] + 1)

    def delete(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        self.calls.append(("delete", name))
        if name not in self.server:
            raise ApiError(404, "NotFound")
        self._event("DELETED", self.server.pop(name))
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
    api.server[key[1]] = edited
    slices.put(edited)
    api.calls.clear()
    ctl.reconcile()
    assert api.calls == [("replace", key[1])]
    assert_slices_are_the_whole_recomputation(services, pods, slices)


def test_a_write_the_informer_has_not_shown_yet_is_not_sent_again(rig: Any) -> None:
    ctl, services, pods, slices, api, _ = rig
    api.lagging = True
    ctl.reconcile()
    ctl.reconcile()  # another event arrives before the creates' watch events
    assert sorted(c for c, _ in api.calls) == ["create", "create"] and ctl.conflicts == 0
    api.deliver()
    api.calls.clear()
    ctl.reconcile()
    assert api.calls == [] and len(ctl.tracker) == 0, "caught up: nothing to write, nothing tracked"

    pods.put(pod("p1", "web", "10.244.1.2", ready=False))
    ctl.reconcile()
    ctl.reconcile()  # the cached copy is a generation behind the replace
    assert [c for c, _ in api.calls] == ["replace"] and ctl.conflicts == 0
    api.deliver()
    del services.objs[("default", "b")]
    api.calls.clear()
    ctl.reconcile()
    ctl.reconcile()  # still cached: the deletion's event has not come
    assert [c for c, _ in api.calls] == ["delete"] and ctl.conflicts == 0
    api.deliver()
    assert_slices_are_the_whole_recomputation(services, pods, slices)


def test_a_write_the_informer_never_shows_is_retried_after_a_while(rig: Any) -> None:
    ctl, *_, api, _ = rig
    now = [0.0]
    ctl.tracker.clock = lambda: now[0]
    api.lagging = True
    ctl.reconcile()
    api.pending.clear()  # the events are lost (merged away by a relist that raced the writes)
    api.calls.clear()
    now[0] = eps.TRACK_SECONDS - 1
    ctl.reconcile()
    assert api.calls == []
    now[0] = eps.TRACK_SECONDS + 1
    ctl.reconcile()
    assert sorted(c for c, _ in api.calls) == ["create", "create"] and ctl.conflicts == 2
    api.calls.clear()
    ctl.reconcile()
    assert api.calls == [], "a create refused as existing waits for the informer, too"


def test_writes_are_sent_concurrently(rig: Any) -> None:
    ctl, services, pods, slices, api, _ = rig
    ctl.reconcile()
    api.calls.clear()
    for i in range(eps.CONCURRENT_WRITES):
        services.put(svc(f"s{i}", app=f"app{i}"))
        pods.put(pod(f"q{i}", f"app{i}", f"10.244.3.{i + 2}"))
    api.barrier = threading.Barrier(eps.CONCURRENT_WRITES, timeout=5)
    ctl.reconcile()
    assert len(api.calls) == eps.CONCURRENT_WRITES
    api.barrier = None
    assert_slices_are_the_whole_recomputation(services, pods, slices)
