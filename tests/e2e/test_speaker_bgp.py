"""The speaker's BGP side end to end in the lab, with FRR and with BIRD as the router.

Real processes: the lab API server, controller, speakers (each running its ExaBGP in
its node namespace), the router (FRR or BIRD) with ECMP into its kernel FIB, pods,
and `ext-client` behind the router (203.0.113.2).

* ETP Cluster: the router's RIB and kernel FIB hold the /32 with one next hop per
  worker (the control plane is excluded by its label); curl from ext-client reaches
  several pods over repeated connections; communities show on the router.
* ETP Local: next hops are exactly the nodes with ready pods, and follow them as pods
  are added, become unready, are deleted; the client IP reaches the pod.
* SIGTERM to a speaker: its next hop leaves the FIB at once (measured).
* SIGKILL: ExaBGP dies with the speaker (pdeathsig), so the next hop leaves well
  within the hold time (9 s); restarted speakers bring every next hop back.
* MD5 (`--bgp-password`): a BGPPeer whose passwordSecret holds the password comes
  up; a wrong one stays down with the reason in BGPPeer status.sessions.

* localPref: LOCAL_PREF is not carried over eBGP (RFC 4271), so
  `test_ibgp_local_pref_and_communities` brings the lab router up in the nodes' AS
  (`lbspeaker-lab up --bgp-mode ibgp`) and checks `localpref 250` / `BGP.local_pref: 250`
  and the communities on the router, with the route in its FIB via every worker.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab import netns as nsops
from lab import router as rtr
from lab import topology as topo
from lab.agents.nftrender import NO_EP_IPS, SERVICE_IPS, TABLE
from lab.demo import apply
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP, NAMESPACE
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    IPADDRESSPOOLS,
    PODS,
    SECRETS,
    SERVICEBGPSTATUSES,
    SERVICES,
    Resource,
)
from lbspeaker.kube.rest import ApiError, Rest
from tests.e2e.conftest import Lab

pytestmark = pytest.mark.e2e

T = TypeVar("T")
POOL = "198.51.100.0/24"
CLUSTER_IP = "198.51.100.10"
LOCAL_IP = "198.51.100.11"
EXT_CLIENT_IP = "203.0.113.2"
HOLD = 9
PEER = "lab-router"


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def answering_nodes(
    what: str, answer: Callable[[], str | None], want: int = 2, timeout: float = 30
) -> set[str]:
    """Ask until `want` different nodes have answered (each answer begins "NODE: name,"): kube-proxy
    (min sync period 1 s) may program a Service's other endpoints a moment after the first, so a
    fixed number of requests right after the route appears can all reach the same one."""
    seen: set[str] = set()

    def enough() -> bool:
        got = answer()
        if got:
            seen.add(got.split(",")[0])
        return len(seen) >= want

    wait_for(what, enough, timeout=timeout)
    return seen


def rest_for(lab: Lab) -> Rest:
    return Rest(load_api_client(str(lab.kubeconfig)))


def delete(rest: Rest, resource: Resource, name: str, ns: str | None) -> None:
    try:
        rest.delete(resource, name, ns)
    except ApiError as exc:
        if not exc.not_found:
            raise


def worker_ips(lab: Lab) -> dict[str, str]:
    return {n.name: n.ipv4 for n in lab.plan.nodes if not n.control_plane}


def kube_proxy_programmed(lab: Lab, ip: str) -> bool:
    """Every worker's kube-proxy rules forward `ip` to endpoints: like kube-proxy (min sync period
    1 s) the lab's stand-in may program a new Service, or its endpoints, after its route is
    announced, so a test that counts every request waits for this first. The IP must be in the
    dispatch map and not in the no-endpoints map: a Service whose endpoints are not programmed yet
    is in the table too, rejected (seen as the first requests of a loop refused)."""
    family = 6 if ":" in ip else 4
    for node in worker_ips(lab):
        if not map_names(node, SERVICE_IPS[family], ip) or map_names(node, NO_EP_IPS[family], ip):
            return False
    return True


def map_names(node: str, nft_map: str, ip: str) -> bool:
    """Whether an element of the kube-proxy stand-in's map `nft_map` on `node` is for `ip`."""
    out = nsops.run_in(node, ["nft", "list", "map", "inet", TABLE, nft_map], check=False).stdout
    return re.search(rf"(?<![0-9a-fA-F.:]){re.escape(ip)}(?![0-9a-fA-F.:])", out) is not None


def fib_nexthops(ip: str) -> set[str]:
    """Next hops of `ip/32` (or an IPv6 `ip/128`) in the router's kernel FIB."""
    family, host = ("-6", 128) if ":" in ip else ("-4", 32)
    out = nsops.run_in(topo.ROUTER, ["ip", family, "route", "show", f"{ip}/{host}"], check=False).stdout
    hops = set(re.findall(r"nexthop via (\S+)", out))
    if not hops:
        m = re.search(r"\bvia (\S+)", out)
        if m:
            hops.add(m.group(1))
    return hops


