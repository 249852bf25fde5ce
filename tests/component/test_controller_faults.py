"""Fault test: the controller stops, users change Services every way they can, the controller starts.

Invariant, checked on every snapshot of the Services while the restarted controller converges
and on its allocator once it is idle: no IP is held by two Services unless both carry the
same allow-shared-ip key. A pair that the user's own changes created while the controller was
down (two statuses naming one IP) may survive only until the controller rewrites one of them;
the controller itself never writes such a pair. Once idle, no Service that is not ours keeps
an IP in its status.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lab.apiserver import LabApiServer
from lbspeaker.api import constants as C
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.controller.services import OLD_STATUS
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import IPADDRESSPOOLS, SERVICES
from lbspeaker.kube.rest import ApiError, Rest
from tests.component.test_controller import NS, ensure_namespaces, make_pool
from tests.helpers import wait_for

pytestmark = pytest.mark.component

OTHER_CLASS = "example.com/other"
INITIAL = 5
Change = tuple[str, int, str]

CHANGES = st.one_of(
    st.tuples(st.just("type"), st.integers(0, 7), st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"])),
    st.tuples(st.just("class"), st.integers(0, 7), st.sampled_from([OTHER_CLASS, ""])),
    st.tuples(st.just("pool"), st.integers(0, 7), st.sampled_from(["p1", "p2", "gone", ""])),
    st.tuples(st.just("ip"), st.integers(0, 7), st.sampled_from(["10.77.0.0", "10.77.0.1", "10.77.1.0", ""])),
    st.tuples(st.just("share"), st.integers(0, 7), st.sampled_from(["k", "j", ""])),
    st.tuples(st.just("labels"), st.integers(0, 7), st.sampled_from(["gold", ""])),
    st.tuples(st.just("delete"), st.integers(0, 7), st.just("")),
    st.tuples(st.just("create"), st.integers(0, 7), st.just("")),
)


@pytest.fixture
def rest(apiserver_with_crds: LabApiServer, kubeconfig: Path) -> Iterator[Rest]:
    r = Rest(load_api_client(str(kubeconfig)))
    ensure_namespaces(r)
    # p1: for everyone; p2: pinned to tier=gold Services (serviceSelectors), tried first for them.
    make_pool(r, "p1", "10.77.0.0/29")
    make_pool(r, "p2", "10.77.1.0/29",
              serviceAllocation={"serviceSelectors": [{"matchLabels": {"tier": "gold"}}]})
    yield r


def start(rest: Rest, n: int) -> Controller:
    ctl = Controller(rest, ControllerConfig(identity=f"faults-{n}", leader_elect=False))
    ctl.start()
    return ctl


def services(rest: Rest) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in rest.list_all(SERVICES, "default")["items"]}


def ingress(svc: dict[str, Any]) -> list[str]:
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


def sharing_key(svc: dict[str, Any]) -> str | None:
    return C.annotation((svc.get("metadata") or {}).get("annotations"), C.ALLOW_SHARED_IP) or None


def bad_pairs(holders: dict[str, set[str]], keys: dict[str, str | None]) -> set[tuple[str, str, str]]:
    """(ip, a, b) for every two Services on one IP without the same non-empty sharing key."""
    out = set()
    for ip, names in holders.items():
        for a, b in combinations(sorted(names), 2):
            if keys.get(a) is None or keys.get(a) != keys.get(b):
                out.add((ip, a, b))
    return out


def status_pairs(snapshot: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    holders: dict[str, set[str]] = {}
    for name, svc in snapshot.items():
        for ip in ingress(svc):
            holders.setdefault(ip, set()).add(name)
    return bad_pairs(holders, {name: sharing_key(svc) for name, svc in snapshot.items()})


def body(name: str, i: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "annotations": {}, "labels": {}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 8000 + i, "protocol": "TCP"}],
                     "selector": {"app": name}}}


def apply(rest: Rest, change: Change, created: list[int]) -> None:
    """One user change to the Services (skipped when its Service does not exist)."""
    kind, index, value = change
    if kind == "create":
        n = INITIAL + len(created)
        created.append(n)
        rest.create(SERVICES, body(f"s{n}", n))
        return
    name = f"s{index % (INITIAL + len(created))}"
    try:
        svc = rest.get(SERVICES, name, "default")
    except ApiError as exc:
        if exc.not_found:
            return
        raise
    meta, spec = svc["metadata"], svc["spec"]
    ann = meta.setdefault("annotations", {})
    if kind == "delete":
        rest.delete(SERVICES, name, "default")
        return
    if kind == "type":
        spec["type"] = value
    elif kind == "class":
        # The API server drops loadBalancerClass only through a type change (as kube-apiserver does,
        # where the field is immutable): leave LoadBalancer first, then come back with the new class.
        spec["type"] = "ClusterIP"
        svc = rest.replace(SERVICES, svc)
        spec = svc["spec"]
        spec["type"] = "LoadBalancer"
        if value:
            spec["loadBalancerClass"] = value
    elif kind in ("pool", "ip", "share"):
        key = {"pool": C.ANNOTATION_ADDRESS_POOL, "ip": C.ANNOTATION_LOADBALANCER_IPS,
               "share": C.ANNOTATION_ALLOW_SHARED_IP}[kind]
        if value:
            ann[key] = value
        else:
            ann.pop(key, None)
    elif kind == "labels":
        meta["labels"] = {"tier": value} if value else {}
    rest.replace(SERVICES, svc)


def converge(rest: Rest, ctl: Controller, baseline: set[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
    """Poll until the controller is idle and the Services stop changing; check every snapshot."""
    stable, last = 0, None
    deadline = time.monotonic() + 60
    while stable < 3:
        assert time.monotonic() < deadline, "controller did not settle within 60 s"
        idle = ctl.active and ctl.idle()
        snap = services(rest)
        new = status_pairs(snap) - baseline
        assert not new, f"the controller gave one IP to two Services: {sorted(new)}"
        view = {n: (ingress(s), s["metadata"].get("resourceVersion")) for n, s in snap.items()}
        stable = stable + 1 if idle and view == last else 0
        last = view
        time.sleep(0.05)
    return snap


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(initial=st.lists(st.tuples(st.sampled_from(["", "k"]), st.sampled_from(["", "gold"])),
                        min_size=INITIAL, max_size=INITIAL),
       changes=st.lists(CHANGES, min_size=1, max_size=8))
# issue 13 #1: s0 gets 10.77.0.0, becomes ClusterIP while the controller is down, s5 is new.
@example(initial=[("", "")] * INITIAL, changes=[("type", 0, "ClusterIP"), ("create", 0, "")])
@example(initial=[("", "")] * INITIAL, changes=[("class", 0, OTHER_CLASS), ("create", 0, "")])
@example(initial=[("k", "")] * INITIAL, changes=[("share", 0, "j"), ("type", 1, "NodePort"),
                                                 ("ip", 4, "10.77.0.0")])
def test_restart_after_user_changes_never_gives_one_ip_twice(
        rest: Rest, initial: list[tuple[str, str]], changes: list[Change]) -> None:
    for svc in services(rest):
        rest.delete(SERVICES, svc, "default")
    wait_for(lambda: not services(rest), 10)
    ctl = start(rest, 1)
    try:
        for i, (share, tier) in enumerate(initial):
            b = body(f"s{i}", i)
            if share:
                b["metadata"]["annotations"][C.ANNOTATION_ALLOW_SHARED_IP] = share
            if tier:
                b["metadata"]["labels"]["tier"] = tier
            rest.create(SERVICES, b)
        converge(rest, ctl, set())
        wait_for(lambda: all(ingress(s) for s in services(rest).values()), 15,
                 message=lambda: str({n: ingress(s) for n, s in services(rest).items()}))
    finally:
        ctl.stop()
    created: list[int] = []
    for change in changes:
        apply(rest, change, created)
    baseline = status_pairs(services(rest))   # what the user's changes made while nobody watched

    ctl = start(rest, 2)
    try:
        final = converge(rest, ctl, baseline)
        assert not status_pairs(final), f"still shared without a common key: {sorted(status_pairs(final))}"
        keys = {name: sharing_key(svc) for name, svc in final.items()}
        holders: dict[str, set[str]] = {}
        for key, held in ctl.alloc.assignments().items():
            name = key.split(OLD_STATUS)[0].split("/", 1)[1]
            for ip in held:
                holders.setdefault(ip, set()).add(name)
        assert not bad_pairs(holders, keys), f"allocator: {sorted(bad_pairs(holders, keys))}"
        for name, svc in final.items():
            ours = svc["spec"]["type"] == "LoadBalancer" and not svc["spec"].get("loadBalancerClass")
            if not ours:
                assert not ingress(svc), f"{name} is not ours and keeps {ingress(svc)}"
                assert C.ANNOTATION_IP_ALLOCATED_FROM_POOL not in (svc["metadata"].get("annotations") or {})
        # the pools' counts agree with what the statuses name
        p1 = rest.get(IPADDRESSPOOLS, "p1", NS).get("status") or {}
        named = {ip for s in final.values() for ip in ingress(s) if ip.startswith("10.77.0.")}
        wait_for(lambda: (rest.get(IPADDRESSPOOLS, "p1", NS).get("status") or {}).get("assignedIPv4")
                 == len(named), 10, message=lambda: f"p1 {p1} vs {sorted(named)}")
    finally:
        ctl.stop()
