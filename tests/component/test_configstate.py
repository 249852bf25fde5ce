"""ConfigurationState against the lab API server: the controller's `controller` and each speaker's
`speaker-<node>` say Valid/Invalid with the reason, are written only on change, stale ones (a
removed node) are deleted, and `kubectl get configurationstates` answers in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker import configstate as CS
from lbspeaker.api.constants import COMPONENT_TYPE_LABEL, NODE_NAME_LABEL
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.kube.resources import (
    CONFIGURATIONSTATES,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    NODES,
    SERVICES,
)
from lbspeaker.kube.rest import ApiError, Rest
from tests.component.test_speaker import (  # noqa: F401  (fixtures)
    NS,
    SpeakerFactory,
    rest,
    speakers,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.component


def state(r: Rest, name: str) -> dict[str, Any] | None:
    try:
        return r.get(CONFIGURATIONSTATES, name, NS)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def result(r: Rest, name: str) -> tuple[str | None, str]:
    st = (state(r, name) or {}).get("status") or {}
    return st.get("result"), st.get("errorSummary") or ""


@pytest.fixture
def controller(rest: Rest) -> Iterator[Controller]:  # noqa: F811
    ctl = Controller(rest, ControllerConfig(identity="ctl-a", lease_duration=3, renew_deadline=2,
                                            retry_period=0.3))
    ctl.start()
    yield ctl
    ctl.stop()


def test_controller_state_follows_pools_and_advertisements(rest: Rest, controller: Controller,  # noqa: F811
                                                           apiserver_with_crds: LabApiServer,
                                                           tmp_path: Path) -> None:
    wait_for(lambda: result(rest, "controller")[0] == "Valid", timeout=15,
             message=lambda: f"{state(rest, 'controller')}")
    obj = state(rest, "controller")
    assert obj is not None
    assert obj["metadata"]["labels"] == {COMPONENT_TYPE_LABEL: "controller"}
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]} == {
        CS.POOLS: "True", CS.ADVERTISEMENTS: "True"}

    # Written only on change: an allocation and a resync of everything leave the object alone.
    rv = obj["metadata"]["resourceVersion"]
    rest.create(SERVICES, {"metadata": {"name": "other", "namespace": "default"},
                           "spec": {"type": "LoadBalancer", "ports": [{"port": 81, "protocol": "TCP"}]}},
                "default")
    wait_for(lambda: (rest.get(SERVICES, "other", "default").get("status") or {}).get("loadBalancer"),
             timeout=10)
    controller.queue.add("pools")
    wait_for(controller.idle, timeout=10)
    assert state(rest, "controller")["metadata"]["resourceVersion"] == rv  # type: ignore[index]

    # A pool overlapping the existing one, and an advertisement of a pool that does not exist.
    rest.create(IPADDRESSPOOLS, {"metadata": {"name": "overlap", "namespace": NS},
                                 "spec": {"addresses": ["172.18.255.240/29"]}})
    wait_for(lambda: "IPAddressPool overlap" in result(rest, "controller")[1], timeout=10,
             message=lambda: f"{result(rest, 'controller')}")
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "ghost", "namespace": NS},
                                   "spec": {"ipAddressPools": ["nope"]}})
    wait_for(lambda: "L2Advertisement ghost" in result(rest, "controller")[1], timeout=10)
    res, summary = result(rest, "controller")
    assert res == "Invalid" and "\n" not in summary and "IPAddressPool overlap" in summary

    if shutil.which("kubectl"):
        env = {**os.environ, "KUBECONFIG": str(apiserver_with_crds.write_kubeconfig(tmp_path / "kc"))}
        out = subprocess.run(["kubectl", "get", "configurationstates", "-n", NS], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["NAME", "RESULT", "ERRORSUMMARY"]
        [row] = [r for r in rows if r.startswith("controller ")]
        assert row.split()[1] == "Invalid" and "IPAddressPool overlap" in row

    rest.delete(IPADDRESSPOOLS, "overlap", NS)
    rest.delete(L2ADVERTISEMENTS, "ghost", NS)
    wait_for(lambda: result(rest, "controller") == ("Valid", ""), timeout=10,
             message=lambda: f"{result(rest, 'controller')}")


def test_controller_deletes_the_states_of_removed_nodes(rest: Rest, controller: Controller) -> None:  # noqa: F811
    for node in ("node-a", "gone"):
        rest.create(CONFIGURATIONSTATES, CS.new_object(CS.SPEAKER, NS, node))
    wait_for(lambda: state(rest, "speaker-gone") is None, timeout=15)
    assert state(rest, "speaker-node-a") is not None

    rest.delete(NODES, "node-a")
    wait_for(lambda: state(rest, "speaker-node-a") is None, timeout=15)
    assert state(rest, "controller") is not None


def test_speaker_state_per_node(rest: Rest, speakers: SpeakerFactory) -> None:  # noqa: F811
    spk, _ = speakers("node-a")
    wait_for(lambda: result(rest, "speaker-node-a")[0] == "Valid", timeout=15,
             message=lambda: f"{state(rest, 'speaker-node-a')}")
    obj = state(rest, "speaker-node-a")
    assert obj is not None
    assert obj["metadata"]["labels"] == {COMPONENT_TYPE_LABEL: "speaker", NODE_NAME_LABEL: "node-a"}
    assert {c["type"] for c in obj["status"]["conditions"]} == {CS.LAYER2, CS.BGP}

    # An interface this node does not have: Invalid, saying which advertisement and why.
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "bad-if", "namespace": NS},
                                   "spec": {"ipAddressPools": ["pool"], "interfaces": ["bond9"]}})
    wait_for(lambda: "L2Advertisement bad-if" in result(rest, "speaker-node-a")[1], timeout=10,
             message=lambda: f"{result(rest, 'speaker-node-a')}")
    assert result(rest, "speaker-node-a")[0] == "Invalid"
    rv = state(rest, "speaker-node-a")["metadata"]["resourceVersion"]  # type: ignore[index]

    # A change that re-plans without changing a problem does not rewrite the state.
    plans = spk.l2_runner.plans
    rest.patch(NODES, "node-b", {"metadata": {"labels": {"unrelated": "yes"}}})
    wait_for(lambda: spk.l2_runner.plans > plans, timeout=10)
    assert state(rest, "speaker-node-a")["metadata"]["resourceVersion"] == rv  # type: ignore[index]

    rest.delete(L2ADVERTISEMENTS, "bad-if", NS)
    wait_for(lambda: result(rest, "speaker-node-a") == ("Valid", ""), timeout=10)