def router_paths(lab: Lab) -> rtr.RouterPaths:
    return rtr.RouterPaths(rtr.runtime_dir(lab.state_dir))


def rib_text(lab: Lab, ip: str) -> str:
    """The router's RIB entry for ip/32 (all paths, attributes)."""
    paths = router_paths(lab)
    if lab.options["router"] == "frr":
        return rtr.vtysh(paths, f"show ip bgp {ip}/32")
    return rtr.birdc(paths, f"show route all for {ip}/32")


def rib_paths(lab: Lab, ip: str) -> set[str]:
    """Next hops of the BGP paths the router holds for ip/32."""
    paths = router_paths(lab)
    if lab.options["router"] == "frr":
        data = json.loads(rtr.vtysh(paths, f"show ip bgp {ip}/32 json") or "{}")
        return {nh["ip"] for p in data.get("paths", []) for nh in p.get("nexthops", [])[:1]}
    text = rtr.birdc(paths, f"show route for {ip}/32")
    return set(re.findall(r"via (\d+\.\d+\.\d+\.\d+)", text))


def curl_ext(ip: str, timeout: float = 1.0) -> str | None:
    proc = nsops.run_in(topo.EXT_CLIENT, ["curl", "-s", "--max-time", str(timeout), f"http://{ip}/host"],
                        check=False, timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def pod(name: str, app: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": "lab/host-echo",
                                            "ports": [{"containerPort": 8080}]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}}, "spec": spec}


