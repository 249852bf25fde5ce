"""Lease decisions, Event de-duplication/rate-limits and 409 retries, against an in-memory fake Rest."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lbspeaker.facts import lease_fresh
from lbspeaker.kube.events import EventRecorder, TokenBucket, dedup_key, event_namespace, involved_object
from lbspeaker.kube.lease import Action, Observation, decide, micro_time, new_spec, record_of
from lbspeaker.kube.resources import EVENTS, SERVICES, Resource
from lbspeaker.kube.rest import ApiError
from lbspeaker.kube.status import patch_annotations, update_status


def lease(holder: str | None, duration: int = 10, renew: str = "t1", transitions: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "leaseDurationSeconds": duration,
        "renewTime": renew,
        "acquireTime": "t0",
        "leaseTransitions": transitions,
    }
    if holder is not None:
        spec["holderIdentity"] = holder
    return {"metadata": {"name": "l", "resourceVersion": "5"}, "spec": spec}


L_OTHER = lease("other")
OBS_OTHER_AT_100 = Observation(record_of(L_OTHER["spec"]), 100.0)


@pytest.mark.parametrize(
    ("lease_obj", "now", "observed", "action", "observed_at"),
    [
        (None, 100.0, None, Action.CREATE, None),
        (lease("me"), 100.0, None, Action.RENEW, 100.0),
        (lease(None), 100.0, None, Action.ACQUIRE, 100.0),
        (lease(""), 100.0, None, Action.ACQUIRE, 100.0),
        # first sight of another holder: it gets a full duration from *our* observation
        (L_OTHER, 100.0, None, Action.WAIT, 100.0),
        (L_OTHER, 109.9, OBS_OTHER_AT_100, Action.WAIT, 100.0),
        (L_OTHER, 110.0, OBS_OTHER_AT_100, Action.ACQUIRE, 100.0),
        # the holder renewed (record changed): the clock restarts
        (lease("other", renew="t2"), 115.0, OBS_OTHER_AT_100, Action.WAIT, 115.0),
        # the Lease vanished (store reset) while another held it: it still holds it for the
        # duration since we last saw it change (a fault bench found two leaders without this)
        (None, 105.0, OBS_OTHER_AT_100, Action.WAIT, 100.0),
        (None, 110.0, OBS_OTHER_AT_100, Action.CREATE, None),
        (None, 100.0, Observation(record_of(lease("me")["spec"]), 99.0), Action.CREATE, None),
        (None, 100.0, Observation(record_of(lease("")["spec"]), 99.0), Action.CREATE, None),
        # we think we hold it but somebody else is in the record: wait like anyone else
        (lease("other", duration=1), 100.5, None, Action.WAIT, 100.5),
    ],
)
def test_decide(
    lease_obj: dict | None,
    now: float,
    observed: Observation | None,
    action: Action,
    observed_at: float | None,
) -> None:
    got, obs = decide(lease_obj, "me", now, observed)
    assert got is action
    assert (obs.at if obs else None) == observed_at


def test_new_spec() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    stamp = "2024-05-01T12:00:00.123456Z"
    assert micro_time(now) == stamp
    created = new_spec(None, Action.CREATE, "me", 15, now)
    assert created == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": 0,
    }
    renewed = new_spec(lease("me", transitions=3)["spec"], Action.RENEW, "me", 15, now)
    assert (
        renewed["acquireTime"] == "t0" and renewed["renewTime"] == stamp and renewed["leaseTransitions"] == 3
    )
    taken = new_spec(lease("other", transitions=3)["spec"], Action.ACQUIRE, "me", 15, now)
    assert (
        taken["holderIdentity"] == "me" and taken["acquireTime"] == stamp and taken["leaseTransitions"] == 4
    )


def test_lease_fresh() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    fresh = lease("n1", duration=10, renew=micro_time(now - timedelta(seconds=9)))
    stale = lease("n1", duration=10, renew=micro_time(now - timedelta(seconds=11)))
    assert lease_fresh(fresh, now)
    assert not lease_fresh(stale, now)
    assert lease_fresh(stale, now, skew_s=2)
    released = lease("", duration=1, renew=micro_time(now))
    assert not lease_fresh(released, now)


class FakeRest:
    """Just enough of Rest for the writers: objects by (path), resourceVersion checks, injected failures."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.rv = 10
        self.calls: list[tuple[str, str]] = []
        self.fail_next: list[ApiError] = []
        self.before_write: Any = None

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("get", name))
        self._maybe_fail()
        try:
            return copy.deepcopy(self.objects[(resource.plural, namespace, name)])
        except KeyError:
            raise ApiError(404, "NotFound", f"{name} not found") from None

    def replace_status(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("replace_status", obj["metadata"]["name"]))
        if self.before_write:
            self.before_write()
        self._maybe_fail()
        key = (resource.plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        cur = self.objects[key]
        if obj["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        cur["status"] = copy.deepcopy(obj["status"])
        cur["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(cur)

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("patch", name))
        self._maybe_fail()
        key = (resource.plural, namespace, name)
        if key not in self.objects:
            raise ApiError(404, "NotFound", "gone")
        self.objects[key].update(patch)
        return copy.deepcopy(self.objects[key])

    def create(self, resource: Resource, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("create", obj["metadata"]["name"]))
        self._maybe_fail()
        self.objects[(resource.plural, namespace, obj["metadata"]["name"])] = copy.deepcopy(obj)
        return obj


def svc(rv: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": rv},
        "spec": {"type": "LoadBalancer"},
        "status": {},
    }


def test_update_status_retries_conflict_with_fresh_read() -> None:
    rest = FakeRest()
    rest.objects[("services", "default", "web")] = svc()
    writes = {"n": 0}

    def concurrent_writer() -> None:
        # the first write loses against someone else's update
        if writes["n"] == 0:
            rest.objects[("services", "default", "web")]["metadata"]["resourceVersion"] = "7"
            rest.objects[("services", "default", "web")]["status"] = {"other": True}
        writes["n"] += 1

    rest.before_write = concurrent_writer
    seen: list[dict] = []

    def mutate(obj: dict) -> dict:
        seen.append(obj["status"])
        return {**obj["status"], "loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}}

    out = update_status(rest, SERVICES, "default", "web", mutate)  # type: ignore[arg-type]
    assert out["status"] == {"other": True, "loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}}
    assert seen == [{}, {"other": True}]  # the retry saw the other writer's change
    assert [c[0] for c in rest.calls] == ["get", "replace_status", "get", "replace_status"]


def test_update_status_no_change_means_no_write() -> None:
    rest = FakeRest()
    rest.objects[("services", "default", "web")] = svc()
    update_status(rest, SERVICES, "default", "web", lambda o: None)  # type: ignore[arg-type]
    update_status(rest, SERVICES, "default", "web", lambda o: {})  # type: ignore[arg-type]
    assert [c[0] for c in rest.calls] == ["get", "get"]


def test_update_status_gives_up_and_raises() -> None:
    rest = FakeRest()
    rest.objects[("services", "default", "web")] = svc()
    rest.fail_next = [ApiError(409, "Conflict", "x")] * 3
    rest.before_write = None
    with pytest.raises(ApiError) as err:
        update_status(rest, SERVICES, "default", "web", lambda o: {"a": 1}, attempts=2)  # type: ignore[arg-type]
    assert err.value.status == 409
    rest.fail_next = []
    with pytest.raises(ApiError) as err2:
        update_status(rest, SERVICES, "default", "nope", lambda o: {"a": 1})  # type: ignore[arg-type]
    assert err2.value.not_found


def test_patch_annotations_retries_transient_only() -> None:
    rest = FakeRest()
    rest.objects[("services", "default", "web")] = svc()
    rest.fail_next = [ApiError(503, "ServiceUnavailable", "x"), ApiError(0, "ConnectionFailure", "y")]
    patch_annotations(rest, SERVICES, "default", "web", {"a": "b"})  # type: ignore[arg-type]
    assert [c[0] for c in rest.calls] == ["patch"] * 3
    rest.fail_next = [ApiError(409, "Conflict", "changed")]
    with pytest.raises(ApiError):
        patch_annotations(rest, SERVICES, "default", "web", {"a": "b"}, resource_version="1")  # type: ignore[arg-type]


def test_involved_object_and_keys() -> None:
    ref = involved_object(svc())
    assert ref == {
        "apiVersion": "v1",
        "kind": "Service",
        "name": "web",
        "namespace": "default",
        "uid": "u1",
        "resourceVersion": "1",
    }
    assert dedup_key(ref, "Normal", "IPAllocated", "m") == dedup_key(
        involved_object(svc("2")), "Normal", "IPAllocated", "m"
    )
    assert dedup_key(ref, "Normal", "IPAllocated", "m") != dedup_key(ref, "Normal", "IPAllocated", "m2")
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "x"}}
    assert event_namespace(involved_object(node)) == "default"


def test_token_bucket() -> None:
    b = TokenBucket(burst=2, rate=1.0, now=0.0)
    assert [b.take(0.0), b.take(0.0), b.take(0.0)] == [True, True, False]
    assert b.take(1.0) and not b.take(1.0)


def test_event_recorder_dedups_and_rate_limits() -> None:
    rest = FakeRest()
    clock = {"t": 0.0}
    rec = EventRecorder(
        rest,  # type: ignore[arg-type]
        "lbspeaker-controller",
        host="h",
        burst=3,
        refill_per_s=0.0,
        asynchronous=False,
        clock=lambda: clock["t"],
    )
    o = svc()
    rec.normal(o, "IPAllocated", "assigned 1.2.3.4")
    rec.normal(o, "IPAllocated", "assigned 1.2.3.4")
    rec.warning(o, "AllocationFailed", "no pool")
    rec.warning(o, "AllocationFailed", "no pool again")  # over the burst: dropped
    assert [c[0] for c in rest.calls] == ["create", "patch", "create"]
    assert rec.created == 2 and rec.updated == 1 and rec.dropped_rate_limited == 1
    ev = next(v for k, v in rest.objects.items() if k[0] == EVENTS.plural and v["reason"] == "IPAllocated")
    assert ev["count"] == 2
    assert ev["involvedObject"]["uid"] == "u1" and ev["source"] == {
        "component": "lbspeaker-controller",
        "host": "h",
    }
    assert ev["reportingComponent"] == "lbspeaker-controller" and ev["type"] == "Normal"
    assert ev["metadata"]["namespace"] == "default" and ev["metadata"]["name"].startswith("web.")
    other = {**svc(), "metadata": {**svc()["metadata"], "name": "db", "uid": "u2"}}
    rec.normal(other, "IPAllocated", "x")  # another object has its own bucket
    assert rec.created == 3


def test_event_recorder_never_raises_and_recreates_deleted() -> None:
    rest = FakeRest()
    rec = EventRecorder(rest, "c", host="h", asynchronous=False)  # type: ignore[arg-type]
    rest.fail_next = [ApiError(0, "ConnectionFailure", "down")]
    rec.normal(svc(), "R", "m")  # swallowed
    assert rec.failed == 1
    rec.normal(svc(), "R", "m")
    for k in [k for k in rest.objects if k[0] == "events"]:
        del rest.objects[k]
    rec.normal(svc(), "R", "m")  # patch -> 404 -> create again
    assert [c[0] for c in rest.calls] == ["create", "create", "patch", "create"]
    rec.event({"broken": object()}, "Normal", "R", "m")  # nonsense input: still no exception


def test_event_recorder_async_flush() -> None:
    rest = FakeRest()
    rec = EventRecorder(rest, "c", host="h")  # type: ignore[arg-type]
    for i in range(5):
        rec.normal(svc(), "R", f"m{i}")
    assert rec.flush(5.0)
    assert rec.created == 5
    rec.close()
