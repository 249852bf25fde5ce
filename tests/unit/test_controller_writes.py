"""Status writes: one PUT from the cached copy when it is current, re-read and retry on 409,
and nothing at all once this replica is no longer the leader."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lbspeaker.controller.context import NotLeader, write_status
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.kube.resources import SERVICES, Resource
from lbspeaker.kube.rest import ApiError


class FakeRest:
    """Records calls; the first `conflicts` status PUTs fail with 409 like a stale resourceVersion."""

    def __init__(self, stored: dict[str, Any], conflicts: int) -> None:
        self.stored = stored
        self.conflicts = conflicts
        self.calls: list[str] = []

    def replace_status(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("PUT")
        if obj["metadata"]["resourceVersion"] != self.stored["metadata"]["resourceVersion"] or self.conflicts:
            self.conflicts = max(0, self.conflicts - 1)
            raise ApiError(409, "Conflict", "the object has been modified")
        self.stored = copy.deepcopy(obj)
        self.stored["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return self.stored

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append("GET")
        return copy.deepcopy(self.stored)


def svc(rv: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "default", "resourceVersion": rv, "labels": labels or {}},
            "spec": {"type": "LoadBalancer"}}


def controller(rest: FakeRest) -> Controller:
    ctl = Controller(rest, ControllerConfig(leader_elect=False))  # type: ignore[arg-type]
    ctl._ready_to_write.set()  # as after restore, without starting any thread
    return ctl


def set_ip(obj: dict[str, Any]) -> dict[str, Any]:
    return {**(obj.get("status") or {}), "loadBalancer": {"ingress": [{"ip": "10.0.0.1", "ipMode": "VIP"}]}}


def test_current_cache_means_one_put() -> None:
    rest = FakeRest(svc("5"), conflicts=0)
    write_status(controller(rest).ctx, SERVICES, svc("5"), set_ip)
    assert rest.calls == ["PUT"]
    assert rest.stored["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.0.0.1"


def test_stale_cache_rereads_and_keeps_the_other_writers_change() -> None:
    rest = FakeRest(svc("9", labels={"changed": "by-someone-else"}), conflicts=0)
    write_status(controller(rest).ctx, SERVICES, svc("5"), set_ip)
    assert rest.calls[0] == "PUT" and "GET" in rest.calls and rest.calls[-1] == "PUT"
    assert rest.stored["metadata"]["labels"] == {"changed": "by-someone-else"}
    assert rest.stored["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.0.0.1"


def test_repeated_conflicts_are_retried() -> None:
    rest = FakeRest(svc("5"), conflicts=3)
    write_status(controller(rest).ctx, SERVICES, svc("5"), set_ip)
    assert rest.calls.count("PUT") == 4
    assert rest.stored["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.0.0.1"


def test_no_write_once_not_leader() -> None:
    rest = FakeRest(svc("5"), conflicts=0)
    ctl = controller(rest)
    ctl._ready_to_write.clear()
    with pytest.raises(NotLeader):
        write_status(ctl.ctx, SERVICES, svc("5"), set_ip)
    assert rest.calls == []
