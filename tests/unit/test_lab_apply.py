"""The lab's create-or-replace retries a replace that lost a race with a status writer.

The speakers write BGPPeer status while a test re-applies the peer's spec: the replace then
carries a resourceVersion that is one write old and gets 409 Conflict (CI, stop 17:
test_ibgp_local_pref_and_communities). Both create-or-replace helpers (the demo's and
`lbspeaker-lab up`'s) re-read and retry, a bounded number of times.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab import commands, demo
from lbspeaker.kube.resources import BGPPEERS, Resource
from lbspeaker.kube.rest import ApiError

PEER = {"metadata": {"name": "lab-router", "namespace": "lbspeaker-system"}, "spec": {"myASN": 64513}}


class RacingRest:
    """Answers like the API server while a status writer bumps resourceVersion `races` times
    between each GET and the PUT that follows it."""

    def __init__(self, races: int) -> None:
        self.races = races
        self.rv = 5
        self.replaced: list[dict[str, Any]] = []

    def create(self, resource: Resource, obj: dict[str, Any], namespace: str | None = None) -> None:
        raise ApiError(409, "AlreadyExists", f'{resource.plural} "{obj["metadata"]["name"]}" already exists')

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": str(self.rv)}}

    def replace(self, resource: Resource, obj: dict[str, Any]) -> None:
        if self.races:
            self.races -= 1
            self.rv += 1  # the speaker's status write landed between our GET and this PUT
        if obj["metadata"]["resourceVersion"] != str(self.rv):
            raise ApiError(409, "Conflict", "the object has been modified")
        self.replaced.append(obj)


class RacingKube(commands.Kube):
    """lab.commands.Kube over the same race, at the HTTP level."""

    def __init__(self, races: int) -> None:
        self.rest = RacingRest(races)

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        name = path.rsplit("/", 1)[-1]
        try:
            if method == "POST":
                self.rest.create(BGPPEERS, body)
            if method == "GET":
                return self.rest.get(BGPPEERS, name)
            if method == "PUT":
                self.rest.replace(BGPPEERS, body)
                return body
        except ApiError as exc:
            raise commands.KubeError(exc.status, exc.message) from exc
        raise AssertionError(method)


@pytest.mark.parametrize("races", [0, 1, 3, demo.APPLY_ATTEMPTS - 1])
def test_demo_apply_rereads_after_a_conflict(races: int) -> None:
    rest = RacingRest(races)
    demo.apply(rest, BGPPEERS, {**PEER})  # type: ignore[arg-type]
    assert len(rest.replaced) == 1 and rest.replaced[0]["metadata"]["resourceVersion"] == str(rest.rv)


def test_demo_apply_gives_up_after_its_bound() -> None:
    rest = RacingRest(demo.APPLY_ATTEMPTS)
    with pytest.raises(ApiError) as err:
        demo.apply(rest, BGPPEERS, {**PEER})  # type: ignore[arg-type]
    assert err.value.conflict and not rest.replaced


@pytest.mark.parametrize("races", [0, 1, commands.APPLY_ATTEMPTS - 1])
def test_lab_kube_apply_rereads_after_a_conflict(races: int) -> None:
    kube = RacingKube(races)
    kube.apply("/apis/lbspeaker.io/v1beta2/namespaces/lbspeaker-system/bgppeers", {**PEER})
    assert len(kube.rest.replaced) == 1


def test_lab_kube_apply_gives_up_after_its_bound() -> None:
    kube = RacingKube(commands.APPLY_ATTEMPTS)
    with pytest.raises(commands.KubeError) as err:
        kube.apply("/apis/lbspeaker.io/v1beta2/namespaces/lbspeaker-system/bgppeers", {**PEER})
    assert err.value.status == 409
