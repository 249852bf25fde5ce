"""lbspeaker.kube against the lab API server: REST, watch caches (resume, bookmarks, 410, cuts),
409-safe status writes, Events and Lease contention."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker.kube.cache import WatchCache, identity
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.lease import LeaderElector, LeaseLock
from lbspeaker.kube.resources import CONFIGMAPS, EVENTS, LEASES, NAMESPACES, SERVICES
from lbspeaker.kube.rest import ApiError, ConnectionFailure, Rest
from lbspeaker.kube.status import patch_annotations, update_status
from tests.helpers import Recorder, wait_for

pytestmark = pytest.mark.component


@pytest.fixture
def rest(apiserver: LabApiServer, tmp_path: Path) -> Iterator[Rest]:
    api = load_api_client(str(apiserver.write_kubeconfig(tmp_path / "kubeconfig")))
    yield Rest(api)
    api.close()


@pytest.fixture
def caches() -> Iterator[list[WatchCache]]:
    started: list[WatchCache] = []
    yield started
    for c in started:
        c.stop()


def cm(name: str, ns: str = "default", **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"app": "t"}}, "data": dict(data)}


def lb_service(name: str, ns: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


def must(obj: dict[str, Any] | None) -> dict[str, Any]:
    assert obj is not None
    return obj


def names(cache: WatchCache) -> set[str]:
    return {o["metadata"]["name"] for o in cache.items()}


# -- REST -----------------------------------------------------------------------------------------


def test_rest_crud_patch_conflict_and_errors(rest: Rest) -> None:
    created = rest.create(CONFIGMAPS, cm("a", x="1"))
    assert created["metadata"]["resourceVersion"] and created["kind"] == "ConfigMap"
    rest.create(CONFIGMAPS, {"metadata": {"name": "other"}}, namespace="kube-system")
    got = rest.get(CONFIGMAPS, "a", "default")
    assert got["data"] == {"x": "1"}

    lst = rest.list(CONFIGMAPS, "default", label_selector="app=t")
    assert [o["metadata"]["name"] for o in lst["items"]] == ["a"] and lst["metadata"]["resourceVersion"]
    assert {o["metadata"]["name"] for o in rest.list_all(CONFIGMAPS)["items"]} >= {"a", "other"}

    patched = rest.patch(CONFIGMAPS, "a", {"data": {"y": "2"}}, "default")
    assert patched["data"] == {"x": "1", "y": "2"}
    patched = rest.patch(CONFIGMAPS, "a", [{"op": "remove", "path": "/data/x"}], "default", patch_type="json")
    assert patched["data"] == {"y": "2"}

    stale = dict(got)  # resourceVersion from before the patches
    with pytest.raises(ApiError) as err:
        rest.replace(CONFIGMAPS, {**stale, "data": {"z": "3"}})
    assert err.value.status == 409 and err.value.conflict and err.value.reason == "Conflict"
    with pytest.raises(ApiError) as err:
        rest.create(CONFIGMAPS, cm("a"))
    assert err.value.already_exists
    with pytest.raises(ApiError) as err:
        rest.get(CONFIGMAPS, "nope", "default")
    assert err.value.not_found and "nope" in err.value.message

    svc = rest.create(SERVICES, lb_service("web"))
    rest.patch(SERVICES, "web", {"metadata": {"labels": {"l": "v"}}}, "default", patch_type="strategic")
    out = rest.patch_status(
        SERVICES, "web", {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}, "default"
    )
    assert out["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.1"
    assert out["metadata"]["labels"] == {"l": "v"} and svc["spec"]["clusterIP"]

    rest.delete(CONFIGMAPS, "a", "default")
    with pytest.raises(ApiError) as err:
        rest.delete(CONFIGMAPS, "a", "default")
    assert err.value.not_found


def test_connection_failure_is_an_api_error(tmp_path: Path) -> None:
    from lab.apiserver import write_kubeconfig

    rest = Rest(load_api_client(str(write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))))
    with pytest.raises(ConnectionFailure) as err:
        rest.get(NAMESPACES, "default")
    assert err.value.status == 0 and err.value.retriable


# -- watch cache ----------------------------------------------------------------------------------


def test_cache_lists_then_follows_events(rest: Rest, caches: list[WatchCache]) -> None:
    rest.create(CONFIGMAPS, cm("pre"))
    rec = Recorder()
    c = WatchCache(rest, CONFIGMAPS, namespace="default", on_event=rec)
    caches.append(c.start())
    assert c.wait_synced(5)
    assert rec.events[0][0] == "ADDED" and rec.names() == ["pre"]
    assert must(c.get("default", "pre"))["kind"] == "ConfigMap"

    rest.create(CONFIGMAPS, cm("new"))
    rest.patch(CONFIGMAPS, "pre", {"data": {"k": "v"}}, "default")
    rest.delete(CONFIGMAPS, "new", "default")
    rest.create(CONFIGMAPS, cm("elsewhere", ns="kube-system"))  # outside the cache's namespace
    wait_for(lambda: rec.names("DELETED") == ["new"], 5)
    assert [t for t, _ in rec.events] == ["ADDED", "ADDED", "MODIFIED", "DELETED"]
    assert names(c) == {"pre"} and must(c.get("default", "pre"))["data"] == {"k": "v"}
    assert c.resource_version == rec.events[-1][1]["metadata"]["resourceVersion"]
    assert c.relists == 0 and c.reconnects == 0


def test_bookmarks_advance_resource_version(
    apiserver: LabApiServer, rest: Rest, caches: list[WatchCache]
) -> None:
    c = WatchCache(rest, CONFIGMAPS, namespace="default", label_selector="app=t")
    caches.append(c.start())
    assert c.wait_synced(5)
    for i in range(5):  # events the cache never sees (other namespace) still move the server's RV
        rest.create(CONFIGMAPS, cm(f"x{i}", ns="kube-system"))
    target = apiserver.resource_version
    wait_for(
        lambda: int(c.resource_version or 0) >= target, 5, message=lambda: f"{c.resource_version} < {target}"
    )
    assert c.bookmarks > 0 and len(c) == 0


def test_watch_cut_mid_stream_loses_no_update(
    apiserver: LabApiServer, rest: Rest, caches: list[WatchCache]
) -> None:
    rec = Recorder()
    c = WatchCache(rest, CONFIGMAPS, namespace="default", on_event=rec, backoff_initial_s=0.05)
    caches.append(c.start())
    assert c.wait_synced(5)
    stop = threading.Event()

    def writer() -> None:
        for i in range(150):
            rest.create(CONFIGMAPS, cm(f"o{i}", n=str(i)))
            if i % 3 == 0:
                rest.patch(CONFIGMAPS, f"o{i}", {"data": {"n": f"{i}-patched"}}, "default")
            if i % 5 == 0:
                rest.delete(CONFIGMAPS, f"o{i}", "default")
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    cuts = 0
    while not stop.is_set():
        cuts += apiserver.cut_watches()
        time.sleep(0.02)  # let some events through between cuts
    t.join()
    truth = {o["metadata"]["name"]: o for o in rest.list_all(CONFIGMAPS, "default")["items"]}
    wait_for(lambda: int(c.resource_version or 0) >= apiserver.resource_version, 5)
    assert cuts > 0 and c.reconnects > 0
    assert c.relists == 0, "a cut watch must resume from its resourceVersion, not re-list"
    assert names(c) == set(truth)
    for name, obj in truth.items():
        assert must(c.get("default", name))["data"] == obj["data"]
    # every change was delivered exactly once, in order
    assert len(rec.events) == 150 + 50 + 30
    assert rec.names("DELETED") == [f"o{i}" for i in range(0, 150, 5)]


class GatedRest(Rest):
    """A Rest whose watch opens and re-lists can be held, to look at the cache in between."""

    def __init__(self, inner: Rest) -> None:
        super().__init__(inner.api_client, inner.timeouts)
        self.hold_streams = threading.Event()
        self.streams_open = threading.Event()
        self.streams_open.set()
        self.hold_lists = threading.Event()
        self.lists_open = threading.Event()
        self.lists_open.set()
        self.list_waiting = threading.Event()

    def stream(self, path: str, query: Any, read_timeout: float) -> Any:
        if self.hold_streams.is_set():
            assert self.streams_open.wait(10)
        return super().stream(path, query, read_timeout)

    def list_all(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.hold_lists.is_set():
            self.list_waiting.set()
            assert self.lists_open.wait(10)
        return super().list_all(*args, **kwargs)


@pytest.mark.parametrize("keep", [None, identity], ids=["whole", "identity"])
def test_410_gone_relists_and_keeps_old_contents_meanwhile(
    apiserver: LabApiServer, rest: Rest, caches: list[WatchCache], keep: Any
) -> None:
    """Also with a cache that keeps only each object's identity (the speaker's Services and
    EndpointSlices): the re-list finds the same differences, and its ADDED and MODIFIED carry
    the whole objects just listed."""
    for n in ("a", "b", "c"):
        rest.create(CONFIGMAPS, cm(n, v="old"))
    gated = GatedRest(rest)
    rec = Recorder()
    c = WatchCache(gated, CONFIGMAPS, namespace="default", on_event=rec, backoff_initial_s=0.05, keep=keep)

    def stored(name: str) -> Any:
        obj = must(c.get("default", name))
        if keep is not None:
            assert set(obj) == {"apiVersion", "kind", "metadata"}
            assert set(obj["metadata"]) == {"name", "namespace", "uid", "resourceVersion"}
            return None
        return obj["data"]

    caches.append(c.start())
    assert c.wait_synced(5)
    wait_for(lambda: c.watches >= 1, 5)
    rec.events.clear()

    # Cut the watch and hold the reconnect; change things behind the cache's back; compact history.
    gated.hold_streams.set()
    gated.streams_open.clear()
    gated.hold_lists.set()
    gated.lists_open.clear()
    assert apiserver.cut_watches() == 1
    wait_for(lambda: not c.watching, 5)
    rest.delete(CONFIGMAPS, "a", "default")
    rest.patch(CONFIGMAPS, "b", {"data": {"v": "new"}}, "default")
    rest.create(CONFIGMAPS, cm("d", v="new"))
    rest.delete(CONFIGMAPS, "c", "default")
    rest.create(CONFIGMAPS, cm("c", v="recreated"))
    apiserver.expire_history()
    gated.streams_open.set()  # the watch resumes from an expired RV -> ERROR 410 -> re-list (held)

    assert gated.list_waiting.wait(5), "the cache did not re-list after 410"
    assert c.synced and names(c) == {"a", "b", "c"}, "old contents must be served during the re-list"
    assert stored("b") == (None if keep else {"v": "old"})
    assert rec.events == []

    gated.lists_open.set()
    wait_for(lambda: names(c) == {"b", "c", "d"}, 5)
    assert stored("b") == (None if keep else {"v": "new"})
    assert stored("c") == (None if keep else {"v": "recreated"})
    assert c.relists == 1
    got = sorted((t, o["metadata"]["name"], (o.get("data") or {}).get("v")) for t, o in rec.events)
    assert got == [
        ("ADDED", "c", "recreated"),
        ("ADDED", "d", "new"),
        ("DELETED", "a", None if keep else "old"),  # a DELETED found by a re-list carries what was kept
        ("DELETED", "c", None if keep else "old"),
        ("MODIFIED", "b", "new"),
    ]

    # and it watches again from the new list's RV; a watched event too reaches handlers whole
    rest.create(CONFIGMAPS, cm("e", v="watched"))
    wait_for(lambda: c.get("default", "e") is not None, 5)
    assert c.relists == 1
    assert rec.events[-1][1]["data"] == {"v": "watched"}
    assert stored("e") == (None if keep else {"v": "watched"})


def test_server_gone_keeps_contents_and_stop_is_prompt(lab_apiserver_factory: Any, tmp_path: Path) -> None:
    server = lab_apiserver_factory(bookmark_interval=60.0)
    api = load_api_client(str(server.write_kubeconfig(tmp_path / "kc")))
    rest = Rest(api)
    rest.create(CONFIGMAPS, cm("keep"))
    c = WatchCache(rest, CONFIGMAPS, backoff_initial_s=0.05, backoff_cap_s=0.2).start()
    try:
        assert c.wait_synced(5)
        wait_for(lambda: c.watching, 5)
        t0 = time.monotonic()
        c2 = WatchCache(rest, NAMESPACES).start()
        assert c2.wait_synced(5)
        wait_for(lambda: c2.watching, 5)
        c2.stop()
        # waiting for the stream to end by itself would take the 60 s bookmark interval
        assert time.monotonic() - t0 < 30, "stop() must close the stream, not wait for it"
        server.stop()
        wait_for(lambda: c.reconnects >= 2, 10)
        assert names(c) == {"keep"} and c.synced  # fail-static
    finally:
        c.stop()
        api.close()


# -- status writers ---------------------------------------------------------------------------------


def test_update_status_survives_concurrent_writers(rest: Rest) -> None:
    rest.create(SERVICES, lb_service("web"))
    conflicts: list[int] = []
    orig = rest.replace_status

    def counting(resource: Any, obj: Any) -> Any:
        try:
            return orig(resource, obj)
        except ApiError as e:
            conflicts.append(e.status)
            raise

    rest.replace_status = counting  # type: ignore[method-assign]

    def bump(key: str) -> None:
        for _ in range(15):

            def mutate(obj: dict[str, Any], key: str = key) -> dict[str, Any]:
                st = obj.get("status") or {}
                ingress = list((st.get("loadBalancer") or {}).get("ingress") or [])
                ingress.append({"ip": f"10.0.{key}.{len(ingress)}"})
                time.sleep(0.001)  # widen the read-modify-write window
                return {**st, "loadBalancer": {"ingress": ingress}}

            update_status(rest, SERVICES, "default", "web", mutate, attempts=50)

    threads = [threading.Thread(target=bump, args=(k,)) for k in ("1", "2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = rest.get(SERVICES, "web", "default")
    assert len(final["status"]["loadBalancer"]["ingress"]) == 45, "an update was lost"
    assert conflicts and set(conflicts) == {409}
    patch_annotations(rest, SERVICES, "default", "web", {"lbspeaker.io/ip-allocated-from-pool": "p"})
    patch_annotations(rest, SERVICES, "default", "web", {"x": "y"})
    patch_annotations(rest, SERVICES, "default", "web", {"x": None})
    assert rest.get(SERVICES, "web", "default")["metadata"]["annotations"] == {
        "lbspeaker.io/ip-allocated-from-pool": "p"
    }


# -- events ----------------------------------------------------------------------------------------


def test_events_are_created_and_deduplicated(rest: Rest) -> None:
    svc = rest.create(SERVICES, lb_service("web"))
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kind-worker", "uid": "n-1"}}
    rec = EventRecorder(rest, "lbspeaker-controller", host="test")
    for _ in range(3):
        rec.normal(svc, "IPAllocated", "Assigned IP [192.0.2.1]")
    rec.warning(svc, "AllocationFailed", "no available IPs")
    rec.normal(node, "nodeAssigned", "announcing from node")
    assert rec.flush(5)
    rec.close()
    events = rest.list(EVENTS, "default")["items"]
    by_reason = {e["reason"]: e for e in events}
    assert set(by_reason) == {"IPAllocated", "AllocationFailed", "nodeAssigned"}
    alloc = by_reason["IPAllocated"]
    assert alloc["count"] == 3 and alloc["type"] == "Normal"
    assert (
        alloc["involvedObject"]["uid"] == svc["metadata"]["uid"]
        and alloc["involvedObject"]["kind"] == "Service"
    )
    assert alloc["firstTimestamp"] <= alloc["lastTimestamp"]
    assert by_reason["AllocationFailed"]["type"] == "Warning"
    assert by_reason["nodeAssigned"]["involvedObject"]["name"] == "kind-worker"


# -- leases ----------------------------------------------------------------------------------------


class LockstepRest(Rest):
    """Both contenders read the Lease before either writes: the worst interleaving, every time."""

    def __init__(self, inner: Rest, barrier: threading.Barrier) -> None:
        super().__init__(inner.api_client, inner.timeouts)
        self.barrier = barrier

    def get(self, resource: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        try:
            return super().get(resource, name, namespace)
        finally:
            self.barrier.wait(5)


def test_lease_contention_two_lockers(rest: Rest) -> None:
    barrier = threading.Barrier(2)
    lockstep = LockstepRest(rest, barrier)
    racers = [LeaseLock(lockstep, "default", "ctl", ident, lease_duration_s=1) for ident in ("a", "b")]
    results: list[dict[str, bool]] = []
    for round_ in range(8):  # free Lease (absent, then released), both race for it: exactly one wins
        out: dict[str, bool] = {}

        def go(lock: LeaseLock, out: dict[str, bool] = out) -> None:
            out[lock.identity] = lock.try_acquire_or_renew()

        ts = [threading.Thread(target=go, args=(lk,)) for lk in racers]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        results.append(out)
        holder = rest.get(LEASES, "ctl", "default")["spec"]["holderIdentity"]
        assert sorted(out.values()) == [False, True], f"round {round_}: {out}"
        assert out[holder]
        LeaseLock(rest, "default", "ctl", holder).release()
    assert {w for r in results for w, won in r.items() if won} <= {"a", "b"}

    a = LeaseLock(rest, "default", "ctl", "a", lease_duration_s=1)
    b = LeaseLock(rest, "default", "ctl", "b", lease_duration_s=1)
    assert a.try_acquire_or_renew()
    winner, loser = a, b
    assert winner.try_acquire_or_renew() and winner.held
    assert not loser.try_acquire_or_renew() and not loser.held

    # the holder stops renewing: the other takes over after a lease duration on its own clock
    t0 = time.monotonic()
    wait_for(loser.try_acquire_or_renew, 5, interval=0.1)
    assert time.monotonic() - t0 >= 0.8, "a valid Lease must not be taken over"
    spec = rest.get(LEASES, "ctl", "default")["spec"]
    assert spec["holderIdentity"] == loser.identity and spec["leaseTransitions"] >= 1
    assert not winner.try_acquire_or_renew()

    # release hands it over at once
    assert loser.release()
    assert rest.get(LEASES, "ctl", "default")["spec"]["holderIdentity"] == ""
    assert winner.try_acquire_or_renew()


def test_leader_elector_failover_on_release(rest: Rest) -> None:
    leaders: list[str] = []
    electors = []
    for ident in ("one", "two"):
        lock = LeaseLock(rest, "default", "elect", ident, lease_duration_s=60)
        electors.append(
            LeaderElector(
                lock,
                renew_deadline_s=2,
                retry_period_s=0.1,
                on_started_leading=functools.partial(leaders.append, ident),
                on_stopped_leading=functools.partial(leaders.append, f"-{ident}"),
            )
        )
    try:
        for e in electors:
            e.start()
        wait_for(lambda: any(e.is_leader for e in electors), 5)
        time.sleep(0.3)  # a few renew rounds: still exactly one leader
        assert sum(e.is_leader for e in electors) == 1
        first = next(e for e in electors if e.is_leader)
        other = next(e for e in electors if e is not first)
        first.stop()
        # 20 s is far less than the 60 s Lease: only the release can hand it over that soon
        wait_for(lambda: other.is_leader, 20,
                 message="a released Lease should be taken over without waiting it out")
        assert leaders == [first.lock.identity, f"-{first.lock.identity}", other.lock.identity]
    finally:
        for e in electors:
            e.stop()


@pytest.mark.parametrize(
    ("crash", "keep_store"),
    [
        pytest.param(True, False, id="crash-store-reset"),
        pytest.param(False, False, id="clean-stop-store-reset"),
        pytest.param(True, True, id="crash-store-kept"),
    ],
)
def test_cache_follows_a_restarted_server_whose_store_went_back(
    lab_apiserver_factory: Any, tmp_path: Path, crash: bool, keep_store: bool
) -> None:
    """Issue 13 #5: Services created after the API server came back with an older store were
    never seen. kube keeps a watch from a resourceVersion it has not reached silent, so the cache
    must check before resuming, and re-list."""
    first = lab_apiserver_factory(bookmark_interval=0.2, rv_block_timeout=0.5)
    api = load_api_client(str(first.write_kubeconfig(tmp_path / "kc")))
    rest = Rest(api)
    try:
        for i in range(30):  # the cache's resourceVersion ends well above a fresh store's
            rest.create(CONFIGMAPS, cm(f"before{i}"))
        c = WatchCache(rest, CONFIGMAPS, namespace="default", backoff_initial_s=0.05, backoff_cap_s=0.5)
        c.start()
        try:
            assert c.wait_synced(5)
            wait_for(lambda: c.watching, 5)
            state = first.kill() if crash else None
            if not crash:
                first.stop()
            second = lab_apiserver_factory(
                port=first.port,
                bookmark_interval=0.2,
                rv_block_timeout=0.5,
                initial_state=state if keep_store else None,
            )
            rest.create(CONFIGMAPS, cm("after"))
            expected = {"after"} | ({f"before{i}" for i in range(30)} if keep_store else set())
            wait_for(lambda: names(c) == expected, 15, message=lambda: f"{sorted(names(c))[:5]}...")
            if not keep_store:
                assert c.relists >= 1 and c.store_behind >= 1
            # and it follows the new store from there
            rest.create(CONFIGMAPS, cm("later"))
            wait_for(lambda: c.get("default", "later") is not None, 5)
            assert int(c.resource_version or 0) <= second.resource_version
        finally:
            c.stop()
    finally:
        api.close()
