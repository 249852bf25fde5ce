"""`./dev demo`: the user's story, end to end, in the lab.

Builds the lab (or reuses a running one), installs lbspeaker's configuration (an
IPAddressPool with an L2Advertisement; a BGP pool with a BGPPeer to the lab router
and a BGPAdvertisement), creates four pods and a LoadBalancer Service over them,
waits for the controller to give it an IP, and curls it from the `client`
namespace (the kind "sidecar") through real ARP; then the same over BGP from
`ext-client`, behind the router. Leaves the lab up to explore; `./dev lab down`
removes it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.conflicts import APPLY_ATTEMPTS as APPLY_ATTEMPTS  # re-exported: the bound of apply()
from lab.conflicts import retry_on_conflict
from lab.state import default_state_dir
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP, NAMESPACE
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    EVENTS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    PODS,
    SERVICES,
    Resource,
)
from lbspeaker.kube.rest import ApiError, Rest

L2_POOL = "172.18.255.200-172.18.255.250"
BGP_POOL = "198.51.100.0/24"
ROUTER_IP = "172.18.0.1"
ROUTER_ASN = 64512
NODE_ASN = 64513
DEMO_NS = "default"


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def lab_cli(*argv: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *argv], check=check, text=True,
                          capture_output=capture)


def apply(rest: Rest, resource: Resource, obj: dict[str, Any]) -> None:
    """Create, or replace the spec of an existing object (like `kubectl apply` for our purposes).

    A replace carries the resourceVersion just read; the controller and the speakers write the
    same objects' status meanwhile (each write a new resourceVersion), so a 409 Conflict means
    "read again and retry" (`lab.conflicts`; after APPLY_ATTEMPTS conflicts in a row the last one
    is raised).
    """
    meta = obj["metadata"]
    ns = meta.get("namespace")
    try:
        rest.create(resource, obj, namespace=ns)
        return
    except ApiError as err:
        if not err.already_exists:
            raise

    def replace() -> None:
        current = rest.get(resource, meta["name"], namespace=ns)
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        rest.replace(resource, obj)

    retry_on_conflict(replace, lambda exc: isinstance(exc, ApiError) and exc.conflict)


def wait_for(what: str, check: Callable[[], Any], timeout: float,
             why: Callable[[], str] | None = None) -> Any:
    """Poll `check` until it returns something truthy; exit with a clear message on timeout,
    followed by what `why` finds (the objects' own account of what went wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            say(f"FAILED: timed out after {timeout:.0f}s waiting for {what}")
            if why is not None:
                say(why())
            sys.exit(1)
        time.sleep(0.2)


def web_pods(rest: Rest, app: str, count: int) -> None:
    for i in range(count):
        apply(rest, PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{app}-{i}", "namespace": DEMO_NS, "labels": {"app": app}},
            "spec": {"containers": [{"name": "web", "image": "lab/host-echo",
                                     "ports": [{"containerPort": 8080}]}]},
        })


def lb_service(rest: Rest, name: str, app: str, pool: str, etp: str = "Cluster") -> str:
    apply(rest, SERVICES, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": DEMO_NS,
                     "annotations": {f"{GROUP}/address-pool": pool}},
        "spec": {"type": "LoadBalancer", "selector": {"app": app}, "externalTrafficPolicy": etp,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })

    def ingress_ip() -> str | None:
        svc = rest.get(SERVICES, name, namespace=DEMO_NS)
        ingress = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        return ingress[0].get("ip") if ingress else None

    ip: str = wait_for(f"Service {DEMO_NS}/{name} to get an IP", ingress_ip, 30,
                       lambda: allocation_report(rest, name, pool))
    return ip


def allocation_report(rest: Rest, service: str, pool: str) -> str:
    """Why a Service has no IP, as the controller reported it: the Service's Warning Events and
    the pool's conditions (an overlapping or invalid pool says so there)."""
    lines = [f"the pool {NAMESPACE}/{pool}:"]
    try:
        status = rest.get(IPADDRESSPOOLS, pool, namespace=NAMESPACE).get("status") or {}
        conditions = status.get("conditions")
        lines += [f"  {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
                  for c in conditions or []] or ["  no conditions yet (is the controller running?)"]
    except ApiError as err:
        lines.append(f"  cannot read it: {err}")
    lines.append(f"Warning Events of Service {DEMO_NS}/{service}:")
    events = [e for e in rest.list(EVENTS, DEMO_NS).get("items", [])
              if (e.get("involvedObject") or {}).get("name") == service and e.get("type") == "Warning"]
    lines += [f"  {e.get('reason')}: {e.get('message')}" for e in events[-5:]] or ["  none"]
    return "\n".join(lines)


