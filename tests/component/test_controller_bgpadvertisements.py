"""The real controller against the lab API server: a BGPAdvertisement whose localPref loses to
another's (same pool, overlapping nodes and peers) gets `Ready=False reason LocalPrefConflict`,
the winner (first by name, as on the wire) stays Ready, and recomputing changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import BGPADVERTISEMENTS, EVENTS, IPADDRESSPOOLS, NAMESPACES, NODES
from lbspeaker.kube.rest import ApiError, Rest
from tests.helpers import wait_for

pytestmark = pytest.mark.component

NS = "lbspeaker-system"


@pytest.fixture
def rest(apiserver_with_crds: LabApiServer, kubeconfig: Path) -> Rest:
    r = Rest(load_api_client(str(kubeconfig)))
    for ns in ("default", NS):
        try:
            r.create(NAMESPACES, {"metadata": {"name": ns}})
        except ApiError as exc:
            if not exc.conflict:
                raise
    return r


@pytest.fixture
def controller(rest: Rest) -> Iterator[Controller]:
    ctl = Controller(rest, ControllerConfig(identity="ctl-a", lease_duration=3, renew_deadline=2,
                                            retry_period=0.3))
    ctl.start()
    yield ctl
    ctl.stop()


def ready(rest: Rest, name: str) -> dict[str, Any]:
    conditions = (rest.get(BGPADVERTISEMENTS, name, NS).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def events(rest: Rest, name: str, reason: str) -> list[dict[str, Any]]:
    return [ev for ev in rest.list_all(EVENTS, NS)["items"]
            if ev["involvedObject"].get("name") == name and ev["reason"] == reason]


def advertise(rest: Rest, name: str, **spec: Any) -> None:
    rest.create(BGPADVERTISEMENTS, {"metadata": {"name": name, "namespace": NS}, "spec": spec})


def test_local_pref_conflict_condition(rest: Rest, controller: Controller) -> None:
    for pool, cidr in (("web", "10.92.0.0/30"), ("db", "10.93.0.0/30")):
        rest.create(IPADDRESSPOOLS, {"metadata": {"name": pool, "namespace": NS},
                                     "spec": {"addresses": [cidr]}})
    for node, zone in (("kind-worker", "a"), ("kind-worker2", "b")):
        rest.create(NODES, {"metadata": {"name": node, "labels": {"zone": zone}}})
    advertise(rest, "a-web", ipAddressPools=["web"], localPref=100)
    advertise(rest, "b-web", ipAddressPools=["web"], localPref=200)
    advertise(rest, "c-db", ipAddressPools=["db"], localPref=300)  # another pool: no conflict
    advertise(rest, "d-web-zone-b", ipAddressPools=["web"], localPref=400,
              nodeSelectors=[{"matchLabels": {"zone": "b"}}])  # overlaps a-web on kind-worker2

    wait_for(lambda: ready(rest, "b-web").get("reason") == "LocalPrefConflict", 15,
             message=lambda: str(ready(rest, "b-web")))
    loser = ready(rest, "b-web")
    assert loser["status"] == "False"
    assert loser["message"].startswith(
        "localPref 200 is overridden by BGPAdvertisement a-web (localPref 100; the first by name wins) "
        "for pool(s) web on node(s) kind-worker, kind-worker2."), loser["message"]
    assert "same localPref" in loser["message"]
    wait_for(lambda: ready(rest, "d-web-zone-b").get("reason") == "LocalPrefConflict", 15)
    assert "node(s) kind-worker2." in ready(rest, "d-web-zone-b")["message"]
    for name in ("a-web", "c-db"):
        wait_for(lambda name=name: ready(rest, name).get("status") == "True", 15,  # type: ignore[misc]
                 message=lambda name=name: str(ready(rest, name)))  # type: ignore[misc]
    wait_for(lambda: events(rest, "b-web", "LocalPrefConflict"), 15)

    # No flapping: unrelated changes make the controller recompute; nothing moves.
    before = rest.get(BGPADVERTISEMENTS, "b-web", NS)
    rest.patch(NODES, "kind-worker", {"metadata": {"labels": {"zone": "a", "touched": "1"}}})
    rest.create(IPADDRESSPOOLS, {"metadata": {"name": "other", "namespace": NS},
                                 "spec": {"addresses": ["10.94.0.0/30"]}})
    time.sleep(2)
    after = rest.get(BGPADVERTISEMENTS, "b-web", NS)
    assert after["status"] == before["status"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert len(events(rest, "b-web", "LocalPrefConflict")) == 1

    # Agreeing on localPref clears it; the winner never changed.
    rest.patch(BGPADVERTISEMENTS, "b-web", {"spec": {"localPref": 100}}, NS)
    wait_for(lambda: ready(rest, "b-web").get("status") == "True", 15,
             message=lambda: str(ready(rest, "b-web")))
    assert ready(rest, "a-web")["status"] == "True"
    # Deleting the winner hands the slot to the next by name: d-web-zone-b now loses to b-web.
    rest.delete(BGPADVERTISEMENTS, "a-web", NS)
    wait_for(lambda: "overridden by BGPAdvertisement b-web" in ready(rest, "d-web-zone-b").get("message", ""),
             15, message=lambda: str(ready(rest, "d-web-zone-b")))
