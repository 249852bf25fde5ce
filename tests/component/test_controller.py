"""The real controller against the lab API server: allocation at scale, restarts, the Lease,
broken watches, and bad input that must get a clear answer and disturb nothing else."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import EVENTS, IPADDRESSPOOLS, NAMESPACES, NODES, SERVICES
from lbspeaker.kube.rest import ApiError, Rest
from tests.helpers import wait_for

pytestmark = pytest.mark.component

NS = "lbspeaker-system"


# ------------------------------------------------------------------------------------------- fixtures


def ensure_namespaces(r: Rest) -> None:
    for ns in ("default", NS, "team-a"):
        try:
            r.create(NAMESPACES, {"metadata": {"name": ns}})
        except ApiError as exc:
            if not exc.conflict:
                raise


@pytest.fixture
def rest(apiserver_with_crds: LabApiServer, kubeconfig: Path) -> Rest:
    r = Rest(load_api_client(str(kubeconfig)))
    ensure_namespaces(r)
    return r


ControllerFactory = Callable[..., Controller]


@pytest.fixture
def controllers(rest: Rest) -> Iterator[ControllerFactory]:
    """Factory of in-process controllers with a short Lease; all stopped at teardown."""
    started: list[Controller] = []

    def make(identity: str = "ctl-a", **overrides: Any) -> Controller:
        cfg = ControllerConfig(identity=identity, lease_duration=3, renew_deadline=2, retry_period=0.3,
                               **overrides)
        ctl = Controller(rest, cfg)
        ctl.start()
        started.append(ctl)
        return ctl

    yield make
    for ctl in started:
        ctl.stop()


def make_pool(rest: Rest, name: str, *addresses: str, **spec: Any) -> dict[str, Any]:
    return rest.create(IPADDRESSPOOLS, {"metadata": {"name": name, "namespace": NS},
                                        "spec": {"addresses": list(addresses), **spec}})


def make_svc(rest: Rest, name: str, ns: str = "default", ann: dict[str, str] | None = None,
             port: int = 80, **spec: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, "namespace": ns, "annotations": ann or {}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}],
                     "selector": {"app": name}, **spec}}
    return rest.create(SERVICES, body)


def ips(rest: Rest, name: str, ns: str = "default") -> list[str]:
    svc = rest.get(SERVICES, name, ns)
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ingress]


def all_ips(rest: Rest) -> dict[str, list[str]]:
    out = {}
    for svc in rest.list_all(SERVICES)["items"]:
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress:
            out[f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"] = [i["ip"] for i in ingress]
    return out


def events_for(rest: Rest, name: str, ns: str = "default", reason: str | None = None) -> list[dict[str, Any]]:
    out = []
    for ev in rest.list_all(EVENTS, ns)["items"]:
        if ev["involvedObject"].get("name") == name and (reason is None or ev["reason"] == reason):
            out.append(ev)
    return out


def wait_allocated(rest: Rest, n: int, timeout: float = 30,
                   message: Callable[[], str] | None = None) -> dict[str, list[str]]:
    """Wait until exactly `n` Services carry IPs; return them by namespace/name."""
    found: dict[str, list[str]] = {}

    def check() -> bool:
        found.clear()
        found.update(all_ips(rest))
        return len(found) == n

    wait_for(check, timeout, message=message or (lambda: f"{len(found)}/{n} Services allocated"))
    return dict(found)


def wait_ips(rest: Rest, name: str, ns: str = "default", timeout: float = 15) -> list[str]:
    return wait_for(lambda: ips(rest, name, ns), timeout, message=f"{ns}/{name} got no IP")


def wait_event(rest: Rest, name: str, reason: str, ns: str = "default",
               timeout: float = 15) -> dict[str, Any]:
    found = wait_for(lambda: events_for(rest, name, ns, reason), timeout,
                     message=lambda: f"no {reason} event on {ns}/{name}: "
                                     f"{[(e['reason'], e['message']) for e in events_for(rest, name, ns)]}")
    return found[0]


def pool_status(rest: Rest, name: str) -> dict[str, Any]:
    return rest.get(IPADDRESSPOOLS, name, NS).get("status") or {}


def condition(rest: Rest, pool: str, ctype: str) -> dict[str, Any] | None:
    for c in pool_status(rest, pool).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


# ------------------------------------------------------------------------------------------- scale


def test_pool_and_120_services_get_distinct_ips_and_counts(
        rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "big", "172.18.200.0/24")
    ctl = controllers(metrics_addr="127.0.0.1:0")
    n = 120
    for i in range(n):
        make_svc(rest, f"svc-{i:03d}")
    got = wait_allocated(rest, n, 60,
                   message=lambda: f"{len(all_ips(rest))}/{n} allocated")
    flat = [ip for v in got.values() for ip in v]
    assert len(set(flat)) == n
    net = ipaddress.ip_network("172.18.200.0/24")
    assert all(ipaddress.ip_address(ip) in net for ip in flat)
    # Lowest free first: exactly the first n addresses are used.
    assert sorted(int(ipaddress.ip_address(ip)) for ip in flat) == [int(net[0]) + i for i in range(n)]
    for i in (0, n - 1):
        svc = rest.get(SERVICES, f"svc-{i:03d}", "default")
        assert svc["metadata"]["annotations"]["lbspeaker.io/ip-allocated-from-pool"] == "big"
        assert svc["status"]["loadBalancer"]["ingress"][0]["ipMode"] == "VIP"
    wait_for(lambda: pool_status(rest, "big").get("assignedIPv4") == n, 15,
             message=lambda: str(pool_status(rest, "big")))
    assert pool_status(rest, "big")["availableIPv4"] == 256 - n
    assert ctl.metrics.addresses_in_use.labels(pool="big")._value.get() == n
    assert wait_event(rest, "svc-000", "IPAllocated")["type"] == "Normal"
    assert ctl._http is not None
    base = f"http://127.0.0.1:{ctl._http.port}"
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert 'lbspeaker_allocator_addresses_in_use_total{pool="big"} 120.0' in metrics
    assert 'lbspeaker_allocator_addresses_total{pool="big"} 256.0' in metrics
    assert 'lbspeaker_controller_allocations_total{result="allocated"} 120.0' in metrics
    assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
    assert urllib.request.urlopen(base + "/readyz", timeout=5).read() == b"leader\n"


# ------------------------------------------------------------------------------------------- restart


def test_restart_moves_no_ip(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.10.0.0/26")
    first = controllers("ctl-1")
    for i in range(20):
        make_svc(rest, f"s{i}")
    before = wait_allocated(rest, 20, 30)
    first.stop(release=True)
    # While no controller runs: free low addresses (delete s0, s1) and add new Services.
    rest.delete(SERVICES, "s0", "default")
    rest.delete(SERVICES, "s1", "default")
    for i in range(20, 25):
        make_svc(rest, f"s{i}")
    second = controllers("ctl-2")
    after = wait_allocated(rest, 23, 30,
                     message=lambda: str(all_ips(rest)))
    for key, value in before.items():
        if key not in ("default/s0", "default/s1"):
            assert after[key] == value, f"{key} moved from {value} to {after[key]}"
    flat = [ip for v in after.values() for ip in v]
    assert len(set(flat)) == len(flat)
    # The freed addresses are reused by the new Services (lowest first), nothing else moved.
    new_ips = {ip for k, v in after.items() if k not in before for ip in v}
    assert set(before["default/s0"] + before["default/s1"]) <= new_ips
    assert second.stats["restored"] == 18


def test_cli_subprocess_restart_moves_no_ip(rest: Rest, kubeconfig: Path, tmp_path: Path) -> None:
    make_pool(rest, "p", "10.20.0.0/27")
    for i in range(10):
        make_svc(rest, f"c{i}")

    def run() -> subprocess.Popen[bytes]:
        exe = Path(sys.executable).with_name("lbspeaker-controller")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lbspeaker.controller.main"]
        return subprocess.Popen(
            [*cmd, "--kubeconfig", str(kubeconfig), "--metrics-addr", "127.0.0.1:0", "--lease-duration", "3",
             "--renew-deadline", "2", "--retry-period", "0.3", "--identity", f"cli-{len(runs)}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"ctl{len(runs)}.log", "wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    runs: list[subprocess.Popen[bytes]] = []
    try:
        runs.append(run())
        before = wait_allocated(rest, 10, 60,
                          message=lambda: (tmp_path / "ctl0.log").read_text()[-3000:])
        runs[0].send_signal(signal.SIGTERM)
        assert runs[0].wait(30) == 0, (tmp_path / "ctl0.log").read_text()[-3000:]
        for i in range(10, 13):
            make_svc(rest, f"c{i}")
        runs.append(run())
        after = wait_allocated(rest, 13, 60,
                         message=lambda: (tmp_path / "ctl1.log").read_text()[-3000:])
        assert {k: after[k] for k in before} == before
        assert len({ip for v in after.values() for ip in v}) == 13
        log = (tmp_path / "ctl1.log").read_text()
        assert "restored 10 Service allocations" in log
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


# ------------------------------------------------------------------------------------------- the Lease


def test_second_replica_hands_out_nothing_while_first_holds_lease(
        rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.30.0.0/28")
    a = controllers("ctl-a")
    assert a.wait_active(15)
    b = controllers("ctl-b")
    wait_for(lambda: b.readyz()[0], 15)
    assert not b.is_leader
    make_svc(rest, "x1")
    wait_ips(rest, "x1")
    ev = wait_event(rest, "x1", "IPAllocated")
    assert ev["source"]["host"] == "ctl-a"
    assert b.stats["allocated"] == 0 and b.stats["writes"] == 0
    # A dies without releasing the Lease: nobody may allocate until the Lease expires.
    a.stop(release=False)
    make_svc(rest, "x2")
    # For ~1 s (well inside the 3 s Lease A still holds on paper) nobody may allocate. This is a
    # check that something does NOT happen, so it has to watch a window of time.
    window_end = time.monotonic() + 1.0
    while time.monotonic() < window_end:
        assert not ips(rest, "x2")
        assert not b.is_leader
        time.sleep(0.05)
    wait_ips(rest, "x2", timeout=20)
    assert b.is_leader
    assert b.stats["restored"] == 1
    assert ips(rest, "x1") != ips(rest, "x2")


def test_standby_takes_over_at_once_after_release(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.31.0.0/28")
    a = controllers("ctl-a")
    assert a.wait_active(15)
    b = controllers("ctl-b")
    make_svc(rest, "y1")
    first = wait_ips(rest, "y1")
    a.stop(release=True)
    assert b.wait_active(5)
    make_svc(rest, "y2")
    wait_ips(rest, "y2", timeout=10)
    assert ips(rest, "y1") == first


# ------------------------------------------------------------------------------------------- watches


def test_watch_cut_and_expired_history_lose_no_update(
        apiserver_with_crds: LabApiServer, rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.40.0.0/24")
    ctl = controllers()
    assert ctl.wait_active(15)
    n = 40
    for i in range(n):
        make_svc(rest, f"w{i}")
        if i % 10 == 3:
            apiserver_with_crds.cut_watches()
        if i % 10 == 7:
            apiserver_with_crds.expire_history()
            apiserver_with_crds.cut_watches()
    got = wait_allocated(rest, n, 60,
                   message=lambda: f"{len(all_ips(rest))}/{n}")
    flat = [ip for v in got.values() for ip in v]
    assert len(set(flat)) == n
    # A deletion while the watch is cut is seen too: the freed IP goes back to the pool.
    apiserver_with_crds.cut_watches()
    rest.delete(SERVICES, "w0", "default")
    wait_for(lambda: pool_status(rest, "p").get("assignedIPv4") == n - 1, 20,
             message=lambda: str(pool_status(rest, "p")))


# ------------------------------------------------------------------------------------------- bad input


def test_bad_requests_get_allocation_failed_and_disturb_nothing(
        rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "small", "10.50.0.0/31")        # two addresses
    make_pool(rest, "other", "10.51.0.0/28", autoAssign=False)
    controllers()
    make_svc(rest, "good")
    good = wait_ips(rest, "good")
    cases: dict[str, tuple[dict[str, str], dict[str, Any], str]] = {
        "outside": ({"lbspeaker.io/loadBalancerIPs": "192.0.2.10"}, {}, "not inside any IPAddressPool"),
        "taken": ({"metallb.io/loadBalancerIPs": good[0]}, {}, "held by default/good"),
        "nopool": ({"metallb.universe.tf/address-pool": "nope"}, {}, "does not exist"),
        "v6": ({}, {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}, "IPv6"),
        "both": ({"lbspeaker.io/loadBalancerIPs": "10.50.0.1"}, {"loadBalancerIP": "10.50.0.1"}, "both"),
    }
    for name, (ann, spec, _) in cases.items():
        make_svc(rest, name, ann=ann, **spec)
    for name, (_, _, words) in cases.items():
        ev = wait_event(rest, name, "AllocationFailed")
        assert ev["type"] == "Warning"
        assert words in ev["message"], (name, ev["message"])
        assert not ips(rest, name)
    # Exhaust "small": good + one more fit; the third fails with a message saying what to do.
    make_svc(rest, "fill")
    wait_ips(rest, "fill")
    make_svc(rest, "third")
    ev = wait_event(rest, "third", "AllocationFailed")
    assert "no free IPv4 address" in ev["message"] and "add ranges" in ev["message"]
    assert ips(rest, "good") == good
    # Freeing an address lets the failed Service through without anyone touching it.
    rest.delete(SERVICES, "fill", "default")
    wait_ips(rest, "third")
    assert ips(rest, "good") == good
    wait_for(lambda: pool_status(rest, "small").get("assignedIPv4") == 2, 10,
             message=lambda: str(pool_status(rest, "small")))
    assert pool_status(rest, "small")["availableIPv4"] == 0


def test_overlapping_pool_gets_condition_and_event_first_keeps_running(
        rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "first", "10.60.0.0/29")
    controllers()
    make_svc(rest, "a")
    a_ip = wait_ips(rest, "a")
    make_pool(rest, "second", "10.60.0.4/30")
    cond = wait_for(lambda: condition(rest, "second", "Overlap"), 15)
    wait_for(lambda: (condition(rest, "second", "Overlap") or {}).get("status") == "True", 15)
    cond = condition(rest, "second", "Overlap")
    assert cond is not None and "first" in cond["message"]
    assert (condition(rest, "second", "Ready") or {}).get("status") == "False"
    assert (condition(rest, "first", "Ready") or {}).get("status") == "True"
    wait_event(rest, "second", "InvalidConfiguration", ns=NS)
    # A Service that asks for the refused pool is told why, not that the pool does not exist.
    make_svc(rest, "wants-second", ann={"metallb.universe.tf/address-pool": "second"})
    ev = wait_event(rest, "wants-second", "AllocationFailed")
    assert "'second' is not in use" in ev["message"] and "first" in ev["message"], ev["message"]
    make_svc(rest, "b")
    wait_ips(rest, "b")
    assert ips(rest, "a") == a_ip
    # Editing the running pool into an overlap keeps its last valid configuration.
    pool = rest.get(IPADDRESSPOOLS, "first", NS)
    pool["spec"]["addresses"] = ["10.60.0.0/29", "fd00::/126", "10.60.0.5/32"]
    rest.replace(IPADDRESSPOOLS, pool)
    wait_for(lambda: (condition(rest, "first", "Ready") or {}).get("status") == "False", 15)
    assert "last valid configuration" in (condition(rest, "first", "Ready") or {})["message"]
    make_svc(rest, "c")
    c_ip = wait_ips(rest, "c")
    assert ipaddress.ip_address(c_ip[0]) in ipaddress.ip_network("10.60.0.0/29")


def test_pool_covering_a_node_ip_is_refused(rest: Rest, controllers: ControllerFactory) -> None:
    rest.create(NODES, {"metadata": {"name": "kind-worker"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "172.18.0.3"}, {"type": "Hostname", "address": "kind-worker"}]}})
    make_pool(rest, "bad", "172.18.0.0/24")
    make_pool(rest, "ok", "172.18.255.0/28")
    controllers()
    wait_for(lambda: (condition(rest, "bad", "CoversNodeAddress") or {}).get("status") == "True", 15,
             message=lambda: str(pool_status(rest, "bad")))
    assert "kind-worker" in (condition(rest, "bad", "CoversNodeAddress") or {})["message"]
    wait_event(rest, "bad", "InvalidConfiguration", ns=NS)
    make_svc(rest, "s")
    assert ipaddress.ip_address(wait_ips(rest, "s")[0]) in ipaddress.ip_network("172.18.255.0/28")


def test_deleting_or_shrinking_a_pool_keeps_ips_and_says_who_holds_them(
        rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "gone", "10.70.0.0/30", autoAssign=False)
    make_pool(rest, "shrink", "10.71.0.0/29")
    ctl = controllers()
    make_svc(rest, "on-gone", ann={"lbspeaker.io/address-pool": "gone"})
    gone_ip = wait_ips(rest, "on-gone")
    for i in range(3):
        make_svc(rest, f"on-shrink-{i}")
    shrink_ips = {f"on-shrink-{i}": wait_ips(rest, f"on-shrink-{i}") for i in range(3)}
    rest.delete(IPADDRESSPOOLS, "gone", NS)
    ev = wait_event(rest, "on-gone", "IPOutsidePools")
    assert ev["type"] == "Warning" and gone_ip[0] in ev["message"] and "re-add" in ev["message"]
    # A merge patch, as `kubectl patch` would: the controller keeps writing this pool's status,
    # so a get-then-replace could meet a (correct) 409.
    rest.patch(IPADDRESSPOOLS, "shrink", {"spec": {"addresses": ["10.71.0.0/31"]}}, NS)  # .2 now outside
    wait_for(lambda: pool_status(rest, "shrink").get("orphanedServiceCount") == 1, 15,
             message=lambda: str(pool_status(rest, "shrink")))
    orphan = pool_status(rest, "shrink")["orphanedServices"][0]
    assert orphan["ips"] == ["10.71.0.2"]
    assert (condition(rest, "shrink", "ServicesOutsidePool") or {})["status"] == "True"
    # Nothing moved.
    assert ips(rest, "on-gone") == gone_ip
    for name, value in shrink_ips.items():
        assert ips(rest, name) == value
    assert ctl.metrics.orphaned_services._value.get() == 2


def test_type_change_and_class_release_the_ip(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.80.0.0/30")
    controllers()
    make_svc(rest, "t")
    first = wait_ips(rest, "t")
    make_svc(rest, "other-class", loadBalancerClass="example.com/other")
    svc = rest.get(SERVICES, "t", "default")
    svc["spec"]["type"] = "ClusterIP"
    svc["spec"].pop("ports", None)
    svc["spec"]["ports"] = [{"port": 80, "protocol": "TCP"}]
    rest.replace(SERVICES, svc)
    wait_for(lambda: not ips(rest, "t"), 15)
    make_svc(rest, "u")
    assert wait_ips(rest, "u") == first          # the freed address is handed out again
    assert not ips(rest, "other-class")


def test_lb_class_flag_selects_services(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.90.0.0/29")
    controllers(lb_class="lbspeaker.io/lb")
    make_svc(rest, "mine", loadBalancerClass="lbspeaker.io/lb")
    make_svc(rest, "classless")
    wait_ips(rest, "mine")
    # The class-less one belongs to another controller now; give the worker a chance, then check.
    make_svc(rest, "mine2", loadBalancerClass="lbspeaker.io/lb")
    wait_ips(rest, "mine2")
    assert not ips(rest, "classless")
    assert not events_for(rest, "classless")


def test_readyz_reports_standby_until_caches_synced(rest: Rest, controllers: ControllerFactory) -> None:
    a = controllers("ctl-a", metrics_addr="127.0.0.1:0")
    assert a.wait_active(15)
    b = controllers("ctl-b", metrics_addr="127.0.0.1:0")
    assert b._http is not None
    url = f"http://127.0.0.1:{b._http.port}/readyz"

    def standby() -> bool:
        try:
            return urllib.request.urlopen(url, timeout=5).read() == b"standby\n"
        except urllib.error.HTTPError:
            return False

    wait_for(standby, 15)


def test_dual_stack_and_sharing(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "ds", "10.95.0.0/29", "fd00:95::/125")
    controllers()
    make_svc(rest, "dual", ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack")
    wait_for(lambda: len(ips(rest, "dual")) == 2, 15,
             message=lambda: str(rest.get(SERVICES, "dual", "default").get("spec")))
    got = ips(rest, "dual")
    assert [ipaddress.ip_address(i).version for i in got] == [4, 6]
    wait_for(lambda: pool_status(rest, "ds").get("assignedIPv6") == 1, 15)
    shared = {"metallb.io/allow-shared-ip": "k", "lbspeaker.io/loadBalancerIPs": "10.95.0.5"}
    make_svc(rest, "web", ann=shared, port=80)
    make_svc(rest, "dns", ann=shared, port=53)
    assert wait_ips(rest, "web") == wait_ips(rest, "dns") == ["10.95.0.5"]
    make_svc(rest, "clash", ann=shared, port=80)
    ev = wait_event(rest, "clash", "AllocationFailed")
    assert "port TCP/80" in ev["message"]


def test_cli_exits_when_it_loses_the_lease(lab_apiserver_factory: Callable[..., LabApiServer],
                                            tmp_path: Path) -> None:
    """A controller that can no longer renew its Lease stops writing and exits (status 1)."""
    from tests.conftest import apply_crds, crd_documents

    server = lab_apiserver_factory(bookmark_interval=0.2)
    apply_crds(server.url, crd_documents())
    kubeconfig = server.write_kubeconfig(tmp_path / "kc")
    r = Rest(load_api_client(str(kubeconfig)))
    ensure_namespaces(r)
    make_pool(r, "p", "10.99.0.0/30")
    make_svc(r, "a")
    exe = Path(sys.executable).with_name("lbspeaker-controller")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lbspeaker.controller.main"]
    logfile = tmp_path / "ctl.log"
    with open(logfile, "wb") as err:
        proc = subprocess.Popen([*cmd, "--kubeconfig", str(kubeconfig), "--metrics-addr", "",
                                 "--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.3"],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ips(r, "a", timeout=30)
        server.stop()  # the API server goes away: renewals fail
        assert proc.wait(30) == 1
        assert "lost the controller Lease" in logfile.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_restore_conflict_first_keeps_ip_second_is_told(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.98.0.0/29")
    # Same creationTimestamp second here, so the name breaks the tie: "first" is restored first.
    for name in ("first", "second"):
        svc = make_svc(rest, name)
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": "10.98.0.3", "ipMode": "VIP"}]}}
        rest.replace_status(SERVICES, svc)
    ctl = controllers()
    ev = wait_event(rest, "second", "IPConflict")
    assert "10.98.0.3" in ev["message"] and "default/first" in ev["message"]
    wait_for(lambda: ips(rest, "second") == ["10.98.0.0"], 15, message=lambda: str(ips(rest, "second")))
    assert ips(rest, "first") == ["10.98.0.3"]
    assert ctl.stats["restored"] == 1


def test_namespace_label_change_lets_a_pinned_pool_serve(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "team", "10.97.0.0/30",
              serviceAllocation={"namespaceSelectors": [{"matchLabels": {"team": "a"}}]})
    controllers()
    make_svc(rest, "app", ns="team-a")
    ev = wait_event(rest, "app", "AllocationFailed", ns="team-a")
    assert "no pool" in ev["message"]
    ns = rest.get(NAMESPACES, "team-a")
    ns["metadata"].setdefault("labels", {})["team"] = "a"
    rest.replace(NAMESPACES, ns)
    assert wait_ips(rest, "app", ns="team-a") == ["10.97.0.0"]


def test_periodic_resync_repairs_a_missed_event(rest: Rest, controllers: ControllerFactory) -> None:
    make_pool(rest, "p", "10.94.0.0/30")
    ctl = controllers(resync_period=1.0)
    assert ctl.wait_active(15)
    ctl.services._handlers.clear()  # simulate an event handler that missed everything from now on
    make_svc(rest, "missed")
    wait_for(lambda: ctl.services.get("default", "missed") is not None, 10)
    assert wait_ips(rest, "missed", timeout=10) == ["10.94.0.0"]


def test_bad_l2advertisement_gets_a_condition_and_an_event(rest: Rest,
                                                           controllers: ControllerFactory) -> None:
    from lbspeaker.kube.resources import L2ADVERTISEMENTS

    make_pool(rest, "web", "10.90.0.0/30")
    rest.create(NODES, {"metadata": {"name": "kind-worker", "labels": {"zone": "a"}}})
    controllers()

    def ready(name: str) -> dict[str, Any]:
        conditions = (rest.get(L2ADVERTISEMENTS, name, NS).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"), {})

    for name, spec in (("typo", {"ipAddressPools": ["wbe"]}),
                       ("nowhere", {"nodeSelectors": [{"matchLabels": {"zone": "mars"}}]}),
                       ("good", {"ipAddressPools": ["web"]})):
        rest.create(L2ADVERTISEMENTS, {"metadata": {"name": name, "namespace": NS}, "spec": spec})
    wait_for(lambda: ready("typo").get("status") == "False", 15, message=lambda: str(ready("typo")))
    assert ready("typo")["reason"] == "UnknownPool" and "'wbe'" in ready("typo")["message"]
    wait_for(lambda: ready("nowhere").get("reason") == "NodeSelectorMatchesNothing", 15,
             message=lambda: str(ready("nowhere")))
    wait_for(lambda: ready("good").get("status") == "True", 15, message=lambda: str(ready("good")))
    assert "pool(s) web" in ready("good")["message"]
    wait_for(lambda: events_for(rest, "typo", NS, "UnknownPool"), 15)
    # Fixing the spec clears the condition.
    rest.patch(L2ADVERTISEMENTS, "typo", {"spec": {"ipAddressPools": ["web"]}}, NS)
    wait_for(lambda: ready("typo").get("status") == "True", 15, message=lambda: str(ready("typo")))
    # A pool created later makes an advertisement that named it valid.
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "early", "namespace": NS},
                                   "spec": {"ipAddressPools": ["later"]}})
    wait_for(lambda: ready("early").get("reason") == "UnknownPool", 15)
    make_pool(rest, "later", "10.91.0.0/30")
    wait_for(lambda: ready("early").get("status") == "True", 15, message=lambda: str(ready("early")))
