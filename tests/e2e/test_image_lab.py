"""The install as a cluster runs it: the controller and the speakers from the container image.

`lbspeaker-lab up --image` runs them with podman, each with the command, args, env, user,
capabilities and read-only root filesystem of the rendered manifests; then the README's two
stories: a LoadBalancer Service reached from `client` over ARP and from `ext-client` over BGP.

The image is built with `./dev image` (layer cache and base reused: ~20 s warm; cold ~4-6 min
on 2 busy cores, most of it mmdebstrap and pip downloads), or taken from
$LBSPEAKER_TEST_IMAGE. Without podman (a machine where `./dev test` did not install it) the
test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import containers, demo
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP, NAMESPACE
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    Resource,
)
from lbspeaker.kube.rest import Rest
from tests.e2e.conftest import DEFAULT_OPTIONS

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13


@pytest.fixture(scope="module")
def image() -> str:
    tag = os.environ.get("LBSPEAKER_TEST_IMAGE")
    if tag:
        return tag
    why = containers.podman_available()
    if why or os.geteuid() != 0:
        pytest.skip(why or "building the image needs root")
    subprocess.run([str(REPO / "dev"), "image"], check=True, timeout=1800)
    return "lbspeaker:dev"


@pytest.fixture
def image_lab(lab_session, image: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    # A fresh lab, as a new cluster: objects earlier tests left in the API server (their
    # 198.51.100.0/24 pool is older than ours and would keep those addresses) stay out.
    lab = lab_session
    if lab.is_up:
        lab.down()
    lab.options = dict(DEFAULT_OPTIONS)
    lab.up(image=image)
    try:
        yield lab
    finally:
        lab.options.pop("image", None)
        lab.down()  # the next test gets the working-tree lab back


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def pool_and_advertisement(rest: Rest, name: str, pool_spec: dict[str, Any], adv: Resource) -> None:
    """An IPAddressPool and an L2/BGP advertisement of it, both called `name`."""
    demo.apply(rest, IPADDRESSPOOLS, {
        "apiVersion": API_VERSION, "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": NAMESPACE}, "spec": pool_spec,
    })
    kind = "L2Advertisement" if adv is L2ADVERTISEMENTS else "BGPAdvertisement"
    demo.apply(rest, adv, {
        "apiVersion": API_VERSION, "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"ipAddressPools": [name]},
    })


def test_l2_and_bgp_stories_from_the_image(image_lab) -> None:  # type: ignore[no-untyped-def]
    lab = image_lab
    state = lab.state()
    recorded = state["containers"]
    assert set(recorded) == {"controller"} | {f"speaker-{n.name}" for n in lab.plan.nodes}
    running = {c["Id"] for c in json.loads(containers.podman("ps", "--format", "json").stdout)}
    assert {c["id"] for c in recorded.values()} <= running

    # what the manifests ask for, as the kernel sees it
    ctl = containers.inspect(recorded["controller"]["id"])
    assert ctl is not None and ctl["HostConfig"]["ReadonlyRootfs"]
    status = proc_status(ctl["State"]["Pid"])
    assert status["Uid"].split()[:2] == ["65532", "65532"]
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1"
    spk = containers.inspect(recorded["speaker-kind-worker"]["id"])
    assert spk is not None and spk["HostConfig"]["ReadonlyRootfs"]
    status = proc_status(spk["State"]["Pid"])
    assert status["Uid"].split()[0] == "0"
    assert int(status["CapEff"], 16) == (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    assert os.stat(f"/proc/{spk['State']['Pid']}/ns/net").st_ino == os.stat("/run/netns/kind-worker").st_ino
    sa = containers.podman("exec", spk["Id"], "cat", f"{containers.SA_DIR}/namespace").stdout
    assert sa == "lbspeaker-system"
    # its host name resolves without DNS (none is reachable from a lab namespace), as on a node:
    # ExaBGP looks it up at import, and a 5 s resolver timeout per ExaBGP start is failover time
    resolved = containers.podman("exec", spk["Id"], "getent", "hosts", "kind-worker").stdout
    assert resolved.split()[1:] == ["kind-worker"], resolved

    rest = Rest(load_api_client(str(lab.kubeconfig)))
    pool_and_advertisement(rest, "img-l2", {"addresses": ["172.18.255.200-172.18.255.250"]}, L2ADVERTISEMENTS)
    demo.web_pods(rest, "web", 3)
    ip = demo.lb_service(rest, "web", "web", "img-l2")
    assert demo.curl_from("client", ip, 60).startswith("NODE: kind-worker")

    demo.apply(rest, BGPPEERS, {
        "apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
        "metadata": {"name": "lab-router", "namespace": NAMESPACE},
        "spec": {"myASN": demo.NODE_ASN, "peerASN": demo.ROUTER_ASN, "peerAddress": demo.ROUTER_IP},
    })
    pool_spec = {"addresses": ["198.51.100.0/24"], "autoAssign": False, "avoidBuggyIPs": True}
    pool_and_advertisement(rest, "img-bgp", pool_spec, BGPADVERTISEMENTS)
    demo.web_pods(rest, "web-bgp", 3)
    bgp_ip = demo.lb_service(rest, "web-bgp", "web-bgp", "img-bgp")
    assert demo.curl_from("ext-client", bgp_ip, 90).startswith("NODE: kind-worker")

    # `down` removes the containers by their IDs
    ids = {c["id"] for c in recorded.values()}
    lab.down()
    left = {c["Id"] for c in json.loads(containers.podman("ps", "-a", "--format", "json").stdout)}
    assert not ids & left
