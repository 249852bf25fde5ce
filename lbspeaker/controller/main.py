"""`lbspeaker-controller`: the IP-allocating controller (one active replica behind a Lease).

Out of cluster: `lbspeaker-controller --kubeconfig FILE`; in cluster it uses the
service account. On losing the Lease it exits (status 1) so the Deployment
restarts it as a clean standby, the way client-go controllers do: a process that
is no longer sure it is the only writer must not write again.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from lbspeaker.api.constants import NAMESPACE

log = logging.getLogger("lbspeaker.controller")


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults that come from the environment are resolved in parse_args, so
    `--help` and docs/reference.md read the same on every machine."""
    p = argparse.ArgumentParser(prog="lbspeaker-controller", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file (default: $KUBECONFIG, else the in-cluster service account, "
                        "else ~/.kube/config)")
    p.add_argument("--namespace", default=None,
                   help=f"namespace of the pools and of the controller Lease "
                        f"(default: $LBSPEAKER_NAMESPACE, else {NAMESPACE})")
    p.add_argument("--lb-class", default=None,
                   help="only handle Services with this spec.loadBalancerClass (default: class-less only)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="run behind the coordination.k8s.io Lease (disable only with exactly one replica)")
    p.add_argument("--lease-duration", type=float, default=15.0,
                   help="seconds a standby waits after the last renewal before taking over")
    p.add_argument("--renew-deadline", type=float, default=10.0,
                   help="seconds the leader keeps trying to renew before it gives up and exits")
    p.add_argument("--retry-period", type=float, default=2.0, help="seconds between Lease attempts")
    p.add_argument("--metrics-addr", default="0.0.0.0:7472",
                   help="host:port of /metrics, /healthz and /readyz ('' disables)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--identity", default=None,
                   help="holder identity written in the Lease (default: $POD_NAME, else hostname-pid)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    args.kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or None
    args.namespace = args.namespace or os.environ.get("LBSPEAKER_NAMESPACE", NAMESPACE)
    args.identity = args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    if args.leader_elect and not args.retry_period < args.renew_deadline < args.lease_duration:
        p.error("need --retry-period < --renew-deadline < --lease-duration (a leader must give up "
                "before a standby may take over)")
    return args


CONFIG_FLAGS = ("namespace", "lb_class", "identity", "leader_elect", "lease_duration", "renew_deadline",
                "retry_period")  # ControllerConfig fields set as given on the command line


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # The kubernetes client / urllib3 are chatty at debug; keep them at warning unless asked.
    if level != "debug":
        logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # `*_created` series only double the scrape size
    from lbspeaker.controller.reconciler import Controller, ControllerConfig
    from lbspeaker.kube.client import load_api_client
    from lbspeaker.kube.memberlist import SecretKeeper
    from lbspeaker.kube.rest import Rest

    rest = Rest(load_api_client(args.kubeconfig))
    exit_code = {"code": 0}
    stopping = threading.Event()

    def lost_leadership() -> None:
        log.error("lost the controller Lease: exiting so a fresh standby takes its place")
        exit_code["code"] = 1
        stopping.set()

    # the flags are spelled as the config's fields (argparse dest == field name)
    cfg = ControllerConfig(**{f: getattr(args, f) for f in CONFIG_FLAGS},
                           metrics_addr=args.metrics_addr or None)
    ctrl = Controller(rest, cfg, on_lost_leadership=lost_leadership)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping (releasing the Lease)", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("lbspeaker-controller starting: identity=%s namespace=%s lb-class=%s leader-elect=%s",
             args.identity, args.namespace, args.lb_class or "<none>", args.leader_elect)
    ctrl.start()
    secret_keeper = SecretKeeper(rest, args.namespace)  # the speakers' heartbeat key, made if missing
    secret_keeper.start()
    while not stopping.wait(1.0):
        pass
    secret_keeper.stop()
    # Writes stop at once inside stop(); the rest (Lease release, caches) gets a bounded time so a
    # wedged connection can never keep a process that may no longer lead from exiting.
    stopper = threading.Thread(target=ctrl.stop, kwargs={"release": exit_code["code"] == 0}, daemon=True)
    stopper.start()
    stopper.join(20)
    if stopper.is_alive():
        log.error("shutdown did not finish within 20s; exiting anyway")
        logging.shutdown()
        os._exit(exit_code["code"] or 1)
    log.info("lbspeaker-controller stopped")
    return exit_code["code"]


if __name__ == "__main__":
    sys.exit(main())
