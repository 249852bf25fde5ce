"""An allocation's writes in flight (`controller.servicewrites`) while the worker goes on.

The controller hands a Service's status and annotation writes to writer threads and decides
the next Services meanwhile (bench/scale.py: it was the stage that limited the run). What
must hold in the window where the write is in flight:

* the Service is not decided on again (its work item ends when the write has);
* every IP its status still names stays taken: nobody else is given it;
* a failed write comes back as a failed reconcile does (rate-limited retry).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from lbspeaker.api import constants as C
from lbspeaker.controller.context import SVC
from lbspeaker.kube.resources import SERVICES, Resource
from lbspeaker.kube.rest import ApiError
from tests.unit.test_metallb_config_tables import pool
from tests.unit.test_metallb_controller_tables import FakeRest, World, service

WAIT = 10.0  # seconds a writer thread gets to do what the test waits for (a deadline, not a sleep)


class GatedRest(FakeRest):
    """Service status writes wait for `gate`; `fail` makes the next ones fail as a 500 would."""

    def __init__(self, objects: Mapping[str, Any]) -> None:
        super().__init__(objects)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.fail = 0

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        if resource is SERVICES:
            self.entered.release()
            assert self.gate.wait(WAIT), "the test never opened the gate"
            if self.fail:
                self.fail -= 1
                raise ApiError(500, "InternalError", "etcd is having a bad day")
        return super().replace_status(resource, obj)


def pipelined(*pools: dict[str, Any], services: tuple[dict[str, Any], ...] = ()) -> World:
    world = World(list(pools), list(services), rest=GatedRest)
    assert world.ctl.writes is not None
    world.ctl.writes.start()
    return world


def next_item(world: World, timeout: float = 0) -> str | None:
    """The next Service work item (the pool and status items the caches queue are skipped)."""
    while (item := world.ctl.queue.get(timeout=timeout)) is not None:
        if item.startswith(SVC):
            return item
        world.ctl.queue.done(item)
    return None


def take(world: World, key: str) -> bool:
    """The worker's part for one Service: take its work item, reconcile; True if handed over."""
    world.relist()
    world.ctl.queue.add(SVC + key)
    assert next_item(world) == SVC + key
    return world.ctl.service_part.sync_service(key)


def test_the_item_ends_when_the_write_has() -> None:
    world = pipelined(pool("default", "1.2.3.0/31"))
    rest: GatedRest = world.rest  # type: ignore[assignment]
    try:
        world.rest.put(SERVICES, service(name="a"))
        assert take(world, "default/a"), "the write was not handed over"
        assert rest.entered.acquire(timeout=WAIT)  # in flight, held at the gate
        world.ctl.queue.add(SVC + "default/a")  # an event for the Service meanwhile
        assert next_item(world) is None, "decided on again while its write is in flight"
        rest.gate.set()
        assert next_item(world, WAIT) == SVC + "default/a"  # once written, the event is seen
        assert world.status_ips("default/a") == ["1.2.3.0"]
    finally:
        rest.gate.set()
        world.ctl.writes.stop()  # type: ignore[union-attr]


def test_an_ip_the_status_still_names_is_not_given_while_the_write_is_in_flight() -> None:
    """A moves from 1.2.3.0 to 1.2.3.1; until its status says so, B cannot have 1.2.3.0."""
    a = service(name="a", status=["1.2.3.0"])
    world = pipelined(pool("default", "1.2.3.0/31"), services=(a,))
    rest: GatedRest = world.rest  # type: ignore[assignment]
    try:
        moved = service(name="a", status=["1.2.3.0"], annotations={C.ANNOTATION_LOADBALANCER_IPS: "1.2.3.1"})
        world.rest.put(SERVICES, moved)
        assert take(world, "default/a")
        assert rest.entered.acquire(timeout=WAIT)
        world.rest.put(SERVICES, service(name="b", annotations={C.ANNOTATION_LOADBALANCER_IPS: "1.2.3.0"}))
        assert not take(world, "default/b"), "B was given 1.2.3.0 while A's status still names it"
        world.ctl.queue.done(SVC + "default/b")
        assert world.status_ips("default/b") == []
        rest.gate.set()
        assert world.ctl.writes.flush(WAIT)  # type: ignore[union-attr]
        assert world.status_ips("default/a") == ["1.2.3.1"]
        world.ctl.queue.done(SVC + "default/a")
        world.sync("default/a")  # A's status no longer names 1.2.3.0: the claim goes
        world.sync("default/b")
        assert world.ctl.writes.flush(WAIT)  # type: ignore[union-attr]
        assert world.status_ips("default/b") == ["1.2.3.0"]
    finally:
        rest.gate.set()
        world.ctl.writes.stop()  # type: ignore[union-attr]


def test_a_failed_write_is_retried_as_a_failed_reconcile() -> None:
    world = pipelined(pool("default", "1.2.3.0/31"))
    rest: GatedRest = world.rest  # type: ignore[assignment]
    rest.fail = 1
    rest.gate.set()
    try:
        world.rest.put(SERVICES, service(name="a"))
        assert take(world, "default/a")
        assert world.ctl.writes.flush(WAIT)  # type: ignore[union-attr]
        assert world.status_ips("default/a") == []
        assert world.ctl.queue.failures(SVC + "default/a") == 1
        assert next_item(world, WAIT) == SVC + "default/a"  # back after its backoff
        assert world.ctl.service_part.sync_service("default/a")
        assert world.ctl.writes.flush(WAIT)  # type: ignore[union-attr]
        assert world.status_ips("default/a") == ["1.2.3.0"]
        assert world.ctl.queue.failures(SVC + "default/a") == 0
    finally:
        world.ctl.writes.stop()  # type: ignore[union-attr]
