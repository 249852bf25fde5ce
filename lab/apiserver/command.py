"""`lbspeaker-lab apiserver`: run the lab API server (a kube-apiserver stand-in) in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from lab.apiserver.server import LabApiServer, listen_socket_in_netns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=6443,
        help="port to listen on (default 6443, as on kind; 0 = pick a free one)",
    )
    parser.add_argument("--kubeconfig-out", metavar="FILE", help="write a kubeconfig for this server to FILE")
    parser.add_argument(
        "--listen-netns",
        metavar="NETNS=HOST:PORT",
        action="append",
        default=[],
        help="also listen inside a named network namespace (repeatable)",
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=1.0, help="seconds between watch BOOKMARKs"
    )
    parser.add_argument(
        "--event-history-size",
        type=int,
        default=10000,
        help="watch events kept per resource for resuming watches; older resourceVersions get 410 Gone",
    )


def parse_netns_listen(spec: str) -> tuple[str, str, int]:
    """`kind-control-plane=172.18.0.2:6443` -> (netns, host, port); IPv6 hosts in brackets."""
    netns, sep, addr = spec.partition("=")
    host, _, port = addr.rpartition(":")
    if not sep or not netns or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen-netns wants NETNS=HOST:PORT, got {spec!r}")
    return netns, host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    try:
        listens = [parse_netns_listen(s) for s in args.listen_netns]
    except argparse.ArgumentTypeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sockets = [listen_socket_in_netns(ns, host, port) for ns, host, port in listens]
    server = LabApiServer(
        host=args.host,
        port=args.port,
        extra_sockets=sockets,
        event_history_size=args.event_history_size,
        bookmark_interval=args.bookmark_interval,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = server.start()
    if args.kubeconfig_out:
        server.write_kubeconfig(args.kubeconfig_out)
    print(f"lab API server listening on {url}", flush=True)
    for ns, host, port in listens:
        print(f"  also in netns {ns}: http://{host}:{port}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0
