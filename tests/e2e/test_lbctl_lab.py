"""lbctl against the running lab: status shows the announcing node, and check tells the truth in
the lab's failure cases (a speaker killed, kube-proxy in IPVS mode without strictARP, a BGP
peer down). Assertions name specific findings: other tests' leftovers may add their own."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from lbspeaker.kube import resources as R
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.lbctl.cli import main
from tests.e2e import test_speaker_bgp as sb
from tests.e2e.conftest import Lab

pytestmark = pytest.mark.e2e

NS = "lbctl-e2e"
SYS = "lbspeaker-system"
POOL = "lbctl-e2e"
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 45, interval: float = 0.5) -> T:
    """`test_speaker_bgp.wait_for`, with this module's slower defaults (lbctl runs as a process)."""
    return sb.wait_for(what, fn, timeout, interval)


def lbctl(lab: Lab, *args: str) -> tuple[int, Any]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--kubeconfig", str(lab.kubeconfig), "-o", "json", *args], out, err)
    assert code in (0, 1), err.getvalue()
    return code, json.loads(out.getvalue())


def findings(lab: Lab) -> set[tuple[str, str]]:
    _, problems = lbctl(lab, "check")
    return {(p["check"], p["object"]) for p in problems}


def ensure(rest: Rest, resource: R.Resource, obj: dict[str, Any]) -> None:
    try:
        rest.create(resource, obj)
    except ApiError as exc:
        if not exc.already_exists:
            raise