def service(name: str, app: str, ip: str, etp: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {f"{GROUP}/address-pool": "e2e-bgp", f"{GROUP}/loadBalancerIPs": ip}},
            "spec": {"type": "LoadBalancer", "selector": {"app": app}, "externalTrafficPolicy": etp,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def bgp_config(rest: Rest, password_secret: str | None = None) -> None:
    apply(rest, IPADDRESSPOOLS, {"apiVersion": API_VERSION, "kind": "IPAddressPool",
                                 "metadata": {"name": "e2e-bgp", "namespace": NAMESPACE},
                                 "spec": {"addresses": [POOL], "autoAssign": False}})
    spec: dict[str, Any] = {"myASN": 64513, "peerASN": 64512, "peerAddress": topo.ROUTER_IP_V4,
                            "holdTime": f"{HOLD}s"}
    if password_secret:
        spec["passwordSecret"] = {"name": password_secret}
    apply(rest, BGPPEERS, {"apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
                           "metadata": {"name": PEER, "namespace": NAMESPACE}, "spec": spec})
    apply(rest, BGPADVERTISEMENTS, {"apiVersion": API_VERSION, "kind": "BGPAdvertisement",
                                    "metadata": {"name": "e2e-bgp", "namespace": NAMESPACE},
                                    "spec": {"ipAddressPools": ["e2e-bgp"],
                                             "communities": ["64513:100", "large:64513:1:2"]}})


def speaker_pid(lab: Lab, node: str) -> int:
    for rec in lab.state()["processes"]:
        if rec["name"] == f"speaker-{node}":
            return int(rec["pid"])
    raise AssertionError(f"no speaker process for {node}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def sessions(rest: Rest, peer: str = PEER) -> dict[str, dict[str, Any]]:
    st = rest.get(BGPPEERS, peer, NAMESPACE).get("status") or {}
    return {s["node"]: s for s in st.get("sessions") or []}


@pytest.fixture(params=["frr", "bird"])
def bgp_lab(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Rest]]:
    if lab.options["router"] != request.param or lab.options.get("bgp_password"):
        lab.options.pop("bgp_password", None)
        lab.up(router=request.param)
    rest = rest_for(lab)
    bgp_config(rest)
    yield lab, rest
    for name in ("bgp-cluster", "bgp-local"):
        delete(rest, SERVICES, name, "default")
    for p in rest.list(PODS, "default")["items"]:
        if p["metadata"]["name"].startswith(("bgpc-", "bgpl-")):
            delete(rest, PODS, p["metadata"]["name"], "default")
    lab.up()  # restart any speaker a test ended


def test_cluster_local_and_signals(bgp_lab: tuple[Lab, Rest]) -> None:
    lab, rest = bgp_lab
    workers = worker_ips(lab)
    all_hops = set(workers.values())

    # --- ETP Cluster: one next hop per worker, control plane excluded ---------------------
    for i, node in enumerate(sorted(workers)):
        apply(rest, PODS, pod(f"bgpc-{i}", "bgpc", node))
    apply(rest, SERVICES, service("bgp-cluster", "bgpc", CLUSTER_IP, "Cluster"))
    wait_for("ECMP next hops in the router FIB", lambda: fib_nexthops(CLUSTER_IP) == all_hops, timeout=30)
    assert rib_paths(lab, CLUSTER_IP) == all_hops
    rib = rib_text(lab, CLUSTER_IP)
    print(rib)
    if lab.options["router"] == "frr":
        assert "64513:100" in rib and "64513:1:2" in rib
    else:
        assert "(64513,100)" in rib and "(64513, 1, 2)" in rib
    seen = answering_nodes("ext-client answered from two nodes", lambda: curl_ext(CLUSTER_IP))
    print("ext-client reached:", sorted(seen))
    st = [o["status"] for o in rest.list(SERVICEBGPSTATUSES, NAMESPACE)["items"]
          if o["status"]["serviceName"] == "bgp-cluster"]
    assert sorted(s["node"] for s in st) == sorted(workers) and all(s["peers"] == [PEER] for s in st)
    sess = sessions(rest)
    assert all(sess[n]["state"] == "Established" for n in workers), sess

    # --- ETP Local: next hops = nodes with ready pods, following them ---------------------
    names = sorted(workers)
    apply(rest, PODS, pod("bgpl-0", "bgpl", names[0]))
    apply(rest, SERVICES, service("bgp-local", "bgpl", LOCAL_IP, "Local"))
    wait_for("Local: one next hop", lambda: fib_nexthops(LOCAL_IP) == {workers[names[0]]})
    answer = wait_for("curl Local", lambda: curl_ext(LOCAL_IP))
    assert f"CLIENT IP: {EXT_CLIENT_IP}" in answer and names[0] in answer, answer
    apply(rest, PODS, pod("bgpl-1", "bgpl", names[1]))
    wait_for("Local: pod added", lambda: fib_nexthops(LOCAL_IP) == {workers[names[0]], workers[names[1]]})
    p0 = rest.get(PODS, "bgpl-0", "default")
    p0["metadata"].setdefault("annotations", {})["lab.lbspeaker.io/ready"] = "false"
    t0 = time.monotonic()
    rest.replace(PODS, p0)
    wait_for("Local: unready pod's node withdrawn", lambda: fib_nexthops(LOCAL_IP) == {workers[names[1]]})
    print(f"unready -> withdrawn from FIB in {time.monotonic() - t0:.2f}s")
    delete(rest, PODS, "bgpl-1", "default")
    wait_for("Local: no ready pod, no route", lambda: not fib_nexthops(LOCAL_IP))

    # --- SIGTERM: the next hop leaves at once ---------------------------------------------
    victim = names[2]
    term_pid = speaker_pid(lab, victim)
    t0 = time.monotonic()
    os.kill(term_pid, signal.SIGTERM)
    # within 5 s, below the lab's 9 s hold time: the withdrawal, not the hold timer, removed it
    wait_for("SIGTERM: next hop withdrawn", lambda: workers[victim] not in fib_nexthops(CLUSTER_IP),
             timeout=5)
    print(f"SIGTERM -> next hop gone from FIB in {time.monotonic() - t0:.2f}s")
    assert fib_nexthops(CLUSTER_IP) == all_hops - {workers[victim]}

    # --- SIGKILL: ExaBGP dies with the speaker; gone within the hold time -----------------
    victim2 = names[1]
    pid = speaker_pid(lab, victim2)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for("SIGKILL: next hop withdrawn", lambda: workers[victim2] not in fib_nexthops(CLUSTER_IP),
             timeout=HOLD + 3)
    print(f"SIGKILL -> next hop gone from FIB in {time.monotonic() - t0:.2f}s (hold time {HOLD}s)")
    exabgp = subprocess.run(["pgrep", "-f", f"exabgp server .*/bgp/{victim2}/"], capture_output=True,
                            text=True)
    assert exabgp.stdout.strip() == "", "ExaBGP outlived its speaker"

    # --- restart: the routes come back ------------------------------------------------------
    # BIRD holds a session that failed (the SIGKILL) in its "error wait" (60 s by default)
    # before it accepts the node again; FRR reconnects at once.
    wait_for("the SIGTERMed speaker has exited", lambda: not alive(term_pid), timeout=15)
    lab.up()
    t0 = time.monotonic()
    wait_for("speakers restarted: all next hops back", lambda: fib_nexthops(CLUSTER_IP) == all_hops,
             timeout=30 if lab.options["router"] == "frr" else 90)
    print(f"restarted speakers: all next hops back after {time.monotonic() - t0:.1f}s")


@pytest.mark.parametrize("router", ["frr", "bird"])
def test_md5_password(lab: Lab, router: str) -> None:
    password = "lab-md5-pw"
    lab.up(router=router, bgp_password=password)
    rest = rest_for(lab)
    try:
        apply(rest, SECRETS, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                              "metadata": {"name": "bgp-md5", "namespace": NAMESPACE},
                              "data": {"password": base64.b64encode(password.encode()).decode()}})
        apply(rest, SECRETS, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                              "metadata": {"name": "bgp-wrong", "namespace": NAMESPACE},
                              "stringData": {"password": "not-the-password"}})
        bgp_config(rest, password_secret="bgp-md5")
        workers = worker_ips(lab)
        wait_for("MD5 sessions established",
                 lambda: all(sessions(rest).get(n, {}).get("state") == "Established" for n in workers),
                 timeout=40)
        bgp_config(rest, password_secret="bgp-wrong")

        def down_with_reason() -> dict[str, Any] | None:
            s = sessions(rest)
            ok = all(s.get(n, {}).get("state") != "Established" and "MD5" in s.get(n, {}).get("reason", "")
                     for n in workers)
            return s if ok else None

        s = wait_for("wrong password: sessions down with a reason", down_with_reason, timeout=40)
        print("wrong password:", json.dumps(s[sorted(workers)[0]]))
        time.sleep(2 * HOLD)
        assert all(v["state"] != "Established" for v in sessions(rest).values())
    finally:
        delete(rest, BGPPEERS, PEER, NAMESPACE)
        lab.options.pop("bgp_password", None)
        lab.up()


