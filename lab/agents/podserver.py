"""The "container" of every lab pod: a tiny HTTP server run inside the pod's namespace.

`GET /host` answers `NODE: <node>, POD IP: <pod ip>, CLIENT IP: <source ip>` followed
by a newline: the node and pod say where a request landed, the client IP says whether
kube-proxy masqueraded it (ETP Cluster) or preserved it (ETP Local). `GET /healthz`
answers `ok`. One ThreadingHTTPServer per containerPort, all in one process so the
kubelet stand-in has exactly one PID per pod to record and to end.

Usage: python -m lab.agents.podserver --node NODE --pod-ip IP [--pod-name NS/NAME] [--ready-file F] PORT...
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def host_line(node: str, pod_ip: str, client_ip: str) -> str:
    """The body of `GET /host` (shared with tests so the format has one definition)."""
    return f"NODE: {node}, POD IP: {pod_ip}, CLIENT IP: {client_ip}\n"


class _Handler(BaseHTTPRequestHandler):
    server_version = "lab-pod/1"
    node = ""
    pod_ip = ""
    pod_name = ""

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        client_ip = self.client_address[0]
        if client_ip.startswith("::ffff:"):
            client_ip = client_ip[7:]
        if path in ("/host", "/hostname"):
            self._send(200, host_line(self.node, self.pod_ip, client_ip))
        elif path in ("/healthz", "/readyz"):
            self._send(200, "ok\n")
        elif path == "/":
            self._send(200, f"{self.pod_name} on {self.node}\n")
        else:
            self._send(404, "not found\n")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # keep pod logs quiet
        return


class _DualStackServer(ThreadingHTTPServer):
    """Listens on :: with IPV6_V6ONLY off, so v4 and v6 clients reach one socket."""

    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _V4Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(node: str, pod_ip: str, ports: list[int], pod_name: str = "") -> list[ThreadingHTTPServer]:
    """Start one server per port on background threads and return them."""
    handler = type("Handler", (_Handler,), {"node": node, "pod_ip": pod_ip, "pod_name": pod_name})
    servers: list[ThreadingHTTPServer] = []
    for port in ports:
        srv: ThreadingHTTPServer
        try:
            srv = _DualStackServer(("::", port), handler)
        except OSError:  # IPv6 disabled in the namespace
            srv = _V4Server(("0.0.0.0", port), handler)
        threading.Thread(target=srv.serve_forever, name=f"http:{port}", daemon=True).start()
        servers.append(srv)
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--pod-ip", required=True)
    parser.add_argument("--pod-name", default="")
    parser.add_argument("--pod-uid", default="", help="only so the kubelet can recognise its process")
    parser.add_argument("--ready-file", default="", help="touched once every port listens")
    parser.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    servers = serve(args.node, args.pod_ip, args.ports, args.pod_name)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    done.wait()
    for srv in servers:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