@pytest.fixture(scope="module")
def web(lab_session: Lab) -> Iterator[tuple[Lab, Rest]]:
    """A pool of its own (outside other tests' ranges), an L2Advertisement, 2 pods and a Service."""
    lab_session.ensure_up()
    rest = Rest(load_api_client(str(lab_session.kubeconfig)))
    ensure(rest, R.NAMESPACES, {"metadata": {"name": NS}})
    ensure(rest, R.IPADDRESSPOOLS, {"metadata": {"name": POOL, "namespace": SYS},
                                    "spec": {"addresses": ["172.18.255.100-172.18.255.110"],
                                             "autoAssign": False}})
    ensure(rest, R.L2ADVERTISEMENTS, {"metadata": {"name": POOL, "namespace": SYS},
                                      "spec": {"ipAddressPools": [POOL]}})
    for i in range(2):
        ensure(rest, R.PODS, {
            "metadata": {"name": f"web-{i}", "namespace": NS, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        })
    ensure(rest, R.SERVICES, {
        "metadata": {"name": "web", "namespace": NS, "annotations": {"lbspeaker.io/address-pool": POOL}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
    yield lab_session, rest
    with contextlib.suppress(Exception):
        rest.delete(R.NAMESPACES, NS)
    for res in (R.L2ADVERTISEMENTS, R.IPADDRESSPOOLS):
        with contextlib.suppress(Exception):
            rest.delete(res, POOL, SYS)


def web_row(lab: Lab) -> dict[str, Any] | None:
    _, rows = lbctl(lab, "status")
    for row in rows:
        if row["namespace"] == NS and row["name"] == "web":
            return dict(row)
    return None


def test_status_names_the_announcing_node(web: tuple[Lab, Rest]) -> None:
    lab, _ = web
    row = wait_for(
        "web announced", lambda: (r := web_row(lab)) and r["announcedBy"] and not r["problems"] and r
    )
    assert row["ips"] and row["ips"][0].startswith("172.18.255.1")
    assert row["pool"] == POOL and row["mode"] == "L2"
    assert len(row["announcedBy"]) == 1
    _, pools = lbctl(lab, "pools")
    mine = next(p for p in pools if p["name"] == POOL)
    assert mine["assigned"] == 1 and mine["available"] == 10


def test_check_sees_a_killed_speaker(web: tuple[Lab, Rest]) -> None:
    lab, _ = web
    row = wait_for("web announced", lambda: (r := web_row(lab)) and r["announcedBy"] and r)
    node = row["announcedBy"][0]
    assert ("speaker", f"node {node}") not in findings(lab)
    rec = next(p for p in lab.state()["processes"] if p["name"] == f"speaker-{node}")
    try:
        os.kill(int(rec["pid"]), signal.SIGKILL)  # a lab process recorded by PID in the state file
        wait_for("stale Lease reported", lambda: ("speaker", f"node {node}") in findings(lab), timeout=60)
    finally:
        lab.up()  # idempotent: restarts the dead speaker
    wait_for("speaker back", lambda: ("speaker", f"node {node}") not in findings(lab), timeout=60)


def test_check_sees_ipvs_without_strictarp(web: tuple[Lab, Rest]) -> None:
    lab, _ = web
    assert ("strictARP", "ConfigMap kube-system/kube-proxy") not in findings(lab)
    try:
        lab.up(kube_proxy_mode="ipvs", strict_arp=False)
        wait_for("strictARP reported",
                 lambda: ("strictARP", "ConfigMap kube-system/kube-proxy") in findings(lab))
        lab.up(kube_proxy_mode="ipvs", strict_arp=True)
        wait_for("strictARP fixed",
                 lambda: ("strictARP", "ConfigMap kube-system/kube-proxy") not in findings(lab))
    finally:
        lab.up(kube_proxy_mode="iptables", strict_arp=False)


def test_check_sees_a_peer_down(web: tuple[Lab, Rest]) -> None:
    """A BGPPeer the router refuses (wrong AS): its sessions must show up as not Established."""
    lab, rest = web
    ensure(rest, R.BGPPEERS, {"metadata": {"name": "lbctl-wrong-asn", "namespace": SYS},
                              "spec": {"myASN": 64513, "peerASN": 65000, "peerAddress": "172.18.0.1"}})
    try:
        def sessions() -> list[Any]:
            status = rest.get(R.BGPPEERS, "lbctl-wrong-asn", SYS).get("status") or {}
            return list(status.get("sessions") or [])

        wait_for("BGPPeer status.sessions", sessions, timeout=30)
        wait_for("session down reported",
                 lambda: ("bgp-session", "BGPPeer lbctl-wrong-asn") in findings(lab), timeout=30)
    finally:
        with contextlib.suppress(Exception):
            rest.delete(R.BGPPEERS, "lbctl-wrong-asn", SYS)


def test_configuration_states_say_whether_the_configuration_is_taken(web: tuple[Lab, Rest]) -> None:
    """The controller and every speaker write their ConfigurationState (MetalLB's names); an interface
    no node has makes the speakers' states Invalid, naming the advertisement, until it is fixed."""
    lab, rest = web
    speakers = sorted(p["name"] for p in lab.state()["processes"] if p["name"].startswith("speaker-"))
    assert speakers

    def states() -> dict[str, dict[str, Any]]:
        items = rest.list(R.CONFIGURATIONSTATES, SYS)["items"]
        return {o["metadata"]["name"]: o.get("status") or {} for o in items}

    wait_for("every component reports", lambda: all(
        states().get(n, {}).get("result") in ("Valid", "Invalid") for n in ["controller", *speakers]))
    name = "lbctl-e2e-bad-if"
    ensure(rest, R.L2ADVERTISEMENTS, {"metadata": {"name": name, "namespace": SYS},
                                      "spec": {"ipAddressPools": [POOL], "interfaces": ["nope0"]}})
    try:
        def invalid(st: dict[str, Any]) -> bool:
            return st.get("result") == "Invalid" and f"L2Advertisement {name}" in st.get("errorSummary", "")

        wait_for("speakers say Invalid", lambda: all(invalid(states().get(n, {})) for n in speakers))
    finally:
        rest.delete(R.L2ADVERTISEMENTS, name, SYS)
    wait_for("speakers forget it", lambda: all(
        f"L2Advertisement {name}" not in states().get(n, {}).get("errorSummary", "") for n in speakers))
