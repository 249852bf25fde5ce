"""IPv6 over BGP in an `--ipv6` lab, with FRR and with BIRD as the router (issue 11).

Two BGPPeers to the same router, each carrying one IPv6 Service (a BGPAdvertisement's
`peers` picks the session):

* `v6-mp`: the router's IPv4 address with `dualStackAddressFamily` (MP-BGP): the /128 goes
  over the IPv4 session with the node's IPv6 address as next hop;
* `v6-native`: the router's IPv6 address, a native IPv6 session.

Each /128 is in the router's FIB with one next hop per worker (ECMP), learnt from the
session it was meant for, and ext-client (2001:db8:1::2, behind the router) reaches the
pods over IPv6.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from lab import netns as nsops
from lab import router as rtr
from lab import topology as topo
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP, NAMESPACE
from lbspeaker.kube.resources import BGPADVERTISEMENTS, BGPPEERS, IPADDRESSPOOLS, PODS, SERVICES
from lbspeaker.kube.rest import Rest
from tests.e2e import test_speaker_bgp as sb
from tests.e2e.conftest import Lab
from tests.e2e.test_speaker_bgp import PEER, apply, delete, pod, rest_for, router_paths, sessions, wait_for

pytestmark = pytest.mark.e2e

HOLD = 9
MP_PEER, NATIVE_PEER = "v6-mp", "v6-native"
# (peer, pool, Service IP): one Service per kind of session
CASES = {MP_PEER: ("e2e-v6-mp", "2001:db8:100::/124", "2001:db8:100::1"),
         NATIVE_PEER: ("e2e-v6-native", "2001:db8:100::10/124", "2001:db8:100::11")}


def worker_ips6(lab: Lab) -> dict[str, str]:
    return {n.name: n.ipv6 for n in lab.plan.nodes if not n.control_plane and n.ipv6}


def rib6_sources(lab: Lab, ip: str) -> set[str]:
    """Which sessions the router learnt ip/128 from: "4" (an IPv4 neighbour) and/or "6"."""
    paths = router_paths(lab)
    if lab.options["router"] == "frr":
        data = json.loads(rtr.vtysh(paths, f"show bgp ipv6 unicast {ip}/128 json") or "{}")
        peers = {str((p.get("peer") or {}).get("peerId", "")) for p in data.get("paths", [])}
    else:
        text = rtr.birdc(paths, f"show route for {ip}/128 all")
        protos = re.findall(r"\[(n6?_\S+|dyn[46]_\S+) ", text)
        return {"6" if p.startswith(("n6_", "dyn6_")) else "4" for p in protos}
    return {"6" if ":" in p else "4" for p in peers if p}


def curl6(ip: str, timeout: float = 1.0) -> str | None:
    proc = nsops.run_in(topo.EXT_CLIENT, ["curl", "-s", "-g", "--max-time", str(timeout), f"http://[{ip}]/host"],
                        check=False, timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def ipv6_bgp_config(rest: Rest, peers: tuple[str, ...] = (MP_PEER, NATIVE_PEER)) -> None:
    """Both peers, a pool and an advertisement (restricted to its peer) for each.

    The other tests' BGPPeer (`lab-router`: the router's IPv4 address, the same myASN) is
    deleted first: a node has one session per router address, and ExaBGP could not tell two
    such peers apart (the second by name would not be configured)."""
    delete(rest, BGPPEERS, PEER, NAMESPACE)
    specs: dict[str, dict[str, Any]] = {
        MP_PEER: {"peerAddress": topo.ROUTER_IP_V4, "dualStackAddressFamily": True},
        NATIVE_PEER: {"peerAddress": topo.ROUTER_IP_V6},
    }
    for name in peers:
        pool, cidr, _ = CASES[name]
        apply(rest, BGPPEERS, {"apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
                               "metadata": {"name": name, "namespace": NAMESPACE},
                               "spec": {"myASN": topo.NODE_ASN, "peerASN": topo.ROUTER_ASN,
                                        "holdTime": f"{HOLD}s", **specs[name]}})
        apply(rest, IPADDRESSPOOLS, {"apiVersion": API_VERSION, "kind": "IPAddressPool",
                                     "metadata": {"name": pool, "namespace": NAMESPACE},
                                     "spec": {"addresses": [cidr], "autoAssign": False}})
        apply(rest, BGPADVERTISEMENTS, {"apiVersion": API_VERSION, "kind": "BGPAdvertisement",
                                        "metadata": {"name": pool, "namespace": NAMESPACE},
                                        "spec": {"ipAddressPools": [pool], "peers": [name]}})


def service6(name: str, app: str, ip: str, pool: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {f"{GROUP}/address-pool": pool, f"{GROUP}/loadBalancerIPs": ip}},
            "spec": {"type": "LoadBalancer", "selector": {"app": app}, "externalTrafficPolicy": "Cluster",
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def cleanup(rest: Rest) -> None:
    for name, (pool, _, _) in sorted(CASES.items()):
        delete(rest, SERVICES, pool, "default")
        delete(rest, BGPADVERTISEMENTS, pool, NAMESPACE)
        delete(rest, IPADDRESSPOOLS, pool, NAMESPACE)
        delete(rest, BGPPEERS, name, NAMESPACE)
    for p in rest.list(PODS, "default")["items"]:
        if p["metadata"]["name"].startswith("bgp6-"):
            delete(rest, PODS, p["metadata"]["name"], "default")


@pytest.fixture(params=["frr", "bird"])
def ipv6_bgp_lab(lab_session: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Rest]]:
    lab = lab_session
    if lab.is_up and not lab.options.get("ipv6"):
        lab.down()
    lab.options["ipv6"] = True
    lab.up(router=request.param)
    rest = rest_for(lab)
    try:
        yield lab, rest
    finally:
        cleanup(rest)
        lab.down()  # the next test gets the default (IPv4) lab back


def test_ipv6_service_over_mp_bgp_and_native_ipv6_sessions(ipv6_bgp_lab: tuple[Lab, Rest]) -> None:
    lab, rest = ipv6_bgp_lab
    workers = worker_ips6(lab)
    hops = set(workers.values())
    assert len(hops) == 3
    ipv6_bgp_config(rest)
    for i, node in enumerate(sorted(workers)):
        apply(rest, PODS, pod(f"bgp6-{i}", "bgp6", node))
    for pool, _, ip in CASES.values():
        apply(rest, SERVICES, service6(pool, "bgp6", ip, pool))
    wait_for("both sessions Established on every worker",
             lambda: all(sessions(rest, p).get(n, {}).get("state") == "Established"
                         for p in CASES for n in workers), timeout=60)
    for name, (_, _, ip) in CASES.items():
        got = wait_for(f"{ip}/128 with one next hop per worker in the FIB",
                       lambda ip=ip: hops if sb.fib_nexthops(ip) == hops else None, timeout=60)  # type: ignore[misc]
        print(f"{name}: {ip}/128 via {sorted(got)}")
        want = "4" if name == MP_PEER else "6"
        assert rib6_sources(lab, ip) == {want}, (name, rib6_sources(lab, ip))
    seen = sb.answering_nodes("ext-client answered over IPv6 from two nodes",
                              lambda: curl6(CASES[NATIVE_PEER][2]))
    print("ext-client reached over IPv6:", sorted(seen))
    assert curl6(CASES[MP_PEER][2]), "no answer over the MP-BGP route"
