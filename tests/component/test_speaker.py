"""Three in-process speakers (fake announcers) against the lab API server: election, ServiceL2Status,
nodeAssigned, Lease release and heartbeat-based failover, strictARP warning, fail-static."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker.election import elect_l2
from lbspeaker.kube.client import Timeouts, load_api_client
from lbspeaker.kube.memberlist import new_secret
from lbspeaker.kube.resources import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    EVENTS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    LEASES,
    NAMESPACES,
    NODES,
    SECRETS,
    SERVICEL2STATUSES,
    SERVICES,
)
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.links import LinkInfo
from lbspeaker.speaker.main import Config, Speaker
from lbspeaker.speaker.status import L2_STATUS, l2_fields
from tests.helpers import wait_for

pytestmark = pytest.mark.component

NS = "lbspeaker-system"
IP = "172.18.255.200"
NODES_ = {"node-a": "127.0.0.11", "node-b": "127.0.0.12", "node-c": "127.0.0.13"}


class FakeAnnouncer:
    """Records what the speaker asks for."""

    def __init__(self) -> None:
        self.owned: dict[str, list[str]] = {}
        self.calls = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        pass

    def set_owned(self, ips_by_interface: Mapping[str, Sequence[str]]) -> dict[str, str]:
        with self.lock:
            self.owned = {k: sorted(v) for k, v in ips_by_interface.items() if v}
            self.calls += 1
        return {}

    def ips(self) -> set[str]:
        with self.lock:
            return {ip for v in self.owned.values() for ip in v}

    def handle_link_event(self, event: str, ifname: str, index: int, up: bool) -> None:
        pass

    def totals(self) -> dict[str, Any]:
        return {"requests_received": {IP: 3}, "responses_sent": {IP: 3}, "gratuitous_sent": {},
                "malformed_dropped": 1, "ignored": 0, "send_errors": 0}

    def errors(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        pass


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create(rest: Rest, res: Any, obj: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    try:
        return rest.create(res, obj, ns)
    except ApiError as exc:
        if not exc.conflict:
            raise
        return {}


def node_obj(name: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.fixture
def rest(apiserver_with_crds: LabApiServer, kubeconfig: Path) -> Rest:
    r = Rest(load_api_client(str(kubeconfig)), timeouts=Timeouts(connect=2, read=5))
    for ns in ("default", NS, "kube-system"):
        create(r, NAMESPACES, {"metadata": {"name": ns}})
    for name, ip in NODES_.items():
        create(r, NODES, node_obj(name, ip))
    create(r, SECRETS, new_secret(NS), NS)  # the heartbeat key (the controller's job in a cluster)
    r.create(IPADDRESSPOOLS, {"metadata": {"name": "pool", "namespace": NS},
                              "spec": {"addresses": ["172.18.255.200-172.18.255.250"]}})
    r.create(L2ADVERTISEMENTS, {"metadata": {"name": "l2", "namespace": NS},
                                "spec": {"ipAddressPools": ["pool"]}})
    svc = r.create(SERVICES, {"metadata": {"name": "web", "namespace": "default",
                                           "annotations": {"lbspeaker.io/ip-allocated-from-pool": "pool"}},
                              "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}},
                   "default")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": IP, "ipMode": "VIP"}]}}
    r.replace_status(SERVICES, svc)
    r.create(ENDPOINTSLICES, {
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [f"10.244.{i}.5"], "nodeName": n, "conditions": {"ready": True}}
                      for i, n in enumerate(NODES_)],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }, "default")
    return r


SpeakerFactory = Callable[..., tuple[Speaker, FakeAnnouncer]]


@pytest.fixture
def speakers(rest: Rest) -> Iterator[SpeakerFactory]:
    started: list[Speaker] = []
    port = free_udp_port()

    def make(node: str, **kw: Any) -> tuple[Speaker, FakeAnnouncer]:
        kw = {"lease_duration": 3, "renew_interval": 0.5} | kw
        cfg = Config(node=node, heartbeat_port=port, heartbeat_bind=NODES_[node],
                     metrics_addr="127.0.0.1:0", **kw)
        ann = FakeAnnouncer()
        spk = Speaker(cfg, rest, ann, list_links=lambda: [LinkInfo("eth0", 2)], watch_links=False)
        spk.start()
        started.append(spk)
        return spk, ann

    yield make
    for spk in started:
        if not spk._stop.is_set():
            spk.stop(cleanup_budget_s=0.5)


def owners(anns: Mapping[str, FakeAnnouncer]) -> list[str]:
    return sorted(n for n, a in anns.items() if IP in a.ips())


def get_status(rest: Rest, node: str) -> dict[str, Any] | None:
    try:
        return rest.get(SERVICEL2STATUSES, L2_STATUS.name("default/web", node), NS)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.read().decode()


LONG_LEASE = 60
HANDOVER_DEADLINE = 20.0  # well below LONG_LEASE, far above the ~1 s the handover takes


def test_election_status_events_and_handover(rest: Rest, speakers: SpeakerFactory) -> None:
    spk = {}
    anns = {}
    # Leases far longer than any deadline below: a handover within the deadline can only come from
    # the Lease release / LEAVING heartbeat (graceful stop) or the heartbeat timeout (hard failure),
    # never from a Lease running out. No wall-clock assertion: the machine may be loaded.
    for n in NODES_:
        spk[n], anns[n] = speakers(n, lease_duration=LONG_LEASE)
    expected = elect_l2(IP, NODES_)
    assert expected is not None
    wait_for(lambda: owners(anns) == [expected], timeout=15, message=lambda: f"owners {owners(anns)}")
    assert anns[expected].owned == {"eth0": [IP]}
    st = wait_for(lambda: (get_status(rest, expected) or {}).get("status") and get_status(rest, expected),
                  timeout=10)  # created, then its status written (a subresource)
    assert st is not None
    assert st["status"]["node"] == expected and st["status"]["serviceName"] == "web"
    assert st["status"]["interfaces"] == [{"name": "eth0"}]
    assert st["metadata"]["labels"]["lbspeaker.io/node"] == expected

    def assigned() -> list[dict[str, Any]]:
        evs = rest.list(EVENTS, "default")["items"]
        return [e for e in evs if e.get("reason") == "nodeAssigned"
                and e["involvedObject"].get("name") == "web"]

    evs = wait_for(assigned, timeout=10)
    assert expected in evs[0]["message"] and len(evs) == 1
    # The speaker keeps only the identity of Services and EndpointSlices (its index read the rest),
    # which is still enough to name the Service in an Event.
    svc = rest.get(SERVICES, "web", "default")
    assert evs[0]["involvedObject"]["uid"] == svc["metadata"]["uid"]
    kept = spk[expected].services.get("default", "web")
    assert kept is not None and set(kept) == {"apiVersion", "kind", "metadata"}

    # Metrics and readiness of the owner.
    port = spk[expected].health.port  # type: ignore[union-attr]
    metrics = http_get(port, "/metrics")
    labels = f'ip="{IP}",node="{expected}",protocol="layer2",service="default/web"'
    assert f"lbspeaker_speaker_announced{{{labels}}} 1.0" in metrics
    assert f'lbspeaker_layer2_requests_received_total{{ip="{IP}"}} 3.0' in metrics
    assert "lbspeaker_layer2_malformed_dropped_total 1.0" in metrics
    assert "lbspeaker_speaker_strictarp_ok 1.0" in metrics
    ready = http_get(port, "/readyz")
    assert ready.startswith("ready") and "strictARP: ok" in ready

    # Graceful stop: the Lease is released at once and another node takes over.
    spk[expected].stop()
    assert anns[expected].ips() == set()
    lease = rest.get(LEASES, f"speaker-{expected}", NS)
    assert lease["spec"]["holderIdentity"] == ""
    rest_nodes = {n for n in NODES_ if n != expected}
    second = elect_l2(IP, rest_nodes)
    assert second is not None
    wait_for(lambda: owners({n: anns[n] for n in rest_nodes}) == [second], timeout=HANDOVER_DEADLINE)
    wait_for(lambda: get_status(rest, second), timeout=10)
    wait_for(lambda: get_status(rest, expected) is None, timeout=10)

    # Hard failure of the new owner (no goodbye, Lease left valid): heartbeats time out (~1 s).
    spk[second].abort()
    third = (rest_nodes - {second}).pop()
    wait_for(lambda: IP in anns[third].ips(), timeout=HANDOVER_DEADLINE)


def test_strictarp_warning_and_fail_static(rest: Rest, speakers: SpeakerFactory,
                                           apiserver_with_crds: LabApiServer) -> None:
    rest.create(CONFIGMAPS, {"metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                             "data": {"config.conf": "mode: ipvs\nipvs:\n  strictARP: false\n"}},
                "kube-system")
    enforced: list[list[str]] = []
    cfg_kw = {"enforce_strict_arp": True}
    spk, ann = speakers("node-a", **cfg_kw)
    def fake_enforce(ifaces: list[str]) -> dict[str, dict[str, int]]:
        enforced.append(ifaces)
        return {i: {"arp_ignore": 1} for i in ifaces}

    spk.layer2.enforce = fake_enforce
    _spk2, ann2 = speakers("node-b")
    wait_for(lambda: owners({"node-a": ann, "node-b": ann2}) == [elect_l2(IP, ["node-a", "node-b"])],
             timeout=15)
    wait_for(lambda: not spk.strictarp_state.ok, timeout=5)
    port = spk.health.port  # type: ignore[union-attr]
    assert "lbspeaker_speaker_strictarp_ok 0.0" in http_get(port, "/metrics")
    ready = http_get(port, "/readyz")
    assert "strictARP: WARNING" in ready
    wait_for(lambda: enforced, timeout=5)
    assert "all" in enforced[0] and "eth0" in enforced[0]

    def node_events(reason: str) -> list[dict[str, Any]]:
        return [e for e in rest.list(EVENTS, "default")["items"] if e.get("reason") == reason
                and e["involvedObject"].get("kind") == "Node"]

    wait_for(lambda: node_events("StrictARPDisabled"), timeout=10)
    wait_for(lambda: node_events("StrictARPEnforced"), timeout=10)

    # Fail-static: the API server goes away; both keep exactly what they announced.
    before = {"node-a": ann.ips(), "node-b": ann2.ips()}
    apiserver_with_crds.stop()
    time.sleep(6)  # > lease duration (3 s) + renew failures
    assert {"node-a": ann.ips(), "node-b": ann2.ips()} == before
    assert not spk.membership.api_ok()


def test_bad_l2advertisement_gets_events(rest: Rest, speakers: SpeakerFactory) -> None:
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "bad-if", "namespace": NS},
                                   "spec": {"ipAddressPools": ["pool"], "interfaces": ["bond9"]}})
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "bad-sel", "namespace": NS},
                                   "spec": {"ipAddressPools": ["nope"],
                                            "nodeSelectors": [{"matchLabels": {"zone": "mars"}}]}})
    spk, _ann = speakers("node-a")

    def reasons() -> set[tuple[str, str]]:
        return {(e["involvedObject"].get("name"), e.get("reason")) for e in rest.list(EVENTS, NS)["items"]
                if e["involvedObject"].get("kind") == "L2Advertisement" and e.get("type") == "Warning"}

    wanted = {("bad-if", "InterfaceNotFound"), ("bad-sel", "NodeSelectorMatchesNothing"),
              ("bad-sel", "UnknownPool")}
    wait_for(lambda: wanted <= reasons(), timeout=15, message=lambda: f"{reasons()}")
    ready = http_get(spk.health.port, "/readyz")  # type: ignore[union-attr]
    assert "InterfaceNotFound" in ready and "bond9" in ready


def test_missing_interface_is_in_the_advertisement_status_until_fixed(rest: Rest,
                                                                      speakers: SpeakerFactory) -> None:
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "bad-if", "namespace": NS},
                                   "spec": {"ipAddressPools": ["pool"], "interfaces": ["bond9"]}})
    speakers("node-a")
    speakers("node-b")

    def node_problems() -> list[dict[str, Any]]:
        return list((rest.get(L2ADVERTISEMENTS, "bad-if", NS).get("status") or {}).get("nodeProblems") or [])

    wait_for(lambda: [p["node"] for p in node_problems()] == ["node-a", "node-b"], timeout=15,
             message=lambda: str(node_problems()))
    entry = node_problems()[0]
    assert entry["reason"] == "InterfaceNotFound" and "bond9" in entry["message"]
    rest.patch(L2ADVERTISEMENTS, "bad-if", {"spec": {"interfaces": ["eth0"]}}, NS)
    wait_for(lambda: node_problems() == [], timeout=15, message=lambda: str(node_problems()))


def test_status_objects_follow_the_speakers_namespace(rest: Rest, speakers: SpeakerFactory) -> None:
    """--namespace other than lbspeaker-system: our ServiceL2Status is written there, and a stale one
    left there by an earlier run is deleted (the writer once used the default namespace)."""
    other = "lb-other"
    create(rest, NAMESPACES, {"metadata": {"name": other}})
    rest.create(IPADDRESSPOOLS, {"metadata": {"name": "pool", "namespace": other},
                                 "spec": {"addresses": ["172.18.255.200-172.18.255.250"]}})
    rest.create(L2ADVERTISEMENTS, {"metadata": {"name": "l2", "namespace": other},
                                   "spec": {"ipAddressPools": ["pool"]}})
    stale = L2_STATUS.object("default/gone", "node-a", other, l2_fields(["eth0"]))
    rest.create(SERVICEL2STATUSES, stale, other)
    _spk, ann = speakers("node-a", namespace=other)
    wait_for(lambda: IP in ann.ips(), timeout=15)

    def names(ns: str) -> set[str]:
        return {o["metadata"]["name"] for o in rest.list(SERVICEL2STATUSES, ns)["items"]}

    mine = L2_STATUS.name("default/web", "node-a")
    wait_for(lambda: names(other) == {mine}, timeout=10, message=lambda: f"{other}: {names(other)}")
    wait_for(lambda: (rest.get(SERVICEL2STATUSES, mine, other).get("status") or {}).get("interfaces")
             == [{"name": "eth0"}], timeout=10)  # created, then its status written (a subresource)
    assert names(NS) == set()