IBGP_IP = "198.51.100.12"
LOCAL_PREF = 250


def ibgp_config(rest: Rest) -> None:
    """The e2e pool, the peer in iBGP (myASN = peerASN = the nodes' AS) and localPref + communities."""
    bgp_config(rest)
    apply(rest, BGPPEERS, {"apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
                           "metadata": {"name": PEER, "namespace": NAMESPACE},
                           "spec": {"myASN": topo.NODE_ASN, "peerASN": topo.NODE_ASN,
                                    "peerAddress": topo.ROUTER_IP_V4, "holdTime": f"{HOLD}s"}})
    apply(rest, BGPADVERTISEMENTS, {"apiVersion": API_VERSION, "kind": "BGPAdvertisement",
                                    "metadata": {"name": "e2e-bgp", "namespace": NAMESPACE},
                                    "spec": {"ipAddressPools": ["e2e-bgp"], "localPref": LOCAL_PREF,
                                             "communities": ["64513:100", "large:64513:1:2"]}})


@pytest.mark.parametrize("router", ["frr", "bird"])
def test_ibgp_local_pref_and_communities(lab: Lab, router: str) -> None:
    """localPref and communities on the router's RIB, ECMP via every worker in its FIB (iBGP lab)."""
    rest = rest_for(lab)
    workers = worker_ips(lab)
    # Configure the iBGP peer first, then (re)start the router in AS 64513: a fresh router has no
    # memory of the refused eBGP-AS sessions (BIRD would otherwise hold them in its error wait).
    ibgp_config(rest)
    try:
        lab.up(router=router, bgp_mode="ibgp")
        assert lab.state()["config"]["bgp_mode"] == "ibgp"
        assert f"AS {topo.NODE_ASN} (ibgp)" in lab.last_up_output, lab.last_up_output
        apply(rest, PODS, pod("bgpi-0", "bgpi", sorted(workers)[0]))
        apply(rest, SERVICES, service("bgp-ibgp", "bgpi", IBGP_IP, "Cluster"))
        all_hops = set(workers.values())
        wait_for("iBGP: ECMP next hops in the router FIB", lambda: fib_nexthops(IBGP_IP) == all_hops,
                 timeout=60)
        assert rib_paths(lab, IBGP_IP) == all_hops
        paths = router_paths(lab)
        if router == "frr":
            rib = rtr.vtysh(paths, f"show ip bgp {IBGP_IP}/32")
            print(rib)
            assert rib.count(f"localpref {LOCAL_PREF}") == len(workers), rib
            assert "internal" in rib and "64513:100" in rib and "64513:1:2" in rib
            assert "multipath" in rib
        else:
            rib = rtr.birdc(paths, f"show route all {IBGP_IP}/32")
            print(rib)
            assert rib.count(f"BGP.local_pref: {LOCAL_PREF}") == len(workers), rib
            assert "(64513,100)" in rib and "(64513, 1, 2)" in rib
        print(nsops.run_in(topo.ROUTER, ["ip", "-4", "route", "show", f"{IBGP_IP}/32"]).stdout)
        sess = sessions(rest)
        assert all(sess[n]["state"] == "Established" for n in workers), sess
    finally:
        delete(rest, SERVICES, "bgp-ibgp", "default")
        delete(rest, PODS, "bgpi-0", "default")
        bgp_config(rest)  # back to the eBGP peer and advertisement the other tests expect
        lab.up(bgp_mode="ebgp")