def curl_from(netns: str, ip: str, timeout: float) -> str:
    """Curl http://ip/host from a lab namespace until it answers (ARP/BGP convergence)."""
    def attempt() -> str | None:
        proc = lab_cli("exec", netns, "--", "curl", "-s", "--max-time", "1", f"http://{ip}/host",
                       check=False, capture=True)
        return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None

    answer: str = wait_for(f"curl {ip}/host from {netns}", attempt, timeout)
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", choices=["frr", "bird"], default="frr")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--down", action="store_true", help="remove the lab at the end")
    parser.add_argument("--no-bgp", action="store_true", help="only the layer-2 part")
    parser.add_argument("--image", help="run the controller and speakers from this image (./dev image)")
    args = parser.parse_args(argv)

    say("building the lab (network namespaces, lab API server, controller, speakers)")
    try:
        up = lab_cli("up", "--workers", str(args.workers), "--router", args.router,
                     *(["--image", args.image] if args.image else []), check=False)
        if up.returncode != 0:
            say(f"FAILED: `lbspeaker-lab up` exited {up.returncode} (its output is above)")
            return 1
        kubeconfig = default_state_dir() / "kubeconfig"
        rest = Rest(load_api_client(str(kubeconfig)))
        return run_story(rest, kubeconfig, bgp=not args.no_bgp)
    finally:
        if args.down:
            lab_cli("down", check=False)


def run_story(rest: Rest, kubeconfig: Path, bgp: bool) -> int:
    say(f"applying IPAddressPool demo-l2 ({L2_POOL}) and an L2Advertisement")
    apply(rest, IPADDRESSPOOLS, {
        "apiVersion": API_VERSION, "kind": "IPAddressPool",
        "metadata": {"name": "demo-l2", "namespace": NAMESPACE},
        "spec": {"addresses": [L2_POOL]},
    })
    apply(rest, L2ADVERTISEMENTS, {
        "apiVersion": API_VERSION, "kind": "L2Advertisement",
        "metadata": {"name": "demo-l2", "namespace": NAMESPACE},
        "spec": {"ipAddressPools": ["demo-l2"]},
    })
    say("creating 4 pods (app=web) and Service web (type LoadBalancer)")
    web_pods(rest, "web", 4)
    t0 = time.monotonic()
    ip = lb_service(rest, "web", "web", "demo-l2")
    say(f"Service default/web got {ip}")
    say(f"$ lbspeaker-lab exec client -- curl -s {ip}/host")
    print(curl_from("client", ip, 30), flush=True)
    say(f"(Service created -> curl answered over ARP: {time.monotonic() - t0:.2f} s)")

    if bgp:
        say(f"applying IPAddressPool demo-bgp ({BGP_POOL}), BGPPeer to the lab router, BGPAdvertisement")
        apply(rest, IPADDRESSPOOLS, {
            "apiVersion": API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": "demo-bgp", "namespace": NAMESPACE},
            # avoidBuggyIPs: a /24 whose .0 and .255 some client stacks still refuse
            "spec": {"addresses": [BGP_POOL], "autoAssign": False, "avoidBuggyIPs": True},
        })
        apply(rest, BGPPEERS, {
            "apiVersion": f"{GROUP}/{BGPPEER_VERSION}", "kind": "BGPPeer",
            "metadata": {"name": "lab-router", "namespace": NAMESPACE},
            "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_IP},
        })
        apply(rest, BGPADVERTISEMENTS, {
            "apiVersion": API_VERSION, "kind": "BGPAdvertisement",
            "metadata": {"name": "demo-bgp", "namespace": NAMESPACE},
            "spec": {"ipAddressPools": ["demo-bgp"]},
        })
        web_pods(rest, "web-bgp", 3)
        t0 = time.monotonic()
        bgp_ip = lb_service(rest, "web-bgp", "web-bgp", "demo-bgp")
        say(f"Service default/web-bgp got {bgp_ip}, announced over BGP to the router")
        say(f"$ lbspeaker-lab exec ext-client -- curl -s {bgp_ip}/host")
        print(curl_from("ext-client", bgp_ip, 60), flush=True)
        say(f"(Service created -> curl answered over BGP: {time.monotonic() - t0:.2f} s)")
        say("$ lbspeaker-lab exec router -- ip route show " + bgp_ip)
        print(lab_cli("exec", "router", "--", "ip", "route", "show", bgp_ip, capture=True).stdout, end="")

    say(f"done. The lab stays up: export KUBECONFIG={kubeconfig}; lbspeaker-lab status; "
        "`sudo ./dev lab down` removes it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
