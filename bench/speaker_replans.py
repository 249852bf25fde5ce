"""How often the speakers plan when nothing that matters changes.

Three in-process speakers (fake announcer, fake ExaBGP manager) against the lab API server,
`--services` LoadBalancer Services (half layer 2, half BGP) and one BGPPeer. After they
settle, for `--seconds`: idle (Lease renewals every 0.5 s, BGPPeer session writes), then
`--noise` events nobody's plan reads (a Service annotation, a Node status heartbeat each).
Prints plans run per protocol and speaker in each phase, and the events seen and ignored.

    python bench/speaker_replans.py [--services 200] [--seconds 10] [--noise 50] [--out FILE]

Works against the speaker before the one-loop redesign too (its counters are read where
they were), so the two can be compared: PYTHONPATH=<old checkout> python bench/speaker_replans.py
Figures measured on a shared, loaded machine are noisy; the plan counts are not timing figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from lab.apiserver import LabApiServer  # noqa: E402
from lbspeaker.bgp.session import PeerSession  # noqa: E402
from lbspeaker.kube.client import Timeouts, load_api_client  # noqa: E402
from lbspeaker.kube.resources import (  # noqa: E402
    BGPADVERTISEMENTS,
    BGPPEERS,
    ENDPOINTSLICES,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    NAMESPACES,
    NODES,
    SERVICES,
)
from lbspeaker.kube.rest import Rest  # noqa: E402
from lbspeaker.links import LinkInfo  # noqa: E402
from lbspeaker.speaker.bgp import BGPHooks  # noqa: E402
from lbspeaker.speaker.main import Config, Speaker  # noqa: E402
from tests.conftest import apply_crds, crd_documents  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "speaker_replans.json"
NS = "lbspeaker-system"
NODES_ = {"node-a": "127.0.0.11", "node-b": "127.0.0.12", "node-c": "127.0.0.13"}


class Announcer:
    def start(self) -> None: ...
    def set_owned(self, ips_by_interface: Mapping[str, Sequence[str]]) -> dict[str, str]:
        return {}
    def handle_link_event(self, event: str, ifname: str, index: int, up: bool) -> None: ...
    def totals(self) -> dict[str, Any]:
        return {}
    def errors(self) -> dict[str, str]:
        return {}
    def stop(self) -> None: ...


class Manager:
    updates_total = 0
    restarts = 0

    def __init__(self, workdir: Path, on_change: Callable[[str, PeerSession], None]) -> None:
        self.lock = threading.Lock()

    def start(self) -> None: ...
    def stop(self, withdraw: bool = True, timeout: float = 3.0, grace: float = 0.2) -> None: ...
    def set_peers(self, peers: Any) -> None: ...
    def set_routes(self, table: Any) -> None:
        self.updates_total += 1
    def sessions(self) -> dict[str, PeerSession]:
        return {}
    def in_sync(self) -> bool:
        return True


def plans(spk: Speaker) -> dict[str, int]:
    """Plans run so far per protocol (this speaker or the one before the redesign)."""
    runners = getattr(spk, "runners", None)
    if runners is not None:
        return {r.proto.name: r.plans for r in runners}
    return {"layer2": spk.plans, "bgp": spk.bgp.plans}  # type: ignore[attr-defined]


def setup(rest: Rest, services: int) -> None:
    for ns in ("default", NS):
        if not any(o["metadata"]["name"] == ns for o in rest.list(NAMESPACES)["items"]):
            rest.create(NAMESPACES, {"metadata": {"name": ns}})
    for name, ip in NODES_.items():
        rest.create(NODES, {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                                       "conditions": [{"type": "Ready", "status": "True"}]}})
    def ns_obj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": NS}, "spec": spec}

    rest.create(IPADDRESSPOOLS, ns_obj("l2", {"addresses": ["172.18.200.0/22"]}))
    rest.create(L2ADVERTISEMENTS, ns_obj("l2", {"ipAddressPools": ["l2"]}))
    rest.create(IPADDRESSPOOLS, ns_obj("bgp", {"addresses": ["198.51.100.0/24", "203.0.113.0/24"]}))
    rest.create(BGPADVERTISEMENTS, ns_obj("bgp", {"ipAddressPools": ["bgp"]}))
    rest.create(BGPPEERS, ns_obj("router", {"myASN": 64513, "peerASN": 64512, "peerAddress": "127.0.0.1"}))
    for i in range(services):
        pool, ip = ("l2", f"172.18.{200 + i // 250}.{i % 250 + 1}") if i % 2 == 0 else (
            "bgp", f"{'198.51.100' if i < 500 else '203.0.113'}.{(i // 2) % 250 + 1}")
        name = f"svc-{i}"
        meta = {"name": name, "namespace": "default",
                "annotations": {"lbspeaker.io/ip-allocated-from-pool": pool}}
        spec = {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}
        svc = rest.create(SERVICES, {"metadata": meta, "spec": spec}, "default")
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}
        rest.replace_status(SERVICES, svc)
        endpoint = {"addresses": ["10.244.0.5"], "nodeName": "node-b", "conditions": {"ready": True}}
        rest.create(ENDPOINTSLICES, {
            "metadata": {"name": f"{name}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}], "endpoints": [endpoint]},
            "default")


def settle(speakers: list[Speaker], quiet: float = 2.0, timeout: float = 30.0) -> None:
    """Until no speaker planned for `quiet` seconds (startup done)."""
    deadline = time.monotonic() + timeout
    last = [plans(s) for s in speakers]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = [plans(s) for s in speakers]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet and all(p.get("layer2") for p in now):
            return
    print("speakers did not settle (still planning); measuring anyway", file=sys.stderr)


def delta(before: list[dict[str, int]], speakers: list[Speaker]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b, s in zip(before, speakers, strict=True):
        for proto, n in plans(s).items():
            out[proto] = out.get(proto, 0) + n - b.get(proto, 0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--noise", type=int, default=50)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    server = LabApiServer()
    server.start()
    speakers: list[Speaker] = []
    try:
        apply_crds(server.url, crd_documents())
        tmp = Path(tempfile.mkdtemp(prefix="speaker-replans-"))
        rest = Rest(load_api_client(str(server.write_kubeconfig(tmp / "kubeconfig"))),
                    timeouts=Timeouts(connect=2, read=5))
        setup(rest, args.services)
        for node in NODES_:
            cfg = Config(node=node, lease_duration=3, renew_interval=0.5, heartbeat_port=0,
                         metrics_addr="", run_dir=str(tmp / node))
            spk = Speaker(cfg, rest, Announcer(), list_links=lambda: [LinkInfo("eth0", 2)], watch_links=False,
                          bgp_hooks=BGPHooks(Manager, node_networks=lambda: ["127.0.0.0/8"]))
            spk.start(serve_http=False)
            speakers.append(spk)
        settle(speakers)
        result: dict[str, Any] = {"services": args.services, "speakers": len(speakers)}
        before = [plans(s) for s in speakers]
        time.sleep(args.seconds)  # idle: what is measured is what happens in this time
        result["idle"] = {"seconds": args.seconds, "plans": delta(before, speakers)}
        before = [plans(s) for s in speakers]
        t0 = time.monotonic()
        for i in range(args.noise):
            rest.patch(SERVICES, f"svc-{i % args.services}", {"metadata": {"annotations": {"noise": str(i)}}},
                       "default")
            beat = f"2026-01-01T00:00:{i % 60:02d}Z"  # a kubelet heartbeat: Ready stays True
            rest.patch_status(NODES, "node-b", {"status": {"conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": beat}]}})
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
        result["noise"] = {"events": 2 * args.noise, "plans": delta(before, speakers)}
        index = getattr(speakers[0], "index", None)
        if index is not None:
            result["events_node_a"] = {"changed": dict(index.changed), "ignored": dict(index.ignored)}
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for s in speakers:
            s.stop(cleanup_budget_s=0.5)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
