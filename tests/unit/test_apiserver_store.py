"""Store semantics of the lab API server, driven directly (no HTTP): watch replay, conflicts, finalizers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.apiserver.errors import ApiError
from lab.apiserver.registry import Registry, ResourceType
from lab.apiserver.store import Store


def make_store(history: int = 10000) -> tuple[Store, ResourceType]:
    registry = Registry()
    rt = registry.get("", "v1", "configmaps")
    assert rt is not None
    return Store(registry, history), rt


def state(store: Store, rt: ResourceType) -> dict[str, Any]:
    return {o["metadata"]["name"]: o.get("data") for o in store.list_objects(rt, "default", [], [])["items"]}


ops = st.lists(
    st.tuples(
        st.sampled_from(["create", "update", "delete", "mark"]), st.sampled_from("abcd"), st.integers(0, 3)
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_watch_from_any_list_rv_reconstructs_the_final_state(sequence: list[tuple[str, str, int]]) -> None:
    store, rt = make_store()
    marks: list[tuple[str, dict[str, Any]]] = []
    last_rv = store.rv
    for op, name, value in sequence:
        try:
            if op == "create":
                store.create(rt, "default", {"metadata": {"name": name}, "data": {"v": str(value)}})
            elif op == "update":
                store.patch(rt, "default", name, lambda cur, v=value: {**cur, "data": {"v": str(v)}})
            elif op == "delete":
                store.delete(rt, "default", name)
            else:
                listed = store.list_objects(rt, "default", [], [])
                marks.append(
                    (
                        listed["metadata"]["resourceVersion"],
                        {o["metadata"]["name"]: o.get("data") for o in listed["items"]},
                    )
                )
        except ApiError as e:
            assert e.code in (404, 409)
        assert store.rv >= last_rv
        last_rv = store.rv
    final = state(store, rt)
    for rv, snapshot in marks:
        w = store.watch(rt, "default", [], [], rv)
        seen_rvs: list[int] = []
        current = dict(snapshot)
        while not w.queue.empty():
            item = w.queue.get_nowait()
            assert item is not None
            type_, obj = item
            seen_rvs.append(int(obj["metadata"]["resourceVersion"]))
            if type_ == "DELETED":
                del current[obj["metadata"]["name"]]
            else:
                current[obj["metadata"]["name"]] = obj.get("data")
        assert seen_rvs == sorted(seen_rvs) and all(r > int(rv) for r in seen_rvs)
        assert current == final
        store.unwatch(w)


def test_stale_update_conflicts_and_no_op_keeps_rv() -> None:
    store, rt = make_store()
    first = store.create(rt, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}})
    same = store.update(rt, "default", "a", first)
    assert same["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    second = store.update(rt, "default", "a", {**first, "data": {"k": "2"}})
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as e:
        store.update(rt, "default", "a", {**first, "data": {"k": "3"}})
    assert e.value.code == 409 and e.value.reason == "Conflict"


def test_bounded_history_and_expiry_give_410() -> None:
    store, rt = make_store(history=2)
    rv0 = str(store.rv)
    for n in "abc":
        store.create(rt, "default", {"metadata": {"name": n}})
    with pytest.raises(ApiError) as e:
        store.watch(rt, "default", [], [], rv0)
    assert e.value.code == 410 and e.value.reason == "Expired"
    recent = str(store.rv)
    store.watch(rt, "default", [], [], recent)  # fine
    store.expire_history()
    with pytest.raises(ApiError):
        store.watch(rt, "default", [], [], recent)
    store.watch(rt, "default", [], [], str(store.rv))  # a fresh list RV works again


def test_finalizers_and_delete_preconditions() -> None:
    store, rt = make_store()
    obj = store.create(rt, "default", {"metadata": {"name": "f", "finalizers": ["a", "b"]}})
    with pytest.raises(ApiError) as e:
        store.delete(rt, "default", "f", {"preconditions": {"uid": "other"}})
    assert e.value.code == 409
    marked = store.delete(rt, "default", "f")
    assert marked["metadata"]["deletionTimestamp"]
    assert store.patch(
        rt, "default", "f", lambda c: {**c, "metadata": {**c["metadata"], "finalizers": ["b"]}}
    )
    store.patch(rt, "default", "f", lambda c: {**c, "metadata": {**c["metadata"], "finalizers": []}})
    with pytest.raises(ApiError) as e:
        store.get(rt, "default", "f")
    assert e.value.code == 404
    assert obj["metadata"]["uid"]
