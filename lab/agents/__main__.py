"""`python -m lab.agents`: run kubelet, EndpointSlice controller and kube-proxy in one process.

All three share one set of list+watch caches. SIGTERM/SIGINT end the agents but leave
the pods running (`lbspeaker-lab down` removes them); a restarted agents process
re-adopts them from `agents/agents.json` in the state dir, so a restart never moves a pod IP.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from lab.agents.endpointslices import EndpointSliceController
from lab.agents.kubeapi import Informer, KubeApi
from lab.agents.kubelet import Kubelet
from lab.agents.kubeproxy import KubeProxy

log = logging.getLogger("lab.agents")

AGENTS = ("kubelet", "endpointslices", "kubeproxy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.agents", description=__doc__)
    p.add_argument(
        "--kubeconfig", help="kubeconfig of the API server (default: in-cluster or ~/.kube/config)"
    )
    p.add_argument("--state-dir", required=True, type=Path, help="lab state dir (agents/agents.json, logs/)")
    p.add_argument(
        "--nodes",
        nargs="*",
        default=None,
        help="only serve these nodes (default: every Node whose network namespace exists)",
    )
    p.add_argument("--agents", default=",".join(AGENTS), help=f"comma-separated subset of {','.join(AGENTS)}")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16")
    p.add_argument("--cluster-cidr6", default="fd00:10:244::/48")
    p.add_argument("--record-lab-state", action="store_true", help="also record pod processes in state.json")
    p.add_argument("--pod-netns-prefix", default="lbpod-", help="name prefix of pod network namespaces")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    wanted = {a.strip() for a in args.agents.split(",") if a.strip()}
    unknown = wanted - set(AGENTS)
    if unknown:
        log.error("unknown agents: %s", ", ".join(sorted(unknown)))
        return 2
    api = KubeApi(args.kubeconfig)
    only = set(args.nodes) if args.nodes else None
    informers = {
        "pods": Informer(api, "/api/v1/pods", "pods"),
        "nodes": Informer(api, "/api/v1/nodes", "nodes"),
        "services": Informer(api, "/api/v1/services", "services"),
        "slices": Informer(api, "/apis/discovery.k8s.io/v1/endpointslices", "endpointslices"),
        "configmaps": Informer(api, "/api/v1/namespaces/kube-system/configmaps", "kube-system configmaps"),
    }
    workers: list[tuple[str, object]] = []
    if "kubelet" in wanted:
        workers.append(
            (
                "kubelet",
                Kubelet(
                    api,
                    informers["pods"],
                    informers["nodes"],
                    args.state_dir,
                    only,
                    record_in_lab_state=args.record_lab_state,
                    pod_netns_prefix=args.pod_netns_prefix,
                ),
            )
        )
    if "endpointslices" in wanted:
        workers.append(
            (
                "endpointslices",
                EndpointSliceController(
                    api, informers["services"], informers["pods"], informers["slices"], informers["nodes"]
                ),
            )
        )
    if "kubeproxy" in wanted:
        workers.append(
            (
                "kubeproxy",
                KubeProxy(
                    informers["services"],
                    informers["slices"],
                    informers["nodes"],
                    informers["configmaps"],
                    only,
                    args.cluster_cidr,
                    args.cluster_cidr6,
                ),
            )
        )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping (pods keep running)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for inf in informers.values():
        inf.start()
    threads = []
    for name, worker in workers:
        t = threading.Thread(target=worker.run, args=(stop,), name=name, daemon=True)  # type: ignore[attr-defined]
        t.start()
        threads.append(t)
    log.info("lab agents running: %s", ", ".join(n for n, _ in workers))
    while not stop.wait(1.0):
        pass
    for inf in informers.values():
        inf.stop()
    # Let each agent finish the step it is in (a pod half set up, an nft load), then exit.
    for _, worker in workers:
        worker.trigger()  # type: ignore[attr-defined]
    for t in threads:
        t.join(timeout=20)
    log.info("lab agents stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
